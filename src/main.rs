//! The `fhirvault` command line: `serve`, `keys` (init, status, rotate), `import`, `ingest`,
//! `reindex`, `hl7 dead-letters` (list, replay), `token issue` and `audit` (verify, prune).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use fhirvault::audit::retention::{default_cutoff, parse_cutoff, prune};
use fhirvault::audit::verify::verify;
use fhirvault::auth::token::{IssueRequest, TokenIssuer, default_scope, parse_ttl};
use fhirvault::config::{Config, ServeArgs, StoreArgs};
use fhirvault::crypto::{Aad, KeyRing};
use fhirvault::fhir::instant::{format_instant, now_micros};
use fhirvault::hl7v2::files::{IngestSummary, dead_letter_lines, ingest_file};
use fhirvault::hl7v2::ingest::{Disposition, Ingestor};
use fhirvault::import::{BATCH_SIZE, ImportSummary, resources_in};
use fhirvault::store::{Store, keys as key_rows};

#[derive(Parser)]
#[command(
    name = "fhirvault",
    version,
    about = "FHIR R4 server with encrypted storage"
)]
struct Cli {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the FHIR server.
    Serve(ServeArgs),
    /// Manage the key ring.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Load NDJSON or Bundle files through the server's write path.
    Import {
        /// Files to import.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The settings `serve` runs with: AuditEvents name its base URL, and Consent rules
        /// resolve references against it.
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Ingest HL7 v2 message files and batch files (FHS/BHS … BTS/FTS) as MLLP would.
    Ingest {
        /// Files holding one or more messages.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The settings `serve` runs with (its base URL, in the AuditEvents).
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Compute the search index rows of every live resource again (after an upgrade changed
    /// the indexing rules); safe while the server runs.
    Reindex(ReindexArgs),
    /// HL7 v2 operations.
    #[command(subcommand)]
    Hl7(Hl7Command),
    /// Bearer tokens signed by the key ring, for deployments without an identity provider.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The hash-chained audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Args)]
struct ReindexArgs {
    /// Only these resource types (repeat the flag, or separate them with commas). Default:
    /// every type that has live resources.
    #[arg(long = "type", value_name = "TYPE", value_delimiter = ',')]
    types: Vec<String>,
    /// The settings `serve` runs with: Consent rules resolve references against its base URL.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check every hash chain from its anchor; prints each chain's head hash (keep them
    /// somewhere else) and exits with status 1 when a chain is broken.
    Verify,
    /// Export the AuditEvents recorded before the cutoff to a new NDJSON file, then remove them
    /// (each chain's unbroken prefix only); the prune itself is audited.
    Prune {
        /// The NDJSON file to create (mode 0600); it must not exist yet.
        #[arg(long)]
        export: PathBuf,
        /// Cutoff instant (2020-01-01T00:00:00Z or 2020-01-01). Default: now minus
        /// audit.retention_days.
        #[arg(long, value_parser = parse_cutoff)]
        before: Option<i64>,
        /// The settings `serve` runs with (its base URL, in the AuditEvent of the prune).
        #[command(flatten)]
        serve: Box<ServeArgs>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a token signed by the key ring (stdout: the token and nothing else). Give it the
    /// same settings as `serve` (config file, base URL, auth flags), so that its issuer and
    /// audience are the ones the server expects.
    Issue(IssueArgs),
}

#[derive(Args)]
struct IssueArgs {
    /// The role claim, e.g. admin.
    #[arg(long)]
    role: String,
    /// Space-separated SMART scopes. Default: `user/*.cruds` for admin; other roles must name them.
    #[arg(long)]
    scope: Option<String>,
    /// The patient claim: the Patient id a patient-level token is about.
    #[arg(long)]
    patient: Option<String>,
    /// The org claim: the Organization id the bearer acts for.
    #[arg(long)]
    org: Option<String>,
    /// The sub claim. Default: fhirvault-cli/ROLE.
    #[arg(long)]
    subject: Option<String>,
    /// The purpose claim: a v3 PurposeOfUse code the token is limited to (e.g. HPAYMT).
    #[arg(long)]
    purpose: Option<String>,
    /// How long the token is valid: 90s, 15m, 1h, 7d (at most 30d).
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: std::time::Duration,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Hl7Command {
    /// Messages that were not stored (unparseable, unmappable, rejected), kept for a replay.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(DeadLetterCommand),
}

#[derive(Subcommand)]
enum DeadLetterCommand {
    /// List dead letters (open ones unless --all).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Ingest a dead letter again (after a mapping or configuration fix).
    Replay {
        id: String,
        /// The settings `serve` runs with (its base URL, in the AuditEvents).
        #[command(flatten)]
        serve: Box<ServeArgs>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create the key file if it does not exist.
    Init,
    /// Show the key ids and how many stored rows each protects.
    Status,
    /// Add a new key, make it active, and re-encrypt every row under it (the server keeps serving).
    Rotate,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FHIRVAULT_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(serve_args) => serve(Config::resolve(&cli.store, &serve_args)?).await,
        Command::Keys(command) => {
            keys(Config::resolve(&cli.store, &ServeArgs::default())?, command).await
        }
        Command::Import { files, serve } => {
            import(Config::resolve(&cli.store, &serve)?, files).await
        }
        Command::Ingest { files, serve } => {
            ingest(Config::resolve(&cli.store, &serve)?, files).await
        }
        Command::Reindex(args) => {
            reindex(Config::resolve(&cli.store, &args.serve)?, args.types).await
        }
        Command::Hl7(Hl7Command::DeadLetters(command)) => {
            let serve = match &command {
                DeadLetterCommand::Replay { serve, .. } => (**serve).clone(),
                DeadLetterCommand::List { .. } => ServeArgs::default(),
            };
            dead_letters(Config::resolve(&cli.store, &serve)?, command).await
        }
        Command::Token(TokenCommand::Issue(args)) => {
            issue_token(Config::resolve(&cli.store, &args.serve)?, args)
        }
        Command::Audit(AuditCommand::Verify) => {
            verify_audit(Config::resolve(&cli.store, &ServeArgs::default())?).await
        }
        Command::Audit(AuditCommand::Prune {
            export,
            before,
            serve,
        }) => prune_audit(Config::resolve(&cli.store, &serve)?, export, before).await,
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Both before the database is opened, so a bad transport setting stops start-up at once.
    config.check_transport()?;
    let tls = fhirvault::tls::ServerTls::load(config.tls.as_ref())?;
    let listen = config.listen;
    let base_url = config.base_url.clone();
    let backend = config.database.redacted();
    let mllp_listen = config.hl7v2.mllp_listen;
    // A key file that appears during start-up was just created: tell the operator how to get in.
    let first_start = config.auth.trust_key_ring && !config.key_file.exists();
    let key_file = config.key_file.clone();
    let service = fhirvault::server::open_service(config, None).await?;
    if first_start && key_file.exists() {
        tracing::info!(
            "get an admin token with `fhirvault token issue --role admin` (same settings as serve)"
        );
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let mllp = match mllp_listen {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for MLLP on {address}"))?;
            tracing::info!(%address, "accepting HL7 v2 over MLLP");
            Some(listener)
        }
        None => None,
    };
    match &tls {
        None => {
            tracing::warn!("plain HTTP and MLLP without TLS, on loopback: for development only")
        }
        Some(tls) if mllp.is_some() && !tls.client_auth() => tracing::warn!(
            "MLLP over TLS without client certificates: anyone who reaches the port can send messages (set tls.client_ca_file and tls.hubs)"
        ),
        Some(_) => {}
    }
    let tls_on = tls.is_some();
    tracing::info!(%listen, %base_url, tls = tls_on, database = %backend, "fhirvault is serving FHIR R4");
    let listeners = fhirvault::server::Listeners {
        http: listener,
        mllp,
        tls,
    };
    fhirvault::server::serve_listeners(listeners, service, shutdown_signal()).await?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// `token issue`: the key ring as `serve` opens it (FHIRVAULT_KEY_RING, else the key file, created
/// or given a signing key if needed), then one signed token on stdout.
fn issue_token(config: Config, args: IssueArgs) -> anyhow::Result<()> {
    if args.role.is_empty() || args.role.contains(char::is_whitespace) {
        anyhow::bail!("--role must be one word, e.g. admin");
    }
    let scope = match args
        .scope
        .or_else(|| default_scope(&args.role).map(str::to_string))
    {
        Some(scope) => scope,
        None => anyhow::bail!(
            "--scope is required for role `{}` (e.g. --scope \"patient/*.rs\"); only admin has a default",
            args.role
        ),
    };
    let ring = match fhirvault::server::key_ring_from_environment()? {
        Some(ring) => ring,
        None => {
            KeyRing::load_or_create(&config.key_file)
                .context("opening the key ring")?
                .0
        }
    };
    let issuer = TokenIssuer::from_config(&config.auth, &ring)?;
    let request = IssueRequest {
        role: args.role,
        scope,
        patient: args.patient,
        org: args.org,
        subject: args.subject,
        purpose: args.purpose,
        ttl: args.ttl,
    };
    println!("{}", issuer.issue(&request)?);
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

async fn keys(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Init => {
            let (_, created) = KeyRing::load_or_create(&config.key_file)?;
            println!(
                "{} {}",
                if created {
                    "created"
                } else {
                    "already present:"
                },
                config.key_file.display()
            );
        }
        KeysCommand::Status => {
            let ring = KeyRing::load(&config.key_file)?;
            let store = Store::open(&config.database).await?;
            store.migrate().await?;
            let counts = key_rows::rows_per_key(&mut *store.reader().await?).await?;
            println!("key file: {}", config.key_file.display());
            for id in ring.key_ids() {
                let rows = counts
                    .iter()
                    .find(|(k, _)| *k == i64::from(id))
                    .map_or(0, |(_, n)| *n);
                let active = if id == ring.active_key_id() {
                    " (active)"
                } else {
                    ""
                };
                println!("key {id}{active}: {rows} rows");
            }
            for (id, rows) in counts
                .iter()
                .filter(|(k, _)| !ring.key_ids().contains(&(*k as u32)))
            {
                println!("key {id} (MISSING from the key file): {rows} rows");
            }
        }
        KeysCommand::Rotate => rotate(config).await?,
    }
    Ok(())
}

/// Add a key, then re-seal every row under it in small transactions, so the server (which
/// re-reads the key file when it changes) keeps serving throughout.
async fn rotate(config: Config) -> anyhow::Result<()> {
    let mut ring = KeyRing::load(&config.key_file)?;
    let new_key = ring.rotate(&config.key_file)?;
    println!("key {new_key} is now active; re-encrypting stored rows");
    let store = Store::open(&config.database).await?;
    store.migrate().await?;
    let mut moved = reseal_all(&store, &ring, new_key).await?;
    // A running server picks up the new key within its reload interval (5 s); rows it sealed with
    // the old key until then are caught by a second sweep.
    if moved > 0 {
        tokio::time::sleep(std::time::Duration::from_secs(6)).await;
        moved += reseal_all(&store, &ring, new_key).await?;
    }
    println!("re-encrypted {moved} rows under key {new_key}");
    Ok(())
}

/// Re-seal every row not under `key`, in batches of one transaction each.
async fn reseal_all(
    store: &Store,
    ring: &KeyRing,
    key: fhirvault::crypto::KeyId,
) -> anyhow::Result<u64> {
    let active = i64::from(key);
    let (mut moved, mut after) = (0_u64, 0_i64);
    loop {
        let batch =
            key_rows::rows_not_under(&mut *store.reader().await?, active, after, 500).await?;
        if batch.is_empty() {
            return Ok(moved);
        }
        let mut tx = store.begin().await?;
        for row in &batch {
            let aad = Aad::Resource {
                resource_type: &row.resource_type,
                id: &row.id,
                version: row.version,
            };
            let plain = ring.open(&aad, &row.ciphertext)?;
            let sealed = ring.seal(&aad, &plain)?;
            if key_rows::rewrap(&mut tx, row.seq, row.key_id, active, sealed).await? {
                moved += 1;
            }
        }
        tx.commit().await?;
        after = batch.last().map_or(after, |row| row.seq);
    }
}

async fn import(config: Config, files: Vec<PathBuf>) -> anyhow::Result<()> {
    let service = fhirvault::server::open_service(config, None).await?;
    let mut total = ImportSummary::default();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let resources = resources_in(&text);
        let progress = progress_bar(resources.len() as u64, file.display().to_string());
        let mut resources = resources.into_iter();
        loop {
            let batch: Vec<_> = resources.by_ref().take(BATCH_SIZE).collect();
            if batch.is_empty() {
                break;
            }
            let count = batch.len() as u64;
            let (summary, rejections) = service
                .import_batch(batch)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            for rejection in rejections {
                progress.suspend(|| {
                    eprintln!(
                        "{}: {}: {}",
                        file.display(),
                        rejection.position,
                        rejection.reason
                    )
                });
            }
            total.stored += summary.stored;
            total.rejected += summary.rejected;
            progress.inc(count);
        }
        progress.finish_and_clear();
    }
    println!(
        "imported {} resources, rejected {}",
        total.stored, total.rejected
    );
    if total.stored > 0 {
        service
            .store
            .refresh_statistics()
            .await
            .context("updating the database's statistics after the import")?;
    }
    service.store.close().await;
    if total.rejected > 0 {
        anyhow::bail!("{} resources were rejected", total.rejected);
    }
    Ok(())
}

/// A progress bar of `len` steps named `message`; drawn on a terminal only.
fn progress_bar(len: u64, message: String) -> ProgressBar {
    let progress = ProgressBar::new(len);
    progress.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    progress.set_message(message);
    progress
}

async fn ingest(config: Config, files: Vec<PathBuf>) -> anyhow::Result<()> {
    let service = fhirvault::server::open_service(config, None).await?;
    let ingestor = Ingestor::new(service.clone())?;
    let mut summary = IngestSummary::default();
    let mut result = Ok(());
    for file in files {
        result = ingest_file(&ingestor, &file, &mut summary).await;
        if result.is_err() {
            break;
        }
    }
    println!(
        "stored {} messages, {} already stored before, rejected {}",
        summary.stored, summary.duplicates, summary.rejected
    );
    service.store.close().await;
    result?;
    if summary.rejected > 0 {
        anyhow::bail!(
            "{} messages were not stored; see `fhirvault hl7 dead-letters list`",
            summary.rejected
        );
    }
    Ok(())
}

/// `reindex`: with the key ring the server uses (never a new one: rows under other keys would
/// find nothing), a progress bar on a terminal, and a summary of counts.
async fn reindex(config: Config, types: Vec<String>) -> anyhow::Result<()> {
    if fhirvault::server::key_ring_from_environment()?.is_none() && !config.key_file.exists() {
        anyhow::bail!(
            "no key file at {}: reindex needs the key ring the data was written with",
            config.key_file.display()
        );
    }
    let service = fhirvault::server::open_service(config, None).await?;
    let mut result = reindex_with_progress(&service, &types).await;
    if result.is_ok()
        && let Err(error) = service.store.refresh_statistics().await
    {
        result = Err(anyhow::anyhow!(
            "updating the database's statistics after the re-index: {error}"
        ));
    }
    service.store.close().await;
    for line in result?.lines() {
        println!("{line}");
    }
    Ok(())
}

async fn reindex_with_progress(
    service: &fhirvault::service::Service,
    only: &[String],
) -> anyhow::Result<fhirvault::service::reindex::ReindexSummary> {
    let plan = service
        .reindex_plan(only)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let progress = progress_bar(plan.iter().map(|(_, live)| live).sum(), "reindex".into());
    let types: Vec<String> = plan
        .into_iter()
        .map(|(resource_type, _)| resource_type)
        .collect();
    let summary = service
        .reindex(&types, |done| progress.inc(done))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"));
    progress.finish_and_clear();
    summary
}

async fn dead_letters(config: Config, command: DeadLetterCommand) -> anyhow::Result<()> {
    let service = fhirvault::server::open_service(config, None).await?;
    let ingestor = Ingestor::new(service.clone())?;
    let result = match command {
        DeadLetterCommand::List { all } => dead_letter_lines(&ingestor, all).await.map(|lines| {
            for line in &lines {
                println!("{line}");
            }
            if lines.is_empty() {
                println!("no dead letters");
            }
        }),
        DeadLetterCommand::Replay { id, .. } => match ingestor.replay(&id).await {
            Ok(answer) => match answer.disposition {
                Disposition::Stored | Disposition::Duplicate => {
                    println!("dead letter {id} is stored now ({:?})", answer.disposition);
                    Ok(())
                }
                other => Err(anyhow::anyhow!(
                    "dead letter {id} was not stored again ({other:?}); `hl7 dead-letters list` shows the reason"
                )),
            },
            Err(error) => Err(anyhow::anyhow!("{error}")),
        },
    };
    service.store.close().await;
    result
}

/// `audit verify`: reads only, so the key ring is loaded, never created.
async fn verify_audit(config: Config) -> anyhow::Result<()> {
    let ring = match fhirvault::server::key_ring_from_environment()? {
        Some(ring) => ring,
        None => KeyRing::load(&config.key_file)?,
    };
    let store = Store::open(&config.database).await?;
    store.migrate().await?;
    let report = match store.reader().await {
        Ok(mut conn) => verify(&mut conn, &ring).await,
        Err(error) => Err(error),
    };
    store.close().await;
    let report = report?;
    for line in report.lines() {
        println!("{line}");
    }
    let broken = report
        .chains
        .iter()
        .filter(|chain| chain.broken.is_some())
        .count();
    if broken > 0 {
        anyhow::bail!(
            "the audit trail is broken in {broken} of {} chains",
            report.chains.len()
        );
    }
    Ok(())
}

async fn prune_audit(config: Config, export: PathBuf, before: Option<i64>) -> anyhow::Result<()> {
    let cutoff = before.unwrap_or_else(|| default_cutoff(&config.audit, now_micros()));
    let service = fhirvault::server::open_service(config, None).await?;
    let result = prune(&service, &export, cutoff).await;
    service.store.close().await;
    let summary = result?;
    let Some(sha256) = summary.export_sha256 else {
        println!(
            "nothing recorded before {} to prune; no export written",
            format_instant(cutoff)
        );
        return Ok(());
    };
    println!(
        "exported {} AuditEvents recorded before {} to {}",
        summary.pruned,
        format_instant(cutoff),
        export.display()
    );
    println!("export SHA-256: {sha256}");
    for chain in &summary.chains {
        println!(
            "chain {}: pruned seq {}..={}, new anchor seq {} hash {}",
            chain.chain,
            chain.old_anchor_seq + 1,
            chain.anchor_seq,
            chain.anchor_seq,
            hex::encode(&chain.anchor_hash)
        );
    }
    if let Some(id) = summary.event_id {
        println!("the prune is recorded as AuditEvent/{id}");
    }
    Ok(())
}
