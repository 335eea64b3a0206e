//! `Patient/[id]/$everything` (<https://hl7.org/fhir/R4/patient-operation-everything.html>): the
//! patient and every resource whose patient it is, as a searchset with paging.
//!
//! "Whose patient it is" is the resource's compartment column: the first Patient its
//! Patient-compartment parameters (and `Device.patient`) reference. It is a system-level search
//! confined to that column, so the caller's role rules, scopes and the patient's Consents apply
//! to every type exactly as they do to a search. Referenced resources outside the compartment
//! (Organizations, Practitioners) are not added; `_include` is not offered here.

use std::sync::Arc;

use super::Service;
use super::search::SearchPage;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};

impl Service {
    pub async fn everything(
        &self,
        caller: &Arc<Caller>,
        patient: &str,
        params: &[(String, String)],
    ) -> ApiResult<SearchPage> {
        {
            let mut conn = self.reader().await?;
            self.read_visible(&mut conn, caller, "Patient", patient)
                .await?
                .ok_or_else(|| super::read::not_found("Patient", patient))?;
        }
        let mut pairs = Vec::with_capacity(params.len());
        for (name, value) in params {
            match name.as_str() {
                // Page links carry `_lastUpdated`, so that a next page asks for the same.
                "_since" => pairs.push(("_lastUpdated".to_string(), format!("ge{value}"))),
                "_type" | "_count" | "_lastUpdated" | "_cursor" | "_offset" | "_total"
                | "_elements" | "_summary" => pairs.push((name.clone(), value.clone())),
                "start" | "end" => {
                    return Err(ApiError::NotSupported("$everything: `start` and `end` (care dates) are not supported; `_since` limits by last update".into()));
                }
                other => {
                    return Err(ApiError::bad_request(format!(
                        "$everything takes _since, _type and _count (and the paging parameters of its links), not `{}`",
                        crate::fhir::id::truncate(other)
                    )));
                }
            }
        }
        let mut request = self.parse_system_search(&pairs, true)?;
        request.patient_of = Some(patient.to_string());
        self.restrict_search(caller, &mut request)?;
        self.search(request).await
    }
}
