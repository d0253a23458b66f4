//! pcap and pcapng files, plain or gzip-compressed, read without any system library.
//!
//! Plain files are memory-mapped and packets borrow straight from the map. Gzip files are
//! streamed through a bounded window (packets borrow from the window), and their format
//! signature is checked on the first decompressed bytes, so a gzip bomb is refused at once and a
//! large compressed capture never needs its decompressed size in memory. A file that ends in the
//! middle of a record yields every packet before the damage, then one error naming the file and
//! the byte offset of the damaged record.

use std::io::Read;
use std::path::{Path, PathBuf};

use pcap_parser::pcapng::Block;
use pcap_parser::{nom, PcapError};

use super::{LinkType, Packet, PacketSource};

/// Decompressed bytes of a gzip capture kept ahead of the read position: below this the window
/// is refilled to twice this, so each byte is moved at most once more. A pcap record is at most
/// [`MAX_CAPLEN`]; a larger pcapng block is made whole in the window on demand, up to
/// [`MAX_PCAPNG_BLOCK`].
const GZIP_LOOKAHEAD: usize = 4 * 1024 * 1024;

/// The largest pcapng block a gzip window grows for (a plain file maps any size).
const MAX_PCAPNG_BLOCK: usize = 64 * 1024 * 1024;

/// `replay --workers` decompresses a gzip capture to a temporary file, at most this much; one
/// worker streams any size.
pub const MAX_GZIP_SPILL: u64 = 4 * 1024 * 1024 * 1024;

/// Captured lengths above this are not plausible (the largest snaplen any tool writes is 256 KiB);
/// such a record means the file is corrupt, and reading on would misframe everything after it.
const MAX_CAPLEN: u32 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a pcap or pcapng capture ({detail})")]
    NotACapture { path: PathBuf, detail: String },
    #[error("{path}: truncated at byte offset {offset} after {packets} packets: {detail}")]
    Truncated {
        path: PathBuf,
        offset: u64,
        packets: u64,
        detail: String,
    },
    #[error("{path}: corrupt at byte offset {offset} after {packets} packets: {detail}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        packets: u64,
        detail: String,
    },
    /// Reading from a live interface failed (it went away, the socket broke).
    #[error("{iface}: live capture failed: {source}")]
    Live {
        iface: String,
        #[source]
        source: std::io::Error,
    },
}

enum Buffer {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
    Gzip(Box<GzipWindow>),
    Empty,
}

impl Buffer {
    fn bytes(&self) -> &[u8] {
        match self {
            Buffer::Mapped(m) => m,
            Buffer::Owned(v) => v,
            Buffer::Gzip(g) => &g.window,
            Buffer::Empty => &[],
        }
    }
}

/// The bytes of a file, mapped or (in tests and fuzzing) in memory.
enum Raw {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl AsRef<[u8]> for Raw {
    fn as_ref(&self) -> &[u8] {
        match self {
            Raw::Mapped(m) => m,
            Raw::Owned(v) => v,
        }
    }
}

/// The members of a gzip file one after the other, as one stream. Between members, and after
/// the last, the bytes must start another member: bytes that do not (of any length) are an
/// error, `invalid gzip header` (flate2's `MultiGzDecoder` took fewer than ten for a member cut
/// short).
struct Members {
    /// `None` only while one member's decoder is swapped for the next's.
    member: Option<flate2::bufread::GzDecoder<std::io::Cursor<Raw>>>,
}

impl Members {
    fn new(raw: Raw) -> Members {
        Members {
            member: Some(flate2::bufread::GzDecoder::new(std::io::Cursor::new(raw))),
        }
    }

    fn cursor(&self) -> Option<&std::io::Cursor<Raw>> {
        self.member.as_ref().map(|m| m.get_ref())
    }
}

impl Read for Members {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let Some(member) = self.member.as_mut() else {
                return Ok(0);
            };
            let n = member.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // The member ended (its trailer checked): what follows it, if anything, starts the
            // next one. A bufread decoder stops at the member's last byte.
            let cursor = member.get_ref();
            let rest = &cursor.get_ref().as_ref()
                [(cursor.position() as usize).min(cursor.get_ref().as_ref().len())..];
            if rest.is_empty() {
                return Ok(0);
            }
            // A lone 0x1f: a member cut after its first byte.
            if rest == [0x1f] {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if !rest.starts_with(&[0x1f, 0x8b]) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "invalid gzip header",
                ));
            }
            let Some(done) = self.member.take() else {
                return Ok(0);
            };
            self.member = Some(flate2::bufread::GzDecoder::new(done.into_inner()));
        }
    }
}

/// A gzip capture decompressed a window at a time.
struct GzipWindow {
    decoder: Members,
    window: Vec<u8>,
    /// The stream ended (cleanly or not).
    eof: bool,
}

impl GzipWindow {
    fn new(raw: Raw) -> GzipWindow {
        GzipWindow {
            decoder: Members::new(raw),
            window: Vec::new(),
            eof: false,
        }
    }

    /// Compressed bytes consumed so far (for the progress bar).
    fn compressed_pos(&self) -> u64 {
        self.decoder.cursor().map_or(0, |c| c.position())
    }

    /// Drops the `consumed` bytes before the read position and decompresses until `ahead`
    /// bytes are in the window or the stream ends. A broken stream is returned as its error
    /// (after which the window holds what decompressed cleanly).
    fn refill(&mut self, consumed: usize, ahead: usize) -> std::io::Result<()> {
        self.window.drain(..consumed.min(self.window.len()));
        while !self.eof && self.window.len() < ahead {
            let want = (ahead - self.window.len()) as u64;
            // read_to_end fills spare capacity without zeroing it first, and keeps what was
            // read before an error.
            match (&mut self.decoder).take(want).read_to_end(&mut self.window) {
                Ok(n) if (n as u64) < want => self.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.eof = true;
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// A gzip stream error, said for a person.
fn gzip_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    if text.contains("checksum") {
        "gzip CRC check failed: the compressed file is damaged".into()
    } else if text.contains("corrupt deflate stream") {
        "the gzip data is corrupt (not a valid deflate stream)".into()
    } else if text.contains("invalid gzip header") {
        "bytes that are not a gzip member follow (a damaged member header, or trailing bytes after the last member)".into()
    } else if e.kind() == std::io::ErrorKind::UnexpectedEof {
        "the gzip file is cut short".into()
    } else {
        format!("gzip stream broken ({text})")
    }
}

/// The error a broken gzip stream leaves, after the `offset` bytes that decompressed cleanly:
/// truncated when the compressed file ends too soon, corrupt when its bytes are wrong.
fn gzip_failure(path: &Path, e: &std::io::Error, offset: u64) -> CaptureError {
    let detail = format!("{}; the offset is in the decompressed data", gzip_error(e));
    let truncated = e.kind() == std::io::ErrorKind::UnexpectedEof;
    CaptureError::damaged(truncated, path.to_owned(), offset, 0, detail)
}

impl CaptureError {
    /// A file damaged at `offset` after `packets` packets: truncated (it ends too soon) or
    /// corrupt (its bytes are wrong).
    fn damaged(
        truncated: bool,
        path: PathBuf,
        offset: u64,
        packets: u64,
        detail: String,
    ) -> CaptureError {
        if truncated {
            CaptureError::Truncated {
                path,
                offset,
                packets,
                detail,
            }
        } else {
            CaptureError::Corrupt {
                path,
                offset,
                packets,
                detail,
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: LinkType,
    /// Timestamp units per second.
    units_per_sec: u64,
    offset_secs: i64,
    /// The most bytes of a packet captured (0: no limit).
    snaplen: u32,
}

/// An interface's `if_tsoffset` (option 14), in the section's byte order (pcap-parser reads it
/// little-endian whatever the section).
fn ts_offset(idb: &pcap_parser::InterfaceDescriptionBlock<'_>, big_endian: bool) -> i64 {
    idb.options
        .iter()
        .find(|o| o.code.0 == 14)
        .and_then(|o| o.as_bytes().ok())
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, |b| {
            if big_endian {
                i64::from_be_bytes(b)
            } else {
                i64::from_le_bytes(b)
            }
        })
}

/// An obsolete Packet Block (type 2, still written by old tools): interface id and drops
/// (2 bytes each), timestamp (high, low), captured and original lengths, the data.
fn obsolete_packet(body: &[u8], big_endian: bool) -> Option<(u16, u64, u32, &[u8])> {
    let u16_at = |at: usize| {
        let b = <[u8; 2]>::try_from(body.get(at..at + 2)?).ok()?;
        Some(if big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    };
    let u32_at = |at: usize| {
        let b = <[u8; 4]>::try_from(body.get(at..at + 4)?).ok()?;
        Some(if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    let if_id = u16_at(0)?;
    let ticks = u64::from(u32_at(4)?) << 32 | u64::from(u32_at(8)?);
    let caplen = u32_at(12)? as usize;
    let origlen = u32_at(16)?;
    let data = body.get(20..20 + caplen)?;
    Some((if_id, ticks, origlen, data))
}

#[derive(Debug)]
enum Format {
    Pcap {
        big_endian: bool,
        nanos: bool,
        linktype: LinkType,
    },
    PcapNg {
        big_endian: bool,
        interfaces: Vec<Interface>,
    },
}

/// An open capture file. Iterate with [`PacketSource::next_packet`].
pub struct CaptureFile {
    buf: Buffer,
    st: FileCursor,
}

/// Everything but the bytes, so that packets can borrow the buffer while the state moves on
/// (and so the bytes can be shared with other threads while one thread reads: see
/// [`CaptureFile::split`]).
pub struct FileCursor {
    path: PathBuf,
    format: Format,
    /// Byte offset of the next record in the bytes at hand (a gzip file's window).
    offset: usize,
    /// Decompressed bytes of a gzip file dropped before the window: `base + offset` is the
    /// record's offset in the decompressed capture.
    base: u64,
    packets: u64,
    last_ts: i64,
    /// Set once an error has been returned: the source is finished.
    done: bool,
    /// Ask for the bytes a few records ahead ([`prefetch`]): for a reader that only reads and
    /// hands packets to workers ([`CaptureFile::split`]), which otherwise waits for memory at
    /// every record; one worker does enough per packet for the CPU to fetch ahead by itself
    /// (the hint cost it about 1%).
    prefetch: bool,
    /// A gzip stream that broke: reported after the packets decompressed before the damage.
    deferred: Option<CaptureError>,
    gzip: bool,
    file_len: u64,
}

impl CaptureFile {
    pub fn open(path: &Path) -> Result<CaptureFile, CaptureError> {
        let open_err = |source| CaptureError::Open {
            path: path.to_owned(),
            source,
        };
        // Non-blocking: opening a FIFO would otherwise wait for a writer, out of reach of
        // SIGINT and SIGTERM (the open is retried after the signal). Reads are of a map.
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .map_err(open_err)?
        };
        let meta = file.metadata().map_err(open_err)?;
        if meta.is_dir() {
            return Err(open_err(std::io::Error::other("is a directory")));
        }
        if !meta.is_file() {
            // A pipe, a socket, a device (`replay <(zcat …)`): captures are read mapped, in
            // place, and a stream has no length to map.
            return Err(open_err(std::io::Error::other(
                "not a regular file (a pipe or a device): write the capture to a file first (.pcap.gz is read as it is)",
            )));
        }
        let file_len = meta.len();
        let not_capture = |detail: String| CaptureError::NotACapture {
            path: path.to_owned(),
            detail,
        };
        if file_len == 0 {
            return Err(not_capture("the file is empty".into()));
        }
        // SAFETY: the map is read-only and private to this process. The one hazard is another
        // process truncating the file while we read it (SIGBUS); captures being replayed are
        // finished files, as with every mmap-based pcap reader.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(open_err)?;
        CaptureFile::from_raw(path, Raw::Mapped(map), file_len)
    }

    /// A capture held in memory (tests, fuzzing), read exactly as a file would be; `name`
    /// stands for its path in errors.
    pub fn from_bytes(name: &Path, bytes: Vec<u8>) -> Result<CaptureFile, CaptureError> {
        if bytes.is_empty() {
            return Err(CaptureError::NotACapture {
                path: name.to_owned(),
                detail: "the file is empty".into(),
            });
        }
        let len = bytes.len() as u64;
        CaptureFile::from_raw(name, Raw::Owned(bytes), len)
    }

    fn from_raw(path: &Path, raw: Raw, file_len: u64) -> Result<CaptureFile, CaptureError> {
        let not_capture = |detail: String| CaptureError::NotACapture {
            path: path.to_owned(),
            detail,
        };
        let mut gzip = false;
        let mut deferred = None;
        let buf = if raw.as_ref().starts_with(&[0x1f, 0x8b]) {
            gzip = true;
            let mut g = Box::new(GzipWindow::new(raw));
            if let Err(e) = g.refill(0, 2 * GZIP_LOOKAHEAD) {
                if g.window.len() < 24 {
                    return Err(not_capture(gzip_error(&e)));
                }
                // Keep what decompressed cleanly; report the damage after those packets.
                deferred = Some(gzip_failure(path, &e, g.window.len() as u64));
            }
            Buffer::Gzip(g)
        } else {
            match raw {
                Raw::Mapped(m) => Buffer::Mapped(m),
                Raw::Owned(v) => Buffer::Owned(v),
            }
        };
        let format = detect_format(buf.bytes()).map_err(not_capture)?;
        let offset = match format {
            Format::Pcap { .. } => 24,
            Format::PcapNg { .. } => 0,
        };
        Ok(CaptureFile {
            buf,
            st: FileCursor {
                path: path.to_owned(),
                format,
                offset,
                base: 0,
                packets: 0,
                last_ts: 0,
                done: false,
                prefetch: false,
                deferred,
                gzip,
                file_len,
            },
        })
    }

    /// As [`CaptureFile::open`], but a gzip file is decompressed into an unlinked temporary
    /// file and mapped, so that [`CaptureFile::split`] can share its bytes with other threads
    /// (`replay --workers`). Memory stays bounded; the temporary file takes the disk space.
    pub fn open_shareable(path: &Path) -> Result<CaptureFile, CaptureError> {
        let mut cap = CaptureFile::open(path)?;
        let Buffer::Gzip(g) = &mut cap.buf else {
            return Ok(cap);
        };
        let open_err = |source| CaptureError::Open {
            path: path.to_owned(),
            source,
        };
        let mut tmp = spill_file().map_err(open_err)?;
        let mut written = 0u64;
        loop {
            use std::io::Write;
            tmp.write_all(&g.window).map_err(open_err)?;
            written += g.window.len() as u64;
            if g.eof {
                break;
            }
            if written > MAX_GZIP_SPILL {
                cap.st.deferred = Some(CaptureError::Corrupt {
                    path: path.to_owned(),
                    offset: written,
                    packets: 0,
                    detail: format!(
                        "decompresses to more than {} GiB, which --workers spills to a temporary file: replay it with one worker (which streams any size), or decompress it first",
                        MAX_GZIP_SPILL >> 30
                    ),
                });
                break;
            }
            let consumed = g.window.len();
            if let Err(e) = g.refill(consumed, 2 * GZIP_LOOKAHEAD) {
                tmp.write_all(&g.window).map_err(open_err)?;
                written += g.window.len() as u64;
                cap.st.deferred = Some(gzip_failure(path, &e, written));
                break;
            }
        }
        // SAFETY: as in `open`; the file is ours alone (unlinked, never written again).
        let map = unsafe { memmap2::Mmap::map(&tmp) }.map_err(open_err)?;
        cap.buf = Buffer::Mapped(map);
        Ok(cap)
    }

    pub fn path(&self) -> &Path {
        &self.st.path
    }

    pub fn is_gzip(&self) -> bool {
        self.st.gzip
    }

    /// Packets read so far.
    pub fn packets(&self) -> u64 {
        self.st.packets
    }

    /// The file's bytes and the reading cursor, borrowed apart: packets returned by
    /// [`FileCursor::next_in`] borrow the bytes, which other threads may read meanwhile. `None`
    /// for a gzip file, whose bytes exist only a window at a time.
    pub fn split(&mut self) -> Option<(&[u8], &mut FileCursor)> {
        match self.buf {
            Buffer::Gzip(_) => None,
            _ => {
                self.st.prefetch = true;
                Some((self.buf.bytes(), &mut self.st))
            }
        }
    }

    /// Release the file's memory early (e.g. a large decompressed buffer) once it is read.
    pub fn close(&mut self) {
        self.buf = Buffer::Empty;
        self.st.done = true;
    }
}

/// An anonymous temporary file (O_TMPFILE: it never has a name another process could use),
/// or, where the file system cannot make one, a new file unlinked at once.
fn spill_file() -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    let anonymous = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(&dir);
    if anonymous.is_ok() {
        return anonymous;
    }
    let mut random = [0u8; 8];
    // SAFETY: getrandom fills the 8-byte buffer it is given.
    unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) };
    let path = dir.join(format!(
        ".otwatch-gunzip-{:016x}",
        u64::from_ne_bytes(random)
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)?;
    let _ = std::fs::remove_file(&path);
    Ok(f)
}

impl FileCursor {
    fn fail(&mut self, truncated: bool, detail: String) -> CaptureError {
        // A record cut short by a broken gzip stream: the stream's own error says more.
        if truncated && self.deferred.is_some() {
            let deferred: Option<Result<Packet<'static>, CaptureError>> = self.finish();
            if let Some(Err(e)) = deferred {
                return e;
            }
        }
        self.done = true;
        let offset = self.base + self.offset as u64;
        CaptureError::damaged(truncated, self.path.clone(), offset, self.packets, detail)
    }

    fn finish<'a>(&mut self) -> Option<Result<Packet<'a>, CaptureError>> {
        self.done = true;
        self.deferred.take().map(|mut e| {
            if let CaptureError::Truncated { packets, .. } | CaptureError::Corrupt { packets, .. } =
                &mut e
            {
                *packets = self.packets;
            }
            Err(e)
        })
    }
}

fn detect_format(data: &[u8]) -> Result<Format, String> {
    let Some(magic) = data.get(..4) else {
        return Err(format!("only {} bytes long", data.len()));
    };
    let magic = [magic[0], magic[1], magic[2], magic[3]];
    let pcap = |big_endian: bool, nanos: bool| -> Result<Format, String> {
        let hdr = data.get(..24).ok_or("pcap header cut short")?;
        let lt = [hdr[20], hdr[21], hdr[22], hdr[23]];
        let linktype = if big_endian {
            u32::from_be_bytes(lt)
        } else {
            u32::from_le_bytes(lt)
        };
        // The upper bits carry the FCS length flag (pcap 2.4 extension); the link type is the low 16.
        Ok(Format::Pcap {
            big_endian,
            nanos,
            linktype: LinkType(linktype & 0xffff),
        })
    };
    match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => pcap(false, false),
        [0xa1, 0xb2, 0xc3, 0xd4] => pcap(true, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => pcap(false, true),
        [0xa1, 0xb2, 0x3c, 0x4d] => pcap(true, true),
        [0x0a, 0x0d, 0x0d, 0x0a] => Ok(Format::PcapNg {
            big_endian: false,
            interfaces: Vec::new(),
        }),
        _ => Err(format!(
            "starts with {:02x} {:02x} {:02x} {:02x}",
            magic[0], magic[1], magic[2], magic[3]
        )),
    }
}

/// The total length of the pcapng block at the start of `rest`, as the block says (in the
/// section's byte order; a section header's own from its byte-order magic), if plausible.
fn block_len(rest: &[u8], big_endian: bool) -> Option<usize> {
    block_len_field(rest, big_endian)
        .filter(|&len| len >= 12)
        .map(|len| len as usize)
}

/// The length field of the pcapng block at the start of `rest`, whatever it says; `None` when
/// the file ends before it.
fn block_len_field(rest: &[u8], big_endian: bool) -> Option<u32> {
    let word = |at: usize, be: bool| {
        rest.get(at..at + 4).map(|b| {
            let b = [b[0], b[1], b[2], b[3]];
            if be {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        })
    };
    let be = match rest.get(..4) {
        // A section header's own byte order, from its magic (cut before it: unknown).
        Some([0x0a, 0x0d, 0x0d, 0x0a]) => rest.get(8..12)? == [0x1a, 0x2b, 0x3c, 0x4d],
        _ => big_endian,
    };
    word(4, be)
}

/// Timestamp units per second from a pcapng `if_tsresol` (default 6: microseconds): 10^n, or
/// 2^n when the top bit is set. (pcap-parser 0.17 rejects every binary resolution, so this is
/// computed here.)
fn ts_units_per_sec(tsresol: u8) -> Option<u64> {
    let n = u32::from(tsresol & 0x7f);
    if tsresol & 0x80 == 0 {
        10u64.checked_pow(n)
    } else {
        1u64.checked_shl(n).filter(|_| n < 64)
    }
}

/// How far ahead of the next record the reader asks for the file's bytes.
const PREFETCH_AHEAD: usize = 512;

/// Asks the CPU for the cache line of `data` at `at` ahead of its use (nothing past the end).
#[inline(always)]
fn prefetch(data: &[u8], at: usize) {
    if let Some(b) = data.get(at) {
        crate::prefetch::prefetch_lines(b, 1);
    }
}

/// A record that goes past the end of the file by `n` bytes.
fn needs_more(n: usize) -> String {
    format!("record needs {n} more bytes than the file has")
}

fn describe(e: &nom::Err<PcapError<&[u8]>>) -> (bool, String) {
    match e {
        nom::Err::Incomplete(nom::Needed::Size(n)) => (true, needs_more(n.get())),
        nom::Err::Incomplete(_) => (true, "record cut short".into()),
        nom::Err::Error(e) | nom::Err::Failure(e) => match e {
            PcapError::Incomplete(n) => (true, format!("record needs {n} more bytes")),
            PcapError::UnexpectedEof | PcapError::Eof => (true, "record cut short".into()),
            PcapError::NomError(..) | PcapError::OwnedNomError(..) => (
                false,
                "invalid record (its length or type field is wrong)".into(),
            ),
            PcapError::HeaderNotRecognized => (
                false,
                "a section header the reader does not recognise".into(),
            ),
            PcapError::BufferTooSmall => (false, "a record larger than the reader allows".into()),
            PcapError::ReadError => (false, "the file could not be read".into()),
        },
    }
}

impl PacketSource for CaptureFile {
    fn next_packet(&mut self) -> Option<Result<Packet<'_>, CaptureError>> {
        if let Buffer::Gzip(g) = &mut self.buf {
            let st = &mut self.st;
            let offset = st.offset.min(g.window.len());
            let ahead = g.window.len() - offset;
            // A pcapng block larger than the window holds is made whole (up to a bound).
            let block = match st.format {
                Format::PcapNg { big_endian, .. } => g
                    .window
                    .get(offset + 4..offset + 8)
                    .map(|b| {
                        let b = [b[0], b[1], b[2], b[3]];
                        let n = if big_endian {
                            u32::from_be_bytes(b)
                        } else {
                            u32::from_le_bytes(b)
                        };
                        (n as usize).min(MAX_PCAPNG_BLOCK)
                    })
                    .unwrap_or(0),
                Format::Pcap { .. } => 0,
            };
            if !g.eof && (ahead < GZIP_LOOKAHEAD || ahead < block) {
                let refilled = g.refill(offset, (2 * GZIP_LOOKAHEAD).max(block));
                st.base += offset as u64;
                st.offset -= offset;
                if let Err(e) = refilled {
                    st.deferred = Some(gzip_failure(&st.path, &e, st.base + g.window.len() as u64));
                }
            }
        }
        let data = self.buf.bytes();
        self.st.next_in(data)
    }

    fn progress(&self) -> (u64, Option<u64>) {
        match &self.buf {
            // Compressed bytes read, against the compressed file's size.
            Buffer::Gzip(g) => (g.compressed_pos(), Some(self.st.file_len)),
            _ => (self.st.offset as u64, Some(self.st.file_len)),
        }
    }
}

impl FileCursor {
    /// On to the record at `offset` of `data`, asking for the bytes ahead of it when the
    /// cursor prefetches.
    #[inline]
    fn move_to(&mut self, data: &[u8], offset: usize) {
        self.offset = offset;
        if self.prefetch {
            prefetch(data, offset + PREFETCH_AHEAD);
        }
    }

    /// A packet read at capture time `ts`: counted, and the time the next one is judged by.
    #[inline]
    fn packet<'a>(
        &mut self,
        ts: i64,
        linktype: LinkType,
        orig_len: u32,
        data: &'a [u8],
    ) -> Packet<'a> {
        self.packets += 1;
        self.last_ts = ts;
        Packet {
            ts_nanos: ts,
            frame: self.packets,
            linktype,
            orig_len,
            data,
            csum_not_ready: false,
        }
    }

    /// Packets read so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// The next packet of `data`, which must be the bytes [`CaptureFile::split`] returned.
    pub fn next_in<'a>(&mut self, data: &'a [u8]) -> Option<Result<Packet<'a>, CaptureError>> {
        if self.done {
            return None;
        }
        loop {
            let Some(rest) = data.get(self.offset..).filter(|r| !r.is_empty()) else {
                return self.finish();
            };
            match &mut self.format {
                Format::Pcap {
                    big_endian,
                    nanos,
                    linktype,
                } => {
                    let (nanos, linktype, big_endian) = (*nanos, *linktype, *big_endian);
                    let word = |b: &[u8], i: usize| {
                        let b = [b[i], b[i + 1], b[i + 2], b[i + 3]];
                        if big_endian {
                            u32::from_be_bytes(b)
                        } else {
                            u32::from_le_bytes(b)
                        }
                    };
                    // Judge the record header's length before its data, before the rest of the
                    // header even: a corrupt length in the middle of a file is corruption, not
                    // truncation.
                    let caplen = rest.get(8..12).map(|b| word(b, 0));
                    if let Some(caplen) = caplen.filter(|&c| c > MAX_CAPLEN) {
                        let detail = format!("implausible captured length {caplen}");
                        return Some(Err(self.fail(false, detail)));
                    }
                    // The record read here, not by `pcap_parser::parse_pcap_frame`: its result
                    // came back through memory, written field by field and then read a slice
                    // at a time, a load that waited for the stores to reach the cache (half of
                    // this function's time when a reader only reads and hands packets on).
                    let (Some(h), Some(caplen)) = (rest.get(..16), caplen) else {
                        let detail = needs_more(16 - rest.len());
                        return Some(Err(self.fail(true, detail)));
                    };
                    let word = |i: usize| word(h, i);
                    let end = 16 + caplen as usize;
                    let Some(packet) = rest.get(16..end) else {
                        let detail = needs_more(end - rest.len());
                        return Some(Err(self.fail(true, detail)));
                    };
                    let frac = if nanos {
                        i64::from(word(4))
                    } else {
                        i64::from(word(4)) * 1000
                    };
                    let ts = i64::from(word(0)) * 1_000_000_000 + frac;
                    self.move_to(data, self.offset + end);
                    return Some(Ok(self.packet(ts, linktype, word(12), packet)));
                }
                Format::PcapNg {
                    big_endian,
                    interfaces,
                } => {
                    // Judge the block's length before its data, as a pcap record's: shorter
                    // than a block's own type and two lengths, it is corrupt. (pcap-parser
                    // 0.17 subtracts 12 from it unchecked: a panic with overflow checks, and
                    // a wrapped length told as a file cut short without them.)
                    if let Some(len) = block_len_field(rest, *big_endian).filter(|&l| l < 12) {
                        let detail = format!("implausible block length {len}");
                        return Some(Err(self.fail(false, detail)));
                    }
                    let parsed = if *big_endian {
                        pcap_parser::pcapng::parse_block_be(rest)
                    } else {
                        pcap_parser::pcapng::parse_block_le(rest)
                    };
                    let (after, block) = match parsed {
                        Ok(ok) => ok,
                        Err(e) => {
                            let (mut truncated, mut detail) = describe(&e);
                            // The parser says "incomplete" of a field that runs past the end
                            // of its block too: when the whole block is in the file, the block
                            // is corrupt, not the file cut short.
                            match block_len(rest, *big_endian) {
                                Some(len) if truncated && len <= rest.len() => {
                                    truncated = false;
                                    detail = "a field runs past the end of its block".into();
                                }
                                Some(len) if truncated => {
                                    detail = format!(
                                        "a block of {len} bytes, {} of them in the file",
                                        rest.len()
                                    );
                                }
                                _ => {}
                            }
                            return Some(Err(self.fail(truncated, detail)));
                        }
                    };
                    let next_offset = data.len() - after.len();
                    let packet = match block {
                        Block::SectionHeader(shb) => {
                            *big_endian = shb.big_endian();
                            interfaces.clear();
                            None
                        }
                        Block::InterfaceDescription(idb) => {
                            let Some(units_per_sec) = ts_units_per_sec(idb.if_tsresol) else {
                                let detail = format!("invalid if_tsresol {:#04x}", idb.if_tsresol);
                                return Some(Err(self.fail(false, detail)));
                            };
                            interfaces.push(Interface {
                                linktype: LinkType(u32::from(idb.linktype.0 as u16)),
                                units_per_sec,
                                offset_secs: ts_offset(&idb, *big_endian),
                                snaplen: idb.snaplen,
                            });
                            None
                        }
                        Block::EnhancedPacket(epb) => {
                            let ticks = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                            let n = (epb.caplen as usize).min(epb.data.len());
                            let packet = (epb.if_id, ticks, epb.origlen, &epb.data[..n]);
                            match timed(interfaces, packet) {
                                Ok(p) => Some(p),
                                Err(detail) => return Some(Err(self.fail(false, detail))),
                            }
                        }
                        // (pcap-parser keeps an unknown block's type as read little-endian.)
                        Block::Unknown(b)
                            if b.block_type == 2
                                || *big_endian && b.block_type.swap_bytes() == 2 =>
                        {
                            let Some((if_id, ticks, origlen, data)) =
                                obsolete_packet(b.data, *big_endian)
                            else {
                                let detail = "a packet block whose lengths overrun it".to_string();
                                return Some(Err(self.fail(false, detail)));
                            };
                            match timed(interfaces, (u32::from(if_id), ticks, origlen, data)) {
                                Ok(p) => Some(p),
                                Err(detail) => return Some(Err(self.fail(false, detail))),
                            }
                        }
                        Block::SimplePacket(spb) => {
                            let Some(iface) = interfaces.first().copied() else {
                                let detail = "simple packet block before any interface block";
                                return Some(Err(self.fail(false, detail.into())));
                            };
                            // SPBs carry no timestamp: keep time monotonic with the last packet.
                            // The data is padded to 32 bits and cut at the interface's snaplen.
                            let snap = match iface.snaplen {
                                0 => usize::MAX,
                                n => n as usize,
                            };
                            let n = (spb.origlen as usize).min(snap).min(spb.data.len());
                            Some((self.last_ts, iface.linktype, spb.origlen, &spb.data[..n]))
                        }
                        _ => None,
                    };
                    self.move_to(data, next_offset);
                    if let Some((ts, linktype, orig_len, data)) = packet {
                        return Some(Ok(self.packet(ts, linktype, orig_len, data)));
                    }
                }
            }
        }
    }
}

/// A packet of an interface's (its id, timestamp ticks, original length, data) with its time
/// in nanoseconds and its link type; `Err` names an interface no block describes.
fn timed<'a>(
    interfaces: &[Interface],
    (if_id, ticks, origlen, data): (u32, u64, u32, &'a [u8]),
) -> Result<(i64, LinkType, u32, &'a [u8]), String> {
    let Some(iface) = interfaces.get(if_id as usize) else {
        return Err(format!(
            "packet on interface {if_id} which no interface block describes"
        ));
    };
    let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(iface.units_per_sec.max(1));
    let ts = i64::try_from(nanos)
        .unwrap_or(i64::MAX)
        .saturating_add(iface.offset_secs.saturating_mul(1_000_000_000));
    Ok((ts, iface.linktype, origlen, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `pcap_parser::parse_pcap_frame` (and `_be`) make of one record, as the reader
    /// took it from them before it read records by hand: the reference for the hand reader.
    fn reference_record(
        rest: &[u8],
        be: bool,
        nanos: bool,
    ) -> Result<(i64, u32, &[u8]), (bool, String)> {
        if let Some(b) = rest.get(8..12) {
            let raw = [b[0], b[1], b[2], b[3]];
            let caplen = if be {
                u32::from_be_bytes(raw)
            } else {
                u32::from_le_bytes(raw)
            };
            if caplen > MAX_CAPLEN {
                return Err((false, format!("implausible captured length {caplen}")));
            }
        }
        let parse = [
            pcap_parser::pcap::parse_pcap_frame,
            pcap_parser::pcap::parse_pcap_frame_be,
        ][usize::from(be)];
        match parse(rest) {
            Ok((_, b)) => {
                let frac = if nanos {
                    i64::from(b.ts_usec)
                } else {
                    i64::from(b.ts_usec) * 1000
                };
                Ok((
                    i64::from(b.ts_sec) * 1_000_000_000 + frac,
                    b.origlen,
                    b.data,
                ))
            }
            Err(e) => Err(describe(&e)),
        }
    }

    /// The hand reader of pcap records gives what pcap-parser's gives, record by record, on
    /// every cut of a capture and with every record's length made absurd or too long: the
    /// packets (time, lengths, bytes), and where it stops, how (truncated or corrupt) and why.
    #[test]
    fn pcap_records_read_by_hand_as_pcap_parser_reads_them() {
        for (be, nanos) in [(false, false), (true, true)] {
            let w = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
            let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
            let mut file = Vec::new();
            file.extend(w(magic));
            file.extend(if be {
                2u16.to_be_bytes()
            } else {
                2u16.to_le_bytes()
            });
            file.extend(if be {
                4u16.to_be_bytes()
            } else {
                4u16.to_le_bytes()
            });
            file.extend([0; 8]);
            file.extend(w(65535));
            file.extend(w(1));
            let mut starts = Vec::new();
            for (i, len) in [60u32, 0, 17, 1514].into_iter().enumerate() {
                starts.push(file.len());
                file.extend(w(1_700_000_000 + i as u32));
                file.extend(w(123_456 + i as u32));
                file.extend(w(len));
                file.extend(w(len + 4));
                file.extend((0..len).map(|b| (b as u8).wrapping_mul(7).wrapping_add(i as u8)));
            }
            let mut variants: Vec<Vec<u8>> =
                (25..=file.len()).map(|n| file[..n].to_vec()).collect();
            for &at in &starts {
                for caplen in [MAX_CAPLEN + 1, u32::MAX, 2000, MAX_CAPLEN] {
                    let mut v = file.clone();
                    v[at + 8..at + 12].copy_from_slice(&w(caplen));
                    variants.push(v);
                }
            }
            for bytes in variants {
                let mut c = CaptureFile::from_bytes(Path::new("t.pcap"), bytes.clone())
                    .expect("a pcap header");
                let mut offset = 24;
                loop {
                    let got = c.next_packet().map(|r| {
                        r.map(|p| (p.ts_nanos, p.orig_len, p.data.to_vec()))
                            .map_err(|e| {
                                let truncated = matches!(e, CaptureError::Truncated { .. });
                                (truncated, e.to_string())
                            })
                    });
                    let Some(rest) = bytes.get(offset..).filter(|r| !r.is_empty()) else {
                        assert!(got.is_none(), "the end at {offset} of {}", bytes.len());
                        break;
                    };
                    match (reference_record(rest, be, nanos), got) {
                        (Ok((ts, orig, data)), Some(Ok(p))) => {
                            assert_eq!(p, (ts, orig, data.to_vec()), "record at {offset}");
                            offset += 16 + data.len();
                        }
                        (Err((truncated, why)), Some(Err((t, msg)))) => {
                            assert_eq!(t, truncated, "at {offset}: {msg}");
                            assert!(msg.contains(&why), "at {offset}: {msg} / {why}");
                            assert!(msg.contains(&format!("offset {offset}")), "{msg}");
                            break;
                        }
                        (want, got) => panic!("at {offset}: {want:?} / {got:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn pcapng_timestamp_resolutions() {
        assert_eq!(ts_units_per_sec(6), Some(1_000_000));
        assert_eq!(ts_units_per_sec(9), Some(1_000_000_000));
        assert_eq!(ts_units_per_sec(0), Some(1));
        // Binary: 2^20 units per second (pcap-parser 0.17 rejects these).
        assert_eq!(ts_units_per_sec(0x80 | 20), Some(1 << 20));
        assert_eq!(ts_units_per_sec(0x80 | 63), Some(1 << 63));
        assert_eq!(ts_units_per_sec(20), None);
        assert_eq!(ts_units_per_sec(0x80 | 64), None);
    }

    /// A pcapng block in the section's byte order: type, length, body (padded), length.
    fn block(be: bool, kind: u32, body: &[u8]) -> Vec<u8> {
        let w = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut body = body.to_vec();
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
        let len = 12 + body.len() as u32;
        let mut b = Vec::new();
        b.extend(w(kind));
        b.extend(w(len));
        b.extend(body);
        b.extend(w(len));
        b
    }

    /// A pcapng file: a section header, one Ethernet interface (snaplen, `if_tsoffset` seconds),
    /// then `packets` (each a block type and its body after the interface's).
    fn pcapng(be: bool, snaplen: u32, offset: i64, packets: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let w16 = |v: u16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let w32 = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut shb = w32(0x1a2b_3c4d).to_vec();
        shb.extend(w16(1));
        shb.extend(w16(0));
        shb.extend([0xff; 8]);
        let mut idb = w16(1).to_vec();
        idb.extend(w16(0));
        idb.extend(w32(snaplen));
        if offset != 0 {
            idb.extend(w16(14));
            idb.extend(w16(8));
            idb.extend(if be {
                offset.to_be_bytes()
            } else {
                offset.to_le_bytes()
            });
            idb.extend([0; 4]);
        }
        let mut out = block(be, 0x0a0d_0d0a, &shb);
        out.extend(block(be, 1, &idb));
        for (kind, body) in packets {
            out.extend(block(be, *kind, body));
        }
        out
    }

    /// A packet block's body: interface (and, for the obsolete block, drops), the timestamp
    /// in microseconds, the lengths, the data.
    fn packet_body(be: bool, obsolete: bool, ts_us: u64, data: &[u8]) -> Vec<u8> {
        let w16 = |v: u16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let w32 = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut b = if obsolete {
            let mut b = w16(0).to_vec();
            b.extend(w16(0));
            b
        } else {
            w32(0).to_vec()
        };
        b.extend(w32((ts_us >> 32) as u32));
        b.extend(w32(ts_us as u32));
        b.extend(w32(data.len() as u32));
        b.extend(w32(data.len() as u32));
        b.extend(data);
        b
    }

    fn read_all(bytes: Vec<u8>) -> Vec<(i64, u64, Vec<u8>)> {
        let mut cap = CaptureFile::from_bytes(Path::new("t.pcapng"), bytes).expect("a capture");
        let mut out = Vec::new();
        while let Some(p) = cap.next_packet() {
            let p = p.expect("a packet");
            out.push((p.ts_nanos, p.frame, p.data.to_vec()));
        }
        out
    }

    /// As tshark reads them: an obsolete Packet Block (type 2) is a packet, numbered as one;
    /// `if_tsoffset` is in the section's byte order; a Simple Packet Block's data stops at the
    /// interface's snaplen, its padding never read as packet bytes.
    #[test]
    fn pcapng_obsolete_blocks_offsets_and_simple_packets() {
        let data: Vec<u8> = (0..66).collect();
        for be in [false, true] {
            let packets = [
                (6, packet_body(be, false, 1_000_000, &data)),
                (2, packet_body(be, true, 2_000_000, &data)),
                (6, packet_body(be, false, 3_000_000, &data)),
            ];
            let got = read_all(pcapng(be, 0, 1000, &packets));
            let times: Vec<(i64, u64)> = got.iter().map(|p| (p.0, p.1)).collect();
            assert_eq!(
                times,
                [(1001, 1), (1002, 2), (1003, 3)].map(|(s, f)| (s * 1_000_000_000, f)),
                "big-endian {be}"
            );
            assert!(got.iter().all(|p| p.2 == data));
            // A Simple Packet Block: 66 bytes under a snaplen of 65 (padded to 68 on disk).
            let mut spb = if be {
                66u32.to_be_bytes()
            } else {
                66u32.to_le_bytes()
            }
            .to_vec();
            spb.extend(&data[..65]);
            let got = read_all(pcapng(be, 65, 0, &[(3, spb)]));
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].2, data[..65]);
        }
    }

    fn read_to_error(bytes: Vec<u8>) -> CaptureError {
        let mut cap = CaptureFile::from_bytes(Path::new("t.pcapng"), bytes).expect("a capture");
        loop {
            match cap.next_packet() {
                Some(Ok(_)) => {}
                Some(Err(e)) => return e,
                None => panic!("no error"),
            }
        }
    }

    /// A packet block whose captured length runs past its own end, in a file that holds the
    /// whole block, is corrupt; a block the file cuts short is truncated, and says how much of
    /// it there is.
    #[test]
    fn a_pcapng_block_shorter_than_its_header_is_corrupt() {
        // The `capture` fuzz target's input: a Process Information Block (0x80000001) whose
        // length is 10, after a section header. pcap-parser took 12 from the length unchecked.
        let crash: &[u8] = &[
            0x0a, 0x0d, 0x0d, 0x0a, 0x25, 0x00, 0x00, 0x00, 0x4d, 0x3c, 0x2b, 0x1a, 0x3c, 0x2b,
            0x1a, 0x0d, 0x0a, 0x0a, 0xff, 0xff, 0x0d, 0x0d, 0xfd, 0xff, 0xff, 0xfe, 0xf2, 0xf5,
            0xf5, 0x00, 0x0a, 0x0d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x0d, 0x0d, 0x0a, 0x00,
            0x00, 0x00, 0x4b, 0x1a, 0x2b, 0x3c, 0x4d, 0x0a, 0x0a, 0x0d, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x03, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00, 0xb5, 0x1a, 0x2b, 0x3c, 0x4d, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xfb, 0x00,
            0x80, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0a, 0xa1, 0xce, 0x3f, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x05, 0x03, 0x00, 0x00, 0x4e, 0xff, 0x00, 0x00, 0x00, 0x00,
            0x03,
        ];
        let e = read_to_error(crash.to_vec()).to_string();
        assert!(
            e.contains("corrupt at byte offset 112") && e.contains("implausible block length 10"),
            "{e}"
        );
        // Every length below 12, in either byte order, after a good section header.
        for be in [false, true] {
            for len in 0u32..12 {
                let mut file = pcapng(be, 0, 0, &[]);
                let at = file.len();
                let word = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
                file.extend_from_slice(&word(0x8000_0001));
                file.extend_from_slice(&word(len));
                file.extend_from_slice(&[0; 16]);
                let e = read_to_error(file).to_string();
                assert!(
                    e.contains(&format!("corrupt at byte offset {at}"))
                        && e.contains(&format!("implausible block length {len}")),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn pcapng_corrupt_and_cut_short_blocks_are_told_apart() {
        let data: Vec<u8> = (0..60).collect();
        for be in [false, true] {
            let mut bad = packet_body(be, false, 0, &data);
            let caplen = if be {
                200u32.to_be_bytes()
            } else {
                200u32.to_le_bytes()
            };
            bad[12..16].copy_from_slice(&caplen);
            let good = (6, packet_body(be, false, 0, &data));
            let file = pcapng(be, 0, 0, &[good.clone(), (6, bad), good.clone()]);
            let e = read_to_error(file).to_string();
            assert!(
                e.contains("corrupt at") && e.contains("a field runs past the end of its block"),
                "{e}"
            );
            let mut file = pcapng(be, 0, 0, &[good.clone(), good]);
            let whole = file.len();
            file.truncate(whole - 62);
            let e = read_to_error(file).to_string();
            assert!(
                e.contains("truncated at")
                    && e.contains("a block of 92 bytes, 30 of them in the file"),
                "{e}"
            );
        }
    }
}
