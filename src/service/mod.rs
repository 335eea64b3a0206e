//! The rules of each FHIR interaction, one file each, independent of HTTP.
//!
//! [`Service`] holds what every interaction needs: the store, the key ring, the validator and the
//! search-parameter registry. Every write — REST, transaction Bundle, import — goes through
//! [`write`], so validation, pseudonyms, indexing and encryption are written once. Interactions
//! that can run inside a transaction Bundle take a `&mut Conn` (`*_in` functions); their REST
//! forms open and commit the transaction around them.
//!
//! Callers use [`Service`] and the request/response types of each interaction file.

pub mod audit;
pub mod conditional;
pub mod consent_rules;
pub mod create;
pub mod delete;
pub mod everything;
pub mod export;
pub mod group_commit;
pub mod guard;
pub mod history;
pub mod implied_systems;
pub mod include;
pub mod keys;
pub mod patch;
pub mod read;
pub mod read_plans;
pub mod reindex;
pub mod search;
pub mod transaction;
pub mod update;
pub mod validate;
pub mod write;
pub mod write_clock;

use std::sync::Arc;

use serde_json::Value;

use crate::config::Config;
use crate::crypto::Aad;
use crate::error::{ApiError, ApiResult};
use crate::fhir::validation::Validator;
use crate::search::registry::SearchParamRegistry;
use crate::store::versions::StoredVersion;
use crate::store::{Conn, Store};
use futures::future::BoxFuture;
use write_clock::OpenWrite;

/// Everything an interaction needs; cheap to clone (shared state behind `Arc`s).
#[derive(Clone)]
pub struct Service {
    pub config: Arc<Config>,
    pub store: Store,
    pub keys: keys::SharedKeys,
    pub validator: Arc<Validator>,
    pub registry: Arc<SearchParamRegistry>,
    /// Batches concurrent writes into one commit: every write on SQLite (one writer), plain
    /// creates on both backends (one multi-row INSERT per table for a whole batch).
    pub committer: group_commit::GroupCommitter,
    /// Stamps `meta.lastUpdated` and knows the instant before which every stamped version is
    /// committed.
    pub clock: Arc<write_clock::WriteClock>,
    /// Checks bearer tokens (the HTTP layer turns them into callers).
    pub verifier: Arc<crate::auth::token::TokenVerifier>,
    /// The v3 PurposeOfUse codes and their hierarchy, for consent and audit.
    pub purposes: Arc<crate::auth::consent::PurposesOfUse>,
    /// The bulk export jobs running in this process.
    pub exports: Arc<export::Exports>,
    /// The read statements of restricted callers, planned once per caller and type.
    pub read_plans: Arc<read_plans::ReadPlans>,
    /// The journal of read AuditEvents, once `serve` started it (`audit.read_records =
    /// "journal"`; [`crate::audit::journal`]).
    pub read_journal: Arc<std::sync::OnceLock<crate::audit::journal::ReadJournal>>,
}

/// A resource version as the client sees it: decrypted, with `meta` set.
#[derive(Debug, Clone)]
pub struct VersionedResource {
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    pub last_updated: i64,
    /// `None` for a delete marker.
    pub resource: Option<Value>,
    pub method: String,
}

impl VersionedResource {
    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.version)
    }
}

/// The result of a write, enough for status, headers and the body.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    pub stored: VersionedResource,
    /// 201 Created (true) or 200 OK.
    pub created: bool,
    /// False when a conditional create found its match, or a delete found nothing to delete.
    pub changed: bool,
}

impl Service {
    /// Is `name` a resource type this server serves?
    pub fn check_type(&self, name: &str) -> ApiResult<()> {
        if self.validator.is_resource_type(name) {
            Ok(())
        } else {
            Err(ApiError::NotFound(format!(
                "`{}` is not a FHIR R4 resource type this server supports",
                crate::fhir::id::truncate(name)
            )))
        }
    }

    /// Decrypt a stored version.
    pub fn open_version(&self, stored: StoredVersion) -> ApiResult<VersionedResource> {
        let resource = match &stored.ciphertext {
            Some(sealed) if !stored.deleted => {
                let aad = Aad::Resource {
                    resource_type: &stored.resource_type,
                    id: &stored.id,
                    version: stored.version,
                };
                let plain = self.keys.open(&aad, sealed)?;
                let value: Value = serde_json::from_slice(&plain).map_err(|error| {
                    tracing::error!(resource_type = %stored.resource_type, id = %stored.id, version = stored.version, %error, "stored body is not JSON");
                    ApiError::Internal
                })?;
                Some(value)
            }
            _ => None,
        };
        Ok(VersionedResource {
            resource_type: stored.resource_type,
            id: stored.id,
            version: stored.version,
            last_updated: stored.last_updated,
            resource,
            method: stored.method,
        })
    }

    /// A connection for reads outside a transaction.
    pub async fn reader(&self) -> ApiResult<sqlx::pool::PoolConnection<sqlx::Any>> {
        Ok(self.store.reader().await?)
    }

    /// Run `work` as one atomic write: all of it commits, or none of it. On SQLite it shares a
    /// group commit with concurrent writes; on PostgreSQL, whose connections write in parallel, it
    /// runs in a transaction of its own.
    /// Either way the call returns only after the commit (or the rollback) is done, and the
    /// write runs to its end even if the caller stops waiting (a client hanging up).
    pub async fn write<T, F>(&self, work: F) -> ApiResult<T>
    where
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, ApiResult<T>> + Send + 'static,
        T: Send + 'static,
    {
        self.write_opened(self.clock.open(), work).await
    }

    /// [`Service::write`] for work that stamped versions before it (prepared off the writer)
    /// under `open`, which stays open until the commit is done.
    pub async fn write_opened<T, F>(&self, open: OpenWrite, work: F) -> ApiResult<T>
    where
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, ApiResult<T>> + Send + 'static,
        T: Send + 'static,
    {
        if self.store.backend() == crate::store::Backend::Sqlite {
            return self.committer.write(open, work).await;
        }
        let store = self.store.clone();
        let write = tokio::spawn(async move {
            let _open = open;
            let mut tx = store.begin().await?;
            match work(&mut tx).await {
                Ok(value) => {
                    tx.commit().await?;
                    Ok(value)
                }
                Err(error) => {
                    if let Err(rollback) = tx.rollback().await {
                        tracing::warn!(error = %rollback, "rollback failed");
                    }
                    Err(error)
                }
            }
        });
        write.await.unwrap_or_else(|_| {
            tracing::error!("a write task panicked; its transaction was rolled back");
            Err(ApiError::Internal)
        })
    }
}
