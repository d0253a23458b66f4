//! Silver tier: one validated protocol event per PDU, serialised as JSON Lines (docs/events.md).

use std::net::IpAddr;

use serde::Serialize;

/// A capture timestamp: nanoseconds since the Unix epoch, UTC. Serialised as RFC 3339 with
/// microseconds (`2016-12-15T07:26:09.123456Z`), like tshark's `frame.time_epoch` truncated to the
/// microsecond, without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Writes the RFC 3339 form into `buf` and returns it as text.
    pub fn format<'b>(&self, buf: &'b mut [u8; 27]) -> &'b str {
        let secs = self.0.div_euclid(1_000_000_000);
        let micros = self.0.rem_euclid(1_000_000_000) / 1000;
        let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm, proleptic Gregorian).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = (yoe + era * 400 + i64::from(month <= 2)).clamp(0, 9999);
        let mut put = |at: usize, width: usize, mut v: i64| {
            for i in (at..at + width).rev() {
                buf[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, sod / 3600);
        put(14, 2, sod / 60 % 60);
        put(17, 2, sod % 60);
        put(20, 6, micros);
        for (at, c) in [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
            (26, b'Z'),
        ] {
            buf[at] = c;
        }
        // Only ASCII digits and separators were written.
        std::str::from_utf8(buf).unwrap_or("1970-01-01T00:00:00.000000Z")
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.format(&mut [0; 27]))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.format(&mut [0; 27]))
    }
}

/// Bytes from the wire kept as they are, serialised as lowercase hex (only when an events
/// output writes them: detection reads the bytes).
/// Inline up to 8 bytes (an S7 element, a REAL, a DWORD): most values cost no allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hex(pub smallvec::SmallVec<[u8; 8]>);

impl From<&[u8]> for Hex {
    fn from(bytes: &[u8]) -> Self {
        Hex(smallvec::SmallVec::from_slice(bytes))
    }
}

/// Lowercase hex digits.
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` in lowercase hex, two digits each, into `buf` (twice as long): the digits written.
fn hex_into<'b>(bytes: &[u8], buf: &'b mut [u8]) -> &'b str {
    for (b, out) in bytes.iter().zip(buf.chunks_exact_mut(2)) {
        out[0] = HEX_DIGITS[usize::from(b >> 4)];
        out[1] = HEX_DIGITS[usize::from(b & 0xf)];
    }
    let n = (2 * bytes.len()).min(buf.len() / 2 * 2);
    // Only ASCII hex digits were written.
    std::str::from_utf8(&buf[..n]).unwrap_or_default()
}

/// How many bytes [`Hex`] writes in one piece.
const HEX_PIECE: usize = 64;

impl std::fmt::Display for Hex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = [0u8; 2 * HEX_PIECE];
        for chunk in self.0.chunks(HEX_PIECE) {
            f.write_str(hex_into(chunk, &mut buf))?;
        }
        Ok(())
    }
}

impl Serialize for Hex {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Most values are a few bytes: written as one string, not through the formatter,
        // which cost about 1 000 instructions a value.
        if self.0.len() <= HEX_PIECE {
            s.serialize_str(hex_into(&self.0, &mut [0u8; 2 * HEX_PIECE]))
        } else {
            s.collect_str(self)
        }
    }
}

/// A MAC address, serialised as `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// `aa:bb:cc:dd:ee:ff`, in `buf`, as baselines and alerts write it
    /// ([`otwatch_models::learn::mac_text_in`]: not through the formatter).
    fn text(self, buf: &mut [u8; 17]) -> &str {
        otwatch_models::learn::mac_text_in(self.0, buf)
    }
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text(&mut [0; 17]))
    }
}

/// A packet's Ethernet destination and source, as its first 12 bytes: read in place, made into
/// [`Mac`]s only where an event or an observation names them (copying them for every packet
/// cost a store-forwarding stall a packet: six-byte arrays stored in pieces, read back whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkAddrs<'a>(pub &'a [u8; 12]);

impl LinkAddrs<'_> {
    /// The Ethernet header's addresses, when the link layer is Ethernet.
    pub fn of(linktype: crate::capture::LinkType, data: &[u8]) -> Option<LinkAddrs<'_>> {
        match (linktype, data.first_chunk::<12>()) {
            (crate::capture::LinkType::ETHERNET, Some(h)) => Some(LinkAddrs(h)),
            _ => None,
        }
    }

    pub fn src(self) -> Mac {
        Mac(std::array::from_fn(|i| self.0[6 + i]))
    }

    pub fn dst(self) -> Mac {
        Mac(std::array::from_fn(|i| self.0[i]))
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.text(&mut [0; 17]))
    }
}

/// Which way a PDU travels: client to server (`request`) or back (`response`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Request,
    Response,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Response => "response",
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl PartialEq<&str> for Direction {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

impl Serialize for Direction {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

pub use crate::dissect::registry::Pdu;

/// An event's transport, written `tcp` or `udp`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum L4 {
    Tcp,
    Udp,
}

impl L4 {
    /// The transport of a flow over UDP when `udp`, else over TCP.
    pub fn of(udp: bool) -> L4 {
        if udp {
            L4::Udp
        } else {
            L4::Tcp
        }
    }

    /// Its name, as the events write it.
    pub fn name(self) -> &'static str {
        match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    pub ts: Timestamp,
    pub source: std::sync::Arc<str>,
    pub frame: u64,
    pub proto: &'static str,
    pub transport: L4,
    pub src_ip: IpAddr,
    pub src_port: u16,
    pub dst_ip: IpAddr,
    pub dst_port: u16,
    /// `request` (client to server) or `response`.
    pub direction: Direction,
    /// Ethernet addresses of the sender and receiver (Ethernet captures only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_mac: Option<Mac>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_mac: Option<Mac>,
    #[serde(flatten)]
    pub pdu: Pdu,
}

/// The order of the events a flush delivers (the end of the input, or a capture that starts
/// before the last one ended): capture time, frame, then flow. One worker and N deliver them in
/// this order, so that detection sees the same sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlushKey {
    pub ts: i64,
    pub frame: u64,
    pub src: (IpAddr, u16),
    pub dst: (IpAddr, u16),
}

impl Event {
    pub fn flush_key(&self) -> FlushKey {
        FlushKey {
            ts: self.ts.0,
            frame: self.frame,
            src: (self.src_ip, self.src_port),
            dst: (self.dst_ip, self.dst_port),
        }
    }
}

/// Values carried by a PDU: registers as numbers, coils and discrete inputs as booleans.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Values {
    Registers(Vec<u16>),
    Bits(Vec<bool>),
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FileRecord {
    pub file_number: u16,
    pub record_number: u16,
    pub record_length: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<u16>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeviceIdObject {
    pub id: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'static str>,
    pub value: String,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ModbusEvent {
    pub transaction_id: u16,
    pub unit_id: u8,
    /// Function code with the exception bit cleared.
    pub function_code: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception_code: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception: Option<&'static str>,
    /// Start address (reference number). Responses carry their request's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<Values>,
    /// Read/write multiple registers (23): the write half.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_address: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_quantity: Option<u16>,
    /// Mask write register (22).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub and_mask: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub or_mask: Option<u16>,
    /// Diagnostics (8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subfunction: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subfunction_name: Option<&'static str>,
    /// Raw data where the PDU has no finer structure (diagnostics data, server id, unknown functions), hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Read exception status (7), comm event counter/log (11, 12).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_count: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_count: Option<u16>,
    /// File record access (20, 21).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_records: Option<Vec<FileRecord>>,
    /// Encapsulated interface transport (43).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mei_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_device_id_code: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_id: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conformity_level: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub more_follows: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objects: Option<Vec<DeviceIdObject>>,
    /// On responses matched to their request: the request's frame and the response time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_frame: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_time: Option<f64>,
    /// Set when the PDU is malformed: the reason, and the byte offset in the PDU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_offset: Option<usize>,
}

/// Takes a lent observation ([`EventSink::observed`]), leaving `keep` (a recycled box) in its
/// place; without a box, an empty observation of the same channel in a new one.
pub fn take_observation(
    obs: &mut Box<otwatch_models::Observation>,
    keep: Option<Box<otwatch_models::Observation>>,
) -> Box<otwatch_models::Observation> {
    let keep = keep.unwrap_or_else(|| {
        Box::new(otwatch_models::Observation::new(
            0,
            std::sync::Arc::clone(&obs.source),
            0,
            obs.channel,
            obs.kind,
            0,
        ))
    });
    std::mem::replace(obs, keep)
}

/// Where events go. The pipeline calls `emit` in capture order.
pub trait EventSink {
    fn emit(&mut self, event: Event);
    /// False when nobody reads the events: dissectors still count, but skip building them.
    fn wants_events(&self) -> bool {
        true
    }
    /// False when the events are used for their headers only (per-channel metrics): dissectors
    /// then leave out point values and item data.
    fn wants_detail(&self) -> bool {
        self.wants_events()
    }
    /// Whether detection or per-channel metrics read observations. A dissector that builds its
    /// observations from the parser's records ([`EventSink::observed`]) then need not build the
    /// event when [`EventSink::wants_event_out`] is false; every other event handed to
    /// [`EventSink::emit`] is turned into its observation by the sink.
    fn wants_observations(&self) -> bool {
        false
    }
    /// Whether the events themselves are read (an events output), not only their observations.
    fn wants_event_out(&self) -> bool {
        self.wants_events()
    }
    /// One PDU whose observation its dissector built, without its event (asked for only when
    /// [`EventSink::wants_observations`] and not [`EventSink::wants_event_out`]); `key` is the
    /// event's [`FlushKey`] (it orders a flush). A sink that says it wants observations must
    /// take them here: this default drops them. Lent in its box, not given: a sink that only
    /// reads it costs no move of it; a sink that keeps it takes the box and leaves another in
    /// its place ([`take_observation`]: one it is done with), which the dissector builds the
    /// next observation in.
    fn observed(&mut self, _key: FlushKey, _obs: &mut Box<otwatch_models::Observation>) {
        debug_assert!(
            !self.wants_observations(),
            "a sink that wants observations must take them in `observed`"
        );
    }
    /// The clock moved to `now_nanos` without a packet (a quiet live link).
    fn tick(&mut self, _now_nanos: i64) {}
    /// Called before a packet's PDUs (after the flows idle before it are swept) with its time.
    fn before_packet(&mut self, _ts: i64) {}
    /// Called after every packet with the pipeline's counters (metrics publish from here).
    fn after_packet(&mut self, _stats: &crate::stats::Stats, _active_flows: usize, _ts: i64) {}
    /// Capture counters of a live source.
    fn live_counters(&mut self, _counters: crate::metrics::LiveCounters) {}
    /// The end of the input or of one capture of several: what the sink holds back for a
    /// batch is done now (detection's held observations, [`crate::detection::Detection::hold`]).
    fn drain(&mut self) {}
}

/// Discards events (counting still happens).
#[derive(Debug, Default)]
pub struct NullSink;

impl EventSink for NullSink {
    fn emit(&mut self, _event: Event) {}
    fn wants_events(&self) -> bool {
        false
    }
}

/// Keeps events in memory (tests, evaluation).
#[derive(Debug, Default)]
pub struct VecSink(pub Vec<Event>);

impl EventSink for VecSink {
    fn emit(&mut self, event: Event) {
        self.0.push(event);
    }
}

/// Writes JSON Lines to an [`OutputFile`](crate::output::OutputFile), which counts what it
/// could not write.
pub struct JsonLinesSink {
    pub out: crate::output::OutputFile,
    /// The sensor's name, on every line.
    sensor: Option<std::sync::Arc<str>>,
    /// `--log-format eve`: Suricata EVE lines.
    eve: bool,
}

impl JsonLinesSink {
    pub fn new(out: crate::output::OutputFile) -> Self {
        JsonLinesSink {
            out,
            sensor: None,
            eve: false,
        }
    }

    /// Every line names the sensor.
    pub fn with_sensor(mut self, sensor: std::sync::Arc<str>) -> Self {
        self.sensor = Some(sensor);
        self
    }

    /// Lines in Suricata's EVE format (`--log-format eve`).
    pub fn with_eve(mut self, eve: bool) -> Self {
        self.eve = eve;
        self
    }

    /// Everything flushed and fsynced.
    pub fn finish(mut self) {
        self.out.finish();
    }
}

impl EventSink for JsonLinesSink {
    /// A quiet moment: what was written reaches the file (a live reader sees it).
    fn tick(&mut self, _now_nanos: i64) {
        self.out.flush();
    }

    /// When stdout's reader went away (`| head`) nobody reads events any more.
    fn wants_events(&self) -> bool {
        self.out.accepting()
    }

    fn emit(&mut self, event: Event) {
        use crate::output::json;
        let sensor = self.sensor.as_deref();
        if self.eve {
            // A line that cannot be made is counted as a failed write, as any other.
            self.out.line(|b| {
                let mut native = Vec::with_capacity(512);
                json::to_writer(&mut native, &event).map_err(|e| e.to_string())?;
                event_flow_members(&mut native, &event, sensor);
                let eve = crate::output::eve::event(&native)
                    .ok_or_else(|| "an event line that is not a JSON object".to_string())?;
                json::to_writer(b, &eve).map_err(|e| e.to_string())
            });
            return;
        }
        self.out.line(|b| {
            json::to_writer(&mut *b, &event)?;
            event_flow_members(b, &event, sensor);
            Ok::<(), json::Error>(())
        });
    }
}

/// What identifies an event's flow to other tools (`community_id`, `flow_id`: TCP and UDP
/// events), and the sensor, appended to the event's JSON object.
pub(crate) fn event_flow_members(line: &mut Vec<u8>, event: &Event, sensor: Option<&str>) {
    use crate::output::flow_ids;
    let ports = otwatch_models::Ports {
        src: event.src_port,
        dst: event.dst_port,
        udp: event.transport == L4::Udp,
    };
    let ids = flow_ids::ids(event.src_ip, event.dst_ip, ports);
    let mut strings = Vec::with_capacity(2);
    if let Some((c, _)) = &ids {
        strings.push(("community_id", c.as_str()));
    }
    if let Some(s) = sensor {
        strings.push(("sensor", s));
    }
    let numbers: Vec<(&str, u64)> = ids.as_ref().map(|i| ("flow_id", i.1)).into_iter().collect();
    flow_ids::append_members(line, &strings, &numbers);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_pairs() {
        assert_eq!(Hex::from(&[][..]).to_string(), "");
        assert_eq!(
            Hex::from(&[0x00, 0x0f, 0xa5, 0xff][..]).to_string(),
            "000fa5ff"
        );
        let long: Vec<u8> = (0..=255u8).collect();
        let expected: String = long.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(Hex::from(&long[..]).to_string(), expected);
        assert_eq!(
            serde_json::to_string(&Hex::from(&[1, 0xab][..])).unwrap(),
            "\"01ab\""
        );
        // Serialised in one piece or through the formatter, at every length about the piece.
        for n in [0, 1, 7, 8, 9, 63, 64, 65, 128, 129, 255, 256] {
            let hex = Hex::from(&long[..n]);
            assert_eq!(
                serde_json::to_string(&hex).unwrap(),
                format!("\"{}\"", &expected[..2 * n]),
                "{n} bytes"
            );
        }
    }

    #[test]
    fn macs_are_lowercase_colon_pairs() {
        for m in [
            [0u8; 6],
            [0xff; 6],
            [0x00, 0x1b, 0x1b, 0x23, 0xeb, 0x3b],
            [1, 0x20, 0xa, 0xb0, 0x9f, 0xf9],
        ] {
            let want = format!(
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            );
            assert_eq!(Mac(m).to_string(), want);
            assert_eq!(otwatch_models::learn::mac_text(m), want);
            assert_eq!(
                serde_json::to_string(&Mac(m)).unwrap(),
                format!("\"{want}\"")
            );
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_microseconds() {
        let ts = |n: i64| Timestamp(n).to_string();
        assert_eq!(ts(1_481_786_769_123_456_789), "2016-12-15T07:26:09.123456Z");
        assert_eq!(ts(0), "1970-01-01T00:00:00.000000Z");
        // Leap day, end of a leap year, before the epoch.
        assert_eq!(ts(951_782_400_000_000_000), "2000-02-29T00:00:00.000000Z");
        assert_eq!(ts(1_483_228_799_999_999_000), "2016-12-31T23:59:59.999999Z");
        assert_eq!(ts(-1_000), "1969-12-31T23:59:59.999999Z");
        // Agrees with a day-by-day calendar walk over 55 years.
        for day in (0..20_000i64).step_by(97) {
            let t = Timestamp(day * 86_400 * 1_000_000_000).to_string();
            assert_eq!(t[..10], civil_reference(day), "day {day}");
        }
    }

    /// A slow, obviously correct day-by-day walk from 1970-01-01.
    fn civil_reference(days: i64) -> String {
        let (mut y, mut m, mut d) = (1970i64, 1i64, 1i64);
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        for _ in 0..days {
            let len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
        format!("{y:04}-{m:02}-{d:02}")
    }
}
