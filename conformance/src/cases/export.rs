//! Bulk Data export (FHIR Bulk Data Access IG v2, `$export`), asynchronous request pattern:
//! kick-off, status polling, manifest, NDJSON files, cancel, and that an export holds what its
//! caller may see and belongs to that caller. Export is optional: a server whose
//! CapabilityStatement declares no system-level `export` operation is skipped.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::security::{FAMILY_B, PAT_A, PAT_B, fixture, token};
use super::{Case, Ctx};
use crate::check::{self, Outcome, ensure};
use crate::client::{Response, query};
use crate::fixtures;

pub fn cases() -> Vec<Case> {
    vec![
        Case::new(
            "export-001",
            "$export: 400 without Prefer: respond-async; 202 + Content-Location; status 202 then 200 manifest; the NDJSON file holds what _typeFilter selects; DELETE removes the job",
            system_export,
        ),
        Case::new(
            "export-002",
            "Patient/$export as a clinician holds only its organisation's patients; another caller gets 404 for its status and files",
            clinician_export,
        ),
    ]
}

/// Skip unless the CapabilityStatement declares the system-level export.
fn supported(ctx: &Ctx) -> Outcome {
    let response = ctx.get("metadata").send()?;
    let statement = check::resource(&response, "CapabilityStatement")?;
    let declared =
        statement["rest"][0]["operation"].as_array().is_some_and(|ops| ops.iter().any(|op| op["name"] == "export"));
    if declared { Ok(()) } else { check::skip("the CapabilityStatement declares no $export operation") }
}

fn with_token<'r>(request: crate::client::Request<'r>, token: Option<&str>) -> crate::client::Request<'r> {
    match token {
        Some(token) => request.header("Authorization", &format!("Bearer {token}")),
        None => request,
    }
}

/// Kick off `path` as `token` (`None`: the main token); the status URL.
fn kickoff(ctx: &Ctx, token: Option<&str>, path: &str) -> Result<String, String> {
    let response = with_token(ctx.get(path), token)
        .header("Prefer", "respond-async")
        .header("Accept", "application/fhir+json")
        .send()?;
    check::status(&response, &[202])?;
    response
        .header("content-location")
        .map(str::to_string)
        .ok_or_else(|| format!("{}: a 202 without Content-Location", response.label))
}

/// Poll the status URL until the manifest is there (at most a minute).
fn manifest(ctx: &Ctx, token: Option<&str>, status_url: &str) -> Result<Value, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = with_token(ctx.get(status_url), token).send()?;
        if response.status != 202 {
            check::status(&response, &[200])?;
            let manifest = response.body()?.clone();
            ensure(manifest["requiresAccessToken"] == true, || {
                format!("{}: expected requiresAccessToken true", response.label)
            })?;
            ensure(manifest["transactionTime"].is_string() && manifest["output"].is_array(), || {
                format!("{}: a manifest needs transactionTime and output", response.label)
            })?;
            return Ok(manifest);
        }
        ensure(Instant::now() < deadline, || format!("{}: the export did not finish within a minute", response.label))?;
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The lines of every output file of `resource_type`.
fn lines(ctx: &Ctx, token: Option<&str>, manifest: &Value, resource_type: &str) -> Result<Vec<Value>, String> {
    let mut lines = Vec::new();
    for file in manifest["output"].as_array().into_iter().flatten().filter(|f| f["type"] == resource_type) {
        let url = file["url"].as_str().ok_or("a manifest output without url")?;
        let response = download(ctx, token, url)?;
        check::status(&response, &[200])?;
        for line in response.text.lines().filter(|l| !l.trim().is_empty()) {
            lines.push(serde_json::from_str(line).map_err(|_| format!("{}: a line that is not JSON", response.label))?);
        }
    }
    Ok(lines)
}

fn download(ctx: &Ctx, token: Option<&str>, url: &str) -> Result<Response, String> {
    with_token(ctx.get(url), token).header("Accept", "application/fhir+ndjson").send()
}

fn system_export(ctx: &Ctx) -> Outcome {
    supported(ctx)?;
    let unique = ctx.unique();
    let created = ctx.create(&fixtures::patient(&unique))?;
    check::error(&ctx.get("$export").send()?, &[400])?;
    let filter = format!("Patient?identifier={}", fixtures::identifier_query(&unique));
    let status_url =
        kickoff(ctx, None, &format!("$export?{}", query(&[("_type", "Patient"), ("_typeFilter", &filter)])))?;
    let manifest = manifest(ctx, None, &status_url)?;
    let patients = lines(ctx, None, &manifest, "Patient")?;
    let ids: Vec<&str> = patients.iter().filter_map(|p| p["id"].as_str()).collect();
    ensure(ids == [created.id.as_str()], || {
        format!("expected exactly the case's Patient {} in the export, got {ids:?}", created.id)
    })?;
    check::status(&ctx.delete(&status_url).send()?, &[202])?;
    check::error(&ctx.get(&status_url).send()?, &[404])
}

fn clinician_export(ctx: &Ctx) -> Outcome {
    supported(ctx)?;
    let (clinician, crm) = (token(ctx, "clinician")?, token(ctx, "crm")?);
    fixture(ctx)?;
    let status_url =
        kickoff(ctx, Some(clinician), &format!("Patient/$export?{}", query(&[("_type", "Patient,Observation")])))?;
    let manifest = manifest(ctx, Some(clinician), &status_url)?;
    let patients = lines(ctx, Some(clinician), &manifest, "Patient")?;
    let observations = lines(ctx, Some(clinician), &manifest, "Observation")?;
    let ids: Vec<&str> = patients.iter().filter_map(|p| p["id"].as_str()).collect();
    ensure(ids.contains(&PAT_A) && !ids.contains(&PAT_B), || {
        format!("expected {PAT_A} and not {PAT_B} among the exported Patients, got {ids:?}")
    })?;
    let leaked =
        observations.iter().chain(&patients).any(|r| r.to_string().contains(PAT_B) || r.to_string().contains(FAMILY_B));
    ensure(!leaked, || "the other organisation's patient is in the clinician's export".to_string())?;
    // Someone else: the status and the files do not exist for them.
    check::error(&with_token(ctx.get(&status_url), Some(crm)).send()?, &[404])?;
    for file in manifest["output"].as_array().into_iter().flatten() {
        let url = file["url"].as_str().ok_or("a manifest output without url")?;
        check::status(&download(ctx, Some(crm), url)?, &[404])?;
    }
    check::status(&with_token(ctx.delete(&status_url), Some(clinician)).send()?, &[202])
}
