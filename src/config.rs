//! Typed configuration: command-line flags and `FHIRVAULT_*` environment variables (clap reads
//! both), over an optional TOML file (`--config`), over defaults that start a working server on a
//! fresh machine. Everything is checked once at start-up; a bad setting stops the process with a
//! message that names the setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    max_body_bytes: Option<usize>,
    default_page_size: Option<usize>,
    max_page_size: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

impl DatabaseUrl {
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        if let Some(path) = value.strip_prefix("sqlite://").or_else(|| value.strip_prefix("sqlite:")) {
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err(ConfigError::new("database_url", "sqlite: needs a file path, e.g. sqlite:./fhirvault-data/fhirvault.db"));
            }
            Ok(DatabaseUrl::Sqlite(PathBuf::from(path)))
        } else if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            Ok(DatabaseUrl::Postgres(value.to_string()))
        } else {
            Err(ConfigError::new("database_url", "must start with sqlite: or postgres://"))
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
    pub max_body_bytes: usize,
    pub default_page_size: usize,
    pub max_page_size: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("configuration setting `{setting}`: {message}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub message: String,
}

impl ConfigError {
    fn new(setting: &'static str, message: impl Into<String>) -> Self {
        ConfigError { setting, message: message.into() }
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_PSEUDONYM_SYSTEM: &str = "urn:fhirvault:pseudonym";

impl Config {
    /// Merge flags/environment over the TOML file over the defaults, and check the result.
    pub fn resolve(store: &StoreArgs, serve: &ServeArgs) -> Result<Config, ConfigError> {
        let file = match &store.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::new("config", format!("cannot read {}: {e}", path.display())))?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| ConfigError::new("config", format!("{}: {}", path.display(), e.message())))?
            }
            None => FileConfig::default(),
        };

        let listen_text = serve.listen.clone().or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen: SocketAddr = listen_text
            .parse()
            .map_err(|_| ConfigError::new("listen", format!("`{listen_text}` is not an address like 127.0.0.1:8080")))?;

        let base_url = serve
            .base_url
            .clone()
            .or(file.base_url)
            .unwrap_or_else(|| format!("http://{listen}/fhir"));
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(ConfigError::new("base_url", "must be an absolute http(s) URL"));
        }
        let base_url = base_url.trim_end_matches('/').to_string();

        let data_dir = store.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from("fhirvault-data"));
        let database = match store.database_url.clone().or(file.database_url) {
            Some(url) => DatabaseUrl::parse(&url)?,
            None => DatabaseUrl::Sqlite(data_dir.join("fhirvault.db")),
        };
        let key_file = store.key_file.clone().or(file.key_file).unwrap_or_else(|| data_dir.join("keys.json"));
        let fhir_resources = store
            .fhir_resources
            .clone()
            .or(file.fhir_resources)
            .unwrap_or_else(default_fhir_resources_dir);
        if !fhir_resources.join("search-parameters.json").is_file() {
            return Err(ConfigError::new(
                "fhir_resources",
                format!("{} does not hold the FHIR R4 definitions (search-parameters.json missing)", fhir_resources.display()),
            ));
        }

        let pseudonym_system = file.pseudonym_system.unwrap_or_else(|| DEFAULT_PSEUDONYM_SYSTEM.to_string());
        if pseudonym_system.is_empty() || pseudonym_system.contains(char::is_whitespace) {
            return Err(ConfigError::new("pseudonym_system", "must be a URI without spaces"));
        }
        let max_body_bytes = file.max_body_bytes.unwrap_or(16 * 1024 * 1024);
        let default_page_size = file.default_page_size.unwrap_or(50);
        let max_page_size = file.max_page_size.unwrap_or(1000);
        if default_page_size == 0 || default_page_size > max_page_size {
            return Err(ConfigError::new("default_page_size", "must be between 1 and max_page_size"));
        }

        Ok(Config {
            listen,
            base_url,
            data_dir,
            database,
            key_file,
            fhir_resources,
            pseudonym_system,
            max_body_bytes,
            default_page_size,
            max_page_size,
        })
    }

    /// A configuration for tests and benchmarks: everything under `dir`, SQLite unless `database` says otherwise.
    pub fn for_dir(dir: &Path, database: Option<DatabaseUrl>) -> Config {
        Config {
            listen: DEFAULT_LISTEN.parse().expect("constant address"),
            base_url: "http://127.0.0.1:8080/fhir".to_string(),
            data_dir: dir.to_path_buf(),
            database: database.unwrap_or_else(|| DatabaseUrl::Sqlite(dir.join("fhirvault.db"))),
            key_file: dir.join("keys.json"),
            fhir_resources: default_fhir_resources_dir(),
            pseudonym_system: DEFAULT_PSEUDONYM_SYSTEM.to_string(),
            max_body_bytes: 16 * 1024 * 1024,
            default_page_size: 50,
            max_page_size: 1000,
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
        assert_eq!(DatabaseUrl::parse("sqlite:a.db").unwrap(), DatabaseUrl::Sqlite("a.db".into()));
        assert!(matches!(DatabaseUrl::parse("postgres://u@h/db"), Ok(DatabaseUrl::Postgres(_))));
        let err = DatabaseUrl::parse("mysql://x").unwrap_err();
        assert_eq!(err.setting, "database_url");
        let redacted = DatabaseUrl::parse("postgres://me:secret@h:5432/db").unwrap().redacted();
        assert_eq!(redacted, "postgres://me:***@h:5432/db");
    }

    #[test]
    fn bad_listen_names_the_setting() {
        let serve = ServeArgs { listen: Some("nonsense".into()), base_url: None };
        let err = Config::resolve(&StoreArgs::default(), &serve).unwrap_err();
        assert_eq!(err.setting, "listen");
    }
}
