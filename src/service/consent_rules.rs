//! Filling `consent_rules` for Consents stored before the table existed (an upgrade): at start-up,
//! when the table is empty but live Consents exist, their current versions are read, and their
//! rules written, in one transaction. Afterwards every Consent write keeps the table current.

use crate::auth::consent::rules::rows_of;
use crate::error::ApiResult;
use crate::store::index::{self, IndexRow};
use crate::store::versions;

use super::Service;

impl Service {
    /// Write the rules of every live Consent if none are stored yet; returns how many Consents
    /// were read.
    pub async fn fill_missing_consent_rules(&self) -> ApiResult<usize> {
        let mut conn = self.reader().await?;
        let rules: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM consent_rules")
            .fetch_one(&mut *conn)
            .await?;
        if rules > 0 {
            return Ok(0);
        }
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM resource_heads WHERE resource_type = 'Consent' AND deleted = 0",
        )
        .fetch_all(&mut *conn)
        .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let mut rows: Vec<(String, Vec<IndexRow>)> = Vec::with_capacity(ids.len());
        for stored in versions::read_current_many(&mut conn, "Consent", &ids).await? {
            let opened = self.open_version(stored)?;
            let Some(body) = opened.resource else {
                continue;
            };
            // A Consent stored before enforcement that it cannot enforce stays stored, and decides
            // nothing (as it did); the log names it so that someone fixes it.
            match rows_of(&body, opened.last_updated, &self.config.base_url) {
                Ok(rules) => rows.push((
                    opened.id,
                    rules.into_iter().map(IndexRow::Consent).collect(),
                )),
                Err(why) => {
                    tracing::warn!(id = %opened.id, %why, "a stored Consent cannot be enforced; fix or withdraw it")
                }
            }
        }
        drop(conn);
        let count = rows.len();
        self.write(move |conn| {
            Box::pin(async move {
                let borrowed: Vec<(&str, &str, &[IndexRow])> = rows
                    .iter()
                    .map(|(id, r)| ("Consent", id.as_str(), r.as_slice()))
                    .collect();
                index::insert_rows(conn, &borrowed).await?;
                Ok(())
            })
        })
        .await?;
        tracing::info!(
            consents = count,
            "consent rules written for Consents stored before consent enforcement"
        );
        Ok(count)
    }
}
