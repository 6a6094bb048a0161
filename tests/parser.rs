//! The configuration language, construct by construct, and its error positions.

mod common;

use common::{TempDir, error_of, load_text, messages, opts, tree};
use smtp_auth_proxy::config::ast::ValueKind;
use smtp_auth_proxy::config::dump::{DumpOptions, dump};
use smtp_auth_proxy::config::{LoadOptions, MissingIncludes, Scope, load};

fn scalar<'a>(scope: &'a Scope, name: &str) -> &'a str {
    scope
        .get(name)
        .unwrap_or_else(|| panic!("no option {name}"))
        .value
        .as_scalar()
        .unwrap()
}

fn child<'a>(scope: &'a Scope, name: &'a str, instance: Option<&str>) -> &'a Scope {
    scope
        .children(name)
        .find(|s| s.instance.as_ref().map(|i| i.name.as_str()) == instance)
        .unwrap_or_else(|| panic!("no scope {name} {instance:?}"))
}

fn list_items(scope: &Scope, name: &str) -> Vec<String> {
    scope
        .get(name)
        .unwrap()
        .value
        .as_list()
        .unwrap()
        .iter()
        .map(|v| v.as_scalar().unwrap().to_owned())
        .collect()
}

#[test]
fn statements_of_every_form() {
    let l = tree(
        r#"
opt = value
Anon { a = 1 }
Named "instance one" { b = 2 }
node node1.lan { mta_id = 1 votes = 1 }
Typo_Tolerated = { c = 3 }
NextLine "x"
{
  d = 4
}
ESMTP_Listener{ Listen ":25" {} }
debug_level=debug
"#,
    );
    let r = &l.root;
    assert_eq!(scalar(r, "opt"), "value");
    assert_eq!(scalar(child(r, "anon", None), "a"), "1");
    let named = child(r, "Named", Some("instance one"));
    assert!(named.instance.as_ref().unwrap().quoted);
    assert_eq!(scalar(named, "b"), "2");
    let node = child(r, "node", Some("node1.lan"));
    assert!(!node.instance.as_ref().unwrap().quoted);
    assert_eq!((scalar(node, "mta_id"), scalar(node, "votes")), ("1", "1"));
    assert_eq!(scalar(child(r, "typo_tolerated", None), "c"), "3");
    assert_eq!(scalar(child(r, "NextLine", Some("x")), "d"), "4");
    let listener = child(r, "esmtp_listener", None);
    assert!(child(listener, "Listen", Some(":25")).settings.is_empty());
    assert_eq!(scalar(r, "DEBUG_LEVEL"), "debug");
}

#[test]
fn strings_escapes_and_multiple_lines() {
    let l = tree(
        "a = \"tab\\there \\\"q\\\" back\\\\slash\\r\\n\"\n\
         re = \"/^(wanadoo|orange)\\.fr$/ \\w+\"\n\
         q = \"SELECT 1 FROM t WHERE a = :user and\n   b = :pass\"\n\
         hash = \"#spe_relay\"\n\
         empty = \"\"\n",
    );
    let r = &l.root;
    assert_eq!(scalar(r, "a"), "tab\there \"q\" back\\slash\r\n");
    assert_eq!(
        scalar(r, "re"),
        "/^(wanadoo|orange)\\.fr$/ \\w+",
        "unknown escapes kept"
    );
    assert_eq!(
        scalar(r, "q"),
        "SELECT 1 FROM t WHERE a = :user and\n   b = :pass"
    );
    assert_eq!(scalar(r, "hash"), "#spe_relay");
    assert_eq!(scalar(r, "empty"), "");
    assert!(matches!(
        r.get("a").unwrap().value.kind,
        ValueKind::Quoted(_)
    ));
}

#[test]
fn barewords_carry_addresses_paths_and_patterns() {
    let l = tree(
        "v6 = fd01:345::1 # comment after the value\n\
         cidr = 10.10.10.0/24\n\
         mode = 0644\n\
         host = some.smtp.server\n\
         wild = *.example.com\n\
         mail = user@example.com\n\
         uri = digest:///opt/x_y-z\n\
         glued = a/*comment*/\n",
    );
    let r = &l.root;
    for (k, v) in [
        ("v6", "fd01:345::1"),
        ("cidr", "10.10.10.0/24"),
        ("mode", "0644"),
        ("host", "some.smtp.server"),
        ("wild", "*.example.com"),
        ("mail", "user@example.com"),
        ("uri", "digest:///opt/x_y-z"),
        ("glued", "a"),
    ] {
        assert_eq!(scalar(r, k), v, "{k}");
        assert!(matches!(r.get(k).unwrap().value.kind, ValueKind::Bare(_)));
    }
}

#[test]
fn lists_with_spaces_commas_nesting_and_scalars() {
    let l = tree(
        r#"
ws = ( "a" b
       "c" )
commas = ("from", "to", "message-id")
empty = ()
nested = ( a ( b c ) [ k = v ] )
scalar = "csv:"
"#,
    );
    let r = &l.root;
    assert_eq!(list_items(r, "ws"), ["a", "b", "c"]);
    assert_eq!(list_items(r, "commas"), ["from", "to", "message-id"]);
    assert!(r.get("empty").unwrap().value.as_list().unwrap().is_empty());
    let nested = r.get("nested").unwrap().value.as_list().unwrap();
    assert_eq!(nested.len(), 3);
    assert_eq!(nested[1].as_list().unwrap().len(), 2);
    assert_eq!(nested[2].as_dict().unwrap()[0].key, "k");
    assert_eq!(
        list_items(r, "scalar"),
        ["csv:"],
        "a scalar reads as a one-item list"
    );
}

#[test]
fn dictionaries() {
    let l = tree(
        r#"
AuthLoginParameters = [
    log_authentication = "true"
    uri = "smtp_auth_proxy://"
]
one = [uri = "mysqlauth://"]
commas = [ a = 1, b = 2 ]
deep = [ "Quoted Key" = x list = ( 1 2 ) sub = [ z = 9 ] ]
none = []
"#,
    );
    let r = &l.root;
    let d = r
        .get("authloginparameters")
        .unwrap()
        .value
        .as_dict()
        .unwrap();
    assert_eq!(
        d.iter()
            .map(|e| (e.key.as_str(), e.value.as_scalar().unwrap()))
            .collect::<Vec<_>>(),
        [
            ("log_authentication", "true"),
            ("uri", "smtp_auth_proxy://")
        ]
    );
    assert_eq!(r.get("one").unwrap().value.as_dict().unwrap().len(), 1);
    assert_eq!(r.get("commas").unwrap().value.as_dict().unwrap().len(), 2);
    let deep = r.get("deep").unwrap().value.as_dict().unwrap();
    assert!(deep[0].key_quoted && deep[0].key == "Quoted Key");
    assert_eq!(deep[1].value.as_list().unwrap().len(), 2);
    assert_eq!(deep[2].value.as_dict().unwrap()[0].key, "z");
    assert!(r.get("none").unwrap().value.as_dict().unwrap().is_empty());
}

/// The keys of a dictionary, in order.
fn keys(scope: &Scope, name: &str) -> Vec<String> {
    scope
        .get(name)
        .unwrap_or_else(|| panic!("no option {name}"))
        .value
        .as_dict()
        .unwrap()
        .iter()
        .map(|e| e.key.clone())
        .collect()
}

#[test]
fn dictionary_keys_are_addresses_and_host_names_as_the_manuals_print_them() {
    // url_ripper, smtp_cbv and msgc_server as the 3.x and 4.x manuals print them.
    let l = tree(
        r#"
url_ripper "url_ripper1" {
  bits = [
    0.0.0.1 = "list1_hits"
    0.0.1.0 = "list8_hits"
  ]
}
smtp_cbv "smtp_cbv1" { map = [ yahoo.net = "yahoo.com" ] }
msgc_server {
  peers = [
    node1.int.example.com = "10.77.0.93"
    node2.int.example.com = "10.77.0.94"
  ]
}
other = [ fd01:345::1 = v6 10.0.0.0/8=cidr NAS-IP-Address = h server:one = [ host = x ] "a b" = q ]
"#,
    );
    let r = &l.root;
    let bits = child(r, "url_ripper", Some("url_ripper1"));
    assert_eq!(keys(bits, "bits"), ["0.0.0.1", "0.0.1.0"]);
    let cbv = child(r, "smtp_cbv", Some("smtp_cbv1"));
    assert_eq!(keys(cbv, "map"), ["yahoo.net"]);
    assert!(r.get("peers").is_none(), "peers belongs to msgc_server");
    let msgc = child(r, "msgc_server", None);
    let d = msgc.get("peers").unwrap().value.as_dict().unwrap();
    assert_eq!(
        d.iter()
            .map(|e| (e.key.as_str(), e.key_quoted, e.value.as_scalar().unwrap()))
            .collect::<Vec<_>>(),
        [
            ("node1.int.example.com", false, "10.77.0.93"),
            ("node2.int.example.com", false, "10.77.0.94")
        ]
    );
    assert_eq!(
        keys(r, "other"),
        [
            "fd01:345::1",
            "10.0.0.0/8",
            "NAS-IP-Address",
            "server:one",
            "a b"
        ]
    );
    // Written back bare where a bareword can carry them, and read back the same.
    let out = dump(&l.root, &l.sources, DumpOptions::default());
    assert!(out.contains("    0.0.0.1 = \"list1_hits\"\n"), "{out}");
    assert!(out.contains("\"a b\" = q"), "{out}");
    let again = tree(&out);
    assert_eq!(
        dump(&again.root, &again.sources, DumpOptions::default()),
        out
    );
    // A key is still one word: what follows it must be `=`.
    assert!(error_of("a = [ 0.0.0.1 \"x\" ]").starts_with(
        "test.conf:1:15: error: expected `=` after dictionary key `0.0.0.1`, found `\"`"
    ));
    assert!(
        error_of("a = [ = 1 ]")
            .starts_with("test.conf:1:7: error: expected a dictionary key or `]`, found `=`")
    );
}

#[test]
fn a_dictionary_given_without_equals_reads_as_with_it() {
    // auth_radius, alias schemes, url_ripper, the console's AuthDigestMD5Parameters, and a
    // delay_dsn hook, as the manuals print them.
    let l = tree(
        r#"
auth_radius {
  map [
    username = "%{username_localpart}@%{username_domain||example.com}"
  ]
}
url_ripper "u" { bits [ 0.0.0.1 = "sbl_hits" ] values[127.0.0.2 = "simple_hits"] }
Control_Listener {
  Listen ":2025" {
    AuthDigestMD5Parameters [
      uri = "digest:///opt/msys/ecelerity/etc/console_passwd"
      log_authentication = "true"
    ]
    Enable_Authorization = "true"
  }
}
sieve "sieve1" {
  hook:delay_dsn_send_notification [
    script = "/path/to/send_notification.siv"
  ]
}
with = [ k = v ]
without [ k = v ]
"#,
    );
    let r = &l.root;
    assert_eq!(keys(child(r, "auth_radius", None), "map"), ["username"]);
    let u = child(r, "url_ripper", Some("u"));
    assert_eq!(keys(u, "bits"), ["0.0.0.1"]);
    assert_eq!(keys(u, "values"), ["127.0.0.2"]);
    let listen = child(child(r, "control_listener", None), "Listen", Some(":2025"));
    assert_eq!(
        keys(listen, "AuthDigestMD5Parameters"),
        ["uri", "log_authentication"]
    );
    assert_eq!(scalar(listen, "Enable_Authorization"), "true");
    let sieve = child(r, "sieve", Some("sieve1"));
    assert_eq!(keys(sieve, "hook:delay_dsn_send_notification"), ["script"]);
    // `:` joins the parts of a name; it does not end or double one.
    for (text, col) in [("Subject: x", 8), ("a::b = 1", 2), ("a: = 1", 2)] {
        let e = error_of(text);
        assert!(
            e.starts_with(&format!(
                "test.conf:1:{col}: error: `:` cannot appear in a name"
            )),
            "{text}: {e}"
        );
    }
    let out = dump(&l.root, &l.sources, DumpOptions::default());
    assert!(
        out.contains("with = [ k = v ]\nwithout = [ k = v ]\n"),
        "{out}"
    );
}

#[test]
fn a_2x_file_is_still_refused_when_a_dictionary_without_equals_comes_first() {
    // Momentum 2.x wrote module dictionaries without `=` too; the file is still 2.x.
    for text in [
        "Logger cluster/ec_cluster cluster {\n  logs [ mainlog = \"/var/log/m\" ]\n}\n",
        "logs [ mainlog = \"/var/log/m\" ]\nESMTP_Listener = (\n  *:25\n)\n",
        "replicate [ type = \"inbound_cidr\" ]\nBinding example <duravip=\"enabled\"> { }\n",
    ] {
        let l = load_text(text);
        let errs: Vec<_> = l.diagnostics.errors().collect();
        assert_eq!(errs.len(), 1, "{text}");
        let msg = errs[0].render(&l.sources, false);
        assert!(
            msg.contains("error: this is Momentum 2.x configuration syntax"),
            "{msg}"
        );
        assert!(errs[0].notes[0].contains("ec_migrate_conf"), "{msg}");
    }
}

#[test]
fn a_scope_written_with_equals_before_its_instance_reads_as_without() {
    // `Replicate = "inbound_cidr" {}`, as the 3.x manual's cluster example prints it.
    let l = tree("cluster {\n  Replicate = \"inbound_cidr\" {}\n  replicate bare {}\n}\n");
    let cluster = child(&l.root, "cluster", None);
    let inst = child(cluster, "Replicate", Some("inbound_cidr"))
        .instance
        .clone();
    assert!(inst.unwrap().quoted);
    child(cluster, "Replicate", Some("bare"));
    assert!(cluster.settings.is_empty());
}

#[test]
fn an_unclosed_scope_is_named_where_it_was_opened() {
    let text = "a = 1\n\nEsmtp_Listener {\n  Listen \":25\" { }\n";
    assert_eq!(
        error_of(text),
        "test.conf:3:1: error: scope `Esmtp_Listener` opened at line 3, column 1 is not closed: no `}` before end of file"
    );
    let named = error_of("Listen \":25\"\n{\n  a = 1\n");
    assert!(
        named.starts_with("test.conf:1:1: error: scope `Listen \":25\"` opened at line 1"),
        "{named}"
    );
    let notes = |text: &str| {
        let l = load_text(text);
        let e = l.diagnostics.errors().next().unwrap().clone();
        (e.render(&l.sources, false), e.notes)
    };
    // A `}` missing from an inner scope: the outer one is reported open, and the `}` indented
    // unlike the scope it closes is pointed out (the 4.x ha_proxy_client example, as printed).
    let (msg, n) = notes(
        "binding {\n  ha_proxy_server = \"10.0.0.1:8085\"\n  Domain example.com {\n    ha_proxy_bypass = \"true\"\n}\n",
    );
    assert!(
        msg.starts_with("test.conf:1:1: error: scope `binding` opened"),
        "{msg}"
    );
    assert_eq!(
        n,
        [
            "the `}` at line 5, column 1 is indented unlike `Domain example.com` (opened at line 3, column 3), which it closes: is a `}` missing before it?"
        ]
    );
    // Without indentation to go by, the scope the last `}` closed is named.
    let (_, n) = notes("E {\nL \"x\" {\na = 1\n}\n");
    assert_eq!(
        n,
        [
            "the last `}` closed `L \"x\"` (opened at line 2, column 1); if it was meant for `E`, a `}` is missing inside `L \"x\"`"
        ]
    );
    // A badly indented scope closed at the top level is no clue to a later unclosed one.
    let (_, n) = notes("A {\n    x {\n}\n}\nB {\n");
    assert!(n.is_empty(), "{n:?}");
}

#[test]
fn comments_of_both_kinds() {
    let l = tree(
        "# leading\n\
         a = 1 # trailing\n\
         /* block\n spanning # lines\n */ b = 2\n\
         c = ( x /* inside */ y ) # done\n\
         #smtpapi{}\n",
    );
    let r = &l.root;
    assert_eq!((scalar(r, "a"), scalar(r, "b")), ("1", "2"));
    assert_eq!(list_items(r, "c"), ["x", "y"]);
    assert!(r.children("smtpapi").next().is_none());
    assert_eq!(r.settings.len(), 3);
}

#[test]
fn names_fold_case_scopes_merge_later_option_wins() {
    let l = tree(
        r#"
ESMTP_Listener { Listen ":25" { SMTP_Extensions = ( "STARTTLS" ) } }
esmtp_listener { listen ":25" { smtp_extensions = ( "AUTH LOGIN" ) Idle_Time = 10 } }
Esmtp_Listener { Listen ":587" {} }
Relay_Hosts = ( 127.0.0.1 )
relay_hosts = ( 10.0.0.0/8 )
"#,
    );
    let r = &l.root;
    assert_eq!(r.scopes.len(), 1, "three spellings, one scope");
    let listener = &r.scopes[0];
    assert_eq!(listener.name, "ESMTP_Listener", "first spelling kept");
    assert_eq!(listener.scopes.len(), 2);
    let l25 = child(listener, "listen", Some(":25"));
    assert_eq!(list_items(l25, "SMTP_EXTENSIONS"), ["AUTH LOGIN"]);
    assert_eq!(scalar(l25, "idle_time"), "10");
    assert_eq!(list_items(r, "relay_hosts"), ["10.0.0.0/8"]);
    assert_eq!(r.settings.len(), 1);
}

#[test]
fn include_relative_search_path_directory_and_file_uri() {
    let dir = TempDir::new("inc");
    dir.write("sub/conf.d/20-b.conf", "b = 2\nshared = from-b\n");
    dir.write("sub/conf.d/10-a.conf", "a = 1\nshared = from-a\n");
    dir.write("sub/conf.d/.hidden.conf", "hidden = 1\n");
    dir.write("sub/conf.d/nested/x.conf", "nested = 1\n");
    dir.write("sub/listen.conf", "Listen \":25\" { }\n");
    dir.write("search/elsewhere.conf", "found_on_search_path = yes\n");
    let abs = dir.write("abs.conf", "by_uri = 1\n");
    let main = dir.write(
        "sub/main.conf",
        &format!(
            "include \"conf.d\"\n\
             ESMTP_Listener {{ include \"listen.conf\" }}\n\
             readonly_include \"elsewhere.conf\"\n\
             include \"file://{}\"\n",
            abs.display()
        ),
    );
    let o = LoadOptions {
        missing_includes: MissingIncludes::Error,
        search_path: vec![dir.path().join("nowhere"), dir.path().join("search")],
    };
    let l = load(&main, &o);
    assert!(!l.diagnostics.has_errors(), "{:#?}", messages(&l));
    let r = &l.root;
    assert_eq!((scalar(r, "a"), scalar(r, "b")), ("1", "2"));
    assert_eq!(
        scalar(r, "shared"),
        "from-b",
        "directory files in sorted order, later wins"
    );
    assert!(r.get("hidden").is_none() && r.get("nested").is_none());
    assert!(
        child(r, "esmtp_listener", None)
            .children("listen")
            .next()
            .is_some()
    );
    assert_eq!(scalar(r, "found_on_search_path"), "yes");
    assert_eq!(scalar(r, "by_uri"), "1");
}

#[test]
fn include_errors_name_the_place() {
    let dir = TempDir::new("incerr");
    let a = dir.write("a.conf", "x = 1\ninclude \"b.conf\"\n");
    dir.write("b.conf", "\n\ninclude \"a.conf\"\n");
    let l = load(&a, &opts());
    let errs = messages(&l);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].contains("b.conf:3:1: error: include cycle"),
        "{}",
        errs[0]
    );
    assert!(
        errs[0].contains("a.conf:2:1 includes"),
        "the chain is named: {}",
        errs[0]
    );

    let m = dir.write("m.conf", "\n  include \"missing.conf\"\n");
    let l = load(&m, &opts());
    let errs = messages(&l);
    assert!(errs[0].starts_with(&format!(
        "{}:2:3: error: included file `missing.conf` does not exist",
        m.display()
    )));

    let keep = LoadOptions {
        missing_includes: MissingIncludes::Keep,
        ..opts()
    };
    let l = load(&m, &keep);
    assert!(!l.diagnostics.has_errors());
    assert_eq!(l.root.unresolved.len(), 1, "kept for --dump-config");

    let u = dir.write(
        "u.conf",
        "include \"eccmgr://user:pw@10.0.0.1:2026/boot\"\n",
    );
    let errs = messages(&load(&u, &opts()));
    assert!(
        errs[0].contains("u.conf:1:9: error: cannot include `eccmgr://"),
        "{}",
        errs[0]
    );

    let bad = dir.write("bad.conf", "ok = 1\n\nbroken = (\n");
    let top = dir.write("top.conf", "include \"bad.conf\"\n");
    let errs = messages(&load(&top, &opts()));
    assert!(
        errs[0].starts_with(&format!(
            "{}:3:10: error: list `(` is not closed",
            bad.display()
        )),
        "{}",
        errs[0]
    );
}

#[test]
fn quoted_option_names_are_not_part_of_the_language() {
    assert!(
        error_of("\"quoted\" = 1")
            .starts_with("test.conf:1:1: error: expected an option or scope name")
    );
}

#[test]
fn syntax_errors_point_at_line_and_column() {
    let cases: &[(&str, &str)] = &[
        (
            "a = \"open\n\nstring",
            "test.conf:1:5: error: string is not closed",
        ),
        (
            "a = ( 1 2\nb = 3",
            "test.conf:2:3: error: expected a list item or `)`, found `=` (the `(` opened at line 1, column 5 is not closed)",
        ),
        (
            "a = [ k = v\n",
            "test.conf:1:5: error: dictionary `[` is not closed",
        ),
        (
            "a = [ k v ]",
            "test.conf:1:9: error: expected `=` after dictionary key `k`, found `v`",
        ),
        (
            "Scope {\n  a = 1\n",
            "test.conf:1:1: error: scope `Scope` opened at line 1, column 1 is not closed",
        ),
        (
            "a = 1\n}\n",
            "test.conf:2:1: error: `}` closes no open scope",
        ),
        (
            "x { a = }",
            "test.conf:1:9: error: expected a value after `a =`, found `}`",
        ),
        (
            "a =",
            "test.conf:1:4: error: expected a value after `a =`, found end of file",
        ),
        (
            "  foo.bar = 1",
            "test.conf:1:6: error: `.` cannot appear in a name",
        ),
        (
            "Listen \":25\"\nx = 1",
            "test.conf:2:1: error: expected `{` to open scope `Listen \":25\"`, found `x`",
        ),
        (
            "a = 1 /* never closed",
            "test.conf:1:7: error: comment `/*` is not closed by `*/`",
        ),
        (
            "= 5",
            "test.conf:1:1: error: expected an option or scope name, found `=`",
        ),
        (
            "é = 1",
            "test.conf:1:1: error: expected an option or scope name, found `é`",
        ),
    ];
    for (text, want) in cases {
        let got = error_of(text);
        assert!(
            got.starts_with(want),
            "\ninput: {text:?}\n  got: {got}\n want: {want}"
        );
    }
}

#[test]
fn error_shows_the_line_and_a_caret() {
    let l = load_text("good = 1\n\tbad = ( 1 2 }\n");
    let text = l.diagnostics.0[0].render(&l.sources, true);
    assert_eq!(
        text,
        "test.conf:2:14: error: expected a list item or `)`, found `}` (the `(` opened at line 2, column 8 is not closed)\n   |\n 2 | \tbad = ( 1 2 }\n   | \t            ^"
    );
}

#[test]
fn legacy_2x_syntax_is_one_clear_error() {
    for (text, at) in [
        (
            "Security { user = x }\nESMTP_Listener = (\n  *:25\n)\n",
            "test.conf:2:1",
        ),
        ("Module generic/foo foo {\n}\n", "test.conf:1:1"),
        ("Logger logging/ec_logger ec_logger { }", "test.conf:1:1"),
        (
            "Binding example <duravip=\"enabled\"> { }",
            "test.conf:1:17",
        ),
    ] {
        let l = load_text(text);
        let errs: Vec<_> = l.diagnostics.errors().collect();
        assert_eq!(errs.len(), 1, "{text}");
        let msg = errs[0].render(&l.sources, false);
        assert!(
            msg.starts_with(&format!(
                "{at}: error: this is Momentum 2.x configuration syntax"
            )),
            "{msg}"
        );
        assert!(msg.contains("ec_migrate_conf"), "{msg}");
    }
}

#[test]
fn dump_is_valid_config_that_reloads_identically() {
    let text = r#"
# comment dropped
a = "quote\" back\\ tab	end"
b = bare.word
ESMTP_Listener {
  SMTP_Extensions = ( "AUTH LOGIN" STARTTLS )
  AuthLoginParameters = [ uri = "smtp_auth_proxy://" log_authentication = "true" ]
  Listen ":25" { Peer "10.0.0.0/8" { open_relay = true } }
}
node node1.lan { }
re = "\w+\.fr"
multi = "line one
line two"
"#;
    let first = tree(text);
    let out = dump(&first.root, &first.sources, DumpOptions::default());
    let second = tree(&out);
    assert_eq!(
        dump(&second.root, &second.sources, DumpOptions::default()),
        out
    );
    assert_eq!(scalar(&second.root, "re"), "\\w+\\.fr");
    assert_eq!(scalar(&second.root, "multi"), "line one\nline two");
    let with_origins = dump(&first.root, &first.sources, DumpOptions { origins: true });
    assert!(
        with_origins.contains("b = bare.word  # test.conf:4"),
        "{with_origins}"
    );
    assert_eq!(
        dump(
            &tree(&with_origins).root,
            &first.sources,
            DumpOptions::default()
        ),
        out,
        "origin comments do not change the tree"
    );
}

#[test]
fn byte_order_mark_and_crlf_are_accepted() {
    let l = tree("\u{feff}a = 1\r\nb = ( x\r\n y )\r\n");
    assert_eq!(list_items(&l.root, "b"), ["x", "y"]);
}
