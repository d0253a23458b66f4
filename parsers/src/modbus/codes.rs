//! Modbus code points as *open* newtypes (rusticata style): a value this crate has no name for
//! still parses and survives into events, so a scanner probing reserved codes stays visible.

use core::fmt;

/// Modbus function code (AP §5, §6). Inside a [`super::ModbusPdu`] the exception bit is cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FunctionCode(pub u8);

impl FunctionCode {
    pub const READ_COILS: Self = Self(1);
    pub const READ_DISCRETE_INPUTS: Self = Self(2);
    pub const READ_HOLDING_REGISTERS: Self = Self(3);
    pub const READ_INPUT_REGISTERS: Self = Self(4);
    pub const WRITE_SINGLE_COIL: Self = Self(5);
    pub const WRITE_SINGLE_REGISTER: Self = Self(6);
    pub const READ_EXCEPTION_STATUS: Self = Self(7);
    pub const DIAGNOSTICS: Self = Self(8);
    pub const GET_COMM_EVENT_COUNTER: Self = Self(11);
    pub const GET_COMM_EVENT_LOG: Self = Self(12);
    pub const WRITE_MULTIPLE_COILS: Self = Self(15);
    pub const WRITE_MULTIPLE_REGISTERS: Self = Self(16);
    pub const REPORT_SERVER_ID: Self = Self(17);
    pub const READ_FILE_RECORD: Self = Self(20);
    pub const WRITE_FILE_RECORD: Self = Self(21);
    pub const MASK_WRITE_REGISTER: Self = Self(22);
    pub const READ_WRITE_MULTIPLE_REGISTERS: Self = Self(23);
    pub const READ_FIFO_QUEUE: Self = Self(24);
    pub const ENCAPSULATED_INTERFACE: Self = Self(43);
    /// Schneider Electric's UMAS (user-defined): Unity/EcoStruxure programming and diagnostics
    /// of Modicon PLCs. Its own function is the data's second byte ([`umas_function_name`]).
    pub const UMAS: Self = Self(90);

    /// Set in the function code byte of an exception response (AP §7).
    pub const EXCEPTION_BIT: u8 = 0x80;

    /// snake_case name of a function code this crate decodes, `None` for any other value.
    pub const fn name(&self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "read_coils",
            2 => "read_discrete_inputs",
            3 => "read_holding_registers",
            4 => "read_input_registers",
            5 => "write_single_coil",
            6 => "write_single_register",
            7 => "read_exception_status",
            8 => "diagnostics",
            11 => "get_comm_event_counter",
            12 => "get_comm_event_log",
            15 => "write_multiple_coils",
            16 => "write_multiple_registers",
            17 => "report_server_id",
            20 => "read_file_record",
            21 => "write_file_record",
            22 => "mask_write_register",
            23 => "read_write_multiple_registers",
            24 => "read_fifo_queue",
            43 => "encapsulated_interface",
            _ => return None,
        })
    }

    /// In the public range (AP §5: 1-64, 73-99, 111-127), assigned or reserved for future use.
    pub const fn is_public(&self) -> bool {
        matches!(self.0, 1..=64 | 73..=99 | 111..=127)
    }

    /// In a user-defined range (AP §5: 65-72, 100-110): vendor-specific, never standardised.
    pub const fn is_user_defined(&self) -> bool {
        matches!(self.0, 65..=72 | 100..=110)
    }

    /// Changes server state by itself. Diagnostics (8) is not listed: only some of its
    /// sub-functions do, see [`DiagnosticSubfunction::changes_state`].
    pub const fn is_write(&self) -> bool {
        matches!(self.0, 5 | 6 | 15 | 16 | 21 | 22 | 23)
    }

    /// The exception bit is set: this is the function code byte of an exception response.
    pub const fn is_exception(&self) -> bool {
        self.0 & Self::EXCEPTION_BIT != 0
    }

    /// The function code with the exception bit cleared.
    pub const fn without_exception_bit(self) -> Self {
        Self(self.0 & !Self::EXCEPTION_BIT)
    }
}

impl From<u8> for FunctionCode {
    fn from(value: u8) -> Self {
        Self(value)
    }
}

impl From<FunctionCode> for u8 {
    fn from(value: FunctionCode) -> Self {
        value.0
    }
}

impl fmt::Display for FunctionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "function_code_{}", self.0),
        }
    }
}

/// Exception code of an exception response (AP §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExceptionCode(pub u8);

impl ExceptionCode {
    pub const ILLEGAL_FUNCTION: Self = Self(0x01);
    pub const ILLEGAL_DATA_ADDRESS: Self = Self(0x02);
    pub const ILLEGAL_DATA_VALUE: Self = Self(0x03);
    pub const SERVER_DEVICE_FAILURE: Self = Self(0x04);
    pub const ACKNOWLEDGE: Self = Self(0x05);
    pub const SERVER_DEVICE_BUSY: Self = Self(0x06);
    /// Not in AP V1.1b3, but defined by the Modicon protocol reference (PI-MBUS-300) and still
    /// sent by older devices.
    pub const NEGATIVE_ACKNOWLEDGE: Self = Self(0x07);
    pub const MEMORY_PARITY_ERROR: Self = Self(0x08);
    pub const GATEWAY_PATH_UNAVAILABLE: Self = Self(0x0A);
    pub const GATEWAY_TARGET_FAILED: Self = Self(0x0B);

    /// snake_case name of a defined exception code, `None` for any other value.
    pub const fn name(&self) -> Option<&'static str> {
        Some(match self.0 {
            0x01 => "illegal_function",
            0x02 => "illegal_data_address",
            0x03 => "illegal_data_value",
            0x04 => "server_device_failure",
            0x05 => "acknowledge",
            0x06 => "server_device_busy",
            0x07 => "negative_acknowledge",
            0x08 => "memory_parity_error",
            0x0A => "gateway_path_unavailable",
            0x0B => "gateway_target_failed",
            _ => return None,
        })
    }
}

impl From<u8> for ExceptionCode {
    fn from(value: u8) -> Self {
        Self(value)
    }
}

impl From<ExceptionCode> for u8 {
    fn from(value: ExceptionCode) -> Self {
        value.0
    }
}

impl fmt::Display for ExceptionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "exception_code_{}", self.0),
        }
    }
}

/// Sub-function of Diagnostics, function code 8 (AP §6.8.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DiagnosticSubfunction(pub u16);

impl DiagnosticSubfunction {
    pub const RETURN_QUERY_DATA: Self = Self(0);
    pub const RESTART_COMMUNICATIONS_OPTION: Self = Self(1);
    pub const RETURN_DIAGNOSTIC_REGISTER: Self = Self(2);
    pub const CHANGE_ASCII_INPUT_DELIMITER: Self = Self(3);
    pub const FORCE_LISTEN_ONLY_MODE: Self = Self(4);
    pub const CLEAR_COUNTERS_AND_DIAGNOSTIC_REGISTER: Self = Self(10);
    pub const RETURN_BUS_MESSAGE_COUNT: Self = Self(11);
    pub const RETURN_BUS_COMMUNICATION_ERROR_COUNT: Self = Self(12);
    pub const RETURN_BUS_EXCEPTION_ERROR_COUNT: Self = Self(13);
    pub const RETURN_SERVER_MESSAGE_COUNT: Self = Self(14);
    pub const RETURN_SERVER_NO_RESPONSE_COUNT: Self = Self(15);
    pub const RETURN_SERVER_NAK_COUNT: Self = Self(16);
    pub const RETURN_SERVER_BUSY_COUNT: Self = Self(17);
    pub const RETURN_BUS_CHARACTER_OVERRUN_COUNT: Self = Self(18);
    /// Reserved in AP V1.1b3; "Return IOP Overrun Count" in the Modicon reference (PI-MBUS-300).
    pub const RETURN_IOP_OVERRUN_COUNT: Self = Self(19);
    pub const CLEAR_OVERRUN_COUNTER_AND_FLAG: Self = Self(20);
    pub const GET_CLEAR_MODBUS_PLUS_STATISTICS: Self = Self(21);

    /// snake_case name of a defined sub-function, `None` for any other value.
    pub const fn name(&self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "return_query_data",
            1 => "restart_communications_option",
            2 => "return_diagnostic_register",
            3 => "change_ascii_input_delimiter",
            4 => "force_listen_only_mode",
            10 => "clear_counters_and_diagnostic_register",
            11 => "return_bus_message_count",
            12 => "return_bus_communication_error_count",
            13 => "return_bus_exception_error_count",
            14 => "return_server_message_count",
            15 => "return_server_no_response_count",
            16 => "return_server_nak_count",
            17 => "return_server_busy_count",
            18 => "return_bus_character_overrun_count",
            19 => "return_iop_overrun_count",
            20 => "clear_overrun_counter_and_flag",
            21 => "get_clear_modbus_plus_statistics",
            _ => return None,
        })
    }

    /// Restarts, silences or reconfigures the server, or clears its counters: what an attacker
    /// uses to take a device off the bus (restart, listen-only) or to hide traces (clear).
    pub const fn changes_state(&self) -> bool {
        matches!(self.0, 1 | 3 | 4 | 10 | 20)
    }

    /// A sub-function whose request and response data field is exactly one 16-bit word
    /// (AP §6.8.1: all defined sub-functions except 0, echo of any length, and 21, whose
    /// response carries 54 statistics words).
    pub(super) const fn has_single_word_data(&self) -> bool {
        matches!(self.0, 1..=4 | 10..=20)
    }
}

impl From<u16> for DiagnosticSubfunction {
    fn from(value: u16) -> Self {
        Self(value)
    }
}

impl From<DiagnosticSubfunction> for u16 {
    fn from(value: DiagnosticSubfunction) -> Self {
        value.0
    }
}

impl fmt::Display for DiagnosticSubfunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "diagnostic_subfunction_{}", self.0),
        }
    }
}

/// snake_case name of a Schneider UMAS function (the second data byte of a function code 90
/// request, after the session key), as Kaspersky ICS CERT's "The secrets of Schneider
/// Electric's UMAS protocol" (2022) lists them; `None` for others. Downloads go from the
/// programming station to the PLC, uploads from the PLC to it.
pub const fn umas_function_name(code: u8) -> Option<&'static str> {
    Some(match code {
        0x01 => "init_comm",
        0x02 => "read_id",
        0x03 => "read_project_info",
        0x04 => "read_plc_info",
        0x06 => "read_card_info",
        0x0A => "repeat",
        0x10 => "take_plc_reservation",
        0x11 => "release_plc_reservation",
        0x12 => "keep_alive",
        0x20 => "read_memory_block",
        0x22 => "read_variables",
        0x23 => "write_variables",
        0x24 => "read_coils_registers",
        0x25 => "write_coils_registers",
        0x30 => "initialize_download",
        0x31 => "download_block",
        0x32 => "end_download",
        0x33 => "initialize_upload",
        0x34 => "upload_block",
        0x35 => "end_upload",
        0x39 => "read_ethernet_master_data",
        0x40 => "start_plc",
        0x41 => "stop_plc",
        0x50 => "monitor_plc",
        0x58 => "check_plc",
        0x70 => "read_io_object",
        0x71 => "write_io_object",
        0x73 => "get_status_module",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_function_code_is_public_and_round_trips() {
        for code in 0..=u8::MAX {
            let fc = FunctionCode(code);
            if fc.name().is_some() {
                assert!(fc.is_public(), "{code}");
                assert!(!fc.is_user_defined(), "{code}");
            }
            assert_eq!(u8::from(FunctionCode::from(code)), code);
            // The three ranges partition 1..=127 and exclude 0 and the exception half.
            let ranges = [
                fc.is_public(),
                fc.is_user_defined(),
                code == 0 || fc.is_exception(),
            ];
            assert_eq!(ranges.iter().filter(|&&r| r).count(), 1, "{code}");
        }
        assert_eq!(
            FunctionCode::READ_HOLDING_REGISTERS.name(),
            Some("read_holding_registers")
        );
        assert_eq!(FunctionCode(90).name(), None);
        assert!(FunctionCode(65).is_user_defined() && FunctionCode(110).is_user_defined());
        assert!(!FunctionCode(73).is_user_defined() && !FunctionCode(111).is_user_defined());
    }

    #[test]
    fn write_codes() {
        let writes: Vec<u8> = (0..=u8::MAX)
            .filter(|&c| FunctionCode(c).is_write())
            .collect();
        assert_eq!(writes, [5, 6, 15, 16, 21, 22, 23]);
        assert!(!FunctionCode::DIAGNOSTICS.is_write());
    }

    #[test]
    fn exception_bit() {
        let fc = FunctionCode(0x83);
        assert!(fc.is_exception());
        assert_eq!(
            fc.without_exception_bit(),
            FunctionCode::READ_HOLDING_REGISTERS
        );
    }

    #[test]
    fn display_known_and_unknown() {
        assert_eq!(
            FunctionCode::WRITE_FILE_RECORD.to_string(),
            "write_file_record"
        );
        assert_eq!(FunctionCode(90).to_string(), "function_code_90");
        assert_eq!(
            ExceptionCode::GATEWAY_TARGET_FAILED.to_string(),
            "gateway_target_failed"
        );
        assert_eq!(ExceptionCode(0x09).to_string(), "exception_code_9");
        assert_eq!(
            ExceptionCode::MEMORY_PARITY_ERROR.name(),
            Some("memory_parity_error")
        );
        assert_eq!(
            DiagnosticSubfunction::FORCE_LISTEN_ONLY_MODE.to_string(),
            "force_listen_only_mode"
        );
        assert_eq!(
            DiagnosticSubfunction(99).to_string(),
            "diagnostic_subfunction_99"
        );
    }

    #[test]
    fn diagnostic_subfunction_names_cover_0_to_4_and_10_to_21() {
        for sub in (0..=4).chain(10..=21) {
            assert!(DiagnosticSubfunction(sub).name().is_some(), "{sub}");
        }
        for sub in (5..=9).chain(22..=30) {
            assert!(DiagnosticSubfunction(sub).name().is_none(), "{sub}");
        }
        assert!(DiagnosticSubfunction::RESTART_COMMUNICATIONS_OPTION.changes_state());
        assert!(!DiagnosticSubfunction::RETURN_QUERY_DATA.changes_state());
    }
}
