//! Points: the objects of one header, decoded by the value kind of the one table.

use core::iter::FusedIterator;

use super::objects::{split_item, Items, PrefixCode};
use super::table::{NumKind, ObjectSize, ObjectType, TimeField, ValueKind};
use super::{le, le_u16, le_u32, le_u48, CommandStatus, ControlCode, DoubleBitState, Flags};

/// A number as sent, in its own representation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AnalogValue {
    I16(i16),
    I32(i32),
    U16(u16),
    U32(u32),
    F32(f32),
    F64(f64),
}

impl AnalogValue {
    /// The value as a double: exact for every representation.
    pub fn as_f64(&self) -> f64 {
        match *self {
            Self::I16(v) => f64::from(v),
            Self::I32(v) => f64::from(v),
            Self::U16(v) => f64::from(v),
            Self::U32(v) => f64::from(v),
            Self::F32(v) => f64::from(v),
            Self::F64(v) => v,
        }
    }

    fn read(num: NumKind, bytes: &[u8], at: usize) -> Option<Self> {
        Some(match num {
            NumKind::I16 => Self::I16(i16::from_le_bytes(le(bytes, at)?)),
            NumKind::I32 => Self::I32(i32::from_le_bytes(le(bytes, at)?)),
            NumKind::U16 => Self::U16(u16::from_le_bytes(le(bytes, at)?)),
            NumKind::U32 => Self::U32(u32::from_le_bytes(le(bytes, at)?)),
            NumKind::F32 => Self::F32(f32::from_le_bytes(le(bytes, at)?)),
            NumKind::F64 => Self::F64(f64::from_le_bytes(le(bytes, at)?)),
        })
    }
}

/// Control relay output block, g12v1 (and pattern control block, g12v2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Crob {
    pub control: ControlCode,
    /// Times to repeat the operation.
    pub count: u8,
    pub on_time_ms: u32,
    pub off_time_ms: u32,
    pub status: CommandStatus,
}

/// g70v2: authentication of a file transfer session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileAuthentication<'a> {
    pub auth_key: u32,
    pub username: &'a [u8],
    /// Sent in clear: worth an alert on its own.
    pub password: &'a [u8],
}

/// g70v3: open or delete a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileCommand<'a> {
    pub name: &'a [u8],
    pub created_ms: u64,
    pub permissions: u16,
    pub auth_key: u32,
    pub file_size: u32,
    /// 0 null (delete), 1 read, 2 write, 3 append.
    pub mode: u16,
    pub max_block_size: u16,
    pub request_id: u16,
}

/// g70v4: outcome of a file command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileCommandStatus<'a> {
    pub handle: u32,
    pub file_size: u32,
    pub max_block_size: u16,
    pub request_id: u16,
    pub status: u8,
    pub text: &'a [u8],
}

/// g70v5: a block of file data (empty in the read request that asks for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileTransport<'a> {
    pub handle: u32,
    /// Block number without the last-block bit.
    pub block: u32,
    pub last: bool,
    pub data: &'a [u8],
}

/// g70v6: outcome of a file block write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileTransportStatus<'a> {
    pub handle: u32,
    pub block: u32,
    pub last: bool,
    pub status: u8,
    pub text: &'a [u8],
}

/// g70v7: a file's description (get file info, or a directory listing entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileDescriptor<'a> {
    pub name: &'a [u8],
    /// 0 directory, 1 simple file.
    pub file_type: u16,
    pub file_size: u32,
    pub created_ms: u64,
    pub permissions: u16,
    pub request_id: u16,
}

/// The value of one object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PointValue<'a> {
    /// Named by an index prefix in a request that carries no values (read, freeze, assign
    /// class, enable/disable unsolicited).
    IndexOnly,
    /// g1, g2, g10, g11, and g12v3 / g80v1 as packed bits; `flags` absent when packed.
    Binary {
        flags: Option<Flags>,
        state: bool,
    },
    /// g3, g4.
    DoubleBit {
        flags: Option<Flags>,
        state: DoubleBitState,
    },
    /// g13.
    BinaryCommandEvent {
        state: bool,
        status: CommandStatus,
    },
    /// g12v1, g12v2.
    Crob(Crob),
    /// g20-g23; 16-bit variations widened.
    Counter {
        flags: Option<Flags>,
        value: u32,
    },
    /// g30-g33, g40, g42.
    Analog {
        flags: Option<Flags>,
        value: AnalogValue,
    },
    /// g41 (command), g43 (command event).
    AnalogOutput {
        value: AnalogValue,
        status: CommandStatus,
    },
    /// g34.
    Deadband {
        value: AnalogValue,
    },
    /// g50v1, g50v3: milliseconds since 1970 UTC.
    Time {
        ms: u64,
    },
    /// g50v2.
    TimeAndInterval {
        ms: u64,
        interval_ms: u32,
    },
    /// g50v4.
    IndexedTime {
        ms: u64,
        interval_count: u32,
        interval_units: u8,
    },
    /// g51: the common time of occurrence of the relative times that follow.
    Cto {
        ms: u64,
        synchronized: bool,
    },
    /// g52: how long the outstation will be away (the answer to a restart) or the delay
    /// measured (delay measurement).
    TimeDelay {
        ms: u32,
    },
    /// g0: the variation names the attribute.
    DeviceAttribute {
        data_type: u8,
        value: &'a [u8],
    },
    /// g110, g111.
    OctetString(&'a [u8]),
    /// g112, g113.
    VirtualTerminal(&'a [u8]),
    FileAuthentication(FileAuthentication<'a>),
    FileCommand(FileCommand<'a>),
    FileCommandStatus(FileCommandStatus<'a>),
    FileTransport(FileTransport<'a>),
    FileTransportStatus(FileTransportStatus<'a>),
    FileDescriptor(FileDescriptor<'a>),
    /// g70v8.
    FileSpec(&'a [u8]),
    /// Anything else: the object's octets.
    Raw(&'a [u8]),
}

/// When a point's value was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timestamp {
    /// Milliseconds since 1970 UTC.
    Absolute(u64),
    /// Milliseconds after the common time of occurrence (g51) that precedes it in the
    /// fragment, when there was one.
    Relative { offset_ms: u16, cto_ms: Option<u64> },
}

impl Timestamp {
    /// Milliseconds since 1970 UTC, when known.
    pub fn absolute_ms(&self) -> Option<u64> {
        match *self {
            Self::Absolute(ms) => Some(ms),
            Self::Relative { offset_ms, cto_ms } => {
                cto_ms.map(|cto| cto.saturating_add(u64::from(offset_ms)))
            }
        }
    }
}

/// One object of a header.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point<'a> {
    /// From the index prefix; else the range start plus the position; else the position.
    pub index: u32,
    pub value: PointValue<'a>,
    pub time: Option<Timestamp>,
}

/// Iterator over the objects of one [`super::Object`].
#[derive(Debug, Clone)]
pub struct Points<'a> {
    items: Items,
    prefix: PrefixCode,
    object_type: Option<ObjectType>,
    /// Packed: all the packed octets; otherwise the objects not yet walked.
    rest: &'a [u8],
    position: u32,
    count: u32,
    start: u32,
    cto: Option<u64>,
}

impl<'a> Points<'a> {
    pub(super) fn new(
        items: Items,
        prefix: PrefixCode,
        object_type: Option<ObjectType>,
        data: &'a [u8],
        count: u32,
        start: u32,
        cto: Option<u64>,
    ) -> Self {
        Self {
            items,
            prefix,
            object_type,
            rest: data,
            position: 0,
            count,
            start,
            cto,
        }
    }

    fn index(&self, prefix_value: u32) -> u32 {
        if self.prefix.is_index() {
            prefix_value
        } else {
            self.start.saturating_add(self.position)
        }
    }
}

impl<'a> Iterator for Points<'a> {
    type Item = Point<'a>;

    fn next(&mut self) -> Option<Point<'a>> {
        if self.position >= self.count {
            return None;
        }
        let point = match self.items {
            Items::Nothing => None,
            Items::Packed { bits } => {
                let bit = u64::from(self.position) * u64::from(bits);
                let octet = usize::try_from(bit / 8)
                    .ok()
                    .and_then(|at| self.rest.get(at));
                octet.map(|&octet| {
                    let value = (octet >> (bit % 8)) & ((1 << bits) - 1);
                    let value = match bits {
                        2 => PointValue::DoubleBit {
                            flags: None,
                            state: DoubleBitState::from_bits(value),
                        },
                        _ => PointValue::Binary {
                            flags: None,
                            state: value == 1,
                        },
                    };
                    Point {
                        index: self.index(0),
                        value,
                        time: None,
                    }
                })
            }
            items => split_item(items, self.prefix, self.rest).map(|(prefix_value, body, rest)| {
                self.rest = rest;
                let (value, time) = if items == Items::Indices {
                    (PointValue::IndexOnly, None)
                } else {
                    decode_point(self.object_type, body, self.cto)
                        .unwrap_or((PointValue::Raw(body), None))
                };
                Point {
                    index: self.index(prefix_value),
                    value,
                    time,
                }
            }),
        };
        match point {
            Some(point) => {
                self.position += 1;
                Some(point)
            }
            None => {
                // Only for views built over data the walk did not validate.
                self.count = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.count.saturating_sub(self.position)).unwrap_or(usize::MAX);
        (0, Some(left))
    }
}

impl FusedIterator for Points<'_> {}

/// The octets at `offset..offset + len` of `object`, clamped to it: file objects say where
/// their strings are, and a liar must not make us read past the object.
fn clamped(object: &[u8], offset: u16, len: u16) -> &[u8] {
    let start = usize::from(offset).min(object.len());
    let end = start.saturating_add(usize::from(len)).min(object.len());
    object.get(start..end).unwrap_or_default()
}

/// Decodes one object's octets by its table entry. `None` when the octets are too short for
/// the kind (the walk rules that out for objects it accepted).
pub(super) fn decode_point<'a>(
    object_type: Option<ObjectType>,
    b: &'a [u8],
    cto: Option<u64>,
) -> Option<(PointValue<'a>, Option<Timestamp>)> {
    let Some(object_type) = object_type else {
        return Some((PointValue::Raw(b), None));
    };
    if matches!(
        object_type.size,
        ObjectSize::Packed { .. } | ObjectSize::NoData
    ) {
        // Only reachable under a size prefix, which packed objects have no use for.
        return Some((PointValue::Raw(b), None));
    }
    let time_at = |at: usize, field: TimeField| -> Option<Option<Timestamp>> {
        Some(match field {
            TimeField::None => None,
            TimeField::Absolute => Some(Timestamp::Absolute(le_u48(b, at)?)),
            TimeField::Relative => Some(Timestamp::Relative {
                offset_ms: le_u16(b, at)?,
                cto_ms: cto,
            }),
        })
    };
    let absolute = |at: usize, present: bool| {
        time_at(
            at,
            if present {
                TimeField::Absolute
            } else {
                TimeField::None
            },
        )
    };
    let flags = |present: bool| -> Option<Option<Flags>> {
        Some(if present {
            Some(Flags(*b.first()?))
        } else {
            None
        })
    };
    let value = match object_type.kind {
        ValueKind::Binary { time } => {
            let flags = Flags(*b.first()?);
            let value = PointValue::Binary {
                flags: Some(flags),
                state: flags.contains(Flags::STATE),
            };
            return Some((value, time_at(1, time)?));
        }
        ValueKind::DoubleBit { time } => {
            let flags = Flags(*b.first()?);
            let value = PointValue::DoubleBit {
                flags: Some(flags),
                state: DoubleBitState::from_bits(flags.0 >> 6),
            };
            return Some((value, time_at(1, time)?));
        }
        ValueKind::BinaryCommandEvent { time } => {
            let octet = *b.first()?;
            let value = PointValue::BinaryCommandEvent {
                state: octet & 0x80 != 0,
                status: CommandStatus::from_wire(octet),
            };
            return Some((value, absolute(1, time)?));
        }
        ValueKind::Crob => PointValue::Crob(Crob {
            control: ControlCode(*b.first()?),
            count: *b.get(1)?,
            on_time_ms: le_u32(b, 2)?,
            off_time_ms: le_u32(b, 6)?,
            status: CommandStatus::from_wire(*b.get(10)?),
        }),
        ValueKind::Counter {
            num,
            flags: f,
            time,
        } => {
            let at = usize::from(f);
            let value = match AnalogValue::read(num, b, at)? {
                AnalogValue::U16(v) => u32::from(v),
                AnalogValue::U32(v) => v,
                _ => return None,
            };
            let value = PointValue::Counter {
                flags: flags(f)?,
                value,
            };
            return Some((value, absolute(at + num.wire_len(), time)?));
        }
        ValueKind::Analog {
            num,
            flags: f,
            time,
        } => {
            let at = usize::from(f);
            let value = PointValue::Analog {
                flags: flags(f)?,
                value: AnalogValue::read(num, b, at)?,
            };
            return Some((value, absolute(at + num.wire_len(), time)?));
        }
        ValueKind::AnalogOutputBlock { num } => PointValue::AnalogOutput {
            value: AnalogValue::read(num, b, 0)?,
            status: CommandStatus::from_wire(*b.get(num.wire_len())?),
        },
        ValueKind::AnalogCommandEvent { num, time } => {
            let value = PointValue::AnalogOutput {
                value: AnalogValue::read(num, b, 1)?,
                status: CommandStatus::from_wire(*b.first()?),
            };
            return Some((value, absolute(1 + num.wire_len(), time)?));
        }
        ValueKind::Deadband { num } => PointValue::Deadband {
            value: AnalogValue::read(num, b, 0)?,
        },
        ValueKind::Time => PointValue::Time { ms: le_u48(b, 0)? },
        ValueKind::TimeAndInterval => PointValue::TimeAndInterval {
            ms: le_u48(b, 0)?,
            interval_ms: le_u32(b, 6)?,
        },
        ValueKind::IndexedTime => PointValue::IndexedTime {
            ms: le_u48(b, 0)?,
            interval_count: le_u32(b, 6)?,
            interval_units: *b.get(10)?,
        },
        ValueKind::Cto { synchronized } => PointValue::Cto {
            ms: le_u48(b, 0)?,
            synchronized,
        },
        ValueKind::TimeDelay { unit_ms } => PointValue::TimeDelay {
            ms: u32::from(le_u16(b, 0)?) * u32::from(unit_ms),
        },
        ValueKind::ClassData => PointValue::Raw(b),
        ValueKind::DeviceAttribute => {
            let (&data_type, rest) = b.split_first()?;
            let (&len, value) = rest.split_first()?;
            PointValue::DeviceAttribute {
                data_type,
                value: value.get(..usize::from(len))?,
            }
        }
        // The variation is the length, and the walk cut exactly that much (or what a size
        // prefix said).
        ValueKind::OctetString => PointValue::OctetString(b),
        ValueKind::VirtualTerminal => PointValue::VirtualTerminal(b),
        ValueKind::FileAuthentication => PointValue::FileAuthentication(FileAuthentication {
            username: clamped(b, le_u16(b, 0)?, le_u16(b, 2)?),
            password: clamped(b, le_u16(b, 4)?, le_u16(b, 6)?),
            auth_key: le_u32(b, 8)?,
        }),
        ValueKind::FileCommand => PointValue::FileCommand(FileCommand {
            name: clamped(b, le_u16(b, 0)?, le_u16(b, 2)?),
            created_ms: le_u48(b, 4)?,
            permissions: le_u16(b, 10)?,
            auth_key: le_u32(b, 12)?,
            file_size: le_u32(b, 16)?,
            mode: le_u16(b, 20)?,
            max_block_size: le_u16(b, 22)?,
            request_id: le_u16(b, 24)?,
        }),
        ValueKind::FileCommandStatus => PointValue::FileCommandStatus(FileCommandStatus {
            handle: le_u32(b, 0)?,
            file_size: le_u32(b, 4)?,
            max_block_size: le_u16(b, 8)?,
            request_id: le_u16(b, 10)?,
            status: *b.get(12)?,
            text: b.get(13..)?,
        }),
        ValueKind::FileTransport => {
            let block = le_u32(b, 4)?;
            PointValue::FileTransport(FileTransport {
                handle: le_u32(b, 0)?,
                block: block & 0x7FFF_FFFF,
                last: block & 0x8000_0000 != 0,
                data: b.get(8..)?,
            })
        }
        ValueKind::FileTransportStatus => {
            let block = le_u32(b, 4)?;
            PointValue::FileTransportStatus(FileTransportStatus {
                handle: le_u32(b, 0)?,
                block: block & 0x7FFF_FFFF,
                last: block & 0x8000_0000 != 0,
                status: *b.get(8)?,
                text: b.get(9..)?,
            })
        }
        ValueKind::FileDescriptor => PointValue::FileDescriptor(FileDescriptor {
            name: clamped(b, le_u16(b, 0)?, le_u16(b, 2)?),
            file_type: le_u16(b, 4)?,
            file_size: le_u32(b, 6)?,
            created_ms: le_u48(b, 10)?,
            permissions: le_u16(b, 16)?,
            request_id: le_u16(b, 18)?,
        }),
        ValueKind::FileSpec => PointValue::FileSpec(b),
        ValueKind::Raw => PointValue::Raw(b),
    };
    Some((value, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dnp3::testutil::hex;
    use crate::dnp3::{object_type, parse_app_fragment};

    /// Decodes one object's octets the way a walk would.
    fn decode(group: u8, variation: u8, octets: &[u8]) -> (PointValue<'_>, Option<Timestamp>) {
        decode_point(object_type(group, variation), octets, Some(1_000))
            .unwrap_or_else(|| panic!("g{group}v{variation} {octets:02x?}"))
    }

    fn analog(flags: Option<u8>, value: AnalogValue) -> PointValue<'static> {
        PointValue::Analog {
            flags: flags.map(Flags),
            value,
        }
    }

    #[test]
    fn real_event_objects() {
        // suricata-verify dnp3-eve input.pcap frame 28: unsolicited counter event g22v1,
        // index 0, flags 0x01, value 0.
        let counter: [u8; 16] = hex("f1820000160128010000000100000000");
        // Frame 88: double-bit event g4v1, index 0, flags 0x41 (online, state 01 = off).
        let double: [u8; 12] = hex("f98200000401280100000041");
        // Frame 115: g32v7 (float with time), index 0, flags 0x01, 0.0 at the epoch (tshark:
        // "Value: 0, Timestamp: Jan 1, 1970").
        let float: [u8; 22] = hex("fd820000200728010000000100000000000000000000");
        fn first_point(fragment: &[u8]) -> Point<'_> {
            let app = parse_app_fragment(fragment).unwrap();
            let object = app.objects().next().unwrap().unwrap();
            object.points().next().unwrap()
        }
        let p = first_point(&counter);
        assert_eq!(
            (p.index, p.value, p.time),
            (
                0,
                PointValue::Counter {
                    flags: Some(Flags(0x01)),
                    value: 0
                },
                None
            )
        );
        let p = first_point(&double);
        assert_eq!(
            p.value,
            PointValue::DoubleBit {
                flags: Some(Flags(0x41)),
                state: DoubleBitState::Off
            }
        );
        let p = first_point(&float);
        assert_eq!(p.value, analog(Some(0x01), AnalogValue::F32(0.0)));
        assert_eq!(p.time, Some(Timestamp::Absolute(0)));
    }

    #[test]
    fn binary_events_with_absolute_time() {
        // dnp3_example.pcap frame 422 (CISA ICSNPP trace): unsolicited g2v2, qualifier 0x17,
        // 20 events; the first is point 4, on, at Mar 10, 2020 13:57:04.043 UTC (tshark).
        let fragment: [u8; 168] = hex(concat!(
            "f3820000020217140481ab0fbcc470010581ad0fbcc4700106810a10bcc470010181f010bcc47001038154",
            "11bcc4700102815611bcc4700104010917bcc4700106010b17bcc4700105013a18bcc4700100011e19bc",
            "c470010101e819bcc470010201ae1abcc4700103010e1bbcc470010681e21ebcc470010481e61ebcc47001",
            "0581e81ebcc4700100812a20bcc4700101813020bcc4700102813120bcc4700103818b20bcc47001"
        ));
        let app = parse_app_fragment(&fragment).unwrap();
        let object = app.objects().next().unwrap().unwrap();
        let events: Vec<Point<'_>> = object.points().collect();
        assert_eq!(events.len(), 20);
        assert_eq!(events[0].index, 4);
        assert_eq!(
            events[0].value,
            PointValue::Binary {
                flags: Some(Flags(0x81)),
                state: true
            }
        );
        assert_eq!(events[0].time, Some(Timestamp::Absolute(1_583_848_624_043)));
        assert_eq!(events[1].time, Some(Timestamp::Absolute(1_583_848_624_045)));
        assert_eq!(events[19].index, 3);
    }

    #[test]
    fn every_value_kind_decodes() {
        use AnalogValue::{F32, F64, I16, I32, U16, U32};
        let t = |ms: u64| Some(Timestamp::Absolute(ms));
        let time = hex::<6>("e80300000000"); // 1000 ms
        type Case = (u8, u8, Vec<u8>, PointValue<'static>, Option<Timestamp>);
        let cases: Vec<Case> = vec![
            (
                1,
                2,
                vec![0x81],
                PointValue::Binary {
                    flags: Some(Flags(0x81)),
                    state: true,
                },
                None,
            ),
            (
                2,
                1,
                vec![0x01],
                PointValue::Binary {
                    flags: Some(Flags(0x01)),
                    state: false,
                },
                None,
            ),
            (
                2,
                3,
                vec![0x81, 0x05, 0x00],
                PointValue::Binary {
                    flags: Some(Flags(0x81)),
                    state: true,
                },
                Some(Timestamp::Relative {
                    offset_ms: 5,
                    cto_ms: Some(1_000),
                }),
            ),
            (
                3,
                2,
                vec![0x81],
                PointValue::DoubleBit {
                    flags: Some(Flags(0x81)),
                    state: DoubleBitState::On,
                },
                None,
            ),
            (
                4,
                2,
                [&[0xC1][..], &time].concat(),
                PointValue::DoubleBit {
                    flags: Some(Flags(0xC1)),
                    state: DoubleBitState::Indeterminate,
                },
                t(1000),
            ),
            (
                11,
                2,
                [&[0x01][..], &time].concat(),
                PointValue::Binary {
                    flags: Some(Flags(1)),
                    state: false,
                },
                t(1000),
            ),
            (
                13,
                2,
                [&[0x84][..], &time].concat(),
                PointValue::BinaryCommandEvent {
                    state: true,
                    status: CommandStatus::NOT_SUPPORTED,
                },
                t(1000),
            ),
            (
                20,
                1,
                vec![0x01, 0x10, 0x27, 0, 0],
                PointValue::Counter {
                    flags: Some(Flags(1)),
                    value: 10_000,
                },
                None,
            ),
            (
                20,
                2,
                vec![0x01, 0xFF, 0xFF],
                PointValue::Counter {
                    flags: Some(Flags(1)),
                    value: 65_535,
                },
                None,
            ),
            (
                20,
                5,
                vec![0xFF, 0xFF, 0xFF, 0xFF],
                PointValue::Counter {
                    flags: None,
                    value: u32::MAX,
                },
                None,
            ),
            (
                20,
                6,
                vec![0x02, 0x00],
                PointValue::Counter {
                    flags: None,
                    value: 2,
                },
                None,
            ),
            (
                21,
                5,
                [&[0x01, 7, 0, 0, 0][..], &time].concat(),
                PointValue::Counter {
                    flags: Some(Flags(1)),
                    value: 7,
                },
                t(1000),
            ),
            (
                21,
                10,
                vec![0x09, 0x00],
                PointValue::Counter {
                    flags: None,
                    value: 9,
                },
                None,
            ),
            (
                23,
                6,
                [&[0x01, 8, 0][..], &time].concat(),
                PointValue::Counter {
                    flags: Some(Flags(1)),
                    value: 8,
                },
                t(1000),
            ),
            (
                30,
                2,
                vec![0x01, 0xFE, 0xFF],
                analog(Some(1), I16(-2)),
                None,
            ),
            (
                30,
                3,
                vec![0x00, 0x00, 0x00, 0x80],
                analog(None, I32(i32::MIN)),
                None,
            ),
            (30, 4, vec![0x05, 0x00], analog(None, I16(5)), None),
            (
                30,
                5,
                [&[0x01][..], &1.5f32.to_le_bytes()].concat(),
                analog(Some(1), F32(1.5)),
                None,
            ),
            (
                30,
                6,
                [&[0x21][..], &(-2.25f64).to_le_bytes()].concat(),
                analog(Some(0x21), F64(-2.25)),
                None,
            ),
            (
                31,
                3,
                [&[0x01, 1, 0, 0, 0][..], &time].concat(),
                analog(Some(1), I32(1)),
                t(1000),
            ),
            (
                32,
                4,
                [&[0x01, 2, 0][..], &time].concat(),
                analog(Some(1), I16(2)),
                t(1000),
            ),
            (
                33,
                8,
                [&[0x01][..], &0.5f64.to_le_bytes(), &time].concat(),
                analog(Some(1), F64(0.5)),
                t(1000),
            ),
            (
                34,
                1,
                vec![0x0A, 0x00],
                PointValue::Deadband { value: U16(10) },
                None,
            ),
            (
                34,
                2,
                vec![0x0A, 0, 0, 0],
                PointValue::Deadband { value: U32(10) },
                None,
            ),
            (
                34,
                3,
                0.25f32.to_le_bytes().to_vec(),
                PointValue::Deadband { value: F32(0.25) },
                None,
            ),
            (40, 1, vec![0x01, 3, 0, 0, 0], analog(Some(1), I32(3)), None),
            (
                40,
                4,
                [&[0x01][..], &4.0f64.to_le_bytes()].concat(),
                analog(Some(1), F64(4.0)),
                None,
            ),
            (
                42,
                7,
                [&[0x01][..], &2.0f32.to_le_bytes(), &time].concat(),
                analog(Some(1), F32(2.0)),
                t(1000),
            ),
            (
                43,
                3,
                [&[0x00, 0x10, 0, 0, 0][..], &time].concat(),
                PointValue::AnalogOutput {
                    value: I32(16),
                    status: CommandStatus::SUCCESS,
                },
                t(1000),
            ),
            (
                43,
                6,
                [&[0x02][..], &8.0f64.to_le_bytes()].concat(),
                PointValue::AnalogOutput {
                    value: F64(8.0),
                    status: CommandStatus::NO_SELECT,
                },
                None,
            ),
            (50, 3, time.to_vec(), PointValue::Time { ms: 1000 }, None),
            (
                50,
                2,
                [&time[..], &[0x60, 0xEA, 0, 0]].concat(),
                PointValue::TimeAndInterval {
                    ms: 1000,
                    interval_ms: 60_000,
                },
                None,
            ),
            (
                50,
                4,
                [&time[..], &[0x0F, 0, 0, 0, 0x05]].concat(),
                PointValue::IndexedTime {
                    ms: 1000,
                    interval_count: 15,
                    interval_units: 5,
                },
                None,
            ),
            (
                51,
                2,
                time.to_vec(),
                PointValue::Cto {
                    ms: 1000,
                    synchronized: false,
                },
                None,
            ),
            (
                110,
                3,
                b"abc".to_vec(),
                PointValue::OctetString(b"abc"),
                None,
            ),
            (111, 1, b"z".to_vec(), PointValue::OctetString(b"z"), None),
            (
                112,
                2,
                b"ls".to_vec(),
                PointValue::VirtualTerminal(b"ls"),
                None,
            ),
            (
                113,
                2,
                b"ok".to_vec(),
                PointValue::VirtualTerminal(b"ok"),
                None,
            ),
            (70, 8, b"/etc".to_vec(), PointValue::FileSpec(b"/etc"), None),
            (
                101,
                1,
                vec![0x12, 0x34],
                PointValue::Raw(&[0x12, 0x34]),
                None,
            ),
            (
                120,
                4,
                vec![0x01, 0x00],
                PointValue::Raw(&[0x01, 0x00]),
                None,
            ),
        ];
        for (group, variation, octets, value, time) in &cases {
            assert_eq!(
                decode(*group, *variation, octets),
                (*value, *time),
                "g{group}v{variation}"
            );
            if let Some(ObjectType {
                size: ObjectSize::Fixed(len),
                ..
            }) = object_type(*group, *variation)
            {
                assert_eq!(usize::from(len), octets.len(), "g{group}v{variation}");
            }
        }
    }

    #[test]
    fn file_descriptor_and_authentication() {
        // g70v7 as in a directory listing: name at offset 20, 3 octets, a simple file of 4096
        // octets, created at 1000 ms, permissions 0o644, request 9.
        let mut descriptor = vec![20, 0, 3, 0, 1, 0, 0x00, 0x10, 0, 0];
        descriptor.extend_from_slice(&hex::<6>("e80300000000"));
        descriptor.extend_from_slice(&[0xA4, 0x01, 9, 0]);
        descriptor.extend_from_slice(b"log");
        assert_eq!(
            decode(70, 7, &descriptor).0,
            PointValue::FileDescriptor(FileDescriptor {
                name: b"log",
                file_type: 1,
                file_size: 4096,
                created_ms: 1000,
                permissions: 0o644,
                request_id: 9,
            })
        );
        // g70v2: user "op" at 12, password "pw" at 14, key 0.
        let auth = [12, 0, 2, 0, 14, 0, 2, 0, 0, 0, 0, 0, b'o', b'p', b'p', b'w'];
        assert_eq!(
            decode(70, 2, &auth).0,
            PointValue::FileAuthentication(FileAuthentication {
                auth_key: 0,
                username: b"op",
                password: b"pw",
            })
        );
        // Offsets that point outside the object are clamped, never followed.
        let liar = [
            200, 0, 2, 0, 14, 0, 250, 0, 0, 0, 0, 0, b'o', b'p', b'p', b'w',
        ];
        assert_eq!(
            decode(70, 2, &liar).0,
            PointValue::FileAuthentication(FileAuthentication {
                auth_key: 0,
                username: b"",
                password: b"pw",
            })
        );
    }

    #[test]
    fn short_octets_are_refused_not_read_past() {
        assert_eq!(decode_point(object_type(30, 1), &[0x01, 0x02], None), None);
        assert_eq!(decode_point(object_type(70, 4), &[0; 12], None), None);
        assert_eq!(
            decode_point(object_type(0, 5), &[0x02, 0x04, 0x01], None),
            None
        );
        // Unknown objects are raw, whatever their length.
        assert_eq!(
            decode_point(None, &[1, 2, 3], None),
            Some((PointValue::Raw(&[1, 2, 3]), None))
        );
        assert_eq!(AnalogValue::U32(7).as_f64(), 7.0);
        assert_eq!(
            Timestamp::Relative {
                offset_ms: 3,
                cto_ms: None
            }
            .absolute_ms(),
            None
        );
    }
}
