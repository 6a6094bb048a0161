//! The `smtp_auth_proxy` query: SQL with Momentum's named parameters, rewritten for ODBC.
//!
//! `:username`, `:localpart` and `:domain` outside quoted text become `?` and are bound in the
//! order they appear. Text in single quotes, double quotes (identifiers) and comments is left
//! alone, and so are `::` casts (`host::text`). The customer's SQL is otherwise passed through as
//! written: even the vendor's example, which is not valid SQL, is the datasource's to refuse.

/// What a parameter is bound to, for a user name as the client typed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    /// The AUTH identity as typed.
    Username,
    /// Before the last `@`; the whole name when there is no `@`.
    Localpart,
    /// After the last `@`; the empty string when there is no `@`.
    Domain,
}

impl Param {
    pub fn value(self, username: &str) -> &str {
        let split = username.rsplit_once('@');
        match (self, split) {
            (Param::Username, _) => username,
            (Param::Localpart, Some((l, _))) => l,
            (Param::Localpart, None) => username,
            (Param::Domain, Some((_, d))) => d,
            (Param::Domain, None) => "",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The SQL with `?` in place of each named parameter.
    pub sql: String,
    /// The parameters, in placeholder order.
    pub params: Vec<Param>,
}

/// Rewrites named parameters. Errors name an unknown parameter or a bare `?`, whose binding
/// could only be guessed.
pub fn rewrite(sql: &str) -> Result<Query, String> {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut params = Vec::new();
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"') => {
                // To the closing quote; a doubled quote is an escaped one and continues.
                i += 1;
                while i < b.len() {
                    if b[i] == q {
                        if b.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 2;
            }
            b':' if b.get(i + 1) == Some(&b':') => i += 2,
            b':' if b
                .get(i + 1)
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_') =>
            {
                let start = i + 1;
                let mut end = start;
                while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
                    end += 1;
                }
                let name = &sql[start..end];
                let param = match name.to_ascii_lowercase().as_str() {
                    "username" => Param::Username,
                    "localpart" => Param::Localpart,
                    "domain" => Param::Domain,
                    _ => {
                        return Err(format!(
                            "unknown query parameter `:{name}` (the parameters are :username, :localpart and :domain)"
                        ));
                    }
                };
                out.push_str(&sql[copied..i]);
                out.push('?');
                params.push(param);
                i = end;
                copied = end;
            }
            b'?' => {
                return Err(
                    "a `?` placeholder in the query: write :username, :localpart or :domain, so the binding is explicit"
                        .into(),
                );
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied.min(sql.len())..]);
    Ok(Query { sql: out, params })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_parameters_outside_quotes() {
        let q = rewrite(
            "SELECT host::text FROM t WHERE u = :username AND d = :Domain AND x = ':localpart' -- :nope\n AND l = :localpart",
        )
        .unwrap();
        assert_eq!(
            q.sql,
            "SELECT host::text FROM t WHERE u = ? AND d = ? AND x = ':localpart' -- :nope\n AND l = ?"
        );
        assert_eq!(q.params, [Param::Username, Param::Domain, Param::Localpart]);
    }

    #[test]
    fn vendor_example_passes_through_unrepaired() {
        let q = rewrite("SELECT host FROM auth_servers WHERE username = :username, localpart = :localpart, domain = :domain;").unwrap();
        assert_eq!(
            q.sql,
            "SELECT host FROM auth_servers WHERE username = ?, localpart = ?, domain = ?;"
        );
    }

    #[test]
    fn errors_and_splitting() {
        assert!(rewrite("SELECT 1 WHERE a = :user").is_err());
        assert!(rewrite("SELECT 1 WHERE a = ?").is_err());
        assert_eq!(Param::Localpart.value("a@b@c.example"), "a@b");
        assert_eq!(Param::Domain.value("a@b@c.example"), "c.example");
        assert_eq!(Param::Domain.value("plain"), "");
        assert_eq!(Param::Localpart.value("plain"), "plain");
        assert!(rewrite("SELECT 'it''s :x' /* :y */ FROM t").is_ok());
    }
}
