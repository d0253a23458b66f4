//! The profile-optimised build (contrib/build-pgo.sh) does what the plain build does: the same
//! events, alerts and summary, byte for byte but for the run's own time, on every fixture and,
//! with OTWATCH_CORPUS, every corpus capture. PGO changes where code is laid out and what is
//! inlined, not what it means; this holds the script to that (a training run that changed
//! state a build reads, a flag that reached the wrong crate).
//!
//! Runs when OTWATCH_PGO_BIN names the optimised binary (.ci/run builds it); skipped, with the
//! reason, otherwise. The reference is this test's own build of otwatch (under `cargo test`,
//! the debug build: the same code, with overflow checks on).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// What a run printed: its output file, and its summary with the run's duration and speed
/// (`in 0.379 s (579671 packets/s)`) taken out, and the output's path made `OUT`.
fn run(bin: &Path, args: &[&str], files: &[PathBuf], out: &Path) -> (Vec<u8>, String) {
    let _ = std::fs::remove_file(out);
    let output = Command::new(bin)
        .args(args)
        .arg(out)
        .args(files)
        .output()
        .expect("run otwatch");
    let code = output.status.code();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // 1: a damaged capture in the corpus, reported; anything else is a failure, and so is a
    // worker's panic (a BUG line), which both builds could share.
    assert!(
        matches!(code, Some(0 | 1)) && !stderr.contains("BUG:"),
        "{} {args:?}: exit status {code:?}: {stderr}",
        bin.display(),
    );
    let summary = stderr
        .lines()
        .map(|l| match l.find(" in ") {
            Some(at) if l.starts_with("otwatch replay:") => &l[..at],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace(&out.display().to_string(), "OUT");
    (std::fs::read(out).unwrap_or_default(), summary)
}

fn captures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = common::captures_under(&root.join("fixtures"), &["pcap", "pcapng", "gz"]);
    if let Some(dir) = common::corpus_dir() {
        files.extend(common::captures_under(&dir, &["pcap", "pcapng", "gz"]));
    }
    files
}

#[test]
fn the_profile_optimised_build_does_what_the_plain_build_does() {
    let Some(pgo) = std::env::var_os("OTWATCH_PGO_BIN") else {
        common::skip("set OTWATCH_PGO_BIN to target/pgo/otwatch (contrib/build-pgo.sh builds it)");
        return;
    };
    let pgo = PathBuf::from(pgo);
    assert!(
        pgo.is_file(),
        "OTWATCH_PGO_BIN={} is not a file",
        pgo.display()
    );
    let plain = Path::new(env!("CARGO_BIN_EXE_otwatch"));
    let files = captures();
    let dir = common::scratch("pgo");
    let modes: [&[&str]; 3] = [
        &["replay", "--events"],
        &["replay", "--learn", "60s", "--alerts"],
        &["replay", "--workers", "2", "--learn", "60s", "--alerts"],
    ];
    for args in modes {
        let (plain_out, plain_summary) = run(plain, args, &files, &dir.join("plain"));
        let (pgo_out, pgo_summary) = run(&pgo, args, &files, &dir.join("pgo"));
        assert!(!plain_out.is_empty(), "{args:?}: no output");
        assert_eq!(plain_summary, pgo_summary, "{args:?}: the summaries differ");
        if plain_out != pgo_out {
            let (a, b) = (
                plain_out.split(|&c| c == b'\n'),
                pgo_out.split(|&c| c == b'\n'),
            );
            // Where one is the other cut short: the line past the shorter one's end.
            let shorter = a.clone().count().min(b.clone().count());
            let (line, (a, b)) = a
                .zip(b)
                .enumerate()
                .find(|(_, (a, b))| a != b)
                .unwrap_or((shorter, (&[][..], &[][..])));
            panic!(
                "{args:?}: the outputs differ ({} and {} bytes); first at line {}:\n{}\n{}",
                plain_out.len(),
                pgo_out.len(),
                line + 1,
                String::from_utf8_lossy(a),
                String::from_utf8_lossy(b)
            );
        }
    }
}
