//! A user's own limits, from `limits_query`: the first row's columns named after the options
//! (`user_message_limit`, `user_recipient_limit`, `user_session_limit`), each written as the
//! option is (`"100/3600 1000/86400"`, `"0"` for none). A NULL or missing column leaves the
//! configured limit in force; other columns are ignored.

use crate::datasource::Row;
use crate::model::limits::{Rate, parse_rates};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserLimits {
    pub messages: Option<Vec<Rate>>,
    pub recipients: Option<Vec<Rate>>,
    /// 0: no limit.
    pub sessions: Option<u32>,
}

/// Reads a row; `Err` names the column that holds something unreadable.
pub fn from_row(row: &Row) -> Result<UserLimits, String> {
    let mut out = UserLimits::default();
    for (name, value) in row {
        let Some(v) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) else {
            continue;
        };
        let bad = |e: String| format!("column {name}: {e}");
        match name.as_str() {
            "user_message_limit" => out.messages = Some(parse_rates(v).map_err(bad)?),
            "user_recipient_limit" => out.recipients = Some(parse_rates(v).map_err(bad)?),
            "user_session_limit" => {
                out.sessions = Some(
                    v.parse()
                        .map_err(|_| bad(format!("`{v}` is not a number of sessions")))?,
                )
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn row(cols: &[(&str, Option<&str>)]) -> Row {
        cols.iter()
            .map(|(n, v)| (n.to_string(), v.map(str::to_owned)))
            .collect()
    }

    #[test]
    fn columns_by_name_nulls_left_to_the_configuration() {
        let l = from_row(&row(&[
            ("username", Some("alice")),
            ("user_message_limit", Some("5/60 50/3600")),
            ("user_recipient_limit", None),
            ("user_session_limit", Some("0")),
        ]))
        .unwrap();
        assert_eq!(
            l.messages.unwrap()[1],
            Rate {
                count: 50,
                window: Duration::from_secs(3600)
            }
        );
        assert_eq!(l.recipients, None);
        assert_eq!(l.sessions, Some(0));
        let e = from_row(&row(&[("user_message_limit", Some("lots"))])).unwrap_err();
        assert!(e.contains("user_message_limit"), "{e}");
    }
}
