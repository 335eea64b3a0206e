//! The capabilities interaction: `GET [base]/metadata` (R4 http.html#capabilities).

use serde_json::Value;

use super::{Case, Ctx};
use crate::check::{self, Outcome, ensure};
use crate::fixtures;

/// The resource types fhirvault promises, each with these interactions.
const TYPES: [&str; 7] = ["Patient", "Observation", "Device", "Organization", "Coverage", "Claim", "Consent"];
const INTERACTIONS: [&str; 5] = ["read", "create", "update", "delete", "search-type"];

pub fn cases() -> Vec<Case> {
    vec![
        Case::new("cap-001", "metadata: 200 CapabilityStatement, fhirVersion 4.0.1, JSON format", metadata),
        Case::new("cap-002", "metadata lists the seven resource types with CRUD and search-type", resources),
        Case::new("cap-003", "Accept */*, application/json or with fhirVersion=4.0 → FHIR JSON", accept_variants),
        Case::new("cap-004", "_format=json and a Content-Type application/json body are accepted", json_aliases),
        Case::new(
            "cap-005",
            "rest.security: SMART-on-FHIR, and only the OAuth endpoints smart-configuration names",
            security,
        ),
    ]
}

fn capability_statement(ctx: &Ctx) -> Result<Value, String> {
    let response = ctx.get("metadata").send()?;
    check::status(&response, &[200])?;
    Ok(check::resource(&response, "CapabilityStatement")?.clone())
}

fn metadata(ctx: &Ctx) -> Outcome {
    let statement = capability_statement(ctx)?;
    check::str_eq(&statement, "/fhirVersion", "4.0.1", "CapabilityStatement")?;
    check::str_eq(&statement, "/kind", "instance", "CapabilityStatement")?;
    let formats: Vec<&str> =
        statement["format"].as_array().map(|all| all.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    ensure(formats.iter().any(|format| *format == "json" || format.starts_with("application/fhir+json")), || {
        format!("CapabilityStatement: expected format to include json, got {formats:?}")
    })?;
    check::str_eq(&statement, "/rest/0/mode", "server", "CapabilityStatement")
}

fn resources(ctx: &Ctx) -> Outcome {
    let statement = capability_statement(ctx)?;
    let listed = statement["rest"][0]["resource"].as_array().cloned().unwrap_or_default();
    let mut missing = Vec::new();
    for resource_type in TYPES {
        let Some(resource) = listed.iter().find(|resource| resource["type"] == resource_type) else {
            missing.push(format!("{resource_type} (not listed)"));
            continue;
        };
        let codes: Vec<&str> = resource["interaction"]
            .as_array()
            .map(|all| all.iter().filter_map(|interaction| interaction["code"].as_str()).collect())
            .unwrap_or_default();
        for interaction in INTERACTIONS {
            if !codes.contains(&interaction) {
                missing.push(format!("{resource_type}.{interaction}"));
            }
        }
    }
    ensure(missing.is_empty(), || format!("CapabilityStatement.rest[0].resource: missing {}", missing.join(", ")))
}

fn accept_variants(ctx: &Ctx) -> Outcome {
    for accept in [
        "*/*",
        "application/json",
        "application/fhir+json; fhirVersion=4.0",
        "application/fhir+json;q=1.0, application/fhir+xml;q=0.5",
    ] {
        let response = ctx.get("metadata").header("Accept", accept).send()?;
        check::status(&response, &[200]).map_err(|error| format!("Accept: {accept}: {error}"))?;
        check::resource(&response, "CapabilityStatement").map_err(|error| format!("Accept: {accept}: {error}"))?;
    }
    Ok(())
}

/// R4 http.html#mime-type: `json`, `application/json` and `application/fhir+json` all mean JSON.
fn json_aliases(ctx: &Ctx) -> Outcome {
    let response = ctx.get("metadata?_format=json").header("Accept", "*/*").send()?;
    check::status(&response, &[200])?;
    check::resource(&response, "CapabilityStatement")?;
    let created = ctx
        .post("Patient")
        .header("Prefer", "return=representation")
        .body("application/json", fixtures::patient(&ctx.unique()).to_string())
        .send()?;
    check::status(&created, &[201])?;
    check::resource(&created, "Patient").map(|_| ())
}

const SECURITY_SERVICE: &str = "http://terminology.hl7.org/CodeSystem/restful-security-service";
const OAUTH_URIS: &str = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris";

/// A server that publishes `.well-known/smart-configuration` says so in its CapabilityStatement
/// too (`rest.security.service` SMART-on-FHIR), and any endpoint its SMART `oauth-uris`
/// extension names is the one the smart-configuration document names: no invented endpoint.
fn security(ctx: &Ctx) -> Outcome {
    let smart = ctx.get(".well-known/smart-configuration").without_authorization().send()?;
    if smart.status == 404 {
        return check::skip("the server publishes no .well-known/smart-configuration");
    }
    check::status(&smart, &[200])?;
    let smart = smart.body()?.clone();
    let statement = capability_statement(ctx)?;
    let security = &statement["rest"][0]["security"];
    ensure(security.is_object(), || "CapabilityStatement.rest[0].security is missing".to_string())?;
    if let Some(cors) = security.get("cors") {
        ensure(cors.is_boolean(), || format!("rest.security.cors must be a boolean, got {cors}"))?;
    }
    let services: Vec<&Value> = security["service"]
        .as_array()
        .map(|all| all.iter().flat_map(|s| s["coding"].as_array().into_iter().flatten()).collect())
        .unwrap_or_default();
    ensure(services.iter().any(|c| c["system"] == SECURITY_SERVICE && c["code"] == "SMART-on-FHIR"), || {
        format!("rest.security.service should hold {SECURITY_SERVICE}|SMART-on-FHIR, got {}", security["service"])
    })?;
    let extensions = security["extension"].as_array().cloned().unwrap_or_default();
    for uris in extensions.iter().filter(|e| e["url"] == OAUTH_URIS) {
        for endpoint in uris["extension"].as_array().cloned().unwrap_or_default() {
            let name = endpoint["url"].as_str().unwrap_or_default();
            let expected = match name {
                "authorize" => &smart["authorization_endpoint"],
                "token" => &smart["token_endpoint"],
                "revoke" => &smart["revocation_endpoint"],
                "introspect" => &smart["introspection_endpoint"],
                "manage" => &smart["management_endpoint"],
                "register" => &smart["registration_endpoint"],
                _ => continue,
            };
            ensure(!expected.is_null() && endpoint["valueUri"] == *expected, || {
                format!("oauth-uris {name} is {}, but smart-configuration says {expected}", endpoint["valueUri"])
            })?;
        }
    }
    Ok(())
}
