//! A differential harness for detection's split ([`crate::split`]): on the observations an
//! input describes, one engine, and two or three workers with a stage, must raise the same
//! alerts (as a multiset, each line with its time and count). `fuzz/` runs it under libFuzzer
//! (`cargo fuzz run split`); `cargo test` runs it on pseudo-random inputs.
//!
//! The input describes a site: polls learned for two minutes, then eighty seconds of detection
//! in which each poll may stop, or its server stop answering, and requests of any kind come
//! between them (new functions, addresses, clients, writes, exceptions, S7 as well as Modbus),
//! so that every check runs: scans across servers, timeouts, missing polls, silent devices,
//! behaviour windows. Each server's channels are one worker's, as `otwatch`'s pair owner gives
//! them (a pair to the worker of its server); clients roam across workers.

use std::net::IpAddr;
use std::sync::Arc;

use crate::detect::{Note, ScanNote};
use crate::split::WorkerEngine;
use crate::{Alert, Baseline, Channel, Engine, EngineConfig, Kind, Observation, Proto, NANOS};

/// The harness's epoch (capture time 0 s).
const T0: i64 = 1_700_000_000 * NANOS;

/// Learning lasts this long, from 0 s; detection starts there.
pub const LEARN_SECS: u32 = 120;

/// Detection ends here.
pub const END_SECS: u32 = 200;

/// Capture time `t` s past the harness's epoch.
pub fn at(t: f64) -> i64 {
    T0 + (t * 1e9) as i64
}

/// An alert as the comparison sees it: type, time, source, destination, message, count.
pub type Line = (String, i64, IpAddr, IpAddr, String, u64);

/// The alerts as [`Line`]s, sorted.
pub fn lines(out: &[Alert]) -> Vec<Line> {
    let mut got: Vec<Line> = out
        .iter()
        .map(|a| {
            (
                a.r#type.to_string(),
                a.ts,
                a.src_ip,
                a.dst_ip,
                a.message.clone(),
                a.count,
            )
        })
        .collect();
    got.sort();
    got
}

/// One engine's alerts on `obs` (in capture order) against `baseline`, detection started at
/// [`LEARN_SECS`], the clock ticking every second (0.93 s past it, after the observations
/// before it) up to `end` s.
pub fn one_engine(baseline: &Baseline, obs: &[Observation], end: f64) -> Vec<Alert> {
    one_engine_checking(baseline, obs, end, false)
}

/// [`one_engine`]; with `every_request`, one that checks every request in full
/// ([`Engine::check_every_request`]).
fn one_engine_checking(
    baseline: &Baseline,
    obs: &[Observation],
    end: f64,
    every_request: bool,
) -> Vec<Alert> {
    let mut engine = Engine::detecting(baseline.clone(), EngineConfig::default());
    if every_request {
        engine.check_every_request();
    }
    engine.start_at(at(f64::from(LEARN_SECS)));
    let mut out = Vec::new();
    let mut next = obs.iter().peekable();
    let mut tick = at(f64::from(LEARN_SECS) + 0.93);
    while tick <= at(end) {
        while let Some(o) = next.next_if(|o| o.ts <= tick) {
            engine.observe(o, &mut out);
        }
        engine.tick(tick, &mut out);
        tick += NANOS;
    }
    // The book's end lines (the baseline it gives back is the one given).
    engine.finish(&mut out);
    out
}

/// [`one_engine`]'s run with `workers` workers, each checking the channels `owner` gives it
/// (a worker's index, below `workers`), and a stage where their output meets in capture order, as `otwatch`'s merge hands it on.
pub fn workers_and_stage(
    baseline: &Baseline,
    obs: &[Observation],
    end: f64,
    workers: usize,
    owner: impl Fn(&Observation) -> usize,
) -> Vec<Alert> {
    let start = at(f64::from(LEARN_SECS));
    let mut out = Vec::new();
    let mut next = obs.iter().peekable();
    let mut tick = at(f64::from(LEARN_SECS) + 0.93);
    let shared = Arc::new(baseline.clone());
    let mut stage = Engine::detecting(baseline.clone(), EngineConfig::default());
    stage.start_at(start);
    let mut w: Vec<WorkerEngine> = (0..workers)
        .map(|_| WorkerEngine::new(Arc::clone(&shared), start, stage.tick_high()))
        .collect();
    let mut sources: Vec<Option<Arc<str>>> = vec![None; workers];
    let (mut found, mut notes, mut heard) = (Vec::new(), Vec::new(), Vec::new());
    let mut cands = crate::alert::Found::default();
    while tick <= at(end) {
        while let Some(o) = next.next_if(|o| o.ts <= tick) {
            let at = owner(o);
            w[at].observe(o, &mut cands, &mut notes);
            stage.raise_found(&mut cands, &mut out);
            for n in notes.drain(..) {
                if let Note::Scan(ScanNote {
                    source: Some(s), ..
                }) = &n
                {
                    sources[at] = Some(Arc::clone(s));
                }
                let source = sources[at].clone().unwrap_or_else(|| Arc::from(""));
                stage.note(n, &source, &mut out);
            }
        }
        for worker in &mut w {
            let seen = worker.tick(tick, &mut found, &mut heard);
            stage.see(seen);
        }
        stage.tick_found(tick, &heard, Some(&mut found), &mut out);
        heard.clear();
        tick += NANOS;
    }
    stage.finish(&mut out);
    out
}

/// The functions a record's low three bits choose (Modbus codes; an S7 record maps them on
/// S7's read, write and setup jobs).
const FUNCTIONS: [u32; 8] = [3, 3, 4, 1, 6, 16, 5, 8];

/// One request (and its answer) a record of the input describes.
#[derive(Clone, Copy)]
struct Exchange {
    client: u8,
    site: u8,
    unit: u32,
    proto: Proto,
    function: u32,
    address: u32,
    answered: bool,
    exception: bool,
    value: f64,
    /// Addresses the access spans (and values its answer carries).
    count: u32,
    /// A second access, 50 addresses on.
    second: bool,
    /// A member function (as a Multiple Service Packet carries), which learning never saw.
    member: bool,
}

impl Exchange {
    /// `who` chooses the client, server and unit (its high bit, a second access); `what` the
    /// function, the answer and the address; `extra` the protocol (its top two bits: 3, S7;
    /// 1, three addresses instead of two; 2, a member function), a shift of the address and
    /// the value. Polls (who below 0x80, extra 0 or 0xc0) have one access of two addresses
    /// and no member.
    fn of(who: u8, what: u8, extra: u8) -> Exchange {
        let proto = if extra >> 6 == 3 {
            Proto::S7comm
        } else {
            Proto::Modbus
        };
        let code = FUNCTIONS[usize::from(what & 7)];
        let function = match (proto, code) {
            (Proto::S7comm, 3 | 4 | 1) => 4,
            (Proto::S7comm, 8) => 240,
            (Proto::S7comm, _) => 5,
            _ => code,
        };
        Exchange {
            client: 1 + (who & 7),
            site: 1 + (who >> 3) % 3,
            unit: u32::from(proto == Proto::Modbus) * (1 + u32::from(who >> 5 & 1)),
            proto,
            function,
            address: u32::from(what >> 5) * 4 + u32::from(extra & 0x0f) * 100,
            answered: what & 8 == 0,
            exception: what & 0x10 != 0,
            value: f64::from(extra & 0x30),
            count: if extra >> 6 == 1 { 3 } else { 2 },
            second: who & 0x80 != 0,
            member: extra >> 6 == 2,
        }
    }

    fn write(&self) -> bool {
        matches!(
            (self.proto, self.function),
            (Proto::Modbus, 5 | 6 | 16) | (Proto::S7comm, 5)
        )
    }

    /// The request at `t` s, and its answer 10 ms later when there is one; `corr` correlates
    /// them.
    fn observations(&self, t: f64, corr: u32, out: &mut Vec<Observation>) {
        let channel = Channel {
            proto: self.proto,
            client: IpAddr::from([10, 0, 0, self.client]),
            server: IpAddr::from([192, 168, self.site, 10]),
            unit: self.unit,
        };
        let write = self.write();
        let space = if self.proto == Proto::S7comm {
            0x84_0001
        } else {
            4
        };
        let mut req = Observation::new(
            at(t),
            Arc::from("fuzz"),
            0,
            channel,
            Kind::Request,
            self.function,
        );
        req.corr = Some(corr);
        req.write = write;
        req.function_name = Some("f");
        let value = Some(self.value);
        let starts = [Some(self.address), self.second.then_some(self.address + 50)];
        for start in starts.into_iter().flatten() {
            req.push_access(space, start, self.count, write, value.filter(|_| write));
        }
        if self.member {
            req.members.push(0x4c);
        }
        if !self.answered {
            out.push(req);
            return;
        }
        let mut resp = req.clone();
        resp.kind = Kind::Response;
        resp.ts += NANOS / 100;
        resp.write = false;
        resp.exception = self.exception;
        resp.accesses.clear();
        resp.values.clear();
        resp.members.clear();
        if !write && !self.exception {
            for start in starts.into_iter().flatten() {
                let values = (0..self.count).map(|i| self.value + f64::from(i));
                resp.push_access(space, start, self.count, false, values);
            }
        }
        out.push(req);
        out.push(resp);
    }
}

/// Sorted by capture time (stable: an answer after its request), then numbered as frames.
fn in_capture_order(mut obs: Vec<Observation>) -> Vec<Observation> {
    obs.sort_by_key(|o| o.ts);
    for (i, o) in obs.iter_mut().enumerate() {
        o.frame = i as u64 + 1;
    }
    obs
}

/// The records a harness input makes at most (the rest of the input is ignored).
const MAX_RECORDS: usize = 1024;

/// Runs the input (see the module's documentation) through one engine, one that checks every
/// request in full, and two and three workers with a stage; panics if their alerts differ.
///
/// Input: a byte, then `1 + byte % 6` polls of four bytes (who, with S7 for its high bit;
/// what; when in the second; how it ends or starts late), then records of five bytes (who,
/// what, time step in 5 ms, extra, and a fifth) placed in detection. The fifth byte's top two
/// bits: 2, the record is on the channel of the poll its low three bits choose (as a probe or
/// a write aimed at a learned channel is); 3, it is that poll's own request, changed in one
/// thing the what byte's low three bits choose (its count, a second access, a member
/// function, its address, its function; or nothing). Its bits 3-4: how many times more the
/// record comes, a second apart.
pub fn split(data: &[u8]) {
    split_with(data, |_| ());
}

/// [`split`], handing one engine's alerts to `seen` when they agree.
fn split_with(data: &[u8], seen: impl FnOnce(&[Line])) {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let polls = 1 + usize::from(head % 6);
    let Some((polls, rest)) = rest.split_at_checked(polls * 4) else {
        return;
    };
    let polls: Vec<(Exchange, f64, u8, bool)> = polls
        .chunks_exact(4)
        .map(|p| {
            // The who byte's high bit makes the poll S7's (as an extra byte of 0xc0 does).
            let s7 = if p[0] & 0x80 != 0 { 0xc0 } else { 0 };
            let e = Exchange::of(p[0] & 0x7f, p[1] & 0xe7, s7);
            (e, f64::from(p[2]) / 256.0, p[3], p[1] & 0x08 != 0)
        })
        .collect();
    let mut corr = 0u32;
    let mut learning = Vec::new();
    for s in 0..LEARN_SECS {
        for (e, offset, _, _) in &polls {
            corr += 1;
            e.observations(f64::from(s) + offset, corr, &mut learning);
        }
    }
    let learning = in_capture_order(learning);
    let mut learner = Engine::learning(EngineConfig::default());
    let mut out = Vec::new();
    for o in &learning {
        learner.observe(o, &mut out);
        learner.tick(o.ts, &mut out);
    }
    let Some(baseline) = learner.finish(&mut out) else {
        return;
    };
    // Detection: each poll goes on until its stop second (at or past the end: never); with
    // the end byte's high bit, its server stops answering there instead. A poll that starts
    // late (the what byte's bit 3) is quiet from detection's start until then, and back
    // from there.
    let mut detection = Vec::new();
    for s in LEARN_SECS..END_SECS {
        for &(e, offset, end, late) in &polls {
            let stop = LEARN_SECS + u32::from(end & 0x7f);
            let mute = end & 0x80 != 0;
            if (late && s < stop) || (!late && s >= stop && !mute) {
                continue;
            }
            let mut e = e;
            e.answered &= late || s < stop;
            corr += 1;
            e.observations(f64::from(s) + offset, corr, &mut detection);
        }
    }
    let mut t = f64::from(LEARN_SECS);
    for r in rest.chunks_exact(5).take(MAX_RECORDS) {
        t += f64::from(r[2]) * 0.005;
        if t >= f64::from(END_SECS) {
            break;
        }
        let poll = polls.get(usize::from(r[4] & 7) % polls.len()).map(|p| p.0);
        let e = match (r[4] >> 6, poll) {
            // The poll's own request, changed in one thing (or in none).
            (3, Some(mut p)) => {
                match r[1] & 7 {
                    0 => p.count = 3,
                    1 => p.second = true,
                    2 => p.member = true,
                    3 => p.address += 4 * (1 + u32::from(r[3] & 3)),
                    4 => {
                        let s7 = if p.proto == Proto::S7comm { 0xc0 } else { 0 };
                        p.function = Exchange::of(r[0], r[1] >> 3, s7).function;
                    }
                    _ => {}
                }
                p
            }
            // Another request on the poll's channel, of its protocol.
            (2, Some(p)) => {
                let extra = match (p.proto, r[3] >> 6) {
                    (Proto::S7comm, _) => r[3] | 0xc0,
                    (_, 3) => r[3] & 0x3f,
                    _ => r[3],
                };
                Exchange {
                    client: p.client,
                    site: p.site,
                    unit: p.unit,
                    ..Exchange::of(r[0], r[1], extra)
                }
            }
            _ => Exchange::of(r[0], r[1], r[3]),
        };
        for again in 0..=(r[4] >> 3 & 3) {
            let at = t + f64::from(again);
            if at < f64::from(END_SECS) {
                corr += 1;
                e.observations(at, corr, &mut detection);
            }
        }
    }
    let detection = in_capture_order(detection);
    let end = f64::from(END_SECS);
    let one = lines(&one_engine(&baseline, &detection, end));
    // Requests a channel holds as clean are not checked again: checked, they raise nothing.
    assert_eq!(
        one,
        lines(&one_engine_checking(&baseline, &detection, end, true)),
        "one engine checking every request in full, against one that holds clean requests"
    );
    let site = |o: &Observation| match o.channel.server {
        IpAddr::V4(v4) => usize::from(v4.octets()[2]),
        IpAddr::V6(_) => 0,
    };
    for workers in [2, 3] {
        let split = lines(&workers_and_stage(
            &baseline,
            &detection,
            end,
            workers,
            |o| site(o) % workers,
        ));
        assert_eq!(
            one, split,
            "{workers} workers and a stage, against one engine"
        );
    }
    seen(&one);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pseudo-random inputs (xorshift), each of its own length.
    fn inputs(n: u64) -> impl Iterator<Item = Vec<u8>> {
        (1..=n).map(|seed| {
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut byte = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            };
            let len = 40 + usize::from(byte()) * 4;
            (0..len).map(|_| byte()).collect()
        })
    }

    /// The harness on pseudo-random inputs: one engine and the split agree, and what they
    /// raise is not nothing (the inputs reach the checks the split divides).
    #[test]
    fn the_split_raises_what_one_engine_raises_on_random_inputs() {
        let mut types = std::collections::BTreeSet::new();
        for input in inputs(64) {
            split(&input);
            types.extend(kinds(&input));
        }
        for t in [
            "scan",
            "response_timeout",
            "device_silent",
            "new_function_code",
            "address_out_of_range",
            "new_channel",
            "behaviour_anomaly",
            "poll_cycle_broken",
            "unauthorized_write",
            "value_out_of_range",
        ] {
            assert!(types.contains(t), "{t} is raised: {types:?}");
        }
    }

    /// The alert types one engine raises on `input`, as [`split`] builds it.
    fn kinds(input: &[u8]) -> Vec<String> {
        let mut got = Vec::new();
        split_with(input, |one| got = one.iter().map(|l| l.0.clone()).collect());
        got
    }
}
