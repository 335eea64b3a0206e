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

/// Where the SMART `oauth-uris` extension is defined (SMART App Launch 1.0; 2.0 keeps it for
/// servers that announce their endpoints in the CapabilityStatement too).
const OAUTH_URIS: &str = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris";
const SECURITY_SERVICE: &str = "http://terminology.hl7.org/CodeSystem/restful-security-service";

/// `CapabilityStatement.rest.security` for `config`: the same facts as the smart-configuration
/// document, from the same settings, so the two cannot disagree. `cors` is whether the router
/// answers cross-origin requests ([`super::routes::CORS`]); `service` is SMART-on-FHIR, and
/// Certificates when device hubs may present client certificates; the `oauth-uris` extension
/// names only the identity provider's endpoints that are configured, and is left out without
/// any (this server has none of its own).
pub fn rest_security(config: &Config) -> Value {
    let auth = &config.auth;
    let mut services = vec![
        json!({"coding": [{"system": SECURITY_SERVICE, "code": "SMART-on-FHIR", "display": "SMART-on-FHIR"}]}),
    ];
    let client_certificates = config
        .tls
        .as_ref()
        .is_some_and(|tls| tls.client_ca_file.is_some());
    if client_certificates {
        services.push(json!({"coding": [{"system": SECURITY_SERVICE, "code": "Certificates", "display": "Certificates"}]}));
    }
    let mut keys = Vec::new();
    if auth.jwks_file.is_some() {
        keys.push("the identity provider's keys (its JWKS)".to_string());
    }
    if auth.trust_key_ring {
        keys.push(format!(
            "this server's own key ({}{JWKS_PATH})",
            config.base_url
        ));
    }
    let mut description = format!(
        "Every request except metadata and the .well-known documents needs an OAuth 2.0 bearer token (RFC 6750): \
         a JWT signed with RS256 or ES256 by {}, with iss {} and aud {}. Its SMART v2 scopes (scope or scp) and its \
         role (claim `{}`) decide what it may do; a token whose scopes do not cover a request gets 403 insufficient_scope. \
         Discovery: {}/.well-known/smart-configuration.",
        keys.join(" or "),
        auth.issuer,
        auth.audience,
        auth.role_claim,
        config.base_url,
    );
    if client_certificates {
        description.push_str(" Device hubs may instead present a client certificate (mutual TLS) to send HL7 v2 messages.");
    }
    let mut security =
        json!({"cors": super::routes::CORS, "service": services, "description": description});
    let endpoints: Vec<Value> = [
        ("authorize", &auth.authorization_endpoint),
        ("token", &auth.token_endpoint),
    ]
    .into_iter()
    .filter_map(|(name, url)| {
        url.as_ref()
            .map(|url| json!({"url": name, "valueUri": url}))
    })
    .collect();
    if !endpoints.is_empty() {
        security["extension"] = json!([{"url": OAUTH_URIS, "extension": endpoints}]);
    }
    security
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

    #[test]
    fn rest_security_follows_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_dir(dir.path(), None);
        let own = rest_security(&config);
        assert_eq!(own["cors"], json!(false));
        assert_eq!(
            own["service"],
            json!([{"coding": [{"system": SECURITY_SERVICE, "code": "SMART-on-FHIR", "display": "SMART-on-FHIR"}]}])
        );
        assert!(
            own.get("extension").is_none(),
            "no endpoints of our own, none configured: {own}"
        );
        let description = own["description"].as_str().unwrap();
        assert!(
            description.contains(&format!("{}/.well-known/jwks.json", config.base_url)),
            "{description}"
        );
        assert!(!description.contains("JWKS)"), "{description}");
        assert!(
            description.contains("role (claim `role` or `roles`)"),
            "{description}"
        );

        config.auth.jwks_file = Some(dir.path().join("jwks.json"));
        config.auth.trust_key_ring = false;
        config.auth.issuer = "https://idp.example/realms/x".into();
        config.auth.token_endpoint = Some("https://idp.example/realms/x/token".into());
        config.tls = Some(crate::config::TlsConfig {
            cert_file: "c.pem".into(),
            key_file: "k.pem".into(),
            client_ca_file: Some("ca.pem".into()),
            client_crl_files: Vec::new(),
            hubs: Vec::new(),
        });
        let idp = rest_security(&config);
        assert_eq!(
            idp["extension"],
            json!([{"url": OAUTH_URIS, "extension": [{"url": "token", "valueUri": "https://idp.example/realms/x/token"}]}])
        );
        assert_eq!(idp["service"][1]["coding"][0]["code"], "Certificates");
        let description = idp["description"].as_str().unwrap();
        assert!(
            description.contains("https://idp.example/realms/x")
                && !description.contains("jwks.json"),
            "{description}"
        );

        config.auth.authorization_endpoint = Some("https://idp.example/realms/x/auth".into());
        let both = rest_security(&config);
        let names: Vec<&str> = both["extension"][0]["extension"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["url"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["authorize", "token"]);
    }
}
