//! Option and scope names: which ones each scope implements, which valid Momentum names are
//! known but not implemented, and "did you mean" suggestions for the rest.
//!
//! Momentum refuses a configuration with an unknown name. A drop-in must accept the many valid
//! names it does not implement (warning about each), yet still catch typos: a name that is not a
//! known Momentum name but is one or two edits from a name this scope implements is an error with
//! a suggestion; anything else is reported as unknown and ignored (an error under `--strict`).

/// The scopes the model reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeKind {
    Global,
    EsmtpListener,
    Listen,
    Peer,
    AuthProxy,
    Datasource,
    Security,
    PrometheusListener,
    PrometheusListen,
    EcLogger,
    Domain,
    SharedCounters,
}

impl ScopeKind {
    pub fn title(self) -> &'static str {
        match self {
            ScopeKind::Global => "the global scope",
            ScopeKind::EsmtpListener => "ESMTP_Listener",
            ScopeKind::Listen => "Listen",
            ScopeKind::Peer => "Peer",
            ScopeKind::AuthProxy => "smtp_auth_proxy",
            ScopeKind::Datasource => "Datasource",
            ScopeKind::Security => "Security",
            ScopeKind::PrometheusListener => "Prometheus_Listener",
            ScopeKind::PrometheusListen => "Prometheus_Listener Listen",
            ScopeKind::EcLogger => "ec_logger",
            ScopeKind::Domain => "Domain",
            ScopeKind::SharedCounters => "Shared_Counters",
        }
    }

    /// Options this scope implements (lower case).
    pub fn options(self) -> &'static [&'static str] {
        match self {
            ScopeKind::Global => GLOBAL_OPTIONS,
            ScopeKind::EsmtpListener | ScopeKind::Listen | ScopeKind::Peer => LISTENER_OPTIONS,
            ScopeKind::AuthProxy => &[
                "host",
                "port",
                "timeout",
                "ds_cache",
                "query",
                "limits_query",
                "enabled",
                "tls",
                "tls_verify",
                "tls_ca",
                "pool",
                "debug_level",
                "deliver_through_upstream",
            ],
            ScopeKind::Datasource => &["uri", "cache_size", "cache_life", "max_rows", "no_cache"],
            ScopeKind::Security => &["user", "group"],
            ScopeKind::PrometheusListener | ScopeKind::PrometheusListen => &["enable"],
            ScopeKind::EcLogger => &["mainlog", "heartbeat"],
            ScopeKind::Domain => DOMAIN_OPTIONS,
            ScopeKind::SharedCounters => &["uri", "timeout", "failure_mode"],
        }
    }

    /// Child scopes this scope implements (lower case).
    pub fn scopes(self) -> &'static [&'static str] {
        match self {
            ScopeKind::Global => &[
                "esmtp_listener",
                "smtp_auth_proxy",
                "datasource",
                "security",
                "prometheus_listener",
                "ec_logger",
                "shared_counters",
            ],
            ScopeKind::EsmtpListener => &["listen", "peer"],
            ScopeKind::PrometheusListener => &["listen"],
            ScopeKind::Listen => &["peer"],
            _ => &[],
        }
    }
}

/// The sending limits (`limits.rs` reads them).
pub const LIMIT_OPTIONS: &[&str] = &[
    "user_message_limit",
    "user_recipient_limit",
    "user_session_limit",
    "address_message_limit",
    "address_recipient_limit",
    "address_session_limit",
    "relay_hosts_message_limit",
    "relay_hosts_recipient_limit",
];

/// The queue's options (`queue.rs`, `QueueSettings::read_setting`).
pub const QUEUE_OPTIONS: &[&str] = &[
    "retry_interval",
    "max_retry_interval",
    "max_retries",
    "message_expiration",
    "generate_bounces",
];

/// The outbound session's options (`outbound.rs`; `Gateway`, `Routes` and `XCLIENT` apart).
const OUTBOUND_OPTIONS: &[&str] = &[
    "remote_smtp_port",
    "tls",
    "tls_verify",
    "tls_ca",
    "tls_ifavailable_fallback",
    "max_outbound_connections",
    "max_deliveries_per_connection",
    "ehlo_hostname",
    "send_8bitmime",
    "connect_timeout",
    "ehlo_timeout",
    "mailfrom_timeout",
    "rcptto_timeout",
    "body_timeout",
    "rset_timeout",
    "idle_timeout",
];

/// Global options (besides the listener options Momentum also reads globally): the sending
/// limits, the routing and queue options, and those of a Domain scope.
const GLOBAL_OPTIONS: &[&str] = &joined::<
    { LIMIT_OPTIONS.len() + GLOBAL_OWN.len() + QUEUE_OPTIONS.len() + OUTBOUND_OPTIONS.len() },
>(&[LIMIT_OPTIONS, GLOBAL_OWN, QUEUE_OPTIONS, OUTBOUND_OPTIONS]);

const GLOBAL_OWN: &[&str] = &[
    "relay_hosts",
    "require_ehlo",
    "relay_domains",
    "gateway",
    "routes",
    "xclient",
    "prohibited_hosts",
    "skip_hosts",
    "server_max_outbound_connections",
    "spoolbase",
    "resolv_conf",
    "dns_nameservers",
    "use_ipv6",
];

/// Options of `Domain "name" { }`: the queue's, the routing ones, and the outbound session's.
const DOMAIN_OPTIONS: &[&str] = &joined::<
    { QUEUE_OPTIONS.len() + DOMAIN_ROUTING.len() + OUTBOUND_OPTIONS.len() },
>(&[QUEUE_OPTIONS, DOMAIN_ROUTING, OUTBOUND_OPTIONS]);

const DOMAIN_ROUTING: &[&str] = &["gateway", "routes", "xclient"];

/// Options of the listener family (ESMTP_Listener, Listen, Peer) and the sending limits;
/// `listener.rs` says which of them each of the three accepts.
pub const LISTENER_OPTIONS: &[&str] =
    &joined::<{ LISTENER_OWN.len() + LIMIT_OPTIONS.len() }>(&[LISTENER_OWN, LIMIT_OPTIONS]);

const LISTENER_OWN: &[&str] = &[
    "enable",
    "smtp_extensions",
    "authloginparameters",
    "authplainparameters",
    "authcrammd5parameters",
    "authoauthbearerparameters",
    "authxoauth2parameters",
    "relay_hosts",
    "open_relay",
    "require_ehlo",
    "idle_time",
    "listener_sessions",
    "auth_failure_limit",
    "max_message_size",
    "banner_hostname",
    "reconfig_message",
    "proxy_protocol",
    "proxy_protocol_timeout",
    "use_ssl",
    "tls_certificate",
    "tls_key",
    "tls_ciphers",
    "tls_protocols",
    "starttls_injection_policy",
];

/// The lists in `parts`, one after the other: each option name is written once, in the file
/// that reads it, and the scopes that share it are built from those lists.
const fn joined<const N: usize>(parts: &[&[&'static str]]) -> [&'static str; N] {
    let mut out = [""; N];
    let mut n = 0;
    let mut i = 0;
    while i < parts.len() {
        let mut j = 0;
        while j < parts[i].len() {
            out[n] = parts[i][j];
            n += 1;
            j += 1;
        }
        i += 1;
    }
    assert!(n == N, "N must be the parts' total length");
    out
}

/// Valid Momentum names (options and scopes) that smtp-auth-proxy does not implement, from the
/// vendor manual's option summary and the files in the corpus. They are reported as "not
/// implemented", never as typos.
const MOMENTUM_NAMES: &[&str] = &[
    // listener family
    "relay_for_sending_domains",
    "context",
    "static_banner",
    "received_hostname",
    "service_sessions",
    "tls_verified_peer_can_relay",
    "allow_null_envelope_sender",
    "max_receptions_per_connection",
    "allow_ip_literal",
    "authdigestmd5parameters",
    "enable_authentication",
    "enable_authorization",
    "authorizationparameters",
    "always_allow",
    "always_deny",
    "tls_client_ca",
    "tls_verify_mode",
    "tlsv13_ciphersuites",
    "tls_dhparams_file",
    "tls_enable_dhe_ciphers",
    "tls_allow_renegotiation",
    "listen_backlog",
    "accept_queue_backlog",
    "concurrency",
    "pool_name",
    "events_per_iter",
    "tcp_send_buffer_size",
    "tcp_recv_buffer_size",
    "enable_duravip",
    "event_loop",
    "mcmt_reception",
    "file_mode",
    "pathway",
    "pathway_group",
    "max_recipients_per_connection",
    "max_recipients_per_message",
    "prohibited_hosts",
    "inbound_throttle_messages",
    "inbound_throttle_connections",
    "timeout",
    // modules and datasources
    "enabled",
    "debug_level",
    "pool",
    "serialized",
    "assume_charset",
    "long_threshold",
    // security
    "capabilities",
    "privileges",
    "chroot",
    // global scopes and options seen in vendor files
    "domain",
    "binding",
    "binding_group",
    "control_listener",
    "http_listener",
    "xmpp_listener",
    "ecstream_listener",
    "eccluster_listener",
    "debug_flags",
    "ec_logger",
    "scriptlet",
    "spoolbase",
    "keep_message_dicts_in_memory",
    "delivery_method",
    "server_max_outbound_connections",
    "tls",
    "outbound_smtp_auth_type",
    "outbound_smtp_auth_user",
    "outbound_smtp_auth_pass",
    "remote_smtp_port",
    "local_changes_file",
    "local_changes_only",
    "bounce_domains",
    "bounce_behavior",
    "generate_bounces",
    "logs",
    "cluster",
    "msg_gen",
    "auth_ds",
    "auth_radius",
    "ds_core",
    "ds_ldap",
    "opendkim",
    "opendkim_sign",
    "fbl",
    "eventloop",
    "threadpool",
    "delivery_pool",
    "maintainer_pool",
    "smpp",
    "smpp_logger",
    "bounce_logger",
    "outbound_smtp_auth",
    "httpsrv",
    "substitution_engine",
    "engagement_tracker",
    "cassandra_client",
    "enable_fbl_header_insertion",
    "ac_auth",
    "sieve",
    "alerting",
    "adaptive",
    "inbound_audit",
    "smtpapi",
    "tls_macros",
    "ecstream",
    // sending options valid in a Domain scope
    "blackhole",
    "bounce_pattern",
    "bounces_inline_original",
    "connect_timeout_to_delay",
    "connection_allocation_aggressiveness",
    "delay_dsn_max_retry_interval",
    "delay_dsn_retry_interval",
    "dns_expire_interval",
    "dns_failures_to_purge",
    "domainkeys",
    "drop_body_after_trans_fail",
    "enable_mta_sts",
    "fully_resolve_before_smtp",
    "generate_delay_dsn",
    "host_failure_retry",
    "lmtp_port",
    "mailerdaemon",
    "max_recipients_per_batch",
    "max_resident_active_queue",
    "max_retries",
    "max_retry_interval",
    "message_expiration",
    "mx_failures_fallback_to_a",
    "mx_failures_to_delay",
    "never_attempt_expired_messages",
    "never_retry",
    "only_use_best_mx_for_relay_domains",
    "outbound_throttle_connections",
    "outbound_throttle_messages",
    "retry_interval",
    "scope_max_outbound_connections",
    "suspend_delivery",
    "transform_8bitmime_content",
    "use_mta_sts",
    "prefer_ipv6_mxs",
];

/// Whether `name` is a Momentum name known not to be implemented here.
pub fn is_known_momentum_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    MOMENTUM_NAMES.contains(&lower.as_str())
}

/// The implemented name `name` was probably meant to be, if it is a near miss.
pub fn suggest(name: &str, candidates: &[&'static str]) -> Option<&'static str> {
    let folded = fold(name);
    if let Some(exact) = candidates.iter().find(|c| fold(c) == folded) {
        return Some(exact);
    }
    let lower = name.to_ascii_lowercase();
    let limit = if lower.len() <= 5 { 1 } else { 2 };
    candidates
        .iter()
        .map(|c| (levenshtein(&lower, c), *c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Lower case without `_` and `-`: `SMTPExtensions` and `smtp-extensions` both fold to
/// `smtpextensions`.
fn fold(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '_' && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("SMTP_Extentions", LISTENER_OPTIONS),
            Some("smtp_extensions")
        );
        assert_eq!(
            suggest("SMTPExtensions", LISTENER_OPTIONS),
            Some("smtp_extensions")
        );
        assert_eq!(suggest("relay_host", LISTENER_OPTIONS), Some("relay_hosts"));
        assert_eq!(suggest("Listener_Backlog", LISTENER_OPTIONS), None);
        assert_eq!(
            suggest("hots", ScopeKind::AuthProxy.options()),
            None,
            "short names allow one edit"
        );
        assert_eq!(
            suggest("hostt", ScopeKind::AuthProxy.options()),
            Some("host")
        );
        assert!(is_known_momentum_name("TLS_Verify_Mode"));
        assert!(!is_known_momentum_name("SMTP_Extentions"));
    }
}
