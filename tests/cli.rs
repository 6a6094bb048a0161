//! The command line, run as an operator would run it.

mod common;

use common::TempDir;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_smtp-auth-proxy"));
    // Tests must not pick up includes from the machine's Momentum search path.
    c.env("EC_CONF_SEARCH_PATH", "");
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/ecelerity.conf")
}

/// The sample's text with its snakeoil certificate and key replaced by PEM stand-ins in `dir`.
fn sample_with_stand_in_tls(dir: &TempDir) -> String {
    let cert = dir.write(
        "c.pem",
        "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
    );
    let key = dir.write(
        "k.pem",
        "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n",
    );
    std::fs::read_to_string(sample())
        .unwrap()
        .replace(
            "/etc/ssl/certs/ssl-cert-snakeoil.pem",
            cert.to_str().unwrap(),
        )
        .replace(
            "/etc/ssl/private/ssl-cert-snakeoil.key",
            key.to_str().unwrap(),
        )
}

#[test]
fn the_sample_configuration_is_valid() {
    let snakeoil = Path::new("/etc/ssl/private/ssl-cert-snakeoil.key");
    // Holds the stand-in files, when used, until the test ends.
    let mut stand_in = None;
    let path = if std::fs::read(snakeoil).is_ok() {
        sample()
    } else {
        // No Debian ssl-cert here: check the same file with stand-in PEM files.
        eprintln!(
            "ssl-cert's snakeoil pair is not readable here; checking the sample with stand-ins"
        );
        let dir = TempDir::new("sample");
        let p = dir.write("ecelerity.conf", &sample_with_stand_in_tls(&dir));
        stand_in = Some(dir);
        p
    };
    let o = run(&["--check-config", "-c", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "Configuration valid\n");
    assert_eq!(stderr(&o), "", "the sample draws no warning");
    let strict = run(&["-t", "--strict", "-c", path.to_str().unwrap()]);
    assert!(strict.status.success(), "{}", stderr(&strict));
    drop(stand_in);
}

#[test]
fn an_invalid_file_exits_1_with_file_line_column_and_caret() {
    let dir = TempDir::new("cli-bad");
    let p = dir.write(
        "bad.conf",
        "ESMTP_Listener {\n  Listen \":25\" {\n    Open_Relay = perhaps\n  }\n}\n",
    );
    let o = run(&["-t", "-c", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    let want = format!(
        "{}:3:18: error: `Open_Relay` takes a boolean (true/false, yes/no, on/off, enabled/disabled, 1/0), found `perhaps`\n   |\n 3 |     Open_Relay = perhaps\n   |                  ^\n",
        p.display()
    );
    assert!(err.starts_with(&want), "{err}");
    assert!(err.contains("configuration invalid: 1 error(s)"), "{err}");
    assert!(o.stdout.is_empty());
}

#[test]
fn strict_turns_unimplemented_options_into_errors() {
    let dir = TempDir::new("cli-strict");
    let text = sample_with_stand_in_tls(&dir)
        + "
Keep_Message_Dicts_In_Memory = true
";
    let line = text.lines().count();
    let p = dir.write("e.conf", &text);
    let lenient = run(&["-t", "-c", p.to_str().unwrap()]);
    assert!(lenient.status.success(), "{}", stderr(&lenient));
    assert!(
        stderr(&lenient).contains(&format!(
            ":{line}:1: warning: option `Keep_Message_Dicts_In_Memory` is not implemented"
        )),
        "{}",
        stderr(&lenient)
    );
    let strict = run(&["-t", "--strict", "-c", p.to_str().unwrap()]);
    assert_eq!(strict.status.code(), Some(1));
    assert!(stderr(&strict).contains(&format!(
        ":{line}:1: error: option `Keep_Message_Dicts_In_Memory` is not implemented"
    )));
}

#[test]
fn dump_config_prints_the_merged_tree_which_parses_again() {
    let dir = TempDir::new("cli-dump");
    dir.write(
        "conf.d/a.conf",
        "ESMTP_Listener { Listen \":25\" { Idle_Time = 5 } }\n",
    );
    let main = dir.write(
        "main.conf",
        "include \"conf.d\"\nesmtp_listener { listen \":25\" { idle_time = 9 } }\n",
    );
    let o = run(&["--dump-config", "-c", main.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.starts_with("ESMTP_Listener {  # "), "{out}");
    assert!(
        out.contains("    Idle_Time = 9  # "),
        "later value, first spelling: {out}"
    );
    let again = dir.write("again.conf", &out);
    let o2 = run(&["--dump-config", "-c", again.to_str().unwrap()]);
    let strip = |s: &str| {
        s.lines()
            .map(|l| l.split("  #").next().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&String::from_utf8(o2.stdout).unwrap()), strip(&out));
}

#[test]
fn legacy_syntax_and_usage_errors() {
    let dir = TempDir::new("cli-legacy");
    let p = dir.write("old.conf", "ESMTP_Listener = (\n  *:25\n)\n");
    let o = run(&["--dump-config", "-c", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("old.conf:1:1: error: this is Momentum 2.x configuration syntax"));
    assert!(stderr(&o).contains("ec_migrate_conf"));
    assert_eq!(run(&["--frobnicate"]).status.code(), Some(2));
    assert_eq!(run(&["-t", "--dump-config"]).status.code(), Some(2));
    let missing = run(&["-t", "-c", "/nonexistent/ecelerity.conf"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("cannot read /nonexistent/ecelerity.conf"));
    assert!(String::from_utf8_lossy(&run(&["--help"]).stdout).contains("--check-config"));
}

/// The shared corpus of real and vendor files, when it is beside the repository.
#[test]
fn shared_corpus_when_present() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/ecelerity");
    let Ok(dir) = std::fs::read_dir(&corpus) else {
        eprintln!("no ../shared corpus here; skipped");
        return;
    };
    let mut files: Vec<PathBuf> = dir
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    files.sort();
    assert!(files.len() >= 15, "corpus has {} files", files.len());
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy();
        let o = run(&["--dump-config", "-c", f.to_str().unwrap()]);
        if name.contains("cluster.config.overview") {
            assert_eq!(o.status.code(), Some(1), "{name}");
            let err = stderr(&o);
            assert_eq!(
                err.matches("error:").count(),
                1,
                "one message, no cascade: {err}"
            );
            assert!(err.contains("Momentum 2.x configuration syntax"), "{err}");
            continue;
        }
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        // Every unimplemented option or scope is named with file:line.
        let check = run(&["--check-config", "-c", f.to_str().unwrap()]);
        for line in stderr(&check)
            .lines()
            .filter(|l| l.contains("not implemented by smtp-auth-proxy"))
        {
            assert!(line.starts_with(&format!("{}:", f.display())), "{line}");
        }
    }
    let example =
        corpus.join("SparkPost__support-docs__content_momentum_4_modules_smtp-auth-proxy.md.conf");
    let o = run(&["--check-config", "-c", example.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.matches(": error: ").count(), 1, "{err}");
    assert!(
        err.contains(":9:14: error: ds_cache `smtp_auth_proxy` names no Datasource"),
        "{err}"
    );
}
