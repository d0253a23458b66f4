//! Properties over arbitrary input: nothing panics, framing arithmetic holds, and every view of
//! an accepted message walks to its end.

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

fn walk_cip(b: &[u8], depth: u8) {
    let Ok(m) = parse_cip(b) else { return };
    if let Some(p) = m.path {
        let n = p.segments().count();
        assert!(n <= p.bytes().len());
        // One walk gives what the accessors give one walk each.
        let mut parts = Vec::new();
        let l = p.logical(|n| parts.push(n));
        assert_eq!(
            (l.class, l.instance, l.attribute, l.member),
            (p.class(), p.instance(), p.attribute(), p.member())
        );
        assert_eq!((!parts.is_empty()).then_some(parts), p.symbol());
    }
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
}

proptest! {
    #[test]
    fn arbitrary_streams_never_panic(bytes in vec(any::<u8>(), 0..800)) {
        let mut rest = &bytes[..];
        while let Framed::Complete { encap, consumed } = parse_encap(rest) {
            prop_assert!(consumed >= HEADER_LEN && consumed <= rest.len());
            if let Ok((_, _, cpf)) = parse_send_data(encap.data) {
                let items: Vec<_> = cpf.items().collect();
                prop_assert_eq!(items.len(), usize::from(cpf.count));
                for i in items {
                    walk_cip(i.data, 3);
                    let _ = parse_identity(i.data);
                }
            }
            rest = &rest[consumed..];
        }
        walk_cip(&bytes, 3);
        let _ = parse_cpf(&bytes);
        let _ = parse_identity(&bytes);
        let _ = parse_identity_attributes(&bytes);
        let _ = parse_identity_attribute_list(&bytes);
        let _ = parse_forward_open_reply(&bytes);
        let _ = read_tag_values(&bytes).map(|v| v.iter().count());
        let _ = write_tag_values(&bytes).map(|v| v.iter().count());
        let _ = Epath::parse(&bytes).map(|p| p.segments().count());
    }

    /// A well-formed request with a class/instance/attribute path of any widths decodes back.
    #[test]
    fn logical_paths_round_trip(class in any::<u16>(), instance in any::<u16>(), attribute in any::<u8>(), service in 0u8..0x80) {
        let mut path = vec![0x21, 0, 0, 0];
        path[2..4].copy_from_slice(&class.to_le_bytes());
        path.extend_from_slice(&[0x25, 0]);
        path.extend_from_slice(&instance.to_le_bytes());
        path.extend_from_slice(&[0x30, attribute]);
        let mut msg = vec![service, (path.len() / 2) as u8];
        msg.extend_from_slice(&path);
        msg.extend_from_slice(&[9, 9]);
        let m = parse_cip(&msg).expect("well-formed");
        let p = m.path.expect("a path");
        prop_assert_eq!(p.class(), Some(u32::from(class)));
        prop_assert_eq!(p.instance(), Some(u32::from(instance)));
        prop_assert_eq!(p.attribute(), Some(u32::from(attribute)));
        prop_assert_eq!(m.data, &[9u8, 9][..]);
    }
}
