//! Momentum's acctlog line for an authentication attempt (`log_authentication = "true"`):
//! `time@N@listener@client@user@1`, with `T` instead of `N` for a timeout, an empty client on
//! a Unix socket, 1 for success and 0 otherwise. No password ever appears.

use crate::text::escape_field;
use std::time::{SystemTime, UNIX_EPOCH};

pub fn line(
    listener: &str,
    client: Option<String>,
    user: &str,
    timed_out: bool,
    ok: bool,
) -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{t}@{}@{}@{}@{}@{}",
        if timed_out { 'T' } else { 'N' },
        escape_field(listener),
        escape_field(&client.unwrap_or_default()),
        escape_field(user),
        u8::from(ok)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_escaped() {
        let l = line(
            "*:2025",
            Some("10.0.0.1:3333".into()),
            "bob@ex\\am\nple",
            false,
            true,
        );
        let (_, rest) = l.split_once('@').unwrap();
        assert_eq!(rest, "N@*:2025@10.0.0.1:3333@bob\\@ex\\\\am\\nple@1");
        let l = line("/tmp/s", None, "u", true, false);
        assert!(l.ends_with("@T@/tmp/s@@u@0"));
    }
}
