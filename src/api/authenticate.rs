//! The authentication middleware of every protected route: a verified bearer token (or a device
//! hub's client certificate, for ingestion) becomes the request's [`Caller`]; anything else is a
//! 401 with a `WWW-Authenticate` challenge. Per-caller request rates are capped here too.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::auth::scope::parse_scopes;
use crate::auth::token::{Claims, bearer_token};
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};

pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    match caller_of(&state, &request) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(refusal) => {
            let refusal = refusal.into_response();
            if let Some(record) = super::audit::refused_login(&request, &refusal)
                && let Err(error) = state.service.audit(vec![record]).await
            {
                // Refused either way; the log keeps what the trail could not.
                tracing::error!(%error, "the audit record of a refused login could not be written");
            }
            refusal
        }
    }
}

/// The header a request declares its purpose of use in (a v3 PurposeOfUse code).
pub const PURPOSE_HEADER: &str = "x-purpose-of-use";

fn caller_of(state: &AppState, request: &Request) -> ApiResult<Arc<Caller>> {
    let caller = match hub_of(request) {
        Some(hub)
            if !request
                .headers()
                .contains_key(axum::http::header::AUTHORIZATION) =>
        {
            Arc::new(hub)
        }
        _ => token_caller(state, request)?,
    };
    state.rate_limiter.check(&caller.fingerprint())?;
    let declared = match request.headers().get(PURPOSE_HEADER) {
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::bad_request("X-Purpose-Of-Use must be a v3 PurposeOfUse code")
        })?),
        None => None,
    };
    let address = request
        .extensions()
        .get::<crate::tls::Peer>()
        .map(|peer| peer.addr.ip().to_string());
    let service = &state.service;
    Ok(Arc::new(caller.for_request(
        declared,
        address,
        &service.purposes,
        service.config.consent_default,
    )?))
}

/// The caller of the request's bearer token. Refused tokens count against the sender's address,
/// and an address that keeps sending them is turned away before any signature is checked.
fn token_caller(state: &AppState, request: &Request) -> ApiResult<Arc<Caller>> {
    let address = request
        .extensions()
        .get::<crate::tls::Peer>()
        .map(|peer| format!("refused:{}", peer.addr.ip()));
    if let Some(address) = &address {
        state.rate_limiter.check_not_exhausted(address)?;
    }
    bearer_token(request.headers())
        .and_then(|token| verified_caller(state, token))
        .inspect_err(|_| {
            if let Some(address) = &address {
                let _ = state.rate_limiter.check(address);
            }
        })
}

/// The caller of a bearer token: from the cache of recently verified tokens, or verified now.
fn verified_caller(state: &AppState, token: &str) -> ApiResult<Arc<Caller>> {
    let now = chrono::Utc::now().timestamp();
    let verifier = &state.service.verifier;
    verifier.refresh_keys();
    let generation = verifier.key_generation();
    if let Some(caller) = state.token_cache.get(token, now, generation) {
        return Ok(caller);
    }
    let claims = verifier.verify(token, now)?;
    let expires = claims.exp;
    let caller = Arc::new(caller_from_claims(claims)?);
    state
        .token_cache
        .insert(token, caller.clone(), expires, generation);
    Ok(caller)
}

/// A device hub that presented a configured client certificate ([`Caller::of_hub`]).
fn hub_of(request: &Request) -> Option<Caller> {
    let hub = request
        .extensions()
        .get::<crate::tls::Peer>()?
        .hub
        .as_ref()?;
    Some(Caller::of_hub(hub))
}

/// The caller a verified token describes. A token without a known role, with several, or with
/// a malformed resource scope, is refused (403): it is genuine, but grants nothing this server
/// can honour.
pub fn caller_from_claims(claims: Claims) -> ApiResult<Caller> {
    let role = one_role(&claims.roles)?;
    let scopes =
        parse_scopes(&claims.scope).map_err(|error| ApiError::Forbidden(error.to_string()))?;
    Ok(Caller {
        subject: claims.sub,
        issuer: claims.iss,
        client_id: claims.client_id,
        role,
        scopes,
        patient: claims
            .patient
            .as_deref()
            .map(|p| context_id(p, "Patient", "patient"))
            .transpose()?,
        org: claims
            .org
            .as_deref()
            .map(|o| context_id(o, "Organization", "org"))
            .transpose()?,
        purpose: claims.purpose,
        consent: None,
        break_glass: false,
        address: None,
    })
}

/// The one role among a token's role values. Values that are no role of this server are
/// passed over (an identity provider's `roles` often holds other applications' roles too); a
/// token must carry exactly one of ours: two would leave the rules to guess which applies.
fn one_role(values: &[String]) -> ApiResult<Role> {
    let mut ours: Vec<Role> = Vec::new();
    for role in values.iter().filter_map(|value| value.parse::<Role>().ok()) {
        if !ours.contains(&role) {
            ours.push(role);
        }
    }
    match ours.as_slice() {
        [role] => Ok(*role),
        [] if values.is_empty() => Err(ApiError::Forbidden(
            "the token carries no role claim; see docs/security.md for the roles".into(),
        )),
        [] => Err(ApiError::Forbidden(format!(
            "the token's role claim names no role of this server; the roles are {}",
            Role::ALL.map(Role::name).join(", ")
        ))),
        several => Err(ApiError::Forbidden(format!(
            "the token carries several roles ({}); a token must carry exactly one",
            several
                .iter()
                .map(|role| role.name())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The id in a context claim (`patient`, `org`): a bare FHIR id or `Type/id`, nothing else. The
/// access rules put it into searches, so a claim such as `org-a,org-b` must never widen them.
fn context_id(value: &str, resource_type: &str, claim: &str) -> ApiResult<String> {
    let id = crate::auth::caller::claim_id(value, resource_type);
    if crate::fhir::id::is_valid_id(&id) {
        Ok(id)
    } else {
        Err(ApiError::Forbidden(format!(
            "the token's `{claim}` claim is not a {resource_type} id"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(values: &[&str]) -> ApiResult<Role> {
        one_role(&values.iter().map(|v| v.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn a_token_carries_one_role() {
        assert_eq!(roles(&["clinician"]).unwrap(), Role::Clinician);
        assert_eq!(
            roles(&["Task.Read", "device-hub", "offline_access"]).unwrap(),
            Role::DeviceHub,
            "others' roles are passed over"
        );
        assert_eq!(
            roles(&["admin", "admin"]).unwrap(),
            Role::Admin,
            "the same role twice is one"
        );
        let message = |result: ApiResult<Role>| match result {
            Err(ApiError::Forbidden(message)) => message,
            other => panic!("{other:?}"),
        };
        assert!(message(roles(&[])).contains("no role claim"));
        assert!(message(roles(&["nobody"])).contains("names no role of this server"));
        assert!(message(roles(&["admin", "auditor"])).contains("several roles (admin, auditor)"));
    }
}
