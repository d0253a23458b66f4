//! Test and installation (TIS) jobs of the userdata programmer commands (function group 1):
//! the variable status (0x02), modify variable (0x08) and force (0x09) requests a programming
//! station sends to watch or change a PLC's memory. Their items name memory in their own
//! six-byte form (area and element type in one byte, a repetition factor or bit position, DB
//! number, byte address), not as S7ANY pointers; modify and force carry the values to write
//! after all the addresses.
//!
//! Layout of the userdata data (after its four-byte header), as Wireshark reads it
//! (`s7comm_decode_ud_tis_subfunc`, `_tis_varstat`, `_tis_modvar`, `_tis_force`,
//! `_tis_item_address`, `_tis_item_value`):
//!
//! | bytes | field |
//! |---|---|
//! | 2 | TIS parameter size P |
//! | 2 | TIS data size D |
//! | P | TIS parameters (trigger type, frequency, event...), kept raw |
//! | D | item count N (2), N addresses of 6 bytes, then (modify, force) N values |
//!
//! A value is return code, transport size, length (2), data, and a fill byte after odd data
//! (after the last item too). The length counts bits for transport sizes BYTE/WORD/DWORD (4)
//! and INTEGER (5), bytes for the others.
//!
//! A replace job request (0x12) carries the job that replaces one set up before, in its TIS
//! data: 2 reserved bytes, the job's subfunction, its sequence number, then the job as above
//! (parameter size, data size, parameters, data); Wireshark's `s7comm_decode_ud_tis_jobs`.

use core::iter::FusedIterator;

#[cfg(test)]
use super::{Area, TransportSize};
use super::{DataTransportSize, ReturnCode, Subfunction, TisArea};

/// Bytes of one TIS address.
pub const TIS_ADDRESS_LEN: usize = 6;

/// One TIS address (Wireshark's "Address to read" / "Address to write").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TisAddress {
    pub area: TisArea,
    /// The repetition factor (elements), or for a bit area the bit position.
    pub repetition_or_bit: u8,
    /// DB number (Wireshark shows it for every area; it means something for DB areas).
    pub db: u16,
    /// Byte address; a timer's or counter's number.
    pub start: u16,
}

impl TisAddress {
    /// The bit of a bit area, `None` for the others.
    pub const fn bit(&self) -> Option<u8> {
        if self.area.is_bit() {
            Some(self.repetition_or_bit)
        } else {
            None
        }
    }

    /// Elements addressed: the repetition factor, one for a bit.
    pub const fn count(&self) -> u8 {
        if self.area.is_bit() {
            1
        } else {
            self.repetition_or_bit
        }
    }
}

impl From<[u8; TIS_ADDRESS_LEN]> for TisAddress {
    fn from([area, rep, d0, d1, s0, s1]: [u8; TIS_ADDRESS_LEN]) -> Self {
        TisAddress {
            area: TisArea(area),
            repetition_or_bit: rep,
            db: u16::from_be_bytes([d0, d1]),
            start: u16::from_be_bytes([s0, s1]),
        }
    }
}

/// One value of a modify or force job (Wireshark's "Data to write").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TisValue<'a> {
    /// Reserved (0x00) in a request.
    pub return_code: ReturnCode,
    pub transport_size: DataTransportSize,
    /// The length field as sent (bits for BYTE/WORD/DWORD and INTEGER, bytes otherwise).
    pub length: u16,
    pub data: &'a [u8],
}

/// The values after a modify or force job's addresses; iteration stops at the first one that
/// does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TisValues<'a> {
    bytes: &'a [u8],
    count: u16,
}

impl<'a> TisValues<'a> {
    pub fn iter(&self) -> TisValuesIter<'a> {
        TisValuesIter {
            rest: self.bytes,
            left: self.count,
        }
    }

    /// Values the job claims.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

impl<'a> IntoIterator for TisValues<'a> {
    type Item = TisValue<'a>;
    type IntoIter = TisValuesIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[derive(Debug, Clone)]
pub struct TisValuesIter<'a> {
    rest: &'a [u8],
    left: u16,
}

impl<'a> Iterator for TisValuesIter<'a> {
    type Item = TisValue<'a>;

    fn next(&mut self) -> Option<TisValue<'a>> {
        if self.left == 0 {
            return None;
        }
        let value = split_value(self.rest);
        match value {
            Some((value, rest)) => {
                self.rest = rest;
                self.left -= 1;
                Some(value)
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

impl FusedIterator for TisValuesIter<'_> {}

fn split_value(bytes: &[u8]) -> Option<(TisValue<'_>, &[u8])> {
    let (&[rc, ts, l0, l1], rest) = bytes.split_first_chunk::<4>()?;
    let length = u16::from_be_bytes([l0, l1]);
    let transport_size = DataTransportSize(ts);
    let n = match ts {
        // BYTE/WORD/DWORD and INTEGER: the length is in bits.
        0x04 | 0x05 => usize::from(length / 8),
        _ => usize::from(length),
    };
    let data = rest.get(..n)?;
    // A fill byte after odd data, where there is one (the last value's may be cut off).
    let after = rest.get(n + (n & 1)..).unwrap_or_default();
    Some((
        TisValue {
            return_code: ReturnCode(rc),
            transport_size,
            length,
            data,
        },
        after,
    ))
}

/// A variable status, modify variable or force request, or one carried by a replace job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TisJob<'a> {
    /// Which job: variable status, modify variable or force (for a replace job, the job it
    /// carries).
    pub function: Subfunction,
    /// The TIS parameters (trigger type, frequency, answer size, trigger event...), raw.
    pub params: &'a [u8],
    /// The addresses, in order.
    pub addresses: &'a [[u8; TIS_ADDRESS_LEN]],
    /// Modify and force: one value per address, in order. Empty for variable status.
    pub values: TisValues<'a>,
}

impl<'a> TisJob<'a> {
    /// The job of a userdata request with subfunction `sub`, from its data part (after the
    /// four-byte header). `None` when the sizes do not frame the parts, the addresses do not
    /// fit, or a replace job carries another kind of job.
    pub(super) fn parse(bytes: &'a [u8], sub: Subfunction) -> Option<Self> {
        if sub != Subfunction::REPLACE_JOB {
            return Self::of(sub, bytes);
        }
        let (_, data) = sized(bytes)?;
        // The replacing job: reserved (2), its subfunction, its sequence number, then the job.
        let (&[_, _, function, _], job) = data.split_first_chunk::<4>()?;
        match Subfunction(function) {
            f @ (Subfunction::VARIABLE_STATUS
            | Subfunction::MODIFY_VARIABLE
            | Subfunction::FORCE) => Self::of(f, job),
            _ => None,
        }
    }

    /// A variable status, modify or force job: sizes, parameters, then its data.
    fn of(function: Subfunction, bytes: &'a [u8]) -> Option<Self> {
        let (params, data) = sized(bytes)?;
        let (&[c0, c1], items) = data.split_first_chunk::<2>()?;
        let count = u16::from_be_bytes([c0, c1]);
        let address_bytes = items.get(..usize::from(count) * TIS_ADDRESS_LEN)?;
        let (addresses, []) = address_bytes.as_chunks::<TIS_ADDRESS_LEN>() else {
            return None;
        };
        let values = if function == Subfunction::VARIABLE_STATUS {
            TisValues::default()
        } else {
            TisValues {
                bytes: &items[address_bytes.len()..],
                count,
            }
        };
        Some(TisJob {
            function,
            params,
            addresses,
            values,
        })
    }

    /// The addresses, decoded.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = TisAddress> + Clone + 'a {
        self.addresses.iter().map(|&a| TisAddress::from(a))
    }
}

/// The parameters and data of a TIS job: parameter size, data size, then the two parts.
fn sized(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&[p0, p1, d0, d1], rest) = bytes.split_first_chunk::<4>()?;
    let param_len = usize::from(u16::from_be_bytes([p0, p1]));
    let data_len = usize::from(u16::from_be_bytes([d0, d1]));
    let params = rest.get(..param_len)?;
    let data = rest.get(param_len..param_len.checked_add(data_len)?)?;
    Some((params, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// step7_s300_rwVarTab.pcapng frame 1: modify MD0 (DWORD), MW4 (WORD) and I8.1, as
    /// Wireshark shows it (the userdata data after its four-byte header).
    const MODIFY: [u8; 64] = [
        0x00, 0x14, 0x00, 0x28, // sizes: parameters 20, data 40
        0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x06, 0x00, 0x01, 0x00, 0x01, 0x00, 0x01, 0x00,
        0x01, 0x00, 0x01, 0x02, 0x00, // parameters
        0x00, 0x03, // three items
        0x03, 0x01, 0x00, 0x00, 0x00, 0x00, // MD 0, 1 element
        0x02, 0x01, 0x00, 0x00, 0x00, 0x04, // MW 4, 1 element
        0x10, 0x01, 0x00, 0x00, 0x00, 0x08, // IX 8.1
        0x00, 0x09, 0x00, 0x04, 0x41, 0x33, 0x85, 0x1f, // 4 bytes
        0x00, 0x09, 0x00, 0x02, 0xde, 0xad, // 2 bytes
        0x00, 0x09, 0x00, 0x01, 0x01, 0x00, // 1 byte and its fill byte
    ];

    #[test]
    fn a_modify_job_as_wireshark_reads_it() {
        let job = TisJob::parse(&MODIFY, Subfunction::MODIFY_VARIABLE).expect("job");
        assert_eq!(job.params.len(), 20);
        let a: Vec<_> = job.iter().collect();
        assert_eq!(a.len(), 3);
        assert_eq!((a[0].area, a[0].count(), a[0].start), (TisArea::MD, 1, 0));
        assert_eq!(a[0].area.area(), Some(Area::FLAGS));
        assert_eq!(a[0].area.transport_size(), Some(TransportSize::DWORD));
        assert_eq!((a[1].area, a[1].start, a[1].bit()), (TisArea::MW, 4, None));
        assert_eq!(
            (a[2].area, a[2].start, a[2].bit()),
            (TisArea::IX, 8, Some(1))
        );
        assert_eq!(a[2].area.area(), Some(Area::INPUTS));
        assert_eq!(a[2].area.transport_size(), Some(TransportSize::BIT));
        let v: Vec<_> = job.values.iter().map(|v| v.data).collect();
        assert_eq!(v, [&[0x41, 0x33, 0x85, 0x1f][..], &[0xde, 0xad], &[0x01]]);
        // Variable status carries no values.
        assert!(TisJob::parse(&MODIFY, Subfunction::VARIABLE_STATUS)
            .expect("job")
            .values
            .is_empty());
    }

    /// A replace job carrying the modify above (Wireshark: reserved 2 bytes, the job's
    /// subfunction and sequence number, then the job), and one carrying a job of another kind.
    #[test]
    fn a_replace_job_carries_its_job() {
        let mut block = vec![0x00, 0x00, 0x08, 0x01];
        block.extend_from_slice(&MODIFY);
        let mut bytes = vec![0x00, 0x00];
        bytes.extend_from_slice(&(block.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&block);
        let job = TisJob::parse(&bytes, Subfunction::REPLACE_JOB).expect("job");
        assert_eq!(job.function, Subfunction::MODIFY_VARIABLE);
        assert_eq!(job.iter().count(), 3);
        assert_eq!(job.values.iter().count(), 3);
        bytes[6] = 0x01; // block status: not a job with addresses
        assert!(TisJob::parse(&bytes, Subfunction::REPLACE_JOB).is_none());
    }

    #[test]
    fn lengths_in_bits_and_cut_values() {
        // A WORD value whose length counts bits (16), then one cut short.
        let bytes = [
            0x00, 0x04, 0x00, 0x10, 0x12, 0x34, 0x00, 0x04, 0x00, 0x10, 0x12,
        ];
        let values = TisValues {
            bytes: &bytes,
            count: 2,
        };
        let v: Vec<_> = values.iter().collect();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].data, [0x12, 0x34]);
        // More items claimed than the data holds: not a job.
        let mut short = MODIFY;
        short[25] = 9;
        assert!(TisJob::parse(&short, Subfunction::MODIFY_VARIABLE).is_none());
        // Sizes that overrun the data.
        assert!(TisJob::parse(&MODIFY[..40], Subfunction::MODIFY_VARIABLE).is_none());
        assert!(TisJob::parse(&[], Subfunction::MODIFY_VARIABLE).is_none());
    }

    #[test]
    fn areas_map_to_s7any() {
        for (code, area, size) in [
            (0x00, Area::FLAGS, TransportSize::BIT),
            (0x13, Area::INPUTS, TransportSize::DWORD),
            (0x21, Area::OUTPUTS, TransportSize::BYTE),
            (0x32, Area::PERIPHERAL, TransportSize::WORD),
            (0x54, Area::TIMERS, TransportSize::TIMER),
            (0x64, Area::COUNTERS, TransportSize::COUNTER),
            (0x70, Area::DATA_BLOCKS, TransportSize::BIT),
            (0x73, Area::DATA_BLOCKS, TransportSize::DWORD),
        ] {
            let a = TisArea(code);
            assert!(a.name().is_some(), "{code:#x}");
            assert_eq!(a.area(), Some(area), "{code:#x}");
            assert_eq!(a.transport_size(), Some(size), "{code:#x}");
        }
        for code in [0x04, 0x30, 0x40, 0x55, 0x74, 0xff] {
            assert_eq!(TisArea(code).area(), None, "{code:#x}");
            assert_eq!(TisArea(code).transport_size(), None, "{code:#x}");
        }
        assert!(!TisArea::TIMER.is_bit() && TisArea::DBX.is_bit());
    }
}
