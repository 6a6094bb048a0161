//! OAuth 2.0 bearer tokens in AUTH: OAUTHBEARER (RFC 7628) and XOAUTH2 (Google's and
//! Microsoft's). Only the provider's server can check a token, so the front end reads no more
//! of the client's response than the user name that picks the upstream, and hands the whole
//! response on unchanged.
//!
//! The user name is OAUTHBEARER's GS2 authorization identity (`n,a=user@example.com,^A…`,
//! RFC 5801 §4) or XOAUTH2's `user=`. RFC 7628 lets a client leave `a=` out; here it is
//! required, since it is what chooses the upstream, and what acctlog and `Auth_Failure_Limit`
//! count. A refused token comes back as the upstream's error challenge, which the client
//! answers (RFC 7628 §3.2.3) before the final reply.

use super::auth::Abort;
use super::session::Session;
use crate::auth::{Backend, Credentials, ErrorChallenge, Outcome, Proof, Secret};
use crate::model::listener::Mechanism;
use zeroize::Zeroizing;

/// RFC 7628's `kvsep`, which ends each `key=value` pair and the response.
const KVSEP: char = '\x01';

impl Session {
    /// Reads an OAUTHBEARER or XOAUTH2 response, in the initial response or after `334 `.
    pub(super) async fn token(
        &mut self,
        mechanism: Mechanism,
        initial: Option<Zeroizing<String>>,
    ) -> Result<Credentials, Abort> {
        let mut raw = match initial {
            Some(ir) => super::auth::decode(ir.as_bytes())?,
            None => self.challenge("").await?,
        };
        let text = std::str::from_utf8(&raw).map_err(|_| Abort::Malformed)?;
        let username = match mechanism {
            Mechanism::XOAuth2 => xoauth2_user(text),
            _ => oauthbearer_user(text),
        }
        .ok_or(Abort::Malformed)?;
        // The buffer moves into the Secret, which wipes it; no copy is left behind.
        let response =
            String::from_utf8(std::mem::take(&mut *raw)).map_err(|_| Abort::Malformed)?;
        Ok(Credentials {
            mechanism,
            username,
            authzid: String::new(),
            proof: Proof::Token(Secret::new(response)),
        })
    }

    /// Passes the upstream's error challenge to the client and its answer back. Whatever
    /// the client does instead of answering (cancel, garbage, leave) still ends the upstream's
    /// exchange as a fail, which is returned with it.
    pub(super) async fn error_challenge(
        &mut self,
        backend: &Backend,
        challenge: ErrorChallenge,
        keep_upstream: bool,
    ) -> (Outcome, Option<Abort>) {
        let text = challenge.text.clone();
        match self.challenge(&text).await {
            Ok(answer) => (
                backend
                    .answer(challenge, Some(&answer), keep_upstream)
                    .await,
                None,
            ),
            Err(abort) => (
                backend.answer(challenge, None, keep_upstream).await,
                Some(abort),
            ),
        }
    }
}

/// OAUTHBEARER's `gs2-header kvsep *kvpair kvsep` (RFC 7628 §3.1): the user named by `a=`,
/// if the response is well formed and carries an `auth` value. OAUTHBEARER has no channel
/// binding, so the flag is `n` or `y`.
pub fn oauthbearer_user(response: &str) -> Option<String> {
    let (flag, rest) = response.split_once(',')?;
    if flag != "n" && flag != "y" {
        return None;
    }
    let (authzid, rest) = rest.split_once(',')?;
    let user = saslname(authzid.strip_prefix("a=")?)?;
    let pairs = kvpairs(rest.strip_prefix(KVSEP)?.strip_suffix(KVSEP)?)?;
    let rfc_value = |v: &str| {
        v.bytes()
            .all(|b| matches!(b, 0x21..=0x7e | b' ' | b'\t' | b'\r' | b'\n'))
    };
    if !pairs.iter().all(|(_, v)| rfc_value(v)) {
        return None;
    }
    has_auth(&pairs).then_some(user)
}

/// XOAUTH2's `user=…^Aauth=Bearer …^A^A`: the user, if the response is well formed.
pub fn xoauth2_user(response: &str) -> Option<String> {
    let pairs = kvpairs(response.strip_suffix(KVSEP)?)?;
    let user = pairs.iter().find(|(k, _)| *k == "user").map(|(_, v)| *v)?;
    (has_auth(&pairs) && plausible_user(user)).then(|| user.to_owned())
}

/// `key=value^A` pairs, each ended by the separator; keys are letters (RFC 7628's `key`).
fn kvpairs(s: &str) -> Option<Vec<(&str, &str)>> {
    if s.is_empty() {
        return Some(Vec::new());
    }
    s.strip_suffix(KVSEP)?
        .split(KVSEP)
        .map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (!k.is_empty() && k.bytes().all(|b| b.is_ascii_alphabetic())).then_some((k, v))
        })
        .collect()
}

fn has_auth(pairs: &[(&str, &str)]) -> bool {
    pairs.iter().any(|(k, v)| *k == "auth" && !v.is_empty())
}

/// RFC 5801's `saslname`: `,` and `=` written as `=2C` and `=3D`, any other `=` malformed.
fn saslname(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3)?;
        out.push(if code.eq_ignore_ascii_case("2C") {
            ','
        } else if code.eq_ignore_ascii_case("3D") {
            '='
        } else {
            return None;
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    plausible_user(&out).then_some(out)
}

/// A user name to look up and log: not empty, and free of control characters, which no mail
/// address has.
fn plausible_user(user: &str) -> bool {
    !user.is_empty() && !user.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauthbearer_names_the_gs2_authorization_identity() {
        let r = "n,a=user@example.com,\x01host=server.example.com\x01port=587\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01";
        assert_eq!(oauthbearer_user(r).as_deref(), Some("user@example.com"));
        assert_eq!(
            oauthbearer_user("y,a=a=2Cb=3dc,\x01auth=Bearer t\x01\x01").as_deref(),
            Some("a,b=c")
        );
    }

    #[test]
    fn malformed_oauthbearer_responses_name_no_user() {
        for r in [
            // No user name: the upstream could not be chosen.
            "n,,\x01auth=Bearer t\x01\x01",
            "n,a=,\x01auth=Bearer t\x01\x01",
            // Channel binding, which OAUTHBEARER does not have.
            "p=tls-unique,a=u,\x01auth=Bearer t\x01\x01",
            // A bare `=` in the name, an unknown escape, a control character.
            "n,a=u=x,\x01auth=Bearer t\x01\x01",
            "n,a=u=2D,\x01auth=Bearer t\x01\x01",
            "n,a=u\r\nx,\x01auth=Bearer t\x01\x01",
            // No token, an empty one, pairs not ended, no final separator, no kvsep at all.
            "n,a=u,\x01host=h\x01\x01",
            "n,a=u,\x01auth=\x01\x01",
            "n,a=u,\x01auth=Bearer t\x01",
            "n,a=u,\x01auth=Bearer t",
            "n,a=u,auth=Bearer t\x01\x01",
            // A key that is not letters, a pair without `=`, a value with a NUL.
            "n,a=u,\x01auth=Bearer t\x01po-rt=1\x01\x01",
            "n,a=u,\x01auth=Bearer t\x01junk\x01\x01",
            "n,a=u,\x01auth=Bearer t\0\x01\x01",
            // The dummy response, which answers an error challenge, not AUTH.
            "\x01",
            "",
        ] {
            assert_eq!(oauthbearer_user(r), None, "{r:?}");
        }
    }

    #[test]
    fn xoauth2_names_its_user() {
        let r = "user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01";
        assert_eq!(xoauth2_user(r).as_deref(), Some("someuser@example.com"));
        for r in [
            "user=\x01auth=Bearer t\x01\x01",
            "auth=Bearer t\x01\x01",
            "user=u\x01\x01",
            "user=u\x01auth=Bearer t\x01",
            "user=u\nv\x01auth=Bearer t\x01\x01",
            "",
        ] {
            assert_eq!(xoauth2_user(r), None, "{r:?}");
        }
    }
}
