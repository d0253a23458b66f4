//! Object headers (§4.2.2.7; qualifier §4.2.2.7.3): group, variation, qualifier, range; and the validating walk over
//! the headers of a fragment.
//!
//! The qualifier's prefix code (bits 6-4) says what precedes each object: nothing, a 1/2/4-octet
//! index, or a 1/2/4-octet object size. Its range specifier (bits 3-0) says what the range
//! field holds: 1/2/4-octet start and stop indices (0-2), the same as virtual addresses (3-5),
//! nothing, meaning all objects (6), a 1/2/4-octet count (7-9), or a 1-octet count of
//! free-format objects (0xB). Codes 0xA and 0xC-0xF, prefix 7 and bit 7 are reserved. Prefix
//! and range combine mechanically: every combination of defined codes is read the same way,
//! including ones no profile uses (e.g. 0x11, an index prefix before each of a start-stop range
//! of objects).
//!
//! Whether objects carry data depends on the function (a read only names points) and on the
//! prefix (an object size prefix always has data after it); how much data, on the one table
//! ([`object_type`]). An object whose data must be skipped but whose size is unknown stops the
//! walk with [`ObjectError::UnknownObject`]: nothing after it can be found.

use core::fmt;
use core::iter::FusedIterator;

use super::field;
use super::points::{Point, PointValue, Points};
use super::table::{object_type, ObjectSize, ObjectType};
use super::{le_u16, le_u32, AppFunction};

/// Qualifier octet of an object header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Qualifier(pub u8);

impl Qualifier {
    /// Bit 7: reserved, always 0.
    pub const RESERVED: u8 = 0x80;
    /// Range specifier 0xB: a 1-octet count of free-format objects, each with a size prefix.
    pub const FREE_FORMAT: u8 = 0x0B;

    /// Object prefix code, bits 6-4 (0..=7).
    pub const fn prefix_code(&self) -> u8 {
        (self.0 >> 4) & 0x07
    }

    /// Range specifier code, bits 3-0.
    pub const fn range_code(&self) -> u8 {
        self.0 & 0x0F
    }

    /// The prefix, `None` for the reserved code 7 or with reserved bit 7 set.
    pub const fn prefix(&self) -> Option<PrefixCode> {
        if self.0 & Self::RESERVED != 0 {
            return None;
        }
        Some(match self.prefix_code() {
            0 => PrefixCode::None,
            1 => PrefixCode::Index1,
            2 => PrefixCode::Index2,
            3 => PrefixCode::Index4,
            4 => PrefixCode::Size1,
            5 => PrefixCode::Size2,
            6 => PrefixCode::Size4,
            _ => return None,
        })
    }

    /// Octets of the range field, `None` for the reserved range codes.
    pub const fn range_len(&self) -> Option<usize> {
        Some(match self.range_code() {
            0 | 3 => 2,
            1 | 4 => 4,
            2 | 5 => 8,
            6 => 0,
            7 | 0x0B => 1,
            8 => 2,
            9 => 4,
            _ => return None,
        })
    }

    /// Every field has a defined meaning.
    pub const fn is_defined(&self) -> bool {
        self.prefix().is_some() && self.range_len().is_some()
    }

    /// Reads the range field (exactly [`Self::range_len`] octets).
    fn read_range(&self, bytes: &[u8]) -> Option<Range> {
        let uint = |at: usize, width: usize| -> Option<u32> {
            match width {
                1 => bytes.get(at).copied().map(u32::from),
                2 => le_u16(bytes, at).map(u32::from),
                _ => le_u32(bytes, at),
            }
        };
        let code = self.range_code();
        Some(match code {
            0..=5 => {
                let width = 1 << (code % 3);
                let (start, stop) = (uint(0, width)?, uint(width, width)?);
                if code < 3 {
                    Range::StartStop { start, stop }
                } else {
                    Range::VirtualStartStop { start, stop }
                }
            }
            6 => Range::All,
            7 | 0x0B => Range::Count(uint(0, 1)?),
            8 => Range::Count(uint(0, 2)?),
            9 => Range::Count(uint(0, 4)?),
            _ => return None,
        })
    }
}

impl fmt::Display for Qualifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#04x}", self.0)
    }
}

/// What precedes each object, by the qualifier's prefix code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrefixCode {
    None,
    Index1,
    Index2,
    Index4,
    Size1,
    Size2,
    Size4,
}

impl PrefixCode {
    /// Octets of the prefix.
    pub const fn width(self) -> usize {
        match self {
            Self::None => 0,
            Self::Index1 | Self::Size1 => 1,
            Self::Index2 | Self::Size2 => 2,
            Self::Index4 | Self::Size4 => 4,
        }
    }

    pub const fn is_index(self) -> bool {
        matches!(self, Self::Index1 | Self::Index2 | Self::Index4)
    }

    pub const fn is_size(self) -> bool {
        matches!(self, Self::Size1 | Self::Size2 | Self::Size4)
    }

    /// Reads the prefix value from exactly its octets.
    pub(super) fn read(self, bytes: &[u8]) -> Option<u32> {
        match self.width() {
            0 => Some(0),
            1 => bytes.first().copied().map(u32::from),
            2 => le_u16(bytes, 0).map(u32::from),
            _ => le_u32(bytes, 0),
        }
    }
}

/// The range field of an object header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Range {
    /// Range codes 0-2: objects `start..=stop`.
    StartStop { start: u32, stop: u32 },
    /// Range codes 3-5: the same, as virtual addresses.
    VirtualStartStop { start: u32, stop: u32 },
    /// Range code 6: all objects of the type, no range field.
    All,
    /// Range codes 7-9 and 0xB: a number of objects.
    Count(u32),
}

impl Range {
    /// Number of objects the range names; `None` for [`Range::All`]. Up to 2^32 for a 4-octet
    /// start-stop range, hence `u64`.
    pub fn count(&self) -> Option<u64> {
        match *self {
            Self::StartStop { start, stop } | Self::VirtualStartStop { start, stop } => {
                Some(u64::from(stop).saturating_sub(u64::from(start)) + 1)
            }
            Self::All => None,
            Self::Count(count) => Some(u64::from(count)),
        }
    }

    /// First index of a start-stop range; objects without an index prefix are numbered from
    /// it. 0 for counts (their objects are numbered by position).
    pub fn start(&self) -> u32 {
        match *self {
            Self::StartStop { start, .. } | Self::VirtualStartStop { start, .. } => start,
            Self::All | Self::Count(_) => 0,
        }
    }
}

/// An object header as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectHeader {
    pub group: u8,
    pub variation: u8,
    pub qualifier: Qualifier,
    pub range: Range,
}

/// Why the walk over a fragment's objects stopped. Offsets are from the start of the
/// fragment (application header included) and point at the object header concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectError {
    /// The fragment ends inside an object header (group, variation, qualifier, range).
    TruncatedHeader { offset: usize },
    /// Reserved qualifier bits or codes: prefix 7, range 0xA or 0xC-0xF, or bit 7.
    InvalidQualifier {
        offset: usize,
        group: u8,
        variation: u8,
        qualifier: Qualifier,
    },
    /// A start-stop range whose stop precedes its start.
    InvalidRange {
        offset: usize,
        group: u8,
        variation: u8,
        start: u32,
        stop: u32,
    },
    /// Data follows but the size of this (group, variation) is unknown.
    UnknownObject {
        group: u8,
        variation: u8,
        offset: usize,
    },
    /// The qualifier cannot carry this object: an index prefix before packed bits, or a
    /// variable-size object without a size prefix.
    QualifierMismatch {
        offset: usize,
        group: u8,
        variation: u8,
        qualifier: Qualifier,
    },
    /// The objects the range announces run past the end of the fragment.
    TruncatedData {
        offset: usize,
        group: u8,
        variation: u8,
    },
    /// An object size prefix smaller than the object's fixed part.
    BadObjectSize {
        offset: usize,
        group: u8,
        variation: u8,
        size: u32,
    },
}

impl ObjectError {
    /// Offset of the object header in the fragment.
    pub const fn offset(&self) -> usize {
        match *self {
            Self::TruncatedHeader { offset }
            | Self::InvalidQualifier { offset, .. }
            | Self::InvalidRange { offset, .. }
            | Self::UnknownObject { offset, .. }
            | Self::QualifierMismatch { offset, .. }
            | Self::TruncatedData { offset, .. }
            | Self::BadObjectSize { offset, .. } => offset,
        }
    }

    /// (group, variation) of the offending header, when it got that far.
    pub const fn object(&self) -> Option<(u8, u8)> {
        match *self {
            Self::TruncatedHeader { .. } => None,
            Self::InvalidQualifier {
                group, variation, ..
            }
            | Self::InvalidRange {
                group, variation, ..
            }
            | Self::UnknownObject {
                group, variation, ..
            }
            | Self::QualifierMismatch {
                group, variation, ..
            }
            | Self::TruncatedData {
                group, variation, ..
            }
            | Self::BadObjectSize {
                group, variation, ..
            } => Some((group, variation)),
        }
    }

    /// snake_case reason, for counters and events.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::TruncatedHeader { .. } => "truncated_object_header",
            Self::InvalidQualifier { .. } => "invalid_qualifier",
            Self::InvalidRange { .. } => "invalid_range",
            Self::UnknownObject { .. } => "unknown_object",
            Self::QualifierMismatch { .. } => "qualifier_mismatch",
            Self::TruncatedData { .. } => "truncated_object_data",
            Self::BadObjectSize { .. } => "bad_object_size",
        }
    }
}

impl fmt::Display for ObjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        if let Some((group, variation)) = self.object() {
            write!(f, " g{group}v{variation}")?;
        }
        match *self {
            Self::InvalidQualifier { qualifier, .. }
            | Self::QualifierMismatch { qualifier, .. } => {
                write!(f, " qualifier {qualifier}")?;
            }
            Self::InvalidRange { start, stop, .. } => write!(f, " start {start} stop {stop}")?,
            Self::BadObjectSize { size, .. } => write!(f, " size {size}")?,
            _ => {}
        }
        write!(f, " at offset {}", self.offset())
    }
}

impl core::error::Error for ObjectError {}

/// How the objects of one header sit on the wire (after the range field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Items {
    /// Nothing: a request that only names points by range, `All`, or class data.
    Nothing,
    /// Only index prefixes: a request that names points by index.
    Indices,
    /// `bits` per object, packed.
    Packed { bits: u8 },
    /// Prefix (if any) and `len` octets per object.
    Fixed { len: usize },
    /// Size prefix, then that many octets.
    Sized,
    /// Prefix (if any), data type, length, value (g0).
    Attribute,
}

/// Splits one object off the front of `bytes`: its prefix value (index or size, 0 without a
/// prefix), its octets, and the rest. `None` if `bytes` ends first or `items` is not
/// object-by-object.
pub(super) fn split_item(
    items: Items,
    prefix: PrefixCode,
    bytes: &[u8],
) -> Option<(u32, &[u8], &[u8])> {
    let (prefix_bytes, rest) = bytes.split_at_checked(prefix.width())?;
    let prefix_value = prefix.read(prefix_bytes)?;
    let len = match items {
        Items::Indices => 0,
        Items::Fixed { len } => len,
        Items::Sized => usize::try_from(prefix_value).ok()?,
        Items::Attribute => 2 + usize::from(*rest.get(1)?),
        Items::Nothing | Items::Packed { .. } => return None,
    };
    let (body, rest) = rest.split_at_checked(len)?;
    Some((prefix_value, body, rest))
}

/// One object header and its objects, validated: walking [`Object::points`] cannot fail.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Object<'a> {
    pub header: ObjectHeader,
    /// Offset of the header in the fragment.
    pub offset: usize,
    /// The table entry for (group, variation), if it has one.
    pub object_type: Option<ObjectType>,
    items: Items,
    prefix: PrefixCode,
    /// Objects on the wire (0 when the header only names a range).
    count: u32,
    /// Exactly the octets of the objects: prefixes and data.
    data: &'a [u8],
    /// The last common time of occurrence (g51) before this header in the fragment.
    cto: Option<u64>,
}

impl<'a> Object<'a> {
    /// Prefixes and data of the objects, as on the wire; empty when there are none.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Octets the header and its objects take in the fragment.
    pub fn wire_len(&self) -> usize {
        let range = self.header.qualifier.range_len().unwrap_or(0);
        field::RANGE + range + self.data.len()
    }

    /// Objects the header names: the range's count, `None` for "all".
    pub fn count(&self) -> Option<u64> {
        self.header.range.count()
    }

    /// Whether objects (data or index prefixes) follow the header on the wire.
    pub fn has_items(&self) -> bool {
        self.items != Items::Nothing
    }

    /// Whether the objects carry values (not just indices).
    pub fn has_values(&self) -> bool {
        !matches!(self.items, Items::Nothing | Items::Indices)
    }

    /// The objects on the wire, one [`Point`] each: nothing for a header that only names a
    /// range (a read of g30v1 0..9), indices with [`PointValue::IndexOnly`] for one that
    /// names points by index, decoded values otherwise.
    pub fn points(&self) -> Points<'a> {
        let count = if self.items == Items::Nothing {
            0
        } else {
            self.count
        };
        Points::new(
            self.items,
            self.prefix,
            self.object_type,
            self.data,
            count,
            self.header.range.start(),
            self.cto,
        )
    }
}

/// Iterator over the object headers of a fragment; yields each validated [`Object`] or the
/// error that stops the walk, after which it yields nothing.
#[derive(Debug, Clone)]
pub struct Objects<'a> {
    function: AppFunction,
    rest: &'a [u8],
    /// Offset of `rest` in the fragment.
    offset: usize,
    cto: Option<u64>,
    done: bool,
}

impl<'a> Objects<'a> {
    /// Objects of a fragment with `function` whose object headers (`bytes`) start at
    /// `offset` in the fragment.
    pub(super) fn new(function: AppFunction, bytes: &'a [u8], offset: usize) -> Self {
        Self {
            function,
            rest: bytes,
            offset,
            cto: None,
            done: false,
        }
    }

    fn parse_one(&mut self) -> Result<Object<'a>, ObjectError> {
        let offset = self.offset;
        let bytes = self.rest;
        let (Some(&group), Some(&variation), Some(&qualifier)) = (
            bytes.get(field::GROUP),
            bytes.get(field::VARIATION),
            bytes.get(field::QUALIFIER),
        ) else {
            return Err(ObjectError::TruncatedHeader { offset });
        };
        let qualifier = Qualifier(qualifier);
        let (Some(prefix), Some(range_len)) = (qualifier.prefix(), qualifier.range_len()) else {
            return Err(ObjectError::InvalidQualifier {
                offset,
                group,
                variation,
                qualifier,
            });
        };
        let data_start = field::RANGE + range_len;
        let (Some(range), Some(after)) = (
            bytes
                .get(field::RANGE..data_start)
                .and_then(|range| qualifier.read_range(range)),
            bytes.get(data_start..),
        ) else {
            return Err(ObjectError::TruncatedHeader { offset });
        };
        if let Range::StartStop { start, stop } | Range::VirtualStartStop { start, stop } = range {
            if stop < start {
                return Err(ObjectError::InvalidRange {
                    offset,
                    group,
                    variation,
                    start,
                    stop,
                });
            }
        }
        let header = ObjectHeader {
            group,
            variation,
            qualifier,
            range,
        };
        let object_type = object_type(group, variation);
        let named = range.count().unwrap_or(0);
        let items = self.items(&header, prefix, object_type, named)?;
        let truncated = ObjectError::TruncatedData {
            offset,
            group,
            variation,
        };
        // Objects on the wire: the range's count, unless there are none at all.
        let count = if items == Items::Nothing {
            0
        } else {
            u32::try_from(named).map_err(|_| truncated)?
        };
        let data_len = match items {
            Items::Nothing => 0,
            Items::Packed { bits } => {
                usize::try_from((u64::from(count) * u64::from(bits)).div_ceil(8))
                    .unwrap_or(usize::MAX)
            }
            Items::Indices | Items::Fixed { .. } => {
                let per = match items {
                    Items::Fixed { len } => len + prefix.width(),
                    _ => prefix.width(),
                };
                let per = u64::try_from(per).unwrap_or(u64::MAX);
                usize::try_from(u64::from(count).saturating_mul(per)).unwrap_or(usize::MAX)
            }
            Items::Sized | Items::Attribute => {
                self.walk_variable(&header, items, prefix, object_type, count, after)?
            }
        };
        let data = after.get(..data_len).ok_or(truncated)?;
        let object = Object {
            header,
            offset,
            object_type,
            items,
            prefix,
            count,
            data,
            cto: self.cto,
        };
        self.rest = after.get(data_len..).unwrap_or_default();
        self.offset = offset + data_start + data_len;
        if group == 51 {
            if let Some(Point {
                value: PointValue::Cto { ms, .. },
                ..
            }) = object.points().last()
            {
                self.cto = Some(ms);
            }
        }
        Ok(object)
    }

    /// How the objects of `header` are laid out in a fragment of this function.
    fn items(
        &self,
        header: &ObjectHeader,
        prefix: PrefixCode,
        object_type: Option<ObjectType>,
        named: u64,
    ) -> Result<Items, ObjectError> {
        let ObjectHeader {
            group,
            variation,
            qualifier,
            ..
        } = *header;
        if named == 0 {
            // "All objects", or a count of none: nothing follows.
            return Ok(Items::Nothing);
        }
        if prefix.is_size() {
            // The prefix says how long each object is, whatever the function.
            return Ok(Items::Sized);
        }
        let names_only = !self.function.carries_point_data(group)
            || matches!(
                object_type,
                Some(ObjectType {
                    size: ObjectSize::NoData,
                    ..
                })
            );
        if names_only {
            return Ok(if prefix.is_index() {
                Items::Indices
            } else {
                Items::Nothing
            });
        }
        let mismatch = ObjectError::QualifierMismatch {
            offset: self.offset,
            group,
            variation,
            qualifier,
        };
        let Some(object_type) = object_type else {
            return Err(ObjectError::UnknownObject {
                group,
                variation,
                offset: self.offset,
            });
        };
        Ok(match object_type.size {
            ObjectSize::NoData => Items::Nothing,
            ObjectSize::Packed { .. } if prefix.is_index() => return Err(mismatch),
            ObjectSize::Packed { bits } => Items::Packed { bits },
            ObjectSize::Fixed(len) => Items::Fixed {
                len: usize::from(len),
            },
            ObjectSize::VariationIsLength => Items::Fixed {
                len: usize::from(variation),
            },
            ObjectSize::Attribute => Items::Attribute,
            ObjectSize::Prefixed { .. } => return Err(mismatch),
        })
    }

    /// Walks objects of variable size to find where they end, checking each size prefix
    /// against the object's fixed part.
    fn walk_variable(
        &self,
        header: &ObjectHeader,
        items: Items,
        prefix: PrefixCode,
        object_type: Option<ObjectType>,
        count: u32,
        bytes: &[u8],
    ) -> Result<usize, ObjectError> {
        let (group, variation, offset) = (header.group, header.variation, self.offset);
        let min = match object_type.map(|t| t.size) {
            Some(ObjectSize::Prefixed { min }) | Some(ObjectSize::Fixed(min)) => usize::from(min),
            _ => 0,
        };
        let mut rest = bytes;
        // Every object takes at least one octet (a size prefix, or type and length), so this
        // runs at most `bytes.len()` times however large the count.
        for _ in 0..count {
            let (size, body, next) =
                split_item(items, prefix, rest).ok_or(ObjectError::TruncatedData {
                    offset,
                    group,
                    variation,
                })?;
            if items == Items::Sized && body.len() < min {
                return Err(ObjectError::BadObjectSize {
                    offset,
                    group,
                    variation,
                    size,
                });
            }
            rest = next;
        }
        Ok(bytes.len() - rest.len())
    }
}

impl<'a> Iterator for Objects<'a> {
    type Item = Result<Object<'a>, ObjectError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.rest.is_empty() {
            return None;
        }
        let result = self.parse_one();
        if result.is_err() {
            self.done = true;
        }
        Some(result)
    }
}

impl FusedIterator for Objects<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dnp3::testutil::hex;
    use crate::dnp3::{
        parse_app_fragment, AnalogValue, AppFragment, CommandStatus, ControlCode, Crob,
        DoubleBitState, Flags, Iin, Timestamp,
    };

    fn app(fragment: &[u8]) -> AppFragment<'_> {
        parse_app_fragment(fragment).expect("application header")
    }

    fn objects(fragment: &[u8]) -> Vec<Object<'_>> {
        app(fragment)
            .objects()
            .collect::<Result<Vec<_>, _>>()
            .expect("every object header valid")
    }

    fn points<'a>(object: &Object<'a>) -> Vec<Point<'a>> {
        object.points().collect()
    }

    fn values<'a>(object: &Object<'a>) -> Vec<(u32, PointValue<'a>)> {
        object.points().map(|p| (p.index, p.value)).collect()
    }

    /// read_and_response.pcap frame 4 (transport octet removed): read class 1, 2, 3, 0.
    static CLASS_READ: [u8; 14] = hex("c0013c02063c03063c04063c0106");

    #[test]
    fn class_read_names_classes_without_data() {
        let objects = objects(&CLASS_READ);
        let named: Vec<(u8, u8)> = objects
            .iter()
            .map(|o| (o.header.group, o.header.variation))
            .collect();
        assert_eq!(named, [(60, 2), (60, 3), (60, 4), (60, 1)]);
        for object in &objects {
            assert_eq!(object.header.qualifier, Qualifier(0x06));
            assert_eq!(object.header.range, Range::All);
            assert_eq!(object.count(), None);
            assert!(!object.has_items() && object.data().is_empty());
            assert_eq!(object.points().count(), 0);
            assert_eq!(object.wire_len(), 3);
        }
        assert_eq!(objects[3].offset, 11);
    }

    /// dnp3_read.pcap frame 6: response with g1v2 0..8, g10v2 0..6, g30v1 0..14 (tshark:
    /// binary inputs 0 and 2 set, analog values 1007, 3, 1005, -11989, ...).
    static READ_RESPONSE: [u8; 110] = hex(concat!(
        "c881000001020000088101810101010101010a02000006000000000000011e0100000e01ef030000010300",
        "000001ed030000012bd1ffff01ed03000001e62e000001170d0200000000000001b50c0200000000000001",
        "8a0d02000000000000000000000000000000000000000000"
    ));

    #[test]
    fn response_with_binary_and_analog_points() {
        let fragment = app(&READ_RESPONSE);
        assert_eq!(fragment.iin, Some(Iin(0)));
        let objects = objects(&READ_RESPONSE);
        assert_eq!(objects.len(), 3);
        let binaries = &objects[0];
        assert_eq!((binaries.header.group, binaries.header.variation), (1, 2));
        assert_eq!(
            binaries.header.range,
            Range::StartStop { start: 0, stop: 8 }
        );
        let states: Vec<(u32, bool, bool)> = binaries
            .points()
            .map(|p| match p.value {
                PointValue::Binary {
                    flags: Some(flags),
                    state,
                } => (p.index, flags.online(), state),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(states.len(), 9);
        assert_eq!(states[0], (0, true, true));
        assert_eq!(states[1], (1, true, false));
        assert_eq!(states[2], (2, true, true));
        assert_eq!(states[8], (8, true, false));
        let outputs = values(&objects[1]);
        assert_eq!(outputs.len(), 7);
        assert_eq!(
            outputs[6],
            (
                6,
                PointValue::Binary {
                    flags: Some(Flags(0x01)),
                    state: false
                }
            )
        );
        let analogs: Vec<(u32, f64)> = objects[2]
            .points()
            .map(|p| match p.value {
                PointValue::Analog {
                    flags: Some(_),
                    value: value @ AnalogValue::I32(_),
                } => (p.index, value.as_f64()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(analogs.len(), 15);
        assert_eq!(
            analogs[..7],
            [
                (0, 1007.0),
                (1, 3.0),
                (2, 1005.0),
                (3, -11989.0),
                (4, 1005.0),
                (5, 12006.0),
                (6, 134423.0)
            ]
        );
        assert_eq!(objects[2].offset, 30);
        assert_eq!(objects[2].wire_len(), 80);
    }

    /// directoperate_and_response.pcap frames 4 and 6: direct operate of a CROB at index 0
    /// (qualifier 0x28), latch on, 100 ms on/off, and the outstation's echo.
    static CROB_DIRECT_OPERATE: [u8; 20] = hex("c0050c0128010000000301640000006400000000");
    static CROB_ECHO: [u8; 22] = hex("c08100000c0128010000000301640000006400000000");

    #[test]
    fn crob_direct_operate_and_echo() {
        let expected = Crob {
            control: ControlCode(0x03),
            count: 1,
            on_time_ms: 100,
            off_time_ms: 100,
            status: CommandStatus::SUCCESS,
        };
        for fragment in [&CROB_DIRECT_OPERATE[..], &CROB_ECHO[..]] {
            let objects = objects(fragment);
            assert_eq!(objects.len(), 1);
            let crob = &objects[0];
            assert_eq!(crob.header.qualifier.prefix(), Some(PrefixCode::Index2));
            assert_eq!(crob.header.range, Range::Count(1));
            assert_eq!(values(crob), [(0, PointValue::Crob(expected))]);
        }
        assert_eq!(expected.control.op_type_name(), Some("latch_on"));
        assert_eq!(
            app(&CROB_DIRECT_OPERATE).function.name(),
            Some("direct_operate")
        );
    }

    /// direct_operate_analog_output.pcap frame 1: g41v2 (16-bit analog output block), index 1,
    /// value 0, qualifier 0x28.
    static ANALOG_OUTPUT: [u8; 12] = hex("c20529022801000100000000");

    #[test]
    fn analog_output_command() {
        let objects = objects(&ANALOG_OUTPUT);
        assert_eq!(
            values(&objects[0]),
            [(
                1,
                PointValue::AnalogOutput {
                    value: AnalogValue::I16(0),
                    status: CommandStatus::SUCCESS
                }
            )]
        );
        // Synthetic, same layout: an echo refusing -2 (status 4, not supported), then the
        // 32-bit (qualifier 0x17), float and double variations.
        let refused: [u8; 14] = hex("c081000029022801000100feff04");
        assert_eq!(
            values(&self::objects(&refused)[0]),
            [(
                1,
                PointValue::AnalogOutput {
                    value: AnalogValue::I16(-2),
                    status: CommandStatus::NOT_SUPPORTED
                }
            )]
        );
        let others: [u8; 38] = hex(concat!(
            "c005",
            "29011701",
            "03e803000000",
            "290317010a0000c03f00",
            "2904280100ffff000000000000d0bf00"
        ));
        let decoded: Vec<(u32, f64)> = self::objects(&others)
            .iter()
            .flat_map(|o| o.points())
            .map(|p| match p.value {
                PointValue::AnalogOutput { value, .. } => (p.index, value.as_f64()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(decoded, [(3, 1000.0), (10, 1.5), (65535, -0.25)]);
    }

    /// dnp3_write.pcap frame 4: write g50v1 (qualifier 0x07, count 1). tshark: Dec 19, 2011
    /// 22:06:33.859 UTC.
    static TIME_WRITE: [u8; 12] = hex("c0023201070183a55c583401");

    #[test]
    fn time_write() {
        let objects = objects(&TIME_WRITE);
        let time = &objects[0];
        assert_eq!(time.header.range, Range::Count(1));
        assert_eq!(
            values(time),
            [(
                0,
                PointValue::Time {
                    ms: 1_324_332_393_859
                }
            )]
        );
    }

    #[test]
    fn cold_restart_and_time_delay() {
        // dnp3.pcap frames 70 and 71: cold restart (no objects), answered with g52v2 (fine
        // time delay, qualifier 0x07): back in 5000 ms.
        let request: [u8; 2] = hex("c30d");
        let restart = app(&request);
        assert_eq!(restart.function.name(), Some("cold_restart"));
        assert_eq!(restart.objects().count(), 0);
        let response: [u8; 10] = hex("c3810000340207018813");
        assert_eq!(
            values(&objects(&response)[0]),
            [(0, PointValue::TimeDelay { ms: 5000 })]
        );
        // The coarse variation counts seconds (synthetic: 5 s).
        let coarse: [u8; 10] = hex("c3810000340107010500");
        assert_eq!(
            values(&objects(&coarse)[0]),
            [(0, PointValue::TimeDelay { ms: 5000 })]
        );
        // dnp3_del_measure.pcap frame 6: the answer to a delay measurement, 1 ms.
        let delay: [u8; 10] = hex("c4810000340207010100");
        assert_eq!(
            values(&objects(&delay)[0]),
            [(0, PointValue::TimeDelay { ms: 1 })]
        );
    }

    /// dnp3.pcap frame 67: unsolicited response with a CTO (g51v1), a binary input event
    /// with relative time (g2v3, qualifier 0x28) and three analog events (g32v1). tshark: CTO
    /// Oct 11, 2004 10:16:45.675 UTC, point 2 at the same time, values 203, 202, 199.
    static UNSOLICITED_WITH_CTO: [u8; 50] = hex(concat!(
        "fc820000330107016b717d87ff00020328010002000100002001280300000001cb000000010001ca000000",
        "020001c7000000"
    ));

    #[test]
    fn unsolicited_with_cto_and_relative_time() {
        let fragment = app(&UNSOLICITED_WITH_CTO);
        assert!(fragment.control.uns() && fragment.control.con());
        let objects = objects(&UNSOLICITED_WITH_CTO);
        const CTO: u64 = 1_097_489_805_675;
        assert_eq!(
            values(&objects[0]),
            [(
                0,
                PointValue::Cto {
                    ms: CTO,
                    synchronized: true
                }
            )]
        );
        let event = points(&objects[1]);
        assert_eq!(event.len(), 1);
        assert_eq!(event[0].index, 2);
        assert_eq!(
            event[0].value,
            PointValue::Binary {
                flags: Some(Flags(0x01)),
                state: false
            }
        );
        assert_eq!(
            event[0].time,
            Some(Timestamp::Relative {
                offset_ms: 0,
                cto_ms: Some(CTO)
            })
        );
        assert_eq!(event[0].time.and_then(|t| t.absolute_ms()), Some(CTO));
        let analogs: Vec<(u32, f64)> = objects[2]
            .points()
            .map(|p| match p.value {
                PointValue::Analog { value, .. } => (p.index, value.as_f64()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(analogs, [(0, 203.0), (1, 202.0), (2, 199.0)]);
    }

    #[test]
    fn unsynchronized_cto() {
        // opendnp3-conformance-8.15.2_dump.pcap frame 10: g51v2 (unsynchronized CTO), then
        // g2v3 with 2-octet indices 41, 41, 1024. tshark (4.x) does not know g51v2 and calls
        // the rest of the fragment an unknown data chunk; IEEE 1815-2012 defines it, 6 octets.
        let fragment: [u8; 34] = hex(concat!(
            "e181100033020701e141d3647101020328030029008100002900010000000481",
            "0100"
        ));
        let objects = objects(&fragment);
        let PointValue::Cto {
            ms,
            synchronized: false,
        } = points(&objects[0])[0].value
        else {
            panic!("{:?}", objects[0]);
        };
        let events = points(&objects[1]);
        let decoded: Vec<(u32, bool, Option<u64>)> = events
            .iter()
            .map(|p| match p.value {
                PointValue::Binary { state, .. } => {
                    (p.index, state, p.time.and_then(|t| t.absolute_ms()))
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            decoded,
            [
                (41, true, Some(ms)),
                (41, false, Some(ms)),
                (1024, true, Some(ms + 1))
            ]
        );
    }

    #[test]
    fn write_of_iin_clears_device_restart() {
        // write_iin_and_response.pcap frame 4: g80v1, qualifier 0x00, index 7..7, one packed
        // bit, 0: clear IIN1.7.
        let write: [u8; 8] = hex("c002500100070700");
        let objects = objects(&write);
        assert_eq!(
            objects[0].header.range,
            Range::StartStop { start: 7, stop: 7 }
        );
        assert_eq!(
            values(&objects[0]),
            [(
                7,
                PointValue::Binary {
                    flags: None,
                    state: false
                }
            )]
        );
    }

    #[test]
    fn headers_only_requests_carry_no_values() {
        // assign_class.pcap frame 1: assign class 2 (g60v3) to all binary inputs (g1v0).
        let assign: [u8; 8] = hex("c3163c0306010006");
        let objects = objects(&assign);
        assert_eq!(objects.len(), 2);
        assert!(objects.iter().all(|o| !o.has_items()));
        // immediate_freeze.pcap frame 1: freeze all counters (g20v0).
        let freeze: [u8; 5] = hex("c207140006");
        let objects = self::objects(&freeze);
        assert_eq!(
            (objects[0].header.group, objects[0].header.variation),
            (20, 0)
        );
        assert_eq!(objects[0].points().count(), 0);
        // Synthetic read of g30v1 points 0, 5 and 9 by 1-octet index (0x17), then of g1v2
        // 10..20 by range (0x01): the first carries indices only, the second nothing.
        let read: [u8; 16] = hex("c1011e0117030005090102010a001400");
        let objects = self::objects(&read);
        assert_eq!(
            values(&objects[0]),
            [
                (0, PointValue::IndexOnly),
                (5, PointValue::IndexOnly),
                (9, PointValue::IndexOnly)
            ]
        );
        assert!(objects[0].has_items() && !objects[0].has_values());
        assert_eq!(
            objects[1].header.range,
            Range::StartStop {
                start: 10,
                stop: 20
            }
        );
        assert_eq!(
            (objects[1].count(), objects[1].points().count()),
            (Some(11), 0)
        );
        // A read of a 4-octet range naming 2^32 points costs nothing to walk.
        let everything: [u8; 13] = hex("c1011e010200000000ffffffff");
        let objects = self::objects(&everything);
        assert_eq!(objects[0].count(), Some(1 << 32));
        assert_eq!(objects[0].points().count(), 0);
        // In a response the same header would need 2^32 values: truncated, not walked.
        let response: [u8; 15] = hex("c08100001e010200000000ffffffff");
        assert_eq!(
            app(&response).objects().next(),
            Some(Err(ObjectError::TruncatedData {
                offset: 4,
                group: 30,
                variation: 1
            }))
        );
    }

    #[test]
    fn file_transfer_objects() {
        use crate::dnp3::{FileCommand, FileCommandStatus, FileTransport, FileTransportStatus};
        // dnp3_file_read.pcap frame 4: open "./test.xml" for reading (g70v3, qualifier 0x5B,
        // size 36). tshark: offset 26, length 10, mode READ, max block 1024, request id 4.
        let open: [u8; 44] = hex(concat!(
            "ce1946035b0124001a000a00000000000000000000000000000000000100000404002e2f74657374",
            "2e786d6c"
        ));
        let objects = objects(&open);
        assert_eq!(
            objects[0].header.qualifier.prefix(),
            Some(PrefixCode::Size2)
        );
        assert_eq!(objects[0].header.range, Range::Count(1));
        assert_eq!(
            values(&objects[0]),
            [(
                0,
                PointValue::FileCommand(FileCommand {
                    name: b"./test.xml",
                    created_ms: 0,
                    permissions: 0,
                    auth_key: 0,
                    file_size: 0,
                    mode: 1,
                    max_block_size: 1024,
                    request_id: 4,
                })
            )]
        );
        // Frame 6: the answer, g70v4: handle 0x12345678, size 830 (tshark: 0x33e), success.
        let opened: [u8; 23] = hex("ce81100046045b010d00785634123e0300000004040000");
        assert!(app(&opened)
            .iin
            .is_some_and(|iin| iin.contains(Iin::NEED_TIME)));
        assert_eq!(
            values(&self::objects(&opened)[0]),
            [(
                0,
                PointValue::FileCommandStatus(FileCommandStatus {
                    handle: 0x1234_5678,
                    file_size: 830,
                    max_block_size: 1024,
                    request_id: 4,
                    status: 0,
                    text: b"",
                })
            )]
        );
        // Frame 7: a read that carries data, because of the size prefix: block 0, please.
        let read: [u8; 16] = hex("cf0146055b0108007856341200000000");
        assert_eq!(
            values(&self::objects(&read)[0]),
            [(
                0,
                PointValue::FileTransport(FileTransport {
                    handle: 0x1234_5678,
                    block: 0,
                    last: false,
                    data: b"",
                })
            )]
        );
        // dnp3_file_write.pcap frame 15: g70v6, block 0 was the last, success.
        let written: [u8; 19] = hex("c781000046065b010900785634120000008000");
        assert_eq!(
            values(&self::objects(&written)[0]),
            [(
                0,
                PointValue::FileTransportStatus(FileTransportStatus {
                    handle: 0x1234_5678,
                    block: 0,
                    last: true,
                    status: 0,
                    text: b"",
                })
            )]
        );
        // A size prefix shorter than the fixed part of the object is an error.
        let short: [u8; 12] = hex("c081000046065b0102001234");
        assert_eq!(
            app(&short).objects().next(),
            Some(Err(ObjectError::BadObjectSize {
                offset: 4,
                group: 70,
                variation: 6,
                size: 2
            }))
        );
        // A file object without a size prefix cannot be walked.
        let unprefixed: [u8; 15] = hex("c08100004606070178563412000000");
        assert_eq!(
            app(&unprefixed).objects().next(),
            Some(Err(ObjectError::QualifierMismatch {
                offset: 4,
                group: 70,
                variation: 6,
                qualifier: Qualifier(0x07)
            }))
        );
    }

    #[test]
    fn device_attributes() {
        // dataset_exchange.pcap frame 2: g0v213 and g0v215 (number of data set prototypes and
        // of data sets), each type 2 (unsigned), length 4; tshark: values 1 and 3.
        let fragment: [u8; 26] = hex("c581000000d500000002040100000000d7000000020403000000");
        let objects = objects(&fragment);
        let decoded: Vec<(u8, u8, &[u8])> = objects
            .iter()
            .flat_map(|o| o.points().map(move |p| (o.header.variation, p)))
            .map(|(variation, p)| match p.value {
                PointValue::DeviceAttribute { data_type, value } => (variation, data_type, value),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            decoded,
            [(213, 2, &[1, 0, 0, 0][..]), (215, 2, &[3, 0, 0, 0][..])]
        );
    }

    #[test]
    fn unknown_object_is_an_error_not_a_panic() {
        // DNP3-Malformed.pcap frame 134 (a qualifier fuzzer's operate): g12v1 with qualifier
        // 0x06 (no objects), then g127v128 with a range: data must follow in an operate, and
        // its size is unknown. tshark agrees ("Unknown Object\Variation").
        let fragment: [u8; 20] = hex("c2040c01067f8001000301640000006400000000");
        let mut walk = app(&fragment).objects();
        let first = walk.next().unwrap().unwrap();
        assert_eq!(first.header.range, Range::All);
        assert_eq!(
            walk.next(),
            Some(Err(ObjectError::UnknownObject {
                group: 127,
                variation: 128,
                offset: 5
            }))
        );
        assert_eq!(walk.next(), None, "the walk stops after an error");
        let error = ObjectError::UnknownObject {
            group: 127,
            variation: 128,
            offset: 5,
        };
        assert_eq!(error.as_str(), "unknown_object");
        assert_eq!(error.to_string(), "unknown_object g127v128 at offset 5");
        // The same header in a read names points without data: no size needed.
        let read: [u8; 7] = hex("c1017f80000003");
        let read_walk: Vec<_> = app(&read).objects().collect();
        assert!(matches!(read_walk[..], [Ok(_)]), "{read_walk:?}");
        // Variation 0 of an octet string ("any length") cannot carry data:
        // write_vto_empty_string.pcap writes g112v0 over 0..65535, which would be 65536
        // empty objects per header; tshark calls it malformed too.
        let vto: [u8; 14] = hex("c0027000010000ffff7000010000");
        assert!(matches!(
            app(&vto).objects().next(),
            Some(Err(ObjectError::UnknownObject {
                group: 112,
                variation: 0,
                ..
            }))
        ));
    }

    #[test]
    fn reserved_qualifier_is_an_error() {
        // dnp3.pcap frame 154: disable unsolicited for classes 1, 2, 3, the last header's
        // qualifier corrupted to 0xED (bit 7, size prefix 6, range 0xD). tshark shows the
        // bits and gives up on the header too.
        let fragment: [u8; 11] = hex("c1153c02063c03063c04ed");
        let walk: Vec<_> = app(&fragment).objects().collect();
        assert_eq!(walk.len(), 3);
        assert!(walk[0].is_ok() && walk[1].is_ok());
        assert_eq!(
            walk[2],
            Err(ObjectError::InvalidQualifier {
                offset: 8,
                group: 60,
                variation: 4,
                qualifier: Qualifier(0xED)
            })
        );
        assert_eq!(
            walk[2].unwrap_err().to_string(),
            "invalid_qualifier g60v4 qualifier 0xed at offset 8"
        );
        // A header cut inside its range.
        let cut: [u8; 6] = hex("c101010201ff");
        assert_eq!(
            app(&cut).objects().next(),
            Some(Err(ObjectError::TruncatedHeader { offset: 2 }))
        );
        // Stop before start.
        let backwards: [u8; 7] = hex("c1011e02000905");
        assert_eq!(
            app(&backwards).objects().next(),
            Some(Err(ObjectError::InvalidRange {
                offset: 2,
                group: 30,
                variation: 2,
                start: 9,
                stop: 5
            }))
        );
        // An index prefix before packed bits.
        let indexed_bits: [u8; 10] = hex("c0810000010117010301");
        assert!(matches!(
            app(&indexed_bits).objects().next(),
            Some(Err(ObjectError::QualifierMismatch { .. }))
        ));
    }

    /// Every one of the 256 qualifier values, on a response with g30v2 (flags and a 16-bit
    /// value, 3 octets), followed by a one-bit g80v1 header so that a wrong object length
    /// shows up as a broken second header.
    #[test]
    fn every_qualifier_code() {
        let mut defined = 0;
        for q in 0..=u8::MAX {
            let qualifier = Qualifier(q);
            let (prefix, range) = ((q >> 4) & 0x07, q & 0x0F);
            let mut fragment = vec![0xC0, 0x81, 0x00, 0x00, 30, 2, q];
            let reserved = q & 0x80 != 0 || prefix == 7 || range == 0x0A || range >= 0x0C;
            if reserved {
                fragment.extend_from_slice(&[0; 8]);
                assert_eq!(
                    app(&fragment).objects().next(),
                    Some(Err(ObjectError::InvalidQualifier {
                        offset: 4,
                        group: 30,
                        variation: 2,
                        qualifier
                    })),
                    "{q:#04x}"
                );
                assert!(!qualifier.is_defined());
                continue;
            }
            defined += 1;
            assert!(qualifier.is_defined());
            // Two objects: 2..=3 for ranges, a count of 2 otherwise; none for range 6.
            let width = match range {
                0..=5 => 1usize << (range % 3),
                7 | 0x0B => 1,
                8 => 2,
                9 => 4,
                _ => 0,
            };
            match range {
                0..=5 => {
                    fragment.extend_from_slice(&2u32.to_le_bytes()[..width]);
                    fragment.extend_from_slice(&3u32.to_le_bytes()[..width]);
                }
                6 => {}
                _ => fragment.extend_from_slice(&2u32.to_le_bytes()[..width]),
            }
            let objects = if range == 6 { 0 } else { 2 };
            let prefix_width = match prefix {
                1 | 4 => 1,
                2 | 5 => 2,
                3 | 6 => 4,
                _ => 0,
            };
            for i in 0..objects {
                let prefix_value: u32 = if prefix >= 4 { 3 } else { 40 + i };
                fragment.extend_from_slice(&prefix_value.to_le_bytes()[..prefix_width]);
                fragment.push(0x01);
                fragment.extend_from_slice(&(100 + i as i16).to_le_bytes());
            }
            fragment.extend_from_slice(&[80, 1, 0x00, 7, 7, 0x01]);
            let walk: Vec<Object<'_>> = app(&fragment)
                .objects()
                .collect::<Result<_, _>>()
                .unwrap_or_else(|e| panic!("{q:#04x}: {e}"));
            assert_eq!(walk.len(), 2, "{q:#04x}");
            assert_eq!((walk[1].header.group, walk[1].header.variation), (80, 1));
            let expected: Vec<(u32, PointValue<'_>)> = (0..objects)
                .map(|i| {
                    let index = match (prefix, range) {
                        (1..=3, _) => 40 + i,
                        (_, 0..=5) => 2 + i,
                        _ => i,
                    };
                    let value = PointValue::Analog {
                        flags: Some(Flags(0x01)),
                        value: AnalogValue::I16(100 + i as i16),
                    };
                    (index, value)
                })
                .collect();
            assert_eq!(values(&walk[0]), expected, "{q:#04x}");
            let range_kind = match walk[0].header.range {
                Range::StartStop { .. } => 0,
                Range::VirtualStartStop { .. } => 1,
                Range::All => 2,
                Range::Count(_) => 3,
            };
            let expected_kind = match range {
                0..=2 => 0,
                3..=5 => 1,
                6 => 2,
                _ => 3,
            };
            assert_eq!(range_kind, expected_kind, "{q:#04x}");
        }
        // Prefix codes 0-6 by range codes 0-9 and 0xB.
        assert_eq!(defined, 7 * 11);
    }

    #[test]
    fn packed_bits() {
        // Synthetic: ten binary inputs (g1v1) 3..=12, LSB first: 1,0,1,1,0,0,0,0 then 1,1; five
        // double-bit inputs (g3v1) 0..=4: on, off, intermediate, indeterminate, on; and three
        // binary outputs (g10v1) by count.
        let fragment: [u8; 23] = hex("c0810000010100030c0d030301000004c6020a01070305");
        let objects = objects(&fragment);
        let bits: Vec<(u32, bool)> = objects[0]
            .points()
            .map(|p| match p.value {
                PointValue::Binary { flags: None, state } => (p.index, state),
                other => panic!("{other:?}"),
            })
            .collect();
        let expected: Vec<(u32, bool)> = [1, 0, 1, 1, 0, 0, 0, 0, 1, 1]
            .iter()
            .enumerate()
            .map(|(i, &b)| (3 + i as u32, b == 1))
            .collect();
        assert_eq!(bits, expected);
        assert_eq!(objects[0].data(), [0x0D, 0x03]);
        let doubles: Vec<DoubleBitState> = objects[1]
            .points()
            .map(|p| match p.value {
                PointValue::DoubleBit { flags: None, state } => state,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            doubles,
            [
                DoubleBitState::On,
                DoubleBitState::Off,
                DoubleBitState::Intermediate,
                DoubleBitState::Indeterminate,
                DoubleBitState::On
            ]
        );
        let outputs: Vec<(u32, PointValue<'_>)> = values(&objects[2]);
        assert_eq!(outputs.len(), 3);
        assert_eq!(
            outputs[2],
            (
                2,
                PointValue::Binary {
                    flags: None,
                    state: true
                }
            )
        );
    }
}
