//! Typed configuration: command-line flags and `FHIRVAULT_*` environment variables (clap reads
//! both), over an optional TOML file (`--config`), over defaults that start a working server on a
//! fresh machine. Everything is checked once at start-up; a bad setting stops the process with a
//! message that names the setting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

/// Settings shared by every subcommand that opens the store.
#[derive(Debug, Clone, Default, Args)]
pub struct StoreArgs {
    /// Configuration file (TOML). Flags and FHIRVAULT_* variables override it.
    #[arg(long = "config", env = "FHIRVAULT_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Directory for the embedded database and the key file.
    #[arg(long, env = "FHIRVAULT_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// `sqlite:PATH` or `postgres://user@host/db`. Default: sqlite in the data directory.
    #[arg(long, env = "FHIRVAULT_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Key file holding the master keys (created with mode 0600 on first start).
    #[arg(long, env = "FHIRVAULT_KEY_FILE", global = true)]
    pub key_file: Option<PathBuf>,
    /// Folder with the FHIR R4 definitions (search parameters, schema, value sets).
    #[arg(long, env = "FHIRVAULT_FHIR_RESOURCES", global = true)]
    pub fhir_resources: Option<PathBuf>,
    /// Time zone of HL7 v2 timestamps sent without an offset (IANA name). Default Europe/Vienna.
    #[arg(long, env = "FHIRVAULT_FACILITY_TIME_ZONE", global = true)]
    pub facility_time_zone: Option<String>,
    #[command(flatten)]
    pub audit: AuditArgs,
}

/// Audit-trail settings that flags and variables can set (see [`AuditConfig`]).
#[derive(Debug, Clone, Default, Args)]
pub struct AuditArgs {
    /// Hash chains AuditEvents are spread over (concurrent writers each take one). Default 4.
    #[arg(long = "audit-chains", env = "FHIRVAULT_AUDIT_CHAINS", global = true)]
    pub chains: Option<u32>,
    /// Days AuditEvents are kept before `fhirvault audit prune` removes them. Default 2190 (six years).
    #[arg(
        long = "audit-retention-days",
        env = "FHIRVAULT_AUDIT_RETENTION_DAYS",
        global = true
    )]
    pub retention_days: Option<u32>,
    /// What a read does when its AuditEvent cannot be written: `fail` (default) or `queue`.
    #[arg(
        long = "audit-on-write-failure",
        env = "FHIRVAULT_AUDIT_ON_WRITE_FAILURE",
        global = true
    )]
    pub on_write_failure: Option<String>,
    /// Where a read's AuditEvents are made durable before it is answered: `journal` (default)
    /// or `database`.
    #[arg(
        long = "audit-read-records",
        env = "FHIRVAULT_AUDIT_READ_RECORDS",
        global = true
    )]
    pub read_records: Option<String>,
}

/// Settings only the server needs.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "FHIRVAULT_LISTEN")]
    pub listen: Option<String>,
    /// Public base URL of the FHIR endpoint, used in Location headers and Bundle links.
    /// Default: http://LISTEN/fhir.
    #[arg(long, env = "FHIRVAULT_BASE_URL")]
    pub base_url: Option<String>,
    /// Address for the HL7 v2 MLLP listener (e.g. 127.0.0.1:2575). Off unless set.
    #[arg(long, env = "FHIRVAULT_MLLP_LISTEN")]
    pub mllp_listen: Option<String>,
    /// Certificate chain (PEM) for HTTPS and MLLP over TLS; needs --tls-key.
    #[arg(long, env = "FHIRVAULT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of the certificate in --tls-cert.
    #[arg(long, env = "FHIRVAULT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that issue device-hub client certificates (mutual TLS).
    #[arg(long, env = "FHIRVAULT_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Bearer-token settings that flags and variables can set (the rest are in `[auth]`).
#[derive(Debug, Clone, Default, Args)]
pub struct AuthArgs {
    /// The `iss` bearer tokens must carry, exactly. Default: the base URL.
    #[arg(long = "auth-issuer", env = "FHIRVAULT_AUTH_ISSUER")]
    pub issuer: Option<String>,
    /// A value the tokens' `aud` must contain. Default: the base URL.
    #[arg(long = "auth-audience", env = "FHIRVAULT_AUTH_AUDIENCE")]
    pub audience: Option<String>,
    /// An identity provider's JWKS, saved as a file; tokens are verified against its keys.
    #[arg(long = "auth-jwks-file", env = "FHIRVAULT_AUTH_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// Clock skew allowed when checking exp, nbf and iat (seconds, at most 300). Default 60.
    #[arg(long = "auth-leeway-seconds", env = "FHIRVAULT_AUTH_LEEWAY_SECONDS")]
    pub leeway_seconds: Option<u64>,
    /// The claim (or dotted path, e.g. realm_access.roles) tokens carry their role in.
    /// Default: role, else roles.
    #[arg(long = "auth-role-claim", env = "FHIRVAULT_AUTH_ROLE_CLAIM")]
    pub role_claim: Option<String>,
}

/// The TOML file: every key optional, same names as the flags (with underscores).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    base_url: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    key_file: Option<PathBuf>,
    fhir_resources: Option<PathBuf>,
    pseudonym_system: Option<String>,
    insurer_pseudonymised: Option<bool>,
    consent_default: Option<String>,
    rate_limit_per_second: Option<u32>,
    rate_limit_burst: Option<u32>,
    max_bundle_entries: Option<usize>,
    max_body_bytes: Option<usize>,
    default_page_size: Option<usize>,
    max_page_size: Option<usize>,
    #[serde(default)]
    hl7v2: Hl7FileConfig,
    #[serde(default)]
    auth: AuthFileConfig,
    #[serde(default)]
    tls: TlsFileConfig,
    #[serde(default)]
    audit: AuditFileConfig,
    #[serde(default)]
    store: StoreFileConfig,
    #[serde(default)]
    export: ExportFileConfig,
}

/// The `[store]` table of the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFileConfig {
    statement_timeout_ms: Option<u64>,
    count_timeout_ms: Option<u64>,
}

/// How the server uses its database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// The longest one SQL statement may run before the database stops it (`None`: no limit),
    /// so that one expensive search cannot hold a connection (and a reader slot) for ever.
    /// PostgreSQL: `statement_timeout` on every pooled connection; SQLite: queries (SELECT) are
    /// interrupted from SQLite's progress handler ([`crate::store::sqlite_limit`]).
    pub statement_timeout: Option<Duration>,
    /// The longest the server counts the matches of a search for `Bundle.total` when the client
    /// did not ask for an accurate total (`_total` absent or `estimate`); past it the page is
    /// answered without a total, with a warning (`None`: counted up to `statement_timeout`).
    /// A count probes every match (a `_has` every Patient), so it can take far longer than the
    /// page it comes with, or end in a 503 where the page alone would have been answered.
    pub count_timeout: Option<Duration>,
}

/// A few seconds: far above any search of an indexed, paged query, low enough that a runaway
/// one frees its connection quickly.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// More than an hour is no limit at all for an interactive server.
const MAX_STATEMENT_TIMEOUT_MS: u64 = 3_600_000;
/// A second: a page of an indexed search takes milliseconds, so a total that takes longer would
/// be most of the request's time, for a figure that a client paging through rarely needs.
pub const DEFAULT_COUNT_TIMEOUT: Duration = Duration::from_secs(1);

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            statement_timeout: Some(DEFAULT_STATEMENT_TIMEOUT),
            count_timeout: Some(DEFAULT_COUNT_TIMEOUT),
        }
    }
}

/// The `[export]` table of the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportFileConfig {
    max_concurrent_jobs: Option<usize>,
    expire_after_seconds: Option<u64>,
    max_resources_per_file: Option<usize>,
}

/// Bulk export (`$export`, `crate::service::export`): how many jobs run at once, how long their
/// output is kept, how big one file gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfig {
    /// Jobs running at once, server-wide; a kick-off beyond it is a 429. Each job pages through
    /// searches on a reader connection, so this bounds what exports take from other requests.
    pub max_concurrent_jobs: usize,
    /// How long a finished job's status and files stay available (then 404, and deleted).
    pub expire_after: Duration,
    /// Resources per output file; a type with more is split over several files.
    pub max_resources_per_file: usize,
}

pub const DEFAULT_EXPORT_JOBS: usize = 2;
pub const DEFAULT_EXPORT_EXPIRY_SECONDS: u64 = 24 * 60 * 60;
pub const DEFAULT_EXPORT_FILE_RESOURCES: usize = 10_000;

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            max_concurrent_jobs: DEFAULT_EXPORT_JOBS,
            expire_after: Duration::from_secs(DEFAULT_EXPORT_EXPIRY_SECONDS),
            max_resources_per_file: DEFAULT_EXPORT_FILE_RESOURCES,
        }
    }
}

/// A time limit in milliseconds from the file: `default` when absent, `None` (no limit of its
/// own) at 0, at most an hour (PostgreSQL takes no `statement_timeout` past 2^31 ms).
fn time_limit(
    ms: Option<u64>,
    default: Duration,
    setting: &'static str,
    zero_means: &str,
) -> Result<Option<Duration>, ConfigError> {
    match ms {
        None => Ok(Some(default)),
        Some(0) => Ok(None),
        Some(ms) if ms > MAX_STATEMENT_TIMEOUT_MS => Err(ConfigError::new(
            setting,
            format!("must be at most {MAX_STATEMENT_TIMEOUT_MS} (one hour); {zero_means}"),
        )),
        Some(ms) => Ok(Some(Duration::from_millis(ms))),
    }
}

impl StoreConfig {
    fn resolve(file: StoreFileConfig) -> Result<StoreConfig, ConfigError> {
        let statement_timeout = time_limit(
            file.statement_timeout_ms,
            DEFAULT_STATEMENT_TIMEOUT,
            "store.statement_timeout_ms",
            "0 turns the limit off",
        )?;
        let count_timeout = time_limit(
            file.count_timeout_ms,
            DEFAULT_COUNT_TIMEOUT,
            "store.count_timeout_ms",
            "0 counts up to the statement limit",
        )?;
        // A count limit at or past the statement limit would never be reached: the statement
        // limit would stop the count first, failing the request instead of leaving out its total.
        let count_timeout = match (count_timeout, statement_timeout) {
            (Some(count), Some(statement)) if count >= statement => {
                if file.count_timeout_ms.is_some() {
                    return Err(ConfigError::new(
                        "store.count_timeout_ms",
                        format!(
                            "must be less than store.statement_timeout_ms ({} ms); 0 counts up to that limit",
                            statement.as_millis()
                        ),
                    ));
                }
                // The default, under a statement limit set below it: counts run to that limit.
                None
            }
            (count, _) => count,
        };
        Ok(StoreConfig {
            statement_timeout,
            count_timeout,
        })
    }
}

impl ExportConfig {
    fn resolve(file: ExportFileConfig) -> Result<ExportConfig, ConfigError> {
        /// A setting that counts something and has no meaning at zero.
        fn at_least_one<T: PartialEq + From<u8>>(
            value: T,
            setting: &'static str,
        ) -> Result<T, ConfigError> {
            if value == T::from(0) {
                return Err(ConfigError::new(setting, "must be at least 1"));
            }
            Ok(value)
        }
        let max_concurrent_jobs = at_least_one(
            file.max_concurrent_jobs.unwrap_or(DEFAULT_EXPORT_JOBS),
            "export.max_concurrent_jobs",
        )?;
        let expire_after_seconds = at_least_one(
            file.expire_after_seconds
                .unwrap_or(DEFAULT_EXPORT_EXPIRY_SECONDS),
            "export.expire_after_seconds",
        )?;
        let max_resources_per_file = at_least_one(
            file.max_resources_per_file
                .unwrap_or(DEFAULT_EXPORT_FILE_RESOURCES),
            "export.max_resources_per_file",
        )?;
        Ok(ExportConfig {
            max_concurrent_jobs,
            expire_after: Duration::from_secs(expire_after_seconds),
            max_resources_per_file,
        })
    }
}

/// The `[audit]` table of the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditFileConfig {
    chains: Option<u32>,
    retention_days: Option<u32>,
    on_write_failure: Option<String>,
    read_records: Option<String>,
}

/// The audit trail (`crate::audit`): how AuditEvents are chained, kept and, when the database
/// refuses them, queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// Number of hash chains. Each append locks one chain's head, so more chains let more
    /// PostgreSQL transactions append at once; verification walks each chain on its own.
    pub chains: u32,
    /// Age (days since `recorded`) after which `fhirvault audit prune` exports and removes an
    /// AuditEvent.
    pub retention_days: u32,
    pub on_write_failure: OnWriteFailure,
    pub read_records: ReadRecords,
    /// Whether AuditEvents are written at all. Always true in a deployment: no file setting,
    /// flag or variable turns it off. Benchmarks switch it off through the library, to measure
    /// what the trail costs against the same server without it.
    pub enabled: bool,
}

/// What `Service::audit` does when the database cannot take the AuditEvents of a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnWriteFailure {
    /// The read fails: nothing is shown that was not recorded.
    Fail,
    /// The AuditEvents go to a sealed, fsynced spool under the data directory, and are written
    /// into the chain once the database takes writes again.
    Queue,
}

/// Where the AuditEvents of a read are made durable before the read is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadRecords {
    /// Written into the chain in a database commit of their own (shared with concurrent reads).
    Database,
    /// The default: appended to the sealed read journal under the data directory, and written
    /// into the chain in large batches moments later (`crate::audit::journal`). As durable as
    /// a commit (fsynced before the read is answered), and 2–4× the audited reads/s.
    Journal,
}

pub const DEFAULT_AUDIT_CHAINS: u32 = 4;
const MAX_AUDIT_CHAINS: u32 = 1024;
/// Six years, the retention HIPAA asks of audit documentation (45 CFR 164.316(b)(2)).
pub const DEFAULT_AUDIT_RETENTION_DAYS: u32 = 2190;

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            chains: DEFAULT_AUDIT_CHAINS,
            retention_days: DEFAULT_AUDIT_RETENTION_DAYS,
            on_write_failure: OnWriteFailure::Fail,
            read_records: ReadRecords::Journal,
            enabled: true,
        }
    }
}

impl AuditConfig {
    fn resolve(file: AuditFileConfig, args: &AuditArgs) -> Result<AuditConfig, ConfigError> {
        let chains = args.chains.or(file.chains).unwrap_or(DEFAULT_AUDIT_CHAINS);
        if !(1..=MAX_AUDIT_CHAINS).contains(&chains) {
            return Err(ConfigError::new(
                "audit.chains",
                format!("must be between 1 and {MAX_AUDIT_CHAINS}"),
            ));
        }
        let retention_days = args
            .retention_days
            .or(file.retention_days)
            .unwrap_or(DEFAULT_AUDIT_RETENTION_DAYS);
        if retention_days == 0 {
            return Err(ConfigError::new(
                "audit.retention_days",
                "must be at least 1",
            ));
        }
        let on_write_failure = match args
            .on_write_failure
            .clone()
            .or(file.on_write_failure)
            .as_deref()
        {
            None | Some("fail") => OnWriteFailure::Fail,
            Some("queue") => OnWriteFailure::Queue,
            Some(_) => {
                return Err(ConfigError::new(
                    "audit.on_write_failure",
                    "must be `fail` or `queue`",
                ));
            }
        };
        let read_records = match args.read_records.clone().or(file.read_records).as_deref() {
            Some("database") => ReadRecords::Database,
            None | Some("journal") => ReadRecords::Journal,
            Some(_) => {
                return Err(ConfigError::new(
                    "audit.read_records",
                    "must be `database` or `journal`",
                ));
            }
        };
        Ok(AuditConfig {
            chains,
            retention_days,
            on_write_failure,
            read_records,
            enabled: true,
        })
    }
}

/// The `[tls]` table of the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFileConfig {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    client_crl_files: Vec<PathBuf>,
    #[serde(default)]
    hubs: Vec<HubConfig>,
}

/// The `[auth]` table of the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFileConfig {
    issuer: Option<String>,
    audience: Option<String>,
    jwks_file: Option<PathBuf>,
    trust_key_ring: Option<bool>,
    leeway_seconds: Option<u64>,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    role_claim: Option<String>,
}

/// Bearer-token verification (`auth::token`): whose tokens are accepted, for whom.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The exact `iss` of accepted tokens; also what `fhirvault token issue` writes.
    pub issuer: String,
    /// A value the `aud` of accepted tokens must contain.
    pub audience: String,
    /// An identity provider's JWKS (Keycloak, Entra ID, …), saved as a file.
    pub jwks_file: Option<PathBuf>,
    /// Whether tokens signed by the key ring's own key (`fhirvault token issue`) are accepted.
    /// Default: yes without `jwks_file`, no with one.
    pub trust_key_ring: bool,
    /// Clock skew allowed for `exp`, `nbf` and `iat`.
    pub leeway_seconds: u64,
    /// The identity provider's endpoints, for `.well-known/smart-configuration`; this server
    /// is a resource server and has none of its own.
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    /// Where tokens carry their role: a claim name or a dotted path (`realm_access.roles`).
    /// Default: `role`, else `roles` (Entra ID's app roles).
    pub role_claim: crate::auth::token::RoleClaim,
}

pub const DEFAULT_LEEWAY_SECONDS: u64 = 60;
const MAX_LEEWAY_SECONDS: u64 = 300;

impl AuthConfig {
    /// The defaults: tokens from the key ring, issued by and for `base_url`.
    pub fn for_base_url(base_url: &str) -> AuthConfig {
        AuthConfig {
            issuer: base_url.to_string(),
            audience: base_url.to_string(),
            jwks_file: None,
            trust_key_ring: true,
            leeway_seconds: DEFAULT_LEEWAY_SECONDS,
            authorization_endpoint: None,
            token_endpoint: None,
            role_claim: Default::default(),
        }
    }

    fn resolve(
        file: AuthFileConfig,
        args: &AuthArgs,
        base_url: &str,
    ) -> Result<AuthConfig, ConfigError> {
        let issuer = args
            .issuer
            .clone()
            .or(file.issuer)
            .unwrap_or_else(|| base_url.to_string());
        let audience = args
            .audience
            .clone()
            .or(file.audience)
            .unwrap_or_else(|| base_url.to_string());
        for (setting, value) in [("auth.issuer", &issuer), ("auth.audience", &audience)] {
            if value.is_empty() || value.contains(char::is_whitespace) {
                return Err(ConfigError::new(
                    setting,
                    "must be a non-empty string without spaces",
                ));
            }
        }
        let jwks_file = args.jwks_file.clone().or(file.jwks_file);
        if let Some(path) = &jwks_file
            && !path.is_file()
        {
            return Err(ConfigError::new(
                "auth.jwks_file",
                format!("{} is not a readable file", path.display()),
            ));
        }
        let trust_key_ring = file.trust_key_ring.unwrap_or(jwks_file.is_none());
        if !trust_key_ring && jwks_file.is_none() {
            return Err(ConfigError::new(
                "auth.trust_key_ring",
                "is false and no auth.jwks_file is set: no key would verify tokens",
            ));
        }
        let leeway_seconds = args
            .leeway_seconds
            .or(file.leeway_seconds)
            .unwrap_or(DEFAULT_LEEWAY_SECONDS);
        if leeway_seconds > MAX_LEEWAY_SECONDS {
            return Err(ConfigError::new(
                "auth.leeway_seconds",
                format!("must be at most {MAX_LEEWAY_SECONDS}"),
            ));
        }
        for (setting, url) in [
            ("auth.authorization_endpoint", &file.authorization_endpoint),
            ("auth.token_endpoint", &file.token_endpoint),
        ] {
            if let Some(url) = url
                && !(url.starts_with("https://") || url.starts_with("http://"))
            {
                return Err(ConfigError::new(setting, "must be an absolute http(s) URL"));
            }
        }
        let role_claim = match args.role_claim.clone().or(file.role_claim) {
            Some(path) => crate::auth::token::RoleClaim::parse(&path)
                .map_err(|why| ConfigError::new("auth.role_claim", why))?,
            None => Default::default(),
        };
        Ok(AuthConfig {
            issuer,
            audience,
            jwks_file,
            trust_key_ring,
            leeway_seconds,
            authorization_endpoint: file.authorization_endpoint,
            token_endpoint: file.token_endpoint,
            role_claim,
        })
    }
}

/// The `[hl7v2]` table of the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hl7FileConfig {
    mllp_listen: Option<String>,
    max_message_bytes: Option<usize>,
    idle_timeout_seconds: Option<u64>,
    max_connections: Option<usize>,
    facility_time_zone: Option<String>,
    /// Assigning authority of PID-3 (namespace id or OID) → FHIR identifier system.
    identifier_systems: Option<BTreeMap<String, String>>,
}

/// HL7 v2 ingestion settings.
#[derive(Debug, Clone)]
pub struct Hl7Config {
    /// The MLLP listener's address; `None` leaves MLLP off (HTTP `POST /hl7v2` always works).
    pub mllp_listen: Option<SocketAddr>,
    pub max_message_bytes: usize,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Where timestamps without an offset were taken (HL7 DTM without `+ZZZZ`).
    pub facility_time_zone: chrono_tz::Tz,
    /// PID-3 assigning authority (CX-4 namespace id, or its universal id) → identifier system.
    /// Authorities with an ISO universal id need no entry: they map to `urn:oid:<id>`.
    pub identifier_systems: BTreeMap<String, String>,
}

/// The Austrian social-insurance number (Sozialversicherungsnummer): its OID, as the identifier
/// system, and the short name Austrian senders use as the assigning authority.
pub const AUSTRIAN_SVNR_SYSTEM: &str = "urn:oid:1.2.40.0.10.1.4.3.1";

impl Default for Hl7Config {
    fn default() -> Self {
        Hl7Config {
            mllp_listen: None,
            max_message_bytes: 1024 * 1024,
            idle_timeout: Duration::from_secs(60),
            max_connections: 256,
            facility_time_zone: chrono_tz::Europe::Vienna,
            identifier_systems: BTreeMap::from([(
                "SVNR".to_string(),
                AUSTRIAN_SVNR_SYSTEM.to_string(),
            )]),
        }
    }
}

impl Hl7Config {
    fn resolve(
        file: Hl7FileConfig,
        store: &StoreArgs,
        serve: &ServeArgs,
    ) -> Result<Hl7Config, ConfigError> {
        let defaults = Hl7Config::default();
        let mllp_listen = match serve.mllp_listen.clone().or(file.mllp_listen) {
            Some(text) => Some(text.parse().map_err(|_| {
                ConfigError::new(
                    "mllp_listen",
                    format!("`{text}` is not an address like 127.0.0.1:2575"),
                )
            })?),
            None => None,
        };
        let zone_name = store.facility_time_zone.clone().or(file.facility_time_zone);
        let facility_time_zone = match zone_name {
            Some(name) => name.parse().map_err(|_| {
                ConfigError::new(
                    "facility_time_zone",
                    format!("`{name}` is not an IANA time zone name like Europe/Vienna"),
                )
            })?,
            None => defaults.facility_time_zone,
        };
        let max_message_bytes = file.max_message_bytes.unwrap_or(defaults.max_message_bytes);
        if max_message_bytes < 1024 {
            return Err(ConfigError::new(
                "hl7v2.max_message_bytes",
                "must be at least 1024",
            ));
        }
        let max_connections = file.max_connections.unwrap_or(defaults.max_connections);
        if max_connections == 0 {
            return Err(ConfigError::new(
                "hl7v2.max_connections",
                "must be at least 1",
            ));
        }
        let idle_timeout = file
            .idle_timeout_seconds
            .map(Duration::from_secs)
            .unwrap_or(defaults.idle_timeout);
        let mut identifier_systems = defaults.identifier_systems;
        for (authority, system) in file.identifier_systems.unwrap_or_default() {
            if system.is_empty() || system.contains(char::is_whitespace) {
                return Err(ConfigError::new(
                    "hl7v2.identifier_systems",
                    format!("the system for `{authority}` must be a URI without spaces"),
                ));
            }
            identifier_systems.insert(authority, system);
        }
        Ok(Hl7Config {
            mllp_listen,
            max_message_bytes,
            idle_timeout,
            max_connections,
            facility_time_zone,
            identifier_systems,
        })
    }
}

/// TLS for both listeners (HTTP and MLLP). The files are read and checked by
/// [`crate::tls::ServerTls::load`]; here only the shape of the settings is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key of the leaf certificate.
    pub key_file: PathBuf,
    /// PEM CA certificates that issue client certificates. When set, HTTPS asks for a client
    /// certificate (optional there) and MLLP requires one that maps to a hub.
    pub client_ca_file: Option<PathBuf>,
    /// Certificate revocation lists (PEM or DER) of the CAs under `client_ca_file`: a client
    /// certificate they revoke is refused in the handshake.
    pub client_crl_files: Vec<PathBuf>,
    /// Client-certificate identities of device hubs.
    pub hubs: Vec<HubConfig>,
}

/// One `[[tls.hubs]]` entry: a device hub known by its client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// The hub's name, as logs and the access rules know it.
    pub name: String,
    /// A DNS name the hub's certificate carries in its subject alternative names; matched
    /// exactly (ASCII case aside), never as a wildcard.
    pub subject: String,
    /// The organisation the hub belongs to (`Organization/<id>`), if any.
    pub org: Option<String>,
}

impl TlsConfig {
    fn resolve(file: TlsFileConfig, serve: &ServeArgs) -> Result<Option<TlsConfig>, ConfigError> {
        let cert_file = serve.tls_cert.clone().or(file.cert_file);
        let key_file = serve.tls_key.clone().or(file.key_file);
        let client_ca_file = serve.tls_client_ca.clone().or(file.client_ca_file);
        let (cert_file, key_file) = match (cert_file, key_file) {
            (Some(cert), Some(key)) => (cert, key),
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "tls.key_file",
                    "is needed with tls.cert_file (--tls-key)",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "tls.cert_file",
                    "is needed with tls.key_file (--tls-cert)",
                ));
            }
            (None, None) => {
                if client_ca_file.is_some() {
                    return Err(ConfigError::new(
                        "tls.client_ca_file",
                        "needs tls.cert_file and tls.key_file: client certificates are a TLS feature",
                    ));
                }
                if !file.hubs.is_empty() {
                    return Err(ConfigError::new(
                        "tls.hubs",
                        "needs tls.cert_file, tls.key_file and tls.client_ca_file",
                    ));
                }
                if !file.client_crl_files.is_empty() {
                    return Err(ConfigError::new(
                        "tls.client_crl_files",
                        "needs tls.cert_file, tls.key_file and tls.client_ca_file",
                    ));
                }
                return Ok(None);
            }
        };
        if !file.hubs.is_empty() && client_ca_file.is_none() {
            return Err(ConfigError::new(
                "tls.hubs",
                "needs tls.client_ca_file: hubs are known by client certificates issued under it",
            ));
        }
        if !file.client_crl_files.is_empty() && client_ca_file.is_none() {
            return Err(ConfigError::new(
                "tls.client_crl_files",
                "needs tls.client_ca_file: the lists revoke client certificates issued under it",
            ));
        }
        check_hubs(&file.hubs)?;
        Ok(Some(TlsConfig {
            cert_file,
            key_file,
            client_ca_file,
            client_crl_files: file.client_crl_files,
            hubs: file.hubs,
        }))
    }
}

/// Names and subjects must be unique (a certificate must map to one hub), subjects plain DNS
/// names (no wildcards: a hub is one certificate identity), orgs `Organization/<id>`.
fn check_hubs(hubs: &[HubConfig]) -> Result<(), ConfigError> {
    let mut names = std::collections::BTreeSet::new();
    let mut subjects = std::collections::BTreeSet::new();
    for hub in hubs {
        if hub.name.trim().is_empty() || hub.name.chars().any(char::is_control) {
            return Err(ConfigError::new(
                "tls.hubs",
                "every hub needs a name without control characters",
            ));
        }
        let name = &hub.name;
        if rustls_pki_types::DnsName::try_from(hub.subject.as_str()).is_err() {
            return Err(ConfigError::new(
                "tls.hubs",
                format!(
                    "hub `{name}`: subject `{}` is not a DNS name (wildcards are not allowed)",
                    hub.subject
                ),
            ));
        }
        if let Some(org) = &hub.org {
            let valid = org
                .strip_prefix("Organization/")
                .is_some_and(crate::fhir::id::is_valid_id);
            if !valid {
                return Err(ConfigError::new(
                    "tls.hubs",
                    format!("hub `{name}`: org must be a reference like Organization/org-a"),
                ));
            }
        }
        if !names.insert(name.as_str()) {
            return Err(ConfigError::new(
                "tls.hubs",
                format!("hub name `{name}` is used twice"),
            ));
        }
        if !subjects.insert(hub.subject.to_ascii_lowercase()) {
            return Err(ConfigError::new(
                "tls.hubs",
                format!("subject `{}` is used by two hubs", hub.subject),
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

impl DatabaseUrl {
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        if let Some(path) = value
            .strip_prefix("sqlite://")
            .or_else(|| value.strip_prefix("sqlite:"))
        {
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err(ConfigError::new(
                    "database_url",
                    "sqlite: needs a file path, e.g. sqlite:./fhirvault-data/fhirvault.db",
                ));
            }
            Ok(DatabaseUrl::Sqlite(PathBuf::from(path)))
        } else if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            Ok(DatabaseUrl::Postgres(value.to_string()))
        } else {
            Err(ConfigError::new(
                "database_url",
                "must start with sqlite: or postgres://",
            ))
        }
    }

    /// The URL with any password removed, for log lines.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => format!("sqlite:{}", path.display()),
            DatabaseUrl::Postgres(url) => match (url.find("://"), url.rfind('@')) {
                (Some(scheme_end), Some(at)) if at > scheme_end => {
                    let credentials = &url[scheme_end + 3..at];
                    let user = credentials.split(':').next().unwrap_or_default();
                    format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..])
                }
                _ => url.clone(),
            },
        }
    }
}

/// Everything the server and the store need, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub base_url: String,
    pub data_dir: PathBuf,
    pub database: DatabaseUrl,
    pub key_file: PathBuf,
    pub fhir_resources: PathBuf,
    /// System of the pseudonym identifier added to every Patient.
    pub pseudonym_system: String,
    /// Whether insurers get the pseudonymous view (docs/security.md); default true.
    pub insurer_pseudonymised: bool,
    /// What insurers and the CRM see of a patient without a Consent (docs/consent.md).
    pub consent_default: crate::auth::consent::ConsentDefault,
    /// Requests per second each caller may make, sustained (0: no limit), and at once.
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    /// Most entries one batch or transaction Bundle may have.
    pub max_bundle_entries: usize,
    pub max_body_bytes: usize,
    pub default_page_size: usize,
    pub max_page_size: usize,
    pub hl7v2: Hl7Config,
    pub auth: AuthConfig,
    /// HTTPS and MLLP over TLS; `None` serves plain text, which [`Config::check_transport`]
    /// allows on loopback addresses only.
    pub tls: Option<TlsConfig>,
    pub audit: AuditConfig,
    pub store: StoreConfig,
    pub export: ExportConfig,
}

#[derive(Debug, thiserror::Error)]
#[error("configuration setting `{setting}`: {message}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(setting: &'static str, message: impl Into<String>) -> Self {
        ConfigError {
            setting,
            message: message.into(),
        }
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_PSEUDONYM_SYSTEM: &str = "urn:fhirvault:pseudonym";
/// Per caller: far above what a person or an integration needs, low enough that one runaway
/// client cannot starve the others.
pub const DEFAULT_RATE_PER_SECOND: u32 = 1000;
pub const DEFAULT_RATE_BURST: u32 = 2000;
/// Entries per batch or transaction: a transaction holds the writer for all of them at once.
pub const DEFAULT_MAX_BUNDLE_ENTRIES: usize = 5000;

impl Config {
    /// Merge flags/environment over the TOML file over the defaults, and check the result.
    pub fn resolve(store: &StoreArgs, serve: &ServeArgs) -> Result<Config, ConfigError> {
        let file = match &store.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new("config", format!("cannot read {}: {e}", path.display()))
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| {
                    ConfigError::new("config", format!("{}: {}", path.display(), e.message()))
                })?
            }
            None => FileConfig::default(),
        };

        let listen_text = serve
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            ConfigError::new(
                "listen",
                format!("`{listen_text}` is not an address like 127.0.0.1:8080"),
            )
        })?;

        let tls = TlsConfig::resolve(file.tls, serve)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base_url = serve
            .base_url
            .clone()
            .or(file.base_url)
            .unwrap_or_else(|| format!("{scheme}://{listen}/fhir"));
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(ConfigError::new(
                "base_url",
                "must be an absolute http(s) URL",
            ));
        }
        let base_url = base_url.trim_end_matches('/').to_string();

        let data_dir = store
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("fhirvault-data"));
        let database = match store.database_url.clone().or(file.database_url) {
            Some(url) => DatabaseUrl::parse(&url)?,
            None => DatabaseUrl::Sqlite(data_dir.join("fhirvault.db")),
        };
        let key_file = store
            .key_file
            .clone()
            .or(file.key_file)
            .unwrap_or_else(|| data_dir.join("keys.json"));
        let fhir_resources = store
            .fhir_resources
            .clone()
            .or(file.fhir_resources)
            .unwrap_or_else(default_fhir_resources_dir);
        if !fhir_resources.join("search-parameters.json").is_file() {
            return Err(ConfigError::new(
                "fhir_resources",
                format!(
                    "{} does not hold the FHIR R4 definitions (search-parameters.json missing)",
                    fhir_resources.display()
                ),
            ));
        }

        let pseudonym_system = file
            .pseudonym_system
            .unwrap_or_else(|| DEFAULT_PSEUDONYM_SYSTEM.to_string());
        if pseudonym_system.is_empty() || pseudonym_system.contains(char::is_whitespace) {
            return Err(ConfigError::new(
                "pseudonym_system",
                "must be a URI without spaces",
            ));
        }
        let max_body_bytes = file.max_body_bytes.unwrap_or(16 * 1024 * 1024);
        let default_page_size = file.default_page_size.unwrap_or(50);
        let max_page_size = file.max_page_size.unwrap_or(1000);
        if default_page_size == 0 || default_page_size > max_page_size {
            return Err(ConfigError::new(
                "default_page_size",
                "must be between 1 and max_page_size",
            ));
        }

        let hl7v2 = Hl7Config::resolve(file.hl7v2, store, serve)?;
        let auth = AuthConfig::resolve(file.auth, &serve.auth, &base_url)?;
        let audit = AuditConfig::resolve(file.audit, &store.audit)?;
        let store_config = StoreConfig::resolve(file.store)?;
        let export = ExportConfig::resolve(file.export)?;

        Ok(Config {
            hl7v2,
            auth,
            tls,
            audit,
            store: store_config,
            export,
            listen,
            base_url,
            data_dir,
            database,
            key_file,
            fhir_resources,
            pseudonym_system,
            insurer_pseudonymised: file.insurer_pseudonymised.unwrap_or(true),
            consent_default: match file.consent_default.as_deref() {
                Some(text) => text
                    .parse()
                    .map_err(|why: String| ConfigError::new("consent_default", why))?,
                None => Default::default(),
            },
            rate_limit_per_second: file
                .rate_limit_per_second
                .unwrap_or(DEFAULT_RATE_PER_SECOND),
            rate_limit_burst: file.rate_limit_burst.unwrap_or(DEFAULT_RATE_BURST),
            max_bundle_entries: file
                .max_bundle_entries
                .unwrap_or(DEFAULT_MAX_BUNDLE_ENTRIES)
                .max(1),
            max_body_bytes,
            default_page_size,
            max_page_size,
        })
    }

    /// A configuration for tests and benchmarks: everything under `dir`, SQLite unless `database` says otherwise.
    pub fn for_dir(dir: &Path, database: Option<DatabaseUrl>) -> Config {
        let base_url = "http://127.0.0.1:8080/fhir";
        Config {
            listen: DEFAULT_LISTEN.parse().expect("constant address"),
            base_url: base_url.to_string(),
            data_dir: dir.to_path_buf(),
            database: database.unwrap_or_else(|| DatabaseUrl::Sqlite(dir.join("fhirvault.db"))),
            key_file: dir.join("keys.json"),
            fhir_resources: default_fhir_resources_dir(),
            pseudonym_system: DEFAULT_PSEUDONYM_SYSTEM.to_string(),
            insurer_pseudonymised: true,
            consent_default: Default::default(),
            rate_limit_per_second: DEFAULT_RATE_PER_SECOND,
            rate_limit_burst: DEFAULT_RATE_BURST,
            max_bundle_entries: DEFAULT_MAX_BUNDLE_ENTRIES,
            max_body_bytes: 16 * 1024 * 1024,
            default_page_size: 50,
            max_page_size: 1000,
            hl7v2: Hl7Config::default(),
            auth: AuthConfig::for_base_url(base_url),
            tls: None,
            audit: AuditConfig::default(),
            store: StoreConfig::default(),
            export: ExportConfig::default(),
        }
    }

    /// Refuses to serve plain text beyond this machine: without TLS, the HTTP and MLLP listen
    /// addresses must be loopback (127.0.0.0/8 or ::1). Checked by `serve` only, so the other
    /// subcommands still run with a serving configuration that lacks TLS.
    pub fn check_transport(&self) -> Result<(), ConfigError> {
        if self.tls.is_some() {
            return Ok(());
        }
        let needs_tls = |setting: &'static str, address: SocketAddr| {
            // `to_canonical` so that ::ffff:127.0.0.1 counts as the loopback address it is.
            if address.ip().to_canonical().is_loopback() {
                Ok(())
            } else {
                Err(ConfigError::new(
                    setting,
                    format!(
                        "{address} is not a loopback address; serving beyond this machine needs TLS (tls.cert_file and tls.key_file, or --tls-cert and --tls-key)"
                    ),
                ))
            }
        };
        needs_tls("listen", self.listen)?;
        match self.hl7v2.mllp_listen {
            Some(address) => needs_tls("mllp_listen", address),
            None => Ok(()),
        }
    }
}

/// `./fhir-resources` when run from a checkout, else the copy next to the crate that built us.
fn default_fhir_resources_dir() -> PathBuf {
    let local = PathBuf::from("fhir-resources");
    if local.join("search-parameters.json").is_file() {
        local
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fhir-resources")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            DatabaseUrl::parse("sqlite:a.db").unwrap(),
            DatabaseUrl::Sqlite("a.db".into())
        );
        assert!(matches!(
            DatabaseUrl::parse("postgres://u@h/db"),
            Ok(DatabaseUrl::Postgres(_))
        ));
        let err = DatabaseUrl::parse("mysql://x").unwrap_err();
        assert_eq!(err.setting, "database_url");
        let redacted = DatabaseUrl::parse("postgres://me:secret@h:5432/db")
            .unwrap()
            .redacted();
        assert_eq!(redacted, "postgres://me:***@h:5432/db");
    }

    #[test]
    fn bad_listen_names_the_setting() {
        let serve = ServeArgs {
            listen: Some("nonsense".into()),
            ..ServeArgs::default()
        };
        let err = Config::resolve(&StoreArgs::default(), &serve).unwrap_err();
        assert_eq!(err.setting, "listen");
    }

    fn resolve_with_toml(toml: &str, auth: AuthArgs) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fhirvault.toml");
        std::fs::write(&path, toml).unwrap();
        let store = StoreArgs {
            config: Some(path),
            ..StoreArgs::default()
        };
        Config::resolve(
            &store,
            &ServeArgs {
                auth,
                ..ServeArgs::default()
            },
        )
    }

    #[test]
    fn auth_defaults_follow_the_base_url() {
        let serve = ServeArgs {
            base_url: Some("https://fhir.example/fhir/".into()),
            ..ServeArgs::default()
        };
        let auth = Config::resolve(&StoreArgs::default(), &serve).unwrap().auth;
        assert_eq!(auth.issuer, "https://fhir.example/fhir");
        assert_eq!(auth.audience, "https://fhir.example/fhir");
        assert!(auth.trust_key_ring && auth.jwks_file.is_none());
        assert_eq!(auth.leeway_seconds, 60);
    }

    #[test]
    fn auth_settings_from_toml_and_flags() {
        let jwks = tempfile::NamedTempFile::new().unwrap();
        let toml = format!(
            "[auth]\nissuer = \"https://idp.example/realms/x\"\naudience = \"file\"\njwks_file = \"{}\"\nleeway_seconds = 5\ntoken_endpoint = \"https://idp.example/token\"\n",
            jwks.path().display()
        );
        let flags = AuthArgs {
            audience: Some("fhirvault".into()),
            ..AuthArgs::default()
        };
        let auth = resolve_with_toml(&toml, flags).unwrap().auth;
        assert_eq!(auth.issuer, "https://idp.example/realms/x");
        assert_eq!(auth.audience, "fhirvault", "flags win over the file");
        assert_eq!(auth.leeway_seconds, 5);
        assert!(
            !auth.trust_key_ring,
            "an identity provider replaces the key ring unless asked"
        );
        assert_eq!(
            auth.token_endpoint.as_deref(),
            Some("https://idp.example/token")
        );
        assert_eq!(auth.role_claim, crate::auth::token::RoleClaim::default());
        let auth = resolve_with_toml(
            "[auth]\nrole_claim = \"realm_access.roles\"\n",
            AuthArgs::default(),
        )
        .unwrap()
        .auth;
        assert_eq!(auth.role_claim.primary(), "realm_access.roles");
    }

    #[test]
    fn bad_auth_settings_name_the_setting() {
        let cases = [
            ("[auth]\nissuer = \"\"\n", "auth.issuer"),
            ("[auth]\naudience = \"a b\"\n", "auth.audience"),
            (
                "[auth]\njwks_file = \"/nonexistent/jwks.json\"\n",
                "auth.jwks_file",
            ),
            ("[auth]\ntrust_key_ring = false\n", "auth.trust_key_ring"),
            ("[auth]\nleeway_seconds = 3600\n", "auth.leeway_seconds"),
            (
                "[auth]\ntoken_endpoint = \"idp/token\"\n",
                "auth.token_endpoint",
            ),
            (
                "[auth]\nrole_claim = \"realm_access..roles\"\n",
                "auth.role_claim",
            ),
            ("[auth]\nrole_claim = \"\"\n", "auth.role_claim"),
            ("[auth]\nunknown = 1\n", "config"),
        ];
        for (toml, setting) in cases {
            let err = resolve_with_toml(toml, AuthArgs::default()).unwrap_err();
            assert_eq!(err.setting, setting, "{toml}: {err}");
        }
    }

    #[test]
    fn audit_settings_from_toml_and_flags() {
        let (_dir, store) = with_file(
            "[audit]\nchains = 8\nretention_days = 30\non_write_failure = \"queue\"\nread_records = \"database\"\n",
        );
        let audit = Config::resolve(&store, &ServeArgs::default())
            .unwrap()
            .audit;
        assert_eq!(
            audit,
            AuditConfig {
                chains: 8,
                retention_days: 30,
                on_write_failure: OnWriteFailure::Queue,
                read_records: ReadRecords::Database,
                enabled: true
            }
        );
        let flags = StoreArgs {
            audit: AuditArgs {
                chains: Some(2),
                ..AuditArgs::default()
            },
            ..store
        };
        assert_eq!(
            Config::resolve(&flags, &ServeArgs::default())
                .unwrap()
                .audit
                .chains,
            2,
            "flags win over the file"
        );
        assert_eq!(
            Config::resolve(&StoreArgs::default(), &ServeArgs::default())
                .unwrap()
                .audit,
            AuditConfig::default()
        );
        for (toml, setting) in [
            ("[audit]\nchains = 0\n", "audit.chains"),
            ("[audit]\nretention_days = 0\n", "audit.retention_days"),
            (
                "[audit]\non_write_failure = \"drop\"\n",
                "audit.on_write_failure",
            ),
            ("[audit]\nread_records = \"memory\"\n", "audit.read_records"),
        ] {
            let (_dir, store) = with_file(toml);
            assert_eq!(
                Config::resolve(&store, &ServeArgs::default())
                    .unwrap_err()
                    .setting,
                setting,
                "{toml}"
            );
        }
    }

    #[test]
    fn statement_timeout_from_toml() {
        assert_eq!(
            Config::resolve(&StoreArgs::default(), &ServeArgs::default())
                .unwrap()
                .store
                .statement_timeout,
            Some(Duration::from_secs(5))
        );
        let (_dir, store) = with_file("[store]\nstatement_timeout_ms = 250\n");
        assert_eq!(
            Config::resolve(&store, &ServeArgs::default())
                .unwrap()
                .store
                .statement_timeout,
            Some(Duration::from_millis(250))
        );
        let (_dir, store) = with_file("[store]\nstatement_timeout_ms = 0\n");
        assert_eq!(
            Config::resolve(&store, &ServeArgs::default())
                .unwrap()
                .store
                .statement_timeout,
            None,
            "0 is off"
        );
        let (_dir, store) = with_file("[store]\nstatement_timeout_ms = 86400000\n");
        assert_eq!(
            Config::resolve(&store, &ServeArgs::default())
                .unwrap_err()
                .setting,
            "store.statement_timeout_ms"
        );
    }

    #[test]
    fn count_timeout_from_toml() {
        let store_of = |toml: &str| {
            let (_dir, args) = with_file(toml);
            Config::resolve(&args, &ServeArgs::default()).map(|c| c.store)
        };
        let limits = |store: StoreConfig| (store.statement_timeout, store.count_timeout);
        let ms = |ms| Some(Duration::from_millis(ms));
        assert_eq!(limits(store_of("").unwrap()), (ms(5000), ms(1000)));
        assert_eq!(
            limits(store_of("[store]\ncount_timeout_ms = 200\n").unwrap()),
            (ms(5000), ms(200))
        );
        assert_eq!(
            limits(store_of("[store]\ncount_timeout_ms = 0\n").unwrap()),
            (ms(5000), None),
            "0: counted up to the statement limit"
        );
        assert_eq!(
            limits(store_of("[store]\nstatement_timeout_ms = 800\n").unwrap()),
            (ms(800), None),
            "the default count limit gives way to a shorter statement limit"
        );
        assert_eq!(
            limits(store_of("[store]\nstatement_timeout_ms = 0\n").unwrap()),
            (None, ms(1000))
        );
        assert_eq!(
            store_of("[store]\nstatement_timeout_ms = 800\ncount_timeout_ms = 800\n")
                .unwrap_err()
                .setting,
            "store.count_timeout_ms"
        );
        assert_eq!(
            store_of("[store]\nstatement_timeout_ms = 0\ncount_timeout_ms = 99999999999\n")
                .unwrap_err()
                .setting,
            "store.count_timeout_ms",
            "PostgreSQL takes no limit that long"
        );
    }

    #[test]
    fn export_settings_from_toml() {
        let (_dir, store) = with_file(
            "[export]\nmax_concurrent_jobs = 4\nexpire_after_seconds = 60\nmax_resources_per_file = 5\n",
        );
        let export = Config::resolve(&store, &ServeArgs::default())
            .unwrap()
            .export;
        assert_eq!(
            export,
            ExportConfig {
                max_concurrent_jobs: 4,
                expire_after: Duration::from_secs(60),
                max_resources_per_file: 5
            }
        );
        assert_eq!(
            Config::resolve(&StoreArgs::default(), &ServeArgs::default())
                .unwrap()
                .export,
            ExportConfig::default()
        );
        for (toml, setting) in [
            (
                "[export]\nmax_concurrent_jobs = 0\n",
                "export.max_concurrent_jobs",
            ),
            (
                "[export]\nexpire_after_seconds = 0\n",
                "export.expire_after_seconds",
            ),
            (
                "[export]\nmax_resources_per_file = 0\n",
                "export.max_resources_per_file",
            ),
            ("[export]\nexpiry = 1\n", "config"),
        ] {
            let (_dir, store) = with_file(toml);
            assert_eq!(
                Config::resolve(&store, &ServeArgs::default())
                    .unwrap_err()
                    .setting,
                setting,
                "{toml}"
            );
        }
    }

    #[test]
    fn bad_hl7_settings_name_the_setting() {
        let serve = ServeArgs {
            mllp_listen: Some("port 2575".into()),
            ..ServeArgs::default()
        };
        assert_eq!(
            Config::resolve(&StoreArgs::default(), &serve)
                .unwrap_err()
                .setting,
            "mllp_listen"
        );
        let store = StoreArgs {
            facility_time_zone: Some("Mars/Olympus".into()),
            ..StoreArgs::default()
        };
        assert_eq!(
            Config::resolve(&store, &ServeArgs::default())
                .unwrap_err()
                .setting,
            "facility_time_zone"
        );
    }

    fn tls_args() -> ServeArgs {
        ServeArgs {
            tls_cert: Some("cert.pem".into()),
            tls_key: Some("key.pem".into()),
            ..ServeArgs::default()
        }
    }

    fn with_file(toml: &str) -> (tempfile::TempDir, StoreArgs) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fhirvault.toml");
        std::fs::write(&path, toml).unwrap();
        (
            dir,
            StoreArgs {
                config: Some(path),
                ..StoreArgs::default()
            },
        )
    }

    #[test]
    fn plain_text_is_served_on_loopback_only() {
        for listen in [
            "127.0.0.1:8080",
            "127.8.9.10:80",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:8080",
        ] {
            let serve = ServeArgs {
                listen: Some(listen.into()),
                ..ServeArgs::default()
            };
            let config = Config::resolve(&StoreArgs::default(), &serve).unwrap();
            assert!(config.check_transport().is_ok(), "{listen}");
        }
        for listen in ["0.0.0.0:8080", "[::]:8080", "10.1.2.3:8080"] {
            let serve = ServeArgs {
                listen: Some(listen.into()),
                ..ServeArgs::default()
            };
            let error = Config::resolve(&StoreArgs::default(), &serve)
                .unwrap()
                .check_transport()
                .unwrap_err();
            assert_eq!(error.setting, "listen", "{listen}");
            assert!(error.message.contains("needs TLS"), "{error}");
        }
        let serve = ServeArgs {
            mllp_listen: Some("0.0.0.0:2575".into()),
            ..ServeArgs::default()
        };
        let error = Config::resolve(&StoreArgs::default(), &serve)
            .unwrap()
            .check_transport()
            .unwrap_err();
        assert_eq!(error.setting, "mllp_listen");
        // With TLS, any address.
        let serve = ServeArgs {
            listen: Some("0.0.0.0:8443".into()),
            mllp_listen: Some("0.0.0.0:2575".into()),
            ..tls_args()
        };
        assert!(
            Config::resolve(&StoreArgs::default(), &serve)
                .unwrap()
                .check_transport()
                .is_ok()
        );
    }

    #[test]
    fn tls_makes_the_default_base_url_https() {
        let config = Config::resolve(&StoreArgs::default(), &tls_args()).unwrap();
        assert_eq!(config.base_url, "https://127.0.0.1:8080/fhir");
        let tls = config.tls.unwrap();
        assert_eq!(
            (tls.cert_file, tls.key_file),
            (PathBuf::from("cert.pem"), PathBuf::from("key.pem"))
        );
        let config = Config::resolve(&StoreArgs::default(), &ServeArgs::default()).unwrap();
        assert_eq!(config.base_url, "http://127.0.0.1:8080/fhir");
        assert!(config.tls.is_none());
    }

    #[test]
    fn tls_settings_come_from_the_file_and_flags_win() {
        let (_dir, store) = with_file(
            r#"
            [tls]
            cert_file = "file-cert.pem"
            key_file = "file-key.pem"
            client_ca_file = "hubs-ca.pem"
            client_crl_files = ["hubs-ca.crl"]
            [[tls.hubs]]
            name = "hub-vienna-1"
            subject = "hub-vienna-1.devices.example"
            org = "Organization/org-a"
            "#,
        );
        let tls = Config::resolve(&store, &ServeArgs::default())
            .unwrap()
            .tls
            .unwrap();
        assert_eq!(tls.client_ca_file, Some(PathBuf::from("hubs-ca.pem")));
        assert_eq!(tls.client_crl_files, [PathBuf::from("hubs-ca.crl")]);
        assert_eq!(
            tls.hubs,
            vec![HubConfig {
                name: "hub-vienna-1".into(),
                subject: "hub-vienna-1.devices.example".into(),
                org: Some("Organization/org-a".into())
            }]
        );
        let tls = Config::resolve(&store, &tls_args()).unwrap().tls.unwrap();
        assert_eq!(tls.cert_file, PathBuf::from("cert.pem"));
    }

    #[test]
    fn incomplete_tls_settings_name_the_setting() {
        let resolve = |serve: ServeArgs| {
            Config::resolve(&StoreArgs::default(), &serve)
                .unwrap_err()
                .setting
        };
        assert_eq!(
            resolve(ServeArgs {
                tls_key: None,
                ..tls_args()
            }),
            "tls.key_file"
        );
        assert_eq!(
            resolve(ServeArgs {
                tls_cert: None,
                ..tls_args()
            }),
            "tls.cert_file"
        );
        assert_eq!(
            resolve(ServeArgs {
                tls_client_ca: Some("ca.pem".into()),
                ..ServeArgs::default()
            }),
            "tls.client_ca_file"
        );
        let (_dir, store) = with_file("[[tls.hubs]]\nname = \"h\"\nsubject = \"h.example\"\n");
        assert_eq!(
            Config::resolve(&store, &tls_args()).unwrap_err().setting,
            "tls.hubs"
        );
        let (_dir, store) = with_file("[tls]\nclient_crl_files = [\"ca.crl\"]\n");
        assert_eq!(
            Config::resolve(&store, &tls_args()).unwrap_err().setting,
            "tls.client_crl_files"
        );
    }

    #[test]
    fn bad_hubs_are_refused() {
        let hub = |name: &str, subject: &str, org: Option<&str>| HubConfig {
            name: name.into(),
            subject: subject.into(),
            org: org.map(Into::into),
        };
        assert!(
            check_hubs(&[
                hub("a", "a.example", Some("Organization/x")),
                hub("b", "B.example", None)
            ])
            .is_ok()
        );
        for (hubs, text) in [
            (vec![hub("a", "*.example", None)], "not a DNS name"),
            (vec![hub("a", "a b.example", None)], "not a DNS name"),
            (vec![hub("", "a.example", None)], "needs a name"),
            (
                vec![hub("a", "a.example", Some("Patient/x"))],
                "org must be",
            ),
            (
                vec![hub("a", "a.example", Some("Organization/"))],
                "org must be",
            ),
            (
                vec![hub("a", "a.example", None), hub("a", "b.example", None)],
                "used twice",
            ),
            (
                vec![hub("a", "a.example", None), hub("b", "A.EXAMPLE", None)],
                "used by two hubs",
            ),
        ] {
            let error = check_hubs(&hubs).unwrap_err();
            assert_eq!(error.setting, "tls.hubs");
            assert!(error.message.contains(text), "{error} should say {text}");
        }
    }
}
