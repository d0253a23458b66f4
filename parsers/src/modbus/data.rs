//! Borrowed views over the variable-length parts of a PDU. `parse_pdu` validates the whole
//! structure before it hands one out, so the iterators here never meet malformed data; should
//! one be built by hand over bad bytes anyway, it stops early instead of panicking.

use core::fmt;
use core::iter::FusedIterator;

use super::field;

/// Bits packed LSB first (AP §6.1: coil/input N+0 is bit 0 of the first byte), `len()` of them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Bits<'a> {
    bytes: &'a [u8],
    /// Invariant: `count <= bytes.len() * 8`.
    count: usize,
}

impl<'a> Bits<'a> {
    /// `count` bits from `bytes`, clamped to the bits the bytes hold.
    pub fn new(bytes: &'a [u8], count: usize) -> Self {
        Self {
            bytes,
            count: count.min(bytes.len().saturating_mul(8)),
        }
    }

    /// Every bit of `bytes`: what a response to read coils/discrete inputs says by itself,
    /// since it carries a byte count, not the requested quantity.
    pub fn from_bytes(bytes: &'a [u8]) -> Self {
        Self::new(bytes, usize::MAX)
    }

    /// The same bytes limited to `count` bits (clamped), e.g. the quantity of the matching
    /// request, which drops the padding bits of the last byte.
    pub fn with_count(self, count: usize) -> Self {
        Self::new(self.bytes, count)
    }

    /// The packed bytes, including any padding bits.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Number of bits.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bit `index`, `None` past the end.
    pub fn get(&self, index: usize) -> Option<bool> {
        if index >= self.count {
            return None;
        }
        self.bytes
            .get(index / 8)
            .map(|byte| byte >> (index % 8) & 1 == 1)
    }

    pub fn iter(&self) -> BitsIter<'a> {
        BitsIter {
            bits: *self,
            next: 0,
        }
    }
}

impl fmt::Debug for Bits<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // "Bits(10110)": bit 0 first, the order they are addressed in.
        f.write_str("Bits(")?;
        for bit in self.iter() {
            f.write_str(if bit { "1" } else { "0" })?;
        }
        f.write_str(")")
    }
}

impl<'a> IntoIterator for Bits<'a> {
    type Item = bool;
    type IntoIter = BitsIter<'a>;
    fn into_iter(self) -> BitsIter<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &Bits<'a> {
    type Item = bool;
    type IntoIter = BitsIter<'a>;
    fn into_iter(self) -> BitsIter<'a> {
        self.iter()
    }
}

#[derive(Debug, Clone)]
pub struct BitsIter<'a> {
    bits: Bits<'a>,
    next: usize,
}

impl Iterator for BitsIter<'_> {
    type Item = bool;

    fn next(&mut self) -> Option<bool> {
        let bit = self.bits.get(self.next)?;
        self.next += 1;
        Some(bit)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.bits.count.saturating_sub(self.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for BitsIter<'_> {}
impl FusedIterator for BitsIter<'_> {}

/// Big-endian 16-bit registers. Holding whole byte pairs, it cannot have an odd length.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Registers<'a>(&'a [[u8; 2]]);

impl<'a> Registers<'a> {
    /// `None` when `bytes` has an odd length.
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        match bytes.as_chunks::<2>() {
            (pairs, []) => Some(Self(pairs)),
            _ => None,
        }
    }

    /// The registers as raw bytes, as on the wire.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0.as_flattened()
    }

    /// Number of registers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Register `index`, `None` past the end.
    pub fn get(&self, index: usize) -> Option<u16> {
        self.0.get(index).map(|pair| u16::from_be_bytes(*pair))
    }

    pub fn iter(&self) -> RegistersIter<'a> {
        RegistersIter(self.0.iter())
    }
}

impl fmt::Debug for Registers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Registers")?;
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for Registers<'a> {
    type Item = u16;
    type IntoIter = RegistersIter<'a>;
    fn into_iter(self) -> RegistersIter<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &Registers<'a> {
    type Item = u16;
    type IntoIter = RegistersIter<'a>;
    fn into_iter(self) -> RegistersIter<'a> {
        self.iter()
    }
}

#[derive(Debug, Clone)]
pub struct RegistersIter<'a>(core::slice::Iter<'a, [u8; 2]>);

impl Iterator for RegistersIter<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        self.0.next().map(|pair| u16::from_be_bytes(*pair))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for RegistersIter<'_> {
    fn next_back(&mut self) -> Option<u16> {
        self.0.next_back().map(|pair| u16::from_be_bytes(*pair))
    }
}

impl ExactSizeIterator for RegistersIter<'_> {}
impl FusedIterator for RegistersIter<'_> {}

/// Reads the big-endian u16 at `range` of `bytes`; `None` if it is not there.
pub(super) fn be_u16(bytes: &[u8], range: core::ops::Range<usize>) -> Option<u16> {
    let pair: [u8; 2] = bytes.get(range)?.try_into().ok()?;
    Some(u16::from_be_bytes(pair))
}

/// One file record named by a read-file-record request (AP §6.14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRecordRef {
    pub file_number: u16,
    pub record_number: u16,
    /// In registers.
    pub record_length: u16,
}

impl FileRecordRef {
    /// Reads the 7-byte sub-request layout shared by fc 20 requests and fc 21 (AP §6.14, §6.15).
    fn from_sub_request(sub: &[u8]) -> Option<Self> {
        Some(Self {
            file_number: be_u16(sub, field::SUB_FILE_NUMBER)?,
            record_number: be_u16(sub, field::SUB_RECORD_NUMBER)?,
            record_length: be_u16(sub, field::SUB_RECORD_LENGTH)?,
        })
    }
}

/// Sub-requests of a read-file-record request: whole 7-byte groups, reference type checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileRecordRequests<'a>(&'a [[u8; field::SUB_REQUEST_LEN]]);

impl<'a> FileRecordRequests<'a> {
    /// Only the parser builds these: it has checked the length and every reference type.
    pub(super) fn new(groups: &'a [[u8; field::SUB_REQUEST_LEN]]) -> Self {
        Self(groups)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> FileRecordRequestsIter<'a> {
        FileRecordRequestsIter(self.0.iter())
    }
}

impl<'a> IntoIterator for FileRecordRequests<'a> {
    type Item = FileRecordRef;
    type IntoIter = FileRecordRequestsIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[derive(Debug, Clone)]
pub struct FileRecordRequestsIter<'a>(core::slice::Iter<'a, [u8; field::SUB_REQUEST_LEN]>);

impl Iterator for FileRecordRequestsIter<'_> {
    type Item = FileRecordRef;

    fn next(&mut self) -> Option<FileRecordRef> {
        self.0
            .next()
            .and_then(|sub| FileRecordRef::from_sub_request(sub))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for FileRecordRequestsIter<'_> {}
impl FusedIterator for FileRecordRequestsIter<'_> {}

/// Sub-responses of a read-file-record response (AP §6.14): each is the data of one requested
/// record. The response names no file or record: match it to the request by transaction id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileRecordResponses<'a> {
    bytes: &'a [u8],
    count: usize,
}

impl<'a> FileRecordResponses<'a> {
    /// Only the parser builds these, after walking `bytes` and counting `count` sub-responses.
    pub(super) fn new(bytes: &'a [u8], count: usize) -> Self {
        Self { bytes, count }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> FileRecordResponsesIter<'a> {
        FileRecordResponsesIter {
            rest: self.bytes,
            left: self.count,
        }
    }
}

impl<'a> IntoIterator for FileRecordResponses<'a> {
    type Item = Registers<'a>;
    type IntoIter = FileRecordResponsesIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[derive(Debug, Clone)]
pub struct FileRecordResponsesIter<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Iterator for FileRecordResponsesIter<'a> {
    type Item = Registers<'a>;

    fn next(&mut self) -> Option<Registers<'a>> {
        if self.left == 0 {
            return None;
        }
        let item = split_file_sub_response(self.rest);
        match item {
            Some((data, rest)) => {
                self.rest = rest;
                self.left -= 1;
                Some(data)
            }
            None => {
                self.left = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

impl FusedIterator for FileRecordResponsesIter<'_> {}

/// Splits one read-file-record sub-response (length byte, reference type, data) off the front.
/// The length byte counts the reference type and the data. Checks nothing else: the parser
/// reports *why* a sub-response is bad, this only walks ones it already accepted.
pub(super) fn split_file_sub_response(bytes: &[u8]) -> Option<(Registers<'_>, &[u8])> {
    let (&length, rest) = bytes.split_first()?;
    let (sub, rest) = rest.split_at_checked(usize::from(length))?;
    let (_reference_type, data) = sub.split_first()?;
    Some((Registers::new(data)?, rest))
}

/// One record of a write-file-record request or response (AP §6.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRecord<'a> {
    pub file_number: u16,
    pub record_number: u16,
    /// In registers; always `data.len()`.
    pub record_length: u16,
    pub data: Registers<'a>,
}

impl FileRecord<'_> {
    pub fn reference(&self) -> FileRecordRef {
        FileRecordRef {
            file_number: self.file_number,
            record_number: self.record_number,
            record_length: self.record_length,
        }
    }
}

/// Records of a write-file-record request or its (identical) response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileRecordWrites<'a> {
    bytes: &'a [u8],
    count: usize,
}

impl<'a> FileRecordWrites<'a> {
    /// Only the parser builds these, after walking `bytes` and counting `count` records.
    pub(super) fn new(bytes: &'a [u8], count: usize) -> Self {
        Self { bytes, count }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> FileRecordWritesIter<'a> {
        FileRecordWritesIter {
            rest: self.bytes,
            left: self.count,
        }
    }
}

impl<'a> IntoIterator for FileRecordWrites<'a> {
    type Item = FileRecord<'a>;
    type IntoIter = FileRecordWritesIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[derive(Debug, Clone)]
pub struct FileRecordWritesIter<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Iterator for FileRecordWritesIter<'a> {
    type Item = FileRecord<'a>;

    fn next(&mut self) -> Option<FileRecord<'a>> {
        if self.left == 0 {
            return None;
        }
        match split_file_write(self.rest) {
            Some((record, rest)) => {
                self.rest = rest;
                self.left -= 1;
                Some(record)
            }
            None => {
                self.left = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

impl FusedIterator for FileRecordWritesIter<'_> {}

/// Splits one write-file-record sub-request (7-byte reference, then `record_length` registers)
/// off the front; like [`split_file_sub_response`] it walks, the parser judges.
pub(super) fn split_file_write(bytes: &[u8]) -> Option<(FileRecord<'_>, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<{ field::SUB_REQUEST_LEN }>()?;
    let reference = FileRecordRef::from_sub_request(head)?;
    let data_len = usize::from(reference.record_length).checked_mul(2)?;
    let (data, rest) = rest.split_at_checked(data_len)?;
    let record = FileRecord {
        file_number: reference.file_number,
        record_number: reference.record_number,
        record_length: reference.record_length,
        data: Registers::new(data)?,
    };
    Some((record, rest))
}

/// One object of a Read Device Identification response (AP §6.21).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceIdObject<'a> {
    pub id: u8,
    /// Raw bytes: basic and regular objects are ASCII strings by the spec, but devices put
    /// anything in them, so decoding is the caller's choice.
    pub value: &'a [u8],
}

impl DeviceIdObject<'_> {
    /// snake_case name of the standard objects 0x00-0x06; extended objects have none.
    pub const fn name(&self) -> Option<&'static str> {
        Some(match self.id {
            0x00 => "vendor_name",
            0x01 => "product_code",
            0x02 => "major_minor_revision",
            0x03 => "vendor_url",
            0x04 => "product_name",
            0x05 => "model_name",
            0x06 => "user_application_name",
            _ => return None,
        })
    }
}

/// Objects of a Read Device Identification response, count and lengths checked by the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceIdObjects<'a> {
    bytes: &'a [u8],
    count: u8,
}

impl<'a> DeviceIdObjects<'a> {
    /// Only the parser builds these, after walking exactly `count` objects over all of `bytes`.
    pub(super) fn new(bytes: &'a [u8], count: u8) -> Self {
        Self { bytes, count }
    }

    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> DeviceIdObjectsIter<'a> {
        DeviceIdObjectsIter {
            rest: self.bytes,
            left: self.count,
        }
    }
}

impl<'a> IntoIterator for DeviceIdObjects<'a> {
    type Item = DeviceIdObject<'a>;
    type IntoIter = DeviceIdObjectsIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[derive(Debug, Clone)]
pub struct DeviceIdObjectsIter<'a> {
    rest: &'a [u8],
    left: u8,
}

impl<'a> Iterator for DeviceIdObjectsIter<'a> {
    type Item = DeviceIdObject<'a>;

    fn next(&mut self) -> Option<DeviceIdObject<'a>> {
        if self.left == 0 {
            return None;
        }
        match split_device_id_object(self.rest) {
            Some((object, rest)) => {
                self.rest = rest;
                self.left -= 1;
                Some(object)
            }
            None => {
                self.left = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(usize::from(self.left)))
    }
}

impl FusedIterator for DeviceIdObjectsIter<'_> {}

/// Splits one device identification object (id, length, value) off the front.
pub(super) fn split_device_id_object(bytes: &[u8]) -> Option<(DeviceIdObject<'_>, &[u8])> {
    let ([id, length], rest) = bytes.split_first_chunk::<2>()?;
    let (value, rest) = rest.split_at_checked(usize::from(*length))?;
    Some((DeviceIdObject { id: *id, value }, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_lsb_first_and_clamped() {
        // AP §6.1 example: coils 20-27 in 0xCD, 28-35 in 0x6B, 36-38 in the low bits of 0x05.
        let bits = Bits::new(&[0xCD, 0x6B, 0x05], 19);
        assert_eq!(bits.len(), 19);
        let first: Vec<bool> = bits.iter().take(8).collect();
        assert_eq!(first, [true, false, true, true, false, false, true, true]);
        assert_eq!(bits.get(16), Some(true));
        assert_eq!(bits.get(18), Some(true));
        assert_eq!(bits.get(19), None);
        assert_eq!(bits.iter().len(), 19);
        assert_eq!(bits.iter().count(), 19);
        assert_eq!(Bits::new(&[0xFF], 100).len(), 8);
        assert_eq!(Bits::from_bytes(&[0xFF, 0]).len(), 16);
        assert_eq!(Bits::from_bytes(&[0xFF, 0]).with_count(3).len(), 3);
        assert_eq!(Bits::from_bytes(&[0xFF]).with_count(30).len(), 8);
        assert!(Bits::new(&[], 5).is_empty());
        assert_eq!(format!("{:?}", Bits::new(&[0b101], 4)), "Bits(1010)");
    }

    #[test]
    fn registers_are_big_endian_and_even() {
        let regs = Registers::new(&[0x02, 0x2B, 0x00, 0x00, 0x00, 0x64]).unwrap();
        assert_eq!(regs.len(), 3);
        assert_eq!(regs.iter().collect::<Vec<_>>(), [0x022B, 0, 0x64]);
        assert_eq!(regs.iter().next_back(), Some(0x64));
        assert_eq!(regs.get(0), Some(0x022B));
        assert_eq!(regs.get(3), None);
        assert_eq!(regs.as_bytes(), [0x02, 0x2B, 0x00, 0x00, 0x00, 0x64]);
        assert!(Registers::new(&[1, 2, 3]).is_none());
        assert!(Registers::new(&[]).unwrap().is_empty());
        assert_eq!(format!("{regs:?}"), "Registers[555, 0, 100]");
    }

    #[test]
    fn walkers_stop_on_bad_bytes_instead_of_panicking() {
        // Built by hand over bytes the parser would have rejected: they end, they do not panic.
        let writes = FileRecordWrites::new(&[6, 0, 1, 0, 2, 0, 9, 0xAA], 3);
        assert_eq!(writes.iter().count(), 0);
        let responses = FileRecordResponses::new(&[4, 6, 0, 1], 2);
        assert_eq!(responses.iter().count(), 0);
        let objects = DeviceIdObjects::new(&[0, 3, b'a', b'b', b'c', 1, 9, b'x'], 2);
        let names: Vec<_> = objects.iter().map(|o| o.value).collect();
        assert_eq!(names, [b"abc"]);
    }
}
