//! Path extractors. A request naming an unknown resource type or a malformed id is answered here
//! with an OperationOutcome, before the service or the store sees it (crates.io's `CratePath`).

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use super::AppState;
use crate::error::ApiError;
use crate::fhir::id::{FhirId, parse_version};

/// `/fhir/{type}`
pub struct TypePath(pub String);

/// `/fhir/{type}/{id}`
pub struct InstancePath {
    pub resource_type: String,
    pub id: FhirId,
}

/// `/fhir/{type}/{id}/_history/{vid}`
pub struct VersionPath {
    pub resource_type: String,
    pub id: FhirId,
    pub version: i64,
}

/// `/fhir/{compartment type}/{id}/{type}`: a search inside a compartment.
pub struct CompartmentPath {
    pub compartment_type: String,
    pub id: FhirId,
    pub resource_type: String,
}

async fn segments(parts: &mut Parts, state: &AppState) -> Result<Vec<String>, ApiError> {
    let Path(segments) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
        .await
        .map_err(|_| ApiError::bad_request("the request path is malformed"))?;
    let segments: Vec<String> = segments.into_iter().map(|(_, value)| value).collect();
    if let Some(resource_type) = segments.first() {
        state.service.check_type(resource_type)?;
    }
    Ok(segments)
}

impl FromRequestParts<AppState> for TypePath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let segments = segments(parts, state).await?;
        Ok(TypePath(segments.into_iter().next().unwrap_or_default()))
    }
}

impl FromRequestParts<AppState> for InstancePath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let segments = segments(parts, state).await?;
        match segments.as_slice() {
            [resource_type, id, ..] => Ok(InstancePath {
                resource_type: resource_type.clone(),
                id: FhirId::parse(id)?,
            }),
            _ => Err(ApiError::bad_request(
                "the request path needs a resource type and an id",
            )),
        }
    }
}

impl FromRequestParts<AppState> for VersionPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let segments = segments(parts, state).await?;
        match segments.as_slice() {
            [resource_type, id, version] => Ok(VersionPath {
                resource_type: resource_type.clone(),
                id: FhirId::parse(id)?,
                version: parse_version(version)?,
            }),
            _ => Err(ApiError::bad_request(
                "the request path needs a resource type, an id and a version",
            )),
        }
    }
}

impl FromRequestParts<AppState> for CompartmentPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let segments = segments(parts, state).await?;
        match segments.as_slice() {
            [compartment_type, id, resource_type] => {
                state.service.check_type(resource_type)?;
                Ok(CompartmentPath {
                    compartment_type: compartment_type.clone(),
                    id: FhirId::parse(id)?,
                    resource_type: resource_type.clone(),
                })
            }
            _ => Err(ApiError::bad_request(
                "the request path needs a compartment type, an id and a resource type",
            )),
        }
    }
}
