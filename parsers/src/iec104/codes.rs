//! IEC 60870-5-104 code points as open newtypes: a type id or cause this crate has no name for
//! still parses and survives into events.

/// ASDU type identification (IEC 60870-5-101 §7.2.1, with the types 104 adds: 58–64, 107, 127).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TypeId(pub u8);

/// What an information element holds, which decides its length and how it is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// SIQ: single-point information with quality.
    Single,
    /// DIQ: double-point information with quality.
    Double,
    /// VTI + QDS: step position.
    Step,
    /// BSI + QDS: bitstring of 32 bits.
    Bitstring,
    /// NVA + QDS: normalized value.
    Normalized,
    /// SVA + QDS: scaled value.
    Scaled,
    /// IEEE 754 short float + QDS.
    Float,
    /// NVA without quality (M_ME_ND_1).
    NormalizedNoQuality,
    /// BCR: binary counter reading.
    Counter,
    /// SEP + CP16: event of protection equipment.
    ProtectionEvent,
    /// SPE/OCI + QDP + CP16: packed protection events.
    ProtectionPacked,
    /// SCD + QDS: packed single-point with status change detection.
    PackedSingle,
    /// SCO: single command.
    SingleCommand,
    /// DCO: double command.
    DoubleCommand,
    /// RCO: regulating step command.
    StepCommand,
    /// NVA + QOS: set-point, normalized.
    SetpointNormalized,
    /// SVA + QOS: set-point, scaled.
    SetpointScaled,
    /// Float + QOS: set-point, short float.
    SetpointFloat,
    /// BSI: bitstring command.
    BitstringCommand,
    /// COI: end of initialisation.
    EndOfInit,
    /// QOI: interrogation.
    Interrogation,
    /// QCC: counter interrogation.
    CounterInterrogation,
    /// Nothing but the IOA: read.
    Read,
    /// CP56Time2a: clock synchronisation.
    ClockSync,
    /// FBP: test (fixed test pattern, 0x55AA).
    Test,
    /// QRP: reset process.
    ResetProcess,
    /// CP16: delay acquisition.
    Delay,
    /// TSC + CP56: test with time tag.
    TestTime,
    /// NVA + QPM: parameter, normalized.
    ParameterNormalized,
    /// SVA + QPM: parameter, scaled.
    ParameterScaled,
    /// Float + QPM: parameter, short float.
    ParameterFloat,
    /// QPA: parameter activation.
    ParameterActivation,
    /// File transfer: the element's bytes as they are (the layout of each is in the table).
    File,
    /// F_SG_NA_1: a file segment, whose length is in the element.
    Segment,
}

/// The time tag after an element, if its type has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeTag {
    None,
    Cp24,
    Cp56,
}

/// A type's name, layout, time tag and element length (without the time tag).
pub struct TypeSpec {
    pub name: &'static str,
    pub layout: Layout,
    pub time: TimeTag,
    /// Bytes of the element before its time tag (a segment's are its fixed part).
    pub size: usize,
}

const fn spec(name: &'static str, layout: Layout, time: TimeTag, size: usize) -> TypeSpec {
    TypeSpec {
        name,
        layout,
        time,
        size,
    }
}

use Layout as L;
use TimeTag as T;

impl TypeId {
    pub const C_SC_NA_1: Self = Self(45);
    pub const C_IC_NA_1: Self = Self(100);
    pub const C_CS_NA_1: Self = Self(103);
    pub const C_RP_NA_1: Self = Self(105);

    /// The standard type's layout, `None` for a reserved or private type id.
    pub const fn spec(&self) -> Option<TypeSpec> {
        Some(match self.0 {
            1 => spec("M_SP_NA_1", L::Single, T::None, 1),
            2 => spec("M_SP_TA_1", L::Single, T::Cp24, 1),
            3 => spec("M_DP_NA_1", L::Double, T::None, 1),
            4 => spec("M_DP_TA_1", L::Double, T::Cp24, 1),
            5 => spec("M_ST_NA_1", L::Step, T::None, 2),
            6 => spec("M_ST_TA_1", L::Step, T::Cp24, 2),
            7 => spec("M_BO_NA_1", L::Bitstring, T::None, 5),
            8 => spec("M_BO_TA_1", L::Bitstring, T::Cp24, 5),
            9 => spec("M_ME_NA_1", L::Normalized, T::None, 3),
            10 => spec("M_ME_TA_1", L::Normalized, T::Cp24, 3),
            11 => spec("M_ME_NB_1", L::Scaled, T::None, 3),
            12 => spec("M_ME_TB_1", L::Scaled, T::Cp24, 3),
            13 => spec("M_ME_NC_1", L::Float, T::None, 5),
            14 => spec("M_ME_TC_1", L::Float, T::Cp24, 5),
            15 => spec("M_IT_NA_1", L::Counter, T::None, 5),
            16 => spec("M_IT_TA_1", L::Counter, T::Cp24, 5),
            17 => spec("M_EP_TA_1", L::ProtectionEvent, T::Cp24, 3),
            18 => spec("M_EP_TB_1", L::ProtectionPacked, T::Cp24, 4),
            19 => spec("M_EP_TC_1", L::ProtectionPacked, T::Cp24, 4),
            20 => spec("M_PS_NA_1", L::PackedSingle, T::None, 5),
            21 => spec("M_ME_ND_1", L::NormalizedNoQuality, T::None, 2),
            30 => spec("M_SP_TB_1", L::Single, T::Cp56, 1),
            31 => spec("M_DP_TB_1", L::Double, T::Cp56, 1),
            32 => spec("M_ST_TB_1", L::Step, T::Cp56, 2),
            33 => spec("M_BO_TB_1", L::Bitstring, T::Cp56, 5),
            34 => spec("M_ME_TD_1", L::Normalized, T::Cp56, 3),
            35 => spec("M_ME_TE_1", L::Scaled, T::Cp56, 3),
            36 => spec("M_ME_TF_1", L::Float, T::Cp56, 5),
            37 => spec("M_IT_TB_1", L::Counter, T::Cp56, 5),
            38 => spec("M_EP_TD_1", L::ProtectionEvent, T::Cp56, 3),
            39 => spec("M_EP_TE_1", L::ProtectionPacked, T::Cp56, 4),
            40 => spec("M_EP_TF_1", L::ProtectionPacked, T::Cp56, 4),
            45 => spec("C_SC_NA_1", L::SingleCommand, T::None, 1),
            46 => spec("C_DC_NA_1", L::DoubleCommand, T::None, 1),
            47 => spec("C_RC_NA_1", L::StepCommand, T::None, 1),
            48 => spec("C_SE_NA_1", L::SetpointNormalized, T::None, 3),
            49 => spec("C_SE_NB_1", L::SetpointScaled, T::None, 3),
            50 => spec("C_SE_NC_1", L::SetpointFloat, T::None, 5),
            51 => spec("C_BO_NA_1", L::BitstringCommand, T::None, 4),
            58 => spec("C_SC_TA_1", L::SingleCommand, T::Cp56, 1),
            59 => spec("C_DC_TA_1", L::DoubleCommand, T::Cp56, 1),
            60 => spec("C_RC_TA_1", L::StepCommand, T::Cp56, 1),
            61 => spec("C_SE_TA_1", L::SetpointNormalized, T::Cp56, 3),
            62 => spec("C_SE_TB_1", L::SetpointScaled, T::Cp56, 3),
            63 => spec("C_SE_TC_1", L::SetpointFloat, T::Cp56, 5),
            64 => spec("C_BO_TA_1", L::BitstringCommand, T::Cp56, 4),
            70 => spec("M_EI_NA_1", L::EndOfInit, T::None, 1),
            100 => spec("C_IC_NA_1", L::Interrogation, T::None, 1),
            101 => spec("C_CI_NA_1", L::CounterInterrogation, T::None, 1),
            102 => spec("C_RD_NA_1", L::Read, T::None, 0),
            103 => spec("C_CS_NA_1", L::ClockSync, T::None, 7),
            104 => spec("C_TS_NA_1", L::Test, T::None, 2),
            105 => spec("C_RP_NA_1", L::ResetProcess, T::None, 1),
            106 => spec("C_CD_NA_1", L::Delay, T::None, 2),
            107 => spec("C_TS_TA_1", L::TestTime, T::Cp56, 2),
            110 => spec("P_ME_NA_1", L::ParameterNormalized, T::None, 3),
            111 => spec("P_ME_NB_1", L::ParameterScaled, T::None, 3),
            112 => spec("P_ME_NC_1", L::ParameterFloat, T::None, 5),
            113 => spec("P_AC_NA_1", L::ParameterActivation, T::None, 1),
            120 => spec("F_FR_NA_1", L::File, T::None, 6),
            121 => spec("F_SR_NA_1", L::File, T::None, 7),
            122 => spec("F_SC_NA_1", L::File, T::None, 4),
            123 => spec("F_LS_NA_1", L::File, T::None, 5),
            124 => spec("F_AF_NA_1", L::File, T::None, 4),
            125 => spec("F_SG_NA_1", L::Segment, T::None, 4),
            126 => spec("F_DR_TA_1", L::File, T::Cp56, 6),
            127 => spec("F_SC_NB_1", L::File, T::None, 16),
            _ => return None,
        })
    }

    /// The standard name (`M_ME_TF_1`), `None` for a type id this crate has no layout for.
    pub const fn name(&self) -> Option<&'static str> {
        match self.spec() {
            Some(s) => Some(s.name),
            None => None,
        }
    }

    /// Bytes of one element with its time tag, `None` for an unknown type or a segment.
    pub const fn element_len(&self) -> Option<usize> {
        match self.spec() {
            Some(TypeSpec {
                layout: Layout::Segment,
                ..
            })
            | None => None,
            Some(s) => Some(
                s.size
                    + match s.time {
                        TimeTag::None => 0,
                        TimeTag::Cp24 => 3,
                        TimeTag::Cp56 => 7,
                    },
            ),
        }
    }

    /// A command in the control direction: process commands (45–64), system commands
    /// (100–107), parameters (110–113) and file transfer commands sent to a station.
    pub const fn is_control(&self) -> bool {
        matches!(self.0, 45..=64 | 100..=107 | 110..=113)
    }

    /// A process command that changes an output or a set-point (45–64).
    pub const fn is_process_command(&self) -> bool {
        matches!(self.0, 45..=64)
    }

    /// Parameter loading or activation (110–113): it changes how the station reports.
    pub const fn is_parameter(&self) -> bool {
        matches!(self.0, 110..=113)
    }

    /// File transfer (120–127): a disturbance record, or a file written to the station.
    pub const fn is_file(&self) -> bool {
        matches!(self.0, 120..=127)
    }
}

/// Cause of transmission (IEC 60870-5-101 §7.2.3), the 6-bit number without the P/N and T bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cause(pub u8);

impl Cause {
    pub const SPONTANEOUS: Self = Self(3);
    pub const ACTIVATION: Self = Self(6);
    pub const ACTIVATION_CON: Self = Self(7);
    pub const DEACTIVATION: Self = Self(8);
    pub const ACTIVATION_TERM: Self = Self(10);

    pub const fn name(&self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "per_cyc",
            2 => "back",
            3 => "spont",
            4 => "init",
            5 => "req",
            6 => "act",
            7 => "actcon",
            8 => "deact",
            9 => "deactcon",
            10 => "actterm",
            11 => "retrem",
            12 => "retloc",
            13 => "file",
            20 => "inrogen",
            21..=36 => return Some(INRO[(self.0 - 21) as usize]),
            37 => "reqcogen",
            38..=41 => return Some(REQCO[(self.0 - 38) as usize]),
            44 => "unknown_type",
            45 => "unknown_cause",
            46 => "unknown_asdu_address",
            47 => "unknown_object_address",
            _ => return None,
        })
    }
}

const INRO: [&str; 16] = [
    "inro1", "inro2", "inro3", "inro4", "inro5", "inro6", "inro7", "inro8", "inro9", "inro10",
    "inro11", "inro12", "inro13", "inro14", "inro15", "inro16",
];
const REQCO: [&str; 4] = ["reqco1", "reqco2", "reqco3", "reqco4"];

/// The function of a U-format APCI (IEC 60870-5-104 §5.3): one of the six bits of its first
/// control octet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UFunction(pub u8);

impl UFunction {
    pub const STARTDT_ACT: Self = Self(0x04);
    pub const STARTDT_CON: Self = Self(0x08);
    pub const STOPDT_ACT: Self = Self(0x10);
    pub const STOPDT_CON: Self = Self(0x20);
    pub const TESTFR_ACT: Self = Self(0x40);
    pub const TESTFR_CON: Self = Self(0x80);

    pub const fn name(&self) -> Option<&'static str> {
        Some(match self.0 {
            0x04 => "startdt_act",
            0x08 => "startdt_con",
            0x10 => "stopdt_act",
            0x20 => "stopdt_con",
            0x40 => "testfr_act",
            0x80 => "testfr_con",
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_standard_type_has_a_length_but_segments() {
        let mut n = 0;
        for t in 0..=255u8 {
            let id = TypeId(t);
            if let Some(s) = id.spec() {
                n += 1;
                assert_eq!(id.name(), Some(s.name));
                assert_eq!(id.element_len().is_none(), s.layout == Layout::Segment);
            }
        }
        assert_eq!(n, 67);
        assert_eq!(TypeId(36).element_len(), Some(12));
        assert_eq!(TypeId(102).element_len(), Some(0));
        assert_eq!(TypeId(103).element_len(), Some(7));
        assert_eq!(Cause(25).name(), Some("inro5"));
        assert_eq!(Cause(41).name(), Some("reqco4"));
    }
}
