//! `_include` and `_revinclude`: the resources a page points to, and the resources that point
//! to it. <https://hl7.org/fhir/R4/search.html#include>
//!
//! Forward includes read the references out of the page's own (decrypted) resources with the
//! parameter's FHIRPath expression, so they cost no index scan; reverse includes look the
//! referring resources up in `search_reference` by target. Only references to this server count
//! (relative, or absolute on our base URL): an absolute reference to another server never pulls
//! in a local resource that happens to share its type and id.

use std::collections::{BTreeMap, HashSet};

use sqlx::{AssertSqlSafe, Row};

use super::{Service, VersionedResource};
use crate::error::ApiResult;
use crate::fhir::outcome::{Issue, IssueCode, Severity};
use crate::search::extract::{IndexValue, param_values};
use crate::search::query::{Include, SearchRequest};
use crate::search::registry::{ParamType, SearchParam};
use crate::store::{Bind, Conn, bind_all, versions};

/// Most resources one page may include; the rest are left out with a warning.
pub const MAX_INCLUDED: usize = 1000;

/// Rounds of `:iterate` after the first.
const MAX_ITERATIONS: usize = 4;

type Key = (String, String);

impl Service {
    /// The resources `request.includes` add to `matches`, each once and none of the matches, and
    /// a warning if [`MAX_INCLUDED`] cut them short.
    pub async fn included(
        &self,
        conn: &mut Conn,
        request: &SearchRequest,
        matches: &[VersionedResource],
    ) -> ApiResult<(Vec<VersionedResource>, Option<Issue>)> {
        let mut seen: HashSet<Key> = matches
            .iter()
            .map(|m| (m.resource_type.clone(), m.id.clone()))
            .collect();
        let mut included: Vec<VersionedResource> = Vec::new();
        let mut frontier_start = 0;
        for round in 0..=MAX_ITERATIONS {
            let directives: Vec<&Include> = request
                .includes
                .iter()
                .filter(|i| round == 0 || i.iterate)
                .collect();
            if directives.is_empty() {
                break;
            }
            let frontier = if round == 0 {
                matches
            } else {
                &included[frontier_start..]
            };
            let mut wanted: Vec<Key> = Vec::new();
            for directive in directives {
                if directive.reverse {
                    wanted.extend(self.referring(conn, directive, frontier).await?);
                } else {
                    wanted.extend(self.referenced(directive, frontier));
                }
            }
            wanted.retain(|key| seen.insert(key.clone()));
            // What the caller may not see is never included, nor counted against the cap (the
            // matches were filtered by the search itself).
            match &request.visibility {
                Some(visibility) => wanted = self.visible_keys(conn, visibility, wanted).await?,
                // Unrestricted (an admin): everything but the audit trail, which is the auditors'.
                None => wanted
                    .retain(|(resource_type, _)| resource_type != crate::auth::role::AUDIT_EVENT),
            }
            if wanted.is_empty() {
                break;
            }
            let room = MAX_INCLUDED - included.len();
            let truncated = wanted.len() > room;
            wanted.truncate(room);
            frontier_start = included.len();
            let mut by_type: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (resource_type, id) in wanted {
                by_type.entry(resource_type).or_default().push(id);
            }
            for (resource_type, ids) in by_type {
                for stored in versions::read_current_many(conn, &resource_type, &ids).await? {
                    included.push(self.open_version(stored)?);
                }
            }
            if truncated {
                let warning = Issue {
                    severity: Severity::Warning,
                    code: IssueCode::TooCosts,
                    diagnostics: format!(
                        "_include/_revinclude stopped at {MAX_INCLUDED} included resources"
                    ),
                    expression: None,
                };
                return Ok((included, Some(warning)));
            }
        }
        Ok((included, None))
    }

    /// Those of `keys` that `visibility` lets through, in their order.
    async fn visible_keys(
        &self,
        conn: &mut Conn,
        visibility: &std::sync::Arc<dyn crate::search::query::Visibility>,
        keys: Vec<Key>,
    ) -> ApiResult<Vec<Key>> {
        let mut by_type: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (resource_type, id) in &keys {
            by_type
                .entry(resource_type.clone())
                .or_default()
                .push(id.clone());
        }
        let mut visible: HashSet<Key> = HashSet::new();
        for (resource_type, ids) in by_type {
            for id in self
                .filter_visible(conn, visibility, &resource_type, &ids)
                .await?
            {
                visible.insert((resource_type.clone(), id));
            }
        }
        Ok(keys
            .into_iter()
            .filter(|key| visible.contains(key))
            .collect())
    }

    /// The reference parameters a directive follows on `resource_type`.
    fn include_params<'r>(
        &'r self,
        directive: &Include,
        resource_type: &str,
    ) -> Vec<&'r SearchParam> {
        match &directive.param {
            Some(code) => self.registry.get(resource_type, code).into_iter().collect(),
            None => self
                .registry
                .params_for(resource_type)
                .into_iter()
                .filter(|p| p.kind == ParamType::Reference)
                .collect(),
        }
    }

    /// Targets of `_include`: what the frontier's resources of the directive's type point to.
    fn referenced(&self, directive: &Include, frontier: &[VersionedResource]) -> Vec<Key> {
        let mut out = Vec::new();
        for source in frontier
            .iter()
            .filter(|r| r.resource_type == directive.source_type)
        {
            let Some(resource) = &source.resource else {
                continue;
            };
            for param in self.include_params(directive, &source.resource_type) {
                let Some(expression) = param.expression_for(&source.resource_type) else {
                    continue;
                };
                let Ok(values) = param_values(param, expression, resource) else {
                    continue;
                };
                for value in values {
                    if let IndexValue::Reference {
                        target_type: Some(target_type),
                        target_id: Some(id),
                        url,
                        ..
                    } = value
                    {
                        let wanted_type = directive
                            .target_type
                            .as_ref()
                            .is_none_or(|t| *t == target_type);
                        if wanted_type && self.is_local_reference(&url) {
                            out.push((target_type, id));
                        }
                    }
                }
            }
        }
        out
    }

    /// Sources of `_revinclude`: resources of the directive's type whose parameter points at one
    /// of the frontier's resources.
    async fn referring(
        &self,
        conn: &mut Conn,
        directive: &Include,
        frontier: &[VersionedResource],
    ) -> ApiResult<Vec<Key>> {
        let mut targets: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for target in frontier {
            targets
                .entry(target.resource_type.as_str())
                .or_default()
                .push(target.id.as_str());
        }
        let mut out = Vec::new();
        for param in self.include_params(directive, &directive.source_type) {
            for (target_type, ids) in &targets {
                if directive
                    .target_type
                    .as_deref()
                    .is_some_and(|t| t != *target_type)
                {
                    continue;
                }
                let mut binds = vec![
                    Bind::Text(directive.source_type.clone()),
                    Bind::Text(param.code.clone()),
                    Bind::Text(target_type.to_string()),
                ];
                binds.extend(ids.iter().map(|id| Bind::Text(id.to_string())));
                let placeholders: Vec<String> =
                    (4..=binds.len()).map(|n| format!("${n}")).collect();
                let sql = format!(
                    "SELECT DISTINCT r.id, r.url FROM search_reference r \
                     WHERE r.resource_type = $1 AND r.param = $2 AND r.target_type = $3 AND r.target_id IN ({}) ORDER BY r.id",
                    placeholders.join(", ")
                );
                for row in bind_all(sqlx::query(AssertSqlSafe(sql)), binds)
                    .fetch_all(&mut *conn)
                    .await?
                {
                    let (id, url): (String, String) = (row.try_get(0)?, row.try_get(1)?);
                    if self.is_local_reference(&url) {
                        out.push((directive.source_type.clone(), id));
                    }
                }
            }
        }
        Ok(out)
    }

    /// A reference to this server: relative, or absolute on our base URL.
    pub fn is_local_reference(&self, url: &str) -> bool {
        !url.contains("://")
            || url
                .strip_prefix(self.config.base_url.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}
