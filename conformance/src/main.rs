//! `fhirvault-conformance`: a black-box FHIR R4 conformance suite.
//!
//! It talks plain HTTP to any FHIR R4 base URL, runs every case (or those whose id starts with
//! `--only`), prints one line per case and can write JUnit XML and JSON reports.
//!
//! # Layout
//!
//! - `client`   — the HTTP client: one request in, one [`client::Response`] out, nothing else.
//! - `check`    — small assertions over responses and JSON that fail with "expected …, got …".
//! - `fixtures` — minimal valid R4 resources, each tagged with a unique identifier.
//! - `cases`    — the cases, a module per area; [`cases::all`] lists them in a stable order.
//! - `runner`   — runs cases one after another, timing each and catching panics.
//! - `report`   — the text, JUnit XML and JSON renderings of a run.
//!
//! Exit status: 0 when every case passed, 1 when any failed, 2 on a usage error (including a
//! base URL where nothing answers HTTP, or a report file that cannot be written).

mod cases;
mod check;
mod client;
mod fixtures;
mod report;
mod runner;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::cases::Ctx;
use crate::client::Fhir;

#[derive(Parser)]
#[command(name = "fhirvault-conformance", version, about = "Black-box FHIR R4 conformance suite")]
struct Cli {
    /// The server's FHIR base URL, e.g. http://127.0.0.1:8080/fhir (plain HTTP).
    #[arg(long, value_name = "URL", required_unless_present = "list")]
    base_url: Option<String>,
    /// Write a JUnit XML report to this file.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Write a JSON report to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Run only the cases whose id starts with this prefix (e.g. `crud`, `search-00`).
    #[arg(long, value_name = "PREFIX")]
    only: Option<String>,
    /// Send `Authorization: Bearer TOKEN` with every request (the environment variable keeps it
    /// out of the process list).
    #[arg(long, value_name = "TOKEN", env = "FHIRVAULT_CONFORMANCE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Another caller's token for the access-control cases, as NAME=TOKEN (repeatable): `clinician`
    /// (organisation conformance-org-a), `crm`, `patient` (patient conformance-pat-a), `auditor`,
    /// `reader` (a clinician of conformance-org-a with read-only scopes). Cases whose token is
    /// missing are skipped.
    #[arg(long = "as", value_name = "NAME=TOKEN", value_parser = parse_named_token)]
    tokens: Vec<(String, String)>,
    /// Per-request timeout in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
    /// List the case ids and names, then exit without sending any request.
    #[arg(long)]
    list: bool,
}

const USAGE_ERROR: u8 = 2;

fn parse_named_token(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, token)) if !name.is_empty() && !token.is_empty() => Ok((name.to_string(), token.to_string())),
        _ => Err("expected NAME=TOKEN".into()),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // clap prints help and version to stdout with exit 0; real usage errors exit 2.
            let _ = error.print();
            return if error.use_stderr() { ExitCode::from(USAGE_ERROR) } else { ExitCode::SUCCESS };
        }
    };

    let mut selected = cases::all();
    if let Some(prefix) = &cli.only {
        selected.retain(|case| case.id.starts_with(prefix.as_str()));
        if selected.is_empty() {
            eprintln!("error: no case id starts with {prefix:?} (use --list to see them)");
            return ExitCode::from(USAGE_ERROR);
        }
    }
    if cli.list {
        for case in &selected {
            println!("{:<10} {}", case.id, case.name);
        }
        return ExitCode::SUCCESS;
    }

    let base_url = cli.base_url.as_deref().unwrap_or_default().trim_end_matches('/').to_string();
    if !base_url.starts_with("http://") {
        // Built without TLS on purpose (no TLS stack to build or configure): run the suite where
        // it reaches the server, or its TLS-terminating proxy, over plain HTTP.
        eprintln!("error: --base-url must be a plain http:// URL, got {base_url:?}");
        return ExitCode::from(USAGE_ERROR);
    }
    let fhir = match Fhir::new(&base_url, cli.token.clone(), Duration::from_secs(cli.timeout)) {
        Ok(fhir) => fhir,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    // One request first, so a wrong URL or a stopped server is one clear message, not a FAIL per case.
    if let Err(error) = fhir.get("metadata").send() {
        eprintln!("error: cannot reach the server: {error}");
        return ExitCode::from(USAGE_ERROR);
    }
    let ctx = Ctx::new(fhir, cli.tokens.clone());

    println!("fhirvault-conformance: {} case(s) against {base_url} (run {})", selected.len(), ctx.run_id());
    let run = runner::run(&ctx, &selected, |result| println!("{}", report::text_line(result)));
    println!("{}", report::text_summary(&run));

    let mut status = if run.failed() == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    let writes = [(cli.junit.as_ref(), report::junit(&run)), (cli.json.as_ref(), report::json(&run))];
    for (path, contents) in writes {
        let Some(path) = path else { continue };
        if let Err(error) = std::fs::write(path, contents) {
            eprintln!("error: cannot write {}: {error}", path.display());
            status = ExitCode::from(USAGE_ERROR);
        }
    }
    status
}
