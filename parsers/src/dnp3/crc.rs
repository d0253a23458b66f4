//! CRC-16/DNP (clause 9): polynomial 0x3D65, processed LSB first (reflected 0xA6BC),
//! initial value 0, final complement; sent least significant octet first. Table-driven, eight
//! octets per step ("slicing by 8": eight tables, built at compile time), then one lookup per
//! octet for the rest. Every frame's header and every 16-octet data block is checked, so this
//! is a DNP3 capture's hottest loop; one lookup per octet made it a serial chain of loads.

/// 0x3D65 bit-reversed, for LSB-first processing.
const POLY_REFLECTED: u16 = 0xA6BC;

/// `TABLES[0]` is the one-octet table; `TABLES[k][b]` is the CRC of octet `b` followed by `k`
/// zero octets, so that eight octets are folded in with eight independent lookups.
const TABLES: [[u16; 256]; 8] = build_tables();

const fn build_tables() -> [[u16; 256]; 8] {
    let mut tables = [[0u16; 256]; 8];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u16;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY_REFLECTED
            } else {
                crc >> 1
            };
            bit += 1;
        }
        tables[0][byte] = crc;
        byte += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut byte = 0;
        while byte < 256 {
            let prev = tables[k - 1][byte];
            tables[k][byte] = (prev >> 8) ^ tables[0][(prev & 0xFF) as usize];
            byte += 1;
        }
        k += 1;
    }
    tables
}

/// CRC-16/DNP of `data`, as a number; the wire carries `crc16(data).to_le_bytes()`.
pub fn crc16(data: &[u8]) -> u16 {
    let t = &TABLES;
    let (blocks, rest) = data.as_chunks::<8>();
    let mut crc = 0u16;
    for b in blocks {
        let lo = usize::from((crc as u8) ^ b[0]);
        let hi = usize::from(((crc >> 8) as u8) ^ b[1]);
        crc = t[7][lo]
            ^ t[6][hi]
            ^ t[5][usize::from(b[2])]
            ^ t[4][usize::from(b[3])]
            ^ t[3][usize::from(b[4])]
            ^ t[2][usize::from(b[5])]
            ^ t[1][usize::from(b[6])]
            ^ t[0][usize::from(b[7])];
    }
    let crc = rest.iter().fold(crc, |crc, &byte| {
        (crc >> 8) ^ t[0][usize::from((crc ^ u16::from(byte)) & 0xFF)]
    });
    !crc
}

/// Whether `crc`, as read off the wire after `data`, is the CRC of `data`.
pub fn crc_matches(data: &[u8], crc: [u8; 2]) -> bool {
    crc16(data) == u16::from_le_bytes(crc)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bitwise reference implementation, to check the table against.
    fn crc16_bitwise(data: &[u8]) -> u16 {
        let mut crc = 0u16;
        for &byte in data {
            crc ^= u16::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ POLY_REFLECTED
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn catalogue_check_value() {
        // The CRC catalogue's check value for CRC-16/DNP over "123456789".
        assert_eq!(crc16(b"123456789"), 0xEA82);
        assert_eq!(crc16_bitwise(b"123456789"), 0xEA82);
    }

    #[test]
    fn known_headers() {
        // Reset link states, 1 -> 1024: the textbook example, CRC bytes E9 21.
        assert!(crc_matches(
            &[0x05, 0x64, 0x05, 0xC0, 0x01, 0x00, 0x00, 0x04],
            [0xE9, 0x21]
        ));
        // read_and_response.pcap frame 4: class 0123 read, 1 -> 10.
        assert!(crc_matches(
            &[0x05, 0x64, 0x14, 0xC4, 0x0A, 0x00, 0x01, 0x00],
            [0x8F, 0xED]
        ));
        // dnp3_udp_select_operate.pcap frame 9: request link status, 1 -> 100.
        assert!(crc_matches(
            &[0x05, 0x64, 0x05, 0x49, 0x64, 0x00, 0x01, 0x00],
            [0x7E, 0x5F]
        ));
        // dnp3_udp_select_operate.pcap frame 10: link status, 100 -> 1.
        assert!(crc_matches(
            &[0x05, 0x64, 0x05, 0x8B, 0x01, 0x00, 0x64, 0x00],
            [0xA0, 0x97]
        ));
        assert!(!crc_matches(
            &[0x05, 0x64, 0x05, 0xC0, 0x01, 0x00, 0x00, 0x04],
            [0x21, 0xE9]
        ));
    }

    #[test]
    fn known_data_blocks() {
        // dataset_exchange.pcap frame 2: both data blocks of a g0 response.
        let block0 = [
            0xC8, 0xC5, 0x81, 0x00, 0x00, 0x00, 0xD5, 0x00, 0x00, 0x00, 0x02, 0x04, 0x01, 0x00,
            0x00, 0x00,
        ];
        assert!(crc_matches(&block0, [0x60, 0x7A]));
        let block1 = [
            0x00, 0xD7, 0x00, 0x00, 0x00, 0x02, 0x04, 0x03, 0x00, 0x00, 0x00,
        ];
        assert!(crc_matches(&block1, [0x78, 0x9F]));
        // All-zero data has CRC 0xFFFF: the complement of an untouched register.
        assert_eq!(crc16(&[0; 4]), 0xFFFF);
        assert_eq!(crc16(&[]), 0xFFFF);
    }

    #[test]
    fn table_agrees_with_bitwise() {
        let data: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        for len in 0..data.len() {
            assert_eq!(crc16(&data[..len]), crc16_bitwise(&data[..len]), "{len}");
        }
        // Every alignment of the eight-octet steps against the data, and all-ones octets.
        for start in 1..8 {
            for len in 0..64 {
                let d = &data[start..start + len];
                assert_eq!(crc16(d), crc16_bitwise(d), "{start} {len}");
            }
        }
        assert_eq!(crc16(&[0xFF; 40]), crc16_bitwise(&[0xFF; 40]));
    }
}
