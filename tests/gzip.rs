//! Gzip input under attack: a gzip bomb is refused on its first bytes, and a large compressed
//! capture streams through bounded memory. Memory is measured per child process (wait4), as the
//! peak resident set the kernel reports: a property of the reader, not of scheduling.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const OTWATCH: &str = env!("CARGO_BIN_EXE_otwatch");
/// Decompressed size of the test inputs.
const MIB: usize = 1024 * 1024;
const DECOMPRESSED_MIB: usize = 256;
/// Well under the decompressed size: a reader that holds the whole stream cannot stay below.
const PEAK_RSS_LIMIT_KIB: i64 = 96 * 1024;

/// One gzip member of `data`.
fn member(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// A classic pcap file header: little-endian, microseconds, Ethernet.
fn pcap_header() -> Vec<u8> {
    let mut header = Vec::new();
    header.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    header.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    header.extend_from_slice(&65535u32.to_le_bytes());
    header.extend_from_slice(&1u32.to_le_bytes());
    header
}

/// Runs otwatch; its exit code, stderr and peak RSS in KiB.
fn run_measured(args: &[&str]) -> (Option<i32>, String, i64) {
    // Reaped by wait4 below, which also gives its resource usage (Child::wait would not).
    #[allow(clippy::zombie_processes)]
    let child = Command::new(OTWATCH)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn otwatch");
    let pid = child.id() as libc::pid_t;
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4");
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    (code, stderr, usage.ru_maxrss)
}

fn write(path: &Path, members: &[&[u8]], repeat_last: usize) {
    let mut f = std::fs::File::create(path).unwrap();
    for m in members {
        f.write_all(m).unwrap();
    }
    for _ in 0..repeat_last {
        f.write_all(members[members.len() - 1]).unwrap();
    }
}

#[test]
fn a_gzip_bomb_is_refused_on_its_first_bytes() {
    let dir = common::scratch("gzbomb");
    let bomb = dir.join("bomb.pcap.gz");
    let zeros = member(&vec![0u8; MIB]);
    write(&bomb, &[&zeros], DECOMPRESSED_MIB - 1);
    let (code, err, rss) = run_measured(&["replay", bomb.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(dir);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not a pcap or pcapng capture"), "{err}");
    assert!(
        rss < PEAK_RSS_LIMIT_KIB,
        "peak RSS {rss} KiB for a refused bomb"
    );
}

#[test]
fn a_large_gzip_capture_streams_through_bounded_memory() {
    // Classic pcap header, then records of 64 KiB zero frames (not IP: counted, not tracked).
    let header = pcap_header();
    let caplen = 65_520u32;
    let per_mib = MIB / (16 + caplen as usize);
    let mut records = Vec::new();
    for i in 0..per_mib as u32 {
        records.extend_from_slice(&(1_700_000_000 + i).to_le_bytes());
        records.extend_from_slice(&0u32.to_le_bytes());
        records.extend_from_slice(&caplen.to_le_bytes());
        records.extend_from_slice(&caplen.to_le_bytes());
        records.resize(records.len() + caplen as usize, 0);
    }
    let dir = common::scratch("gzstream");
    let path = dir.join("big.pcap.gz");
    write(
        &path,
        &[&member(&header), &member(&records)],
        DECOMPRESSED_MIB - 1,
    );
    let (code, err, rss) = run_measured(&["replay", path.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(dir);
    assert_eq!(code, Some(0), "{err}");
    let packets = per_mib * DECOMPRESSED_MIB;
    assert!(err.contains(&format!(" {packets} packets")), "{err}");
    assert!(
        rss < PEAK_RSS_LIMIT_KIB,
        "peak RSS {rss} KiB streaming {DECOMPRESSED_MIB} MiB"
    );
}

#[test]
fn a_damaged_gzip_is_reported_for_a_person() {
    let header = pcap_header();
    let mut gz = member(&header);
    // The trailer's CRC-32 is the 8 bytes before the end's last 4: flip one bit of it.
    let at = gz.len() - 8;
    gz[at] ^= 1;
    let dir = common::scratch("gzcrc");
    let path = dir.join("crc.pcap.gz");
    std::fs::write(&path, &gz).unwrap();
    let out = Command::new(OTWATCH)
        .args(["replay", path.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("gzip CRC check failed"), "{err}");
}

/// Bytes after the last gzip member that are not a member: every packet before them is read,
/// and the file is reported corrupt (not cut short), with one worker and with two (which
/// decompresses the whole file first). A gzip file that ends too soon is truncated.
#[test]
fn trailing_bytes_after_a_gzip_capture_are_corruption_not_truncation() {
    let capture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/modbus_example.pcap");
    let whole = member(&std::fs::read(&capture).unwrap());
    let dir = common::scratch("gztrail");
    // Long trailing bytes, and fewer than a gzip header's ten (flate2's multi-member decoder
    // took those for a member cut short).
    let trailers: [&[u8]; 3] = [b"trailing bytes, not gzip", b"garbage!", b"\n"];
    let trailing: Vec<_> = trailers
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let path = dir.join(format!("trailing{i}.pcap.gz"));
            std::fs::write(&path, [&whole[..], t].concat()).unwrap();
            path
        })
        .collect();
    let cut = dir.join("cut.pcap.gz");
    std::fs::write(&cut, &whole[..whole.len() - 6]).unwrap();
    // A second member cut after its first byte is cut short too.
    let lone = dir.join("lone.pcap.gz");
    std::fs::write(&lone, [&whole[..], &[0x1f]].concat()).unwrap();
    let packets = {
        let (code, err, _) = run_measured(&["replay", capture.to_str().unwrap()]);
        assert_eq!(code, Some(0), "{err}");
        let line = err
            .lines()
            .find(|l| l.contains(" packets,"))
            .expect("summary");
        let n = line
            .split(" packets,")
            .next()
            .and_then(|h| h.rsplit(' ').next());
        format!(", {} packets,", n.expect("a packet count"))
    };
    for workers in ["1", "2"] {
        for trailing in &trailing {
            let (code, err, _) =
                run_measured(&["replay", "--workers", workers, trailing.to_str().unwrap()]);
            assert_ne!(code, Some(0), "{err}");
            assert!(
                err.contains("corrupt at") && err.contains("not a gzip member"),
                "{err}"
            );
            assert!(
                err.contains(&packets),
                "every packet read: {packets}\n{err}"
            );
        }
        for cut in [&cut, &lone] {
            let (code, err, _) =
                run_measured(&["replay", "--workers", workers, cut.to_str().unwrap()]);
            assert_ne!(code, Some(0), "{err}");
            assert!(
                err.contains("truncated at") && err.contains("cut short"),
                "{err}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
