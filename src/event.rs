//! Silver tier: one validated protocol event per PDU, serialised as JSON Lines (docs/events.md).

use std::io::Write;
use std::net::IpAddr;

use serde::Serialize;

/// Formats nanoseconds since the epoch as RFC 3339 UTC with microseconds, as tshark's
/// `frame.time_epoch` rounded down to the microsecond.
pub fn format_ts(ts_nanos: i64) -> String {
    let secs = ts_nanos.div_euclid(1_000_000_000);
    let nanos = ts_nanos.rem_euclid(1_000_000_000) as u32;
    match chrono::DateTime::from_timestamp(secs, nanos) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => String::from("1970-01-01T00:00:00.000000Z"),
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    pub ts: String,
    pub source: std::sync::Arc<str>,
    pub frame: u64,
    pub proto: &'static str,
    pub transport: &'static str,
    pub src_ip: IpAddr,
    pub src_port: u16,
    pub dst_ip: IpAddr,
    pub dst_port: u16,
    /// `request` (client to server) or `response`.
    pub direction: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modbus: Option<ModbusEvent>,
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

/// Where events go. The pipeline calls `emit` in capture order.
pub trait EventSink {
    fn emit(&mut self, event: Event);
    /// False when nobody reads the events: dissectors still count, but skip building them.
    fn wants_events(&self) -> bool {
        true
    }
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

/// Writes JSON Lines. The first write error is kept and reported by [`JsonLinesSink::finish`].
pub struct JsonLinesSink<W: Write> {
    out: W,
    error: Option<std::io::Error>,
}

impl<W: Write> JsonLinesSink<W> {
    pub fn new(out: W) -> Self {
        JsonLinesSink { out, error: None }
    }

    pub fn finish(mut self) -> std::io::Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.out.flush()
    }
}

impl<W: Write> EventSink for JsonLinesSink<W> {
    fn emit(&mut self, event: Event) {
        if self.error.is_some() {
            return;
        }
        let res = serde_json::to_writer(&mut self.out, &event)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"));
        if let Err(e) = res {
            self.error = Some(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_microseconds() {
        assert_eq!(
            format_ts(1_481_786_769_123_456_789),
            "2016-12-15T07:26:09.123456Z"
        );
        assert_eq!(format_ts(0), "1970-01-01T00:00:00.000000Z");
    }
}
