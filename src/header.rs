//! Header fields this server writes into messages (RFC 5322 §2.2): the `Received:` trace field,
//! and the fields of the delivery status notifications it generates.
//!
//! A field is built only through [`HeaderField`]. Every piece of text pushed into it has its
//! control characters escaped (`text::escape_controls`), and line breaks appear only where
//! [`HeaderField::fold`] puts them, each followed by a tab. So whatever a client said (a HELO
//! name, an XCLIENT NAME, a user name), the field stays one field: it cannot end early, start a
//! second field, or end the header and smuggle a body, or a message, to the next hop.

use crate::text::escape_controls;

/// One header field being built; [`HeaderField::finish`] gives its wire form, CRLF-terminated.
#[derive(Debug)]
pub struct HeaderField {
    buf: String,
}

impl HeaderField {
    /// Starts `Name: `. Names are ours, fixed in the code: printable ASCII without `:`.
    pub fn new(name: &'static str) -> HeaderField {
        debug_assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':'),
            "bad header field name {name:?}"
        );
        let mut buf = String::with_capacity(256);
        buf.push_str(name);
        buf.push_str(": ");
        HeaderField { buf }
    }

    /// Appends text, with any control character escaped.
    pub fn push(&mut self, text: &str) -> &mut Self {
        self.buf.push_str(&escape_controls(text));
        self
    }

    /// Continues the field on a new line (folding white space: CRLF and a tab).
    pub fn fold(&mut self) -> &mut Self {
        self.buf.push_str("\r\n\t");
        self
    }

    /// The field in wire form, ending in CRLF.
    pub fn finish(mut self) -> String {
        self.buf.push_str("\r\n");
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What any field we write must look like: lines joined by CRLF, every line after the
    /// first a continuation (starts with a tab), CRLF at the end, and no other CR or LF.
    fn is_one_field(f: &str) -> bool {
        let Some(body) = f.strip_suffix("\r\n") else {
            return false;
        };
        let mut lines = body.split("\r\n");
        let first_ok = lines
            .next()
            .is_some_and(|l| l.contains(": ") && !l.contains(['\r', '\n']));
        first_ok && lines.all(|l| l.starts_with('\t') && !l.contains(['\r', '\n']))
    }

    #[test]
    fn a_smuggling_helo_name_stays_inside_the_field() {
        let mut f = HeaderField::new("Received");
        f.push("from ")
            .push("evil.example\r\n.\r\nMAIL FROM:<x@evil.example>")
            .fold()
            .push("by us");
        let f = f.finish();
        assert!(is_one_field(&f), "{f:?}");
        assert_eq!(f.matches("\r\n").count(), 2);
    }

    proptest! {
        #[test]
        fn any_text_makes_exactly_one_field(parts in proptest::collection::vec((any::<String>(), any::<bool>()), 0..8)) {
            let mut f = HeaderField::new("Received");
            for (text, fold) in &parts {
                f.push(text);
                if *fold {
                    f.fold();
                }
            }
            let f = f.finish();
            prop_assert!(is_one_field(&f), "{:?}", f);
        }
    }
}
