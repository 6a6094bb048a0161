//! xtext (RFC 3461 §4): how XCLIENT and XSETCONTEXT values are written.
//!
//! `+XX` (two upper-case hex digits) stands for one byte; `+` itself must be written `+2B`;
//! other characters are printable ASCII from `!` to `~` except `=`.

/// Why a value is not valid xtext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XtextError {
    /// `+` not followed by two hex digits.
    BadEscape(usize),
    /// A character outside `!`..=`~`, or `=`.
    BadChar(usize),
    /// The decoded bytes are not UTF-8.
    NotUtf8,
}

/// Decodes an xtext value. Lower-case hex digits are accepted too: senders in the wild
/// (Postfix before 2.x among them) have written them.
pub fn decode(s: &str) -> Result<String, XtextError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(XtextError::BadEscape(i))?;
                let hex = std::str::from_utf8(hex).map_err(|_| XtextError::BadEscape(i))?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| XtextError::BadEscape(i))?);
                i += 3;
            }
            b'=' => return Err(XtextError::BadChar(i)),
            b @ b'!'..=b'~' => {
                out.push(b);
                i += 1;
            }
            _ => return Err(XtextError::BadChar(i)),
        }
    }
    String::from_utf8(out).map_err(|_| XtextError::NotUtf8)
}

/// Encodes a value as xtext (for outbound XCLIENT).
pub fn encode(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            let _ = write!(out, "+{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_encodes() {
        assert_eq!(decode("IPV6:2001:db8::1").unwrap(), "IPV6:2001:db8::1");
        assert_eq!(decode("a+2Bb+3Dc+20d").unwrap(), "a+b=c d");
        assert_eq!(decode("+c3+a9").unwrap(), "é");
        assert_eq!(decode("x+2").unwrap_err(), XtextError::BadEscape(1));
        assert_eq!(decode("x+zz").unwrap_err(), XtextError::BadEscape(1));
        assert_eq!(decode("a=b").unwrap_err(), XtextError::BadChar(1));
        assert_eq!(decode("a b").unwrap_err(), XtextError::BadChar(1));
        assert_eq!(decode("+FF").unwrap_err(), XtextError::NotUtf8);
        for s in ["plain", "a+b=c d", "é\u{1}~!"] {
            assert_eq!(decode(&encode(s)).unwrap(), s);
        }
        assert_eq!(encode("a+b=c d"), "a+2Bb+3Dc+20d");
    }
}
