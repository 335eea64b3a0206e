//! The CapabilityStatement, built at start-up from what the server really supports: the resource
//! types the validator knows, the interactions the router serves, the search parameters the
//! query planner accepts, and the profiles the validator enforces (`supportedProfile`). Nothing here is hand-written per type, so it cannot drift.
//! <https://hl7.org/fhir/R4/capabilitystatement.html>

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::FHIR_VERSION;
use crate::search::registry::{ParamType, SearchParam, SearchParamRegistry};
use crate::service::export::ExportLevel;

/// Type-level interactions every resource type offers.
pub const TYPE_INTERACTIONS: &[&str] = [
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
]
.as_slice();

/// The audit trail is written by the server alone ([`crate::audit`]): clients read and search it.
const AUDIT_INTERACTIONS: &[&str] = [
    "read",
    "vread",
    "history-instance",
    "history-type",
    "search-type",
]
.as_slice();

/// Search parameters the planner handles: every type but `special`, and the composites of a
/// code and a second value (see `search::query::composite_value_kind`).
pub fn is_searchable(param: &SearchParam) -> bool {
    match param.kind {
        ParamType::Special => false,
        ParamType::Composite => crate::search::query::composite_value_kind(param).is_some(),
        _ => true,
    }
}

/// `supported_profiles`: profile URLs by the resource type they constrain; `security`:
/// `rest.security`, built from the configuration (`crate::api::smart::rest_security`).
pub fn capability_statement(
    base_url: &str,
    resource_types: &[String],
    registry: &SearchParamRegistry,
    supported_profiles: &BTreeMap<String, Vec<String>>,
    software_version: &str,
    security: Value,
) -> Value {
    let resources: Vec<Value> = resource_types
        .iter()
        .map(|resource_type| {
            let params: Vec<Value> = registry
                .params_for(resource_type)
                .into_iter()
                .filter(|p| is_searchable(p) && p.is_indexed() && !crate::search::phi::is_unindexed(&p.code))
                .map(|p| {
                    let mut param = json!({"name": p.code, "definition": p.url, "type": p.kind.code()});
                    param["documentation"] = json!(param_documentation(registry, resource_type, p));
                    param
                })
                .collect();
            let reference_params = |of: &str| -> Vec<String> {
                registry.params_for(of).into_iter().filter(|p| p.kind == ParamType::Reference).map(|p| p.code.clone()).collect()
            };
            let mut includes: Vec<String> = reference_params(resource_type).iter().map(|code| format!("{resource_type}:{code}")).collect();
            if !includes.is_empty() {
                includes.push(format!("{resource_type}:*"));
            }
            let rev_includes: Vec<String> = resource_types
                .iter()
                .flat_map(|source| {
                    registry
                        .params_for(source)
                        .into_iter()
                        .filter(|p| p.kind == ParamType::Reference && (p.targets.is_empty() || p.targets.contains(resource_type)))
                        .map(move |p| format!("{source}:{}", p.code))
                })
                .collect();
            let interactions = if resource_type == crate::auth::role::AUDIT_EVENT { AUDIT_INTERACTIONS } else { TYPE_INTERACTIONS };
            let mut resource = json!({
                "type": resource_type,
                "profile": format!("http://hl7.org/fhir/StructureDefinition/{resource_type}"),
                "interaction": interactions.iter().map(|code| json!({"code": code})).collect::<Vec<_>>(),
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "full-support",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "searchInclude": includes,
                "searchRevInclude": rev_includes,
                "searchParam": params,
                "operation": [{"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}],
            });
            if resource_type == "Patient" {
                resource["operation"]
                    .as_array_mut()
                    .into_iter()
                    .for_each(|ops| ops.push(json!({"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"})));
            }
            for level in ExportLevel::ALL.into_iter().filter(|level| level.resource_type() == Some(resource_type.as_str())) {
                resource["operation"].as_array_mut().into_iter().for_each(|ops| ops.push(export_operation(level)));
            }
            if resource_type == crate::auth::role::AUDIT_EVENT {
                for flag in ["updateCreate", "conditionalCreate", "conditionalUpdate"] {
                    resource[flag] = json!(false);
                }
                resource["conditionalDelete"] = json!("not-supported");
            }
            if let Some(profiles) = supported_profiles.get(resource_type) {
                resource["supportedProfile"] = json!(profiles);
            }
            resource
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-22",
        "publisher": "fhirvault",
        "kind": "instance",
        "software": {"name": "fhirvault", "version": software_version},
        "implementation": {"description": "fhirvault FHIR R4 server", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "documentation": "Search: chains and _has up to the depth given on each reference parameter; \
                _include and _revinclude (with :iterate and *); _sort by any parameter that is not protected; \
                compartment search in the Patient compartment; system search with _type \
                (one _type: that type's parameters; several or none: the parameters all resources share). \
                Each parameter's documentation lists the modifiers it takes. _contained=false (the default) only: \
                contained resources are not indexed on their own, so _contained=true|both is a 400.",
            "security": security,
            "compartment": ["http://hl7.org/fhir/CompartmentDefinition/patient"],
            "resource": resources,
            "interaction": [
                {"code": "transaction"},
                {"code": "batch"},
                {"code": "history-system"},
                {"code": "search-system"},
            ],
            "operation": ExportLevel::ALL.into_iter().filter(|level| level.resource_type().is_none()).map(export_operation).collect::<Vec<_>>(),
        }],
    })
}

/// What a search parameter offers here: the modifiers parsing accepts
/// ([`crate::search::query::supported_modifiers`], the same list), and what protection and
/// chaining mean for it. R4 has no element for modifiers, so they are documented in words.
fn param_documentation(
    registry: &SearchParamRegistry,
    resource_type: &str,
    p: &SearchParam,
) -> String {
    let mut modifiers: Vec<String> =
        crate::search::query::supported_modifiers(registry, resource_type, p)
            .into_iter()
            .map(|m| format!(":{m}"))
            .collect();
    if p.kind == ParamType::Reference {
        modifiers.push(":[type]".into());
    }
    let mut parts = vec![if modifiers.is_empty() {
        "Modifiers: none.".to_string()
    } else {
        format!("Modifiers: {}.", modifiers.join(", "))
    }];
    if crate::search::phi::is_protected(registry, resource_type, &p.code, p.kind) {
        parts.push(
            "Protected (identifying or free text): stored as keyed tokens. Supports starts-with (strings), code, |code and \
             system|code (tokens), type system|type code|value (:of-type), and equality at the written precision (dates); \
             not system| alone or ranges."
                .into(),
        );
    }
    if modifiers.iter().any(|m| m == ":below") && p.kind == ParamType::Token {
        parts.push(
            ":below/:above take system|code, for the code systems the FHIR specification defines in full (their is-a \
             hierarchies); other systems are a 400."
                .into(),
        );
    }
    if p.kind == ParamType::Reference {
        parts.push(format!(
            "Chainable: {code}.[parameter] and {code}:[type].[parameter], up to {depth} levels, and the \
             target of _has:{resource_type}:{code}:[parameter]. Only references to this server are followed.",
            code = p.code,
            depth = crate::search::query::MAX_CHAIN_DEPTH,
        ));
    }
    parts.join(" ")
}

/// A bulk export level as a CapabilityStatement operation (the router serves the same list).
fn export_operation(level: ExportLevel) -> Value {
    json!({"name": "export", "definition": level.definition()})
}
