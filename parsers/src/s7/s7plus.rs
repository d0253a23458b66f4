//! S7comm-plus (protocol id 0x72), the protocol of S7-1200/1500 and TIA Portal: the framing
//! (header, integrity part, trailer) and the fixed fields of the data part (opcode, function,
//! sequence number, session id). The object/attribute tree that follows is not decoded; it is
//! borrowed whole.
//!
//! Layout after the s7commwireshark plugin's `packet-s7comm_plus.c`:
//!
//! ```text
//! 72 VV LL LL | [V3: digest length, digest] data part (LL LL bytes) | 72 VV 00 00
//! data part: opcode | reserved u16 | function u16 | reserved u16 | sequence u16
//!            | request: session id u32, transport flags u8 | response: transport flags u8
//! ```
//!
//! A message too large for one PDU is split over several, all but the last without the
//! trailer; only the first starts with an opcode.

use super::field::plus as field;
use super::{
    be_u16, be_u32, PlusFunction, PlusOpcode, PlusVersion, S7Error, S7ErrorKind, S7PLUS_PROTOCOL_ID,
};

/// A decoded S7comm-plus PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct S7PlusPdu<'a> {
    pub version: PlusVersion,
    /// The header's length field: bytes of the data part (0 for keep-alives, which have none).
    pub data_len: u16,
    /// Whether the four-byte trailer closes the PDU. Without it the data part is a piece of a
    /// message continued in the next PDU.
    pub has_trailer: bool,
    pub body: S7PlusBody<'a>,
}

impl<'a> S7PlusPdu<'a> {
    /// The message, for PDUs that carry a whole one.
    pub fn message(&self) -> Option<S7PlusMessage<'a>> {
        match self.body {
            S7PlusBody::Message(message) => Some(message),
            _ => None,
        }
    }

    /// Protocol version 3: every data part opens with a message digest (HMAC over the session
    /// key), so the traffic cannot be altered without the key.
    pub fn is_integrity_protected(&self) -> bool {
        self.version == PlusVersion::V3
    }
}

/// What an S7comm-plus PDU carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S7PlusBody<'a> {
    /// Version 0xFF: a four-byte keep-alive.
    KeepAlive { sequence: u8, reserved: u8 },
    /// Version 0xFE (TIA V14 and later): the data part raw (confirmed byte counts, or a short
    /// text such as "LOGOUT").
    ExtendedKeepAlive(&'a [u8]),
    /// A data part that starts with a known opcode and has a trailer: a whole message.
    Message(S7PlusMessage<'a>),
    /// A data part without trailer: the first or a middle piece of a split message. Telling
    /// them apart, and joining them, takes state this parser does not keep.
    Fragment(&'a [u8]),
    /// A data part with trailer but an unknown opcode: most likely the last piece of a split
    /// message. The integrity digest of V3 has been removed.
    Unrecognized(&'a [u8]),
}

/// The fixed fields of a message's data part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct S7PlusMessage<'a> {
    /// V3: the digest that opens the data part (32 bytes in practice; its length byte is
    /// honoured).
    pub digest: Option<&'a [u8]>,
    pub opcode: PlusOpcode,
    /// `None` for notifications, which have no function.
    pub function: Option<PlusFunction>,
    pub sequence: Option<u16>,
    /// Requests: the session the client opened with CreateObject.
    pub session_id: Option<u32>,
    /// Requests and responses.
    pub transport_flags: Option<u8>,
    /// The rest of the data part: the object and attribute tree (PValues), and for V1/V2 any
    /// integrity part at its end. Not decoded.
    pub payload: &'a [u8],
}

/// Bytes of the data part's fixed fields: opcode, reserved, function, reserved, sequence.
const MESSAGE_HEAD: usize = 9;
const _: () = assert!(MESSAGE_HEAD == SESSION_ID.start && MESSAGE_HEAD == RESPONSE_FLAGS);
// The keep-alive's sequence number is the third byte, read by destructuring.
const _: () = assert!(field::KEEPALIVE_SEQ == 2);
const SESSION_ID: core::ops::Range<usize> = 9..13;
const REQUEST_FLAGS: usize = 13;
const RESPONSE_FLAGS: usize = 9;
const FUNCTION: core::ops::Range<usize> = 3..5;
const SEQUENCE: core::ops::Range<usize> = 7..9;

/// Decodes one S7comm-plus PDU: the COTP data payload, protocol id 0x72 first.
///
/// The length field must fit the payload, and what follows the data part must be nothing (a
/// fragment) or exactly the four-byte trailer starting with 0x72. A V3 data part must start
/// with a digest that fits. A message's fixed fields must be present.
pub fn parse_s7plus(pdu: &[u8]) -> Result<S7PlusPdu<'_>, S7Error> {
    let err = S7Error::new;
    match pdu.first() {
        None => return Err(err(S7ErrorKind::Empty, 0)),
        Some(&S7PLUS_PROTOCOL_ID) => {}
        Some(_) => return Err(err(S7ErrorKind::ProtocolId, field::PROTOCOL_ID)),
    }
    let Some(&version) = pdu.get(field::VERSION) else {
        return Err(err(S7ErrorKind::Truncated, pdu.len()));
    };
    let version = PlusVersion(version);
    if version == PlusVersion::KEEP_ALIVE {
        let &[_, _, sequence, reserved] = pdu else {
            return Err(if pdu.len() < field::HEADER_LEN {
                err(S7ErrorKind::Truncated, pdu.len())
            } else {
                err(S7ErrorKind::TrailingBytes, field::HEADER_LEN)
            });
        };
        return Ok(S7PlusPdu {
            version,
            data_len: 0,
            has_trailer: false,
            body: S7PlusBody::KeepAlive { sequence, reserved },
        });
    }
    let (data_len, data, has_trailer) = frame(pdu)?;
    let body = if version == PlusVersion::EXTENDED_KEEP_ALIVE {
        S7PlusBody::ExtendedKeepAlive(data)
    } else {
        let (digest, rest, rest_at) = if version == PlusVersion::V3 {
            let Some((&digest_len, after)) = data.split_first() else {
                return Err(err(S7ErrorKind::Truncated, field::DATA));
            };
            let Some((digest, rest)) = after.split_at_checked(usize::from(digest_len)) else {
                return Err(err(S7ErrorKind::LengthMismatch, field::DATA));
            };
            (Some(digest), rest, field::DATA + 1 + digest.len())
        } else {
            (None, data, field::DATA)
        };
        if !has_trailer {
            S7PlusBody::Fragment(rest)
        } else {
            message(digest, rest, rest_at)?
        }
    };
    Ok(S7PlusPdu {
        version,
        data_len,
        has_trailer,
        body,
    })
}

/// The framing of a PDU that is not a keep-alive: the length field, the data part (a V3 digest
/// still in it), and whether the trailer closes it.
fn frame(pdu: &[u8]) -> Result<(u16, &[u8], bool), S7Error> {
    let err = S7Error::new;
    let Some(data_len) = be_u16(pdu, field::DATA_LEN) else {
        return Err(err(S7ErrorKind::Truncated, pdu.len()));
    };
    let data_end = field::DATA + usize::from(data_len);
    let Some(data) = pdu.get(field::DATA..data_end) else {
        return Err(err(S7ErrorKind::Truncated, pdu.len()));
    };
    let has_trailer = match pdu.get(data_end..).unwrap_or_default() {
        [] => false,
        [S7PLUS_PROTOCOL_ID, _, _, _] => true,
        [S7PLUS_PROTOCOL_ID, ..] if pdu.len() - data_end < field::TRAILER_LEN => {
            return Err(err(S7ErrorKind::Truncated, pdu.len()));
        }
        [S7PLUS_PROTOCOL_ID, ..] => {
            return Err(err(
                S7ErrorKind::TrailingBytes,
                data_end + field::TRAILER_LEN,
            ));
        }
        _ => return Err(err(S7ErrorKind::InvalidValue, data_end)),
    };
    Ok((data_len, data, has_trailer))
}

/// A piece of a message split over several PDUs, or the whole of one, for joining: the data
/// part of a V1, V2 or V3 PDU, and whether the trailer closes it. A V3 piece's digest, which
/// opens every piece (s7commwireshark: "every fragment has an integrity part" from firmware
/// 1.5), is left out. `None` for other versions and what does not frame.
pub fn s7plus_piece(pdu: &[u8]) -> Option<(PlusVersion, &[u8], bool)> {
    let version = PlusVersion(*pdu.get(field::VERSION)?);
    let v3 = version == PlusVersion::V3;
    if pdu.first() != Some(&S7PLUS_PROTOCOL_ID)
        || !(v3 || matches!(version, PlusVersion::V1 | PlusVersion::V2))
    {
        return None;
    }
    let (_, mut data, trailer) = frame(pdu).ok()?;
    if v3 {
        let (&digest_len, after) = data.split_first()?;
        data = after.get(usize::from(digest_len)..)?;
    }
    Some((version, data, trailer))
}

/// A message joined from the data parts of the PDUs it was split over (their digests left
/// out, [`s7plus_piece`]), the first starting with its opcode: its fixed fields, or [`S7PlusBody::Unrecognized`] for an
/// unknown opcode. Offsets in errors are into `data`.
pub fn parse_s7plus_message(data: &[u8]) -> Result<S7PlusBody<'_>, S7Error> {
    message(None, data, 0)
}

/// The fixed fields of a whole message's data part, `rest_at` being its offset in the PDU.
fn message<'a>(
    digest: Option<&'a [u8]>,
    rest: &'a [u8],
    rest_at: usize,
) -> Result<S7PlusBody<'a>, S7Error> {
    let truncated = S7Error::new(S7ErrorKind::Truncated, rest_at + rest.len());
    let Some(&opcode) = rest.first() else {
        return Err(truncated);
    };
    let opcode = PlusOpcode(opcode);
    let bare = S7PlusMessage {
        digest,
        opcode,
        function: None,
        sequence: None,
        session_id: None,
        transport_flags: None,
        payload: rest.get(1..).unwrap_or_default(),
    };
    let message = match opcode {
        PlusOpcode::NOTIFICATION => bare,
        PlusOpcode::REQUEST => S7PlusMessage {
            function: Some(PlusFunction(be_u16(rest, FUNCTION).ok_or(truncated)?)),
            sequence: Some(be_u16(rest, SEQUENCE).ok_or(truncated)?),
            session_id: Some(be_u32(rest, SESSION_ID).ok_or(truncated)?),
            transport_flags: Some(*rest.get(REQUEST_FLAGS).ok_or(truncated)?),
            payload: rest.get(REQUEST_FLAGS + 1..).unwrap_or_default(),
            ..bare
        },
        PlusOpcode::RESPONSE | PlusOpcode::RESPONSE2 => S7PlusMessage {
            function: Some(PlusFunction(be_u16(rest, FUNCTION).ok_or(truncated)?)),
            sequence: Some(be_u16(rest, SEQUENCE).ok_or(truncated)?),
            transport_flags: Some(*rest.get(RESPONSE_FLAGS).ok_or(truncated)?),
            payload: rest.get(RESPONSE_FLAGS + 1..).unwrap_or_default(),
            ..bare
        },
        _ => return Ok(S7PlusBody::Unrecognized(rest)),
    };
    Ok(S7PlusBody::Message(message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s7::testutil::{hex, s7_of};

    fn pdu_of(bytes: &[u8]) -> S7PlusPdu<'_> {
        parse_s7plus(s7_of(bytes)).unwrap()
    }

    #[test]
    fn v1_create_object_request_and_response() {
        // S7-1511_db6w0_HMI.pcap frame 6: an HMI opens a session with CreateObject.
        let request = hex(
            "030000f302f080720100e431000004ca0000000100000120360000011d00040000000000a1000000\
             d3821f0000a3816900151653657276657253657373696f6e5f3130303030303230a3822100151230\
             3a3a3acccccccccccccccccccccccc3a3aa3822800150f53375f56657262696e64756e675f31a382\
             2900151753494d41544943204e455420504320536f667477617265a3822a0015163a3a3a224f5043\
             205365727665725f31223a3a564d2fa3822b000402a3822c001210000020a3822d00150131a10000\
             00d3817f0000a38169001515537562736372697074696f6e436f6e7461696e6572a2a20000000072\
             010000",
        );
        let pdu = pdu_of(&request);
        assert_eq!(pdu.version, PlusVersion::V1);
        assert!(pdu.has_trailer);
        assert!(!pdu.is_integrity_protected());
        let message = pdu.message().unwrap();
        assert_eq!(message.opcode, PlusOpcode::REQUEST);
        assert_eq!(message.function, Some(PlusFunction::CREATE_OBJECT));
        assert_eq!(message.sequence, Some(1));
        assert_eq!(message.session_id, Some(0x0000_0120));
        assert_eq!(message.transport_flags, Some(0x36));
        assert_eq!(message.digest, None);
    }

    #[test]
    fn v2_set_multi_variables_response() {
        // S7-1511_db6w0_HMI.pcap frame 10.
        let response = hex("0300002002f08072020011320000054200000002340000000000000072020000");
        let pdu = pdu_of(&response);
        assert_eq!(pdu.version, PlusVersion::V2);
        assert_eq!(pdu.data_len, 0x11);
        let message = pdu.message().unwrap();
        assert_eq!(message.opcode, PlusOpcode::RESPONSE);
        assert_eq!(message.function, Some(PlusFunction::SET_MULTI_VARIABLES));
        assert_eq!(message.sequence, Some(2));
        assert_eq!(message.session_id, None);
        assert_eq!(message.transport_flags, Some(0x34));
        assert_eq!(message.payload, [0; 7]);
    }

    #[test]
    fn v3_integrity_protected_request() {
        // s7comm_plus.pcap frame 7 (CISA ICSNPP trace): SetVariable in session 0x70000E4D,
        // sequence 0x831A, behind a 32-byte digest.
        let request = hex(
            "0300006802f0807203005920e969a95a852ab0e288480ccecb618e48779f4b68a1ce9a9c42cd6aa536\
             80068331000004f20000831a70000e4d7470000e5101881d000700ce000004e88969001200000000896a\
             001300896b000400000084eb270000000072030000",
        );
        let pdu = pdu_of(&request);
        assert_eq!(pdu.version, PlusVersion::V3);
        assert!(pdu.is_integrity_protected());
        let message = pdu.message().unwrap();
        let digest = message.digest.unwrap();
        assert_eq!(digest.len(), 32);
        assert_eq!(&digest[..4], [0xe9, 0x69, 0xa9, 0x5a]);
        assert_eq!(message.opcode, PlusOpcode::REQUEST);
        assert_eq!(message.function, Some(PlusFunction::SET_VARIABLE));
        assert_eq!(message.sequence, Some(0x831a));
        assert_eq!(message.session_id, Some(0x7000_0e4d));
        assert_eq!(message.transport_flags, Some(0x74));
    }

    #[test]
    fn v3_response_and_notification() {
        // s7comm_plus.pcap frame 31: GetMultiVariables response; frame 2: a notification.
        let response = hex(
            "0300005202f08072030043203dcac8ee113108f0defe64eff4faf6106fe1fa3d75064cde9b8314d9f1\
             e276a3320000054c0000831d3400010004010200088372030008be04000083a1100000000072030000",
        );
        let message = pdu_of(&response).message().unwrap();
        assert_eq!(message.opcode, PlusOpcode::RESPONSE);
        assert_eq!(message.function, Some(PlusFunction::GET_MULTI_VARIABLES));
        assert_eq!(message.sequence, Some(0x831d));
        let notification = hex(
            "0300007102f080720300622008c83ace381dfdbc42201789dec03b099172858efb6f3ef2e5e8ecb8bd\
             2546653370000e51040000000000c98ec148019200000005000e41aa70aa9200000019000e417e538e92\
             0000001a000e41467956920000001b000e4193eb85000000000072030000",
        );
        let message = pdu_of(&notification).message().unwrap();
        assert_eq!(message.opcode, PlusOpcode::NOTIFICATION);
        assert_eq!(message.function, None);
        assert_eq!(&message.payload[..4], [0x70, 0x00, 0x0e, 0x51]);
    }

    #[test]
    fn split_message() {
        // S7-1200-Uploading-OB1-TIAV12.pcap frames 127-129: a CreateObject too large for one
        // PDU. The first two pieces have no trailer; the last has one but no opcode.
        let first = hex(
            "030003fb02f080720203f031000004ca00000027000003c0340000000300040000000000a18a3200\
             0194572000a381690015044d61696ea39315000589d0b2d1b5919f8ce8a3931600048b7ea3931100\
             1400820a9800000278f95814b03b7d955d6bc3201486ff4ae91f989f894216d8ca02852ebb88f7e3\
             106c16969ad19941fffd4e24b49dabbd117cceabc78ff7e8ff8360e1209e263fd6c122cb255c8168\
             3792712a895222d39a33c2a2ddcc6de3e1f0159668c8e3fa7a88929c6ab15e199ae0ecc273c628e1\
             045320e709bd48e8e5cc31c064468912544b91a3ef4c96e07982ab503246df7970d2aeddda76f361\
             dbcf4572eedebdc4b7e7f7cde8be3d38bfaa43a1227985de2dd1adf3f6b88736146b598f6e4e1ed1\
             8b13aab826826b77e0ba093abbb33f7628f137ba410b03c7cefa0a0efd702a1b7c8308291efec0e2\
             a5a926d77a5c3f0cbd3f2dd3a1256e06501e250eca28edd9abbfc3becf50a39313000424a3a14040\
             1500a3936f000589d0b2cf86a6cd8aa8a3a13f401588081d20224d61696e2050726f6772616d2053\
             7765657020284379636c65292200a3935900030001a3935a000101a3935b00030004a3935c001700\
             000d779a78000b00009a79100214000000000000000000000000000000000000000000a3935f0001\
             00a39361000589d0b2d1b5919f8ce8a39364000c00000000a3984f001700000da09b210008009b22\
             0015009b2300080000a39c23000800a3a3620014001501000800080001000200050001030008000c\
             000000a3941400140014184001e0018c0021abcde0018c00211234144001a39415000588b8ce938f\
             8c89ff78a39419401400a3941a0014000400000000a3941b001400300000002c10e27131e304ff78\
             002000010000000000000000000000000002000000010000000000000000000000000000a3941e00\
             0800a3941f0014000c0c00000000000000000710c6a3941740140200822898000002787db0155ff8\
             d5954d0b823018c7bf8aac6be5e6b399412ff472e8d229a2a3546a04d9a942faf4ad6dda9c9a1875\
             c88b0c419efdfe2fcf609cc427eb96bb16f73c67773e0cd1f512753c341e1592a72be5271803f1dd\
             e7db017fbbdb0728a55a20d8d3193a5ddc25c8d4395346700596d110502b31a2328e724221b85dee\
             a6744225a600a719469e856b0018a314fa2fcb2fc224b3fd6c3e9962ed511f246e3e9edb926072e9\
             581def61db5a9f03eebcda44189c8903b49ab3d7943373ff833350e2bce72cc17cce79b9c1195755\
             072955684a953223cb1f63355201dffa6f855c7ad92bc9449b6892c9b32e19b7905a16cb30e64b25\
             57cbb858cc572e4854b558a40bebc4d216a6c805f609322a3d158f34158ffc3a11f95d5f7a57db68\
             de07ceb3c93400a3a3500003ffffa393700014",
        );
        let pdu = pdu_of(&first);
        assert!(!pdu.has_trailer);
        assert_eq!(pdu.data_len, 0x03f0);
        assert!(
            matches!(pdu.body, S7PlusBody::Fragment(d) if d.starts_with(&[0x31, 0x00, 0x00, 0x04, 0xca]))
        );
        let last = hex(
            "030000e702f080720200d8be52277b862b4d74edda47a7c742703f03a044ad16c5886d5fab371534\
             e2fc3da8d445e6c0436217084695217e4f61336c35289884179b8d64cdbef75d74420ea37bff16dd\
             775a50f84ee79f6a31f717d914b4eb00a3936900140000a39418401400a3941d0014005c98000002\
             78f966052b138314792ea949a5e9e034c3cba5a06003accac0d519d05843a089a9e9c0668da3b3ad\
             1230f05df352c04c434b2505b7cca26260c5032c6941e53b3476816a7c1231854d9514f48186dbe8\
             a3d90700dab627e7a4900a00000060a4900a00000060a20000000072020000",
        );
        let pdu = pdu_of(&last);
        assert!(pdu.has_trailer);
        assert!(matches!(pdu.body, S7PlusBody::Unrecognized(d) if d.starts_with(&[0xbe, 0x52])));
        assert!(pdu.message().is_none());
    }

    #[test]
    fn keep_alives() {
        assert_eq!(
            parse_s7plus(&[0x72, 0xff, 0x05, 0x00]).unwrap().body,
            S7PlusBody::KeepAlive {
                sequence: 5,
                reserved: 0
            }
        );
        let ext = [0x72, 0xfe, 0x00, 0x02, 0xaa, 0xbb, 0x72, 0xfe, 0x00, 0x00];
        assert_eq!(
            parse_s7plus(&ext).unwrap().body,
            S7PlusBody::ExtendedKeepAlive(&[0xaa, 0xbb])
        );
    }

    #[test]
    fn malformed() {
        let e = |kind, offset| Err(S7Error::new(kind, offset));
        assert_eq!(parse_s7plus(&[]), e(S7ErrorKind::Empty, 0));
        assert_eq!(parse_s7plus(&[0x32]), e(S7ErrorKind::ProtocolId, 0));
        assert_eq!(parse_s7plus(&[0x72]), e(S7ErrorKind::Truncated, 1));
        assert_eq!(parse_s7plus(&[0x72, 0xff, 0]), e(S7ErrorKind::Truncated, 3));
        assert_eq!(
            parse_s7plus(&[0x72, 0xff, 0, 0, 0]),
            e(S7ErrorKind::TrailingBytes, 4)
        );
        assert_eq!(
            parse_s7plus(&[0x72, 0x02, 0x00, 0x05, 0x31]),
            e(S7ErrorKind::Truncated, 5)
        );
        // Bytes after the data part that are not a trailer.
        let bad = [0x72, 0x02, 0x00, 0x01, 0x33, 0x00, 0x00, 0x00, 0x00];
        assert_eq!(parse_s7plus(&bad), e(S7ErrorKind::InvalidValue, 5));
        let long = [0x72, 0x02, 0x00, 0x01, 0x33, 0x72, 0x02, 0x00, 0x00, 0x00];
        assert_eq!(parse_s7plus(&long), e(S7ErrorKind::TrailingBytes, 9));
        // A request too short for its fixed fields.
        let short = [
            0x72, 0x02, 0x00, 0x03, 0x31, 0x00, 0x00, 0x72, 0x02, 0x00, 0x00,
        ];
        assert_eq!(parse_s7plus(&short), e(S7ErrorKind::Truncated, 7));
        // A V3 digest longer than the data part.
        let digest = [0x72, 0x03, 0x00, 0x02, 0x20, 0x00, 0x72, 0x03, 0x00, 0x00];
        assert_eq!(parse_s7plus(&digest), e(S7ErrorKind::LengthMismatch, 4));
    }
}
