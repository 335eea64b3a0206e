//! search at type level: <https://hl7.org/fhir/R4/http.html#search>, <https://hl7.org/fhir/R4/search.html>.

// Dynamic SQL here is assembled from fixed fragments and `$n` placeholders only; every value is bound.
use sqlx::AssertSqlSafe;
use serde_json::Value;
use sqlx::Row;

use super::{Service, VersionedResource};
use crate::error::{ApiError, ApiResult};
use crate::fhir::id::truncate;
use crate::fhir::bundle::{self, Link};
use crate::fhir::outcome::operation_outcome;
use crate::search::plan::{Plan, plan};
use crate::search::query::{Compartment, SearchRequest, TotalMode};
use crate::store::{Conn, bind_all, versions};

/// One page of matches.
pub struct SearchPage {
    pub request: SearchRequest,
    pub matches: Vec<VersionedResource>,
    /// `_include` / `_revinclude` results (`search.mode = include`).
    pub included: Vec<VersionedResource>,
    pub total: Option<i64>,
    pub has_more: bool,
}

impl Service {
    pub fn parse_search(&self, resource_type: &str, pairs: &[(String, String)], strict: bool) -> ApiResult<SearchRequest> {
        SearchRequest::parse(
            &self.registry,
            resource_type,
            pairs,
            strict,
            self.config.default_page_size,
            self.config.max_page_size,
        )
    }

    /// Confine `request` to the compartment of `compartment_type/id`. Only the Patient
    /// compartment is defined here (compartmentdefinition-patient.json).
    pub fn confine_to_compartment(&self, request: &mut SearchRequest, compartment_type: &str, id: &str) -> ApiResult<()> {
        if compartment_type != "Patient" {
            return Err(ApiError::bad_request(format!(
                "compartment searches are offered for the Patient compartment only, not {}",
                truncate(compartment_type)
            )));
        }
        let params = self.registry.patient_compartment_params(&request.resource_type);
        if params.is_empty() {
            return Err(ApiError::bad_request(format!("{} resources are not in the Patient compartment", request.resource_type)));
        }
        request.compartment = Some(Compartment { resource_type: compartment_type.to_string(), id: id.to_string(), params: params.to_vec() });
        Ok(())
    }

    pub async fn search(&self, request: SearchRequest) -> ApiResult<SearchPage> {
        let mut conn = self.reader().await?;
        self.search_in(&mut conn, request).await
    }

    /// Search on `conn`: inside a transaction it sees the transaction's own writes.
    pub async fn search_in(&self, conn: &mut Conn, request: SearchRequest) -> ApiResult<SearchPage> {
        let plan = plan(&request, &self.registry, &self.keys.current(), &self.config.base_url)?;
        let total = match (request.total, request.summary_count) {
            (_, true) | (TotalMode::Accurate | TotalMode::Estimate, _) => Some(count(conn, &plan).await?),
            (TotalMode::None, false) => None,
        };
        if request.summary_count {
            return Ok(SearchPage { request, matches: Vec::new(), included: Vec::new(), total, has_more: false });
        }
        let mut ids = matching_ids(conn, &plan, request.count + 1, request.offset).await?;
        let has_more = request.count > 0 && ids.len() > request.count;
        ids.truncate(request.count);
        let mut stored = versions::read_current_many(conn, &request.resource_type, &ids).await?;
        // Keep the order the plan chose.
        stored.sort_by_key(|s| ids.iter().position(|id| *id == s.id));
        let mut matches = stored.into_iter().map(|s| self.open_version(s)).collect::<ApiResult<Vec<_>>>()?;
        // Includes follow the full resources; only the matches are subsetted (R4 search.html#elements).
        let (included, warning) = self.included(conn, &request, &matches).await?;
        if let Some(subset) = &request.subset {
            for resource in matches.iter_mut().filter_map(|m| m.resource.as_mut()) {
                self.validator.element_summary().apply(resource, subset);
            }
        }
        let mut request = request;
        request.warnings.extend(warning);
        Ok(SearchPage { request, matches, included, total, has_more })
    }
}

impl Service {
    /// The searchset Bundle of a page, with `self`, `first`, `previous` and `next` links.
    pub fn searchset(&self, page: &SearchPage) -> Value {
        let base = &self.config.base_url;
        let request = &page.request;
        let path = match &request.compartment {
            Some(c) => format!("{}/{}/{}", c.resource_type, c.id, request.resource_type),
            None => request.resource_type.clone(),
        };
        let link = |offset: Option<usize>| {
            let mut pairs = request.used.clone();
            if let Some(offset) = offset.filter(|o| *o > 0) {
                pairs.push(("_offset".into(), offset.to_string()));
            }
            let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
            if query.is_empty() { format!("{base}/{path}") } else { format!("{base}/{path}?{query}") }
        };
        let mut links = vec![Link { relation: "self", url: link(Some(request.offset)) }];
        if request.offset > 0 {
            links.push(Link { relation: "first", url: link(None) });
            links.push(Link { relation: "previous", url: link(Some(request.offset.saturating_sub(request.count))) });
        }
        if page.has_more {
            links.push(Link { relation: "next", url: link(Some(request.offset + request.count)) });
        }
        let outcome = (!request.warnings.is_empty()).then(|| operation_outcome(&request.warnings));
        bundle::searchset(base, &page.matches, &page.included, page.total, &links, outcome)
    }
}

/// Ids matching `plan`, in its order, `limit` of them from `offset`.
pub async fn matching_ids(conn: &mut Conn, plan: &Plan, limit: usize, offset: usize) -> ApiResult<Vec<String>> {
    let keys: String = plan.sort_keys.iter().enumerate().map(|(n, key)| format!(", {key} AS k{n}")).collect();
    let sql = format!(
        "SELECT id FROM (SELECT h.id AS id{keys} FROM resource_heads h WHERE {}) s ORDER BY {} LIMIT {limit} OFFSET {offset}",
        plan.where_sql, plan.order_sql
    );
    let rows = bind_all(sqlx::query(AssertSqlSafe(sql)), plan.binds.clone()).fetch_all(&mut *conn).await?;
    Ok(rows.iter().map(|row| row.try_get::<String, _>(0)).collect::<Result<_, _>>()?)
}

async fn count(conn: &mut Conn, plan: &Plan) -> ApiResult<i64> {
    let sql = format!("SELECT COUNT(*) FROM resource_heads h WHERE {}", plan.where_sql);
    let binds = plan.binds[..plan.where_binds].to_vec();
    let row = bind_all(sqlx::query(AssertSqlSafe(sql)), binds).fetch_one(&mut *conn).await?;
    Ok(row.try_get(0)?)
}
