//! history at instance, type and system level: <https://hl7.org/fhir/R4/http.html#history>.
//!
//! Pages are cut with a keyset cursor on the global write sequence (`_page`, the sequence number
//! of the last entry of the previous page), so a page never shifts when others write meanwhile.

use super::{Service, VersionedResource};
use std::sync::Arc;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::fhir::instant::Micros;
use crate::search::extract::parse_date_range;
use crate::store::versions::{self, HistoryQuery};

pub struct HistoryPage {
    pub entries: Vec<VersionedResource>,
    /// `None` for restricted callers: their pages leave out versions they may not see, which a
    /// count of the version table would still include.
    pub total: Option<i64>,
    /// Cursor of the next page, if there is one.
    pub next_page: Option<i64>,
    /// The parameters the client gave, for the links.
    pub used: Vec<(String, String)>,
    /// Every version stamped before this instant was committed before the history was read:
    /// the Bundle's `meta.lastUpdated`, the `_since` of the next poll ([`super::write_clock`]).
    pub complete_before: Micros,
}

impl Service {
    pub async fn history(
        &self,
        caller: &Arc<Caller>,
        resource_type: Option<&str>,
        id: Option<&str>,
        params: &[(String, String)],
    ) -> ApiResult<HistoryPage> {
        let mut query = HistoryQuery {
            resource_type,
            id,
            limit: self.config.default_page_size as i64,
            ..Default::default()
        };
        let mut used = Vec::new();
        for (name, value) in params {
            match name.as_str() {
                "_since" => {
                    let (start, _) = parse_instant_param(name, value)?;
                    query.since = Some(start);
                }
                "_at" => query.current_during = Some(parse_instant_param(name, value)?),
                "_count" => {
                    let count: usize = value.parse().map_err(|_| {
                        ApiError::bad_request("_count must be a non-negative integer")
                    })?;
                    if count > self.config.max_page_size {
                        return Err(ApiError::bad_request(format!(
                            "_count may be at most {} on this server",
                            self.config.max_page_size
                        )));
                    }
                    query.limit = count as i64;
                }
                "_page" => {
                    query.before_seq = Some(value.parse().map_err(|_| {
                        ApiError::bad_request("_page is not a valid history page cursor")
                    })?);
                    continue;
                }
                _ => continue,
            }
            used.push((name.clone(), value.clone()));
        }
        let complete_before = self.clock.complete_before();
        let mut conn = self.reader().await?;
        let visible;
        if let (Some(t), Some(i)) = (resource_type, id) {
            if versions::head(&mut conn, self.store.backend(), t, i, false)
                .await?
                .is_none()
            {
                return Err(super::read::not_found(t, i));
            }
            self.guard_read(&mut conn, caller, t, i).await?;
        } else {
            visible = self.history_visibility(caller, resource_type)?;
            query.visible = visible
                .as_ref()
                .map(|(sql, binds)| (sql.as_str(), binds.as_slice()));
        }
        let total = versions::history_count(&mut conn, &query).await?;
        let mut page_query = query.clone();
        page_query.limit += 1;
        let mut rows = versions::history(&mut conn, &page_query).await?;
        let next_page = if rows.len() as i64 > query.limit {
            rows.truncate(query.limit as usize);
            rows.last().map(|row| row.seq)
        } else {
            None
        };
        let entries = rows
            .into_iter()
            .map(|row| self.open_for(caller, row))
            .collect::<ApiResult<Vec<_>>>()?;
        let entries = self
            .without_moved_versions(&mut conn, caller, entries)
            .await?;
        let total = caller.is_unrestricted().then_some(total);
        Ok(HistoryPage {
            entries,
            total,
            next_page,
            used,
            complete_before,
        })
    }
}

fn parse_instant_param(name: &str, value: &str) -> ApiResult<(i64, i64)> {
    parse_date_range(value).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{name} must be a FHIR instant or date, e.g. 2026-01-31T12:00:00Z"
        ))
    })
}
