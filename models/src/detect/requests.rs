//! A request's checks against its channel's model: function codes, address ranges, request
//! rates and poll cycles.

use super::*;

pub(super) struct PollRt {
    pub(super) model: PollModel,
    /// When it is missing after a poll ([`poll_missing_after`]), in nanoseconds: worked out
    /// once, not per request.
    pub(super) missing_after: i64,
    pub(super) last: Option<(i64, u64)>,
    pub(super) missing_alerted: bool,
    /// Time and frames (previous poll, this one) of its last `POLL_BROKEN` broken intervals.
    pub(super) broken: VecDeque<(i64, (u64, u64))>,
}

/// The least widening of a learned block within which a learned writer's write is operator
/// work on that block, not `address_out_of_range` (the widening is the block's own length when
/// larger): 16 registers, coils, bytes or bits.
pub(super) const NEAR_MARGIN: u32 = 16;

/// How early or late a poll may be.
pub(super) fn poll_tolerance(m: &PollModel) -> f64 {
    (4.0 * m.jitter).max(0.5 * m.period)
}

/// Broken intervals (early or late) of one poll within [`poll_window`] before
/// `poll_cycle_broken`: an operator's action that delays one cycle, or one lost request, is no
/// incident; a poll that breaks again within the minute (a PLC too busy to answer in time, a
/// master skipping every other cycle) is.
pub(super) const POLL_BROKEN: usize = 2;

/// Ten periods, at least a minute.
pub(super) fn poll_window(m: &PollModel) -> f64 {
    (10.0 * m.period).max(60.0)
}

/// A poll is missing (it stopped) when none came for three periods and the tolerance.
pub(super) fn poll_missing_after(m: &PollModel) -> f64 {
    3.0 * m.period + poll_tolerance(m)
}

/// The poll's function, space and start address in one number (for its alert key).
pub(super) fn poll_extra(m: &PollModel) -> u64 {
    u64::from(m.function) << 48 ^ u64::from(m.space) << 16 ^ u64::from(m.start)
}

pub(super) fn accesses_json(o: &Observation) -> serde_json::Value {
    serde_json::Value::Array(
        o.accesses
            .iter()
            .map(|a| {
                json!({"space": o.channel.proto.space_name(a.space), "start": a.start, "count": a.count,
                       "values": o.values_of(a).iter().take(16).collect::<Vec<f64>>()})
            })
            .collect(),
    )
}

/// `address_out_of_range` for the access `acc` of `o` (its last address `hi`), outside the
/// `learned` ranges. Out of line, as the detector's other alert texts.
#[cold]
#[inline(never)]
fn address_out_of_range(
    raised: &mut Raised,
    o: &Observation,
    (acc, hi): (&crate::obs::Access, u32),
    learned: Option<&Ranges>,
    out: &mut Vec<Alert>,
) {
    let ch = &o.channel;
    let learned = learned.cloned();
    let rw = if acc.write { "write" } else { "read" };
    let space = ch.proto.space_name(acc.space);
    if let Some(mut a) = fresh(
        raised,
        o,
        (
            AlertKey::pair(
                "address_out_of_range",
                ch.proto,
                ch.client,
                ch.server,
                u64::from(acc.space) << 1 | u64::from(acc.write),
            ),
            write_severity(acc.write),
        ),
        out,
    ) {
        let at = ch.proto.range_text(acc.start, hi);
        a.message = format!("{ch}: {rw} of {space} {at} outside the learned ranges");
        *a.learned = json!({"space": space});
        capped_list(
            &mut a.learned,
            "ranges",
            learned.map(|r| r.0).unwrap_or_default(),
        );
        *a.observed = json!({"space": space, "start": acc.start, "count": acc.count, "access": rw});
        out.push(a);
    }
}

/// `traffic_flood` for the request `o`: `n` requests in the rate window, over `limit` (`model`:
/// the channel's, if learned). Out of line, as the detector's other alert texts.
#[cold]
#[inline(never)]
fn traffic_flood(
    raised: &mut Raised,
    o: &Observation,
    model: Option<&ChannelModel>,
    (n, limit): (u64, u64),
    out: &mut Vec<Alert>,
) {
    let ch = &o.channel;
    if let Some(mut a) = fresh_channel(raised, o, ("traffic_flood", Severity::High), out) {
        a.message = format!(
            "{ch}: {n} requests in {} s, learned at most {}",
            crate::learn::RATE_WINDOW_SECS,
            model.map_or(0, |m| m.max_requests_per_window)
        );
        *a.learned = json!({"max_requests_per_window": model.map(|m| m.max_requests_per_window), "window_s": crate::learn::RATE_WINDOW_SECS, "limit": limit});
        *a.observed = json!({"requests_in_window": n});
        out.push(a);
    }
}

/// `poll_cycle_broken` for the request `o` of the poll `p`, `gap` after the previous (`what`:
/// early or late). Out of line, as the detector's other alert texts.
#[cold]
#[inline(never)]
fn poll_cycle_broken(
    raised: &mut Raised,
    o: &Observation,
    p: &PollRt,
    (gap, what): (f64, &str),
    out: &mut Vec<Alert>,
) {
    let ch = &o.channel;
    let m = &p.model;
    if let Some(mut a) = fresh(
        raised,
        o,
        (
            AlertKey::channel("poll_cycle_broken", ch, poll_extra(m)),
            Severity::Medium,
        ),
        out,
    ) {
        a.message = format!(
            "{ch}: poll of function {} {} {}+{} broken {POLL_BROKEN} times within {:.0} s; the last one {what}: {:.3} s after the previous, learned every {:.3} s",
            m.function,
            ch.proto.space_name(m.space),
            m.start,
            m.count,
            poll_window(m),
            gap,
            m.period
        );
        a.frames = p.broken.iter().flat_map(|b| [b.1 .0, b.1 .1]).collect();
        *a.learned =
            json!({"period_s": m.period, "jitter_s": m.jitter, "window_s": poll_window(m)});
        *a.observed = json!({"interval_s": gap, "kind": what, "broken_intervals": POLL_BROKEN});
        out.push(a);
    }
}

impl Detector {
    /// Whether the channel used `function` in learning (a new channel: whether its server was
    /// asked it, `server_functions`).
    fn function_learned(
        server_functions: &FastMap<(Proto, IpAddr), BTreeSet<u32>>,
        ch: &Channel,
        model: Option<&ChannelModel>,
        function: u32,
    ) -> bool {
        match model {
            Some(m) => m.functions.contains_key(&function),
            None => server_functions
                .get(&(ch.proto, ch.server))
                .is_some_and(|f| f.contains(&function)),
        }
    }

    /// `new_function_code` for `function` of the request `o`.
    #[cold]
    fn new_function(
        raised: &mut Raised,
        server_functions: &FastMap<(Proto, IpAddr), BTreeSet<u32>>,
        (o, function, name): (&Observation, u32, Option<&'static str>),
        model: Option<&ChannelModel>,
        out: &mut Vec<Alert>,
    ) {
        let ch = &o.channel;
        let funcs: BTreeSet<u32> = match model {
            Some(m) => m.functions.keys().copied().collect(),
            None => server_functions
                .get(&(ch.proto, ch.server))
                .cloned()
                .unwrap_or_default(),
        };
        if let Some(mut a) = fresh(
            raised,
            o,
            (
                AlertKey::channel("new_function_code", ch, u64::from(function)),
                Severity::High,
            ),
            out,
        ) {
            // A function carried inside the request (a Multiple Service Packet's service)
            // says what carried it.
            let inside = if function == o.function {
                String::new()
            } else {
                format!(
                    " inside {}",
                    ch.proto.function_text(o.function, o.function_name)
                )
            };
            a.message = format!(
                "{ch}: function {}{inside} never used {} in learning",
                ch.proto.function_text(function, name),
                if model.is_some() {
                    "on this channel"
                } else {
                    "with this server"
                }
            );
            *a.learned = json!({});
            capped_list(&mut a.learned, "functions", funcs);
            *a.observed = json!({"function": function, "name": name});
            out.push(a);
        }
    }

    /// The function code (new on the channel, or for a new channel new to the server), a new
    /// unit, and a write by a client that never wrote: (function known, new unit, unauthorized).
    pub(super) fn check_function(
        &mut self,
        o: &Observation,
        known: Option<usize>,
        out: &mut Vec<Alert>,
    ) -> (bool, bool, bool) {
        let ch = &o.channel;
        let model = Self::model(&self.baseline, known);
        let slot = known.and_then(|i| self.chans.slots.get(i));
        // A master that wrote with this function to other servers in learning, writing to a
        // server it already talks to, is the site's master at work: its write is checked for
        // where it goes (`check_ranges`), not reported as a new function or an unknown writer.
        let fleet_writer = o.write
            && model.is_some()
            && slot.is_some_and(|s| s.fleet.binary_search(&o.function).is_ok());
        // Function codes: the channel's own, or for a new channel, any the server was asked.
        let function_known = fleet_writer
            || ch.proto.routine_function(o.function)
            || Self::function_learned(&self.server_functions, ch, model, o.function);
        let mut new_unit = false;
        // A command (stop, start, download, restart) or an unauthorized write is the account of
        // this PDU: its new function code and written range are part of it.
        let command = o.command.is_some();
        let unauthorized = o.write
            && ch.proto.is_ot()
            && !fleet_writer
            && !match slot {
                Some(s) => s.writer,
                None => self.writers.contains(&(ch.proto, ch.client, ch.server)),
            };
        if !command && !unauthorized {
            let (raised, functions) = (&mut self.raised, &self.server_functions);
            if !function_known {
                let new = (o, o.function, o.function_name);
                Self::new_function(raised, functions, new, model, out);
            }
            // The functions of the requests it carries (a Multiple Service Packet's), too.
            for &f in &o.members {
                if !Self::function_learned(functions, ch, model, f) {
                    Self::new_function(raised, functions, (o, f, None), model, out);
                }
            }
        }
        // A learned channel's unit is one its server was learned with.
        if ch.proto.is_ot()
            && slot.is_none()
            && !self
                .server_units
                .get(&(ch.proto, ch.server))
                .is_some_and(|u| u.contains(&ch.unit))
        {
            new_unit = true;
        }
        if unauthorized && !command {
            self.unauthorized_write(o, out);
        }
        (function_known, new_unit, unauthorized)
    }

    /// `unauthorized_write` for `o`. Out of line, as the detector's other alert texts.
    #[cold]
    #[inline(never)]
    fn unauthorized_write(&mut self, o: &Observation, out: &mut Vec<Alert>) {
        let ch = &o.channel;
        if let Some(mut a) = fresh(
            &mut self.raised,
            o,
            (
                AlertKey::pair("unauthorized_write", ch.proto, ch.client, ch.server, 0),
                Severity::Critical,
            ),
            out,
        ) {
            a.message = format!(
                "{} wrote to {} ({}{}) and never wrote to it in learning",
                ch.client,
                ch.server,
                ch.proto.name(),
                o.function_name.map(|n| format!(" {n}")).unwrap_or_default()
            );
            *a.learned = json!({});
            capped_list(
                &mut a.learned,
                "writers",
                self.writers
                    .iter()
                    .filter(|w| w.2 == ch.server)
                    .map(|w| w.1)
                    .collect::<BTreeSet<_>>(),
            );
            *a.observed = json!({"function": o.function, "name": o.function_name, "accesses": accesses_json(o)});
            out.push(a);
        }
    }

    /// Accesses outside the learned address ranges; returns the new (space, start) pairs.
    pub(super) fn check_ranges(
        &mut self,
        o: &Observation,
        known: Option<usize>,
        unauthorized: bool,
        out: &mut Vec<Alert>,
    ) -> Vec<(u32, u32)> {
        let ch = &o.channel;
        let model = Self::model(&self.baseline, known);
        let command = o.command.is_some();
        let mut new_addresses = Vec::new();
        for acc in &o.accesses {
            let hi = acc.start.saturating_add(acc.count.max(1) - 1);
            let learned = match model {
                Some(m) => {
                    if acc.write {
                        m.writes.get(&acc.space)
                    } else {
                        m.reads.get(&acc.space)
                    }
                }
                None => self
                    .server_ranges
                    .get(&(ch.proto, ch.server, ch.unit, acc.space, acc.write)),
            };
            if learned.is_some_and(|r| r.covers(acc.start, hi)) {
                continue;
            }
            new_addresses.push((acc.space, acc.start));
            if acc.write && (unauthorized || command) {
                continue;
            }
            // A learned writer (not unauthorized) touching the neighbourhood of a block it or
            // another client wrote or read on this server: operator work on the same block.
            if acc.write
                && [true, false].into_iter().any(|w| {
                    self.server_ranges
                        .get(&(ch.proto, ch.server, ch.unit, acc.space, w))
                        .is_some_and(|r| r.near(acc.start, hi, NEAR_MARGIN))
                })
            {
                continue;
            }
            address_out_of_range(&mut self.raised, o, (acc, hi), learned, out);
        }
        new_addresses
    }

    /// The channel's runtime state (pending requests, behaviour window) and its request rate.
    pub(super) fn check_rate(
        &mut self,
        o: &Observation,
        (known, held): (Option<usize>, Option<usize>),
        out: &mut Vec<Alert>,
    ) {
        let ch = &o.channel;
        let model = Self::model(&self.baseline, known);
        // A learned channel's timeout was worked out once (its slot's is its model's).
        let timeout = match known.and_then(|i| self.chans.slots.get(i)) {
            Some(s) => s.timeout,
            None => nanos(timeout_for(model.and_then(|m| m.latency.as_ref()))),
        };
        let at = self.chans.place(ch, known);
        let (rt, counted) = self.chans.rt_held(ch, known, held);
        set_source(&mut rt.source, &o.source);
        rt.ports = o.ports.or(rt.ports);
        rt.pending.request(o);
        into_window(
            &mut self.windows,
            &self.baseline,
            &self.weak_channels,
            (at, &mut *rt),
            (o, None, counted),
            out,
        );
        if o.corr.is_some() {
            self.next_due = self.next_due.min(o.ts.saturating_add(timeout));
        }
        let n = rt.req_rate.add(o.ts);
        let limit = match model {
            Some(m) => (m.max_requests_per_window.saturating_mul(4))
                .max(m.max_requests_per_window.saturating_add(50)),
            None => NEW_CHANNEL_FLOOD,
        };
        if n > limit {
            traffic_flood(&mut self.raised, o, model, (n, limit), out);
        }
    }

    /// The poll cycle this request belongs to: early or late against the learned period, twice
    /// within `poll_window` (one skipped or delayed cycle is no incident).
    pub(super) fn check_poll(
        &mut self,
        o: &Observation,
        (known, held): (Option<usize>, Option<usize>),
        out: &mut Vec<Alert>,
    ) {
        let Some(s) = known.and_then(|i| self.chans.slots.get_mut(i)) else {
            return;
        };
        // A request the channel holds as clean kept its poll's place.
        let at = match held.and_then(|h| s.clean.held.get(h)) {
            Some(c) => c.poll.map(|at| at as usize),
            None => poll_at(&s.polls, o),
        };
        if let Some(p) = at.and_then(|at| s.polls.get_mut(at)).map(|p| &mut p.1) {
            // Frame 0: the clock detection (or a clock step) started the poll at, no request:
            // no interval to judge yet.
            if let Some((prev, prev_frame)) = p.last.filter(|l| l.1 > 0) {
                let gap = secs(prev, o.ts);
                let m = &p.model;
                let early = m.period - poll_tolerance(m);
                let late = m.period + poll_tolerance(m);
                // A repeat within a tenth of the period is the master retrying (or the same
                // request twice), not a new cycle: the cycle goes on from the first.
                if gap < 0.1 * m.period {
                    return;
                }
                // One delayed poll makes two broken intervals, a late one and then an early
                // one sharing its frame: counted once.
                let adjacent = p.broken.back().is_some_and(|b| b.1 .1 == prev_frame);
                let sustained = (gap < early || (gap > late && !p.missing_alerted))
                    && !adjacent
                    && again_within(
                        &mut p.broken,
                        POLL_BROKEN,
                        nanos(poll_window(m)),
                        o.ts,
                        (prev_frame, o.frame),
                    );
                if sustained {
                    let what = if gap < early { "off-period" } else { "late" };
                    poll_cycle_broken(&mut self.raised, o, p, (gap, what), out);
                }
            }
            p.last = Some((o.ts, o.frame));
            p.missing_alerted = false;
            self.next_due = self.next_due.min(o.ts.saturating_add(p.missing_after));
        }
    }
}

/// The place of `o`'s poll (a request) in a channel's `polls`, sorted by key.
pub(super) fn poll_at(polls: &[(PollKey, PollRt)], o: &Observation) -> Option<usize> {
    let key = poll_key(o);
    polls.binary_search_by(|(k, _)| k.cmp(&key)).ok()
}
