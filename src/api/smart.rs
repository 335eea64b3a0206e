//! `GET [base]/.well-known/smart-configuration` (SMART App Launch 2.0, "Conformance") and the key
//! ring's public key set, both without authentication.
//!
//! fhirvault is a resource server, not an authorization server: it verifies bearer tokens and has
//! no authorize or token endpoint, no PKCE and no client registration of its own. The document
//! therefore lists only what is true here — the issuer and scopes it accepts, the key set it
//! publishes when it trusts its own key ring — and the identity provider's endpoints when the
//! operator configured them (`auth.authorization_endpoint`, `auth.token_endpoint`); fields SMART
//! marks required but this server cannot vouch for (grant types, PKCE methods) are left out
//! rather than guessed.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use crate::auth::token::{Jwk, JwkSet};
use crate::config::Config;
use crate::error::ApiError;

/// SMART capabilities the token checks implement: SMART v2 scope syntax at patient and user level.
/// Keep in step with the scope parser: list a capability only once it is enforced.
const CAPABILITIES: &[&str] = &["permission-v2", "permission-patient", "permission-user"];

/// The widest scope of each context; narrower ones (`patient/Observation.rs`, …) follow the
/// same SMART v2 grammar.
const SCOPES_SUPPORTED: &[&str] = &["patient/*.cruds", "user/*.cruds", "system/*.cruds"];

/// Where the key ring's public keys are published, under the FHIR base.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

pub async fn get_smart_configuration(State(state): State<AppState>) -> Response {
    json_response(&smart_configuration(&state.service.config))
}

/// The key ring's public signing key as a JWKS, when the server accepts tokens it signs.
pub async fn get_jwks(State(state): State<AppState>) -> Response {
    let key = state.service.keys.current().signing_key();
    match key {
        Some(key) if state.service.config.auth.trust_key_ring => {
            json_response(&JwkSet::new(vec![Jwk::from_signing_key(&key)]).to_json())
        }
        _ => ApiError::NotFound(
            "this server publishes no signing keys; its tokens come from the identity provider"
                .into(),
        )
        .into_response(),
    }
}

/// The smart-configuration document for `config`.
pub fn smart_configuration(config: &Config) -> Value {
    let auth = &config.auth;
    let mut document = json!({
        "issuer": auth.issuer,
        "capabilities": CAPABILITIES,
        "scopes_supported": SCOPES_SUPPORTED,
    });
    // Our own key set describes the issuer only when the key ring is that issuer.
    if auth.trust_key_ring && auth.jwks_file.is_none() {
        document["jwks_uri"] = json!(format!("{}{JWKS_PATH}", config.base_url));
    }
    for (name, url) in [
        ("authorization_endpoint", &auth.authorization_endpoint),
        ("token_endpoint", &auth.token_endpoint),
    ] {
        if let Some(url) = url {
            document[name] = json!(url);
        }
    }
    document
}

fn json_response(body: &Value) -> Response {
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_only_what_this_server_has() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_dir(dir.path(), None);
        let own = smart_configuration(&config);
        assert_eq!(own["issuer"], config.base_url);
        assert_eq!(
            own["jwks_uri"],
            format!("{}/.well-known/jwks.json", config.base_url)
        );
        assert!(
            own["capabilities"]
                .as_array()
                .unwrap()
                .contains(&json!("permission-v2"))
        );
        for absent in [
            "token_endpoint",
            "authorization_endpoint",
            "code_challenge_methods_supported",
            "grant_types_supported",
        ] {
            assert!(own.get(absent).is_none(), "{absent}");
        }

        config.auth.issuer = "https://idp.example/realms/x".into();
        config.auth.jwks_file = Some(dir.path().join("jwks.json"));
        config.auth.trust_key_ring = false;
        config.auth.token_endpoint = Some("https://idp.example/realms/x/token".into());
        let idp = smart_configuration(&config);
        assert_eq!(idp["issuer"], "https://idp.example/realms/x");
        assert_eq!(idp["token_endpoint"], "https://idp.example/realms/x/token");
        assert!(idp.get("jwks_uri").is_none() && idp.get("authorization_endpoint").is_none());
    }
}
