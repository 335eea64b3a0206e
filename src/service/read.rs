//! read and vread: <https://hl7.org/fhir/R4/http.html#read>, <https://hl7.org/fhir/R4/http.html#vread>.

use super::{Service, VersionedResource};
use std::sync::Arc;

use crate::auth::{Caller, Permission};
use crate::error::{ApiError, ApiResult};
use crate::fhir::validation::ConformanceResource;
use crate::store::versions;

impl Service {
    /// The current version; 404 if it never existed, 410 if its current version is a delete.
    pub async fn read(
        &self,
        caller: &Arc<Caller>,
        resource_type: &str,
        id: &str,
    ) -> ApiResult<VersionedResource> {
        if let Some(found) = self.validator.conformance_resource(resource_type, id) {
            return Ok(conformance_version(found));
        }
        let mut conn = self.reader().await?;
        if !caller.is_unrestricted() {
            let stored = self
                .read_visible(&mut conn, caller, resource_type, id)
                .await?
                .ok_or_else(|| not_found(resource_type, id))?;
            return self.open_for(caller, stored);
        }
        self.require(caller, resource_type, Permission::Read)?;
        let stored = versions::read_current(&mut conn, resource_type, id)
            .await?
            .ok_or_else(|| not_found(resource_type, id))?;
        if stored.deleted {
            return Err(ApiError::Gone(format!(
                "{resource_type}/{id} was deleted (version {})",
                stored.version
            )));
        }
        self.open_for(caller, stored)
    }

    /// One version; a delete marker is 410 as the spec asks.
    pub async fn vread(
        &self,
        caller: &Arc<Caller>,
        resource_type: &str,
        id: &str,
        version: i64,
    ) -> ApiResult<VersionedResource> {
        if let Some(found) = self.validator.conformance_resource(resource_type, id) {
            return match version {
                1 => Ok(conformance_version(found)),
                _ => Err(ApiError::NotFound(format!(
                    "{resource_type}/{id} has no version {version}"
                ))),
            };
        }
        let mut conn = self.reader().await?;
        self.guard_read(&mut conn, caller, resource_type, id)
            .await?;
        let stored = versions::read_version(&mut conn, resource_type, id, version)
            .await?
            .ok_or_else(|| {
                ApiError::NotFound(format!("{resource_type}/{id} has no version {version}"))
            })?;
        if stored.deleted {
            return Err(ApiError::Gone(format!(
                "version {version} of {resource_type}/{id} is a deletion"
            )));
        }
        let opened = self.open_for(caller, stored)?;
        self.without_moved_versions(&mut conn, caller, vec![opened])
            .await?
            .pop()
            .ok_or_else(|| {
                ApiError::NotFound(format!("{resource_type}/{id} has no version {version}"))
            })
    }
}

/// A resource of the profiles folder, as version 1 (it changes only with a new release).
fn conformance_version(found: &ConformanceResource) -> VersionedResource {
    VersionedResource {
        resource_type: found.resource_type.clone(),
        id: found.id.clone(),
        version: 1,
        last_updated: found.last_updated,
        resource: Some(found.resource.clone()),
        method: "PUT".into(),
    }
}

pub fn not_found(resource_type: &str, id: &str) -> ApiError {
    ApiError::NotFound(format!("{resource_type}/{id} does not exist"))
}
