//! What a client presents to AUTH, as the front end decodes it for a back end.

use crate::client::SmtpClient;
use crate::model::listener::Mechanism;
use std::fmt;
use zeroize::Zeroize;

/// A password or other secret: never printed, wiped from memory when dropped.
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// What the client proved its identity with.
pub enum Proof {
    /// LOGIN and PLAIN: the password itself.
    Password(Secret),
    /// CRAM-MD5: the challenge sent and the hex HMAC-MD5 digest the client answered; with
    /// `smtp_auth_proxy://`, the upstream session that issued the challenge.
    CramMd5 {
        challenge: String,
        digest: String,
        upstream: Option<SmtpClient>,
    },
    /// OAUTHBEARER and XOAUTH2: the client's whole response, decoded (the GS2 header or
    /// `user=`, and the bearer token), for the upstream to check as it came.
    Token(Secret),
}

/// A CRAM-MD5 challenge (RFC 2195), from the back end: made here for a password file, the
/// upstream's own for `smtp_auth_proxy://` (the client's answer only works against it).
pub struct CramChallenge {
    pub challenge: String,
    pub upstream: Option<SmtpClient>,
}

/// An upstream's refusal of a bearer token, still in progress: its `334` error challenge
/// (base64 JSON, RFC 7628 §3.2.2) goes to the client, whose answer goes back on `upstream`.
pub struct ErrorChallenge {
    /// The challenge as the upstream sent it, base64.
    pub text: String,
    pub upstream: SmtpClient,
}

pub struct Credentials {
    pub mechanism: Mechanism,
    /// The authentication identity as the client typed it.
    pub username: String,
    /// PLAIN's authorization identity; empty when not given.
    pub authzid: String,
    pub proof: Proof,
}
