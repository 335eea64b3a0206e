//! Start-up and serving, shared by `fhirvault serve`, the tests and the benchmarks.
//!
//! [`open_service`] loads the key ring (creating it on first start), the FHIR definitions and the
//! store, and migrates the schema once. [`serve`] takes an already bound listener and a shutdown
//! future (mini-redis's `server::run`), so tests can bind port 0; [`serve_listeners`] adds the
//! MLLP listener and TLS. [`http`] is the HTTP accept loop.

pub mod http;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio::net::TcpListener;

use crate::api::{AppState, router};
use crate::config::Config;
use crate::crypto::KeyRing;
use crate::fhir::capability::capability_statement;
use crate::fhir::validation::Validator;
use crate::hl7v2::ingest::Ingestor;
use crate::search::code_systems::ImpliedSystems;
use crate::search::known_displays::KnownDisplays;
use crate::search::registry::SearchParamRegistry;
use crate::search::sensitivity::ParamDatatypes;
use crate::service::Service;
use crate::service::keys::SharedKeys;
use crate::store::Store;
use crate::tls::{Acceptor, ServerTls};

/// The spec definitions, loaded once per folder per process (they are large and immutable).
type Definitions = (Arc<Validator>, Arc<SearchParamRegistry>);
static DEFINITIONS: Mutex<Option<HashMap<PathBuf, Definitions>>> = Mutex::new(None);

pub fn load_definitions(dir: &Path) -> anyhow::Result<Definitions> {
    let mut cache = DEFINITIONS
        .lock()
        .map_err(|_| anyhow::anyhow!("definitions cache poisoned"))?;
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(found) = cache.get(dir) {
        return Ok(found.clone());
    }
    let profiles = profiles_dir(dir);
    let validator = Validator::load_with_profiles(dir, Some(&profiles)).with_context(|| {
        format!(
            "loading FHIR definitions from {} and profiles from {}",
            dir.display(),
            profiles.display()
        )
    })?;
    let mut registry = SearchParamRegistry::load(
        &dir.join("search-parameters.json"),
        &dir.join("compartmentdefinition-patient.json"),
    )
    .with_context(|| format!("loading search parameters from {}", dir.display()))?;
    let schema: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("fhir.schema.json"))?)?;
    registry.datatypes =
        ParamDatatypes::from_schema(&schema, &registry, validator.resource_types());
    registry.implied_systems = ImpliedSystems::from_bindings(
        &registry,
        validator.resource_types(),
        |resource_type, steps| validator.required_code_system(resource_type, steps),
    );
    let codes = crate::hl7v2::codes::CodeTable::shared()
        .map_err(|e| anyhow::anyhow!("the Holter code tables: {e}"))?;
    // The displays the server writes itself: HL7 v2 mapping and AuditEvents.
    let audit = crate::audit::record::displayed_codings()
        .into_iter()
        .map(|(system, code, display)| (system.into(), code.into(), display.into()));
    registry.known_displays = KnownDisplays::from_codings(
        crate::hl7v2::map::displayed_codings(codes)
            .into_iter()
            .chain(audit)
            .collect::<Vec<(String, String, String)>>(),
    );
    let loaded = (Arc::new(validator), Arc::new(registry));
    cache.insert(dir.to_path_buf(), loaded.clone());
    Ok(loaded)
}

/// This project's profiles: the `profiles` folder next to the definitions folder (a checkout's
/// `profiles/` beside `fhir-resources/`). Without one, no profiles are loaded.
pub fn profiles_dir(definitions: &Path) -> PathBuf {
    definitions
        .parent()
        .unwrap_or(Path::new(""))
        .join("profiles")
}

/// Environment variable that may carry the key file's content, base64-encoded, for deployments
/// where mounting a 0600 file is awkward. It wins over the key file.
pub const KEY_RING_VARIABLE: &str = "FHIRVAULT_KEY_RING";

/// The key ring in [`KEY_RING_VARIABLE`], if that is set.
pub fn key_ring_from_environment() -> anyhow::Result<Option<KeyRing>> {
    match std::env::var(KEY_RING_VARIABLE)
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        Some(encoded) => Ok(Some(
            KeyRing::from_env_base64(&encoded)
                .with_context(|| format!("reading {KEY_RING_VARIABLE}"))?,
        )),
        None => Ok(None),
    }
}

/// Open everything the server needs, from `config`. `keys` overrides the key file (tests).
pub async fn open_service(config: Config, keys: Option<KeyRing>) -> anyhow::Result<Service> {
    let (keys, key_path) = match (keys, key_ring_from_environment()?) {
        (Some(ring), _) => (ring, None),
        (None, Some(ring)) => {
            tracing::info!("key ring taken from {KEY_RING_VARIABLE}; no key file is used");
            (ring, None)
        }
        (None, None) => {
            let (ring, created) =
                KeyRing::load_or_create(&config.key_file).context("opening the key ring")?;
            if created {
                tracing::warn!(path = %config.key_file.display(), "created a new key ring; back this file up: without it the data cannot be read");
            }
            (ring, Some(config.key_file.clone()))
        }
    };
    let (validator, registry) = load_definitions(&config.fhir_resources)?;
    let store = Store::open_with(&config.database, config.store.statement_timeout)
        .await
        .with_context(|| format!("opening {}", config.database.redacted()))?;
    store
        .migrate()
        .await
        .context("migrating the database schema")?;
    crate::audit::chain::ensure_chains(&store, config.audit.chains)
        .await
        .map_err(|e| anyhow::anyhow!("creating the audit chains: {e}"))?;
    let committer = crate::service::group_commit::GroupCommitter::start(
        store.writer_pool(),
        store.backend(),
        config.audit.chains,
    )
    .context("starting the writer thread")?;
    let verifier = crate::auth::token::TokenVerifier::from_config(&config.auth, &keys)?;
    let purposes = crate::auth::consent::PurposesOfUse::load(&config.fhir_resources)?;
    let service = Service {
        config: Arc::new(config),
        store,
        keys: SharedKeys::new(keys, key_path),
        validator,
        registry,
        committer,
        clock: crate::service::write_clock::WriteClock::new(),
        verifier: Arc::new(verifier),
        purposes: Arc::new(purposes),
        exports: Arc::default(),
        read_plans: Arc::default(),
        read_journal: Arc::default(),
    };
    service
        .fill_missing_consent_rules()
        .await
        .map_err(|e| anyhow::anyhow!("writing the rules of stored Consents: {e}"))?;
    service
        .fill_implied_code_systems()
        .await
        .map_err(|e| anyhow::anyhow!("upgrading the index rows of code elements: {e}"))?;
    Ok(service)
}

/// The axum application for `service`.
pub fn app(service: Service, ingestor: Ingestor) -> axum::Router {
    let capability = capability_statement(
        &service.config.base_url,
        service.validator.resource_types(),
        &service.registry,
        &service.validator.supported_profiles(),
        env!("CARGO_PKG_VERSION"),
        crate::api::smart::rest_security(&service.config),
    );
    let rate_limiter = Arc::new(crate::api::rate_limit::RateLimiter::new(
        service.config.rate_limit_per_second,
        service.config.rate_limit_burst,
    ));
    router(AppState {
        service,
        capability: Arc::new(capability),
        ingestor,
        rate_limiter,
        token_cache: Arc::default(),
    })
}

/// The listeners of one server, already bound.
pub struct Listeners {
    pub http: TcpListener,
    /// HL7 v2 over MLLP; `None` leaves MLLP off.
    pub mllp: Option<TcpListener>,
    /// TLS for both listeners ([`ServerTls::load`]); `None` serves plain text. The library
    /// serves what it is given; `fhirvault serve` allows plain text on loopback only.
    pub tls: Option<ServerTls>,
}

/// Serve plain HTTP until `shutdown` completes, then finish in-flight requests and close the store.
pub async fn serve(
    listener: TcpListener,
    service: Service,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_mllp(listener, None, service, shutdown).await
}

/// Start the read journal when configured (once per service: a service served again keeps it).
async fn start_read_journal(service: &Service) -> std::io::Result<()> {
    let wanted = service.config.audit.enabled
        && service.config.audit.read_records == crate::config::ReadRecords::Journal;
    if wanted && service.read_journal().is_none() {
        let drained = crate::audit::journal::last_drained(service)
            .await
            .map_err(|error| {
                std::io::Error::other(format!(
                    "reading where the audit journal drain got to: {error}"
                ))
            })?;
        crate::audit::journal::report_missing_newest(service, drained.as_ref())
            .await
            .map_err(|error| {
                std::io::Error::other(format!(
                    "checking the audit journal's newest segment: {error}"
                ))
            })?;
        let journal = crate::audit::journal::ReadJournal::start(
            &service.config.data_dir,
            service.keys.clone(),
            drained,
            crate::audit::journal::Registrar::spawn(service),
        )
        .map_err(|error| {
            std::io::Error::other(format!(
                "the audit journal under {} (audit.read_records = journal): {error}",
                service.config.data_dir.display()
            ))
        })?;
        if service.read_journal.set(journal).is_ok() {
            tracing::info!("the AuditEvents of reads are journaled (audit.read_records = journal)");
        }
    }
    Ok(())
}

/// Serve plain HTTP, and plain MLLP when `mllp` is given, until `shutdown` completes.
pub async fn serve_with_mllp(
    listener: TcpListener,
    mllp: Option<TcpListener>,
    service: Service,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_listeners(
        Listeners {
            http: listener,
            mllp,
            tls: None,
        },
        service,
        shutdown,
    )
    .await
}

/// Serve HTTP, and MLLP when configured, over TLS when configured, until `shutdown` completes;
/// both finish what is in flight (an MLLP message being stored still gets its ACK) before the
/// store is closed. Every request carries a [`crate::tls::Peer`] in its extensions.
pub async fn serve_listeners(
    listeners: Listeners,
    service: Service,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Listeners {
        http: listener,
        mllp,
        tls,
    } = listeners;
    let ingestor = Ingestor::new(service.clone()).map_err(std::io::Error::other)?;
    // Export jobs a stop interrupted get an answer (failed), not a status that never ends.
    service
        .fail_interrupted_exports()
        .await
        .map_err(std::io::Error::other)?;
    // Before any task is spawned: a journal that cannot start stops the server here.
    start_read_journal(&service).await?;
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let keys = service.keys.clone();
    let watcher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::watch::RECHECK);
        loop {
            tick.tick().await;
            keys.reload_if_changed();
        }
    });
    // AuditEvents queued while the database refused them go into the chain once it takes them.
    let spool_drain = crate::audit::spool::spawn_drain(service.clone());
    // Reads journaled by an earlier run, and by this one, go into the chain.
    let journal_drain = crate::audit::journal::spawn_drain(service.clone());
    // Expired export jobs are removed.
    let export_sweeper = service.spawn_export_sweeper();
    let exports = service.exports.clone();
    let store = service.store.clone();
    // Revocation lists are looked at while no handshake asks, and close refused connections.
    let revocations = tls.as_ref().map(ServerTls::follow_revocation_lists);
    let mllp_task = mllp.map(|listener| {
        let (tls, ingestor, shutdown) = (tls.clone(), ingestor.clone(), shutdown.clone());
        tokio::spawn(async move {
            crate::hl7v2::transport::serve_mllp(listener, tls.as_ref(), ingestor, shutdown).await
        })
    });
    let acceptor = tls
        .as_ref()
        .map_or_else(Acceptor::plain, ServerTls::http_acceptor);
    let result = http::serve(listener, acceptor, app(service.clone(), ingestor), shutdown).await;
    if let Some(task) = mllp_task {
        match task.await {
            Ok(Err(error)) => tracing::error!(%error, "the MLLP listener failed"),
            Err(error) => tracing::error!(%error, "the MLLP listener panicked"),
            Ok(Ok(())) => {}
        }
    }
    watcher.abort();
    if let Some(revocations) = revocations {
        revocations.abort();
    }
    spool_drain.abort();
    journal_drain.abort();
    // What the journal holds goes into the chain before the store closes (a crash instead
    // leaves it for the next start).
    if let Err(error) = service.flush_read_journal().await {
        tracing::error!(%error, "the audit journal could not be drained at shutdown; it is drained at the next start");
    }
    export_sweeper.abort();
    exports.abort_all();
    store.close().await;
    result
}
