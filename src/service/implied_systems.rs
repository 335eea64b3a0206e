//! Upgrading token rows of `code` elements written before they carried their implied system
//! ([`crate::search::code_systems`]): at start-up, in one transaction. Every later write stores
//! the system itself, so after the first start this finds nothing to change.

use crate::error::ApiResult;
use crate::store::index::set_implied_system;

use super::Service;

impl Service {
    /// Give stored `code` tokens their implied system; returns how many rows changed.
    pub async fn fill_implied_code_systems(&self) -> ApiResult<u64> {
        let targets: Vec<(String, String, String, Vec<String>)> = self
            .registry
            .implied_systems
            .iter()
            .map(|(ty, code, implied)| {
                (
                    ty.to_string(),
                    code.to_string(),
                    implied.system.clone(),
                    implied.codes.clone(),
                )
            })
            .collect();
        let updated = self
            .write(move |conn| {
                Box::pin(async move {
                    let mut updated = 0;
                    for (resource_type, param, system, codes) in &targets {
                        updated +=
                            set_implied_system(conn, resource_type, param, system, codes).await?;
                    }
                    Ok(updated)
                })
            })
            .await?;
        if updated > 0 {
            tracing::info!(
                rows = updated,
                "token rows of code elements given the code system their binding implies"
            );
        }
        Ok(updated)
    }
}
