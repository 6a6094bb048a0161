//! `ESMTP_Listener`, `Listen` and `Peer`: the inbound side of the configuration.
//!
//! One [`ListenerSettings`] type holds the options of all three scopes (and the two listener
//! options Momentum also reads globally); each field is `None` where the scope does not set it.
//! [`Effective`] resolves an option for one client by walking the fallback chain:
//!
//! Listen-level Peer (most specific CIDR first) > Listen > listener-level Peer (most specific
//! first) > ESMTP_Listener > global > default.
//!
//! Momentum documents that the most specific Peer wins and that "fallback works here too", but
//! not the order between the levels; this order is the one its module API uses for nested
//! scopes (`Listen:Peer > Listen > Peer > Listener > Global`). A less specific Peer is consulted
//! for options the more specific one does not set, as the manual's 10.0.0.0/16 + 10.0.0.1
//! example describes.

use super::Cx;
use super::addr::{Cidr, CidrError, ListenAddr};
use super::limits::{self, LimitSettings, Measure, Rate, Subject};
use super::names::ScopeKind;
use super::value::{self, Read, Spanned};
use crate::config::ast::{Setting, Value};
use crate::config::{Diagnostic, Origin, Scope};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Options of the listener family, each `None` where not set in this scope.
#[derive(Clone, Debug, Default)]
pub struct ListenerSettings {
    pub enable: Option<Spanned<bool>>,
    pub smtp_extensions: Option<Spanned<Extensions>>,
    pub auth_login: Option<Spanned<AuthParameters>>,
    pub auth_plain: Option<Spanned<AuthParameters>>,
    pub auth_cram_md5: Option<Spanned<AuthParameters>>,
    pub auth_oauthbearer: Option<Spanned<AuthParameters>>,
    pub auth_xoauth2: Option<Spanned<AuthParameters>>,
    pub relay_hosts: Option<Spanned<Vec<Cidr>>>,
    pub open_relay: Option<Spanned<bool>>,
    pub require_ehlo: Option<Spanned<bool>>,
    pub idle_time: Option<Spanned<Duration>>,
    /// `Listener_Sessions`: in ESMTP_Listener or Listen, a cap on the Listen's concurrent
    /// sessions; in a Peer, a separate cap on the sessions of the clients that Peer matches.
    pub listener_sessions: Option<Spanned<u32>>,
    /// `Auth_Failure_Limit` (ours; ESMTP_Listener only): failed AUTH attempts per client
    /// address, and per user name, within ten minutes before further attempts are refused.
    pub auth_failure_limit: Option<Spanned<u32>>,
    pub max_message_size: Option<Spanned<u64>>,
    pub banner_hostname: Option<Spanned<String>>,
    pub reconfig_message: Option<Spanned<String>>,
    pub proxy_protocol: Option<Spanned<bool>>,
    /// `Proxy_Protocol_Timeout`: how long the PROXY header may take to arrive; zero is no limit.
    pub proxy_protocol_timeout: Option<Spanned<Duration>>,
    pub use_ssl: Option<Spanned<bool>>,
    pub tls_certificate: Option<Spanned<PathBuf>>,
    pub tls_key: Option<Spanned<PathBuf>>,
    pub tls_ciphers: Option<Spanned<TlsCiphers>>,
    pub tls_protocols: Option<Spanned<TlsVersions>>,
    pub starttls_injection_policy: Option<Spanned<InjectionPolicy>>,
    /// The sending limits (ours; `model::limits`).
    pub limits: LimitSettings,
}

/// What `SMTP_Extensions` asks to advertise. Several `"AUTH X"` tokens merge into one list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    pub auth: Vec<Mechanism>,
    pub starttls: bool,
    pub enhanced_status_codes: bool,
    /// `SIZE`: advertised with `Max_Message_Size` (Momentum itself needs policy for this).
    pub size: bool,
    pub xclient: bool,
    pub xremoteip: bool,
    pub xdumpcontext: bool,
    pub xsetcontext: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mechanism {
    Login,
    Plain,
    CramMd5,
    /// RFC 7628: an OAuth 2.0 bearer token behind a GS2 header naming the user.
    OAuthBearer,
    /// Google's and Microsoft's forerunner of OAUTHBEARER: `user=…^Aauth=Bearer …^A^A`.
    XOAuth2,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Login => "LOGIN",
            Mechanism::Plain => "PLAIN",
            Mechanism::CramMd5 => "CRAM-MD5",
            Mechanism::OAuthBearer => "OAUTHBEARER",
            Mechanism::XOAuth2 => "XOAUTH2",
        }
    }

    /// The option that configures this mechanism's back end.
    pub fn parameters_option(self) -> &'static str {
        match self {
            Mechanism::Login => "AuthLoginParameters",
            Mechanism::Plain => "AuthPlainParameters",
            Mechanism::CramMd5 => "AuthCramMD5Parameters",
            // Momentum's pattern (`AuthLoginParameters`): the SASL name as one capitalised word.
            Mechanism::OAuthBearer => "AuthOauthbearerParameters",
            Mechanism::XOAuth2 => "AuthXoauth2Parameters",
        }
    }

    /// Whether the credential crosses the wire recoverably without TLS: a password (LOGIN,
    /// PLAIN), or a bearer token, which anyone who reads it can replay until it expires.
    pub fn sends_cleartext(self) -> bool {
        !matches!(self, Mechanism::CramMd5)
    }

    /// Whether the credential is a bearer token only its issuer's server can check.
    pub fn takes_token(self) -> bool {
        matches!(self, Mechanism::OAuthBearer | Mechanism::XOAuth2)
    }
}

/// `Auth<Mech>Parameters = [ uri = "…" log_authentication = "true" ]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthParameters {
    pub backend: Spanned<AuthBackend>,
    pub log_authentication: bool,
}

/// The authentication back end a mechanism's `uri` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthBackend {
    /// `smtp_auth_proxy://`: the upstream SMTP server decides.
    SmtpAuthProxy,
    /// `file:///path`: a file of `user:password` lines (`#` comments).
    File(PathBuf),
    /// A Momentum back end not implemented here (`radius://`, an auth_ds scheme); already
    /// reported as an error, kept so the mechanism does not also look unconfigured.
    Unsupported(String),
}

/// TLS versions `TLS_Protocols` leaves enabled, of those rustls implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsVersions {
    pub tls12: bool,
    pub tls13: bool,
}

impl Default for TlsVersions {
    fn default() -> Self {
        Self {
            tls12: true,
            tls13: true,
        }
    }
}

/// `TLS_Ciphers`, as far as rustls can follow it: `None` keeps rustls' own list (for keywords
/// such as `DEFAULT` or `HIGH`); otherwise the IANA names of the suites the list names.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TlsCiphers {
    pub suites: Option<Vec<&'static str>>,
}

/// The suites rustls implements: (IANA name, OpenSSL name).
pub const RUSTLS_SUITES: [(&str, &str); 9] = [
    ("TLS13_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384"),
    ("TLS13_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256"),
    (
        "TLS13_CHACHA20_POLY1305_SHA256",
        "TLS_CHACHA20_POLY1305_SHA256",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ),
];

/// `Starttls_Injection_Policy`: what to do with commands pipelined behind `STARTTLS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InjectionPolicy {
    Allow,
    Ignore,
    #[default]
    Reject,
}

/// A `Peer "CIDR" { }` scope.
#[derive(Clone, Debug)]
pub struct Peer {
    pub cidr: Spanned<Cidr>,
    pub settings: ListenerSettings,
}

/// A Peer of a Listen (index in its `peers`) or of the listener (index in its `peers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerRef {
    Listen(usize),
    Listener(usize),
}

/// A `Listen "address" { }` scope: one socket.
#[derive(Clone, Debug)]
pub struct Listen {
    pub address: Spanned<ListenAddr>,
    pub settings: ListenerSettings,
    /// Most specific first.
    pub peers: Vec<Peer>,
}

/// The `ESMTP_Listener { }` scope.
#[derive(Clone, Debug, Default)]
pub struct EsmtpListener {
    pub settings: ListenerSettings,
    /// Most specific first.
    pub peers: Vec<Peer>,
    pub listens: Vec<Listen>,
    pub origin: Option<Origin>,
}

/// Defaults where no scope sets an option (Momentum's documented defaults where it has them).
pub const DEFAULT_IDLE_TIME: Duration = Duration::from_secs(300);
pub const DEFAULT_RECONFIG_MESSAGE: &str = "4.3.2 Reconfiguration in progress";
pub const DEFAULT_PROXY_PROTOCOL_TIMEOUT: Duration = Duration::from_secs(60);

/// The settings in force for one client of one Listen: the fallback chain, most specific first.
#[derive(Clone, Debug)]
pub struct Effective<'a> {
    chain: Vec<&'a ListenerSettings>,
}

macro_rules! lookup {
    ($self:ident . $field:ident) => {
        $self.chain.iter().find_map(|s| s.$field.as_ref())
    };
}

impl<'a> Effective<'a> {
    /// The chain for a client at `client` (`None`: matching no Peer, e.g. a Unix socket).
    pub fn new(
        global: &'a ListenerSettings,
        listener: &'a EsmtpListener,
        listen: &'a Listen,
        client: Option<IpAddr>,
    ) -> Self {
        let matching = |peers: &'a [Peer]| {
            peers
                .iter()
                .filter(move |p| client.is_some_and(|ip| p.cidr.contains(ip)))
                .map(|p| &p.settings)
        };
        let chain = matching(&listen.peers)
            .chain(std::iter::once(&listen.settings))
            .chain(matching(&listener.peers))
            .chain([&listener.settings, global])
            .collect();
        Effective { chain }
    }

    pub fn extensions(&self) -> Option<&'a Spanned<Extensions>> {
        lookup!(self.smtp_extensions)
    }

    /// The back end configured for `mech`, if any.
    pub fn auth_parameters(&self, mech: Mechanism) -> Option<&'a Spanned<AuthParameters>> {
        match mech {
            Mechanism::Login => lookup!(self.auth_login),
            Mechanism::Plain => lookup!(self.auth_plain),
            Mechanism::CramMd5 => lookup!(self.auth_cram_md5),
            Mechanism::OAuthBearer => lookup!(self.auth_oauthbearer),
            Mechanism::XOAuth2 => lookup!(self.auth_xoauth2),
        }
    }

    /// The relay_hosts list in force: a listener's list replaces the global one, never adds.
    pub fn relay_hosts(&self) -> Option<&'a Spanned<Vec<Cidr>>> {
        lookup!(self.relay_hosts)
    }

    pub fn open_relay(&self) -> Option<&'a Spanned<bool>> {
        lookup!(self.open_relay)
    }

    pub fn require_ehlo(&self) -> bool {
        lookup!(self.require_ehlo).is_some_and(|b| b.value)
    }

    /// How long a client may keep us waiting; `None` for `Idle_Time = 0`, which in Momentum
    /// means connections are never reaped for inactivity.
    pub fn idle_time(&self) -> Option<Duration> {
        match lookup!(self.idle_time) {
            None => Some(DEFAULT_IDLE_TIME),
            Some(d) if d.value.is_zero() => None,
            Some(d) => Some(d.value),
        }
    }

    pub fn max_message_size(&self) -> Option<u64> {
        lookup!(self.max_message_size)
            .map(|s| s.value)
            .filter(|&n| n > 0)
    }

    pub fn banner_hostname(&self) -> Option<&'a str> {
        lookup!(self.banner_hostname).map(|s| s.value.as_str())
    }

    pub fn use_ssl(&self) -> Option<&'a Spanned<bool>> {
        lookup!(self.use_ssl)
    }

    pub fn tls_certificate(&self) -> Option<&'a Spanned<PathBuf>> {
        lookup!(self.tls_certificate)
    }

    pub fn tls_key(&self) -> Option<&'a Spanned<PathBuf>> {
        lookup!(self.tls_key)
    }

    pub fn tls_ciphers(&self) -> Option<&'a Spanned<TlsCiphers>> {
        lookup!(self.tls_ciphers)
    }

    pub fn tls_protocols(&self) -> TlsVersions {
        lookup!(self.tls_protocols).map_or_else(TlsVersions::default, |t| t.value)
    }

    pub fn starttls_injection_policy(&self) -> InjectionPolicy {
        lookup!(self.starttls_injection_policy).map_or_else(InjectionPolicy::default, |p| p.value)
    }

    /// The rates in force for `subject`'s `measure` (empty: no limit).
    pub fn rates(&self, subject: Subject, measure: Measure) -> &'a [Rate] {
        self.chain
            .iter()
            .find_map(|s| s.limits.rates(subject, measure))
            .map_or(&[], |r| r.value.as_slice())
    }

    /// The concurrent sessions allowed to `subject` (`None`: no limit).
    pub fn sessions(&self, subject: Subject) -> Option<u32> {
        self.chain
            .iter()
            .find_map(|s| s.limits.sessions(subject))
            .map(|n| n.value)
            .filter(|&n| n > 0)
    }
}

impl EsmtpListener {
    /// Whether `listen` serves: its own `Enable`, else the listener's, else on.
    pub fn enabled(&self, listen: &Listen) -> bool {
        listen.settings.enable.as_ref().map_or_else(
            || self.settings.enable.as_ref().is_none_or(|e| e.value),
            |e| e.value,
        )
    }

    /// Whether `listen` reads a PROXY header first: its own `Proxy_Protocol`, else the
    /// listener's.
    pub fn proxy_protocol(&self, listen: &Listen) -> bool {
        listen
            .settings
            .proxy_protocol
            .as_ref()
            .or(self.settings.proxy_protocol.as_ref())
            .is_some_and(|p| p.value)
    }

    /// How long `listen` waits for a whole PROXY header (`None`: as long as it takes).
    pub fn proxy_protocol_timeout(&self, listen: &Listen) -> Option<Duration> {
        listen
            .settings
            .proxy_protocol_timeout
            .as_ref()
            .or(self.settings.proxy_protocol_timeout.as_ref())
            .map_or(Some(DEFAULT_PROXY_PROTOCOL_TIMEOUT), |t| {
                Some(t.value).filter(|d| !d.is_zero())
            })
    }

    /// The Peer whose `Listener_Sessions` a client at `ip` of `listen` counts against: the most
    /// specific matching Peer that sets one, the Listen's own Peers first, as the fallback
    /// order has it. Returned as (index in `listen.peers`, None) or (None, index in `peers`).
    pub fn session_cap_peer(&self, listen: &Listen, ip: IpAddr) -> Option<PeerRef> {
        let capped = |p: &Peer| p.cidr.contains(ip) && p.settings.listener_sessions.is_some();
        listen
            .peers
            .iter()
            .position(capped)
            .map(PeerRef::Listen)
            .or_else(|| self.peers.iter().position(capped).map(PeerRef::Listener))
    }

    /// The Peer `r` refers to, among those of `listen`.
    pub fn peer<'a>(&'a self, listen: &'a Listen, r: PeerRef) -> &'a Peer {
        match r {
            PeerRef::Listen(i) => &listen.peers[i],
            PeerRef::Listener(i) => &self.peers[i],
        }
    }

    pub fn enabled_listens(&self) -> impl Iterator<Item = &Listen> {
        self.listens.iter().filter(|l| self.enabled(l))
    }

    /// Every Peer that can apply to a client of `listen`: its own, then the listener's.
    pub fn peers_for<'a>(&'a self, listen: &'a Listen) -> impl Iterator<Item = &'a Peer> {
        listen.peers.iter().chain(&self.peers)
    }
}

impl ListenerSettings {
    /// The `Auth<Mech>Parameters` this scope sets.
    pub fn auth_parameters(&self) -> impl Iterator<Item = &Spanned<AuthParameters>> {
        [
            &self.auth_login,
            &self.auth_plain,
            &self.auth_cram_md5,
            &self.auth_oauthbearer,
            &self.auth_xoauth2,
        ]
        .into_iter()
        .flatten()
    }
}

// ---------------------------------------------------------------------------------------------
// Building from the tree

/// Scopes in which each listener option is read. Momentum's option summary lists where each is
/// valid; options it allows in more places than implemented here are reported where ignored.
fn valid_in(name: &str, kind: ScopeKind) -> bool {
    use ScopeKind::*;
    match name {
        "relay_hosts" | "require_ehlo" => matches!(kind, Global | EsmtpListener | Listen | Peer),
        n if super::names::LIMIT_OPTIONS.contains(&n) => {
            matches!(kind, Global | EsmtpListener | Listen | Peer)
        }
        "enable" | "reconfig_message" | "proxy_protocol" | "proxy_protocol_timeout" => {
            matches!(kind, EsmtpListener | Listen)
        }
        // Process-wide counters: one limit, set where the listener is.
        "auth_failure_limit" => kind == EsmtpListener,
        _ => matches!(kind, EsmtpListener | Listen | Peer),
    }
}

/// Reads one setting into `out` if it is a listener option valid in `kind`. Returns false when
/// the name is not a listener option at all, so the caller can try its own options.
pub(super) fn read_setting(
    cx: &mut Cx,
    out: &mut ListenerSettings,
    s: &Setting,
    kind: ScopeKind,
) -> bool {
    let name = s.name.to_ascii_lowercase();
    if !super::names::LISTENER_OPTIONS.contains(&name.as_str()) {
        return false;
    }
    if !valid_in(&name, kind) {
        cx.diags.push(
            Diagnostic::warning(
                s.origin,
                format!("`{}` is not read in {}; ignored here", s.name, kind.title()),
            )
            .unimplemented(),
        );
        return true;
    }
    match name.as_str() {
        n if super::names::LIMIT_OPTIONS.contains(&n) => {
            limits::read_setting(cx, &mut out.limits, n, s)
        }
        "enable" => out.enable = cx.read(s, value::boolean),
        "smtp_extensions" => out.smtp_extensions = cx.read_with(s, read_extensions),
        "authloginparameters" => out.auth_login = cx.read_with(s, read_auth_parameters),
        "authplainparameters" => out.auth_plain = cx.read_with(s, read_auth_parameters),
        "authcrammd5parameters" => out.auth_cram_md5 = cx.read_with(s, read_auth_parameters),
        "authoauthbearerparameters" => {
            out.auth_oauthbearer = cx.read_with(s, read_token_auth_parameters)
        }
        "authxoauth2parameters" => out.auth_xoauth2 = cx.read_with(s, read_token_auth_parameters),
        "relay_hosts" => out.relay_hosts = cx.read_with(s, read_relay_hosts),
        "open_relay" => out.open_relay = cx.read(s, value::boolean),
        "require_ehlo" => out.require_ehlo = cx.read(s, value::boolean),
        "idle_time" => {
            out.idle_time = cx.read(s, value::seconds);
            if out.idle_time.as_ref().is_some_and(|d| d.is_zero()) {
                cx.diags.push(Diagnostic::warning(
                    s.value.origin,
                    "`Idle_Time = 0` turns the idle timeout off: idle clients hold sessions forever",
                ));
            }
        }
        "listener_sessions" => {
            out.listener_sessions = cx.read(s, |n, v| {
                value::unsigned(n, v, 1, u32::MAX.into()).map(|n| n as u32)
            })
        }
        "auth_failure_limit" => {
            out.auth_failure_limit = cx.read(s, |n, v| {
                value::unsigned(n, v, 0, 1_000_000).map(|n| n as u32)
            })
        }
        "max_message_size" => {
            out.max_message_size = cx.read(s, |n, v| value::unsigned(n, v, 0, u64::MAX))
        }
        "banner_hostname" => out.banner_hostname = cx.read(s, value::text),
        "reconfig_message" => out.reconfig_message = cx.read(s, value::text),
        "proxy_protocol" => out.proxy_protocol = cx.read(s, value::boolean),
        "proxy_protocol_timeout" => {
            out.proxy_protocol_timeout = cx.read(s, value::seconds);
            if out
                .proxy_protocol_timeout
                .as_ref()
                .is_some_and(|d| d.is_zero())
            {
                cx.diags.push(Diagnostic::warning(
                    s.value.origin,
                    "`Proxy_Protocol_Timeout = 0` turns the timeout off: a client that sends part of a header holds its session forever",
                ));
            }
        }
        "use_ssl" => out.use_ssl = cx.read(s, value::boolean),
        "tls_certificate" => out.tls_certificate = cx.read_path(s),
        "tls_key" => out.tls_key = cx.read_path(s),
        "tls_ciphers" => out.tls_ciphers = cx.read_with(s, read_tls_ciphers),
        "tls_protocols" => out.tls_protocols = cx.read_with(s, read_tls_protocols),
        "starttls_injection_policy" => {
            out.starttls_injection_policy = cx.read(s, |n, v| {
                value::choice(
                    n,
                    v,
                    &[
                        ("allow", InjectionPolicy::Allow),
                        ("ignore", InjectionPolicy::Ignore),
                        ("reject", InjectionPolicy::Reject),
                    ],
                )
            })
        }
        _ => unreachable!("every LISTENER_OPTIONS name is handled"),
    }
    true
}

fn read_extensions(cx: &mut Cx, name: &str, v: &Value) -> Read<Extensions> {
    let mut ext = Extensions::default();
    for (token, origin) in value::scalar_list(name, v)? {
        let mut words = token.split_whitespace();
        let Some(keyword) = words.next() else {
            return Err(Diagnostic::error(origin, "empty SMTP extension name"));
        };
        let keyword = keyword.to_ascii_uppercase();
        let args: Vec<&str> = words.collect();
        if keyword != "AUTH" && !args.is_empty() {
            // Arguments of other extensions are not configurable (SIZE takes Max_Message_Size).
            cx.diags.push(Diagnostic::warning(
                origin,
                format!("arguments of `{keyword}` are ignored"),
            ));
        }
        match keyword.as_str() {
            "AUTH" => {
                if args.is_empty() {
                    return Err(Diagnostic::error(
                        origin,
                        "`AUTH` needs a mechanism: \"AUTH LOGIN\", \"AUTH PLAIN\", \"AUTH CRAM-MD5\", \"AUTH OAUTHBEARER\" or \"AUTH XOAUTH2\"",
                    ));
                }
                for mech in args {
                    let m = match mech.to_ascii_uppercase().as_str() {
                        "LOGIN" => Mechanism::Login,
                        "PLAIN" => Mechanism::Plain,
                        "CRAM-MD5" => Mechanism::CramMd5,
                        "OAUTHBEARER" => Mechanism::OAuthBearer,
                        "XOAUTH2" => Mechanism::XOAuth2,
                        other => {
                            cx.diags.push(
                                Diagnostic::warning(
                                    origin,
                                    format!("AUTH mechanism `{other}` is not implemented; it will not be advertised"),
                                )
                                .unimplemented(),
                            );
                            continue;
                        }
                    };
                    if !ext.auth.contains(&m) {
                        ext.auth.push(m);
                    }
                }
            }
            "STARTTLS" => ext.starttls = true,
            "ENHANCEDSTATUSCODES" => ext.enhanced_status_codes = true,
            // Momentum advertises these whatever the list says; naming them is harmless.
            "PIPELINING" | "8BITMIME" => {}
            "SIZE" => ext.size = true,
            "XCLIENT" => ext.xclient = true,
            "XREMOTEIP" => ext.xremoteip = true,
            "XDUMPCONTEXT" => ext.xdumpcontext = true,
            "XSETCONTEXT" => ext.xsetcontext = true,
            other => cx.diags.push(
                Diagnostic::warning(
                    origin,
                    format!(
                        "SMTP extension `{other}` is not implemented; it will not be advertised"
                    ),
                )
                .unimplemented(),
            ),
        }
    }
    Ok(ext)
}

fn read_auth_parameters(cx: &mut Cx, name: &str, v: &Value) -> Read<AuthParameters> {
    let entries = v.as_dict().ok_or_else(|| {
        Diagnostic::error(
            v.origin,
            format!(
                "`{name}` takes a dictionary `[ uri = \"…\" ]`, found {}",
                v.describe()
            ),
        )
    })?;
    let mut backend = None;
    let mut log_authentication = false;
    for e in entries {
        match e.key.to_ascii_lowercase().as_str() {
            "uri" => {
                let uri = value::scalar("uri", &e.value)?;
                backend = Some(Spanned {
                    value: parse_auth_uri(cx, uri, e.value.origin)?,
                    origin: e.value.origin,
                });
            }
            "log_authentication" => {
                log_authentication = value::boolean("log_authentication", &e.value)?
            }
            _ => cx.diags.push(
                Diagnostic::warning(
                    e.origin,
                    format!("`{}` in `{name}` is not implemented; ignored", e.key),
                )
                .unimplemented(),
            ),
        }
    }
    let backend = backend.ok_or_else(|| {
        Diagnostic::error(
            v.origin,
            format!("`{name}` needs a `uri` naming the back end"),
        )
    })?;
    Ok(AuthParameters {
        backend,
        log_authentication,
    })
}

/// `AuthOauthbearerParameters` and `AuthXoauth2Parameters`: a bearer token means something only
/// to the server of the provider that issued it, so only `smtp_auth_proxy://` can check one.
fn read_token_auth_parameters(cx: &mut Cx, name: &str, v: &Value) -> Read<AuthParameters> {
    let mut params = read_auth_parameters(cx, name, v)?;
    if let AuthBackend::File(_) = params.backend.value {
        cx.diags.push(Diagnostic::error(
            params.backend.origin,
            format!(
                "`{name}`: a password file cannot check an OAuth 2.0 bearer token; only the upstream can (uri = \"smtp_auth_proxy://\")"
            ),
        ));
        // Reported; kept so the mechanism does not also look unconfigured.
        params.backend.value = AuthBackend::Unsupported("file".into());
    }
    Ok(params)
}

fn parse_auth_uri(cx: &mut Cx, uri: &str, origin: Origin) -> Read<AuthBackend> {
    if uri.eq_ignore_ascii_case("smtp_auth_proxy://")
        || uri.eq_ignore_ascii_case("smtp_auth_proxy:")
    {
        return Ok(AuthBackend::SmtpAuthProxy);
    }
    if let Some(path) = uri.strip_prefix("file://") {
        if path.is_empty() {
            return Err(Diagnostic::error(
                origin,
                "`file://` needs a path: `file:///etc/passwords`",
            ));
        }
        return Ok(AuthBackend::File(cx.resolve_path(path, origin)));
    }
    let scheme = uri.split(':').next().unwrap_or(uri);
    cx.diags.push(Diagnostic::error(
        origin,
        format!(
            "authentication back end `{scheme}` is not implemented; smtp-auth-proxy authenticates through `smtp_auth_proxy://` or `file:///path`"
        ),
    ));
    Ok(AuthBackend::Unsupported(scheme.to_owned()))
}

pub(super) fn read_relay_hosts(cx: &mut Cx, name: &str, v: &Value) -> Read<Vec<Cidr>> {
    let mut out = Vec::new();
    for (item, origin) in value::scalar_list(name, v)? {
        match Cidr::parse(item) {
            Ok(c) => out.push(c),
            Err(CidrError::HostName) => {
                return Err(Diagnostic::error(
                    origin,
                    format!(
                        "`{name}` takes IP addresses and CIDR blocks, not host names (`{item}`)"
                    ),
                ));
            }
            Err(CidrError::Invalid) => {
                return Err(Diagnostic::error(
                    origin,
                    format!("`{item}` is not an IP address or CIDR block"),
                ));
            }
            Err(CidrError::HostBits(c)) => {
                cx.diags.push(Diagnostic::warning(
                    origin,
                    format!("`{item}` has host bits set; read as `{c}`"),
                ));
                out.push(c);
            }
        }
    }
    Ok(out)
}

/// Reads an OpenSSL cipher list. Names of suites rustls implements (OpenSSL or IANA spelling)
/// restrict the offer to them; group keywords (`DEFAULT`, `HIGH`, `ALL`) keep rustls' list,
/// which is already what they select today; removals (`!aNULL`, `-MD5`) remove nothing rustls
/// offers. Named suites rustls lacks are reported, since the list cannot be honoured for them.
fn read_tls_ciphers(cx: &mut Cx, name: &str, v: &Value) -> Read<TlsCiphers> {
    let text = value::scalar(name, v)?;
    let mut suites = Vec::new();
    let mut keyword = false;
    let mut missing = Vec::new();
    for token in text.split([':', ',', ' ', '\t']).filter(|t| !t.is_empty()) {
        if token.starts_with(['!', '-']) {
            continue;
        }
        let word = token.trim_start_matches('+');
        if let Some((iana, _)) = RUSTLS_SUITES
            .iter()
            .find(|(i, o)| i.eq_ignore_ascii_case(word) || o.eq_ignore_ascii_case(word))
        {
            if !suites.contains(iana) {
                suites.push(*iana);
            }
        } else if !word.contains(['-', '_']) {
            // A group keyword (DEFAULT, HIGH, aRSA, TLSv1.2, @STRENGTH, …).
            keyword = true;
        } else {
            missing.push(word.to_owned());
        }
    }
    if !missing.is_empty() {
        cx.diags.push(Diagnostic::warning(
            v.origin,
            format!(
                "`{name}`: {} cannot be offered (rustls implements only AEAD suites with forward secrecy)",
                missing.join(", ")
            ),
        ));
    }
    if keyword || suites.is_empty() {
        if suites.is_empty() && !keyword {
            return Err(Diagnostic::error(
                v.origin,
                format!("`{name}` names no cipher suite that rustls implements"),
            ));
        }
        return Ok(TlsCiphers { suites: None });
    }
    Ok(TlsCiphers {
        suites: Some(suites),
    })
}

/// Reads an OpenSSL-style protocol list (`+ALL:-SSLv3:-TLSv1.0:-TLSv1.1`, `TLSv1.2 TLSv1.3`).
/// A list that starts with a removal starts from everything. Versions rustls does not implement
/// (SSLv2/3, TLS 1.0/1.1) are dropped with a warning when the list enables them.
fn read_tls_protocols(cx: &mut Cx, name: &str, v: &Value) -> Read<TlsVersions> {
    let text = value::scalar(name, v)?;
    // Index: 0 SSLv2, 1 SSLv3, 2 TLSv1.0, 3 TLSv1.1, 4 TLSv1.2, 5 TLSv1.3.
    let mut on = [false; 6];
    let tokens: Vec<&str> = text
        .split([':', ',', ' ', '\t'])
        .filter(|t| !t.is_empty())
        .collect();
    if tokens
        .first()
        .is_some_and(|t| t.starts_with('-') || t.starts_with('!'))
    {
        on = [true; 6];
    }
    for token in &tokens {
        let (enable, word) = match token.as_bytes()[0] {
            b'+' => (true, &token[1..]),
            b'-' | b'!' => (false, &token[1..]),
            _ => (true, *token),
        };
        let idx: &[usize] = match word.to_ascii_lowercase().as_str() {
            // As in OpenSSL, ALL has not included SSLv2 for a long time.
            "all" => &[1, 2, 3, 4, 5],
            "sslv2" => &[0],
            "sslv3" => &[1],
            "tlsv1" | "tlsv1.0" => &[2],
            "tlsv1.1" => &[3],
            "tlsv1.2" => &[4],
            "tlsv1.3" => &[5],
            _ => {
                return Err(Diagnostic::error(
                    v.origin,
                    format!(
                        "`{word}` in `{name}` is not a protocol name (SSLv3, TLSv1, TLSv1.1, TLSv1.2, TLSv1.3, ALL)"
                    ),
                ));
            }
        };
        for &i in idx {
            on[i] = enable;
        }
    }
    let legacy: Vec<&str> = ["SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"]
        .iter()
        .zip(on)
        .filter(|&(_, o)| o)
        .map(|(n, _)| *n)
        .collect();
    if !legacy.is_empty() {
        cx.diags.push(Diagnostic::warning(
            v.origin,
            format!(
                "{} cannot be offered: only TLS 1.2 and 1.3 are implemented (rustls)",
                legacy.join(", ")
            ),
        ));
    }
    let versions = TlsVersions {
        tls12: on[4],
        tls13: on[5],
    };
    if !versions.tls12 && !versions.tls13 {
        return Err(Diagnostic::error(
            v.origin,
            format!("`{name}` leaves no TLS version this appliance can offer (TLSv1.2, TLSv1.3)"),
        ));
    }
    Ok(versions)
}

/// Reads the options of a listener-family scope; anything else there is reported as unknown.
fn read_settings(cx: &mut Cx, scope: &Scope, kind: ScopeKind) -> ListenerSettings {
    let mut settings = ListenerSettings::default();
    for s in &scope.settings {
        if !read_setting(cx, &mut settings, s, kind) {
            cx.unknown_option(kind, s);
        }
    }
    settings
}

/// Reads `ESMTP_Listener { … }` with its Listen and Peer scopes.
pub(super) fn read_esmtp_listener(cx: &mut Cx, scope: &Scope) -> EsmtpListener {
    let mut listener = EsmtpListener {
        settings: read_settings(cx, scope, ScopeKind::EsmtpListener),
        origin: scope.origin,
        ..EsmtpListener::default()
    };
    for child in &scope.scopes {
        match child.name.to_ascii_lowercase().as_str() {
            "listen" => {
                if let Some(l) = read_listen(cx, child) {
                    listener.listens.push(l);
                }
            }
            "peer" => listener.peers.extend(read_peer(cx, child)),
            _ => cx.unknown_scope(ScopeKind::EsmtpListener, child),
        }
    }
    sort_peers(&mut listener.peers);
    // Proxy_Protocol_Timeout bounds only the wait for a PROXY header (Momentum: "no effect
    // where Proxy_Protocol is not enabled").
    let unused_timeout = |t: &Spanned<Duration>, where_: &str| {
        Diagnostic::warning(
            t.origin,
            format!(
                "`Proxy_Protocol_Timeout` has no effect: {where_} reads no PROXY header (`Proxy_Protocol` is not true)"
            ),
        )
    };
    for l in &listener.listens {
        if let Some(t) = &l.settings.proxy_protocol_timeout
            && !listener.proxy_protocol(l)
        {
            let d = unused_timeout(t, &format!("Listen \"{}\"", l.address.value));
            cx.diags.push(d);
        }
    }
    if let Some(t) = &listener.settings.proxy_protocol_timeout
        && !listener.listens.iter().any(|l| listener.proxy_protocol(l))
    {
        cx.diags.push(unused_timeout(t, "no Listen"));
    }
    // `Listen ":25"` and `Listen "*:25"` are one socket: two scopes for it cannot both bind.
    for (i, l) in listener.listens.iter().enumerate() {
        if let Some(first) = listener.listens[..i]
            .iter()
            .find(|o| o.address.value == l.address.value)
        {
            let at = cx.sources.locate(first.address.origin).to_string();
            cx.diags.push(Diagnostic::error(
                l.address.origin,
                format!(
                    "Listen `{}` is the same address as the Listen at {at}",
                    l.address.value
                ),
            ));
        }
    }
    listener
}

fn read_listen(cx: &mut Cx, scope: &Scope) -> Option<Listen> {
    let origin = scope.origin?;
    let Some(inst) = &scope.instance else {
        cx.diags.push(Diagnostic::error(
            origin,
            "`Listen` needs an address: `Listen \":25\" { }`",
        ));
        return None;
    };
    let address = match ListenAddr::parse(&inst.name) {
        Ok(a) => a,
        Err(e) => {
            cx.diags.push(Diagnostic::error(
                origin,
                format!("Listen \"{}\": {e}", inst.name),
            ));
            return None;
        }
    };
    let settings = read_settings(cx, scope, ScopeKind::Listen);
    let mut peers = Vec::new();
    for child in &scope.scopes {
        if child.name.eq_ignore_ascii_case("peer") {
            peers.extend(read_peer(cx, child));
        } else {
            cx.unknown_scope(ScopeKind::Listen, child);
        }
    }
    sort_peers(&mut peers);
    Some(Listen {
        address: Spanned {
            value: address,
            origin,
        },
        settings,
        peers,
    })
}

fn read_peer(cx: &mut Cx, scope: &Scope) -> Option<Peer> {
    let origin = scope.origin?;
    let Some(inst) = &scope.instance else {
        cx.diags.push(Diagnostic::error(
            origin,
            "`Peer` needs an address or CIDR block: `Peer \"10.0.0.0/8\" { }`",
        ));
        return None;
    };
    let cidr = match Cidr::parse(&inst.name) {
        Ok(c) => c,
        Err(CidrError::HostBits(c)) => {
            cx.diags.push(Diagnostic::warning(
                origin,
                format!("Peer `{}` has host bits set; read as `{c}`", inst.name),
            ));
            c
        }
        Err(_) => {
            cx.diags.push(Diagnostic::error(
                origin,
                format!("Peer `{}` is not an IP address or CIDR block", inst.name),
            ));
            return None;
        }
    };
    let settings = read_settings(cx, scope, ScopeKind::Peer);
    for child in &scope.scopes {
        cx.unknown_scope(ScopeKind::Peer, child);
    }
    Some(Peer {
        cidr: Spanned {
            value: cidr,
            origin,
        },
        settings,
    })
}

/// Most specific block first, so the first match is the best one.
fn sort_peers(peers: &mut [Peer]) {
    peers.sort_by_key(|p| std::cmp::Reverse(p.cidr.prefix));
}
