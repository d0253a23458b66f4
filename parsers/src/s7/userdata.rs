//! Userdata PDUs (ROSCTR 7): programming and diagnostic services. The parameter part names a
//! function group and subfunction; the data part carries return code, transport size, length
//! and the service's data, decoded here for SZL reads, block lists, block info requests and the
//! PLC clock, kept raw for the rest.

use core::iter::FusedIterator;
use core::marker::PhantomData;

use super::field::{data_item, ud_param as field};
use super::s7comm::BlockRef;
use super::szl::SzlList;
use super::tis::TisJob;
use super::{
    be_u16, BlockType, DataTransportSize, FunctionGroup, ParamErrorCode, ReturnCode, S7Error,
    S7ErrorKind, Subfunction, SzlId, UserdataMethod, UserdataType,
};

/// A decoded userdata PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Userdata<'a> {
    pub param: UserdataParam,
    /// The data part's header and data; `None` when the data part is empty.
    pub data: Option<UserdataData<'a>>,
    pub body: UserdataBody<'a>,
}

/// The userdata parameter part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserdataParam {
    /// 00 01 12 normally; mode-transition pushes send 01 00 10.
    pub head: [u8; 3],
    /// The length byte as sent: bytes after it, 4 or 8 (mode-transition pushes claim 16 and
    /// send 4, so the S7 header's parameter length is what frames the part).
    pub declared_len: u8,
    pub method: UserdataMethod,
    pub kind: UserdataType,
    pub group: FunctionGroup,
    pub subfunction: Subfunction,
    pub sequence: u8,
    /// Responses and follow-up requests (12-byte parameters): pieces of one answer split over
    /// several PDUs share it.
    pub data_unit_ref: Option<u8>,
    /// Responses: whether this is the last data unit (wire value 0x00) or more follow (0x01).
    pub last_data_unit: Option<bool>,
    pub error_code: Option<ParamErrorCode>,
}

impl UserdataParam {
    /// snake_case name of the subfunction in this parameter's group.
    pub fn subfunction_name(&self) -> Option<&'static str> {
        self.subfunction.name_in(self.group)
    }

    /// More PDUs of this answer follow.
    pub fn more_follows(&self) -> bool {
        self.last_data_unit == Some(false)
    }

    /// The response's error code, when it is one.
    pub fn error(&self) -> Option<ParamErrorCode> {
        self.error_code.filter(|code| code.0 != 0)
    }
}

/// The userdata data part: a four-byte header and the service's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserdataData<'a> {
    pub return_code: ReturnCode,
    pub transport_size: DataTransportSize,
    /// The length field: bytes of `data`.
    pub length: u16,
    pub data: &'a [u8],
}

/// What the data part means, for the services decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserdataBody<'a> {
    /// CPU functions / read SZL request: which list and index.
    SzlRequest { id: SzlId, index: u16 },
    /// CPU functions / read SZL response: the list, or the first piece of a split one.
    SzlResponse(SzlList<'a>),
    /// A later piece of an SZL response split over several PDUs: records continuing the list
    /// an earlier PDU with the same data unit reference announced. Joining them takes state
    /// this parser does not keep.
    SzlContinuation(&'a [u8]),
    /// Block functions / list blocks response: count per block type.
    BlockCounts(BlockCounts<'a>),
    /// Block functions / list blocks of type request: the type, as two ASCII hex digits.
    ListBlocksOfType { block_type: [u8; 2] },
    /// Block functions / list blocks of type response (or a later piece of one).
    BlockEntries(BlockEntries<'a>),
    /// Block functions / get block info request.
    BlockInfoRequest(BlockRef),
    /// Time functions: the clock read (response) or set (request).
    Clock(S7DateTime),
    /// Programmer commands / variable status, modify variable and force requests, and a
    /// replace job request carrying one of them: the addresses the test job reads or writes
    /// and, for modify and force, the values ([`TisJob::function`] says which job).
    Tis(TisJob<'a>),
    /// Any other service, an error response, or data that does not have the expected layout:
    /// [`Userdata::data`] holds it.
    Raw,
}

/// Decodes the parameter and data parts of a userdata PDU; `params_at` is the parameter part's
/// offset in the PDU, for error offsets.
pub(super) fn parse_userdata<'a>(
    params: &'a [u8],
    data: &'a [u8],
    params_at: usize,
) -> Result<Userdata<'a>, S7Error> {
    let param = parse_param(params, params_at)?;
    let data_at = params_at + params.len();
    let data = if data.is_empty() {
        None
    } else {
        let (head, rest) = data
            .split_first_chunk::<{ data_item::DATA }>()
            .ok_or(S7Error::new(S7ErrorKind::Truncated, data_at + data.len()))?;
        let [return_code, transport_size, l0, l1] = *head;
        let length = u16::from_be_bytes([l0, l1]);
        if usize::from(length) != rest.len() {
            return Err(S7Error::new(
                S7ErrorKind::LengthMismatch,
                data_at + data_item::LENGTH.start,
            ));
        }
        Some(UserdataData {
            return_code: ReturnCode(return_code),
            transport_size: DataTransportSize(transport_size),
            length,
            data: rest,
        })
    };
    let body = data.map_or(UserdataBody::Raw, |data| body(&param, &data));
    Ok(Userdata { param, data, body })
}

fn parse_param(params: &[u8], params_at: usize) -> Result<UserdataParam, S7Error> {
    let long = match params.len() {
        field::SHORT_LEN => false,
        field::LONG_LEN => true,
        len if len < field::SHORT_LEN => {
            return Err(S7Error::new(S7ErrorKind::Truncated, params_at + len));
        }
        _ => {
            return Err(S7Error::new(
                S7ErrorKind::LengthMismatch,
                params_at + field::LENGTH,
            ))
        }
    };
    let byte = |at: usize| params.get(at).copied().unwrap_or_default();
    let head = params.get(field::HEAD).and_then(|h| h.try_into().ok());
    let (data_unit_ref, last_data_unit, error_code) = if long {
        (
            params.get(field::DATA_UNIT_REF).copied(),
            params.get(field::LAST_DATA_UNIT).map(|&ldu| ldu == 0),
            be_u16(params, field::ERROR_CODE).map(ParamErrorCode),
        )
    } else {
        (None, None, None)
    };
    // The length check above makes every fixed field present.
    let type_group = byte(field::TYPE_GROUP);
    Ok(UserdataParam {
        head: head.unwrap_or_default(),
        declared_len: byte(field::LENGTH),
        method: UserdataMethod(byte(field::METHOD)),
        kind: UserdataType(type_group >> 4),
        group: FunctionGroup(type_group & 0x0F),
        subfunction: Subfunction(byte(field::SUBFUNCTION)),
        sequence: byte(field::SEQUENCE),
        data_unit_ref,
        last_data_unit,
        error_code,
    })
}

/// Decodes the data of the services this crate knows; anything unexpected stays raw, since
/// the framing around it was sound.
fn body<'a>(param: &UserdataParam, data: &UserdataData<'a>) -> UserdataBody<'a> {
    let bytes = data.data;
    let request = param.kind == UserdataType::REQUEST;
    let response = param.kind == UserdataType::RESPONSE && data.return_code.is_success();
    let decoded = match (param.group, param.subfunction) {
        (FunctionGroup::CPU_FUNCTIONS, Subfunction::READ_SZL) if request => match *bytes {
            [i0, i1, x0, x1] => Some(UserdataBody::SzlRequest {
                id: SzlId(u16::from_be_bytes([i0, i1])),
                index: u16::from_be_bytes([x0, x1]),
            }),
            _ => None,
        },
        (FunctionGroup::CPU_FUNCTIONS, Subfunction::READ_SZL) if response => {
            match SzlList::parse(bytes, param.more_follows()) {
                Some(list) => Some(UserdataBody::SzlResponse(list)),
                None if param.data_unit_ref.is_some_and(|dur| dur != 0) => {
                    Some(UserdataBody::SzlContinuation(bytes))
                }
                None => None,
            }
        }
        (FunctionGroup::BLOCK_FUNCTIONS, Subfunction::LIST_BLOCKS) if response => {
            BlockCounts::new(bytes).map(UserdataBody::BlockCounts)
        }
        (FunctionGroup::BLOCK_FUNCTIONS, Subfunction::LIST_BLOCKS_OF_TYPE) if request => {
            match *bytes {
                [t0, t1] => Some(UserdataBody::ListBlocksOfType {
                    block_type: [t0, t1],
                }),
                _ => None,
            }
        }
        (FunctionGroup::BLOCK_FUNCTIONS, Subfunction::LIST_BLOCKS_OF_TYPE) if response => {
            BlockEntries::new(bytes).map(UserdataBody::BlockEntries)
        }
        (FunctionGroup::BLOCK_FUNCTIONS, Subfunction::GET_BLOCK_INFO) if request => {
            BlockRef::parse(bytes).map(UserdataBody::BlockInfoRequest)
        }
        (
            FunctionGroup::PROGRAMMER_COMMANDS,
            sub @ (Subfunction::VARIABLE_STATUS
            | Subfunction::MODIFY_VARIABLE
            | Subfunction::FORCE
            | Subfunction::REPLACE_JOB),
        ) if request && param.last_data_unit != Some(false) => {
            TisJob::parse(bytes, sub).map(UserdataBody::Tis)
        }
        (FunctionGroup::TIME_FUNCTIONS, sub) => {
            let read = matches!(
                sub,
                Subfunction::READ_CLOCK | Subfunction::READ_CLOCK_FOLLOWING
            );
            let set = matches!(sub, Subfunction::SET_CLOCK | Subfunction::SET_CLOCK_2);
            if (read && response) || (set && request) {
                S7DateTime::parse(bytes).map(UserdataBody::Clock)
            } else {
                None
            }
        }
        _ => None,
    };
    decoded.unwrap_or(UserdataBody::Raw)
}

const BLOCK_RECORD_LEN: usize = 4;

/// One entry of a list blocks response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockCount {
    /// The type as sent: two ASCII hex digits ("08" for OB).
    pub block_type: [u8; 2],
    pub count: u16,
}

impl BlockCount {
    pub fn block_type(&self) -> Option<BlockType> {
        BlockType::from_ascii(self.block_type)
    }
}

/// A view of whole four-byte records (list blocks responses), each decoded on the fly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRecords<'a, T>(&'a [[u8; BLOCK_RECORD_LEN]], PhantomData<T>);

/// The entries of a list blocks response.
pub type BlockCounts<'a> = BlockRecords<'a, BlockCount>;
/// The entries of a list blocks of type response.
pub type BlockEntries<'a> = BlockRecords<'a, BlockEntry>;
pub type BlockCountsIter<'a> = BlockRecordsIter<'a, BlockCount>;
pub type BlockEntriesIter<'a> = BlockRecordsIter<'a, BlockEntry>;

impl<T> Default for BlockRecords<'_, T> {
    fn default() -> Self {
        Self(&[], PhantomData)
    }
}

impl<'a, T: From<[u8; BLOCK_RECORD_LEN]>> BlockRecords<'a, T> {
    /// `None` unless `bytes` is a whole number of records.
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        match bytes.as_chunks::<BLOCK_RECORD_LEN>() {
            (records, []) => Some(Self(records, PhantomData)),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> BlockRecordsIter<'a, T> {
        BlockRecordsIter(self.0.iter(), PhantomData)
    }
}

impl<'a, T: From<[u8; BLOCK_RECORD_LEN]>> IntoIterator for BlockRecords<'a, T> {
    type Item = T;
    type IntoIter = BlockRecordsIter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[derive(Debug, Clone)]
pub struct BlockRecordsIter<'a, T>(
    core::slice::Iter<'a, [u8; BLOCK_RECORD_LEN]>,
    PhantomData<T>,
);

impl<T: From<[u8; BLOCK_RECORD_LEN]>> Iterator for BlockRecordsIter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.0.next().map(|&record| T::from(record))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl<T: From<[u8; BLOCK_RECORD_LEN]>> ExactSizeIterator for BlockRecordsIter<'_, T> {}
impl<T: From<[u8; BLOCK_RECORD_LEN]>> FusedIterator for BlockRecordsIter<'_, T> {}

impl From<[u8; BLOCK_RECORD_LEN]> for BlockCount {
    fn from([t0, t1, c0, c1]: [u8; BLOCK_RECORD_LEN]) -> Self {
        BlockCount {
            block_type: [t0, t1],
            count: u16::from_be_bytes([c0, c1]),
        }
    }
}

/// One entry of a list blocks of type response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockEntry {
    pub number: u16,
    /// Block flags (Wireshark: 0x01 linked, 0x02 standard block, 0x20 non-retain...).
    pub flags: u8,
    /// Programming language (1 AWL/STL, 2 KOP/LAD, 3 FUP/FBD, 4 SCL, 5 DB, 6 GRAPH...).
    pub language: u8,
}

impl From<[u8; BLOCK_RECORD_LEN]> for BlockEntry {
    fn from([n0, n1, flags, language]: [u8; BLOCK_RECORD_LEN]) -> Self {
        BlockEntry {
            number: u16::from_be_bytes([n0, n1]),
            flags,
            language,
        }
    }
}

/// A PLC clock value: the 10-byte BCD timestamp of the time functions (a reserved byte, then
/// century, year, month, day, hour, minute, second, milliseconds in three digits and the
/// weekday in the last nibble).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct S7DateTime {
    /// Two-digit years below 90 are 20xx, others 19xx, as S7's DATE_AND_TIME has it; the
    /// century byte is ignored because some CPUs send 19 for 2014 (Wireshark does the same).
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub millisecond: u16,
    /// 1 = Sunday ... 7 = Saturday; 0 undefined.
    pub weekday: u8,
}

impl S7DateTime {
    /// `None` unless exactly 10 bytes of valid BCD with plausible field values.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let &[_reserved, _century, year, month, day, hour, minute, second, ms_hi, ms_lo_weekday] =
            bytes
        else {
            return None;
        };
        let year = bcd(year)?;
        let ms_lo = ms_lo_weekday >> 4;
        let time = Self {
            year: if year < 90 { 2000 } else { 1900 } + u16::from(year),
            month: bcd(month)?,
            day: bcd(day)?,
            hour: bcd(hour)?,
            minute: bcd(minute)?,
            second: bcd(second)?,
            millisecond: u16::from(bcd(ms_hi)?) * 10 + u16::from((ms_lo <= 9).then_some(ms_lo)?),
            weekday: ms_lo_weekday & 0x0F,
        };
        let plausible = (1..=12).contains(&time.month)
            && (1..=31).contains(&time.day)
            && time.hour < 24
            && time.minute < 60
            && time.second < 60
            && time.weekday <= 7;
        plausible.then_some(time)
    }
}

/// Two BCD digits; `None` if either nibble is above 9.
fn bcd(byte: u8) -> Option<u8> {
    let (hi, lo) = (byte >> 4, byte & 0x0F);
    (hi <= 9 && lo <= 9).then_some(hi * 10 + lo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s7::testutil::{hex, s7_of};
    use crate::s7::{parse_s7comm, ComponentIdRecord, S7Body, S7Pdu};

    fn userdata_of(bytes: &[u8]) -> Userdata<'_> {
        let pdu: S7Pdu<'_> = parse_s7comm(s7_of(bytes)).unwrap();
        match pdu.body {
            S7Body::Userdata(userdata) => userdata,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn read_szl_0011_module_identification() {
        // s7ident.pcap frame 10: read SZL 0x0011 index 0 (a CISA ICSNPP trace of an
        // identification scan against an S7-315-2 PN/DP).
        let request = hex("0300002102f080320700000100000800080001120411440100ff09000400110000");
        let ud = userdata_of(&request);
        assert_eq!(ud.param.head, [0x00, 0x01, 0x12]);
        assert_eq!(ud.param.method, UserdataMethod::REQUEST);
        assert_eq!(ud.param.kind, UserdataType::REQUEST);
        assert_eq!(ud.param.group, FunctionGroup::CPU_FUNCTIONS);
        assert_eq!(ud.param.subfunction_name(), Some("read_szl"));
        assert_eq!(ud.param.data_unit_ref, None);
        assert_eq!(
            ud.body,
            UserdataBody::SzlRequest {
                id: SzlId::MODULE_IDENTIFICATION,
                index: 0
            }
        );
        // Frame 11: the answer.
        let response = hex(
            "0300009902f080320700000100000c007c000112081284010000000000ff09007800110000001c00\
             04000136455337203331352d32454831342d304142302000c000040001000636455337203331352d\
             32454831342d304142302000c0000400010007202020202020202020202020202020202020202000\
             c0560302060081426f6f74204c6f61646572202020202020202020000041200909",
        );
        let ud = userdata_of(&response);
        assert_eq!(ud.param.method, UserdataMethod::RESPONSE);
        assert_eq!(ud.param.kind, UserdataType::RESPONSE);
        assert_eq!(ud.param.last_data_unit, Some(true));
        assert_eq!(ud.param.error(), None);
        let data = ud.data.unwrap();
        assert_eq!(data.return_code, ReturnCode::SUCCESS);
        assert_eq!(data.transport_size, DataTransportSize::OCTET_STRING);
        let UserdataBody::SzlResponse(list) = ud.body else {
            panic!("{:?}", ud.body)
        };
        assert_eq!((list.id, list.index), (SzlId::MODULE_IDENTIFICATION, 0));
        assert_eq!((list.record_len, list.record_count), (28, 4));
        assert!(list.complete);
        assert_eq!(list.order_number(), Some(&b"6ES7 315-2EH14-0AB0"[..]));
        assert_eq!(list.firmware_version().unwrap().to_string(), "V3.2.6");
        let records: Vec<_> = list.module_identification().unwrap().iter().collect();
        assert_eq!(records.len(), 4);
        assert_eq!(records[0].module_type, 0x00c0);
        assert_eq!((records[0].ausbg, records[0].ausbe), (4, 1));
        assert_eq!(records[3].index_name(), Some("firmware_extension"));
        assert_eq!(records[3].order_number(), b"Boot Loader");
        assert!(list.component_identification().is_none());
    }

    #[test]
    fn read_szl_001c_component_identification() {
        // s7ident.pcap frame 13.
        let response = hex(
            "0300017d02f080320700000200000c0160000112081284010000000000ff09015c001c0000002200\
             0a0001534e4150372d53455256455200000000000000000000000000000000000000000002435055\
             203331352d3220504e2f445000000000000000000000000000000000000003000000000000000000\
             000000000000000000000000000000000000000000000000044f726967696e616c205369656d656e\
             732045717569706d656e7400000000000000055320432d4332555232383932323031320000000000\
             00000000000000000000000007435055203331352d3220504e2f4450000000000000000000000000\
             000000000000084d4d43203236374646313146000000000000000000000000000000000000000000\
             09002af60000010000000000000000000000000000000000000000000000000000000a0000000000\
             000000000000000000000000000000000000000000000000000000000b0000000000000000000000\
             000000000000000000000000000000000000000000",
        );
        let ud = userdata_of(&response);
        let UserdataBody::SzlResponse(list) = ud.body else {
            panic!("{:?}", ud.body)
        };
        assert_eq!(list.id, SzlId::COMPONENT_IDENTIFICATION);
        assert_eq!((list.record_len, list.record_count), (34, 10));
        assert_eq!(list.serial_number(), Some(&b"S C-C2UR28922012"[..]));
        assert_eq!(
            list.component(ComponentIdRecord::AUTOMATION_SYSTEM_NAME),
            Some(&b"SNAP7-SERVER"[..])
        );
        assert_eq!(
            list.component(ComponentIdRecord::MODULE_NAME),
            Some(&b"CPU 315-2 PN/DP"[..])
        );
        assert_eq!(
            list.component(ComponentIdRecord::PLANT_DESIGNATION),
            Some(&b""[..])
        );
        assert_eq!(
            list.component(ComponentIdRecord::COPYRIGHT),
            Some(&b"Original Siemens Equipment"[..])
        );
        assert_eq!(
            list.component(ComponentIdRecord::MEMORY_CARD_SERIAL_NUMBER),
            Some(&b"MMC 267FF11F"[..])
        );
        let names: Vec<_> = list
            .component_identification()
            .unwrap()
            .iter()
            .map(|r| r.index_name())
            .collect();
        assert_eq!(names.len(), 10);
        assert_eq!(names[4], Some("serial_number"));
        assert!(list.order_number().is_none());
    }

    #[test]
    fn split_szl_response() {
        // snap7_s300_everything.pcapng frames 6-8: SZL 0x001C split over two PDUs (data unit
        // reference 0xD5): the first piece, the follow-up request, the last piece.
        let first = hex(
            "030000f702f080320700000200000c00da0001120812840102d5010000ff0900d6001c0000002200\
             0a000153373330302f45543230304d2073746174696f6e5f31000000000000000000000002504c43\
             5f310000000000000000000000000000000000000000000000000000000003000000000000000000\
             000000000000000000000000000000000000000000000000044f726967696e616c205369656d656e\
             732045717569706d656e7400000000000000055320432d4231553339333134323031310000000000\
             00000000000000000000000007435055203331352d3220504e2f4450000000000000000000000000\
             00000000000008",
        );
        let ud = userdata_of(&first);
        assert_eq!(ud.param.data_unit_ref, Some(0xd5));
        assert!(ud.param.more_follows());
        let UserdataBody::SzlResponse(list) = ud.body else {
            panic!("{:?}", ud.body)
        };
        assert!(!list.complete);
        assert_eq!(list.record_count, 10);
        // Six whole records; the seventh is cut after its index and continues in frame 8.
        assert_eq!(list.records.len(), 6);
        assert_eq!(
            list.component(ComponentIdRecord::AUTOMATION_SYSTEM_NAME),
            Some(&b"S7300/ET200M station_1"[..])
        );
        assert_eq!(list.serial_number(), Some(&b"S C-B1U393142011"[..]));

        let follow_up = hex("0300002102f080320700000300000c00040001120812440102000000000a000000");
        let ud = userdata_of(&follow_up);
        assert_eq!(ud.param.kind, UserdataType::REQUEST);
        assert_eq!(ud.param.data_unit_ref, Some(0));
        assert_eq!(
            ud.data.unwrap().return_code,
            ReturnCode::OBJECT_DOES_NOT_EXIST
        );
        assert_eq!(ud.body, UserdataBody::Raw);

        let last = hex(
            "030000a702f080320700000300000c008a0001120812840102d5000000ff0900864d4d4320344131\
             414330313900000000000000000000000000000000000000000009002af600000100000000000000\
             00000000000000000000000000000000000000000a00000000000000000000000000000000000000\
             00000000000000000000000000000b00000000000000000000000000000000000000000000000000\
             00000000000000",
        );
        let ud = userdata_of(&last);
        assert_eq!(ud.param.last_data_unit, Some(true));
        assert!(matches!(ud.body, UserdataBody::SzlContinuation(d) if d.starts_with(b"MMC 4A1A")));
    }

    #[test]
    fn block_functions() {
        // s7comm_downloading_block_db1.pcap frames 22/23: list blocks.
        let request = hex("0300001d02f0803207000007000008000400011204114301000a000000");
        let ud = userdata_of(&request);
        assert_eq!(ud.param.group, FunctionGroup::BLOCK_FUNCTIONS);
        assert_eq!(ud.param.subfunction_name(), Some("list_blocks"));
        assert_eq!(ud.body, UserdataBody::Raw);
        let response = hex(
            "0300003d02f080320700000700000c0020000112081283010000000000ff09001c3038000130450000\
             30430000304100003042000c304400473046000e",
        );
        let UserdataBody::BlockCounts(counts) = userdata_of(&response).body else {
            panic!()
        };
        let counts: Vec<(Option<BlockType>, u16)> =
            counts.iter().map(|c| (c.block_type(), c.count)).collect();
        assert_eq!(
            counts,
            [
                (Some(BlockType::OB), 1),
                (Some(BlockType::FB), 0),
                (Some(BlockType::FC), 0),
                (Some(BlockType::DB), 0),
                (Some(BlockType::SDB), 12),
                (Some(BlockType::SFC), 71),
                (Some(BlockType::SFB), 14),
            ]
        );
        // Frames 34/35: list blocks of type OB; OB1, flags 0x22, language 3 (FUP).
        let request = hex("0300001f02f080320700000b00000800060001120411430200ff0900023038");
        assert_eq!(
            userdata_of(&request).body,
            UserdataBody::ListBlocksOfType { block_type: *b"08" }
        );
        let response =
            hex("0300002502f080320700000b00000c0008000112081283020100000000ff09000400012203");
        let UserdataBody::BlockEntries(entries) = userdata_of(&response).body else {
            panic!()
        };
        assert_eq!(
            entries.iter().collect::<Vec<_>>(),
            [BlockEntry {
                number: 1,
                flags: 0x22,
                language: 3
            }]
        );
        // Frames 37/38: block info of DB1, refused with 0xD209.
        let request =
            hex("0300002502f080320700000c000008000c0001120411430300ff0900083041303030303142");
        assert_eq!(
            userdata_of(&request).body,
            UserdataBody::BlockInfoRequest(BlockRef {
                block_type: BlockType::DB,
                number: 1,
                filesystem: b'B'
            })
        );
        let response = hex("0300002102f080320700000c00000c000400011208128303000000d2090a000000");
        let ud = userdata_of(&response);
        assert_eq!(ud.param.error(), Some(ParamErrorCode::BLOCKS_NOT_FOUND));
        assert_eq!(ud.body, UserdataBody::Raw);
    }

    #[test]
    fn block_list_split_over_two_pdus() {
        // s7comm_program_blocklist_onlineview.pcap frames 95-99: the SFCs of the CPU, listed
        // in two pieces (data unit reference 4); each piece is whole entries.
        let request = hex("0300001f02f080320700000500000800060001120411430200ff0900023044");
        assert_eq!(
            userdata_of(&request).body,
            UserdataBody::ListBlocksOfType { block_type: *b"0D" }
        );
        let first = hex(
            "030000f102f080320700000500000c00d4000112081283020104010000ff0900d000004201000142\
             010002420100034201000442010005420100064201000b4201000c4201000d4201000e4201000f42\
             010011420100124201001342010014420100154201001642010017420100184201001c4201001d42\
             01001e4201001f420100204201002142010022420100244201002542010026420100274201002842\
             0100294201002a4201002b4201002c4201002e4201002f4201003142010032420100334201003442\
             0100664201003742010038420100394201003a4201003b4201004042010046420100474201004842\
             01",
        );
        let ud = userdata_of(&first);
        assert!(ud.param.more_follows());
        assert_eq!(ud.param.data_unit_ref, Some(4));
        let UserdataBody::BlockEntries(entries) = ud.body else {
            panic!("{:?}", ud.body)
        };
        assert_eq!(entries.len(), 52);
        assert_eq!(
            entries.iter().next(),
            Some(BlockEntry {
                number: 0,
                flags: 0x42,
                language: 1
            })
        );
        let last = hex(
            "0300006d02f080320700000600000c0050000112081283020104000000ff09004c00494201004a42\
             010051420100524201005342010054420100634201006542010067420100694201006a4201006b42\
             01006c4201006d4201007042010071420100724201007e4201007f4201",
        );
        let ud = userdata_of(&last);
        assert!(!ud.param.more_follows());
        let UserdataBody::BlockEntries(entries) = ud.body else {
            panic!("{:?}", ud.body)
        };
        assert_eq!(entries.len(), 19);
        assert_eq!(entries.iter().next().map(|e| e.number), Some(0x49));
    }

    #[test]
    fn time_functions() {
        // s7comm_reading_setting_plc_time.pcap frames 25/26: read clock, 2014-08-20
        // 11:59:43.912, a Wednesday.
        let request = hex("0300001d02f0803207000007000008000400011204114701000a000000");
        let ud = userdata_of(&request);
        assert_eq!(ud.param.group, FunctionGroup::TIME_FUNCTIONS);
        assert_eq!(ud.param.subfunction_name(), Some("read_clock"));
        assert_eq!(ud.body, UserdataBody::Raw);
        let response = hex("0300002b02f080320700000700000c000e000112081287010100000000ff09000a00191408201159439124");
        assert_eq!(
            userdata_of(&response).body,
            UserdataBody::Clock(S7DateTime {
                year: 2014,
                month: 8,
                day: 20,
                hour: 11,
                minute: 59,
                second: 43,
                millisecond: 912,
                weekday: 4
            })
        );
        // Frame 43: set clock to 11:59:33.040.
        let set =
            hex("0300002702f080320700000c000008000e0001120411470200ff09000a00191408201159330400");
        let ud = userdata_of(&set);
        assert_eq!(ud.param.subfunction_name(), Some("set_clock"));
        let UserdataBody::Clock(time) = ud.body else {
            panic!()
        };
        assert_eq!((time.second, time.millisecond, time.weekday), (33, 40, 0));
        assert_eq!(
            S7DateTime::parse(&[0, 0x19, 0x14, 0x13, 1, 1, 1, 1, 0, 0]),
            None
        );
        assert_eq!(
            S7DateTime::parse(&[0, 0x19, 0x1A, 1, 1, 1, 1, 1, 0, 0]),
            None
        );
        assert_eq!(S7DateTime::parse(&[0; 8]), None);
    }

    #[test]
    fn mode_transition_push() {
        // step7_s300_stop.pcapng frame 4: the CPU announces STOP. Head 01 00 10 and a length
        // byte of 16 for 4 bytes: the S7 header's length frames the part.
        let push = hex("0300001902f0803207000000000008000001001010000000 00");
        let ud = userdata_of(&push);
        assert_eq!(ud.param.head, [0x01, 0x00, 0x10]);
        assert_eq!(ud.param.declared_len, 16);
        assert_eq!(ud.param.method, UserdataMethod::UNDEFINED);
        assert_eq!(ud.param.kind, UserdataType::PUSH);
        assert_eq!(ud.param.group, FunctionGroup::MODE_TRANSITION);
        assert_eq!(ud.param.subfunction_name(), Some("stop"));
        assert_eq!(ud.data, None);
        // Frame 3: the diagnostic message push that precedes it, kept raw.
        let diag = hex(
            "0300003102f080320700000000000800180001120411040300ff0900144304ff84000000000000000094\
             01092153421521",
        );
        let ud = userdata_of(&diag);
        assert_eq!(ud.param.subfunction_name(), Some("diagnostic_message"));
        assert_eq!(ud.data.unwrap().data.len(), 20);
    }

    #[test]
    fn security_password() {
        // step7_s300_AuthPassword.pcapng frames 3/4: the (obfuscated) PLC password and the
        // PLC's answer.
        let pdu = hex("0300002502f0803207000006000008000c0001120411450100ff090008213a1b1d6e681b1d");
        let ud = userdata_of(&pdu);
        assert_eq!(ud.param.group, FunctionGroup::SECURITY);
        assert_eq!(ud.param.subfunction_name(), Some("plc_password"));
        assert_eq!(ud.data.unwrap().data.len(), 8);
        let answer = hex("0300002102f080320700000600000c00040001120812850101000000000a000000");
        let ud = userdata_of(&answer);
        assert_eq!(ud.param.kind, UserdataType::RESPONSE);
        assert_eq!(ud.param.error(), None);
    }

    #[test]
    fn malformed_userdata() {
        // Hand-built: the corpus has no malformed S7 PDU (every one decodes), so these are
        // real layouts with one field broken each.
        let e = |kind, offset| Err(S7Error::new(kind, offset));
        // Parameter part of 6 bytes.
        let short = hex("32070000000000060000 000112021144");
        assert_eq!(parse_s7comm(&short), e(S7ErrorKind::Truncated, 16));
        // Parameter part of 10 bytes: neither layout.
        let odd = hex("320700000000000a0000 00011206114401000000");
        assert_eq!(parse_s7comm(&odd), e(S7ErrorKind::LengthMismatch, 13));
        // Data header length disagreeing with the data part.
        let data = hex("32070000000000080005 0001120411440100 ff090004 00");
        assert_eq!(parse_s7comm(&data), e(S7ErrorKind::LengthMismatch, 20));
        // Data part of 2 bytes.
        let data = hex("32070000000000080002 0001120411440100 ff09");
        assert_eq!(parse_s7comm(&data), e(S7ErrorKind::Truncated, 20));
    }
}
