//! DNP3 code points as *open* newtypes (rusticata style): a value this crate has no name for
//! still parses and survives into events, so a scanner probing reserved codes stays visible.

use core::fmt;

macro_rules! open_code {
    ($(#[$meta:meta])* $name:ident($repr:ty), $prefix:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub $repr);

        impl From<$repr> for $name {
            fn from(value: $repr) -> Self {
                Self(value)
            }
        }

        impl From<$name> for $repr {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(name) => f.write_str(name),
                    None => write!(f, concat!($prefix, "_{}"), self.0),
                }
            }
        }
    };
}

open_code!(
    /// Data link function code of a primary frame (PRM = 1, clause 9): a request
    /// from the station that initiates the link transaction.
    PrimaryFunction(u8),
    "primary_function"
);

impl PrimaryFunction {
    pub const RESET_LINK_STATES: Self = Self(0);
    /// Obsolete (DNP3 Basic 4 Document Set; reserved in IEEE 1815-2012) but still on the wire
    /// from old devices, which is why it keeps its name.
    pub const RESET_USER_PROCESS: Self = Self(1);
    pub const TEST_LINK_STATES: Self = Self(2);
    pub const CONFIRMED_USER_DATA: Self = Self(3);
    pub const UNCONFIRMED_USER_DATA: Self = Self(4);
    pub const REQUEST_LINK_STATUS: Self = Self(9);

    /// snake_case name of a defined code, `None` for any other value.
    pub const fn name(&self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "reset_link_states",
            1 => "reset_user_process",
            2 => "test_link_states",
            3 => "confirmed_user_data",
            4 => "unconfirmed_user_data",
            9 => "request_link_status",
            _ => return None,
        })
    }

    /// Carries user data (a transport segment).
    pub const fn carries_user_data(&self) -> bool {
        matches!(self.0, 3 | 4)
    }
}

open_code!(
    /// Data link function code of a secondary frame (PRM = 0, clause 9): the
    /// answer of the station that responds.
    SecondaryFunction(u8),
    "secondary_function"
);

impl SecondaryFunction {
    pub const ACK: Self = Self(0);
    pub const NACK: Self = Self(1);
    pub const LINK_STATUS: Self = Self(11);
    /// Obsolete ("link service not functioning"), reserved in IEEE 1815-2012.
    pub const NOT_FUNCTIONING: Self = Self(14);
    pub const NOT_SUPPORTED: Self = Self(15);

    /// snake_case name of a defined code, `None` for any other value.
    pub const fn name(&self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "ack",
            1 => "nack",
            11 => "link_status",
            14 => "not_functioning",
            15 => "not_supported",
            _ => return None,
        })
    }
}

/// The link function code of a frame: what the low four bits of the control octet mean
/// depends on its PRM bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkFunction {
    Primary(PrimaryFunction),
    Secondary(SecondaryFunction),
}

impl LinkFunction {
    /// The four-bit code as sent.
    pub const fn code(&self) -> u8 {
        match self {
            Self::Primary(f) => f.0,
            Self::Secondary(f) => f.0,
        }
    }

    pub const fn is_primary(&self) -> bool {
        matches!(self, Self::Primary(_))
    }

    pub const fn name(&self) -> Option<&'static str> {
        match self {
            Self::Primary(f) => f.name(),
            Self::Secondary(f) => f.name(),
        }
    }
}

impl fmt::Display for LinkFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Primary(code) => code.fmt(f),
            Self::Secondary(code) => code.fmt(f),
        }
    }
}

open_code!(
    /// Application layer function code (§4.2.2).
    AppFunction(u8),
    "function_code"
);

impl AppFunction {
    pub const CONFIRM: Self = Self(0);
    pub const READ: Self = Self(1);
    pub const WRITE: Self = Self(2);
    pub const SELECT: Self = Self(3);
    pub const OPERATE: Self = Self(4);
    pub const DIRECT_OPERATE: Self = Self(5);
    pub const DIRECT_OPERATE_NR: Self = Self(6);
    pub const IMMED_FREEZE: Self = Self(7);
    pub const IMMED_FREEZE_NR: Self = Self(8);
    pub const FREEZE_CLEAR: Self = Self(9);
    pub const FREEZE_CLEAR_NR: Self = Self(10);
    pub const FREEZE_AT_TIME: Self = Self(11);
    pub const FREEZE_AT_TIME_NR: Self = Self(12);
    pub const COLD_RESTART: Self = Self(13);
    pub const WARM_RESTART: Self = Self(14);
    pub const INITIALIZE_DATA: Self = Self(15);
    pub const INITIALIZE_APPL: Self = Self(16);
    pub const START_APPL: Self = Self(17);
    pub const STOP_APPL: Self = Self(18);
    pub const SAVE_CONFIG: Self = Self(19);
    pub const ENABLE_UNSOLICITED: Self = Self(20);
    pub const DISABLE_UNSOLICITED: Self = Self(21);
    pub const ASSIGN_CLASS: Self = Self(22);
    pub const DELAY_MEASURE: Self = Self(23);
    pub const RECORD_CURRENT_TIME: Self = Self(24);
    pub const OPEN_FILE: Self = Self(25);
    pub const CLOSE_FILE: Self = Self(26);
    pub const DELETE_FILE: Self = Self(27);
    pub const GET_FILE_INFO: Self = Self(28);
    pub const AUTHENTICATE_FILE: Self = Self(29);
    pub const ABORT_FILE: Self = Self(30);
    pub const ACTIVATE_CONFIG: Self = Self(31);
    pub const AUTHENTICATE_REQ: Self = Self(32);
    pub const AUTH_REQ_NO_ACK: Self = Self(33);
    pub const RESPONSE: Self = Self(129);
    pub const UNSOLICITED_RESPONSE: Self = Self(130);
    pub const AUTHENTICATE_RESP: Self = Self(131);

    /// snake_case name of a defined code, `None` for any other value.
    pub const fn name(&self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "confirm",
            1 => "read",
            2 => "write",
            3 => "select",
            4 => "operate",
            5 => "direct_operate",
            6 => "direct_operate_nr",
            7 => "immed_freeze",
            8 => "immed_freeze_nr",
            9 => "freeze_clear",
            10 => "freeze_clear_nr",
            11 => "freeze_at_time",
            12 => "freeze_at_time_nr",
            13 => "cold_restart",
            14 => "warm_restart",
            15 => "initialize_data",
            16 => "initialize_appl",
            17 => "start_appl",
            18 => "stop_appl",
            19 => "save_config",
            20 => "enable_unsolicited",
            21 => "disable_unsolicited",
            22 => "assign_class",
            23 => "delay_measure",
            24 => "record_current_time",
            25 => "open_file",
            26 => "close_file",
            27 => "delete_file",
            28 => "get_file_info",
            29 => "authenticate_file",
            30 => "abort_file",
            31 => "activate_config",
            32 => "authenticate_req",
            33 => "auth_req_no_ack",
            129 => "response",
            130 => "unsolicited_response",
            131 => "authenticate_resp",
            _ => return None,
        })
    }

    /// Sent by an outstation, with internal indications after the function code (§4.2.2:
    /// codes 129-255 are responses, of which 129-131 are defined).
    pub const fn is_response(&self) -> bool {
        self.0 >= 129
    }

    /// Select, operate, direct operate (with or without acknowledgement): moves the process.
    pub const fn is_control(&self) -> bool {
        matches!(self.0, 3..=6)
    }

    /// Restarts the outstation or its applications, or changes its configuration: what an
    /// attacker uses to take a device off line.
    pub const fn is_disruptive(&self) -> bool {
        matches!(self.0, 13 | 14 | 16..=19 | 31)
    }

    /// Whether the object headers of this function carry point data for `group`:
    /// requests that only name points (read, freezes, class assignment, unsolicited
    /// control) carry none, except the time object of freeze-at-time. Objects with an object
    /// size prefix carry data whatever the function (e.g. a read of file transport g70v5).
    /// Codes with no definition are assumed to carry data: decoding then fails loudly rather
    /// than skipping bytes silently.
    pub const fn carries_point_data(&self, group: u8) -> bool {
        match self.0 {
            1 | 7..=10 | 15 | 20..=22 => false,
            11 | 12 => group == 50,
            _ => true,
        }
    }
}

open_code!(
    /// Status code of a control (CROB, analog output) and of file operations' command status
    /// (the status field of g12 and g41-g43, Annex A). Seven bits on the wire; the eighth is
    /// reserved and cleared by the decoder.
    CommandStatus(u8),
    "command_status"
);

impl CommandStatus {
    pub const SUCCESS: Self = Self(0);
    pub const TIMEOUT: Self = Self(1);
    pub const NO_SELECT: Self = Self(2);
    pub const FORMAT_ERROR: Self = Self(3);
    pub const NOT_SUPPORTED: Self = Self(4);
    pub const ALREADY_ACTIVE: Self = Self(5);
    pub const HARDWARE_ERROR: Self = Self(6);
    pub const LOCAL: Self = Self(7);
    pub const TOO_MANY_OBJS: Self = Self(8);
    pub const NOT_AUTHORIZED: Self = Self(9);
    pub const AUTOMATION_INHIBIT: Self = Self(10);
    pub const PROCESSING_LIMITED: Self = Self(11);
    pub const OUT_OF_RANGE: Self = Self(12);
    pub const DOWNSTREAM_LOCAL: Self = Self(13);
    pub const ALREADY_COMPLETE: Self = Self(14);
    pub const BLOCKED: Self = Self(15);
    pub const CANCELLED: Self = Self(16);
    pub const BLOCKED_OTHER_MASTER: Self = Self(17);
    pub const DOWNSTREAM_FAIL: Self = Self(18);
    pub const NON_PARTICIPATING: Self = Self(126);
    pub const UNDEFINED: Self = Self(127);

    /// snake_case name of a defined code, `None` for any other value.
    pub const fn name(&self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "success",
            1 => "timeout",
            2 => "no_select",
            3 => "format_error",
            4 => "not_supported",
            5 => "already_active",
            6 => "hardware_error",
            7 => "local",
            8 => "too_many_objs",
            9 => "not_authorized",
            10 => "automation_inhibit",
            11 => "processing_limited",
            12 => "out_of_range",
            13 => "downstream_local",
            14 => "already_complete",
            15 => "blocked",
            16 => "cancelled",
            17 => "blocked_other_master",
            18 => "downstream_fail",
            126 => "non_participating",
            127 => "undefined",
            _ => return None,
        })
    }

    /// From a status octet on the wire, reserved bit 7 cleared.
    pub const fn from_wire(octet: u8) -> Self {
        Self(octet & 0x7F)
    }
}

/// Control code of a control relay output block, g12v1/g12v2 (Annex A: operation type in bits
/// 0-3, queue bit 4, clear bit 5, trip-close code in bits 6-7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ControlCode(pub u8);

impl ControlCode {
    pub const OP_NUL: u8 = 0;
    pub const OP_PULSE_ON: u8 = 1;
    pub const OP_PULSE_OFF: u8 = 2;
    pub const OP_LATCH_ON: u8 = 3;
    pub const OP_LATCH_OFF: u8 = 4;
    pub const QUEUE: u8 = 0x10;
    pub const CLEAR: u8 = 0x20;
    pub const TCC_NUL: u8 = 0;
    pub const TCC_CLOSE: u8 = 1;
    pub const TCC_TRIP: u8 = 2;

    pub const fn op_type(&self) -> u8 {
        self.0 & 0x0F
    }

    /// snake_case name of the operation type, `None` for the undefined values 5-15.
    pub const fn op_type_name(&self) -> Option<&'static str> {
        Some(match self.op_type() {
            0 => "nul",
            1 => "pulse_on",
            2 => "pulse_off",
            3 => "latch_on",
            4 => "latch_off",
            _ => return None,
        })
    }

    /// Queue flag: obsolete in IEEE 1815-2012, outstations answer NOT_SUPPORTED.
    pub const fn queue(&self) -> bool {
        self.0 & Self::QUEUE != 0
    }

    /// Clear flag: cancel operations in progress.
    pub const fn clear(&self) -> bool {
        self.0 & Self::CLEAR != 0
    }

    pub const fn trip_close(&self) -> u8 {
        self.0 >> 6
    }

    /// snake_case name of the trip-close code, `None` for the reserved value 3.
    pub const fn trip_close_name(&self) -> Option<&'static str> {
        Some(match self.trip_close() {
            0 => "nul",
            1 => "close",
            2 => "trip",
            _ => return None,
        })
    }
}

/// Quality flags of a point (Annex A): the low five bits mean the same for every
/// type, bits 5-7 depend on it (see the constants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u8);

impl Flags {
    pub const ONLINE: u8 = 0x01;
    pub const RESTART: u8 = 0x02;
    pub const COMM_LOST: u8 = 0x04;
    pub const REMOTE_FORCED: u8 = 0x08;
    pub const LOCAL_FORCED: u8 = 0x10;
    /// Binary inputs: the point changed too often and is being filtered.
    pub const CHATTER_FILTER: u8 = 0x20;
    /// Counters (obsolete): the counter rolled over.
    pub const ROLLOVER: u8 = 0x20;
    /// Analogs: the value exceeds what the variation can represent.
    pub const OVER_RANGE: u8 = 0x20;
    /// Counters: the value may have jumped.
    pub const DISCONTINUITY: u8 = 0x40;
    /// Analogs: the reference or calibration is suspect.
    pub const REFERENCE_ERR: u8 = 0x40;
    /// Binaries: the state of the point.
    pub const STATE: u8 = 0x80;

    pub const fn online(&self) -> bool {
        self.0 & Self::ONLINE != 0
    }

    pub const fn contains(&self, bits: u8) -> bool {
        self.0 & bits == bits
    }
}

/// State of a double-bit binary (g3, g4): two bits, usually a breaker's two contacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DoubleBitState {
    /// Neither contact: in transit.
    Intermediate,
    Off,
    On,
    /// Both contacts: a fault.
    Indeterminate,
}

impl DoubleBitState {
    /// From the low two bits of `bits`.
    pub const fn from_bits(bits: u8) -> Self {
        match bits & 0b11 {
            0 => Self::Intermediate,
            1 => Self::Off,
            2 => Self::On,
            _ => Self::Indeterminate,
        }
    }

    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Intermediate => "intermediate",
            Self::Off => "off",
            Self::On => "on",
            Self::Indeterminate => "indeterminate",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_app_function_of_ieee_1815_2012_has_a_name() {
        let named: Vec<u8> = (0..=u8::MAX)
            .filter(|&c| AppFunction(c).name().is_some())
            .collect();
        let expected: Vec<u8> = (0..=33).chain(129..=131).collect();
        assert_eq!(named, expected);
        assert_eq!(
            AppFunction::DIRECT_OPERATE_NR.name(),
            Some("direct_operate_nr")
        );
        assert_eq!(
            AppFunction::AUTHENTICATE_RESP.to_string(),
            "authenticate_resp"
        );
        assert_eq!(AppFunction(34).to_string(), "function_code_34");
        assert_eq!(u8::from(AppFunction::from(77)), 77);
        assert!(AppFunction::RESPONSE.is_response() && AppFunction(200).is_response());
        assert!(!AppFunction::AUTH_REQ_NO_ACK.is_response());
        let controls: Vec<u8> = (0..=u8::MAX)
            .filter(|&c| AppFunction(c).is_control())
            .collect();
        assert_eq!(controls, [3, 4, 5, 6]);
        assert!(AppFunction::COLD_RESTART.is_disruptive());
    }

    #[test]
    fn headers_only_functions() {
        for fc in [1, 7, 8, 9, 10, 15, 20, 21, 22] {
            assert!(!AppFunction(fc).carries_point_data(1), "{fc}");
        }
        assert!(AppFunction::FREEZE_AT_TIME.carries_point_data(50));
        assert!(!AppFunction::FREEZE_AT_TIME_NR.carries_point_data(20));
        for fc in [2, 3, 4, 5, 6, 129, 130, 131, 200] {
            assert!(AppFunction(fc).carries_point_data(1), "{fc}");
        }
    }

    #[test]
    fn link_function_names() {
        assert_eq!(
            PrimaryFunction::RESET_LINK_STATES.name(),
            Some("reset_link_states")
        );
        assert_eq!(
            PrimaryFunction::REQUEST_LINK_STATUS.to_string(),
            "request_link_status"
        );
        assert_eq!(PrimaryFunction(7).to_string(), "primary_function_7");
        assert_eq!(SecondaryFunction::LINK_STATUS.name(), Some("link_status"));
        assert_eq!(SecondaryFunction(5).to_string(), "secondary_function_5");
        let f = LinkFunction::Secondary(SecondaryFunction::NOT_SUPPORTED);
        assert_eq!(
            (f.code(), f.is_primary(), f.to_string()),
            (15, false, "not_supported".into())
        );
        assert!(PrimaryFunction::CONFIRMED_USER_DATA.carries_user_data());
        assert!(!PrimaryFunction::TEST_LINK_STATES.carries_user_data());
    }

    #[test]
    fn control_code_fields() {
        // LATCH_ON, as in every CROB of directoperate_and_response.pcap.
        let latch_on = ControlCode(0x03);
        assert_eq!(latch_on.op_type_name(), Some("latch_on"));
        assert_eq!(latch_on.trip_close_name(), Some("nul"));
        // Pulse on, trip, with clear: 0x81 | 0x20.
        let trip = ControlCode(0xA1);
        assert_eq!(
            (trip.op_type(), trip.trip_close()),
            (ControlCode::OP_PULSE_ON, 2)
        );
        assert!(trip.clear() && !trip.queue());
        assert_eq!(ControlCode(0xC7).op_type_name(), None);
        assert_eq!(ControlCode(0xC7).trip_close_name(), None);
    }

    #[test]
    fn command_status_and_flags() {
        assert_eq!(CommandStatus::from_wire(0x84), CommandStatus::NOT_SUPPORTED);
        assert_eq!(
            CommandStatus::NON_PARTICIPATING.to_string(),
            "non_participating"
        );
        assert_eq!(CommandStatus(50).to_string(), "command_status_50");
        assert!(Flags(0x81).online() && Flags(0x81).contains(Flags::STATE));
        assert_eq!(DoubleBitState::from_bits(0b10).as_str(), "on");
        assert_eq!(
            DoubleBitState::from_bits(0b111),
            DoubleBitState::Indeterminate
        );
    }
}
