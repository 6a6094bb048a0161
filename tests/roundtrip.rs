//! Property: `--dump-config` output parses again to the same tree.
//!
//! Trees are generated with every value form (quoted strings with any characters, barewords,
//! nested lists and dictionaries) and named and anonymous scopes; building them through the
//! same merge the loader uses makes them normalised. The dump of the re-parsed tree must equal
//! the first dump, and since the dump writes every node, equal dumps mean equal trees.

mod common;

use proptest::prelude::*;
use smtp_auth_proxy::config::ast::{Entry, Instance, Setting, Value, ValueKind};
use smtp_auth_proxy::config::dump::{DumpOptions, dump};
use smtp_auth_proxy::config::parse::is_bareword;
use smtp_auth_proxy::config::{FileId, Origin, Scope, SourceMap, load_str};

const O: Origin = Origin {
    file: FileId(0),
    offset: 0,
};

#[derive(Debug, Clone)]
enum Node {
    Setting(String, Value),
    Scope(String, Option<Instance>, Vec<Node>),
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9_-]{0,10}".prop_filter("include is a keyword", |n| {
        !n.eq_ignore_ascii_case("include") && !n.eq_ignore_ascii_case("readonly_include")
    })
}

fn bare() -> impl Strategy<Value = String> {
    "[A-Za-z0-9.:/*@_<>!$%&+;?^|~'-]{1,16}"
        .prop_filter("must read back as one bareword", |s| is_bareword(s))
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<String>().prop_map(|s| Value {
            kind: ValueKind::Quoted(s),
            origin: O
        }),
        "[ -~\n\t\\\\\"]{0,20}".prop_map(|s| Value {
            kind: ValueKind::Quoted(s),
            origin: O
        }),
        bare().prop_map(|s| Value {
            kind: ValueKind::Bare(s),
            origin: O
        }),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(|items| Value {
                kind: ValueKind::List(items),
                origin: O
            }),
            prop::collection::vec((name(), any::<bool>(), inner), 0..4).prop_map(|entries| Value {
                kind: ValueKind::Dict(
                    entries
                        .into_iter()
                        .map(|(key, key_quoted, value)| Entry {
                            key,
                            key_quoted,
                            value,
                            origin: O
                        })
                        .collect()
                ),
                origin: O,
            }),
        ]
    })
}

fn instance() -> impl Strategy<Value = Option<Instance>> {
    prop_oneof![
        Just(None),
        any::<String>().prop_map(|name| Some(Instance { name, quoted: true })),
        bare().prop_map(|name| Some(Instance {
            name,
            quoted: false
        })),
    ]
}

fn nodes() -> impl Strategy<Value = Vec<Node>> {
    let setting = (name(), value()).prop_map(|(n, v)| Node::Setting(n, v));
    let node = setting.prop_recursive(3, 40, 6, move |inner| {
        prop_oneof![
            3 => (name(), value()).prop_map(|(n, v)| Node::Setting(n, v)),
            1 => (name(), instance(), prop::collection::vec(inner, 0..6)).prop_map(|(n, i, body)| Node::Scope(n, i, body)),
        ]
    });
    prop::collection::vec(node, 0..10)
}

fn build(nodes: Vec<Node>, scope: &mut Scope) {
    for n in nodes {
        match n {
            Node::Setting(name, value) => scope.set(Setting {
                name,
                value,
                origin: O,
            }),
            Node::Scope(name, inst, body) => build(body, scope.child_mut(&name, inst, O)),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn dump_parses_back_to_the_same_tree(generated in nodes()) {
        let mut root = Scope::root();
        build(generated, &mut root);
        let sources = SourceMap::new();
        let first = dump(&root, &sources, DumpOptions::default());
        let loaded = load_str("dumped.conf", &first, &common::opts());
        let errs: Vec<String> = loaded.diagnostics.0.iter().map(|d| d.render(&loaded.sources, true)).collect();
        prop_assert!(errs.is_empty(), "dump did not parse: {:?}\n{}", errs, first);
        let second = dump(&loaded.root, &loaded.sources, DumpOptions::default());
        prop_assert_eq!(&second, &first);
        // With origin comments the text must still parse to the same tree.
        let commented = dump(&loaded.root, &loaded.sources, DumpOptions { origins: true });
        let again = load_str("commented.conf", &commented, &common::opts());
        prop_assert_eq!(dump(&again.root, &again.sources, DumpOptions::default()), first);
    }
}

/// Text made of the language's own tokens, so generated inputs reach deep into the parser.
fn config_like() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("=".to_owned()),
        Just(",".to_owned()),
        Just("\"".to_owned()),
        Just("\\".to_owned()),
        Just("#".to_owned()),
        Just("/*".to_owned()),
        Just("*/".to_owned()),
        Just("\n".to_owned()),
        Just(" ".to_owned()),
        Just("<".to_owned()),
        Just("include".to_owned()),
        Just("ESMTP_Listener".to_owned()),
        Just("Listen".to_owned()),
        Just("Peer".to_owned()),
        Just("\":25\"".to_owned()),
        Just("SMTP_Extensions".to_owned()),
        Just("\"AUTH LOGIN\"".to_owned()),
        Just("relay_hosts".to_owned()),
        Just("10.0.0.0/8".to_owned()),
        Just("smtp_auth_proxy".to_owned()),
        Just("host".to_owned()),
        Just("TLS_Protocols".to_owned()),
        Just("\"-ALL:+TLSv1.3\"".to_owned()),
        Just("Datasource".to_owned()),
        Just("uri".to_owned()),
        Just("AuthLoginParameters".to_owned()),
        Just("Module generic/x".to_owned()),
        "[a-z0-9:./_-]{1,6}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(token, 0..60).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Whatever the bytes, loading answers with a tree or with positioned errors, and building
    /// the model from any tree that loads answers with diagnostics: never a panic.
    #[test]
    fn arbitrary_input_never_panics(text in prop_oneof![config_like(), any::<String>()]) {
        let loaded = load_str("fuzz.conf", &text, &common::opts());
        for d in &loaded.diagnostics.0 {
            prop_assert!(d.origin.is_some());
            let _ = d.render(&loaded.sources, true);
        }
        if !loaded.diagnostics.has_errors() {
            let (_, diags) = smtp_auth_proxy::model::build(&loaded.root, &loaded.sources);
            for d in &diags.0 {
                let _ = d.render(&loaded.sources, true);
            }
        }
    }
}
