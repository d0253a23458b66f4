//! Evidence pcaps: the last packets of every IP pair, kept in a bounded ring, and written as a
//! small classic pcap for each alert (`--evidence DIR`).

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use otwatch_models::Alert;

use crate::capture::{LinkType, Packet};

/// Packets kept per IP pair for evidence, and the pairs kept.
pub const EVIDENCE_PACKETS_PER_PAIR: usize = 32;
pub const EVIDENCE_PAIRS: usize = 4096;
/// Bytes kept of each packet.
pub const EVIDENCE_SNAPLEN: usize = 2048;
/// Evidence files written per run, at most (alerts beyond it get none).
pub const EVIDENCE_MAX_FILES: u64 = 10_000;
/// Bytes the rings hold at most, all workers together (each ring its share): past it the pairs
/// kept longest ago are forgotten. 4096 pairs of 32 full-size packets would be 256 MiB a ring.
pub const EVIDENCE_BYTES: usize = 64 * 1024 * 1024;
/// What a packet kept costs beside its bytes (its record and allocation), for the budget.
const PACKET_OVERHEAD: usize = 96;

struct Captured {
    source: Arc<str>,
    frame: u64,
    ts: i64,
    orig_len: u32,
    linktype: LinkType,
    data: Vec<u8>,
}

/// A bounded ring of recent packets per IP pair (either direction), for evidence.
pub struct EvidenceRing {
    pairs: HashMap<(IpAddr, IpAddr), VecDeque<Captured>, foldhash::fast::RandomState>,
    /// Pairs in the order they were first kept: the oldest is forgotten first.
    order: VecDeque<(IpAddr, IpAddr)>,
    /// What the packets kept cost ([`PACKET_OVERHEAD`] each beside their bytes), and the most
    /// they may.
    bytes: usize,
    budget: usize,
}

impl Default for EvidenceRing {
    fn default() -> Self {
        EvidenceRing::with_budget(EVIDENCE_BYTES)
    }
}

fn cost(c: &Captured) -> usize {
    c.data.len() + PACKET_OVERHEAD
}

fn pair(a: IpAddr, b: IpAddr) -> (IpAddr, IpAddr) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

impl EvidenceRing {
    /// A ring that holds at most `budget` bytes (a worker's share of [`EVIDENCE_BYTES`]).
    pub fn with_budget(budget: usize) -> Self {
        EvidenceRing {
            pairs: HashMap::default(),
            order: VecDeque::new(),
            bytes: 0,
            budget,
        }
    }

    /// Forgets the pair kept longest ago (constant time, whatever floods the table).
    fn forget_oldest(&mut self) {
        if let Some(oldest) = self.order.pop_front() {
            if let Some(q) = self.pairs.remove(&oldest) {
                self.bytes -= q.iter().map(cost).sum::<usize>();
            }
        }
    }

    pub fn record(&mut self, src: IpAddr, dst: IpAddr, pkt: &Packet<'_>, source: &Arc<str>) {
        let key = pair(src, dst);
        if !self.pairs.contains_key(&key) {
            if self.pairs.len() >= EVIDENCE_PAIRS {
                self.forget_oldest();
            }
            self.order.push_back(key);
        }
        let c = Captured {
            source: Arc::clone(source),
            frame: pkt.frame,
            ts: pkt.ts_nanos,
            orig_len: pkt.orig_len,
            linktype: pkt.linktype,
            data: pkt.data[..pkt.data.len().min(EVIDENCE_SNAPLEN)].to_vec(),
        };
        self.bytes += cost(&c);
        let q = self.pairs.entry(key).or_default();
        if q.len() >= EVIDENCE_PACKETS_PER_PAIR {
            if let Some(old) = q.pop_front() {
                self.bytes -= cost(&old);
            }
        }
        q.push_back(c);
        // Over the byte budget: the pairs kept longest ago go (this one last of all).
        while self.bytes > self.budget && self.order.len() > 1 {
            self.forget_oldest();
        }
    }

    /// Forgets every packet (its budget stays).
    pub fn empty(&mut self) {
        *self = EvidenceRing::with_budget(self.budget);
    }

    /// Bytes the ring holds (its packets and their records).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Writes the alert's packets as a classic pcap: the frames it names, or when none of them
    /// is still held, the last packets between its two hosts. `Ok(false)`: nothing held.
    pub fn write(&self, alert: &Alert, path: &Path) -> std::io::Result<bool> {
        let Some(q) = self.pairs.get(&pair(alert.src_ip, alert.dst_ip)) else {
            return Ok(false);
        };
        let named: Vec<&Captured> = q
            .iter()
            .filter(|c| alert.frames.contains(&c.frame) && *c.source == *alert.source)
            .collect();
        let chosen: Vec<&Captured> = if named.is_empty() {
            q.iter().rev().take(8).rev().collect()
        } else {
            named
        };
        let Some(first) = chosen.first() else {
            return Ok(false);
        };
        let linktype = first.linktype;
        // A new file only, and never through a symlink: the directory may be writable by the
        // dropped user, who must not be able to point an alert's file at something else.
        let file = create_new(path)?;
        let written = write_pcap(file, linktype, &chosen);
        if written.is_err() {
            // A partial file of ours (disk full): not evidence anyone should rely on.
            let _ = std::fs::remove_file(path);
        }
        written?;
        Ok(true)
    }
}

/// A new file at `path`: never one that exists, never through a symlink.
fn create_new(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// A classic pcap of `packets` (those of `linktype`), nanosecond timestamps.
fn write_pcap(
    file: std::fs::File,
    linktype: LinkType,
    packets: &[&Captured],
) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(file);
    // Classic pcap, nanosecond magic, so timestamps survive exactly.
    out.write_all(&0xa1b2_3c4du32.to_le_bytes())?;
    out.write_all(&2u16.to_le_bytes())?;
    out.write_all(&4u16.to_le_bytes())?;
    out.write_all(&0i32.to_le_bytes())?;
    out.write_all(&0u32.to_le_bytes())?;
    out.write_all(&(EVIDENCE_SNAPLEN as u32).to_le_bytes())?;
    out.write_all(&linktype.0.to_le_bytes())?;
    for c in packets.iter().filter(|c| c.linktype == linktype) {
        let secs = c.ts.div_euclid(1_000_000_000) as u32;
        let nanos = c.ts.rem_euclid(1_000_000_000) as u32;
        out.write_all(&secs.to_le_bytes())?;
        out.write_all(&nanos.to_le_bytes())?;
        out.write_all(&(c.data.len() as u32).to_le_bytes())?;
        out.write_all(&c.orig_len.max(c.data.len() as u32).to_le_bytes())?;
        out.write_all(&c.data)?;
    }
    // Synced with the rest of the directory at the end of the run (syncfs), not one fsync per
    // file on the capture thread.
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Full-size packets of many pairs: the ring holds its byte budget at most, forgetting the
    /// pairs kept longest ago, and still has the newest pair's packets. Before, 4096 pairs of 32
    /// packets of 2 KiB held 256 MiB per worker.
    #[test]
    fn the_ring_holds_its_byte_budget() {
        let budget = 4 * 1024 * 1024;
        let mut ring = EvidenceRing::with_budget(budget);
        let source: Arc<str> = Arc::from("t");
        let data = vec![0u8; 4000];
        for i in 0..4000u32 {
            let src = IpAddr::from([10, 0, (i >> 8) as u8, i as u8]);
            let dst = IpAddr::from([10, 1, 0, 1]);
            for k in 0..4 {
                let pkt = Packet {
                    ts_nanos: i64::from(i) * 1000 + k,
                    frame: u64::from(i) * 4 + k as u64,
                    orig_len: 4000,
                    linktype: LinkType::ETHERNET,
                    data: &data,
                    csum_not_ready: false,
                };
                ring.record(src, dst, &pkt, &source);
            }
            assert!(ring.bytes() <= budget, "{} bytes", ring.bytes());
        }
        assert_eq!(
            ring.bytes(),
            ring.pairs.values().flatten().map(cost).sum::<usize>(),
            "the count is the packets'"
        );
        let newest = pair(IpAddr::from([10, 0, 15, 159]), IpAddr::from([10, 1, 0, 1]));
        assert_eq!(ring.pairs.get(&newest).map(VecDeque::len), Some(4));
        assert!(ring.pairs.len() < 4000);
    }

    #[test]
    fn evidence_files_are_new_and_never_written_through_a_symlink() {
        let dir = std::env::temp_dir().join(format!("otwatch-evidence-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("target");
        std::fs::write(&target, b"untouched").unwrap();
        let link = dir.join("alert.pcap");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(create_new(&link).is_err(), "opened through a symlink");
        assert!(create_new(&target).is_err(), "opened an existing file");
        assert!(create_new(&dir.join("new.pcap")).is_ok());
        assert_eq!(std::fs::read(&target).unwrap(), b"untouched");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
