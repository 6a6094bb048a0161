//! The listener's pure decoders answer every input without panicking, and a header they accept
//! never claims more bytes than it was given.

use proptest::prelude::*;
use smtp_auth_proxy::listener::proxy_protocol::{Decoded, decode};
use smtp_auth_proxy::listener::xtext;

fn v2_like() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u8>(),
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(vc, fam, payload)| {
            let mut v = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
            v.extend([vc, fam]);
            v.extend((payload.len() as u16).to_be_bytes());
            v.extend(payload);
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5000, ..ProptestConfig::default() })]

    #[test]
    fn proxy_header_decoder_is_total(
        buf in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            "PROXY (TCP4|TCP6|UNKNOWN)[ 0-9a-f.:]{0,60}\r?\n?".prop_map(String::into_bytes),
            v2_like(),
        ]
    ) {
        if let Ok(Decoded::Header(_, used)) = decode(&buf) {
            prop_assert!(used <= buf.len());
        }
    }

    #[test]
    fn xtext_round_trips(s in any::<String>()) {
        prop_assert_eq!(xtext::decode(&xtext::encode(&s)).unwrap(), s);
    }

    #[test]
    fn xtext_decoder_is_total(s in "[ -~+]{0,40}") {
        let _ = xtext::decode(&s);
    }
}
