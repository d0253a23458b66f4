//! What detection keeps across channels: the learned devices' silence clocks (a device speaks
//! on several channels) and the clients' scan windows (a client walks several servers). Apart
//! from the per-channel state, and fed only by what each PDU says of its device and its
//! client, so that it can be kept in one place while channels are checked in several.

use super::*;

pub(crate) struct Across {
    /// Where what each PDU says goes when the clocks and windows are kept elsewhere (a worker
    /// checking some channels: [`crate::split`]); `None` when they are kept here.
    out: Option<Box<Outbox>>,
    /// The silence clocks of learned devices, at their place in `Detector::devices` (`None`
    /// for a device without one).
    silence: Vec<Option<AssetRt>>,
    /// The earliest time a device can be found silent: ticks before it need no walk.
    pub(super) due: i64,
    scans: Scans,
    /// Times the scan table was full and started afresh.
    pub(crate) scan_resets: u64,
}

impl Default for Across {
    fn default() -> Self {
        Across {
            out: None,
            silence: Vec::new(),
            due: i64::MAX,
            scans: Scans::default(),
            scan_resets: 0,
        }
    }
}

impl Across {
    /// What each PDU says of its device and client goes out ([`Across::take_heard`],
    /// [`Across::take_notes`]), to be kept where all channels' PDUs meet.
    pub(crate) fn send_out(&mut self) {
        self.out = Some(Box::default());
    }

    /// Starts the silence clock `rt` of the device at `dev` (kept where all channels meet).
    pub(super) fn clock(&mut self, dev: usize, rt: AssetRt) {
        if self.out.is_some() {
            return;
        }
        if self.silence.len() <= dev {
            self.silence.resize_with(dev + 1, || None);
        }
        self.due = self.due.min(rt.last.saturating_add(rt.threshold_nanos));
        self.silence[dev] = Some(rt);
    }

    /// The device at `dev` sent `o`. Its clock keeps the latest PDU by time (then frame): a
    /// PDU out of a TCP hole carries its own, older time, and the device was heard later. What
    /// the clock holds is then the same whatever the order its PDUs come in, and whether they
    /// come one by one or as the latest of each device a tick ([`Heard`]).
    #[inline]
    pub(super) fn heard(&mut self, dev: usize, o: &Observation) {
        let heard = (o.ts, o.frame, o.dst(), o.channel.proto);
        match &mut self.out {
            None => self.hear(dev, heard, &o.source),
            Some(b) => b.heard(dev, heard, &o.source),
        }
    }

    /// What a worker heard of the device `h.dev` (its latest PDU since its last tick).
    pub(crate) fn apply(&mut self, h: &Heard) {
        self.hear(h.dev as usize, (h.ts, h.frame, h.peer, h.proto), &h.source);
    }

    #[inline]
    fn hear(
        &mut self,
        dev: usize,
        (ts, frame, peer, proto): (i64, u64, IpAddr, Proto),
        source: &Arc<str>,
    ) {
        let Some(Some(a)) = self.silence.get_mut(dev) else {
            return;
        };
        if a.silent {
            a.silent = false;
        }
        if (ts, frame) >= (a.last, a.last_frame) {
            a.last = ts;
            a.last_frame = frame;
            set_source(&mut a.source, source);
            a.peer = Some(peer);
            a.proto = proto;
        }
        self.due = self.due.min(ts.saturating_add(a.threshold_nanos));
    }

    /// The devices silent at `now` for longer than their threshold, each once until it speaks
    /// again; finds the next time one can be.
    #[cold]
    #[inline(never)]
    pub(super) fn silences(&mut self, now: i64, out: &mut Vec<Alert>) {
        let mut next = i64::MAX;
        for a in self.silence.iter_mut().flatten() {
            let quiet = secs(a.last, now);
            if !a.silent && quiet <= a.threshold {
                next = next.min(a.last.saturating_add(a.threshold_nanos));
            }
            if !a.silent && quiet > a.threshold {
                a.silent = true;
                let ip = a.ip;
                out.push(Alert {
                    frames: if a.last_frame > 0 {
                        smallvec::smallvec![a.last_frame]
                    } else {
                        crate::alert::Frames::new()
                    },
                    message: format!(
                        "{ip} has sent nothing for {quiet:.1} s (alert after {:.1} s)",
                        a.threshold
                    ),
                    learned: json!({"silence_threshold_s": a.threshold}).into(),
                    observed: json!({"silent_for_s": quiet}).into(),
                    ..Alert::new(
                        a.source.clone(),
                        AlertKey::host("device_silent", ip),
                        Severity::High,
                        a.proto,
                        ip,
                        a.peer.unwrap_or(ip),
                        now,
                    )
                });
            }
        }
        self.due = next;
    }

    /// The clock stepped back to `now`: a device's silence counts from the step at the latest.
    pub(super) fn clock_back(&mut self, now: i64) {
        for a in self.silence.iter_mut().flatten() {
            a.last = a.last.min(now);
        }
        self.due = i64::MIN;
    }

    /// What `o` (a request of an OT protocol, or the first PDU of a conversation learning never
    /// saw) adds to its client's scan window (`new`: what it brought that learning never saw;
    /// a conversation brings its port), and a scan alert when the window holds a scan.
    /// `place`: where this channel found the window last. Inlined into the request's
    /// checks, as it was before it came here (a call of its own cost 14 M instructions on
    /// steady-site).
    #[inline(always)]
    pub(super) fn scan(
        &mut self,
        o: &Observation,
        place: &mut ScanPlace,
        new: ScanNew,
        raised: &mut Raised,
        out: &mut Vec<Alert>,
    ) {
        if let Some(b) = &mut self.out {
            b.note(o, new);
            return;
        }
        let ch = &o.channel;
        let s = scan_window(&mut self.scans, &mut self.scan_resets, o, place);
        if o.kind == Kind::Conversation {
            ScanRt::note(&mut s.ports, &mut s.frames, (ch.server, ch.unit), o);
        } else {
            if new.unit {
                ScanRt::note(&mut s.units, &mut s.frames, (ch.server, ch.unit), o);
            }
            if new.function {
                ScanRt::note(&mut s.functions, &mut s.frames, (ch.server, o.function), o);
            }
            for (space, start) in new.addresses {
                ScanRt::note(
                    &mut s.addresses,
                    &mut s.frames,
                    (ch.server, space, start),
                    o,
                );
            }
        }
        scan_alert(s, raised, o, out);
    }

    /// The devices heard since the last call, each with its latest PDU (sending out).
    pub(crate) fn take_heard(&mut self, into: &mut Vec<Heard>) {
        if let Some(b) = &mut self.out {
            for dev in b.dirty.drain(..) {
                if let Some(h) = b.heard.get_mut(dev as usize).and_then(Option::take) {
                    into.push(h);
                }
            }
        }
    }

    /// The learned channel at `i` is followed on this worker from now (sending out).
    pub(super) fn claimed(&mut self, i: u32) {
        if let Some(b) = &mut self.out {
            b.notes.push(Note::Claim(i));
        }
    }

    /// The next scan note names its capture (sending out).
    pub(crate) fn forget_source(&mut self) {
        if let Some(b) = &mut self.out {
            b.source = None;
        }
    }

    /// The notes made since the last call, in order (sending out).
    pub(crate) fn take_notes(&mut self, into: &mut Vec<Note>) {
        if let Some(b) = &mut self.out {
            into.append(&mut b.notes);
        }
    }
}

/// What a request brought that its client's scan window counts (learning never saw them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanNew {
    pub unit: bool,
    pub function: bool,
    /// (space, start) of each run of addresses new to the channel.
    pub addresses: Vec<(u32, u32)>,
}

/// What a worker's detection hands the stage about one observation, besides its candidate
/// alerts ([`crate::split`]).
#[derive(Debug, Clone)]
pub enum Note {
    /// Its share of its client's scan window.
    Scan(ScanNote),
    /// Its channel, learned, is followed on this worker from now (the stage followed its
    /// polls since detection started).
    Claim(u32),
}

/// A request's or a new conversation's share of its client's scan window, as a worker hands
/// it on: what [`Across::scan`] reads of the PDU.
#[derive(Debug, Clone)]
pub struct ScanNote {
    pub ts: i64,
    pub frame: u64,
    pub channel: Channel,
    pub kind: Kind,
    pub function: u32,
    pub ports: Option<Ports>,
    pub new: ScanNew,
    /// The capture's name, when it is not the one of the worker's last note.
    pub source: Option<Arc<str>>,
}

/// A device a worker heard since its last tick: its latest PDU by time, then frame.
#[derive(Debug, Clone)]
pub struct Heard {
    /// Its place among the learned devices (the same on every worker: made from one baseline).
    pub dev: u32,
    pub ts: i64,
    pub frame: u64,
    pub peer: IpAddr,
    pub proto: Proto,
    pub source: Arc<str>,
}

/// What goes out of a worker's [`Across`].
#[derive(Default)]
struct Outbox {
    /// The latest PDU of each device heard since the last take, at its place.
    heard: Vec<Option<Heard>>,
    /// The places filled in `heard`.
    dirty: Vec<u32>,
    notes: Vec<Note>,
    /// The capture's name in the last note.
    source: Option<Arc<str>>,
}

impl Outbox {
    fn heard(
        &mut self,
        dev: usize,
        (ts, frame, peer, proto): (i64, u64, IpAddr, Proto),
        source: &Arc<str>,
    ) {
        if self.heard.len() <= dev {
            self.heard.resize_with(dev + 1, || None);
        }
        match &mut self.heard[dev] {
            Some(h) => {
                if (ts, frame) >= (h.ts, h.frame) {
                    (h.ts, h.frame, h.peer, h.proto) = (ts, frame, peer, proto);
                    if !Arc::ptr_eq(&h.source, source) {
                        h.source = Arc::clone(source);
                    }
                }
            }
            slot @ None => {
                self.dirty.push(dev as u32);
                *slot = Some(Heard {
                    dev: dev as u32,
                    ts,
                    frame,
                    peer,
                    proto,
                    source: Arc::clone(source),
                });
            }
        }
    }

    fn note(&mut self, o: &Observation, new: ScanNew) {
        let source = if self
            .source
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &o.source))
        {
            None
        } else {
            self.source = Some(Arc::clone(&o.source));
            Some(Arc::clone(&o.source))
        };
        self.notes.push(Note::Scan(ScanNote {
            ts: o.ts,
            frame: o.frame,
            channel: o.channel,
            kind: o.kind,
            function: o.function,
            ports: o.ports,
            new,
            source,
        }));
    }
}
