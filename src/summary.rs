//! The one-screen summary printed at the end of a replay.

use std::fmt::Write;

use crate::replay::ReplayReport;
use crate::stats::{ProtoStats, Stats};

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// "name value" pairs, skipping zeros.
fn nonzero(pairs: &[(&str, u64)]) -> String {
    pairs
        .iter()
        .filter(|(_, v)| *v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn proto_lines(
    out: &mut String,
    name: &str,
    p: &ProtoStats,
    fn_name: fn(u8) -> Option<&'static str>,
) {
    let total = p.total_pdus();
    let errors: u64 = p.parse_errors.values().sum();
    // A protocol that counted anything is shown, if only link frames and a discarded fragment.
    if total == 0
        && errors == 0
        && p.resync_skipped_bytes == 0
        && p.unidentified_flows == 0
        && p.counters.values().all(|&n| n == 0)
    {
        return;
    }
    let _ = writeln!(
        out,
        "  {name}: {total} PDUs, {} exceptions, {errors} malformed",
        p.exceptions
    );
    if total > 0 {
        let mut by: Vec<(u8, u64)> = p.functions().collect();
        by.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        // One screen: the most frequent functions, then a tally of the rest.
        const SHOWN: usize = 12;
        let rest: u64 = by.iter().skip(SHOWN).map(|&(_, n)| n).sum();
        let mut list: Vec<String> = by
            .iter()
            .take(SHOWN)
            .map(|&(fc, n)| match fn_name(fc) {
                Some(name) => format!("{name} ({fc}) {n}"),
                None => format!("function {fc} {n}"),
            })
            .collect();
        if by.len() > SHOWN {
            list.push(format!("{} other functions {rest}", by.len() - SHOWN));
        }
        // PDUs without a function code (S7 userdata and bare acks), by kind.
        list.extend(p.other_pdus.iter().map(|(kind, n)| format!("{kind} {n}")));
        let _ = writeln!(out, "    functions: {}", list.join(", "));
    }
    if errors > 0 {
        let list: Vec<String> = p
            .parse_errors
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(out, "    malformed: {}", list.join(", "));
    }
    let other = nonzero(&[
        ("unmatched responses", p.unmatched_responses),
        ("resync skipped bytes", p.resync_skipped_bytes),
        ("unidentified flows", p.unidentified_flows),
        (
            "unconfirmed PDUs not reported",
            p.unconfirmed_pdus_discarded,
        ),
        ("outstanding-request bound drops", p.outstanding_bound_drops),
    ]);
    let counters: Vec<String> = p.counters.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let other = [other, counters.join(", ")]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    if !other.is_empty() {
        let _ = writeln!(out, "    {other}");
    }
}

/// The summary under `heading` (e.g. `otwatch replay: 2 file(s),` or `otwatch live on eth0:`).
pub fn render(report: &ReplayReport, heading: &str) -> String {
    let s: &Stats = &report.stats;
    let mut out = String::new();
    let secs = report.elapsed.as_secs_f64();
    let pps = if secs > 0.0 {
        s.packets as f64 / secs
    } else {
        0.0
    };
    let _ = writeln!(
        out,
        "{heading} {} packets, {} in {:.3} s ({:.0} packets/s){}",
        s.packets,
        human_bytes(s.bytes),
        secs,
        pps,
        if report.interrupted {
            " (interrupted by a signal)"
        } else {
            ""
        }
    );
    if s.worker_panics > 0 {
        let _ = writeln!(
            out,
            "  BUG: {} packet(s) made a worker panic; it went on with fresh flows (report this)",
            s.worker_panics
        );
    }
    let flows = nonzero(&[
        ("evicted idle", s.flows.evicted_idle),
        ("evicted to make room (table full)", s.flows.evicted_full),
        ("table full drops", s.flows.table_full_drops),
        ("5-tuple reused", s.flows.reused),
        (
            "SYNs on an open connection (held, unanswered)",
            s.flows.syn_on_open,
        ),
        ("open at end", report.active_flows_at_end as u64),
        ("packets of untracked flows", s.flows.untracked_packets),
        ("conversations of other protocols", s.flows.talkers),
        (
            "conversations forgotten, talker memory full",
            s.flows.talkers_full,
        ),
    ]);
    if flows.is_empty() {
        let _ = writeln!(out, "  flows: {} tracked", s.flows.created);
    } else {
        let _ = writeln!(out, "  flows: {} tracked ({flows})", s.flows.created);
    }
    for p in crate::dissect::ProtoId::all() {
        let spec = p.spec();
        proto_lines(&mut out, spec.heading, &s[p], spec.function_name);
    }
    let decode = nonzero(&[
        ("non-IP", s.non_ip),
        ("not TCP/UDP", s.non_tcp_udp),
        ("unsupported link type", s.unsupported_linktype),
        ("truncated by snaplen", s.truncated_packets),
        ("link errors", s.decode_errors.link),
        ("IP errors", s.decode_errors.ip),
        ("TCP errors", s.decode_errors.tcp),
        ("UDP errors", s.decode_errors.udp),
        ("bad IPv4 checksums", s.checksum_errors.ipv4),
        ("bad TCP checksums", s.checksum_errors.tcp),
        ("bad UDP checksums", s.checksum_errors.udp),
        (
            "checksums not yet computed (offloaded)",
            s.checksum_errors.offloaded,
        ),
    ]);
    if !decode.is_empty() {
        let _ = writeln!(out, "  decode: {decode}");
    }
    let frag = nonzero(&[
        ("fragments", s.ip_fragments),
        ("reassembled", s.defrag.reassembled),
        ("timed out", s.defrag.timeouts),
        ("unfinished", s.defrag.unfinished),
        ("bound drops", s.defrag.bound_drops),
        ("invalid", s.defrag.invalid),
        ("conflicting overlaps", s.defrag.conflicting_overlaps),
    ]);
    if !frag.is_empty() {
        let _ = writeln!(out, "  ip fragments: {frag}");
    }
    let tcp = nonzero(&[
        ("mid-stream pickups", s.tcp.midstream_pickups),
        ("retransmitted", s.tcp.retransmitted_segments),
        ("overlapping", s.tcp.overlapping_segments),
        ("conflicting overlaps", s.tcp.conflicting_overlaps),
        ("out of order", s.tcp.out_of_order_segments),
        ("gaps", s.tcp.gaps),
        ("discontinuities", s.tcp.discontinuities),
        ("gap bytes", s.tcp.gap_bytes),
        ("out-of-order bound gaps", s.tcp.ooo_bound_gaps),
        ("buffer bound drops", s.tcp.buffer_bound_drops),
        ("partial PDU bytes lost", s.tcp.partial_pdu_bytes_discarded),
    ]);
    if !tcp.is_empty() {
        let _ = writeln!(out, "  tcp: {tcp}");
    }
    for f in &report.files {
        if let Some(e) = &f.error {
            let _ = writeln!(out, "  error: {e}");
        } else if f.packets == 0 {
            let _ = writeln!(out, "  note: {} contains no packets", f.path.display());
        }
    }
    out
}
