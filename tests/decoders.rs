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

/// DATA as a client might send it: CRLF, bare LF, bare CR, dots at line starts, long lines.
fn data_like() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b".".to_vec()),
            Just(b"..".to_vec()),
            "[a-z ]{0,20}".prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..8),
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Whatever the client sends and however it is split, the next hop gets the same stream,
    /// and that stream ends the message exactly where this server did: its only line ends are
    /// CRLF and no line in it is a lone dot, so no next hop can find an earlier end.
    #[test]
    fn dot_codec_output_cannot_end_early(body in data_like(), cut in 0usize..64) {
        use smtp_auth_proxy::listener::data::DotCodec;
        let mut input = body.clone();
        input.extend_from_slice(b"\r\n.\r\n");
        let whole = {
            let mut c = DotCodec::default();
            let mut out = Vec::new();
            let (used, end) = c.feed(&input, &mut out);
            prop_assert!(end, "the final CRLF.CRLF always ends the data");
            prop_assert!(used <= input.len());
            out
        };
        // The same bytes in two pieces.
        let cut = cut.min(input.len());
        let mut c = DotCodec::default();
        let mut out = Vec::new();
        let (used, end) = c.feed(&input[..cut], &mut out);
        if !end {
            prop_assert_eq!(used, cut);
            let (_, end) = c.feed(&input[cut..], &mut out);
            prop_assert!(end);
        }
        prop_assert_eq!(&out, &whole);
        // Line structure of what the next hop receives.
        prop_assert!(whole.is_empty() || whole.ends_with(b"\r\n"));
        for line in whole.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            prop_assert!(!line.contains(&b'\r'), "bare CR in output {:?}", whole);
            prop_assert_ne!(line, b".".as_slice(), "a lone dot would end the message early");
        }
    }

    #[test]
    fn command_and_reply_parsers_are_total(buf in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = smtp_auth_proxy::listener::command::parse(&buf);
        if let Ok(Some((_, used))) = smtp_auth_proxy::reply::Reply::parse(&buf) {
            prop_assert!(used <= buf.len());
        }
    }
}

/// OAUTHBEARER and XOAUTH2 responses as clients build them, and near misses: the separators,
/// escapes and keys in any order, with stray characters (controls included) between.
fn token_response_like() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("n,".to_owned()),
            Just("y,".to_owned()),
            Just("a=".to_owned()),
            Just(",".to_owned()),
            Just("\x01".to_owned()),
            Just("=2C".to_owned()),
            Just("=3d".to_owned()),
            Just("=".to_owned()),
            Just("user=".to_owned()),
            Just("auth=Bearer ".to_owned()),
            "[a-z@.]{0,8}",
            any::<char>().prop_map(String::from),
        ],
        0..14,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5000, ..ProptestConfig::default() })]

    /// Whatever a client sends, a user name read from it can be looked up and logged: never
    /// empty, never a control character.
    #[test]
    fn token_responses_name_a_plain_user_or_none(s in token_response_like()) {
        use smtp_auth_proxy::listener::oauth::{oauthbearer_user, xoauth2_user};
        for user in [oauthbearer_user(&s), xoauth2_user(&s)].into_iter().flatten() {
            prop_assert!(!user.is_empty(), "{:?}", s);
            prop_assert!(!user.chars().any(char::is_control), "{:?} from {:?}", user, s);
        }
    }
}
