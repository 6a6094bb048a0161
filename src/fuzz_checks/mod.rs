//! The checks the fuzz targets (`fuzz/`) run on arbitrary input, here so that the seed corpus
//! replays through exactly the same code as a plain test (`tests/fuzz_corpus.rs`), with no
//! nightly toolchain. Each panics on a broken invariant, never on bad input.

mod session;

pub use session::session;

use crate::config::{self, LoadOptions, MissingIncludes};
use crate::listener::data::DotCodec;
use crate::listener::{command, proxy_protocol, xtext};
use crate::reply::Reply;

/// How the fuzz checks load a configuration: nothing from the machine's files, so a run depends
/// on its input alone.
fn load_options() -> LoadOptions {
    LoadOptions {
        missing_includes: MissingIncludes::Keep,
        search_path: Vec::new(),
    }
}

/// The configuration language and the model: any text gets diagnostics, never a panic.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let loaded = config::load_str("fuzz.conf", text, &load_options());
    if !loaded.diagnostics.has_errors() {
        let _ = crate::model::build(&loaded.root, &loaded.sources);
    }
}

/// SMTP command lines.
pub fn command(data: &[u8]) {
    let _ = command::parse(data);
}

/// PROXY v1/v2 headers: a header found never claims more bytes than were given.
pub fn proxy_header(data: &[u8]) {
    if let Ok(proxy_protocol::Decoded::Header(_, used)) = proxy_protocol::decode(data) {
        assert!(used <= data.len());
    }
}

/// xtext: whatever decodes, encodes back to something that decodes to the same.
pub fn xtext(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(decoded) = xtext::decode(s) {
        assert_eq!(xtext::decode(&xtext::encode(&decoded)).ok(), Some(decoded));
    }
}

/// Replies from next hops and upstreams.
pub fn reply(data: &[u8]) {
    if let Ok(Some((_, used))) = Reply::parse(data) {
        assert!(used <= data.len());
    }
}

/// The DATA codec: the next hop's stream has CRLF line ends only and no lone dot.
pub fn data(data: &[u8]) {
    let mut codec = DotCodec::default();
    let mut out = Vec::new();
    let (used, end) = codec.feed(data, &mut out);
    assert!(used <= data.len());
    let complete = if end {
        out.as_slice()
    } else {
        // Only whole lines are checked: the last one may still be open.
        let cut = out.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        &out[..cut]
    };
    for line in complete.split_inclusive(|&b| b == b'\n') {
        assert!(line.ends_with(b"\r\n"), "{out:?}");
        let body = &line[..line.len() - 2];
        assert!(!body.contains(&b'\r') && !body.contains(&b'\n'), "{out:?}");
        assert_ne!(body, b".", "{out:?}");
    }
}

/// A target's check.
pub type Check = fn(&[u8]);

/// Every target, by name, for the corpus replay.
pub const TARGETS: &[(&str, Check)] = &[
    ("config", config),
    ("command", command),
    ("proxy_header", proxy_header),
    ("xtext", xtext),
    ("reply", reply),
    ("data", data),
    ("session", session),
];
