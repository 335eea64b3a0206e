//! Resolving the search criteria of conditional create, update and delete to the resources they
//! match. The criteria are a full search, parsed strictly: an unknown parameter must not silently
//! widen a conditional delete or update.

use super::Service;
use super::search::matching_ids;
use std::sync::Arc;

use crate::auth::access::visibility;
use crate::auth::{Caller, Permission};
use crate::error::{ApiError, ApiResult};
use crate::store::Conn;

pub enum Matches {
    None,
    One(String),
    /// Several matches (at least this many).
    Many(usize),
}

impl Service {
    /// What `criteria` (a query string such as `identifier=http://x|1`) matches among current
    /// `resource_type` resources, seen from inside the caller's transaction, among those the
    /// caller may touch for `permission` (what it cannot see neither matches nor counts).
    pub async fn conditional_matches(
        &self,
        conn: &mut Conn,
        caller: &Arc<Caller>,
        permission: Permission,
        resource_type: &str,
        criteria: &str,
    ) -> ApiResult<Matches> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(criteria.trim_start_matches('?')).map_err(|_| {
                ApiError::bad_request("the conditional criteria are not a valid query string")
            })?;
        let mut request = self.parse_search(resource_type, &pairs, true)?;
        // The answer (none, one, several) is information too: the same searches are refused as
        // in a pseudonymous caller's own searches.
        if self.view(caller).is_some() {
            crate::auth::pseudonymise::check_search(
                &request,
                &self.registry,
                &self.config.pseudonym_system,
            )?;
        }
        request.visibility = visibility(caller, &self.registry, permission);
        if !request.has_criteria() {
            return Err(ApiError::PreconditionFailed(
                "conditional operations need at least one search parameter that selects resources"
                    .into(),
            ));
        }
        if self.store.backend() == crate::store::Backend::Postgres {
            // Two concurrent conditional writes with the same criteria must not both see "no
            // match": serialise them on a transaction-scoped lock keyed by type and criteria.
            // (SQLite's single writer already serialises every write.)
            let key = lock_key(resource_type, criteria);
            sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock($1)) AS locked")
                .bind(key)
                .execute(&mut *conn)
                .await?;
        }
        let plan = self.plan_search(&request)?;
        let mut ids = matching_ids(conn, &plan, 2).await?;
        Ok(match ids.len() {
            0 => Matches::None,
            1 => Matches::One(ids.remove(0)),
            n => Matches::Many(n),
        })
    }
}

/// A stable 64-bit lock key for (type, criteria): the first 8 bytes of their SHA-256.
fn lock_key(resource_type: &str, criteria: &str) -> i64 {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{resource_type}?{criteria}").as_bytes(),
    );
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest.as_ref()[..8]);
    i64::from_be_bytes(bytes)
}
