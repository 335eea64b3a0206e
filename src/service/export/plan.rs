//! The kick-off's parameters, checked and turned into one search per resource type
//! (<https://hl7.org/fhir/uv/bulkdata/export.html#query-parameters>).
//!
//! Everything is refused here, before the 202, that a search would refuse: unknown types, a
//! `_typeFilter` that does not parse as a search of its type (the same parser and, under
//! `Prefer: handling=strict`, the same strictness), types the caller's role or scopes exclude
//! (403), searches its pseudonymous view may not make. The searches carry the caller's visibility
//! ([`Service::restrict_search`]), so the job pages through exactly what the caller's own
//! searches would find.

use std::sync::Arc;

use super::ExportLevel;
use crate::auth::{Caller, Permission};
use crate::error::{ApiError, ApiResult};
use crate::fhir::id::truncate;
use crate::fhir::instant::format_instant;
use crate::fhir::outcome::Issue;
use crate::search::query::{Criterion, SearchRequest, TotalMode, is_result_param};
use crate::service::Service;

/// The `_outputFormat` values that mean NDJSON (the IG's two abbreviations included).
const NDJSON_FORMATS: &[&str] = &["application/fhir+ndjson", "application/ndjson", "ndjson"];

/// Matches read per query while a job pages through a type.
pub const PAGE_SIZE: usize = 500;

/// What a job exports: one search per resource type, in the caller's visibility.
#[derive(Debug)]
pub struct ExportPlan {
    pub searches: Vec<SearchRequest>,
    /// `_typeFilter` parameters that were ignored (lenient handling): the job reports them in an
    /// OperationOutcome file of the manifest's `error` list.
    pub warnings: Vec<Issue>,
}

/// The kick-off's parameters, parsed but not yet checked against the caller.
#[derive(Debug, Default)]
struct Parameters {
    types: Option<Vec<String>>,
    since: Option<String>,
    /// (type, the filter's query pairs), in the order given.
    filters: Vec<(String, Vec<(String, String)>)>,
}

impl Service {
    /// Check the kick-off parameters `pairs` of an export at `level` for `caller`, and plan it.
    pub fn plan_export(
        &self,
        caller: &Arc<Caller>,
        level: ExportLevel,
        pairs: &[(String, String)],
        strict: bool,
    ) -> ApiResult<ExportPlan> {
        let parameters = self.export_parameters(level, pairs)?;
        let types = match &parameters.types {
            Some(types) => {
                for resource_type in types {
                    self.require(caller, resource_type, Permission::Search)?;
                }
                types.clone()
            }
            None => {
                let types: Vec<String> = self
                    .export_types(level)
                    .into_iter()
                    .filter(|t| self.require(caller, t, Permission::Search).is_ok())
                    .collect();
                if types.is_empty() {
                    return Err(ApiError::Forbidden(
                        "this token may not search any resource type this export covers".into(),
                    ));
                }
                types
            }
        };
        if let Some((resource_type, _)) =
            parameters.filters.iter().find(|(t, _)| !types.contains(t))
        {
            return Err(ApiError::bad_request(format!(
                "_typeFilter: {resource_type} is not among the types this export covers (_type)"
            )));
        }
        let mut plan = ExportPlan {
            searches: Vec::with_capacity(types.len()),
            warnings: Vec::new(),
        };
        for resource_type in types {
            let since: Vec<(String, String)> = parameters
                .since
                .iter()
                .map(|s| ("_lastUpdated".to_string(), format!("ge{s}")))
                .collect();
            let mut request = self.parse_search(&resource_type, &since, true)?;
            let mut alternatives = Vec::new();
            for (_, filter) in parameters
                .filters
                .iter()
                .filter(|(t, _)| *t == resource_type)
            {
                let parsed = self.parse_search(&resource_type, filter, strict)?;
                plan.warnings.extend(parsed.warnings);
                alternatives.push(parsed.criteria);
            }
            // Several filters of one type are alternatives (the IG: resources matching any).
            if !alternatives.is_empty() {
                request.criteria.push(Criterion::AnyOf(alternatives));
            }
            request.patient_of_any = level == ExportLevel::Patient;
            request.count = PAGE_SIZE.min(self.config.max_page_size);
            request.total = TotalMode::None;
            self.restrict_search(caller, &mut request)?;
            // Values are checked when a search is planned (dates, quantities, chains): plan it
            // now, so that what a search answers with a 400 is a 400 here, not a failed job.
            self.plan_search(&request)?;
            plan.searches.push(request);
        }
        Ok(plan)
    }

    /// The types an export at `level` covers when `_type` does not say: every type for the
    /// system, the Patient compartment's types (those with a patient link) for Patients.
    fn export_types(&self, level: ExportLevel) -> Vec<String> {
        let all = self.validator.resource_types().iter();
        match level {
            ExportLevel::System => all.cloned().collect(),
            ExportLevel::Patient => all
                .filter(|t| !self.registry.patient_links(t).is_empty())
                .cloned()
                .collect(),
        }
    }

    fn export_parameters(
        &self,
        level: ExportLevel,
        pairs: &[(String, String)],
    ) -> ApiResult<Parameters> {
        let mut parameters = Parameters::default();
        for (name, value) in pairs {
            match name.as_str() {
                "_outputFormat" => {
                    // A `+` sent unencoded in a query string arrives as a space.
                    if !NDJSON_FORMATS.contains(&value.replace(' ', "+").as_str()) {
                        return Err(ApiError::bad_request(
                            "_outputFormat: this server writes NDJSON only (application/fhir+ndjson, application/ndjson or ndjson)",
                        ));
                    }
                }
                "_since" => parameters.since = Some(parse_since(value)?),
                "_type" => {
                    let types = parameters.types.get_or_insert_with(Vec::new);
                    for resource_type in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                        self.check_export_type(level, "_type", resource_type)?;
                        if !types.iter().any(|t| t == resource_type) {
                            types.push(resource_type.to_string());
                        }
                    }
                }
                "_typeFilter" => parameters.filters.push(self.type_filter(level, value)?),
                // The JSON-only `_format` values were let through by content negotiation.
                "_format" => {}
                other => {
                    return Err(ApiError::NotSupported(format!(
                        "$export does not support the parameter `{}` (it takes _outputFormat, _since, _type and _typeFilter)",
                        truncate(other)
                    )));
                }
            }
        }
        if parameters.types.as_ref().is_some_and(Vec::is_empty) {
            return Err(ApiError::bad_request(
                "_type: name at least one resource type",
            ));
        }
        Ok(parameters)
    }

    /// `resource_type` is one an export at `level` serves.
    fn check_export_type(
        &self,
        level: ExportLevel,
        parameter: &str,
        resource_type: &str,
    ) -> ApiResult<()> {
        if !self.validator.is_resource_type(resource_type) {
            return Err(ApiError::bad_request(format!(
                "{parameter}: `{}` is not a FHIR R4 resource type",
                truncate(resource_type)
            )));
        }
        if level == ExportLevel::Patient && self.registry.patient_links(resource_type).is_empty() {
            return Err(ApiError::bad_request(format!(
                "{parameter}: {resource_type} resources are not in the Patient compartment, which Patient/$export exports"
            )));
        }
        Ok(())
    }

    /// `Type?query`: the type and the query's pairs, which must all select resources.
    fn type_filter(
        &self,
        level: ExportLevel,
        value: &str,
    ) -> ApiResult<(String, Vec<(String, String)>)> {
        let (resource_type, query) = value.split_once('?').ok_or_else(|| {
            ApiError::bad_request(
                "_typeFilter must be a search such as Observation?code=http://loinc.org|8867-4",
            )
        })?;
        self.check_export_type(level, "_typeFilter", resource_type)?;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|_| {
            ApiError::bad_request(format!(
                "_typeFilter: the query of the {resource_type} filter is malformed"
            ))
        })?;
        if let Some((name, _)) = pairs
            .iter()
            .find(|(name, _)| is_result_param(name) || name == "_type")
        {
            return Err(ApiError::bad_request(format!(
                "_typeFilter: `{}` does not select resources; a filter takes search parameters only",
                truncate(name)
            )));
        }
        if pairs.is_empty() {
            return Err(ApiError::bad_request(format!(
                "_typeFilter: the {resource_type} filter has no search parameter"
            )));
        }
        Ok((resource_type.to_string(), pairs))
    }
}

/// `_since`: a FHIR instant (date, time to the second and a zone), as the UTC instant the
/// `_lastUpdated` search takes.
fn parse_since(value: &str) -> ApiResult<String> {
    let text = value.trim().replace(' ', "+");
    let invalid = || {
        ApiError::bad_request(
            "_since must be a FHIR instant such as 2026-01-01T00:00:00Z (with seconds and a time zone)",
        )
    };
    if !text.contains('T') {
        return Err(invalid());
    }
    let instant = chrono::DateTime::parse_from_rfc3339(&text).map_err(|_| invalid())?;
    Ok(format_instant(instant.timestamp_micros()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_an_instant() {
        assert_eq!(
            parse_since("2026-01-01T01:00:00+01:00").unwrap(),
            "2026-01-01T00:00:00.000000Z"
        );
        // An unencoded `+` in a query string arrives as a space.
        assert_eq!(
            parse_since("2026-01-01T01:00:00 01:00").unwrap(),
            "2026-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            parse_since("2026-01-01T00:00:00.5Z").unwrap(),
            "2026-01-01T00:00:00.500000Z"
        );
        for bad in [
            "2026-01-01",
            "2026-01-01T00:00",
            "2026-01-01T00:00:00",
            "yesterday",
            "",
        ] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }
}
