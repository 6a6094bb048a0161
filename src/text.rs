//! Text from outside (a client, a peer, a database) made safe for a line this server writes.
//!
//! A log line, a mainlog record or a header field ends at a line break: a client string with a
//! CR or LF in it could end ours and start one of its own (a forged log entry, a smuggled
//! header). Every such string goes through [`escape_controls`], which writes each control
//! character as a visible `\xNN`, so nothing but our own line breaks ever reaches the output.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `s` with every control character (C0, DEL and C1; CR and LF among them) written as `\xNN`.
/// Borrows when there is nothing to escape, which is almost always.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            let _ = write!(out, "\\x{:02X}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A field of an `@`-separated Momentum log record (acctlog, mainlog): `@` and `\` are
/// escaped with a backslash, as Momentum's acctlog does, and control characters as `\xNN`
/// (a line feed as `\n`), so a user name or an address can add neither a field nor a line.
pub fn escape_field(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '@' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn controls_become_visible_escapes() {
        assert_eq!(escape_controls("plain text"), "plain text");
        assert!(matches!(escape_controls("plain"), Cow::Borrowed(_)));
        assert_eq!(
            escape_controls("bob\r\nforged: line\t\u{7f}\u{85}"),
            "bob\\x0D\\x0Aforged: line\\x09\\x7F\\x85"
        );
    }

    proptest! {
        #[test]
        fn no_string_keeps_a_control_character(s in any::<String>()) {
            let out = escape_controls(&s);
            prop_assert!(!out.chars().any(char::is_control));
        }
    }
}
