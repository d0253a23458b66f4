//! System status lists (SZL) read through userdata: the list header, its fixed-length records,
//! and the two identity lists that say what a PLC is: module identification (0x0011: order
//! number, firmware) and component identification (0x001C: names, serial numbers).

use core::fmt;
use core::iter::FusedIterator;

use super::field::szl as field;
use super::{be_u16, trim_text, SzlId};

/// Largest list a first fragment may announce: what one COTP reassembly may hold. A header
/// announcing more is not an SZL header (a continuation fragment read as one).
const MAX_LIST_LEN: usize = super::DEFAULT_REASSEMBLY_LIMIT;

/// An SZL response: id, index, and `record_count` records of `record_len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SzlList<'a> {
    pub id: SzlId,
    pub index: u16,
    /// Bytes per record.
    pub record_len: u16,
    /// Records in the whole list, as announced.
    pub record_count: u16,
    /// The whole records present. All of them when `complete`; when the PLC split the list
    /// over several userdata PDUs, those of this first piece.
    pub records: SzlRecords<'a>,
    /// Whether this PDU holds the whole answer: all `record_count` records, or for the
    /// header-only extracts (0x0Fxx, e.g. 0x0F74) just the header.
    pub complete: bool,
}

impl<'a> SzlList<'a> {
    /// Reads an SZL response's data (after the userdata data header).
    ///
    /// The records must fill the data exactly, unless `more_follows` (the userdata parameter
    /// says this is not the last data unit): then this is the first piece of a split list and
    /// holds fewer records than announced, within a 64 KiB list. `None` otherwise, e.g. for the
    /// later pieces of a split list, which carry records without a header.
    pub fn parse(data: &'a [u8], more_follows: bool) -> Option<Self> {
        let id = SzlId(be_u16(data, field::ID)?);
        let index = be_u16(data, field::INDEX)?;
        let record_len = be_u16(data, field::RECORD_LEN)?;
        let record_count = be_u16(data, field::RECORD_COUNT)?;
        let body = data.get(field::RECORDS..)?;
        let width = usize::from(record_len);
        let announced = width.checked_mul(usize::from(record_count))?;
        if width == 0 && record_count != 0 {
            return None;
        }
        // Extract number 0xF asks for the header alone: how many records the list has.
        let header_only = id.extract_number() == 0xF && body.is_empty();
        let complete = body.len() == announced || header_only;
        let first_piece = more_follows && body.len() < announced && announced <= MAX_LIST_LEN;
        if !(complete || first_piece) {
            return None;
        }
        let whole = body.len().checked_div(width).unwrap_or(0) * width;
        Some(Self {
            id,
            index,
            record_len,
            record_count,
            records: SzlRecords {
                bytes: body.get(..whole).unwrap_or_default(),
                width,
            },
            complete,
        })
    }

    /// The records as module identification (list number 0x11, 28-byte records).
    pub fn module_identification(&self) -> Option<ModuleIdRecords<'a>> {
        (self.id.list_number() == 0x11 && usize::from(self.record_len) == MODULE_ID_LEN)
            .then_some(ModuleIdRecords(self.records))
    }

    /// The records as component identification (list number 0x1C, 34-byte records).
    pub fn component_identification(&self) -> Option<ComponentIdRecords<'a>> {
        (self.id.list_number() == 0x1C && usize::from(self.record_len) == COMPONENT_ID_LEN)
            .then_some(ComponentIdRecords(self.records))
    }

    /// Order number (MLFB) of the module, from the module identification record of index 1.
    pub fn order_number(&self) -> Option<&'a [u8]> {
        self.module_record(ModuleIdRecord::MODULE)
            .map(|record| record.order_number())
    }

    /// Firmware version, from the module identification record of index 7.
    pub fn firmware_version(&self) -> Option<ModuleVersion> {
        self.module_record(ModuleIdRecord::FIRMWARE)?.version()
    }

    /// Text of the component identification record with `index`, trimmed.
    pub fn component(&self, index: u16) -> Option<&'a [u8]> {
        self.component_identification()?
            .iter()
            .find(|record| record.index == index)
            .map(|record| record.text())
    }

    /// Serial number of the module (component identification index 5).
    pub fn serial_number(&self) -> Option<&'a [u8]> {
        self.component(ComponentIdRecord::SERIAL_NUMBER)
    }

    fn module_record(&self, index: u16) -> Option<ModuleIdRecord<'a>> {
        self.module_identification()?
            .iter()
            .find(|record| record.index == index)
    }
}

/// Fixed-length records of an SZL list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SzlRecords<'a> {
    bytes: &'a [u8],
    width: usize,
}

impl<'a> SzlRecords<'a> {
    /// Records of `width` bytes from `bytes`; a partial last record is not yielded.
    pub fn new(bytes: &'a [u8], width: usize) -> Self {
        Self { bytes, width }
    }

    /// Number of whole records.
    pub fn len(&self) -> usize {
        self.bytes.len().checked_div(self.width).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records as on the wire.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn iter(&self) -> SzlRecordsIter<'a> {
        SzlRecordsIter {
            rest: self.bytes,
            width: self.width,
        }
    }
}

impl<'a> IntoIterator for SzlRecords<'a> {
    type Item = &'a [u8];
    type IntoIter = SzlRecordsIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[derive(Debug, Clone)]
pub struct SzlRecordsIter<'a> {
    rest: &'a [u8],
    width: usize,
}

impl<'a> Iterator for SzlRecordsIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        // A zero width would yield empty records forever.
        if self.width == 0 {
            return None;
        }
        let (record, rest) = self.rest.split_at_checked(self.width)?;
        self.rest = rest;
        Some(record)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.rest.len().checked_div(self.width).unwrap_or(0);
        (left, Some(left))
    }
}

impl ExactSizeIterator for SzlRecordsIter<'_> {}
impl FusedIterator for SzlRecordsIter<'_> {}

const MODULE_ID_LEN: usize = 28;
const ORDER_NUMBER: core::ops::Range<usize> = 2..22;
const MODULE_TYPE: core::ops::Range<usize> = 22..24;
const AUSBG: core::ops::Range<usize> = 24..26;
const AUSBE: core::ops::Range<usize> = 26..28;

/// A module identification record (SZL 0x0011/0x0111): index, order number, module type and
/// two version words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleIdRecord<'a> {
    pub index: u16,
    /// MLFB, 20 characters padded with spaces, e.g. "6ES7 315-2EH14-0AB0 ".
    pub mlfb: &'a [u8],
    /// BGTyp, module type id.
    pub module_type: u16,
    /// Ausbg: hardware version, or for the firmware records 'V' and the major version.
    pub ausbg: u16,
    /// Ausbe: release, or for the firmware records minor and patch version.
    pub ausbe: u16,
}

impl<'a> ModuleIdRecord<'a> {
    /// Index of the module's own record.
    pub const MODULE: u16 = 0x0001;
    pub const BASIC_HARDWARE: u16 = 0x0006;
    /// Index of the firmware record.
    pub const FIRMWARE: u16 = 0x0007;
    pub const FIRMWARE_EXTENSION: u16 = 0x0081;
    pub const BOOT_LOADER: u16 = 0x0082;

    fn parse(record: &'a [u8]) -> Option<Self> {
        Some(Self {
            index: be_u16(record, 0..2)?,
            mlfb: record.get(ORDER_NUMBER)?,
            module_type: be_u16(record, MODULE_TYPE)?,
            ausbg: be_u16(record, AUSBG)?,
            ausbe: be_u16(record, AUSBE)?,
        })
    }

    /// The order number without its padding.
    pub fn order_number(&self) -> &'a [u8] {
        trim_text(self.mlfb)
    }

    /// The version of a firmware record: Ausbg's high byte is a letter ('V' for released
    /// firmware), its low byte the major version, Ausbe's bytes minor and patch. Wireshark
    /// shows the words as numbers (22019 and 518 for V3.2.6).
    pub fn version(&self) -> Option<ModuleVersion> {
        let [prefix, major] = self.ausbg.to_be_bytes();
        let [minor, patch] = self.ausbe.to_be_bytes();
        prefix.is_ascii_uppercase().then_some(ModuleVersion {
            prefix,
            major,
            minor,
            patch,
        })
    }

    /// snake_case name of the record's index, `None` when unknown.
    pub const fn index_name(&self) -> Option<&'static str> {
        Some(match self.index {
            0x0001 => "module",
            0x0006 => "basic_hardware",
            0x0007 => "basic_firmware",
            0x0081 => "firmware_extension",
            0x0082 => "boot_loader",
            _ => return None,
        })
    }
}

/// A firmware version as S7 encodes it: a letter and three numbers ("V3.2.6").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModuleVersion {
    pub prefix: u8,
    pub major: u8,
    pub minor: u8,
    pub patch: u8,
}

impl fmt::Display for ModuleVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}.{}.{}",
            char::from(self.prefix),
            self.major,
            self.minor,
            self.patch
        )
    }
}

/// Module identification records, from [`SzlList::module_identification`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleIdRecords<'a>(SzlRecords<'a>);

impl<'a> ModuleIdRecords<'a> {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = ModuleIdRecord<'a>> + 'a {
        self.0.iter().filter_map(ModuleIdRecord::parse)
    }
}

const COMPONENT_ID_LEN: usize = 34;

/// A component identification record (SZL 0x001C/0x011C): index and 32 bytes, text for most
/// indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComponentIdRecord<'a> {
    pub index: u16,
    /// 32 bytes as sent: text padded with NULs for the name indexes, binary for 9 and 10.
    pub value: &'a [u8],
}

impl<'a> ComponentIdRecord<'a> {
    pub const AUTOMATION_SYSTEM_NAME: u16 = 1;
    pub const MODULE_NAME: u16 = 2;
    pub const PLANT_DESIGNATION: u16 = 3;
    pub const COPYRIGHT: u16 = 4;
    pub const SERIAL_NUMBER: u16 = 5;
    pub const MODULE_TYPE_NAME: u16 = 7;
    pub const MEMORY_CARD_SERIAL_NUMBER: u16 = 8;
    /// Manufacturer and profile of a CPU module (binary).
    pub const MANUFACTURER_PROFILE: u16 = 9;
    /// OEM id (binary).
    pub const OEM_ID: u16 = 10;
    pub const LOCATION_DESIGNATION: u16 = 11;

    fn parse(record: &'a [u8]) -> Option<Self> {
        let (index, value) = record.split_first_chunk::<2>()?;
        Some(Self {
            index: u16::from_be_bytes(*index),
            value,
        })
    }

    /// The value up to its padding: the text of the name records.
    pub fn text(&self) -> &'a [u8] {
        let end = self
            .value
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.value.len());
        trim_text(self.value.get(..end).unwrap_or_default())
    }

    /// snake_case name of the record's index, `None` when unknown.
    pub const fn index_name(&self) -> Option<&'static str> {
        Some(match self.index {
            1 => "automation_system_name",
            2 => "module_name",
            3 => "plant_designation",
            4 => "copyright",
            5 => "serial_number",
            7 => "module_type_name",
            8 => "memory_card_serial_number",
            9 => "manufacturer_profile",
            10 => "oem_id",
            11 => "location_designation",
            _ => return None,
        })
    }
}

/// Component identification records, from [`SzlList::component_identification`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComponentIdRecords<'a>(SzlRecords<'a>);

impl<'a> ComponentIdRecords<'a> {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = ComponentIdRecord<'a>> + 'a {
        self.0.iter().filter_map(ComponentIdRecord::parse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s7::testutil::hex;

    #[test]
    fn partial_lists_and_bad_headers() {
        // Two 2-byte records announced, one present: only a first fragment may do that.
        let data = [
            0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x02, 0xAA, 0xBB, 0xCC,
        ];
        assert!(SzlList::parse(&data, false).is_none());
        let list = SzlList::parse(&data, true).unwrap();
        assert!(!list.complete);
        assert_eq!(list.records.len(), 1);
        assert_eq!(list.records.iter().collect::<Vec<_>>(), [&[0xAA, 0xBB][..]]);
        // A continuation read as a header announces far more than a list can hold.
        let text = b"MMC 4A1AC019\0\0\0\0";
        assert!(SzlList::parse(text, true).is_none());
        // Zero-width records with a count, and a header cut short.
        assert!(SzlList::parse(&[0, 0x11, 0, 0, 0, 0, 0, 1], false).is_none());
        assert!(SzlList::parse(&[0, 0x11, 0, 0, 0, 0], false).is_none());
        // s7comm_reading_plc_status.pcap: SZL 0x0F74 (LED status, header only) announces
        // seven 4-byte records and sends none.
        let header_only = SzlList::parse(&[0x0f, 0x74, 0, 0, 0, 4, 0, 7], false).unwrap();
        assert!(header_only.complete && header_only.records.is_empty());
        assert_eq!(header_only.record_count, 7);
        assert!(SzlList::parse(&[0x00, 0x74, 0, 0, 0, 4, 0, 7], false).is_none());
        let empty = SzlList::parse(&[0, 0x11, 0, 0, 0, 0, 0, 0], false).unwrap();
        assert!(empty.complete && empty.records.is_empty());
        assert_eq!(empty.records.iter().count(), 0);
        assert!(SzlRecords::new(&[1, 2, 3], 0).is_empty());
    }

    #[test]
    fn versions() {
        let record = hex("0007202020202020202020202020202020202020202000c056030206");
        let record = ModuleIdRecord::parse(&record).unwrap();
        assert_eq!(record.index_name(), Some("basic_firmware"));
        assert_eq!(record.order_number(), b"");
        let version = record.version().unwrap();
        assert_eq!(version.to_string(), "V3.2.6");
        let numeric = ModuleIdRecord {
            ausbg: 0x0004,
            ..record
        };
        assert_eq!(numeric.version(), None);
    }
}
