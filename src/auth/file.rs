//! `file:///path`: a file of `user:password` lines, `#` comments and blank lines ignored, as
//! Momentum's `file://` scheme reads it. Meant for small sites and for tests.

use super::credentials::{Credentials, Proof, Secret};
use super::verdict::{Outcome, Verdict};
use hmac::{KeyInit, Mac};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

pub struct PasswordFile {
    users: HashMap<String, Secret>,
}

impl PasswordFile {
    /// Reads the file. A line without `:` is an error naming the file and line, not a user
    /// silently left out.
    pub fn load(path: &Path) -> Result<PasswordFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read password file: {e}", path.display()))?;
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let Some((user, password)) = line.split_once(':') else {
                return Err(format!(
                    "{}:{}: expected `user:password`",
                    path.display(),
                    i + 1
                ));
            };
            users.insert(user.to_owned(), Secret::new(password.to_owned()));
        }
        Ok(PasswordFile { users })
    }

    pub fn authenticate(&self, creds: &Credentials) -> Outcome {
        let Some(stored) = self.users.get(&creds.username) else {
            return Outcome::new(Verdict::Fail, "no such user");
        };
        let good = match &creds.proof {
            Proof::Password(p) => ct_eq(p.expose().as_bytes(), stored.expose().as_bytes()),
            Proof::CramMd5 {
                challenge, digest, ..
            } => {
                let expected = cram_md5(stored.expose(), challenge);
                ct_eq(expected.as_bytes(), digest.to_ascii_lowercase().as_bytes())
            }
            // Refused when the configuration is read; only an upstream can check a token.
            Proof::Token(_) => {
                return Outcome::new(Verdict::Error, "a password file cannot check a token");
            }
        };
        if good {
            Outcome::new(Verdict::Pass, "password file")
        } else {
            Outcome::new(Verdict::Fail, "wrong password")
        }
    }
}

/// A fresh `<random.time@host>` challenge (RFC 2195).
pub fn new_challenge(hostname: &str) -> String {
    let mut nonce = [0u8; 8];
    // The provider's generator is the operating system's; if it fails, the time still makes
    // the challenge unique.
    let _ = crate::crypto::provider().secure_random.fill(&mut nonce);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("<{}.{t}@{hostname}>", u64::from_be_bytes(nonce))
}

/// RFC 2195: the hex HMAC-MD5 of the challenge keyed with the password.
pub fn cram_md5(password: &str, challenge: &str) -> String {
    let mut mac = hmac::Hmac::<md5::Md5>::new_from_slice(password.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(challenge.as_bytes());
    let mut hex = String::with_capacity(32);
    for b in mac.finalize().into_bytes() {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// Compares without an early exit, so timing does not tell how much of a guess was right.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2195_example() {
        let digest = cram_md5(
            "tanstaaftanstaaf",
            "<1896.697170952@postoffice.reston.mci.net>",
        );
        assert_eq!(digest, "b913a602c7eda7a495b4e6e7334d3890");
    }
}
