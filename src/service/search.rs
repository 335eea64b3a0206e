//! search at type level: <https://hl7.org/fhir/R4/http.html#search>, <https://hl7.org/fhir/R4/search.html>.

// Dynamic SQL here is assembled from fixed fragments and `$n` placeholders only; every value is bound.
use sqlx::AssertSqlSafe;
use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use sqlx::Row;

use super::{Service, VersionedResource};
use crate::crypto::Aad;
use crate::error::{ApiError, ApiResult};
use crate::fhir::bundle::{self, Link};
use crate::fhir::id::truncate;
use crate::fhir::instant::Micros;
use crate::fhir::outcome::{Issue, IssueCode, Severity, operation_outcome};
use crate::search::cursor::{Cursor, Direction, KeyKind, OrderKey, PageTotal, order_sql};
use crate::search::plan::{Plan, plan};
use crate::search::query::{Compartment, SYSTEM, SearchRequest, TotalMode};
use crate::store::{Backend, Bind, Conn, bind_all, short_limit, versions, with_values_planned};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The AAD purpose of sealed page cursors.
const CURSOR_PURPOSE: &str = "page-cursor";

/// One page of matches.
pub struct SearchPage {
    pub request: SearchRequest,
    pub matches: Vec<VersionedResource>,
    /// `_include` / `_revinclude` results (`search.mode = include`).
    pub included: Vec<VersionedResource>,
    /// `None`: not asked for (`_total=none`).
    pub total: Option<PageTotal>,
    /// Whether pages exist after / before this one.
    pub has_next: bool,
    pub has_previous: bool,
    /// The order-key values of the page's first and last match, for the page links.
    pub first_row: Option<Vec<Value>>,
    pub last_row: Option<Vec<Value>>,
    /// Every version stamped before this instant was committed before the search read: the
    /// Bundle's `meta.lastUpdated`, safe to poll on from ([`super::write_clock`]).
    pub complete_before: Micros,
}

impl Service {
    pub fn parse_search(
        &self,
        resource_type: &str,
        pairs: &[(String, String)],
        strict: bool,
    ) -> ApiResult<SearchRequest> {
        SearchRequest::parse(
            &self.registry,
            resource_type,
            pairs,
            strict,
            self.config.default_page_size,
            self.config.max_page_size,
        )
    }

    /// A system-level search (`GET [base]?…`). With exactly one `_type` it is that type's search
    /// (every parameter of the type applies); otherwise only the parameters all resources share.
    pub fn parse_system_search(
        &self,
        pairs: &[(String, String)],
        strict: bool,
    ) -> ApiResult<SearchRequest> {
        let request = self.parse_search(SYSTEM, pairs, strict)?;
        match request.types.as_slice() {
            [only] => {
                let rest: Vec<(String, String)> = pairs
                    .iter()
                    .filter(|(name, _)| name != "_type")
                    .cloned()
                    .collect();
                self.parse_search(only, &rest, strict)
            }
            _ => Ok(request),
        }
    }

    /// Confine `request` to the compartment of `compartment_type/id`. Only the Patient
    /// compartment is defined here (compartmentdefinition-patient.json).
    pub fn confine_to_compartment(
        &self,
        request: &mut SearchRequest,
        compartment_type: &str,
        id: &str,
    ) -> ApiResult<()> {
        if compartment_type != "Patient" {
            return Err(ApiError::bad_request(format!(
                "compartment searches are offered for the Patient compartment only, not {}",
                truncate(compartment_type)
            )));
        }
        let params = self
            .registry
            .patient_compartment_params(&request.resource_type);
        if params.is_empty() {
            return Err(ApiError::bad_request(format!(
                "{} resources are not in the Patient compartment",
                request.resource_type
            )));
        }
        request.compartment = Some(Compartment {
            resource_type: compartment_type.to_string(),
            id: id.to_string(),
            params: params.to_vec(),
        });
        Ok(())
    }

    pub async fn search(&self, request: SearchRequest) -> ApiResult<SearchPage> {
        let mut conn = self.reader().await?;
        self.search_in(&mut conn, request).await
    }

    /// Search on `conn`: inside a transaction it sees the transaction's own writes.
    /// The SQL plan of `request` under this server's registry, keys and base URL.
    pub fn plan_search(&self, request: &SearchRequest) -> ApiResult<Plan> {
        plan(
            request,
            &self.registry,
            &self.validator,
            &self.keys.current(),
            &self.config.base_url,
        )
    }

    pub async fn search_in(
        &self,
        conn: &mut Conn,
        mut request: SearchRequest,
    ) -> ApiResult<SearchPage> {
        self.open_cursor(&mut request)?;
        let plan = self.plan_search(&request)?;
        let complete_before = self.clock.complete_before();
        if request.summary_count {
            let total = Some(PageTotal::Counted(count(conn, &plan).await?));
            return Ok(SearchPage {
                request,
                matches: Vec::new(),
                included: Vec::new(),
                total,
                has_next: false,
                has_previous: false,
                first_row: None,
                last_row: None,
                complete_before,
            });
        }
        let direction = request
            .cursor
            .as_ref()
            .map_or(Direction::After, |c| c.direction);
        let mut rows = matching_rows(
            conn,
            &plan,
            request.cursor.as_ref(),
            request.count + 1,
            request.offset,
        )
        .await?;
        let more_beyond = request.count > 0 && rows.len() > request.count;
        // A first page that holds every match is its own count: no second query.
        let whole =
            request.cursor.is_none() && request.offset == 0 && request.count > 0 && !more_beyond;
        let carried = request.cursor.as_ref().and_then(|cursor| cursor.total);
        let total = match request.total {
            TotalMode::None => None,
            TotalMode::Accurate | TotalMode::Estimate if whole => {
                Some(PageTotal::Counted(rows.len() as i64))
            }
            TotalMode::Accurate => Some(PageTotal::Counted(count(conn, &plan).await?)),
            TotalMode::Estimate => match (carried, self.config.store.count_timeout) {
                // The first page's total, from its page link: once per search, not per page.
                (Some(total @ PageTotal::Counted(_)), _) => Some(total),
                (Some(PageTotal::LeftOut), Some(limit)) => {
                    request.warnings.push(total_left_out(limit));
                    Some(PageTotal::LeftOut)
                }
                (_, None) => Some(PageTotal::Counted(count(conn, &plan).await?)),
                (None, Some(limit)) => match count_within(conn, &plan, limit).await? {
                    Some(total) => Some(PageTotal::Counted(total)),
                    None => {
                        // The operator sees how often totals are dropped (the query is not
                        // logged: it carries blind tokens and ids).
                        tracing::info!(
                            resource_type = %request.resource_type,
                            "Bundle.total left out: the count ran past store.count_timeout_ms"
                        );
                        request.warnings.push(total_left_out(limit));
                        Some(PageTotal::LeftOut)
                    }
                },
            },
        };
        rows.truncate(request.count);
        let (has_next, has_previous) = match direction {
            Direction::After => (more_beyond, request.cursor.is_some() || request.offset > 0),
            Direction::Before | Direction::Last => {
                rows.reverse();
                (direction == Direction::Before, more_beyond)
            }
        };
        let (first_row, last_row) = (
            rows.first().map(|r| r.keys.clone()),
            rows.last().map(|r| r.keys.clone()),
        );
        let mut by_type: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for row in &rows {
            by_type
                .entry(row.resource_type.as_str())
                .or_default()
                .push(row.id.clone());
        }
        let mut stored = Vec::with_capacity(rows.len());
        for (resource_type, ids) in by_type {
            stored.extend(versions::read_current_many(conn, resource_type, &ids).await?);
        }
        // Keep the order the plan chose.
        stored.sort_by_key(|s| {
            rows.iter()
                .position(|row| row.id == s.id && row.resource_type == s.resource_type)
        });
        let mut matches = stored
            .into_iter()
            .map(|s| self.open_version(s))
            .collect::<ApiResult<Vec<_>>>()?;
        // Includes follow the full resources; only the matches are subsetted (R4 search.html#elements).
        let (included, warning) = self.included(conn, &request, &matches).await?;
        if let Some(subset) = &request.subset {
            for resource in matches.iter_mut().filter_map(|m| m.resource.as_mut()) {
                self.validator.element_summary().apply(resource, subset);
            }
        }
        let mut included = included;
        for shown in matches.iter_mut().chain(included.iter_mut()) {
            if let Some(resource) = shown.resource.as_mut() {
                self.present(request.view, resource);
            }
        }
        let mut request = request;
        request.warnings.extend(warning);
        Ok(SearchPage {
            request,
            matches,
            included,
            total,
            has_next,
            has_previous,
            first_row,
            last_row,
            complete_before,
        })
    }
}

impl Service {
    /// Page cursors travel sealed with the key ring (bound to the searched type): the sort-key
    /// values they carry (a family name under `_sort=family`) never appear in a URL, and no one
    /// can forge or edit one, the caller it was issued to included.
    fn seal_cursor(&self, resource_type: &str, cursor: &Cursor) -> ApiResult<String> {
        let aad = Aad::Blob {
            purpose: CURSOR_PURPOSE,
            key: resource_type,
        };
        Ok(URL_SAFE_NO_PAD.encode(self.keys.current().seal(&aad, cursor.encode().as_bytes())?))
    }

    /// Open the request's `_cursor`; a cursor issued to another caller is refused.
    fn open_cursor(&self, request: &mut SearchRequest) -> ApiResult<()> {
        let Some(token) = &request.cursor_token else {
            return Ok(());
        };
        let invalid = || {
            ApiError::bad_request("_cursor is not a page cursor this server issued for this search")
        };
        let sealed = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        let aad = Aad::Blob {
            purpose: CURSOR_PURPOSE,
            key: &request.resource_type,
        };
        let plain = self.keys.open(&aad, &sealed).map_err(|_| invalid())?;
        let cursor = Cursor::decode(std::str::from_utf8(&plain).map_err(|_| invalid())?)?;
        if cursor.owner != request.owner {
            return Err(ApiError::Forbidden(
                "this page link was issued to another caller; run the search again".into(),
            ));
        }
        request.cursor = Some(cursor);
        Ok(())
    }

    /// The searchset Bundle of a page, with `self`, `first`, `previous` and `next` links.
    pub fn searchset(&self, page: &SearchPage) -> Value {
        let base = &self.config.base_url;
        let request = &page.request;
        let path = match (&request.compartment, &request.patient_of) {
            (_, Some(patient)) => format!("/Patient/{patient}/$everything"),
            (Some(c), None) => format!("/{}/{}/{}", c.resource_type, c.id, request.resource_type),
            (None, None) if request.is_system() => String::new(),
            (None, None) => format!("/{}", request.resource_type),
        };
        let link = |extra: Option<(&str, String)>| {
            let mut pairs = request.used.clone();
            pairs.extend(extra.map(|(name, value)| (name.to_string(), value)));
            let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
            if query.is_empty() {
                format!("{base}{path}")
            } else {
                format!("{base}{path}?{query}")
            }
        };
        let cursor = |direction, values: &Option<Vec<Value>>| {
            let values = values.clone().unwrap_or_default();
            let cursor = Cursor {
                direction,
                values,
                owner: request.owner.clone(),
                // Only a total the client left to the server travels on; an accurate one is
                // counted again on every page.
                total: page.total.filter(|_| request.total == TotalMode::Estimate),
            };
            self.seal_cursor(&request.resource_type, &cursor)
                .ok()
                .map(|sealed| ("_cursor", sealed))
        };
        let this_page = match (&request.cursor_token, request.offset) {
            (Some(token), _) => Some(("_cursor", token.clone())),
            (None, 0) => None,
            (None, offset) => Some(("_offset", offset.to_string())),
        };
        let mut links = vec![
            Link {
                relation: "self",
                url: link(this_page),
            },
            Link {
                relation: "first",
                url: link(None),
            },
        ];
        if page.has_previous && page.first_row.is_some() {
            links.push(Link {
                relation: "previous",
                url: link(cursor(Direction::Before, &page.first_row)),
            });
        }
        if page.has_next && page.last_row.is_some() {
            links.push(Link {
                relation: "next",
                url: link(cursor(Direction::After, &page.last_row)),
            });
            links.push(Link {
                relation: "last",
                url: link(cursor(Direction::Last, &None)),
            });
        }
        let outcome = (!request.warnings.is_empty()).then(|| operation_outcome(&request.warnings));
        bundle::searchset(
            base,
            page.complete_before,
            &page.matches,
            &page.included,
            page.total.and_then(PageTotal::counted),
            &links,
            outcome,
        )
    }
}

/// Ids matching `plan`, in its order, the first `limit` of them.
pub async fn matching_ids(conn: &mut Conn, plan: &Plan, limit: usize) -> ApiResult<Vec<String>> {
    Ok(matching_rows(conn, plan, None, limit, 0)
        .await?
        .into_iter()
        .map(|row| row.id)
        .collect())
}

/// One match: which resource, and its values of the plan's order keys.
struct MatchRow {
    resource_type: String,
    id: String,
    keys: Vec<Value>,
}

/// Up to `limit` matches of `plan` with their order-key values: those on the cursor's side of
/// its row (in reverse order for a backward cursor), or from `offset` without one.
async fn matching_rows(
    conn: &mut Conn,
    plan: &Plan,
    cursor: Option<&Cursor>,
    limit: usize,
    offset: usize,
) -> ApiResult<Vec<MatchRow>> {
    let keys: String = plan
        .sort_keys
        .iter()
        .enumerate()
        .map(|(n, key)| format!(", {key} AS k{n}"))
        .collect();
    let mut binds = plan.binds.clone();
    let mut bind = |value: Bind| {
        binds.push(value);
        format!("${}", binds.len())
    };
    let (condition, reverse, offset) = match cursor {
        Some(cursor) => {
            let condition = cursor.condition(&plan.order, &mut bind)?;
            (condition, cursor.direction != Direction::After, 0)
        }
        None => (None, false, offset),
    };
    let condition = condition.map(|c| format!(" WHERE {c}")).unwrap_or_default();
    let sql = format!(
        "SELECT id, resource_type{columns} FROM (SELECT h.id AS id, h.resource_type AS resource_type{keys} FROM resource_heads h WHERE {}) s{condition} \
         ORDER BY {} LIMIT {limit} OFFSET {offset}",
        plan.where_sql,
        order_sql(&plan.order, reverse),
        columns = (0..plan.sort_keys.len())
            .map(|n| format!(", k{n}"))
            .collect::<String>(),
    );
    let backend = Backend::of(conn);
    let rows = with_values_planned(bind_all(sqlx::query(AssertSqlSafe(sql)), binds), backend)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| {
            let (id, resource_type): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            let keys = plan
                .order
                .iter()
                .map(|key| key_value(row, key))
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            Ok(MatchRow {
                resource_type,
                id,
                keys,
            })
        })
        .collect()
}

/// The value of order key `key` in `row` (`id`, `resource_type`, then `k0`, `k1`, … by
/// position), as JSON.
fn key_value(row: &sqlx::any::AnyRow, key: &OrderKey) -> Result<Value, sqlx::Error> {
    let column = match key.column.as_str() {
        "id" => 0,
        "resource_type" => 1,
        k => k
            .strip_prefix('k')
            .and_then(|n| n.parse::<usize>().ok())
            .map_or(0, |n| n + 2),
    };
    Ok(match key.kind {
        KeyKind::Int => row
            .try_get::<Option<i64>, _>(column)?
            .map_or(Value::Null, Value::from),
        KeyKind::Real => row
            .try_get::<Option<f64>, _>(column)?
            .map_or(Value::Null, Value::from),
        KeyKind::Text => row
            .try_get::<Option<String>, _>(column)?
            .map_or(Value::Null, Value::from),
    })
}

/// The number of matches of `plan` (`Bundle.total`), under the statement time limit.
async fn count(conn: &mut Conn, plan: &Plan) -> ApiResult<i64> {
    let backend = Backend::of(conn);
    let row = with_values_planned(
        bind_all(
            sqlx::query(AssertSqlSafe(count_sql(plan))),
            count_binds(plan),
        ),
        backend,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get(0)?)
}

/// [`count`], or `None` when counting takes longer than `limit` (`store.count_timeout_ms`).
async fn count_within(conn: &mut Conn, plan: &Plan, limit: Duration) -> ApiResult<Option<i64>> {
    let row =
        short_limit::fetch_one_within(conn, limit, &count_sql(plan), count_binds(plan)).await?;
    Ok(row.map(|row| row.try_get(0)).transpose()?)
}

fn count_sql(plan: &Plan) -> String {
    format!(
        "SELECT COUNT(*) FROM resource_heads h WHERE {}",
        plan.where_sql
    )
}

fn count_binds(plan: &Plan) -> Vec<Bind> {
    plan.binds[..plan.where_binds].to_vec()
}

/// The warning of a page whose total was not counted: the client knows why `Bundle.total` is
/// missing and how to get it.
fn total_left_out(limit: Duration) -> Issue {
    Issue {
        severity: Severity::Warning,
        code: IssueCode::TooCosts,
        diagnostics: format!(
            "Bundle.total is left out: counting every match took longer than this server spends on a total it was not asked for ({} ms); _total=accurate counts them, within the time limit of a request",
            limit.as_millis()
        ),
        expression: None,
    }
}
