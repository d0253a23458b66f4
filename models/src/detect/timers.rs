//! What fires with capture time: response timeouts, missed polls, silent devices, latency shifts
//! and the behaviour model's windows.

use super::*;

/// How long a request on a channel may wait for its response.
pub(super) fn timeout_of(base: &Baseline, known: Option<usize>) -> f64 {
    timeout_for(known.and_then(|i| base.channels[i].latency.as_ref()))
}

pub(super) fn timeout_for(latency: Option<&LatencyModel>) -> f64 {
    latency.map_or(MIN_RESPONSE_TIMEOUT, |l| {
        (5.0 * l.max).max(MIN_RESPONSE_TIMEOUT)
    })
}

/// Unanswered requests of a channel within `UNANSWERED_WINDOW` before `response_timeout`: one
/// lost request (a gateway dropping a frame, a retransmission the capture missed) is not an
/// incident; a device that stopped answering a poll of a second or a minute soon is one.
pub(super) const MIN_UNANSWERED: usize = 3;

pub(super) const UNANSWERED_WINDOW: i64 = 60 * NANOS;

/// A minute, or four periods of the channel's slowest learned poll (a device polled every
/// 30 s that stops answering is reported after its third silent poll).
pub(super) fn unanswered_window(model: Option<&ChannelModel>) -> i64 {
    let slowest = model
        .and_then(|m| m.polls.iter().map(|p| p.period).reduce(f64::max))
        .unwrap_or(0.0);
    UNANSWERED_WINDOW.max(nanos(4.0 * slowest))
}

/// A channel that left at least half of its requests unanswered in learning (a unit
/// behind a gateway that never answers): its timeouts are its baseline, not an incident.
pub(super) fn unanswered_in_learning(m: &ChannelModel) -> bool {
    m.unanswered > 0 && m.unanswered.saturating_mul(2) >= m.requests
}

/// The last `n` occurrences of something (capture time first, oldest first): records one, and
/// says whether all `n` now lie within `window` nanoseconds. Broken poll intervals and
/// response timeouts are incidents only when they come again soon.
pub(super) fn again_within<T>(
    q: &mut VecDeque<(i64, T)>,
    n: usize,
    window: i64,
    ts: i64,
    what: T,
) -> bool {
    if q.len() == n {
        q.pop_front();
    }
    q.push_back((ts, what));
    match (q.front(), q.back()) {
        (Some(first), Some(last)) => q.len() == n && last.0.saturating_sub(first.0) <= window,
        _ => false,
    }
}

/// A slowdown of the median of a full window of recent latencies, and that median. The
/// threshold holds for every value above it, so when the largest latency is no slowdown the
/// median (below it) is not either: the common case costs a pass over the window, not a
/// selection.
pub(super) fn recent_slowdown(l: &LatencyModel, recent: &[f64]) -> Option<f64> {
    let hi = recent.iter().fold(f64::NEG_INFINITY, |hi, &v| hi.max(v));
    if !slowed(l, hi) {
        return None;
    }
    let mut window = [0.0f64; LATENCY_RECENT];
    for (slot, v) in window.iter_mut().zip(recent) {
        *slot = *v;
    }
    let n = recent.len().min(LATENCY_RECENT);
    if n == 0 {
        return None;
    }
    let median = *window[..n].select_nth_unstable_by(n / 2, f64::total_cmp).1;
    slowed(l, median).then_some(median)
}

/// What a latency alert is for: a sustained slowdown, which is what an availability problem
/// looks like (an overloaded PLC, a congested or failing link, a gateway queueing). The median
/// must exceed both twice the learned p99 and four times the learned p50, and by more than
/// 5 ms. Faster answers are no risk to the process (a serial gateway answering faster after a
/// restart raised `latency_shift` "down" 2-3 times per unit on real traffic): not an alert.
pub(super) fn slowed(l: &LatencyModel, median: f64) -> bool {
    median > (2.0 * l.p99).max(4.0 * l.p50) && median - l.p50 > 0.005
}

impl Detector {
    /// The clock's tick: timers (response timeouts, polls that stopped, silent devices) and the
    /// behaviour windows that ended. Capture time. Only ticks fire them, so that what a
    /// channel's state does depends on its own PDUs and the ticks, whichever other channels'
    /// PDUs came between; the capture loop ticks every quarter of a second of capture time.
    #[inline]
    pub fn tick(&mut self, now: i64, out: &mut Vec<Alert>) {
        self.ticked = now;
        // Most ticks come before the next timer due and the next window's end.
        if self.started
            && now >= self.last_tick
            && now < self.next_due
            && now < self.windows.due
            && now < self.across.due
        {
            return;
        }
        self.tick_due(now, out);
    }

    fn tick_due(&mut self, now: i64, out: &mut Vec<Alert>) {
        if !self.started {
            // Silence is measured from the first moment seen, packet or tick: a plant already
            // down when detection starts is still reported.
            self.start(now);
        }
        let first_new = out.len();
        let clock_back = now < self.last_tick;
        if clock_back || now >= self.next_due {
            self.fire_timers(now, out);
        }
        if clock_back || now >= self.across.due {
            self.across.silences(now, out);
        }
        if now >= self.windows.due {
            self.roll_windows(now, out);
        }
        // The timers live in hash maps, whose order differs from run to run, and the windows
        // in the order their channels became active: the alerts of one tick go out in a
        // defined order (the alert book keeps the last occurrence's frames).
        out[first_new..].sort_by(tick_order);
    }

    fn fire_timers(&mut self, now: i64, out: &mut Vec<Alert>) {
        self.last_tick = now;
        // Walk every timer, fire the expired ones, and find the next one due.
        let mut next = i64::MAX;
        let base = Arc::clone(&self.baseline);
        let learned = self
            .chans
            .slots
            .iter_mut()
            .zip(&base.channels)
            .map(|(s, c)| (&c.channel, &mut s.rt));
        for (ch, rt) in learned.chain(&mut self.chans.others) {
            if rt.pending.map.is_empty() {
                // Most channels wait for nothing; walking an empty map still costs its table.
                continue;
            }
            let timeout = timeout_of(&self.baseline, rt.known);
            for (_, (ts, _, _)) in rt.pending.map.iter() {
                let due = ts.saturating_add(nanos(timeout));
                if due >= now {
                    next = next.min(due);
                }
            }
            let mut expired: Vec<(u32, i64, u64)> = rt
                .pending
                .map
                .iter()
                .filter(|(_, (ts, _, _))| secs(*ts, now) > timeout)
                .map(|(c, (ts, f, _))| (c, ts, f))
                .collect();
            if expired.is_empty() {
                continue;
            }
            // By time, then frame and correlation: equal times must not come out in hash order.
            expired.sort_unstable_by_key(|e| (e.1, e.2, e.0));
            for (c, _, _) in &expired {
                rt.pending.map.remove(c);
            }
            let model = rt.known.map(|i| &self.baseline.channels[i]);
            let window = unanswered_window(model);
            let mut recent = false;
            for e in &expired {
                recent = again_within(&mut rt.timeouts, MIN_UNANSWERED, window, e.1, e.2);
            }
            if !recent || model.is_some_and(unanswered_in_learning) {
                continue;
            }
            // Evidence: the timeouts that made the incident, then this tick's others.
            let (ts, frame) = rt.timeouts[0];
            let key = AlertKey::pair("response_timeout", ch.proto, ch.client, ch.server, 0);
            let mut a = channel_alert(ch, Some(rt), now, key, Severity::High);
            a.frames = rt.timeouts.iter().map(|t| t.1).collect();
            for e in &expired {
                if a.frames.len() < 8 && !a.frames.contains(&e.2) {
                    a.frames.push(e.2);
                }
            }
            // The incident's requests (the last ones that timed out within the window), not
            // only this tick's.
            let n = rt.timeouts.len();
            a.message = format!(
                "{ch}: {n} requests unanswered within {} s, each for more than {timeout:.3} s",
                window / NANOS
            );
            *a.learned = json!({"timeout_s": timeout, "min_unanswered": MIN_UNANSWERED, "window_s": window / NANOS});
            *a.observed =
                json!({"unanswered": n, "first_request_frame": frame, "first_request_ts_ns": ts});
            out.push(a);
        }
        let polls = self
            .chans
            .slots
            .iter_mut()
            .zip(&base.channels)
            .flat_map(|(s, c)| {
                // A slot's state is there once its channel was seen.
                let rt = s.rt.known.is_some().then_some(&s.rt);
                s.polls.iter_mut().map(move |(_, p)| (&c.channel, rt, p))
            });
        for (ch, rt, p) in polls {
            let Some((last, frame)) = p.last else {
                continue;
            };
            let m = &p.model;
            let late = poll_missing_after(m);
            if !p.missing_alerted && secs(last, now) <= late {
                next = next.min(last.saturating_add(p.missing_after));
            }
            if !p.missing_alerted && secs(last, now) > late {
                p.missing_alerted = true;
                let key = AlertKey::channel("poll_cycle_broken", ch, poll_extra(m));
                out.push(Alert {
                    // No frame when the poll never came since detection started.
                    frames: if frame > 0 {
                        smallvec::smallvec![frame]
                    } else {
                        smallvec::SmallVec::new()
                    },
                    message: format!(
                        "{ch}: poll of function {} {} {}+{} missing: none for {:.3} s, learned every {:.3} s",
                        m.function,
                        ch.proto.space_name(m.space),
                        m.start,
                        m.count,
                        secs(last, now),
                        m.period
                    ),
                    learned: json!({"period_s": m.period, "jitter_s": m.jitter}).into(),
                    observed: json!({"since_last_s": secs(last, now), "kind": "missing"}).into(),
                    ..channel_alert(ch, rt, now, key, Severity::Medium)
                });
            }
        }
        self.next_due = next;
    }

    /// The capture clock stepped back to `now` (a capture that starts before the last one
    /// ended, a live sensor's clock stepped by NTP): what is measured over time starts again
    /// there. Request rates count afresh; requests awaiting an answer and recent timeouts are
    /// dropped (an answer from before is not theirs, and they would all lie "within" any
    /// window); polls start again at their next request; the open behaviour windows are
    /// dropped, the next one being partial; a device's silence counts from the step at the
    /// latest.
    pub fn clock_back(&mut self, now: i64) {
        self.across.clock_back(now);
        let learned = self.chans.slots.iter_mut().map(|s| &mut s.rt);
        for rt in learned.chain(self.chans.others.values_mut()) {
            rt.req_rate = RateCounter::default();
            rt.exc_rate = RateCounter::default();
            rt.window = WindowAcc::default();
            rt.listed = false;
            rt.pending.map = CorrMap::default();
            rt.timeouts.clear();
        }
        self.poll_origin = now;
        for s in &mut self.chans.slots {
            // On a worker, only the channels it follows.
            if self.claims && !s.claimed {
                continue;
            }
            for (_, p) in &mut s.polls {
                // Counted from the step: a poll dead since is missing three periods on.
                p.last = Some((now, 0));
                p.missing_alerted = false;
                p.broken.clear();
            }
        }
        self.windows.active.clear();
        self.windows.due = i64::MAX;
        // The window of the step is partial.
        self.windows.first = Some(now.div_euclid(self.windows.nanos));
        self.next_due = i64::MIN;
    }

    /// Behaviour windows: scores the channels' windows that ended by `now`.
    #[cold]
    #[inline(never)]
    fn roll_windows(&mut self, now: i64, out: &mut Vec<Alert>) {
        let base = Arc::clone(&self.baseline);
        let mut active = std::mem::take(&mut self.windows.active);
        let mut due = i64::MAX;
        active.retain(|&at| {
            let Some((ch, rt)) = self.chans.rt_of(&base, at) else {
                return false;
            };
            if !rt.window.is_empty() && rt.window_end > now {
                due = due.min(rt.window_end);
                return true;
            }
            close_window(&self.windows, &base, &self.weak_channels, &ch, rt, now, out);
            rt.listed = false;
            false
        });
        self.windows.active = active;
        self.windows.due = due;
    }
}

/// The order of one tick's alerts, whatever order the timers were walked in.
pub fn tick_order(a: &Alert, b: &Alert) -> std::cmp::Ordering {
    (a.r#type, a.src_ip, a.dst_ip, &a.frames, &a.message)
        .cmp(&(b.r#type, b.src_ip, b.dst_ip, &b.frames, &b.message))
}

/// The channels' behaviour windows: each channel's runs from the first PDU it has after the
/// last one ended, on one grid (window `i` is `[i * nanos, (i + 1) * nanos)`), and is scored
/// when a PDU of its channel or a tick finds it ended.
pub(super) struct Windows {
    pub(super) nanos: i64,
    /// The window detection started in (or the clock stepped back in): partial, so not scored.
    pub(super) first: Option<i64>,
    /// The earliest end of the windows in `active`.
    pub(super) due: i64,
    /// Channels whose window has activity.
    pub(super) active: Vec<RtAt>,
}

/// Puts `o` into its channel's behaviour window (`rt`, found at `at`), scoring the one it held
/// first when `o` is past its end.
#[inline]
pub(super) fn into_window(
    windows: &mut Windows,
    base: &Baseline,
    weak: &FastSet<Channel>,
    (at, rt): (RtAt, &mut ChanRt),
    (o, latency, counted): (&Observation, Option<f64>, Option<&mut u64>),
    out: &mut Vec<Alert>,
) {
    if o.ts >= rt.window_end && !rt.window.is_empty() {
        close_window(windows, base, weak, &o.channel, rt, o.ts, out);
    }
    if rt.window.is_empty() {
        rt.window_end =
            o.ts.div_euclid(windows.nanos)
                .saturating_add(1)
                .saturating_mul(windows.nanos);
        windows.due = windows.due.min(rt.window_end);
        rt.window_gen += 1;
        if !rt.listed {
            rt.listed = true;
            windows.active.push(at);
        }
    }
    // A clean request held by its channel (`counted`: the window it was last counted in) and
    // counted in this window already: its function and addresses are in it. The window is
    // only ever emptied whole, and the next PDU into it begins a new one.
    match counted {
        Some(w) if *w == rt.window_gen => rt.window.add_again(o),
        Some(w) => {
            rt.window.add(o, latency);
            *w = rt.window_gen;
        }
        None => rt.window.add(o, latency),
    }
}

/// Scores the window `rt` holds (of channel `ch`), found ended at `ts`, and empties it.
#[cold]
#[inline(never)]
fn close_window(
    windows: &Windows,
    base: &Baseline,
    weak: &FastSet<Channel>,
    ch: &Channel,
    rt: &mut ChanRt,
    ts: i64,
    out: &mut Vec<Alert>,
) {
    let mut w = std::mem::take(&mut rt.window);
    let Some(model) = base.behaviour.as_ref() else {
        return;
    };
    let index = rt.window_end.div_euclid(windows.nanos).saturating_sub(1);
    // A channel learning saw too little of (under-learned: docs/alerts.md) has no behaviour
    // to be unlike: its few learned windows say nothing of its normal spread.
    if w.is_empty() || rt.known.is_none() || windows.first == Some(index) || weak.contains(ch) {
        return;
    }
    let x = w.features();
    let d = model.distance(&x);
    if d > model.threshold {
        let key = AlertKey::channel("behaviour_anomaly", ch, 0);
        out.push(Alert {
            frames: [w.first_frame, Some(w.last_frame)].into_iter().flatten().collect(),
            message: format!(
                "{ch}: a {} s window unlike any in learning (distance {d:.2}, threshold {:.2})",
                model.window, model.threshold
            ),
            learned: json!({"threshold": model.threshold, "max_training_distance": model.max_training_distance}).into(),
            observed: json!({"distance": d, "window_end_ns": rt.window_end, "features": model.features.iter().zip(x).map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<String, serde_json::Value>>()}).into(),
            // Raised when the window is found ended: lines stay in time order.
            ..channel_alert(ch, Some(rt), ts, key, Severity::Low)
        });
    }
}
