//! ODBC through unixODBC (odbc-api): Momentum's datasource URIs as connection strings for the
//! drivers Debian ships, and one lookup on one connection.

use crate::model::datasource::DatasourceUri;
use crate::model::query::Query;
use odbc_api::{
    Connection, ConnectionOptions, Cursor, Environment, IntoParameter, ResultSetMetadata,
};
use std::sync::OnceLock;

/// Seconds a login or a query may take before the driver gives up; the caller's own deadline
/// is usually shorter, and this keeps a worker thread from hanging on a dead server.
pub const DRIVER_TIMEOUT_SECS: u32 = 10;

/// The one ODBC environment of the process.
pub fn environment() -> Result<&'static Environment, String> {
    static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| Environment::new().map_err(|e| format!("ODBC environment: {e}")))
        .as_ref()
        .map_err(Clone::clone)
}

/// A value inside a connection string: braced when it holds a separator, `}` doubled.
fn braced(v: &str) -> String {
    if v.contains([';', '{', '}', '=']) || v.starts_with(' ') || v.ends_with(' ') {
        format!("{{{}}}", v.replace('}', "}}"))
    } else {
        v.to_owned()
    }
}

/// The ODBC connection string for a datasource URI, with the driver names of Debian's
/// `libsqliteodbc`, `odbc-postgresql` and `odbc-mariadb` packages.
pub fn connection_string(uri: &DatasourceUri) -> Option<String> {
    let t = DRIVER_TIMEOUT_SECS;
    let kv = |pairs: &[(String, String)], map: &[(&str, &str)]| {
        let mut out = String::new();
        for (k, v) in pairs {
            if let Some((_, odbc)) = map.iter().find(|(m, _)| m == k) {
                out.push_str(&format!("{odbc}={};", braced(v)));
            }
        }
        out
    };
    match uri {
        DatasourceUri::Odbc(s) => Some(s.clone()),
        DatasourceUri::Sqlite(path) => Some(format!(
            "Driver={{SQLite3}};Database={};Timeout={};",
            braced(&path.to_string_lossy()),
            t * 1000
        )),
        DatasourceUri::Pgsql(pairs) => Some(format!(
            "Driver={{PostgreSQL Unicode}};{}",
            kv(
                pairs,
                &[
                    ("host", "Server"),
                    ("unix", "Server"),
                    ("port", "Port"),
                    ("dbname", "Database"),
                    ("user", "Uid"),
                    ("password", "Pwd"),
                ]
            )
        )),
        // The MariaDB driver waits forever on a dead server unless told otherwise.
        DatasourceUri::Mysql(pairs) => Some(format!(
            "Driver={{MariaDB Unicode}};{}CONN_TIMEOUT={t};READ_TIMEOUT={t};WRITE_TIMEOUT={t};",
            kv(
                pairs,
                &[
                    ("host", "Server"),
                    ("port", "Port"),
                    ("unix", "Socket"),
                    ("dbname", "Database"),
                    ("user", "Uid"),
                    ("password", "Pwd"),
                ]
            )
        )),
        DatasourceUri::Unsupported(_) => None,
    }
}

pub fn connect(connection_string: &str) -> Result<Connection<'static>, String> {
    environment()?
        .connect_with_connection_string(
            connection_string,
            ConnectionOptions {
                login_timeout_sec: Some(DRIVER_TIMEOUT_SECS),
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())
}

/// Runs `query` for `username` (its parameters filled in) and returns its result set.
fn execute<'c>(
    conn: &'c Connection<'_>,
    query: &Query,
    username: &str,
) -> Result<impl Cursor + 'c, String> {
    let params: Vec<_> = query
        .params
        .iter()
        .map(|p| p.value(username).to_owned().into_parameter())
        .collect();
    conn.execute(&query.sql, &params[..], Some(DRIVER_TIMEOUT_SECS as usize))
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "the query returned no result set".into())
}

/// Runs the lookup: the first column of the first row, `None` for no row, NULL or empty.
pub fn lookup(
    conn: &Connection<'_>,
    query: &Query,
    username: &str,
) -> Result<Option<String>, String> {
    let mut cursor = execute(conn, query, username)?;
    let Some(mut row) = cursor.next_row().map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let mut buf = Vec::new();
    let not_null = row.get_text(1, &mut buf).map_err(|e| e.to_string())?;
    let host = String::from_utf8_lossy(&buf).trim().to_owned();
    Ok((not_null && !host.is_empty()).then_some(host))
}

/// Runs the limits query: the first row's columns by name (lower case), `None` for no row.
pub fn lookup_row(
    conn: &Connection<'_>,
    query: &Query,
    username: &str,
) -> Result<Option<super::Row>, String> {
    let mut cursor = execute(conn, query, username)?;
    let columns = cursor.num_result_cols().map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    for i in 1..=columns {
        let name = cursor
            .col_name(i as u16)
            .map_err(|e| e.to_string())?
            .to_ascii_lowercase();
        names.push(name);
    }
    let Some(mut row) = cursor.next_row().map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(names.len());
    for (i, name) in names.into_iter().enumerate() {
        let mut buf = Vec::new();
        let not_null = row
            .get_text(i as u16 + 1, &mut buf)
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&buf).trim().to_owned();
        out.push((name, not_null.then_some(text)));
    }
    Ok(Some(out))
}

/// Prepares the query, which makes the database parse it, without running it.
pub fn prepare(conn: &Connection<'_>, query: &Query) -> Result<(), String> {
    let mut prepared = conn.prepare(&query.sql).map_err(|e| e.to_string())?;
    // Some drivers (psqlodbc) parse only when asked about the result.
    let cols = prepared.num_result_cols().map_err(|e| e.to_string())?;
    if cols < 1 {
        return Err("the query returns no column".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings() {
        let pg = DatasourceUri::Pgsql(vec![
            ("host".into(), "db".into()),
            ("dbname".into(), "mail".into()),
            ("password".into(), "p;w}".into()),
        ]);
        assert_eq!(
            connection_string(&pg).unwrap(),
            "Driver={PostgreSQL Unicode};Server=db;Database=mail;Pwd={p;w}}};"
        );
        let my = DatasourceUri::Mysql(vec![("unix".into(), "/run/mysqld/mysqld.sock".into())]);
        assert!(
            connection_string(&my).unwrap().starts_with(
                "Driver={MariaDB Unicode};Socket=/run/mysqld/mysqld.sock;CONN_TIMEOUT="
            )
        );
    }
}
