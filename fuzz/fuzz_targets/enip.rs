//! Fuzzes every public EtherNet/IP and CIP entry point: encapsulation framing over the input as
//! a stream, the CPF of every message with every item walked, every CIP message with its path
//! segments and its embedded messages (Multiple Service Packet, Unconnected Send) to depth 3,
//! Forward Open and Identity (ListIdentity, Get_Attributes_All, Get_Attribute_List); the raw input also goes straight to each. Any panic is a bug.

#![no_main]

use libfuzzer_sys::fuzz_target;
use otwatch_parsers::enip::{
    multiple_service, parse_cip, parse_cpf, parse_encap, parse_forward_open,
    parse_forward_open_reply, parse_identity, parse_identity_attribute_list,
    parse_identity_attributes, parse_send_data, read_tag_values, unconnected_send,
    write_tag_values, Epath, Framed, Service, HEADER_LEN,
};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Framed::Complete { encap, consumed } = parse_encap(rest) {
        assert!(consumed >= HEADER_LEN && consumed <= rest.len());
        if let Ok((_, _, cpf)) = parse_send_data(encap.data) {
            let mut n = 0;
            for item in cpf.items() {
                n += 1;
                walk_cip(item.data, 3);
                let _ = parse_identity(item.data);
            }
            assert_eq!(n, usize::from(cpf.count));
        }
        rest = &rest[consumed..];
    }
    walk_cip(data, 3);
    let _ = parse_cpf(data).map(|c| c.items().count());
    let _ = parse_identity(data);
    let _ = Epath::parse(data).map(|p| p.segments().count());
});

fn walk_cip(b: &[u8], depth: u8) {
    let Ok(m) = parse_cip(b) else { return };
    if let Some(p) = m.path {
        assert!(p.segments().count() <= p.bytes().len());
        let _ = (
            p.class(),
            p.instance(),
            p.attribute(),
            p.member(),
            p.symbol(),
        );
    }
    let _ = (
        m.service.name(),
        m.service.logix_name(),
        m.service.connection_manager_name(),
    );
    if depth == 0 {
        return;
    }
    if m.service == Service::MULTIPLE_SERVICE_PACKET {
        for part in multiple_service(m.data).into_iter().flatten() {
            walk_cip(part, depth - 1);
        }
    }
    if let Some((inner, route)) = unconnected_send(m.data) {
        let _ = route.segments().count();
        walk_cip(inner, depth - 1);
    }
    let _ = parse_forward_open(m.data, false);
    let _ = parse_forward_open(m.data, true);
    let _ = parse_forward_open_reply(m.data);
    let _ = read_tag_values(m.data).map(|v| v.iter().count());
    let _ = write_tag_values(m.data).map(|v| v.iter().count());
    let _ = parse_identity_attributes(m.data);
    let _ = parse_identity_attribute_list(m.data);
}
