//! Message content on the way out: dot-stuffing for DATA (RFC 5321 §4.5.2), piece by piece so
//! a large message never needs a second full copy, and the checks MAIL's parameters need.

/// How much content is stuffed and written at a time.
pub const PIECE: usize = 64 * 1024;

/// Dot-stuffs `content` in pieces: each call to `next` gives the next bytes to write, the
/// last one ending with the terminating `.` line. Lines are CRLF; a dot after a bare LF is
/// doubled too, since many servers end lines at LF.
pub struct Stuffer<'a> {
    content: &'a [u8],
    pos: usize,
    at_line_start: bool,
    done: bool,
}

impl<'a> Stuffer<'a> {
    pub fn new(content: &'a [u8]) -> Stuffer<'a> {
        Stuffer {
            content,
            pos: 0,
            at_line_start: true,
            done: false,
        }
    }

    /// The next piece (into `out`, cleared first); `false` once everything was given.
    pub fn next(&mut self, out: &mut Vec<u8>) -> bool {
        out.clear();
        if self.done {
            return false;
        }
        let end = (self.pos + PIECE).min(self.content.len());
        // Whole lines are copied at once; only a dot at a line's start adds a byte.
        while self.pos < end {
            let rest = &self.content[self.pos..end];
            if self.at_line_start && rest[0] == b'.' {
                out.push(b'.');
            }
            let line = match rest.iter().position(|&b| b == b'\n') {
                Some(lf) => &rest[..=lf],
                None => rest,
            };
            out.extend_from_slice(line);
            self.at_line_start = line.ends_with(b"\n");
            self.pos += line.len();
        }
        self.pos = end;
        if self.pos == self.content.len() {
            if !self.content.ends_with(b"\r\n") && !self.content.is_empty() {
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b".\r\n");
            self.done = true;
        }
        true
    }
}

/// The content as BDAT sends it: unchanged, with a final CRLF added if it lacks one.
pub fn bdat_tail(content: &[u8]) -> &'static [u8] {
    if content.is_empty() || content.ends_with(b"\r\n") {
        b""
    } else {
        b"\r\n"
    }
}

/// Whether any byte has the high bit set (for `Send_8BitMime`).
pub fn has_8bit(content: &[u8]) -> bool {
    content.iter().any(|&b| b >= 0x80)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuffed(content: &[u8]) -> Vec<u8> {
        let mut s = Stuffer::new(content);
        let mut all = Vec::new();
        let mut piece = Vec::new();
        while s.next(&mut piece) {
            all.extend_from_slice(&piece);
        }
        all
    }

    #[test]
    fn dots_at_line_starts_are_doubled_and_the_end_is_marked() {
        assert_eq!(
            stuffed(b".a\r\nb.\r\n..c\r\n"),
            b"..a\r\nb.\r\n...c\r\n.\r\n"
        );
        assert_eq!(
            stuffed(b"x\r\n.\r\n"),
            b"x\r\n..\r\n.\r\n",
            "a lone dot line"
        );
        assert_eq!(
            stuffed(b"no end"),
            b"no end\r\n.\r\n",
            "a missing final CRLF is added"
        );
        assert_eq!(stuffed(b""), b".\r\n");
        assert_eq!(
            stuffed(b"a\n.b\r\n"),
            b"a\n..b\r\n.\r\n",
            "after a bare LF too"
        );
    }

    /// Byte by byte, the plain reading of RFC 5321 §4.5.2 (and a dot after a bare LF).
    fn stuffed_byte_by_byte(content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at_line_start = true;
        for &b in content {
            if at_line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            at_line_start = b == b'\n';
        }
        if !content.is_empty() && !content.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    proptest::proptest! {
        #[test]
        fn whole_lines_copied_at_once_stuff_exactly_as_byte_by_byte(
            content in proptest::collection::vec(
                proptest::sample::select(vec![b'.', b'\r', b'\n', b'a']), 0..400),
            long_line in 0usize..3,
        ) {
            // Some inputs cross a piece boundary, inside a line or at a line's start.
            let mut content = content;
            if long_line > 0 {
                let mut big = vec![b'x'; PIECE - long_line];
                big.extend_from_slice(&content);
                content = big;
            }
            proptest::prop_assert_eq!(stuffed(&content), stuffed_byte_by_byte(&content));
        }
    }

    #[test]
    fn stuffing_carries_the_line_state_across_pieces() {
        let mut content = vec![b'a'; PIECE - 2];
        content.extend_from_slice(b"\r\n.x\r\n");
        let out = stuffed(&content);
        assert!(out.ends_with(b"\r\n..x\r\n.\r\n"));
        assert_eq!(out.len(), content.len() + 1 + 3);
    }
}
