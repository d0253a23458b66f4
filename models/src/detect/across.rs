//! What detection keeps across channels: the learned devices' silence clocks (a device speaks
//! on several channels) and the clients' scan windows (a client walks several servers). Apart
//! from the per-channel state, and fed only by what each PDU says of its device and its
//! client, so that it can be kept in one place while channels are checked in several.

use super::*;

pub(crate) struct Across {
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
            silence: Vec::new(),
            due: i64::MAX,
            scans: Scans::default(),
            scan_resets: 0,
        }
    }
}

impl Across {
    /// Starts the silence clock `rt` of the device at `dev`.
    pub(super) fn clock(&mut self, dev: usize, rt: AssetRt) {
        if self.silence.len() <= dev {
            self.silence.resize_with(dev + 1, || None);
        }
        self.due = self.due.min(rt.last.saturating_add(rt.threshold_nanos));
        self.silence[dev] = Some(rt);
    }

    /// The device at `dev` sent `o`. Its clock keeps the latest PDU by time (then frame): a
    /// PDU out of a TCP hole carries its own, older time, and the device was heard later. What
    /// the clock holds is then the same whatever the order its PDUs come in.
    #[inline]
    pub(super) fn heard(&mut self, dev: usize, o: &Observation) {
        let Some(Some(a)) = self.silence.get_mut(dev) else {
            return;
        };
        if a.silent {
            a.silent = false;
        }
        if (o.ts, o.frame) >= (a.last, a.last_frame) {
            a.last = o.ts;
            a.last_frame = o.frame;
            set_source(&mut a.source, &o.source);
            a.peer = Some(o.dst());
            a.proto = o.channel.proto;
        }
        self.due = self.due.min(o.ts.saturating_add(a.threshold_nanos));
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

    /// `o`'s client's scan window ([`scan_window`]).
    #[inline]
    pub(super) fn scan_window(&mut self, o: &Observation, place: &mut ScanPlace) -> &mut ScanRt {
        scan_window(&mut self.scans, &mut self.scan_resets, o, place)
    }
}
