//! S7 code points as *open* newtypes (rusticata style): a value this crate has no name for still
//! parses and survives into events, so probing with undocumented functions stays visible.
//!
//! Names follow Wireshark's `packet-s7comm.c` and the s7commwireshark plugin's
//! `packet-s7comm_plus.c`, written in snake_case.

use core::fmt;

/// Declares an open code point: the newtype, its named constants, `name()`, conversions and a
/// `Display` that falls back to `<prefix>_0x..` for values without a name.
macro_rules! code_point {
    (
        $(#[$meta:meta])*
        $name:ident($ty:ty), $prefix:literal {
            $( $(#[$cmeta:meta])* $konst:ident = $value:literal => $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub $ty);

        impl $name {
            $( $(#[$cmeta])* pub const $konst: Self = Self($value); )*

            /// snake_case name of a known value, `None` for any other.
            pub const fn name(&self) -> Option<&'static str> {
                match self.0 {
                    $( $value => Some($text), )*
                    _ => None,
                }
            }
        }

        impl From<$ty> for $name {
            fn from(value: $ty) -> Self {
                Self(value)
            }
        }

        impl From<$name> for $ty {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(name) => f.write_str(name),
                    None => write!(
                        f,
                        concat!($prefix, "_{:#0w$x}"),
                        self.0,
                        w = 2 + 2 * core::mem::size_of::<$ty>()
                    ),
                }
            }
        }
    };
}

code_point! {
    /// COTP TPDU type (X.224 §13.1): the high nibble of the type byte, low nibble cleared.
    CotpPduType(u8), "cotp_pdu_type" {
        /// CR: opens a transport connection; carries the TSAPs.
        CONNECTION_REQUEST = 0xE0 => "connection_request",
        CONNECTION_CONFIRM = 0xD0 => "connection_confirm",
        DISCONNECT_REQUEST = 0x80 => "disconnect_request",
        DISCONNECT_CONFIRM = 0xC0 => "disconnect_confirm",
        /// DT: every S7 PDU travels in these.
        DATA = 0xF0 => "data",
        EXPEDITED_DATA = 0x10 => "expedited_data",
        DATA_ACK = 0x60 => "data_ack",
        EXPEDITED_DATA_ACK = 0x20 => "expedited_data_ack",
        REJECT = 0x50 => "reject",
        /// ER: the peer received a TPDU it could not accept.
        TPDU_ERROR = 0x70 => "tpdu_error",
    }
}

code_point! {
    /// Parameter code in the variable part of a COTP TPDU (X.224 §13.3.4). Codes are per TPDU
    /// type: in an ER TPDU 0xC1 is the rejected TPDU's header, not a calling TSAP.
    CotpParamCode(u8), "cotp_param" {
        /// Maximum TPDU size as a power of two (0x07 = 128 ... 0x0D = 8192).
        TPDU_SIZE = 0xC0 => "tpdu_size",
        CALLING_TSAP = 0xC1 => "calling_tsap",
        CALLED_TSAP = 0xC2 => "called_tsap",
        CHECKSUM = 0xC3 => "checksum",
        VERSION = 0xC4 => "version",
        PROTECTION = 0xC5 => "protection",
        ADDITIONAL_OPTIONS = 0xC6 => "additional_options",
        ALTERNATIVE_CLASSES = 0xC7 => "alternative_classes",
        ACK_TIME = 0x85 => "acknowledgement_time",
        PRIORITY = 0x87 => "priority",
        PREFERRED_MAX_TPDU_SIZE = 0xF0 => "preferred_max_tpdu_size",
        /// DR: additional information.
        ADDITIONAL_INFORMATION = 0xE0 => "additional_information",
    }
}

code_point! {
    /// S7comm PDU type (header byte 1), "remote operating service control".
    Rosctr(u8), "rosctr" {
        /// A request.
        JOB = 0x01 => "job",
        /// A response without data: a refusal, with the error in the header.
        ACK = 0x02 => "ack",
        /// A response with data.
        ACK_DATA = 0x03 => "ack_data",
        /// Programming, diagnostics, SZL, clock, alarms, cyclic data: see [`super::Userdata`].
        USERDATA = 0x07 => "userdata",
    }
}

impl Rosctr {
    /// Ack and ack_data carry error class and error code in a 12-byte header.
    pub const fn has_error_fields(&self) -> bool {
        matches!(self.0, 0x02 | 0x03)
    }
}

code_point! {
    /// Error class in the header of ack and ack_data PDUs.
    ErrorClass(u8), "error_class" {
        NO_ERROR = 0x00 => "no_error",
        APPLICATION_RELATIONSHIP = 0x81 => "application_relationship",
        OBJECT_DEFINITION = 0x82 => "object_definition",
        NO_RESOURCES = 0x83 => "no_resources",
        SERVICE_PROCESSING = 0x84 => "service_processing",
        SUPPLIES = 0x85 => "supplies",
        ACCESS = 0x87 => "access",
    }
}

code_point! {
    /// A 16-bit S7 error code: the header's error class and code read together, the error code
    /// of userdata responses, block transfer error codes. A selection of Wireshark's
    /// `param_errcode_names`; anything else is kept by number.
    ParamErrorCode(u16), "error_code" {
        NO_ERROR = 0x0000 => "no_error",
        INVALID_BLOCK_NUMBER = 0x0110 => "invalid_block_number",
        INVALID_REQUEST_LENGTH = 0x0111 => "invalid_request_length",
        INVALID_PARAMETER = 0x0112 => "invalid_parameter",
        INVALID_BLOCK_TYPE = 0x0113 => "invalid_block_type",
        BLOCK_NOT_FOUND = 0x0114 => "block_not_found",
        BLOCK_ALREADY_EXISTS = 0x0115 => "block_already_exists",
        BLOCK_WRITE_PROTECTED = 0x0116 => "block_write_protected",
        INCORRECT_PASSWORD = 0x0119 => "incorrect_password",
        SERVICE_UNKNOWN = 0x8100 => "service_unknown",
        NOT_IMPLEMENTED = 0x8104 => "not_implemented",
        OBJECT_ACCESS_ADDRESS_ERROR = 0x8701 => "object_addressing_error",
        SERVICE_NOT_SUPPORTED = 0x8702 => "service_not_supported",
        OBJECT_ACCESS_REFUSED = 0x8703 => "object_access_refused",
        ILLEGAL_STATUS_LIST_ID = 0xD041 => "illegal_szl_id",
        FUNCTION_NOT_PERMITTED_IN_MODE = 0xD081 => "function_not_permitted_in_current_mode",
        FUNCTION_NOT_PERMITTED_PROTECTION = 0xD0A1 => "function_not_permitted_in_protection_level",
        BLOCK_NAME_SYNTAX = 0xD201 => "block_name_syntax_error",
        BLOCKS_NOT_FOUND = 0xD209 => "block_not_found_on_module",
        NO_FURTHER_BLOCK = 0xD20E => "no_further_block",
        PROTECTION_LEVEL = 0xD241 => "function_not_permitted_at_protection_level",
        NEW_PARAMETERS_BEING_ASSIGNED = 0xD2A9 => "new_parameters_being_assigned",
        WRONG_PASSWORD = 0xD602 => "incorrect_password_entered",
        ALREADY_LEGITIMIZED = 0xD603 => "already_legitimized",
        DATE_TIME_INVALID = 0xDC01 => "date_time_invalid",
    }
}

code_point! {
    /// Function of a job or ack_data PDU: the first byte of the parameter part.
    FunctionCode(u8), "function" {
        CPU_SERVICES = 0x00 => "cpu_services",
        READ_VAR = 0x04 => "read_var",
        WRITE_VAR = 0x05 => "write_var",
        REQUEST_DOWNLOAD = 0x1A => "request_download",
        DOWNLOAD_BLOCK = 0x1B => "download_block",
        DOWNLOAD_ENDED = 0x1C => "download_ended",
        START_UPLOAD = 0x1D => "start_upload",
        UPLOAD = 0x1E => "upload",
        END_UPLOAD = 0x1F => "end_upload",
        /// Program invocation: start, stop, compress, copy RAM to ROM, activate/delete blocks.
        PI_SERVICE = 0x28 => "pi_service",
        PLC_STOP = 0x29 => "plc_stop",
        SETUP_COMMUNICATION = 0xF0 => "setup_communication",
    }
}

impl FunctionCode {
    /// Block download and upload (0x1A-0x1F): the program travels.
    pub const fn is_block_transfer(&self) -> bool {
        matches!(self.0, 0x1A..=0x1F)
    }

    /// Changes what the PLC runs or holds: writes, downloads, program invocation, stop.
    pub const fn changes_plc(&self) -> bool {
        matches!(self.0, 0x05 | 0x1A..=0x1C | 0x28 | 0x29)
    }
}

code_point! {
    /// Memory area of an S7ANY address.
    Area(u8), "area" {
        SYSTEM_INFO_200 = 0x03 => "system_info_200",
        SYSTEM_FLAGS_200 = 0x05 => "system_flags_200",
        ANALOG_INPUTS_200 = 0x06 => "analog_inputs_200",
        ANALOG_OUTPUTS_200 = 0x07 => "analog_outputs_200",
        COUNTERS = 0x1C => "counters",
        TIMERS = 0x1D => "timers",
        IEC_COUNTERS_200 = 0x1E => "iec_counters_200",
        IEC_TIMERS_200 = 0x1F => "iec_timers_200",
        /// Direct peripheral access (P).
        PERIPHERAL = 0x80 => "peripheral",
        /// Process image of inputs (I/E).
        INPUTS = 0x81 => "inputs",
        /// Process image of outputs (Q/A).
        OUTPUTS = 0x82 => "outputs",
        /// Bit memory (M), "flags".
        FLAGS = 0x83 => "flags",
        DATA_BLOCKS = 0x84 => "data_blocks",
        INSTANCE_DATA_BLOCKS = 0x85 => "instance_data_blocks",
        LOCAL = 0x86 => "local",
        PREVIOUS_LOCAL = 0x87 => "previous_local",
    }
}

impl Area {
    /// Data blocks and instance data blocks: the DB number means something only here.
    pub const fn has_db_number(&self) -> bool {
        matches!(self.0, 0x84 | 0x85)
    }
}

code_point! {
    /// Transport size (element type) of an S7ANY address in a read/write job.
    TransportSize(u8), "transport_size" {
        BIT = 0x01 => "bit",
        BYTE = 0x02 => "byte",
        CHAR = 0x03 => "char",
        WORD = 0x04 => "word",
        INT = 0x05 => "int",
        DWORD = 0x06 => "dword",
        DINT = 0x07 => "dint",
        REAL = 0x08 => "real",
        DATE = 0x09 => "date",
        TIME_OF_DAY = 0x0A => "time_of_day",
        TIME = 0x0B => "time",
        S5TIME = 0x0C => "s5time",
        DATE_AND_TIME = 0x0F => "date_and_time",
        COUNTER = 0x1C => "counter",
        TIMER = 0x1D => "timer",
        IEC_COUNTER = 0x1E => "iec_counter",
        IEC_TIMER = 0x1F => "iec_timer",
        HS_COUNTER = 0x20 => "hs_counter",
    }
}

impl TransportSize {
    /// Bytes one element occupies, `None` for sizes without a known width. A bit travels in a
    /// whole byte.
    pub const fn element_len(&self) -> Option<usize> {
        Some(match self.0 {
            0x01..=0x03 => 1,
            0x04 | 0x05 | 0x09 | 0x0C | 0x1C | 0x1D => 2,
            0x06..=0x08 | 0x0A | 0x0B => 4,
            0x0F => 8,
            _ => return None,
        })
    }
}

code_point! {
    /// Transport size of a data item (read response, write request, userdata data): says how to
    /// read the item's length field, see [`Self::length_in_bits`].
    DataTransportSize(u8), "data_transport_size" {
        /// Used with error return codes, which carry no data.
        NULL = 0x00 => "null",
        BIT = 0x03 => "bit",
        BYTE_WORD_DWORD = 0x04 => "byte_word_dword",
        INTEGER = 0x05 => "integer",
        DINTEGER = 0x06 => "dinteger",
        REAL = 0x07 => "real",
        OCTET_STRING = 0x09 => "octet_string",
        /// Sinumerik NCK: an array of NCK addresses follows instead of data items.
        NCK_ADDRESS_1 = 0x11 => "nck_address_1",
        NCK_ADDRESS_2 = 0x12 => "nck_address_2",
    }
}

impl DataTransportSize {
    /// The length field counts bits for bit (0x03), byte/word/dword (0x04) and integer (0x05)
    /// items, and bytes for all others, dinteger (0x06), real (0x07) and octet string (0x09)
    /// included (Wireshark `s7comm_decode_response_read_data`, confirmed on the corpus: a DB
    /// read of 120 bytes answers with size 0x04 and length 960, mb2.pcap frame 199).
    pub const fn length_in_bits(&self) -> bool {
        matches!(self.0, 0x03..=0x05)
    }

    /// Bytes of data an item with this transport size and length field carries: bit lengths
    /// are rounded up to whole bytes (a single bit travels in one byte).
    pub const fn data_len(&self, length: u16) -> usize {
        let length = length as usize;
        if self.length_in_bits() {
            length.div_ceil(8)
        } else {
            length
        }
    }
}

code_point! {
    /// Syntax id of a variable specification: how the address that follows is laid out.
    /// Only S7ANY (0x10) is decoded; the others are kept raw.
    SyntaxId(u8), "syntax_id" {
        /// The classic S7-300/400 address: area, DB, byte and bit, element type and count.
        S7ANY = 0x10 => "s7any",
        PBC_R_ID = 0x13 => "pbc_r_id",
        ALARM_LOCKFREE = 0x15 => "alarm_lockfree",
        ALARM_IND = 0x16 => "alarm_ind",
        ALARM_ACK = 0x19 => "alarm_ack",
        ALARM_QUERYREQ = 0x1A => "alarm_queryreq",
        NOTIFY_IND = 0x1C => "notify_ind",
        /// Sinumerik NCK variable access.
        NCK = 0x82 => "nck",
        NCK_METRIC = 0x83 => "nck_metric",
        NCK_INCH = 0x84 => "nck_inch",
        /// Drive parameters through routing from Drive ES / Starter.
        DRIVEESANY = 0xA2 => "driveesany",
        /// S7-400 block read.
        DBREAD = 0xB0 => "dbread",
        /// S7-1200 symbolic (LID-based) access.
        S1200SYM = 0xB2 => "s1200sym",
    }
}

code_point! {
    /// Return code of a data item (and of each item of a write response).
    ReturnCode(u8), "return_code" {
        /// What write jobs put in their data items.
        RESERVED = 0x00 => "reserved",
        HARDWARE_FAULT = 0x01 => "hardware_fault",
        ACCESS_DENIED = 0x03 => "access_denied",
        /// The address is beyond the area's limit.
        ADDRESS_OUT_OF_RANGE = 0x05 => "address_out_of_range",
        DATA_TYPE_NOT_SUPPORTED = 0x06 => "data_type_not_supported",
        DATA_TYPE_INCONSISTENT = 0x07 => "data_type_inconsistent",
        /// E.g. reading a DB that does not exist.
        OBJECT_DOES_NOT_EXIST = 0x0A => "object_does_not_exist",
        SUCCESS = 0xFF => "success",
    }
}

impl ReturnCode {
    pub const fn is_success(&self) -> bool {
        self.0 == 0xFF
    }

    /// Items with these codes carry data (Wireshark): success in responses, reserved in the
    /// write job's items. Every other code is a four-byte item without data.
    pub const fn carries_data(&self) -> bool {
        matches!(self.0, 0x00 | 0xFF)
    }
}

code_point! {
    /// Block type as S7 writes it in file names and block lists: two ASCII hex digits ("0A"),
    /// kept here as their value (0x0A).
    BlockType(u8), "block_type" {
        OB = 0x08 => "ob",
        CMOD = 0x09 => "cmod",
        DB = 0x0A => "db",
        SDB = 0x0B => "sdb",
        FC = 0x0C => "fc",
        SFC = 0x0D => "sfc",
        FB = 0x0E => "fb",
        SFB = 0x0F => "sfb",
    }
}

impl BlockType {
    /// From the two ASCII hex digits of a file name or block list ("0A" is a DB); `None` when
    /// they are not hex digits.
    pub fn from_ascii(pair: [u8; 2]) -> Option<Self> {
        let [hi, lo] = pair;
        let hi = char::from(hi).to_digit(16)?;
        let lo = char::from(lo).to_digit(16)?;
        u8::try_from(hi * 16 + lo).ok().map(Self)
    }

    /// Code blocks (OB, FC, FB and the system ones): what a program download changes.
    pub const fn is_code(&self) -> bool {
        matches!(self.0, 0x08 | 0x0C..=0x0F)
    }
}

code_point! {
    /// Userdata parameter method: request or response. Mode-transition pushes use 0x00.
    UserdataMethod(u8), "method" {
        UNDEFINED = 0x00 => "undefined",
        REQUEST = 0x11 => "request",
        RESPONSE = 0x12 => "response",
    }
}

code_point! {
    /// Userdata type: the high nibble of the type/group byte. Wireshark's current dissector
    /// reads only its top two bits (push 0, request 1, response 2); the whole nibble keeps the
    /// Sinumerik NC variants apart.
    UserdataType(u8), "userdata_type" {
        /// Unsolicited: diagnostics, alarms, mode transitions, cyclic data sent by the PLC.
        PUSH = 0x0 => "push",
        NC_PUSH = 0x3 => "nc_push",
        REQUEST = 0x4 => "request",
        NC_REQUEST = 0x7 => "nc_request",
        RESPONSE = 0x8 => "response",
        NC_RESPONSE = 0xB => "nc_response",
    }
}

code_point! {
    /// Userdata function group: the low nibble of the type/group byte.
    FunctionGroup(u8), "function_group" {
        /// Sent by the PLC when its operating mode changes; the subfunction is the new mode.
        MODE_TRANSITION = 0x0 => "mode_transition",
        /// Test and installation functions: block status, variable status/modify, force.
        PROGRAMMER_COMMANDS = 0x1 => "programmer_commands",
        CYCLIC_DATA = 0x2 => "cyclic_data",
        BLOCK_FUNCTIONS = 0x3 => "block_functions",
        /// Read SZL, message service, alarms, diagnostics.
        CPU_FUNCTIONS = 0x4 => "cpu_functions",
        SECURITY = 0x5 => "security",
        PBC_BSEND = 0x6 => "pbc_bsend",
        TIME_FUNCTIONS = 0x7 => "time_functions",
        NC_PROGRAMMING = 0xF => "nc_programming",
    }
}

code_point! {
    /// Memory area and element type of a TIS address: the high nibble is the area (M, I, Q,
    /// peripheral inputs, DB), the low nibble the element (bit, byte, word, double word);
    /// timers and counters have one code each (Wireshark's `userdata_tis_varstat_area_names`).
    TisArea(u8), "tis_area" {
        MX = 0x00 => "mx",
        MB = 0x01 => "mb",
        MW = 0x02 => "mw",
        MD = 0x03 => "md",
        IX = 0x10 => "ix",
        IB = 0x11 => "ib",
        IW = 0x12 => "iw",
        ID = 0x13 => "id",
        QX = 0x20 => "qx",
        QB = 0x21 => "qb",
        QW = 0x22 => "qw",
        QD = 0x23 => "qd",
        PIB = 0x31 => "pib",
        PIW = 0x32 => "piw",
        PID = 0x33 => "pid",
        TIMER = 0x54 => "timer",
        COUNTER = 0x64 => "counter",
        DBX = 0x70 => "dbx",
        DBB = 0x71 => "dbb",
        DBW = 0x72 => "dbw",
        DBD = 0x73 => "dbd",
    }
}

impl TisArea {
    /// The same memory as an S7ANY pointer names it, `None` for codes outside the table.
    pub const fn area(&self) -> Option<Area> {
        Some(match self.0 {
            0x00..=0x03 => Area::FLAGS,
            0x10..=0x13 => Area::INPUTS,
            0x20..=0x23 => Area::OUTPUTS,
            0x31..=0x33 => Area::PERIPHERAL,
            0x54 => Area::TIMERS,
            0x64 => Area::COUNTERS,
            0x70..=0x73 => Area::DATA_BLOCKS,
            _ => return None,
        })
    }

    /// The element as an S7ANY transport size: bit, byte, word, double word, timer, counter.
    pub const fn transport_size(&self) -> Option<TransportSize> {
        if self.area().is_none() {
            return None;
        }
        Some(match self.0 {
            0x54 => TransportSize::TIMER,
            0x64 => TransportSize::COUNTER,
            v => match v & 0x0f {
                0 => TransportSize::BIT,
                1 => TransportSize::BYTE,
                2 => TransportSize::WORD,
                _ => TransportSize::DWORD,
            },
        })
    }

    /// Bit areas (MX, IX, QX, DBX): the address's second byte is a bit position, not a count.
    pub const fn is_bit(&self) -> bool {
        self.0 & 0x0f == 0 && self.area().is_some()
    }
}

/// Userdata subfunction. Its meaning depends on the function group, so the name does too: see
/// [`Self::name_in`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subfunction(pub u8);

impl Subfunction {
    // Programmer commands (group 1): test and installation jobs.
    pub const VARIABLE_STATUS: Self = Self(0x02);
    pub const MODIFY_VARIABLE: Self = Self(0x08);
    pub const FORCE: Self = Self(0x09);
    /// A job set up before (a variable table's modify, say) replaced by the one it carries.
    pub const REPLACE_JOB: Self = Self(0x12);
    // CPU functions (group 4).
    pub const READ_SZL: Self = Self(0x01);
    pub const MESSAGE_SERVICE: Self = Self(0x02);
    pub const DIAGNOSTIC_MESSAGE: Self = Self(0x03);
    pub const ALARM_QUERY: Self = Self(0x13);
    // Block functions (group 3).
    pub const LIST_BLOCKS: Self = Self(0x01);
    pub const LIST_BLOCKS_OF_TYPE: Self = Self(0x02);
    pub const GET_BLOCK_INFO: Self = Self(0x03);
    // Time functions (group 7).
    pub const READ_CLOCK: Self = Self(0x01);
    pub const SET_CLOCK: Self = Self(0x02);
    pub const READ_CLOCK_FOLLOWING: Self = Self(0x03);
    pub const SET_CLOCK_2: Self = Self(0x04);
    // Security (group 5).
    pub const PLC_PASSWORD: Self = Self(0x01);
    // Mode transition (group 0): the subfunction is the mode entered.
    pub const MODE_STOP: Self = Self(0x00);
    pub const MODE_RUN: Self = Self(0x02);

    /// snake_case name of this subfunction within `group` (Wireshark's per-group tables; for
    /// mode transitions, the operating mode entered), `None` when unknown.
    pub const fn name_in(&self, group: FunctionGroup) -> Option<&'static str> {
        Some(match (group.0, self.0) {
            (0x0, 0x00) => "stop",
            (0x0, 0x01) => "warm_restart",
            (0x0, 0x02) => "run",
            (0x0, 0x03) => "hot_restart",
            (0x0, 0x04) => "hold",
            (0x0, 0x06) => "cold_restart",
            (0x0, 0x09) => "run_redundant",
            (0x0, 0x0B) => "link_up",
            (0x0, 0x0C) => "update",
            (0x1, 0x01) => "block_status",
            (0x1, 0x02) => "variable_status",
            (0x1, 0x03) => "output_istack",
            (0x1, 0x04) => "output_bstack",
            (0x1, 0x05) => "output_lstack",
            (0x1, 0x06) => "time_measurement",
            (0x1, 0x07) => "force_selection",
            (0x1, 0x08) => "modify_variable",
            (0x1, 0x09) => "force",
            (0x1, 0x0A) => "breakpoint",
            (0x1, 0x0B) => "exit_hold",
            (0x1, 0x0C) => "memory_reset",
            (0x1, 0x0D) => "disable_job",
            (0x1, 0x0E) => "enable_job",
            (0x1, 0x0F) => "delete_job",
            (0x1, 0x10) => "read_job_list",
            (0x1, 0x11) => "read_job",
            (0x1, 0x12) => "replace_job",
            (0x1, 0x13) => "block_status_v2",
            (0x1, 0x16) => "flash_led",
            (0x2, 0x01) => "cyclic_transfer",
            (0x2, 0x04) => "unsubscribe",
            (0x2, 0x05) => "change_driven_transfer",
            (0x2, 0x07) => "change_driven_transfer_modify",
            (0x2, 0x08) => "rdrec",
            (0x3, 0x01) => "list_blocks",
            (0x3, 0x02) => "list_blocks_of_type",
            (0x3, 0x03) => "get_block_info",
            (0x4, 0x01) => "read_szl",
            (0x4, 0x02) => "message_service",
            (0x4, 0x03) => "diagnostic_message",
            (0x4, 0x05) => "alarm_8_indication",
            (0x4, 0x06) => "notify_indication",
            (0x4, 0x07) => "alarm_8_lock",
            (0x4, 0x08) => "alarm_8_unlock",
            (0x4, 0x09) => "scan_indication",
            (0x4, 0x0B) => "alarm_ack",
            (0x4, 0x0C) => "alarm_ack_indication",
            (0x4, 0x0D) => "alarm_lock_indication",
            (0x4, 0x0E) => "alarm_unlock_indication",
            (0x4, 0x10) => "ar_send_indication",
            (0x4, 0x11) => "alarm_sq_indication",
            (0x4, 0x12) => "alarm_s_indication",
            (0x4, 0x13) => "alarm_query",
            (0x4, 0x16) => "notify_8_indication",
            (0x5, 0x01) => "plc_password",
            (0x7, 0x01) => "read_clock",
            (0x7, 0x02) => "set_clock",
            (0x7, 0x03) => "read_clock_following",
            (0x7, 0x04) => "set_clock",
            (0xF, 0x01) => "request_download",
            (0xF, 0x02) => "download_block",
            (0xF, 0x03) => "continue_download",
            (0xF, 0x04) => "download_ended",
            (0xF, 0x06) => "start_upload",
            (0xF, 0x07) => "upload",
            (0xF, 0x08) => "continue_upload",
            _ => return None,
        })
    }
}

impl From<u8> for Subfunction {
    fn from(value: u8) -> Self {
        Self(value)
    }
}

impl From<Subfunction> for u8 {
    fn from(value: Subfunction) -> Self {
        value.0
    }
}

/// System status list (SZL, German "System-Zustandsliste") id: module class in bits 15-12, the
/// partial list extract number in bits 11-8, the partial list number in bits 7-0. Names go by
/// the partial list number, so 0x0011 and 0x0111 (one record of it) share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SzlId(pub u16);

impl SzlId {
    pub const SZL_LIST: Self = Self(0x0000);
    /// Order number, hardware and firmware versions.
    pub const MODULE_IDENTIFICATION: Self = Self(0x0011);
    pub const CPU_CHARACTERISTICS: Self = Self(0x0012);
    pub const USER_MEMORY_AREAS: Self = Self(0x0013);
    pub const SYSTEM_AREAS: Self = Self(0x0014);
    pub const BLOCK_TYPES: Self = Self(0x0015);
    /// Station, module and plant names, copyright, serial numbers.
    pub const COMPONENT_IDENTIFICATION: Self = Self(0x001C);
    /// Current operating mode.
    pub const OPERATING_MODE: Self = Self(0x0424);
    pub const COMMUNICATION_CAPABILITIES: Self = Self(0x0131);
    pub const COMMUNICATION_STATUS: Self = Self(0x0132);
    pub const LED_STATUS: Self = Self(0x0074);
    pub const DIAGNOSTIC_BUFFER: Self = Self(0x00A0);

    /// The partial list number, bits 7-0: what kind of list this is.
    pub const fn list_number(&self) -> u8 {
        (self.0 & 0x00FF) as u8
    }

    /// The partial list extract number, bits 11-8: which subset of the list.
    pub const fn extract_number(&self) -> u8 {
        ((self.0 >> 8) & 0x0F) as u8
    }

    /// Module class, bits 15-12 (0 = CPU, 4 = IM, 8 = FM, 0xC = CP).
    pub const fn module_class(&self) -> u8 {
        (self.0 >> 12) as u8
    }

    /// snake_case name of the partial list (S7-300/400 system software reference), `None` when
    /// unknown.
    pub const fn name(&self) -> Option<&'static str> {
        Some(match self.list_number() {
            0x00 => "szl_list",
            0x11 => "module_identification",
            0x12 => "cpu_characteristics",
            0x13 => "user_memory_areas",
            0x14 => "system_areas",
            0x15 => "block_types",
            0x17 => "stored_blocks",
            0x18 => "battery_status",
            0x19 => "module_led_status",
            0x1C => "component_identification",
            0x22 => "interrupt_status",
            0x24 => "operating_mode",
            0x25 => "process_image_partitions",
            0x31 => "communication_capabilities",
            0x32 => "communication_status",
            0x33 => "diagnostic_objects",
            0x37 => "ethernet_details",
            0x74 => "led_status",
            0x90 => "dp_master_system",
            0x91 => "module_status",
            0x92 => "rack_station_status",
            0x94 => "rack_station_status_pnio",
            0x95 => "dp_master_system_extended",
            0x96 => "module_status_pnio",
            0x9C => "tool_changer",
            0xA0 => "diagnostic_buffer",
            0xB1 => "module_diagnostic_data",
            0xB2 => "module_diagnostic_record_1_physical",
            0xB3 => "module_diagnostic_data_logical",
            0xB4 => "dp_slave_diagnostic_data",
            _ => return None,
        })
    }
}

impl From<u16> for SzlId {
    fn from(value: u16) -> Self {
        Self(value)
    }
}

impl From<SzlId> for u16 {
    fn from(value: SzlId) -> Self {
        value.0
    }
}

impl fmt::Display for SzlId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#06x}", self.0)
    }
}

code_point! {
    /// S7comm-plus protocol version (header byte 1).
    PlusVersion(u8), "s7plus_version" {
        V1 = 0x01 => "v1",
        V2 = 0x02 => "v2",
        /// Integrity protected: a 32-byte digest opens every data part.
        V3 = 0x03 => "v3",
        EXTENDED_KEEP_ALIVE = 0xFE => "extended_keep_alive",
        KEEP_ALIVE = 0xFF => "keep_alive",
    }
}

code_point! {
    /// S7comm-plus opcode, first byte of the data part.
    PlusOpcode(u8), "s7plus_opcode" {
        REQUEST = 0x31 => "request",
        RESPONSE = 0x32 => "response",
        NOTIFICATION = 0x33 => "notification",
        /// Seen from V13 HMIs on cyclic data.
        RESPONSE2 = 0x02 => "response2",
    }
}

code_point! {
    /// S7comm-plus function (s7commwireshark `data_functioncode_names`).
    PlusFunction(u16), "s7plus_function" {
        ERROR = 0x04B1 => "error",
        EXPLORE = 0x04BB => "explore",
        CREATE_OBJECT = 0x04CA => "create_object",
        DELETE_OBJECT = 0x04D4 => "delete_object",
        SET_VARIABLE = 0x04F2 => "set_variable",
        /// Only in old S7-1200 firmware.
        GET_VARIABLE = 0x04FC => "get_variable",
        ADD_LINK = 0x0506 => "add_link",
        REMOVE_LINK = 0x051A => "remove_link",
        GET_LINK = 0x0524 => "get_link",
        SET_MULTI_VARIABLES = 0x0542 => "set_multi_variables",
        GET_MULTI_VARIABLES = 0x054C => "get_multi_variables",
        BEGIN_SEQUENCE = 0x0556 => "begin_sequence",
        END_SEQUENCE = 0x0560 => "end_sequence",
        INVOKE = 0x056B => "invoke",
        SET_VAR_SUB_STREAMED = 0x057C => "set_var_sub_streamed",
        GET_VAR_SUB_STREAMED = 0x0586 => "get_var_sub_streamed",
        GET_VARIABLES_ADDRESS = 0x0590 => "get_variables_address",
        ABORT = 0x059A => "abort",
    }
}

impl PlusFunction {
    /// Functions that change the controller: setting variables, deleting objects.
    pub const fn is_write(self) -> bool {
        matches!(
            self,
            PlusFunction::SET_VARIABLE
                | PlusFunction::SET_MULTI_VARIABLES
                | PlusFunction::SET_VAR_SUB_STREAMED
                | PlusFunction::DELETE_OBJECT
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s7plus_writes_are_the_set_and_delete_functions() {
        for code in 0..=u16::MAX {
            let f = PlusFunction(code);
            let by_name = f
                .name()
                .is_some_and(|n| n.starts_with("set") || n.starts_with("delete"));
            assert_eq!(f.is_write(), by_name, "{code:#06x}");
        }
    }

    #[test]
    fn names_and_display() {
        assert_eq!(FunctionCode::PLC_STOP.name(), Some("plc_stop"));
        assert_eq!(FunctionCode(0x42).name(), None);
        assert_eq!(FunctionCode(0x42).to_string(), "function_0x42");
        assert_eq!(Area::FLAGS.to_string(), "flags");
        assert_eq!(SyntaxId::S1200SYM.name(), Some("s1200sym"));
        assert_eq!(SyntaxId::DRIVEESANY.0, 0xA2);
        assert_eq!(
            PlusFunction::GET_MULTI_VARIABLES.to_string(),
            "get_multi_variables"
        );
        assert_eq!(PlusFunction(0x0580).to_string(), "s7plus_function_0x0580");
        assert_eq!(u8::from(Rosctr::from(7)), 7);
        assert_eq!(Rosctr::USERDATA.to_string(), "userdata");
        assert!(Rosctr::ACK.has_error_fields() && !Rosctr::JOB.has_error_fields());
        assert_eq!(
            ParamErrorCode(0xD209).name(),
            Some("block_not_found_on_module")
        );
        assert_eq!(CotpPduType::DATA.name(), Some("data"));
    }

    #[test]
    fn function_classes() {
        let transfers: Vec<u8> = (0..=u8::MAX)
            .filter(|&c| FunctionCode(c).is_block_transfer())
            .collect();
        assert_eq!(transfers, [0x1A, 0x1B, 0x1C, 0x1D, 0x1E, 0x1F]);
        let changes: Vec<u8> = (0..=u8::MAX)
            .filter(|&c| FunctionCode(c).changes_plc())
            .collect();
        assert_eq!(changes, [0x05, 0x1A, 0x1B, 0x1C, 0x28, 0x29]);
        // Every function with a name is one Wireshark lists.
        let named = (0..=u8::MAX)
            .filter(|&c| FunctionCode(c).name().is_some())
            .count();
        assert_eq!(named, 12);
    }

    #[test]
    fn data_transport_sizes() {
        assert!(DataTransportSize::BIT.length_in_bits());
        assert!(DataTransportSize::BYTE_WORD_DWORD.length_in_bits());
        assert!(DataTransportSize::INTEGER.length_in_bits());
        assert!(!DataTransportSize::DINTEGER.length_in_bits());
        assert!(!DataTransportSize::REAL.length_in_bits());
        assert!(!DataTransportSize::OCTET_STRING.length_in_bits());
        assert_eq!(DataTransportSize::BIT.data_len(1), 1);
        assert_eq!(DataTransportSize::BYTE_WORD_DWORD.data_len(960), 120);
        assert_eq!(DataTransportSize::BYTE_WORD_DWORD.data_len(9), 2);
        assert_eq!(DataTransportSize::REAL.data_len(4), 4);
        assert_eq!(DataTransportSize(0x42).data_len(5), 5);
        assert_eq!(DataTransportSize::BIT.data_len(u16::MAX), 8192);
    }

    #[test]
    fn block_types_from_ascii() {
        assert_eq!(BlockType::from_ascii(*b"0A"), Some(BlockType::DB));
        assert_eq!(BlockType::from_ascii(*b"08"), Some(BlockType::OB));
        assert_eq!(BlockType::from_ascii(*b"0e"), Some(BlockType::FB));
        assert_eq!(BlockType::from_ascii(*b"0G"), None);
        assert!(BlockType::OB.is_code() && !BlockType::DB.is_code());
        assert_eq!(BlockType::SDB.to_string(), "sdb");
    }

    #[test]
    fn subfunction_names_depend_on_the_group() {
        let sub = Subfunction(0x01);
        assert_eq!(sub.name_in(FunctionGroup::CPU_FUNCTIONS), Some("read_szl"));
        assert_eq!(
            sub.name_in(FunctionGroup::BLOCK_FUNCTIONS),
            Some("list_blocks")
        );
        assert_eq!(
            sub.name_in(FunctionGroup::TIME_FUNCTIONS),
            Some("read_clock")
        );
        assert_eq!(sub.name_in(FunctionGroup::SECURITY), Some("plc_password"));
        assert_eq!(
            Subfunction::MODE_STOP.name_in(FunctionGroup::MODE_TRANSITION),
            Some("stop")
        );
        assert_eq!(
            Subfunction(0x77).name_in(FunctionGroup::CPU_FUNCTIONS),
            None
        );
        assert_eq!(u8::from(Subfunction::from(3)), 3);
    }

    #[test]
    fn szl_ids() {
        let id = SzlId(0x0424);
        assert_eq!(id.list_number(), 0x24);
        assert_eq!(id.extract_number(), 4);
        assert_eq!(id.module_class(), 0);
        assert_eq!(id.name(), Some("operating_mode"));
        assert_eq!(SzlId(0x0111).name(), Some("module_identification"));
        assert_eq!(SzlId(0x0011).to_string(), "0x0011");
        assert_eq!(SzlId(0x00FF).name(), None);
        assert_eq!(u16::from(SzlId::from(0x1C)), 0x1C);
    }

    #[test]
    fn transport_size_widths() {
        assert_eq!(TransportSize::BIT.element_len(), Some(1));
        assert_eq!(TransportSize::WORD.element_len(), Some(2));
        assert_eq!(TransportSize::REAL.element_len(), Some(4));
        assert_eq!(TransportSize::DATE_AND_TIME.element_len(), Some(8));
        assert_eq!(TransportSize(0x77).element_len(), None);
        assert!(Area::DATA_BLOCKS.has_db_number() && !Area::FLAGS.has_db_number());
        assert!(ReturnCode::SUCCESS.is_success() && ReturnCode::SUCCESS.carries_data());
        assert!(!ReturnCode::OBJECT_DOES_NOT_EXIST.carries_data());
    }
}
