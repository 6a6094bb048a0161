//! The command line: `smtp-auth-proxy [-c FILE] [-f] [--check-config | --dump-config] [--strict]`,
//! and the queue's: `smtp-auth-proxy queue [-c FILE] list | show ID | retry [ID...] | delete ID...
//! | bounce ID...`.
//!
//! Exit codes: 0 success; 1 the configuration is invalid (for `queue`: an id not found or
//! busy); 2 the command line is wrong; 3 (`queue`) no daemon answers.

use crate::config::dump::{self, DumpOptions};
use crate::config::{self, LoadOptions, MissingIncludes};
use crate::model;
use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;

pub const DEFAULT_CONFIG: &str = "/etc/smtp-auth-proxy/ecelerity.conf";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Run,
    CheckConfig,
    DumpConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub config: PathBuf,
    pub foreground: bool,
    pub mode: Mode,
    pub strict: bool,
    /// With --check-config: connect to each datasource and prepare the query there.
    pub check_datasources: bool,
    /// Where the daemon (not in the foreground) writes its process id.
    pub pid_file: PathBuf,
    /// The daemon's syslog identity and facility (number).
    pub syslog_ident: String,
    pub syslog_facility: u8,
}

pub const DEFAULT_PID_FILE: &str = "/run/smtp-auth-proxy.pid";

pub const USAGE: &str = "\
usage: smtp-auth-proxy [-c FILE] [-f | --pid-file FILE] [--check-config [--check-datasources] | --dump-config] [--strict]

  -c, --config FILE   configuration file (default /etc/smtp-auth-proxy/ecelerity.conf)
  -f, --foreground    stay in the foreground, log to stderr (otherwise: daemon, logs to syslog)
      --pid-file FILE the daemon's process id file (default /run/smtp-auth-proxy.pid)
      --syslog-ident NAME, --syslog-facility NAME
                      the daemon's syslog identity (smtp-auth-proxy) and facility (mail)
  -t, --check-config  validate the configuration and exit: 0 valid, 1 invalid
      --check-datasources
                      with --check-config: connect to each datasource smtp_auth_proxy uses
                      and have the database prepare its query
      --dump-config   print the merged configuration (includes expanded) and exit
      --strict        options smtp-auth-proxy does not implement are errors, as in Momentum
  -h, --help          this help
  -V, --version       print the version

usage: smtp-auth-proxy queue [-c FILE] list | show ID | retry [ID...] | delete ID... | bounce ID...

  list                the queue, as mailq shows it (Momentum: showqueue); read from the spool
                      when the daemon is not running
  show ID             one message: its envelope and header
  retry [ID...]       try these messages now, or all (postqueue -f; Momentum: retry)
  delete ID...        remove without telling the sender (postsuper -d)
  bounce ID...        fail the pending recipients and bounce to the sender (Momentum: fail)
";

pub enum Parsed {
    Args(Args),
    Help,
    Version,
}

/// Parses the arguments after the program name.
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, String> {
    let mut out = Args {
        config: PathBuf::from(DEFAULT_CONFIG),
        foreground: false,
        mode: Mode::Run,
        strict: false,
        check_datasources: false,
        pid_file: PathBuf::from(DEFAULT_PID_FILE),
        syslog_ident: "smtp-auth-proxy".to_owned(),
        syslog_facility: crate::syslog::FACILITY_MAIL,
    };
    let mut args = args.into_iter();
    let set_mode = |out: &mut Args, m: Mode| {
        if out.mode != Mode::Run && out.mode != m {
            return Err("--check-config and --dump-config cannot be combined".to_owned());
        }
        out.mode = m;
        Ok(())
    };
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        match text.as_ref() {
            "-c" | "--config" => {
                out.config = args
                    .next()
                    .map(PathBuf::from)
                    .ok_or_else(|| format!("{text} needs a file name"))?;
            }
            s if s.starts_with("--config=") => out.config = PathBuf::from(&s["--config=".len()..]),
            "-f" | "--foreground" => out.foreground = true,
            "--syslog-ident" => {
                out.syslog_ident = args
                    .next()
                    .map(|s| s.to_string_lossy().into_owned())
                    .ok_or_else(|| format!("{text} needs a name"))?;
            }
            "--syslog-facility" => {
                let name = args
                    .next()
                    .map(|s| s.to_string_lossy().into_owned())
                    .ok_or_else(|| format!("{text} needs a facility name"))?;
                out.syslog_facility = crate::syslog::facility(&name).ok_or_else(|| {
                    format!(
                        "`{name}` is not a syslog facility (mail, daemon, local0 ... local7, ...)"
                    )
                })?;
            }
            "--pid-file" => {
                out.pid_file = args
                    .next()
                    .map(PathBuf::from)
                    .ok_or_else(|| format!("{text} needs a file name"))?;
            }
            "-t" | "--check-config" => set_mode(&mut out, Mode::CheckConfig)?,
            "--dump-config" => set_mode(&mut out, Mode::DumpConfig)?,
            "--strict" => out.strict = true,
            "--check-datasources" => {
                out.check_datasources = true;
                set_mode(&mut out, Mode::CheckConfig)?;
            }
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Parsed::Args(out))
}

/// Runs the command; returns the process exit code.
pub fn main(argv: impl IntoIterator<Item = OsString>) -> i32 {
    let mut argv = argv.into_iter().peekable();
    if argv.peek().is_some_and(|a| a == "queue") {
        argv.next();
        return queue(argv.collect());
    }
    let args = match parse_args(argv) {
        Ok(Parsed::Args(a)) => a,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return 0;
        }
        Ok(Parsed::Version) => {
            println!("smtp-auth-proxy {}", env!("CARGO_PKG_VERSION"));
            return 0;
        }
        Err(e) => {
            eprintln!("smtp-auth-proxy: {e}\n\n{USAGE}");
            return 2;
        }
    };
    match args.mode {
        Mode::DumpConfig => dump_config(&args),
        Mode::CheckConfig => check_config(&args),
        Mode::Run => run(&args),
    }
}

/// `queue ...`: one command to the running daemon's queue, through the control socket in the
/// Spoolbase the configuration names.
fn queue(args: Vec<OsString>) -> i32 {
    let mut config = PathBuf::from(DEFAULT_CONFIG);
    let mut words = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.to_string_lossy().as_ref() {
            "-c" | "--config" => match it.next() {
                Some(p) => config = PathBuf::from(p),
                None => {
                    eprintln!("smtp-auth-proxy: -c needs a file name\n\n{USAGE}");
                    return 2;
                }
            },
            // Momentum's console words for the same commands.
            "showqueue" => words.push("list".to_owned()),
            "fail" => words.push("bounce".to_owned()),
            w => words.push(w.to_owned()),
        }
    }
    if words.is_empty() {
        eprintln!("smtp-auth-proxy: queue needs a command\n\n{USAGE}");
        return 2;
    }
    let checked = load_and_check(&config, false);
    let Some(model) = checked.config.filter(|_| !checked.diagnostics.has_errors()) else {
        for d in &checked.diagnostics.0 {
            eprintln!("{}", d.render(&checked.loaded.sources, true));
        }
        return 1;
    };
    let spoolbase = model.spoolbase();
    match crate::queue::control::request(&spoolbase, &words.join(" ")) {
        Ok((text, status)) => {
            print!("{text}");
            i32::from(status)
        }
        // Without a daemon, the listing comes from the spool's files themselves.
        Err(e) if words[0] == "list" => match crate::spool::list(&spoolbase) {
            Ok(entries) => {
                eprintln!("smtp-auth-proxy: the daemon does not answer ({e}); the spool holds:");
                print!("{}", crate::queue::control::listing_from_spool(&entries));
                0
            }
            Err(e) => {
                eprintln!("smtp-auth-proxy: {e}");
                3
            }
        },
        Err(e) => {
            eprintln!("smtp-auth-proxy: the daemon does not answer: {e}");
            3
        }
    }
}

/// Parses, expands includes and merges; prints the tree. Missing include files are warnings
/// here (the include is kept in the output), so a configuration from another machine can be
/// inspected. The typed model is not built: use `--check-config` for that.
fn dump_config(args: &Args) -> i32 {
    let opts = LoadOptions {
        missing_includes: MissingIncludes::Keep,
        ..LoadOptions::default()
    };
    let loaded = config::load(&args.config, &opts);
    let mut stderr = std::io::stderr().lock();
    for d in &loaded.diagnostics.0 {
        let _ = writeln!(stderr, "{}", d.render(&loaded.sources, true));
    }
    if loaded.diagnostics.has_errors() {
        return 1;
    }
    print!(
        "{}",
        dump::dump(&loaded.root, &loaded.sources, DumpOptions { origins: true })
    );
    0
}

/// The configuration and everything said about it, as the daemon would load it.
pub struct Checked {
    pub loaded: config::Loaded,
    pub config: Option<model::Config>,
    pub diagnostics: config::Diagnostics,
}

/// Loads and validates `path` as the daemon would (missing includes are errors).
pub fn load_and_check(path: &std::path::Path, strict: bool) -> Checked {
    let mut loaded = config::load(path, &LoadOptions::default());
    let mut diagnostics = std::mem::take(&mut loaded.diagnostics);
    let config = if diagnostics.has_errors() {
        None
    } else {
        let (config, model_diags) = model::build(&loaded.root, &loaded.sources);
        diagnostics.extend(model_diags);
        Some(config)
    };
    if strict {
        diagnostics.escalate_unimplemented();
    }
    Checked {
        loaded,
        config,
        diagnostics,
    }
}

fn report(checked: &Checked) {
    let mut stderr = std::io::stderr().lock();
    for d in &checked.diagnostics.0 {
        let _ = writeln!(stderr, "{}", d.render(&checked.loaded.sources, true));
    }
}

fn check_config(args: &Args) -> i32 {
    let checked = load_and_check(&args.config, args.strict);
    report(&checked);
    let errors = checked.diagnostics.errors().count();
    let warnings = checked.diagnostics.warnings().count();
    if errors > 0 {
        eprintln!(
            "{}: configuration invalid: {errors} error(s), {warnings} warning(s)",
            args.config.display()
        );
        return 1;
    }
    if args.check_datasources
        && let Some(config) = &checked.config
    {
        let problems = check_datasources(config, &checked.loaded.sources);
        if !problems.is_empty() {
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!(
                "{}: {} datasource problem(s)",
                args.config.display(),
                problems.len()
            );
            return 1;
        }
    }
    if warnings > 0 {
        eprintln!("{}: {warnings} warning(s)", args.config.display());
    }
    println!("Configuration valid");
    0
}

/// Connects to every URI of the datasource smtp_auth_proxy looks users up in, and has the
/// database prepare the query: the vendor's example SQL, for one, fails here.
fn check_datasources(config: &model::Config, sources: &config::SourceMap) -> Vec<String> {
    let Some(p) = &config.auth_proxy else {
        return Vec::new();
    };
    let (Some(name), Some(query)) = (&p.ds_cache, &p.query) else {
        return Vec::new();
    };
    let Some(ds) = config.datasource(&name.value) else {
        return Vec::new();
    };
    let at = sources.locate(query.origin);
    crate::datasource::check(ds, &query.value)
        .into_iter()
        .map(|e| format!("{at}: error: query: {e}"))
        .collect()
}

fn run(args: &Args) -> i32 {
    let mut checked = load_and_check(&args.config, args.strict);
    report(&checked);
    if checked.diagnostics.has_errors() {
        eprintln!(
            "{}: configuration invalid; not starting",
            args.config.display()
        );
        return 1;
    }
    let config = checked
        .config
        .take()
        .expect("no errors, so a model was built");
    // Absolute, since the daemon works from `/`.
    let path = std::fs::canonicalize(&args.config).unwrap_or_else(|_| args.config.clone());
    let strict = args.strict;
    let reload = move || {
        let checked = load_and_check(&path, strict);
        if checked.diagnostics.has_errors() {
            return Err(checked
                .diagnostics
                .errors()
                .map(|d| d.render(&checked.loaded.sources, false))
                .collect());
        }
        Ok(checked.config.expect("no errors, so a model was built"))
    };
    let ready = if args.foreground {
        None
    } else {
        match daemonize(args) {
            Ok(Some(ready)) => Some(ready),
            Ok(None) => return 0,
            Err(code) => return code,
        }
    };
    crate::daemon::run(config, &reload, ready)
}

/// Forks into the background (before any runtime or thread exists). The parent waits until
/// the daemon says it is serving, or why it is not, and exits 0 or 1 accordingly, so that a
/// start script sees bind errors. Returns the daemon's end of that report in the daemon,
/// `None` in the parent once the daemon is ready.
fn daemonize(args: &Args) -> Result<Option<std::os::unix::net::UnixStream>, i32> {
    use std::io::Read as _;
    let (mut parent_end, mut child_end) = match std::os::unix::net::UnixStream::pair() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("smtp-auth-proxy: {e}");
            return Err(1);
        }
    };
    let outcome = daemonix::Daemonize::new()
        .pid_file(&args.pid_file)
        .working_directory("/")
        .execute();
    match outcome {
        daemonix::Outcome::Parent(Ok(_)) => {
            drop(child_end);
            let mut report = String::new();
            let _ = parent_end.read_to_string(&mut report);
            if report.starts_with("ready") {
                Ok(None)
            } else {
                eprint!("{report}");
                if report.is_empty() {
                    eprintln!("smtp-auth-proxy: the daemon ended before it was ready");
                }
                Err(1)
            }
        }
        daemonix::Outcome::Parent(Err(e)) => {
            eprintln!("smtp-auth-proxy: cannot daemonize: {e}");
            Err(1)
        }
        daemonix::Outcome::Child(Err(e)) => {
            let _ = std::io::Write::write_all(
                &mut child_end,
                format!("smtp-auth-proxy: cannot daemonize: {e}\n").as_bytes(),
            );
            std::process::exit(1);
        }
        daemonix::Outcome::Child(Ok(_)) => {
            drop(parent_end);
            crate::log::to_syslog(&args.syslog_ident, args.syslog_facility);
            Ok(Some(child_end))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        match parse_args(args.iter().map(OsString::from))? {
            Parsed::Args(a) => Ok(a),
            _ => Err("not args".into()),
        }
    }

    #[test]
    fn argument_forms() {
        let a = parse(&["-c", "x.conf", "-t", "--strict"]).unwrap();
        assert_eq!(
            (a.config, a.mode, a.strict, a.foreground),
            (PathBuf::from("x.conf"), Mode::CheckConfig, true, false)
        );
        let b = parse(&["--config=y.conf", "--foreground"]).unwrap();
        assert_eq!(
            (b.config, b.mode, b.foreground),
            (PathBuf::from("y.conf"), Mode::Run, true)
        );
        assert_eq!(parse(&[]).unwrap().config, PathBuf::from(DEFAULT_CONFIG));
        assert!(parse(&["-t", "--dump-config"]).is_err());
        assert!(parse(&["-c"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }
}
