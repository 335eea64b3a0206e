//! Tokens of an identity provider, verified against its JWKS file (`auth.jwks_file`): Entra
//! ID's shape (app roles in a `roles` array, scopes in `scp`), and key rotation without a
//! restart. Token verification does not depend on the backend, so these run on SQLite.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::idp::{AUDIENCE, ISSUER, Idp};
use crate::common::{Backend, TestServer, fresh_store};

/// A server that trusts `idp`'s JWKS file (and, for the harness's admin client, its key ring).
async fn server_of(jwks_file: std::path::PathBuf) -> TestServer {
    let (dir, database) = fresh_store(Backend::Sqlite).await;
    TestServer::start_with(Backend::Sqlite, dir, database, |config| {
        config.auth.issuer = ISSUER.into();
        config.auth.audience = AUDIENCE.into();
        config.auth.jwks_file = Some(jwks_file);
        config.auth.trust_key_ring = true;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_app_roles_are_the_role_and_one_is_required() {
    let keys = tempfile::tempdir().expect("dir");
    let idp = Idp::new(keys.path().join("entra-jwks.json"), &["entra-1"]);
    let server = server_of(idp.jwks_file.clone()).await;
    server
        .put(
            "Organization/org-a",
            &json!({"resourceType": "Organization", "id": "org-a"}),
        )
        .await;
    server.put("Patient/pat-a", &json!({"resourceType": "Patient", "id": "pat-a", "managingOrganization": {"reference": "Organization/org-a"}})).await;
    server
        .put(
            "Patient/pat-b",
            &json!({"resourceType": "Patient", "id": "pat-b"}),
        )
        .await;

    // A clinician app role (among another application's role) and Entra's `scp`.
    let clinician = idp.token(
        "entra-1",
        json!({"roles": ["Task.Read", "clinician"], "scp": "user/Patient.rs", "org": "org-a"}),
    );
    let reply = server
        .request_as(&clinician, Method::GET, "Patient", None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        crate::common::match_ids(&reply.body),
        ["pat-a"],
        "the clinician's organisation only"
    );

    let refused = |extra: serde_json::Value| {
        let token = idp.token("entra-1", extra);
        let server = &server;
        async move {
            server
                .request_as(&token, Method::GET, "Patient", None)
                .await
        }
    };
    refused(json!({"roles": ["clinician", "admin"], "scp": "user/Patient.rs", "org": "org-a"}))
        .await
        .assert_outcome(
            StatusCode::FORBIDDEN,
            "forbidden",
            "several roles (clinician, admin)",
        );
    refused(json!({"roles": ["Task.Read"], "scp": "user/Patient.rs"}))
        .await
        .assert_outcome(
            StatusCode::FORBIDDEN,
            "forbidden",
            "names no role of this server",
        );
    refused(json!({"scp": "user/Patient.rs"}))
        .await
        .assert_outcome(StatusCode::FORBIDDEN, "forbidden", "no role claim");
    // A role claim of another shape is a malformed token.
    refused(json!({"roles": [1], "scp": "user/Patient.rs"}))
        .await
        .assert_outcome(StatusCode::UNAUTHORIZED, "login", "the role claim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_jwks_file_is_followed_without_a_restart() {
    let keys = tempfile::tempdir().expect("dir");
    let mut idp = Idp::new(keys.path().join("jwks.json"), &["old"]);
    idp.add_key("new");
    let server = server_of(idp.jwks_file.clone()).await;
    let claims = json!({"roles": ["auditor"], "scp": "user/AuditEvent.rs"});
    let (old, new) = (idp.token("old", claims.clone()), idp.token("new", claims));
    let status = async |token: &str| {
        server
            .request_as(token, Method::GET, "AuditEvent?_count=1", None)
            .await
    };

    assert_eq!(status(&old).await.status, StatusCode::OK);
    let unknown = status(&new).await;
    unknown.assert_outcome(StatusCode::UNAUTHORIZED, "login", "no trusted key matches");

    // A broken file (a half-written copy) keeps the keys read before.
    std::fs::write(&idp.jwks_file, "{\"keys\": [{\"kty\": ").expect("write");
    tokio::time::sleep(fhirvault::auth::token::RECHECK + Duration::from_millis(200)).await;
    assert_eq!(
        status(&old).await.status,
        StatusCode::OK,
        "the last good keys stay"
    );

    // The provider publishes its new key beside the old one: a token of the new key makes the
    // server read the file at once.
    idp.publish(&["old", "new"]);
    assert_eq!(
        status(&new).await.status,
        StatusCode::OK,
        "{}",
        status(&new).await.text
    );
    assert_eq!(status(&old).await.status, StatusCode::OK);

    // Then it drops the old key: within a few seconds its tokens are refused, cached or not.
    idp.publish(&["new"]);
    tokio::time::sleep(fhirvault::auth::token::RECHECK + Duration::from_millis(200)).await;
    status(&old)
        .await
        .assert_outcome(StatusCode::UNAUTHORIZED, "login", "no trusted key matches");
    assert_eq!(status(&new).await.status, StatusCode::OK);
}
