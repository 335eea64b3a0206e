//! The rules of stored Consents in `consent_rules`. Every Consent write stores its rules with it
//! ([`Service::seal_version`]); Consents stored before the table existed (an upgrade) get theirs
//! at start-up: when the table is empty but live Consents exist, they are re-indexed
//! ([`super::reindex`]) in one transaction, so that an interrupted start leaves the table empty
//! and the next start does it all again. Afterwards every Consent write keeps the table current.

use serde_json::Value;

use crate::auth::consent::rules::rows_of;
use crate::error::ApiResult;
use crate::store::index::IndexRow;
use crate::store::versions;

use super::Service;
use super::reindex::HeldHeads;

impl Service {
    /// Write the rules of every live Consent if none are stored yet; returns how many Consents
    /// got theirs.
    pub async fn fill_missing_consent_rules(&self) -> ApiResult<u64> {
        let mut conn = self.reader().await?;
        let rules: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM consent_rules")
            .fetch_one(&mut *conn)
            .await?;
        if rules > 0 {
            return Ok(0);
        }
        let ids = versions::live_ids(&mut conn, "Consent").await?;
        drop(conn);
        if ids.is_empty() {
            return Ok(0);
        }
        let batch = self.read_reindex_ids("Consent", &ids).await?;
        // Wait for a head another server on the same database holds rather than skip it: this
        // one transaction must cover every Consent.
        let outcome = self.commit_retrying(&batch, HeldHeads::Wait).await?;
        tracing::info!(
            consents = outcome.counts.reindexed,
            "consent rules written for Consents stored before consent enforcement"
        );
        Ok(outcome.counts.reindexed)
    }

    /// The rule rows of a stored Consent whose version was written at `last_updated`; `None`
    /// (and a warning naming it, so that someone fixes it) when they cannot be computed. A Consent
    /// stored before enforcement that it cannot enforce stays stored and decides nothing, as it
    /// did.
    pub(super) fn stored_consent_rules(
        &self,
        id: &str,
        body: &Value,
        last_updated: i64,
    ) -> Option<Vec<IndexRow>> {
        match rows_of(body, last_updated, &self.config.base_url) {
            Ok(rules) => Some(rules.into_iter().map(IndexRow::Consent).collect()),
            Err(why) => {
                tracing::warn!(%id, %why, "a stored Consent cannot be enforced; fix or withdraw it");
                None
            }
        }
    }
}
