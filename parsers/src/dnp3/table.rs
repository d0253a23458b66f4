//! The one table of object encodings: for each (group, variation), how much room an object
//! takes on the wire and what its octets mean. Walking objects needs the first, decoding
//! points the second; both read this table and nothing else, so a (group, variation) is added
//! in one place.

/// Number representation of a counter, analog or deadband value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NumKind {
    I16,
    I32,
    U16,
    U32,
    F32,
    F64,
}

impl NumKind {
    pub const fn wire_len(self) -> usize {
        match self {
            Self::I16 | Self::U16 => 2,
            Self::I32 | Self::U32 | Self::F32 => 4,
            Self::F64 => 8,
        }
    }
}

/// Time stamp carried after an event's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeField {
    None,
    /// DNP3TIME: 48-bit milliseconds since 1970 UTC.
    Absolute,
    /// 16-bit milliseconds after the last common time of occurrence (g51) in the fragment.
    Relative,
}

impl TimeField {
    pub const fn wire_len(self) -> usize {
        match self {
            Self::None => 0,
            Self::Absolute => 6,
            Self::Relative => 2,
        }
    }
}

/// How much room one object takes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectSize {
    /// Nothing: class data (g60), which only ever names points.
    NoData,
    /// `bits` (1 or 2) per object, packed LSB first; the last octet is padded.
    Packed { bits: u8 },
    /// This many octets per object.
    Fixed(u8),
    /// The variation is the length: octet strings (g110, g111), virtual terminal (g112,
    /// g113). Variation 0 ("any length") only appears in requests that name points.
    VariationIsLength,
    /// Variable, so only with an object size prefix (qualifier 0x5B and the like): file
    /// transfer (g70), authentication (g120), data sets. `min` is the fixed part.
    Prefixed { min: u8 },
    /// Device attributes (g0): data type, length, then that many octets.
    Attribute,
}

/// What the octets of one object mean. Decoding is by kind, never by (group, variation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// Binary input/output; state in bit 7 of the flags, or one packed bit.
    Binary { time: TimeField },
    /// Double-bit binary; state in bits 6-7 of the flags, or two packed bits.
    DoubleBit { time: TimeField },
    /// g13: commanded state (bit 7) and command status (bits 0-6).
    BinaryCommandEvent { time: bool },
    /// g12v1/v2: control code, count, on time, off time, status.
    Crob,
    /// Counters: optional flags, value, optional absolute time.
    Counter {
        num: NumKind,
        flags: bool,
        time: bool,
    },
    /// Analog inputs and analog output status: optional flags, value, optional time.
    Analog {
        num: NumKind,
        flags: bool,
        time: bool,
    },
    /// g41: value, then command status.
    AnalogOutputBlock { num: NumKind },
    /// g43: command status, then value, optional time.
    AnalogCommandEvent { num: NumKind, time: bool },
    /// g34: deadband value.
    Deadband { num: NumKind },
    /// g50v1 (absolute time) and g50v3 (last recorded time).
    Time,
    /// g50v2: time and a 32-bit interval in milliseconds.
    TimeAndInterval,
    /// g50v4: time, interval count, interval units.
    IndexedTime,
    /// g51: common time of occurrence for the relative times that follow.
    Cto { synchronized: bool },
    /// g52: a 16-bit delay in units of `unit_ms` milliseconds.
    TimeDelay { unit_ms: u16 },
    /// g60: a class, no data.
    ClassData,
    /// g0 device attribute.
    DeviceAttribute,
    /// g110, g111.
    OctetString,
    /// g112, g113.
    VirtualTerminal,
    /// g70v2.
    FileAuthentication,
    /// g70v3.
    FileCommand,
    /// g70v4.
    FileCommandStatus,
    /// g70v5.
    FileTransport,
    /// g70v6.
    FileTransportStatus,
    /// g70v7.
    FileDescriptor,
    /// g70v8: a file specification string.
    FileSpec,
    /// Known size, no typed decoding: the octets as they are.
    Raw,
}

impl ValueKind {
    /// Octets one object of a fixed-size kind takes; `None` for variable kinds.
    pub const fn fixed_len(self) -> Option<usize> {
        Some(match self {
            Self::Binary { time } | Self::DoubleBit { time } => 1 + time.wire_len(),
            Self::BinaryCommandEvent { time } => 1 + if time { 6 } else { 0 },
            Self::Crob => 11,
            Self::Counter { num, flags, time } | Self::Analog { num, flags, time } => {
                (flags as usize) + num.wire_len() + if time { 6 } else { 0 }
            }
            Self::AnalogOutputBlock { num } => num.wire_len() + 1,
            Self::AnalogCommandEvent { num, time } => 1 + num.wire_len() + if time { 6 } else { 0 },
            Self::Deadband { num } => num.wire_len(),
            Self::Time | Self::Cto { .. } => 6,
            Self::TimeAndInterval => 10,
            Self::IndexedTime => 11,
            Self::TimeDelay { .. } => 2,
            Self::ClassData => 0,
            _ => return None,
        })
    }
}

/// One entry of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectType {
    pub size: ObjectSize,
    pub kind: ValueKind,
}

const fn t(size: ObjectSize, kind: ValueKind) -> Option<ObjectType> {
    Some(ObjectType { size, kind })
}

const fn fixed(len: u8, kind: ValueKind) -> Option<ObjectType> {
    t(ObjectSize::Fixed(len), kind)
}

const fn prefixed(min: u8, kind: ValueKind) -> Option<ObjectType> {
    t(ObjectSize::Prefixed { min }, kind)
}

const fn counter(len: u8, num: NumKind, flags: bool, time: bool) -> Option<ObjectType> {
    fixed(len, ValueKind::Counter { num, flags, time })
}

const fn analog(len: u8, num: NumKind, flags: bool, time: bool) -> Option<ObjectType> {
    fixed(len, ValueKind::Analog { num, flags, time })
}

const PACKED_1: ObjectSize = ObjectSize::Packed { bits: 1 };
const PACKED_2: ObjectSize = ObjectSize::Packed { bits: 2 };
const BINARY: ValueKind = ValueKind::Binary {
    time: TimeField::None,
};
const BINARY_ABS: ValueKind = ValueKind::Binary {
    time: TimeField::Absolute,
};
const BINARY_REL: ValueKind = ValueKind::Binary {
    time: TimeField::Relative,
};
const DOUBLE: ValueKind = ValueKind::DoubleBit {
    time: TimeField::None,
};
const DOUBLE_ABS: ValueKind = ValueKind::DoubleBit {
    time: TimeField::Absolute,
};
const DOUBLE_REL: ValueKind = ValueKind::DoubleBit {
    time: TimeField::Relative,
};

/// The encoding of (group, variation), from IEEE 1815-2012 Annex A; `None` for combinations
/// it does not define (or whose size cannot be known, like variation 0, "any variation").
pub const fn object_type(group: u8, variation: u8) -> Option<ObjectType> {
    use NumKind::{F32, F64, I16, I32, U16, U32};
    use ValueKind as K;
    const F: bool = true;
    const T: bool = true;
    const N: bool = false;
    match (group, variation) {
        // Device attributes.
        (0, 1..=255) => t(ObjectSize::Attribute, K::DeviceAttribute),
        // Binary inputs, events.
        (1, 1) => t(PACKED_1, BINARY),
        (1, 2) => fixed(1, BINARY),
        (2, 1) => fixed(1, BINARY),
        (2, 2) => fixed(7, BINARY_ABS),
        (2, 3) => fixed(3, BINARY_REL),
        // Double-bit binary inputs, events.
        (3, 1) => t(PACKED_2, DOUBLE),
        (3, 2) => fixed(1, DOUBLE),
        (4, 1) => fixed(1, DOUBLE),
        (4, 2) => fixed(7, DOUBLE_ABS),
        (4, 3) => fixed(3, DOUBLE_REL),
        // Binary outputs, events.
        (10, 1) => t(PACKED_1, BINARY),
        (10, 2) => fixed(1, BINARY),
        (11, 1) => fixed(1, BINARY),
        (11, 2) => fixed(7, BINARY_ABS),
        // Binary output commands: CROB, pattern control block, pattern mask.
        (12, 1 | 2) => fixed(11, K::Crob),
        (12, 3) => t(PACKED_1, BINARY),
        (13, 1) => fixed(1, K::BinaryCommandEvent { time: N }),
        (13, 2) => fixed(7, K::BinaryCommandEvent { time: T }),
        // Counters (v3, v4, v7, v8: obsolete delta counters, same layout).
        (20, 1 | 3) => counter(5, U32, F, N),
        (20, 2 | 4) => counter(3, U16, F, N),
        (20, 5 | 7) => counter(4, U32, N, N),
        (20, 6 | 8) => counter(2, U16, N, N),
        // Frozen counters.
        (21, 1 | 3) => counter(5, U32, F, N),
        (21, 2 | 4) => counter(3, U16, F, N),
        (21, 5 | 7) => counter(11, U32, F, T),
        (21, 6 | 8) => counter(9, U16, F, T),
        (21, 9 | 11) => counter(4, U32, N, N),
        (21, 10 | 12) => counter(2, U16, N, N),
        // Counter events, frozen counter events.
        (22 | 23, 1 | 3) => counter(5, U32, F, N),
        (22 | 23, 2 | 4) => counter(3, U16, F, N),
        (22 | 23, 5 | 7) => counter(11, U32, F, T),
        (22 | 23, 6 | 8) => counter(9, U16, F, T),
        // Analog inputs.
        (30, 1) => analog(5, I32, F, N),
        (30, 2) => analog(3, I16, F, N),
        (30, 3) => analog(4, I32, N, N),
        (30, 4) => analog(2, I16, N, N),
        (30, 5) => analog(5, F32, F, N),
        (30, 6) => analog(9, F64, F, N),
        // Frozen analog inputs.
        (31, 1) => analog(5, I32, F, N),
        (31, 2) => analog(3, I16, F, N),
        (31, 3) => analog(11, I32, F, T),
        (31, 4) => analog(9, I16, F, T),
        (31, 5) => analog(4, I32, N, N),
        (31, 6) => analog(2, I16, N, N),
        (31, 7) => analog(5, F32, F, N),
        (31, 8) => analog(9, F64, F, N),
        // Analog input events, frozen analog input events, analog output events.
        (32 | 33 | 42, 1) => analog(5, I32, F, N),
        (32 | 33 | 42, 2) => analog(3, I16, F, N),
        (32 | 33 | 42, 3) => analog(11, I32, F, T),
        (32 | 33 | 42, 4) => analog(9, I16, F, T),
        (32 | 33 | 42, 5) => analog(5, F32, F, N),
        (32 | 33 | 42, 6) => analog(9, F64, F, N),
        (32 | 33 | 42, 7) => analog(11, F32, F, T),
        (32 | 33 | 42, 8) => analog(15, F64, F, T),
        // Analog input deadbands.
        (34, 1) => fixed(2, K::Deadband { num: U16 }),
        (34, 2) => fixed(4, K::Deadband { num: U32 }),
        (34, 3) => fixed(4, K::Deadband { num: F32 }),
        // Analog output status.
        (40, 1) => analog(5, I32, F, N),
        (40, 2) => analog(3, I16, F, N),
        (40, 3) => analog(5, F32, F, N),
        (40, 4) => analog(9, F64, F, N),
        // Analog output blocks (commands).
        (41, 1) => fixed(5, K::AnalogOutputBlock { num: I32 }),
        (41, 2) => fixed(3, K::AnalogOutputBlock { num: I16 }),
        (41, 3) => fixed(5, K::AnalogOutputBlock { num: F32 }),
        (41, 4) => fixed(9, K::AnalogOutputBlock { num: F64 }),
        // Analog output command events.
        (43, 1) => fixed(5, K::AnalogCommandEvent { num: I32, time: N }),
        (43, 2) => fixed(3, K::AnalogCommandEvent { num: I16, time: N }),
        (43, 3) => fixed(11, K::AnalogCommandEvent { num: I32, time: T }),
        (43, 4) => fixed(9, K::AnalogCommandEvent { num: I16, time: T }),
        (43, 5) => fixed(5, K::AnalogCommandEvent { num: F32, time: N }),
        (43, 6) => fixed(9, K::AnalogCommandEvent { num: F64, time: N }),
        (43, 7) => fixed(11, K::AnalogCommandEvent { num: F32, time: T }),
        (43, 8) => fixed(15, K::AnalogCommandEvent { num: F64, time: T }),
        // Time and date, common time of occurrence, time delay.
        (50, 1 | 3) => fixed(6, K::Time),
        (50, 2) => fixed(10, K::TimeAndInterval),
        (50, 4) => fixed(11, K::IndexedTime),
        (51, 1) => fixed(6, K::Cto { synchronized: T }),
        (51, 2) => fixed(6, K::Cto { synchronized: N }),
        (52, 1) => fixed(2, K::TimeDelay { unit_ms: 1000 }),
        (52, 2) => fixed(2, K::TimeDelay { unit_ms: 1 }),
        // Class data.
        (60, 1..=4) => t(ObjectSize::NoData, K::ClassData),
        // File transfer (v1, file identifier, is obsolete).
        (70, 1) => prefixed(0, K::Raw),
        (70, 2) => prefixed(12, K::FileAuthentication),
        (70, 3) => prefixed(26, K::FileCommand),
        (70, 4) => prefixed(13, K::FileCommandStatus),
        (70, 5) => prefixed(8, K::FileTransport),
        (70, 6) => prefixed(9, K::FileTransportStatus),
        (70, 7) => prefixed(20, K::FileDescriptor),
        (70, 8) => prefixed(0, K::FileSpec),
        // Internal indications, as packed bits (written to clear DEVICE_RESTART).
        (80, 1) => t(PACKED_1, BINARY),
        // Device storage, device profile, private registration objects.
        (81, 1) => fixed(3, K::Raw),
        (82, 1) | (83, 1 | 2) => prefixed(0, K::Raw),
        // Data sets: prototype, descriptor, characteristics, point index attributes, present
        // value, snapshot.
        (85, 1) | (86, 1 | 3) | (87, 1) | (88, 1) => prefixed(0, K::Raw),
        (86, 2) => fixed(1, K::Raw),
        // Application identifier, status of requested operation.
        (90, 1) | (91, 1) => prefixed(0, K::Raw),
        // BCD, unsigned 8-bit integer.
        (101, 1) => fixed(2, K::Raw),
        (101, 2) => fixed(4, K::Raw),
        (101, 3) => fixed(8, K::Raw),
        (102, 1) => fixed(1, K::Raw),
        // Octet strings and virtual terminal: the variation is the length.
        (110 | 111, 1..=255) => t(ObjectSize::VariationIsLength, K::OctetString),
        (112 | 113, 1..=255) => t(ObjectSize::VariationIsLength, K::VirtualTerminal),
        // Secure authentication v5: aggressive mode request (v3: challenge sequence number
        // and user), session key status request (v4: user), the rest variable.
        (120, 3) => fixed(6, K::Raw),
        (120, 4) => fixed(2, K::Raw),
        (120, 1 | 2 | 5..=15) => prefixed(0, K::Raw),
        // Security statistics and their events.
        (121, 1) | (122, 1) => fixed(7, K::Raw),
        (122, 2) => fixed(13, K::Raw),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_sizes_agree_with_the_value_layouts() {
        let mut entries = 0;
        for group in 0..=u8::MAX {
            for variation in 0..=u8::MAX {
                let Some(ty) = object_type(group, variation) else {
                    continue;
                };
                entries += 1;
                match ty.size {
                    ObjectSize::Fixed(len) => {
                        if ty.kind != ValueKind::Raw {
                            assert_eq!(
                                ty.kind.fixed_len(),
                                Some(usize::from(len)),
                                "g{group}v{variation}"
                            );
                        }
                        assert!(len > 0, "g{group}v{variation}");
                    }
                    ObjectSize::Packed { bits } => {
                        assert!(bits == 1 || bits == 2);
                        let expected = if bits == 1 { "binary" } else { "double" };
                        let kind = match ty.kind {
                            ValueKind::Binary {
                                time: TimeField::None,
                            } => "binary",
                            ValueKind::DoubleBit {
                                time: TimeField::None,
                            } => "double",
                            other => panic!("g{group}v{variation} packed as {other:?}"),
                        };
                        assert_eq!(kind, expected, "g{group}v{variation}");
                    }
                    ObjectSize::Prefixed { .. }
                    | ObjectSize::VariationIsLength
                    | ObjectSize::Attribute => {
                        assert_eq!(ty.kind.fixed_len(), None, "g{group}v{variation}");
                    }
                    ObjectSize::NoData => assert_eq!(ty.kind, ValueKind::ClassData),
                }
            }
        }
        // g0 and g110-113 contribute 255 variations each.
        assert!(entries > 5 * 255 + 150, "{entries}");
    }

    #[test]
    fn spot_checks() {
        assert_eq!(
            object_type(30, 1).map(|t| t.size),
            Some(ObjectSize::Fixed(5))
        );
        assert_eq!(
            object_type(12, 1).map(|t| t.size),
            Some(ObjectSize::Fixed(11))
        );
        assert_eq!(
            object_type(32, 8).map(|t| t.size),
            Some(ObjectSize::Fixed(15))
        );
        assert_eq!(
            object_type(1, 1).map(|t| t.size),
            Some(ObjectSize::Packed { bits: 1 })
        );
        assert_eq!(
            object_type(3, 1).map(|t| t.size),
            Some(ObjectSize::Packed { bits: 2 })
        );
        assert_eq!(object_type(60, 3).map(|t| t.size), Some(ObjectSize::NoData));
        assert_eq!(
            object_type(110, 12).map(|t| t.size),
            Some(ObjectSize::VariationIsLength)
        );
        assert_eq!(
            object_type(70, 3).map(|t| t.size),
            Some(ObjectSize::Prefixed { min: 26 })
        );
        // Variation 0 ("any") and undefined objects have no size.
        for (group, variation) in [(1, 0), (30, 0), (110, 0), (60, 5), (127, 1), (255, 255)] {
            assert_eq!(object_type(group, variation), None, "g{group}v{variation}");
        }
    }
}
