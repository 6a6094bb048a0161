//! The nom parser for Momentum's 3.x+ configuration language.
//!
//! `grammar/ecelerity.ebnf` is the specification of this file; keep the two in step.
//!
//! The language is LL(1) once whitespace and comments are skipped, so each function looks at the
//! next character and commits: an error is reported where it happens (`nom::Err::Failure`), not
//! after backtracking through alternatives, which is what makes the messages point at the right
//! column.

use super::ast::{Entry, Include, Instance, ScopeStmt, Setting, Statement, Value, ValueKind};
use super::source::{FileId, Origin};
use nom::IResult;
use nom::bytes::complete::{tag, take_till, take_until, take_while, take_while1};
use nom::character::complete::multispace0;
use nom::error::{ErrorKind, ParseError};
use std::cell::{Cell, RefCell};

/// A syntax error: where, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub offset: usize,
    pub message: String,
    pub notes: Vec<String>,
    /// The file is written in Momentum 2.x syntax; the message says so once.
    pub legacy: bool,
}

/// The parser's internal error: the remaining input marks the position.
#[derive(Debug)]
struct PErr<'a> {
    at: &'a str,
    message: Option<String>,
    /// Where the unclosed construct the error is about was opened, if anywhere else.
    opened: Option<&'a str>,
    legacy: bool,
    notes: Vec<String>,
}

impl<'a> ParseError<&'a str> for PErr<'a> {
    fn from_error_kind(at: &'a str, _: ErrorKind) -> Self {
        PErr {
            at,
            message: None,
            opened: None,
            legacy: false,
            notes: Vec::new(),
        }
    }
    fn append(_: &'a str, _: ErrorKind, other: Self) -> Self {
        other
    }
}

type PResult<'a, T> = IResult<&'a str, T, PErr<'a>>;

fn fail<'a, T>(at: &'a str, message: impl Into<String>) -> PResult<'a, T> {
    Err(nom::Err::Failure(PErr {
        at,
        message: Some(message.into()),
        opened: None,
        legacy: false,
        notes: Vec::new(),
    }))
}

/// A failure inside a construct opened at `opened`, which is named in the message.
fn fail_inside<'a, T>(at: &'a str, opened: &'a str, message: impl Into<String>) -> PResult<'a, T> {
    Err(nom::Err::Failure(PErr {
        at,
        message: Some(message.into()),
        opened: Some(opened),
        legacy: false,
        notes: Vec::new(),
    }))
}

fn legacy<'a, T>(at: &'a str, what: &str) -> PResult<'a, T> {
    Err(nom::Err::Failure(PErr {
        at,
        message: Some(format!(
            "this is Momentum 2.x configuration syntax ({what}); smtp-auth-proxy reads the 3.x+ language"
        )),
        opened: None,
        legacy: true,
        notes: Vec::new(),
    }))
}

/// Characters of option and scope names: `SMTP_Extensions`, `NAS-IP-Address`. A name may also
/// join such runs with single `:`s, as modules name things of their own (`server:one`,
/// `hook:delay_dsn_send_notification`).
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Characters that end a bareword. `/` ends one only where it opens a `/*` comment.
pub fn is_bare_terminator(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '#' | '=' | '{' | '}' | '[' | ']' | '(' | ')' | ',')
}

/// How the next bit of input reads in a message.
fn describe(i: &str) -> String {
    match i.chars().next() {
        None => "end of file".into(),
        Some('\n' | '\r') => "end of line".into(),
        Some(c) if is_bare_terminator(c) => format!("`{c}`"),
        Some(_) => {
            let word: String = i
                .chars()
                .take_while(|&c| !is_bare_terminator(c))
                .take(40)
                .collect();
            format!("`{word}`")
        }
    }
}

struct Cx<'t> {
    /// The whole file, so messages can say where something else in it is.
    text: &'t str,
    file: FileId,
    /// The first `}` since the last top-level statement that is indented otherwise than the
    /// line its scope opened on: where a `}` missing from a scope most likely is, when the
    /// file ends with a scope still open.
    misindented: RefCell<Option<Misindented>>,
    /// Where the latest `}` that closed a scope is.
    last_close: Cell<usize>,
}

/// A `}` indented unlike the scope it closes (offsets into the file).
struct Misindented {
    close: usize,
    label: String,
    start: usize,
}

impl Cx<'_> {
    fn origin(&self, rest: &str) -> Origin {
        Origin {
            file: self.file,
            offset: u32::try_from(self.text.len() - rest.len()).unwrap_or(u32::MAX),
        }
    }

    /// `line L, column C` (columns in characters, from 1) of the position `rest` starts at.
    fn place(&self, rest: &str) -> String {
        let before = &self.text[..self.text.len() - rest.len()];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        format!("line {line}, column {column}")
    }

    /// The width of the indentation before `rest`, if only whitespace precedes it on its line.
    fn indent(&self, rest: &str) -> Option<usize> {
        let offset = self.text.len() - rest.len();
        let line = &self.text[self.text[..offset].rfind('\n').map_or(0, |n| n + 1)..offset];
        line.chars().try_fold(0, |width, c| match c {
            ' ' => Some(width + 1),
            '\t' => Some(width / 8 * 8 + 8),
            _ => None,
        })
    }

    /// Notes the `}` at `close` ending the scope whose name is at `start`, if their
    /// indentations disagree and none has been noted yet.
    fn closed(&self, start: &str, close: &str, label: impl FnOnce() -> String) {
        self.last_close.set(self.text.len() - close.len());
        let mut first = self.misindented.borrow_mut();
        if first.is_none()
            && let (Some(a), Some(b)) = (self.indent(start), self.indent(close))
            && a != b
        {
            let offset = |rest: &str| self.text.len() - rest.len();
            *first = Some(Misindented {
                close: offset(close),
                label: label(),
                start: offset(start),
            });
        }
    }
}

/// Skips whitespace, `# …` line comments and `/* … */` block comments (which do not nest).
fn skip_ws(mut i: &str) -> PResult<'_, ()> {
    loop {
        (i, _) = multispace0(i)?;
        if let Ok((rest, _)) = tag::<_, _, PErr>("#")(i) {
            (i, _) = take_till(|c| c == '\n')(rest)?;
        } else if let Ok((rest, _)) = tag::<_, _, PErr>("/*")(i) {
            match take_until::<_, _, PErr>("*/")(rest) {
                Ok((rest, _)) => i = &rest[2..],
                Err(_) => return fail(i, "comment `/*` is not closed by `*/`"),
            }
        } else {
            return Ok((i, ()));
        }
    }
}

/// A name: runs of name characters joined by single `:`s (no `:` first, last or doubled, so
/// `Subject:` or `a::b` is not one).
fn name(i: &str) -> PResult<'_, &str> {
    let bytes = i.as_bytes();
    let is_char = |n: usize| bytes.get(n).is_some_and(|&b| is_name_char(b as char));
    if !is_char(0) {
        return Err(nom::Err::Error(PErr::from_error_kind(
            i,
            ErrorKind::TakeWhile1,
        )));
    }
    let mut n = 1;
    loop {
        if is_char(n) {
            n += 1;
        } else if bytes.get(n) == Some(&b':') && is_char(n + 1) {
            n += 2;
        } else {
            return Ok((&i[n..], &i[..n]));
        }
    }
}

/// A bareword: a run of anything but terminators, cut before a `/*` comment.
fn bareword(i: &str) -> PResult<'_, &str> {
    let (_, run) = take_while1(|c| !is_bare_terminator(c))(i)?;
    let word = run.find("/*").map_or(run, |n| &run[..n]);
    if word.is_empty() {
        return Err(nom::Err::Error(PErr::from_error_kind(
            i,
            ErrorKind::TakeWhile1,
        )));
    }
    Ok((&i[word.len()..], word))
}

/// A double-quoted string. `\\ \" \n \r \t` are decoded; any other `\x` is kept as written so
/// regular expressions (`\.`, `\w`) survive. Strings may span lines.
fn quoted(open: &str) -> PResult<'_, String> {
    let (mut i, _) = tag("\"")(open)?;
    let mut out = String::new();
    loop {
        let (rest, chunk) = take_while(|c| c != '"' && c != '\\')(i)?;
        out.push_str(chunk);
        let mut chars = rest.chars();
        match chars.next() {
            Some('"') => return Ok((chars.as_str(), out)),
            Some('\\') => {
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some('t') => out.push('\t'),
                    Some(c @ ('\\' | '"')) => out.push(c),
                    Some(c) => {
                        out.push('\\');
                        out.push(c);
                    }
                    None => break,
                }
                i = chars.as_str();
            }
            _ => break,
        }
    }
    fail(
        open,
        "string is not closed: no matching `\"` before end of file",
    )
}

fn scalar<'a>(cx: &Cx<'_>, i: &'a str) -> PResult<'a, Value> {
    let origin = cx.origin(i);
    if i.starts_with('"') {
        let (i, s) = quoted(i)?;
        return Ok((
            i,
            Value {
                kind: ValueKind::Quoted(s),
                origin,
            },
        ));
    }
    let (i, w) = bareword(i)?;
    Ok((
        i,
        Value {
            kind: ValueKind::Bare(w.to_owned()),
            origin,
        },
    ))
}

fn value<'a>(cx: &Cx<'_>, i: &'a str) -> PResult<'a, Value> {
    match i.chars().next() {
        Some('(') => list(cx, i),
        Some('[') => dict(cx, i),
        Some('{') => fail(
            i,
            "expected a value, found `{` (a scope is written `Name { … }`, without `=`)",
        ),
        Some(c) if c == '"' || !is_bare_terminator(c) => scalar(cx, i),
        _ => fail(i, format!("expected a value, found {}", describe(i))),
    }
}

/// Skips whitespace, then one optional `,` separator and whitespace after it.
fn separator(i: &str) -> PResult<'_, ()> {
    let (i, _) = skip_ws(i)?;
    match i.strip_prefix(',') {
        Some(rest) => skip_ws(rest),
        None => Ok((i, ())),
    }
}

fn list<'a>(cx: &Cx<'_>, open: &'a str) -> PResult<'a, Value> {
    let (mut i, _) = tag("(")(open)?;
    (i, _) = skip_ws(i)?;
    let mut items = Vec::new();
    loop {
        match i.chars().next() {
            Some(')') => break,
            None => return fail(open, "list `(` is not closed by `)`"),
            Some('}' | ']' | '=') => {
                return fail_inside(
                    i,
                    open,
                    format!("expected a list item or `)`, found {}", describe(i)),
                );
            }
            _ => {}
        }
        let (rest, item) = value(cx, i)?;
        (i, _) = separator(rest)?;
        items.push(item);
    }
    Ok((
        &i[1..],
        Value {
            kind: ValueKind::List(items),
            origin: cx.origin(open),
        },
    ))
}

fn dict<'a>(cx: &Cx<'_>, open: &'a str) -> PResult<'a, Value> {
    let (mut i, _) = tag("[")(open)?;
    (i, _) = skip_ws(i)?;
    let mut entries = Vec::new();
    loop {
        if i.starts_with(']') {
            break;
        }
        if i.is_empty() {
            return fail(open, "dictionary `[` is not closed by `]`");
        }
        let origin = cx.origin(i);
        // A key is a string or a bareword: modules key their dictionaries by addresses and
        // host names (`0.0.0.1 = "list1_hits"`, `node1.int.example.com = "10.77.0.93"`).
        let (rest, (key, key_quoted)) = if i.starts_with('"') {
            let (rest, k) = quoted(i)?;
            (rest, (k, true))
        } else {
            match bareword(i) {
                Ok((rest, k)) => (rest, (k.to_owned(), false)),
                Err(_) => {
                    return fail(
                        i,
                        format!("expected a dictionary key or `]`, found {}", describe(i)),
                    );
                }
            }
        };
        let (rest, _) = skip_ws(rest)?;
        let Some(rest) = rest.strip_prefix('=') else {
            return fail(
                rest,
                format!(
                    "expected `=` after dictionary key `{key}`, found {}",
                    describe(rest)
                ),
            );
        };
        let (rest, _) = skip_ws(rest)?;
        let (rest, value) = value(cx, rest)?;
        (i, _) = separator(rest)?;
        entries.push(Entry {
            key,
            key_quoted,
            value,
            origin,
        });
    }
    Ok((
        &i[1..],
        Value {
            kind: ValueKind::Dict(entries),
            origin: cx.origin(open),
        },
    ))
}

fn is_listener_scope(name: &str) -> bool {
    name.len() >= 9 && name[name.len() - 9..].eq_ignore_ascii_case("_listener")
}

fn statement<'a>(cx: &Cx<'_>, start: &'a str) -> PResult<'a, Statement> {
    let origin = cx.origin(start);
    let Ok((after_name, name)) = name(start) else {
        return fail(
            start,
            format!(
                "expected an option or scope name, found {}",
                describe(start)
            ),
        );
    };
    if let Some(c) = after_name.chars().next()
        && !is_bare_terminator(c)
        && c != '/'
    {
        return fail(
            after_name,
            format!(
                "`{c}` cannot appear in a name (names are letters, digits, `_` and `-`, in parts joined by single `:`); quote values that contain it"
            ),
        );
    }
    let (i, _) = skip_ws(after_name)?;
    let readonly = name.eq_ignore_ascii_case("readonly_include");
    if (readonly || name.eq_ignore_ascii_case("include")) && !i.starts_with(['=', '{']) {
        let (i, target) = value(cx, i)?;
        return Ok((
            i,
            Statement::Include(Include {
                readonly,
                target,
                origin,
            }),
        ));
    }

    match i.chars().next() {
        Some('=') => {
            let (i, _) = skip_ws(&i[1..])?;
            if i.starts_with('{') {
                // `Name = { … }`: seen once in the vendor manual; read as `Name { … }`.
                return scope_body(cx, start, i, name, None);
            }
            if i.starts_with('(') && is_listener_scope(name) {
                return legacy(start, &format!("`{name} = ( … )` listener list"));
            }
            if i.is_empty() || i.starts_with('}') {
                return fail(
                    i,
                    format!("expected a value after `{name} =`, found {}", describe(i)),
                );
            }
            let (i, value) = value(cx, i)?;
            if let ValueKind::Quoted(text) | ValueKind::Bare(text) = &value.kind {
                let (after, _) = skip_ws(i)?;
                if after.starts_with('{') {
                    // `Replicate = "inbound_cidr" { }`: printed once in the 3.x manual; read as
                    // `Name "instance" { … }`, as `Name = { … }` is. Nothing else can follow
                    // a value with `{`, so this takes no meaning from any other form.
                    let instance = Instance {
                        name: text.clone(),
                        quoted: matches!(value.kind, ValueKind::Quoted(_)),
                    };
                    return scope_body(cx, start, after, name, Some(instance));
                }
            }
            Ok((i, setting(name, value, origin)))
        }
        Some('[') => {
            // `map [ … ]`, `AuthDigestMD5Parameters [ … ]`: both manuals print dictionaries
            // without `=` several times; read as `Name = [ … ]`. A name followed by `[` has
            // no other meaning.
            let (i, value) = dict(cx, i)?;
            Ok((i, setting(name, value, origin)))
        }
        Some('{') => scope_body(cx, start, i, name, None),
        Some('<') => legacy(i, "`<attribute=…>` declaration"),
        Some(c) if c == '"' || !is_bare_terminator(c) => {
            let inst_at = i;
            let (i, inst) = scalar(cx, i)?;
            let (i, _) = skip_ws(i)?;
            let (ValueKind::Quoted(text) | ValueKind::Bare(text)) = inst.kind else {
                unreachable!("scalar() returns scalars")
            };
            let instance = Instance {
                name: text,
                quoted: inst_at.starts_with('"'),
            };
            if i.starts_with('{') {
                return scope_body(cx, start, i, name, Some(instance));
            }
            // 2.x declared modules `Module generic/x x { … }`, `Logger logging/y y { … }`;
            // its keywords never held `:` (a console transcript's `10:47:35 /tmp/2025> …` is
            // no 2.x file).
            if instance.name.contains('/')
                && !name.contains(':')
                && (i.starts_with('"') || i.starts_with(|c| !is_bare_terminator(c)))
            {
                return legacy(
                    start,
                    &format!("`{name} {} …` module declaration", instance.name),
                );
            }
            if i.starts_with('<') {
                return legacy(i, "`<attribute=…>` declaration");
            }
            fail(
                i,
                format!(
                    "expected `{{` to open scope `{}`, found {} (an option needs `=`)",
                    scope_label(name, Some(&instance)),
                    describe(i)
                ),
            )
        }
        _ => fail(
            i,
            format!(
                "expected `=`, `{{` or an instance name after `{name}`, found {}",
                describe(i)
            ),
        ),
    }
}

fn setting(name: &str, value: Value, origin: Origin) -> Statement {
    Statement::Setting(Setting {
        name: name.to_owned(),
        value,
        origin,
    })
}

/// How a scope is named in messages: `ESMTP_Listener`, `Listen ":25"`, `node node1.lan`.
fn scope_label(name: &str, instance: Option<&Instance>) -> String {
    match instance {
        None => name.to_owned(),
        Some(i) if i.quoted => format!("{name} \"{}\"", i.name),
        Some(i) => format!("{name} {}", i.name),
    }
}

/// A scope being read: where its statement starts and what it is called, for the message when
/// it is never closed.
struct OpenScope<'a> {
    start: &'a str,
    label: String,
}

/// `Name [instance] {`, from the `{` at `open` to its `}`; `start` is where the name is.
fn scope_body<'a>(
    cx: &Cx<'_>,
    start: &'a str,
    open: &'a str,
    name: &str,
    instance: Option<Instance>,
) -> PResult<'a, Statement> {
    let scope = OpenScope {
        start,
        label: scope_label(name, instance.as_ref()),
    };
    let (i, body) = statements(cx, &open[1..], Some(&scope))?;
    cx.closed(start, i, || scope.label.clone());
    Ok((
        &i[1..],
        Statement::Scope(ScopeStmt {
            name: name.to_owned(),
            instance,
            body,
            origin: cx.origin(start),
        }),
    ))
}

/// Statements up to end of file (`open` is `None`) or up to the `}` closing the scope `open`;
/// the `}` is left for the caller.
fn statements<'a>(
    cx: &Cx<'_>,
    mut i: &'a str,
    open: Option<&OpenScope<'a>>,
) -> PResult<'a, Vec<Statement>> {
    let mut body = Vec::new();
    loop {
        (i, _) = skip_ws(i)?;
        match (i.chars().next(), open) {
            (None, None) => return Ok((i, body)),
            (None, Some(open)) => return unclosed(cx, open, &body),
            (Some('}'), Some(_)) => return Ok((i, body)),
            (Some('}'), None) => return fail(i, "`}` closes no open scope"),
            _ => {}
        }
        let (rest, stmt) = statement(cx, i)?;
        if open.is_none() {
            // A scope left open must start after this statement: what was noted in it is
            // no clue.
            cx.misindented.take();
        }
        body.push(stmt);
        i = rest;
    }
}

/// End of file inside `open`. The error names the scope and points at it; a note says where
/// the missing `}` most likely belongs: after a scope whose `}` is indented otherwise than its
/// name, or else inside the scope the file's last `}` closed, when that `}` stands on a line of
/// its own (the end of a scope written over several lines).
fn unclosed<'a, T>(cx: &Cx<'_>, open: &OpenScope<'a>, body: &[Statement]) -> PResult<'a, T> {
    let mut notes = Vec::new();
    if let Some(m) = cx.misindented.borrow_mut().take() {
        notes.push(format!(
            "the `}}` at {} is indented unlike `{}` (opened at {}), which it closes: is a `}}` missing before it?",
            cx.place(&cx.text[m.close..]),
            m.label,
            cx.place(&cx.text[m.start..]),
        ));
    } else if let Some(Statement::Scope(last)) = body.last()
        && cx.indent(&cx.text[cx.last_close.get()..]).is_some()
    {
        let label = scope_label(&last.name, last.instance.as_ref());
        notes.push(format!(
            "the last `}}` closed `{label}` (opened at {}); if it was meant for `{}`, a `}}` is missing inside `{label}`",
            cx.place(&cx.text[last.origin.offset as usize..]),
            open.label,
        ));
    }
    Err(nom::Err::Failure(PErr {
        at: open.start,
        message: Some(format!(
            "scope `{}` opened at {} is not closed: no `}}` before end of file",
            open.label,
            cx.place(open.start)
        )),
        opened: None,
        legacy: false,
        notes,
    }))
}

/// Parses one file's text. `file` is recorded in every node's origin.
pub fn parse(text: &str, file: FileId) -> Result<Vec<Statement>, SyntaxError> {
    let cx = Cx {
        text,
        file,
        misindented: RefCell::new(None),
        last_close: Cell::new(0),
    };
    let body = text.strip_prefix('\u{feff}').unwrap_or(text);
    match statements(&cx, body, None) {
        Ok((_, stmts)) => Ok(stmts),
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => {
            let mut message = e.message.unwrap_or_else(|| "syntax error".into());
            if let Some(opened) = e.opened {
                message.push_str(&format!(
                    " (the `{}` opened at {} is not closed)",
                    opened.chars().next().unwrap_or('?'),
                    cx.place(opened)
                ));
            }
            let mut notes = e.notes;
            if e.legacy {
                notes.push(
                    "convert the file with Momentum's `ec_migrate_conf` (it rewrites 2.2 syntax as 3.0), then load the result"
                        .into(),
                );
            }
            Err(SyntaxError {
                offset: text.len() - e.at.len(),
                message,
                notes,
                legacy: e.legacy,
            })
        }
        Err(nom::Err::Incomplete(_)) => unreachable!("complete parsers never ask for more input"),
    }
}

/// Whether `s` can be written as a bareword and read back as the same bareword.
pub fn is_bareword(s: &str) -> bool {
    !s.is_empty() && !s.contains(is_bare_terminator) && !s.contains("/*")
}

/// Whether `s` can be written as a name (option or scope).
pub fn is_name(s: &str) -> bool {
    name(s).is_ok_and(|(rest, _)| rest.is_empty())
}
