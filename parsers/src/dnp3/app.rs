//! The application layer header (§4.2.2): application control, function code, and on responses
//! the internal indications; then the object headers, walked by [`Objects`].

use core::fmt;
use core::iter::FusedIterator;

use super::field;
use super::objects::Objects;
use super::AppFunction;

/// Application control octet (§4.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppControl(pub u8);

impl AppControl {
    pub const FIR: u8 = 0x80;
    pub const FIN: u8 = 0x40;
    pub const CON: u8 = 0x20;
    pub const UNS: u8 = 0x10;
    pub const SEQUENCE_MASK: u8 = 0x0F;

    /// First fragment of a multi-fragment message.
    pub const fn fir(&self) -> bool {
        self.0 & Self::FIR != 0
    }

    /// Last fragment of a message.
    pub const fn fin(&self) -> bool {
        self.0 & Self::FIN != 0
    }

    /// The receiver must answer with an application confirm.
    pub const fn con(&self) -> bool {
        self.0 & Self::CON != 0
    }

    /// Unsolicited response, or the confirm of one.
    pub const fn uns(&self) -> bool {
        self.0 & Self::UNS != 0
    }

    /// Sequence number, 0..=15.
    pub const fn seq(&self) -> u8 {
        self.0 & Self::SEQUENCE_MASK
    }
}

/// Internal indications (§4.2.2): two octets after the function code of every response,
/// held as `IIN1 << 8 | IIN2` (the order they are sent in, and tshark's display).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Iin(pub u16);

impl Iin {
    // IIN1.
    /// The request was sent to a broadcast address.
    pub const ALL_STATIONS: u16 = 0x0100;
    pub const CLASS_1_EVENTS: u16 = 0x0200;
    pub const CLASS_2_EVENTS: u16 = 0x0400;
    pub const CLASS_3_EVENTS: u16 = 0x0800;
    /// The outstation asks for a time synchronisation.
    pub const NEED_TIME: u16 = 0x1000;
    /// Some outputs are in local control: remote commands to them fail.
    pub const LOCAL_CONTROL: u16 = 0x2000;
    pub const DEVICE_TROUBLE: u16 = 0x4000;
    /// Set after a restart until the master clears it (a write of g80v1 index 7).
    pub const DEVICE_RESTART: u16 = 0x8000;
    // IIN2.
    /// The function code is not implemented.
    pub const NO_FUNC_CODE_SUPPORT: u16 = 0x0001;
    /// An object, variation or qualifier of the request is unknown.
    pub const OBJECT_UNKNOWN: u16 = 0x0002;
    /// A parameter of the request is out of range or invalid.
    pub const PARAMETER_ERROR: u16 = 0x0004;
    pub const EVENT_BUFFER_OVERFLOW: u16 = 0x0008;
    pub const ALREADY_EXECUTING: u16 = 0x0010;
    pub const CONFIG_CORRUPT: u16 = 0x0020;
    /// Reserved bits of IIN2: set only by a broken or hostile outstation.
    pub const RESERVED_2: u16 = 0x0040;
    pub const RESERVED_1: u16 = 0x0080;

    /// Every bit, with its snake_case name, in wire order (IIN1.0 first).
    const NAMES: [(u16, &'static str); 16] = [
        (Self::ALL_STATIONS, "all_stations"),
        (Self::CLASS_1_EVENTS, "class_1_events"),
        (Self::CLASS_2_EVENTS, "class_2_events"),
        (Self::CLASS_3_EVENTS, "class_3_events"),
        (Self::NEED_TIME, "need_time"),
        (Self::LOCAL_CONTROL, "local_control"),
        (Self::DEVICE_TROUBLE, "device_trouble"),
        (Self::DEVICE_RESTART, "device_restart"),
        (Self::NO_FUNC_CODE_SUPPORT, "no_func_code_support"),
        (Self::OBJECT_UNKNOWN, "object_unknown"),
        (Self::PARAMETER_ERROR, "parameter_error"),
        (Self::EVENT_BUFFER_OVERFLOW, "event_buffer_overflow"),
        (Self::ALREADY_EXECUTING, "already_executing"),
        (Self::CONFIG_CORRUPT, "config_corrupt"),
        (Self::RESERVED_2, "reserved_2"),
        (Self::RESERVED_1, "reserved_1"),
    ];

    /// From the two octets as sent: IIN1 then IIN2.
    pub const fn from_bytes(bytes: [u8; 2]) -> Self {
        Self(u16::from_be_bytes(bytes))
    }

    pub const fn iin1(&self) -> u8 {
        self.0.to_be_bytes()[0]
    }

    pub const fn iin2(&self) -> u8 {
        self.0.to_be_bytes()[1]
    }

    pub const fn contains(&self, bits: u16) -> bool {
        self.0 & bits == bits
    }

    /// IIN2 bits that report a rejected request (function, object, parameter, already
    /// executing): what a scanner or a malformed command provokes.
    pub const fn has_request_error(&self) -> bool {
        let rejected = Self::NO_FUNC_CODE_SUPPORT
            | Self::OBJECT_UNKNOWN
            | Self::PARAMETER_ERROR
            | Self::ALREADY_EXECUTING;
        self.0 & rejected != 0
    }

    /// The names of the set bits, in wire order.
    pub fn names(&self) -> IinNames {
        IinNames {
            iin: *self,
            next: 0,
        }
    }
}

impl fmt::Display for Iin {
    /// `device_restart|need_time`, or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names = self.names();
        match names.next() {
            None => f.write_str("none"),
            Some(first) => {
                f.write_str(first)?;
                names.try_for_each(|name| write!(f, "|{name}"))
            }
        }
    }
}

/// Names of the set bits of an [`Iin`].
#[derive(Debug, Clone)]
pub struct IinNames {
    iin: Iin,
    next: usize,
}

impl Iterator for IinNames {
    type Item = &'static str;

    fn next(&mut self) -> Option<&'static str> {
        while let Some(&(bit, name)) = Iin::NAMES.get(self.next) {
            self.next += 1;
            if self.iin.contains(bit) {
                return Some(name);
            }
        }
        None
    }
}

impl FusedIterator for IinNames {}

/// Why a fragment has no application header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppError {
    /// Fewer than the 2 octets of a request header, or the 4 of a response header.
    Truncated { len: usize, needed: usize },
}

impl AppError {
    /// snake_case reason, for counters and events.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Truncated { .. } => "truncated_app_header",
        }
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { len, needed } => write!(
                f,
                "DNP3 application fragment of {len} octets, header needs {needed}"
            ),
        }
    }
}

impl core::error::Error for AppError {}

/// One application fragment: header decoded, objects borrowed and walked on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppFragment<'a> {
    pub control: AppControl,
    pub function: AppFunction,
    /// Responses (function >= 129) only.
    pub iin: Option<Iin>,
    /// The object headers and their data, after the application header.
    pub object_bytes: &'a [u8],
}

impl<'a> AppFragment<'a> {
    /// Octets of the application header: 2 for requests, 4 for responses.
    pub fn header_len(&self) -> usize {
        if self.iin.is_some() {
            field::RESPONSE_HEADER_LEN
        } else {
            field::REQUEST_HEADER_LEN
        }
    }

    pub fn is_response(&self) -> bool {
        self.function.is_response()
    }

    /// The object headers, each validated as it is reached; stops after the first error.
    pub fn objects(&self) -> Objects<'a> {
        Objects::new(self.function, self.object_bytes, self.header_len())
    }
}

/// Reads the application header of a reassembled fragment. Function codes 129 and above are
/// responses and carry internal indications; nothing else is judged here: the objects are
/// validated as [`AppFragment::objects`] reaches them.
pub fn parse_app_fragment(fragment: &[u8]) -> Result<AppFragment<'_>, AppError> {
    let truncated = |needed| AppError::Truncated {
        len: fragment.len(),
        needed,
    };
    let (Some(&control), Some(&function)) = (
        fragment.get(field::APP_CONTROL),
        fragment.get(field::APP_FUNCTION),
    ) else {
        return Err(truncated(field::REQUEST_HEADER_LEN));
    };
    let function = AppFunction(function);
    let (iin, object_bytes) = if function.is_response() {
        let iin = fragment
            .get(field::IIN)
            .and_then(|bytes| bytes.try_into().ok())
            .map(Iin::from_bytes)
            .ok_or(truncated(field::RESPONSE_HEADER_LEN))?;
        (Some(iin), fragment.get(field::RESPONSE_HEADER_LEN..))
    } else {
        (None, fragment.get(field::REQUEST_HEADER_LEN..))
    };
    Ok(AppFragment {
        control: AppControl(control),
        function,
        iin,
        object_bytes: object_bytes.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_header() {
        // read_and_response.pcap frame 4, after the transport octet: class 0123 read.
        let fragment = [
            0xC0, 0x01, 0x3C, 0x02, 0x06, 0x3C, 0x03, 0x06, 0x3C, 0x04, 0x06, 0x3C, 0x01, 0x06,
        ];
        let app = parse_app_fragment(&fragment).unwrap();
        assert_eq!(app.function, AppFunction::READ);
        assert!(app.control.fir() && app.control.fin());
        assert!(!app.control.con() && !app.control.uns());
        assert_eq!(app.control.seq(), 0);
        assert_eq!(app.iin, None);
        assert_eq!(app.header_len(), 2);
        assert_eq!(app.object_bytes.len(), 12);
    }

    #[test]
    fn response_header_with_device_restart() {
        // dnp3.pcap frame 83: response, IIN1 = 0x80 (device restart), no objects.
        let app = parse_app_fragment(&[0xD4, 0x81, 0x80, 0x00]).unwrap();
        let iin = app.iin.unwrap();
        assert!(iin.contains(Iin::DEVICE_RESTART));
        assert_eq!((iin.iin1(), iin.iin2()), (0x80, 0x00));
        assert_eq!(iin.names().collect::<Vec<_>>(), ["device_restart"]);
        assert_eq!(iin.to_string(), "device_restart");
        assert!(!iin.has_request_error());
        assert!(app.object_bytes.is_empty());
        assert_eq!(app.objects().count(), 0);
        // dnp3.pcap frame 84: unsolicited (UNS, CON), same IIN.
        let app = parse_app_fragment(&[0xF5, 0x82, 0x80, 0x00]).unwrap();
        assert!(app.control.uns() && app.control.con());
        assert_eq!(app.function, AppFunction::UNSOLICITED_RESPONSE);
        // dnp3_udp_select_operate.pcap frame 2: 0x9000, restart and need time (tshark: "Device
        // Restart, Time Sync Required").
        let iin = Iin::from_bytes([0x90, 0x00]);
        assert_eq!(iin.to_string(), "need_time|device_restart");
    }

    #[test]
    fn iin2_names() {
        // cold_restart_and_response.pcap frame 6: IIN2.0, the cold restart is not supported.
        let app = parse_app_fragment(&[0xC0, 0x81, 0x00, 0x01]).unwrap();
        let iin = app.iin.unwrap();
        assert_eq!(iin.names().collect::<Vec<_>>(), ["no_func_code_support"]);
        assert!(iin.has_request_error());
        assert_eq!(Iin(0xFFFF).names().count(), 16);
        assert_eq!(Iin(0).to_string(), "none");
        assert!(!Iin(Iin::EVENT_BUFFER_OVERFLOW).has_request_error());
        assert_eq!(
            Iin(Iin::OBJECT_UNKNOWN | Iin::RESERVED_1).to_string(),
            "object_unknown|reserved_1"
        );
    }

    #[test]
    fn truncated_headers() {
        assert_eq!(
            parse_app_fragment(&[]),
            Err(AppError::Truncated { len: 0, needed: 2 })
        );
        assert_eq!(
            parse_app_fragment(&[0xC0]),
            Err(AppError::Truncated { len: 1, needed: 2 })
        );
        assert_eq!(
            parse_app_fragment(&[0xC0, 0x81, 0x00]),
            Err(AppError::Truncated { len: 3, needed: 4 })
        );
        // A confirm is just the header.
        let confirm = parse_app_fragment(&[0xD2, 0x00]).unwrap();
        assert_eq!(confirm.function, AppFunction::CONFIRM);
        assert_eq!(confirm.objects().count(), 0);
        assert_eq!(
            AppError::Truncated { len: 3, needed: 4 }.to_string(),
            "DNP3 application fragment of 3 octets, header needs 4"
        );
    }
}
