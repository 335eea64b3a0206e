//! Tokens good and bad against a verifier trusting one RSA key (`rsa-1`, the test-only key in
//! tests/fixtures/auth/) and one P-256 key (`ec-1`), plus the key ring's issuer.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::IntoResponse;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair, RsaPublicKeyComponents};
use serde_json::{Value, json};

use super::jwt::{self, encode_part};
use super::*;
use crate::config::AuthConfig;
use crate::crypto::KeyRing;
use crate::error::ApiError;

const ISSUER: &str = "https://idp.example/realms/fhirvault";
const AUDIENCE: &str = "https://fhir.example/fhir";
const NOW: i64 = 1_750_000_000;
const LEEWAY: i64 = 60;
/// A value that must never appear in an error message.
const SUBJECT: &str = "patient-maria-muster";
const RSA_PKCS8: &[u8] = include_bytes!("../../../tests/fixtures/auth/rsa-2048-test-key.pk8");

struct Keys {
    rsa: RsaKeyPair,
    ec: EcdsaKeyPair,
}

impl Keys {
    fn new() -> Keys {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        Keys {
            rsa: RsaKeyPair::from_pkcs8(RSA_PKCS8).unwrap(),
            ec: EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                pkcs8.as_ref(),
                &rng,
            )
            .unwrap(),
        }
    }

    fn rsa_jwk(&self, kid: &str) -> Value {
        let public: RsaPublicKeyComponents<Vec<u8>> = self.rsa.public().into();
        json!({"kty": "RSA", "use": "sig", "kid": kid, "n": encode_part(&public.n), "e": encode_part(&public.e)})
    }

    fn ec_jwk(&self, kid: &str) -> Value {
        let point = self.ec.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": encode_part(&point[1..33]), "y": encode_part(&point[33..])})
    }

    fn verifier(&self) -> TokenVerifier {
        let set = jwks(&[self.rsa_jwk("rsa-1"), self.ec_jwk("ec-1")]);
        TokenVerifier::new(set, ISSUER, AUDIENCE, LEEWAY as u64)
    }

    fn rs256(&self, header: Value, payload: Value) -> String {
        jwt::encode(&header, &payload, |input| {
            let mut signature = vec![0; self.rsa.public().modulus_len()];
            self.rsa
                .sign(
                    &signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    input,
                    &mut signature,
                )
                .map(|()| signature)
        })
        .unwrap()
    }

    fn es256(&self, header: Value, payload: Value) -> String {
        jwt::encode(&header, &payload, |input| {
            self.ec
                .sign(&SystemRandom::new(), input)
                .map(|s| s.as_ref().to_vec())
        })
        .unwrap()
    }
}

fn jwks(members: &[Value]) -> JwkSet {
    JwkSet::from_json(json!({"keys": members}).to_string().as_bytes()).unwrap()
}

fn claims() -> Value {
    json!({"iss": ISSUER, "sub": SUBJECT, "aud": AUDIENCE, "exp": NOW + 300, "iat": NOW,
           "role": "clinician", "scope": "patient/Observation.rs", "patient": "p-1"})
}

fn with(mut value: Value, changes: Value) -> Value {
    for (name, change) in changes.as_object().unwrap() {
        match change {
            Value::Null => value.as_object_mut().unwrap().remove(name),
            other => value
                .as_object_mut()
                .unwrap()
                .insert(name.clone(), other.clone()),
        };
    }
    value
}

fn rs_header() -> Value {
    json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-1"})
}

fn es_header() -> Value {
    json!({"alg": "ES256", "kid": "ec-1"})
}

/// Refused with `expected`, and the message quotes neither the token nor a claim value, and fits
/// a quoted header parameter.
fn assert_refused(verifier: &TokenVerifier, token: &str, expected: TokenError) {
    let error = verifier
        .verify(token, NOW)
        .expect_err("token must be refused");
    assert_eq!(error, expected);
    let message = error.to_string();
    assert!(
        !message.contains(SUBJECT) && !message.contains("p-1") && !message.contains(ISSUER),
        "{message}"
    );
    assert!(
        token.len() < 8 || !message.contains(&token[token.len() - 8..]),
        "{message}"
    );
    assert!(
        !message.contains('"') && !message.contains('\\'),
        "{message}"
    );
}

#[test]
fn valid_rs256_and_es256_tokens() {
    let keys = Keys::new();
    let verifier = keys.verifier();
    for token in [
        keys.rs256(rs_header(), claims()),
        keys.es256(es_header(), claims()),
    ] {
        let claims = verifier.verify(&token, NOW).unwrap();
        assert_eq!(claims.iss, ISSUER);
        assert_eq!(claims.sub, SUBJECT);
        assert_eq!(claims.aud, [AUDIENCE]);
        assert_eq!(
            (claims.exp, claims.iat, claims.nbf),
            (NOW + 300, Some(NOW), None)
        );
        assert_eq!(claims.roles, ["clinician"]);
        assert_eq!(claims.scope, "patient/Observation.rs");
        assert_eq!(claims.patient.as_deref(), Some("p-1"));
        assert_eq!(
            (&claims.org, &claims.client_id, &claims.purpose, &claims.jti),
            (&None, &None, &None, &None)
        );
        assert!(
            !format!("{claims:?}").contains(SUBJECT),
            "Debug leaves out sub"
        );
    }
}

#[test]
fn alg_none_is_refused() {
    let keys = Keys::new();
    let payload = encode_part(claims().to_string().as_bytes());
    for alg in ["none", "None", "NONE", ""] {
        let header = encode_part(json!({"alg": alg, "kid": "rsa-1"}).to_string().as_bytes());
        for signature in ["", "AAAA"] {
            let token = format!("{header}.{payload}.{signature}");
            assert_refused(&keys.verifier(), &token, TokenError::UnsupportedAlgorithm);
        }
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // The classic confusion: a verifier that lets `alg` pick the algorithm would take the RSA
    // public key's bytes as an HMAC secret, and anyone can compute that MAC.
    let keys = Keys::new();
    let public_jwk = keys.rsa_jwk("rsa-1").to_string();
    for secret in [keys.rsa.public().as_ref(), public_jwk.as_bytes()] {
        for alg in ["HS256", "HS384", "HS512"] {
            let mac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
            let header = json!({"alg": alg, "typ": "JWT", "kid": "rsa-1"});
            let token = jwt::encode(&header, &claims(), |input| {
                Ok::<_, ()>(ring::hmac::sign(&mac_key, input).as_ref().to_vec())
            })
            .unwrap();
            assert_refused(&keys.verifier(), &token, TokenError::UnsupportedAlgorithm);
        }
    }
    for alg in ["PS256", "RS384", "ES384", "EdDSA", "RS256 "] {
        let token = keys.rs256(json!({"alg": alg, "kid": "rsa-1"}), claims());
        assert_refused(&keys.verifier(), &token, TokenError::UnsupportedAlgorithm);
    }
}

#[test]
fn an_algorithm_must_fit_the_key_type_of_its_kid() {
    let keys = Keys::new();
    let es_as_rsa = keys.es256(json!({"alg": "ES256", "kid": "rsa-1"}), claims());
    assert_refused(&keys.verifier(), &es_as_rsa, TokenError::NoMatchingKey);
    let rs_as_ec = keys.rs256(json!({"alg": "RS256", "kid": "ec-1"}), claims());
    assert_refused(&keys.verifier(), &rs_as_ec, TokenError::NoMatchingKey);
    // A key pinned to RS256 by its own `alg` never serves another algorithm either.
    let pinned = jwks(&[with(keys.rsa_jwk("rsa-1"), json!({"alg": "RS256"}))]);
    let verifier = TokenVerifier::new(pinned, ISSUER, AUDIENCE, 60);
    assert!(
        verifier
            .verify(&keys.rs256(rs_header(), claims()), NOW)
            .is_ok()
    );
}

#[test]
fn unknown_kid_and_missing_kid() {
    let keys = Keys::new();
    let unknown = keys.rs256(json!({"alg": "RS256", "kid": "rsa-2"}), claims());
    assert_refused(&keys.verifier(), &unknown, TokenError::NoMatchingKey);
    let without = keys.rs256(json!({"alg": "RS256"}), claims());
    assert_refused(&keys.verifier(), &without, TokenError::NoMatchingKey);
    // With a single key, a token need not name it.
    let single = TokenVerifier::new(jwks(&[keys.rsa_jwk("rsa-1")]), ISSUER, AUDIENCE, 60);
    assert!(single.verify(&without, NOW).is_ok());
}

#[test]
fn one_flipped_bit_anywhere_in_the_signature_fails() {
    let keys = Keys::new();
    let verifier = keys.verifier();
    for token in [
        keys.rs256(rs_header(), claims()),
        keys.es256(es_header(), claims()),
    ] {
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let signature = jwt::decode_part(signature, "signature").unwrap();
        for bit in (0..signature.len() * 8).step_by(7) {
            let mut altered = signature.clone();
            altered[bit / 8] ^= 1 << (bit % 8);
            let token = format!("{signed}.{}", encode_part(&altered));
            assert_refused(&verifier, &token, TokenError::BadSignature);
        }
        // The signed part changed instead: the payload of another token.
        let other = keys.rs256(rs_header(), with(claims(), json!({"role": "admin"})));
        let other_payload = other.split('.').nth(1).unwrap();
        let header = token.split('.').next().unwrap();
        let (_, signature) = token.rsplit_once('.').unwrap();
        assert_refused(
            &verifier,
            &format!("{header}.{other_payload}.{signature}"),
            TokenError::BadSignature,
        );
    }
}

#[test]
fn times_are_checked_with_the_leeway() {
    let keys = Keys::new();
    let verifier = keys.verifier();
    let at = |changes: Value| keys.es256(es_header(), with(claims(), changes));
    assert_refused(
        &verifier,
        &at(json!({"exp": NOW - LEEWAY})),
        TokenError::Expired,
    );
    assert_refused(
        &verifier,
        &at(json!({"exp": NOW - 3600})),
        TokenError::Expired,
    );
    assert!(
        verifier
            .verify(&at(json!({"exp": NOW - LEEWAY + 1})), NOW)
            .is_ok(),
        "inside the leeway"
    );
    assert_refused(
        &verifier,
        &at(json!({"nbf": NOW + LEEWAY + 1})),
        TokenError::NotYetValid,
    );
    assert!(
        verifier
            .verify(&at(json!({"nbf": NOW + LEEWAY})), NOW)
            .is_ok()
    );
    assert_refused(
        &verifier,
        &at(json!({"iat": NOW + LEEWAY + 1})),
        TokenError::IssuedInFuture,
    );
    assert!(
        verifier
            .verify(&at(json!({"iat": null, "nbf": null})), NOW)
            .is_ok(),
        "iat and nbf are optional"
    );
    // NumericDates may have a fraction; extreme values do not overflow.
    assert!(
        verifier
            .verify(&at(json!({"exp": (NOW + 10) as f64 + 0.5})), NOW)
            .is_ok()
    );
    assert!(verifier.verify(&at(json!({"exp": i64::MAX})), NOW).is_ok());
    assert_refused(
        &verifier,
        &at(json!({"exp": i64::MIN})),
        TokenError::Expired,
    );
    let strict = TokenVerifier::new(jwks(&[keys.ec_jwk("ec-1")]), ISSUER, AUDIENCE, 0);
    assert_eq!(
        strict.verify(&at(json!({"exp": NOW})), NOW),
        Err(TokenError::Expired),
        "exp is exclusive"
    );
}

#[test]
fn issuer_must_match_exactly_and_audience_must_include_us() {
    let keys = Keys::new();
    let verifier = keys.verifier();
    let token = |changes: Value| keys.rs256(rs_header(), with(claims(), changes));
    for iss in [
        "https://idp.example/realms/other",
        "https://idp.example/realms/fhirvault/",
        "HTTPS://idp.example/realms/fhirvault",
    ] {
        assert_refused(
            &verifier,
            &token(json!({"iss": iss})),
            TokenError::WrongIssuer,
        );
    }
    assert_refused(
        &verifier,
        &token(json!({"aud": "https://other.example/fhir"})),
        TokenError::WrongAudience,
    );
    assert_refused(
        &verifier,
        &token(json!({"aud": ["a", "b"]})),
        TokenError::WrongAudience,
    );
    assert_refused(
        &verifier,
        &token(json!({"aud": []})),
        TokenError::WrongAudience,
    );
    assert_refused(
        &verifier,
        &token(json!({"aud": null})),
        TokenError::WrongAudience,
    );
    let claims = verifier
        .verify(&token(json!({"aud": ["account", AUDIENCE]})), NOW)
        .unwrap();
    assert_eq!(claims.aud, ["account", AUDIENCE]);
}

#[test]
fn malformed_tokens() {
    let keys = Keys::new();
    let verifier = keys.verifier();
    let good = keys.rs256(rs_header(), claims());
    let parts: Vec<&str> = good.split('.').collect();
    let malformed = |what: &str| TokenError::Malformed(what.into());
    let three_parts = malformed("a JWS has three dot-separated parts");
    let cases = [
        (String::new(), three_parts.clone()),
        (format!("{}.{}", parts[0], parts[1]), three_parts.clone()),
        (format!("{good}.{}", parts[2]), three_parts.clone()),
        (format!("{good}.AAAA.AAAA"), three_parts),
        (
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            malformed("the header is not unpadded base64url"),
        ),
        (
            format!("{}.{}.{}=", parts[0], parts[1], parts[2]),
            malformed("the signature is not unpadded base64url"),
        ),
        (
            format!("*{}.{}.{}", parts[0], parts[1], parts[2]),
            malformed("the header is not unpadded base64url"),
        ),
        (
            format!("{} .{}.{}", parts[0], parts[1], parts[2]),
            malformed("the header is not unpadded base64url"),
        ),
        (
            format!("+{}.{}.{}", &parts[0][1..], parts[1], parts[2]),
            malformed("the header is not unpadded base64url"),
        ),
        (
            format!("{}.{}.{}", encode_part(b"not json"), parts[1], parts[2]),
            malformed("the header is not a JSON object"),
        ),
        (
            format!("{}.{}.{}", encode_part(b"[\"RS256\"]"), parts[1], parts[2]),
            malformed("the header is not a JSON object"),
        ),
        (
            format!(
                "{}.{}.{}",
                encode_part(b"{\"kid\":\"rsa-1\"}"),
                parts[1],
                parts[2]
            ),
            malformed("the header has no alg"),
        ),
        (
            format!(
                "{}.{}.{}",
                encode_part(b"{\"alg\":256}"),
                parts[1],
                parts[2]
            ),
            malformed("the header's alg is not a string"),
        ),
        (
            keys.rs256(json!({"alg": "RS256", "kid": 1}), claims()),
            malformed("the header's kid is not a string"),
        ),
    ];
    for (token, expected) in cases {
        assert_refused(&verifier, &token, expected);
    }
    // Validly signed, but the payload is not base64url of a claims object.
    let signed = |payload_part: &str| {
        let input = format!(
            "{}.{payload_part}",
            encode_part(rs_header().to_string().as_bytes())
        );
        let mut signature = vec![0; keys.rsa.public().modulus_len()];
        keys.rsa
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut signature,
            )
            .unwrap();
        format!("{input}.{}", encode_part(&signature))
    };
    let signed_payload = |payload: &[u8]| signed(&encode_part(payload));
    let padded = format!("{}=", encode_part(b"{}"));
    assert_refused(
        &verifier,
        &signed(&padded),
        malformed("the payload is not unpadded base64url"),
    );
    assert_refused(
        &verifier,
        &signed("e30+"),
        malformed("the payload is not unpadded base64url"),
    );
    assert_refused(
        &verifier,
        &signed_payload(b"not json"),
        malformed("the payload is not a JSON object"),
    );
    assert_refused(
        &verifier,
        &signed_payload(br#"["iss","sub"]"#),
        malformed("the payload is not a JSON object"),
    );
    assert!(matches!(
        verifier.verify(&signed_payload(b"{\"iss\":"), NOW),
        Err(TokenError::InvalidClaims(_))
    ));
    // Huge: refused before parsing, whatever it holds.
    let huge = keys.rs256(
        rs_header(),
        with(claims(), json!({"padding": "x".repeat(MAX_TOKEN_BYTES)})),
    );
    assert_refused(&verifier, &huge, TokenError::TooLarge(MAX_TOKEN_BYTES));
    assert_refused(
        &verifier,
        &"a".repeat(MAX_TOKEN_BYTES + 1),
        TokenError::TooLarge(MAX_TOKEN_BYTES),
    );
}

#[test]
fn crit_and_typ_headers() {
    let keys = Keys::new();
    let verifier = keys.verifier();
    for crit in [json!(["exp"]), json!([]), json!(null)] {
        let token = keys.rs256(with(rs_header(), json!({"crit": crit.clone()})), claims());
        // `with` removes a null member, so put it in by hand for that case.
        let token = if crit.is_null() {
            keys.rs256(
                json!({"alg": "RS256", "kid": "rsa-1", "crit": null}),
                claims(),
            )
        } else {
            token
        };
        assert_refused(&verifier, &token, TokenError::CriticalHeader);
    }
    for typ in [
        "JWT",
        "jwt",
        "at+jwt",
        "AT+JWT",
        "application/at+jwt",
        "application/jwt",
    ] {
        let token = keys.rs256(with(rs_header(), json!({"typ": typ})), claims());
        assert!(verifier.verify(&token, NOW).is_ok(), "{typ}");
    }
    for typ in [
        json!("JOSE"),
        json!("dpop+jwt"),
        json!("secevent+jwt"),
        json!(1),
    ] {
        let token = keys.rs256(with(rs_header(), json!({"typ": typ})), claims());
        assert_refused(&verifier, &token, TokenError::WrongType);
    }
}

#[test]
fn claims_from_several_identity_providers() {
    let keys = Keys::new();
    let verifier = keys.verifier();
    let verify =
        |changes: Value| verifier.verify(&keys.es256(es_header(), with(claims(), changes)), NOW);
    // Entra ID: `scp` as a string or an array, `azp` for the client.
    let entra =
        verify(json!({"scope": null, "scp": "Observation.Read openid", "azp": "app-1"})).unwrap();
    assert_eq!(
        (entra.scope.as_str(), entra.client_id.as_deref()),
        ("Observation.Read openid", Some("app-1"))
    );
    let array =
        verify(json!({"scope": null, "scp": ["patient/Observation.rs", "patient/Patient.r"]}))
            .unwrap();
    assert_eq!(array.scope, "patient/Observation.rs patient/Patient.r");
    // RFC 9068: `client_id` wins over `azp`; `scope` wins over `scp`.
    let both = verify(json!({"client_id": "c", "azp": "a", "scp": "ignored"})).unwrap();
    assert_eq!(
        (both.scope.as_str(), both.client_id.as_deref()),
        ("patient/Observation.rs", Some("c"))
    );
    assert_eq!(verify(json!({"scope": null})).unwrap().scope, "");
    let all = verify(
        json!({"org": "o-1", "purpose": "TREAT", "jti": "j-1", "nbf": NOW, "unknown": {"x": 1}}),
    )
    .unwrap();
    assert_eq!(
        (
            all.org.as_deref(),
            all.purpose.as_deref(),
            all.jti.as_deref()
        ),
        (Some("o-1"), Some("TREAT"), Some("j-1"))
    );
    // Required claims and types, named without their values.
    for (changes, fragment) in [
        (json!({"exp": null}), "missing field `exp`"),
        (json!({"iss": null}), "missing field `iss`"),
        (json!({"sub": null}), "missing field `sub`"),
        (json!({"exp": "tomorrow"}), "wrong type"),
        (json!({"patient": ["Maria Muster"]}), "wrong type"),
        (json!({"aud": 5}), "wrong type"),
    ] {
        match verify(changes.clone()) {
            Err(TokenError::InvalidClaims(message)) => {
                assert!(message.contains(fragment), "{changes}: {message}");
                assert!(
                    !message.contains("Maria") && !message.contains("tomorrow"),
                    "{message}"
                );
            }
            other => panic!("{changes}: {other:?}"),
        }
    }
}

#[test]
fn jwks_parsing_keeps_usable_signature_keys_only() {
    let keys = Keys::new();
    let oct = json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"});
    let encryption = with(keys.rsa_jwk("enc"), json!({"use": "enc"}));
    let rs384 = with(keys.rsa_jwk("rs384"), json!({"alg": "RS384"}));
    let p384 = json!({"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"});
    let okp = json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "AA"});
    let verify_only = with(keys.ec_jwk("ops"), json!({"key_ops": ["encrypt"]}));
    let set = jwks(&[
        oct,
        encryption,
        rs384,
        p384,
        okp,
        verify_only,
        keys.rsa_jwk("rsa-1"),
    ]);
    assert_eq!(set.to_json()["keys"].as_array().unwrap().len(), 1);
    // The HMAC key is skipped, so an HS256 token naming it finds nothing either.
    let verifier = TokenVerifier::new(set, ISSUER, AUDIENCE, 60);
    let token = jwt::encode(&json!({"alg": "HS256", "kid": "h"}), &claims(), |_| {
        Ok::<_, ()>(vec![0; 32])
    })
    .unwrap();
    assert_eq!(
        verifier.verify(&token, NOW),
        Err(TokenError::UnsupportedAlgorithm)
    );

    let error = |members: Value| {
        JwkSet::from_json(json!({"keys": members}).to_string().as_bytes())
            .unwrap_err()
            .to_string()
    };
    let short_n = encode_part(&[0xc5; 128]);
    let rsa = keys.rsa_jwk("r");
    assert!(error(json!([with(rsa.clone(), json!({"n": short_n}))])).contains("1024 bits"));
    assert!(
        error(json!([with(rsa.clone(), json!({"n": "AQAB="}))]))
            .contains("n is not unpadded base64url")
    );
    assert!(error(json!([with(rsa.clone(), json!({"e": null}))])).contains("key 0: e is missing"));
    assert!(
        error(json!([with(rsa.clone(), json!({"d": "AQAB"}))])).contains("private key material")
    );
    assert!(error(json!([with(rsa.clone(), json!({"alg": "ES256"}))])).contains("does not fit"));
    assert!(
        error(json!([with(
            keys.ec_jwk("e"),
            json!({"x": encode_part(&[1; 31])})
        )]))
        .contains("32 bytes")
    );
    assert!(
        error(json!([
            with(rsa.clone(), json!({"kid": null})),
            keys.ec_jwk("e")
        ]))
        .contains("each needs a kid")
    );
    assert!(error(json!([json!({"kty": "oct", "k": "AA"})])).contains("no RS256 or ES256"));
    assert!(error(json!(["RSA"])).contains("key 0 is not a JSON object"));
    assert!(JwkSet::from_json(b"[]").is_err() && JwkSet::from_json(b"{\"keys\": {}}").is_err());

    // A key without kid, alone in its set, verifies tokens whatever kid they name.
    let lone = TokenVerifier::new(
        jwks(&[with(rsa, json!({"kid": null}))]),
        ISSUER,
        AUDIENCE,
        60,
    );
    assert!(lone.verify(&keys.rs256(rs_header(), claims()), NOW).is_ok());
    assert!(
        lone.verify(&keys.rs256(json!({"alg": "RS256"}), claims()), NOW)
            .is_ok()
    );
}

#[test]
fn jwks_file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idp-jwks.json");
    std::fs::write(&path, "{}").unwrap();
    let message = JwkSet::from_file(&path).unwrap_err().to_string();
    assert!(
        message.contains("idp-jwks.json") && message.contains("\"keys\" array"),
        "{message}"
    );
    let mut config = AuthConfig::for_base_url(AUDIENCE);
    config.jwks_file = Some(path);
    let error =
        TokenVerifier::from_config(&config, &KeyRing::from_master_secret([1; 32])).unwrap_err();
    assert_eq!(error.setting, "auth.jwks_file");
}

#[test]
fn thumbprint_matches_rfc_7638() {
    let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    let set =
        jwks(&[json!({"kty": "RSA", "n": n, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"})]);
    let member = &set.to_json()["keys"][0];
    assert_eq!(
        (member["n"].as_str(), member["e"].as_str()),
        (Some(n), Some("AQAB"))
    );
    let jwk = Jwk::from_signing_key(&KeyRing::from_master_secret([3; 32]).signing_key().unwrap());
    assert_eq!(jwk.kid(), Some(jwk.thumbprint().as_str()));
    assert_eq!(jwk.thumbprint().len(), 43);
    assert_eq!(
        set.keys()[0].thumbprint(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}

fn ring_config() -> (KeyRing, AuthConfig) {
    (
        KeyRing::from_master_secret([7; 32]),
        AuthConfig::for_base_url(AUDIENCE),
    )
}

fn admin() -> IssueRequest {
    IssueRequest {
        role: "admin".into(),
        scope: default_scope("admin").unwrap().into(),
        patient: None,
        org: None,
        subject: None,
        purpose: None,
        ttl: Duration::from_secs(3600),
    }
}

#[test]
fn the_key_ring_issues_tokens_its_verifier_accepts() {
    let (ring, config) = ring_config();
    let issuer = TokenIssuer::from_config(&config, &ring).unwrap();
    let verifier = TokenVerifier::from_config(&config, &ring).unwrap();
    let token = issuer.issue_at(&admin(), NOW).unwrap();
    let claims = verifier.verify(&token, NOW + 10).unwrap();
    assert_eq!(
        (claims.iss.as_str(), claims.aud.as_slice()),
        (AUDIENCE, [AUDIENCE.to_string()].as_slice())
    );
    assert_eq!(
        (claims.sub.as_str(), claims.roles.as_slice()),
        ("fhirvault-cli/admin", ["admin".to_string()].as_slice())
    );
    assert_eq!(
        (claims.scope.as_str(), claims.client_id.as_deref()),
        ("user/*.cruds", Some(ISSUER_CLIENT_ID))
    );
    assert_eq!((claims.iat, claims.exp), (Some(NOW), NOW + 3600));
    assert_eq!(claims.jti.map(|j| j.len()), Some(36));
    let header: Value = serde_json::from_slice(
        &jwt::decode_part(token.split('.').next().unwrap(), "header").unwrap(),
    )
    .unwrap();
    let kid = Jwk::from_signing_key(&ring.signing_key().unwrap()).thumbprint();
    assert_eq!(header, json!({"alg": "ES256", "typ": "JWT", "kid": kid}));

    let request = IssueRequest {
        role: "clinician".into(),
        scope: "patient/*.rs".into(),
        patient: Some("p-9".into()),
        org: Some("org-1".into()),
        subject: Some("dr-who".into()),
        ..admin()
    };
    let claims = verifier
        .verify(&issuer.issue_at(&request, NOW).unwrap(), NOW)
        .unwrap();
    assert_eq!(
        (
            claims.patient.as_deref(),
            claims.org.as_deref(),
            claims.sub.as_str()
        ),
        (Some("p-9"), Some("org-1"), "dr-who")
    );

    assert_eq!(
        verifier.verify(
            &issuer.issue_at(&admin(), NOW - 3600 - LEEWAY).unwrap(),
            NOW
        ),
        Err(TokenError::Expired)
    );
    assert_eq!(
        verifier.verify(&issuer.issue_at(&admin(), NOW + 3600).unwrap(), NOW),
        Err(TokenError::IssuedInFuture)
    );
    // Another key ring's tokens are not ours.
    let other = TokenIssuer::from_config(&config, &KeyRing::from_master_secret([8; 32])).unwrap();
    assert_eq!(
        verifier.verify(&other.issue_at(&admin(), NOW).unwrap(), NOW),
        Err(TokenError::NoMatchingKey)
    );
}

#[test]
fn an_identity_provider_and_the_key_ring_together() {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, json!({"keys": [keys.rsa_jwk("rsa-1")]}).to_string()).unwrap();
    let (ring, mut config) = ring_config();
    config.issuer = ISSUER.into();
    config.jwks_file = Some(path);
    let idp_token = keys.rs256(rs_header(), claims());

    config.trust_key_ring = false;
    let idp_only = TokenVerifier::from_config(&config, &ring).unwrap();
    assert!(idp_only.verify(&idp_token, NOW).is_ok());
    assert_eq!(
        idp_only.keys().to_json()["keys"].as_array().unwrap().len(),
        1
    );
    assert_eq!(
        TokenIssuer::from_config(&config, &ring)
            .unwrap_err()
            .setting,
        "auth.trust_key_ring"
    );

    config.trust_key_ring = true;
    let both = TokenVerifier::from_config(&config, &ring).unwrap();
    let ours = TokenIssuer::from_config(&config, &ring)
        .unwrap()
        .issue_at(&admin(), NOW)
        .unwrap();
    assert!(both.verify(&idp_token, NOW).is_ok());
    assert_eq!(both.verify(&ours, NOW).unwrap().iss, ISSUER);
    assert_eq!(idp_only.verify(&ours, NOW), Err(TokenError::NoMatchingKey));
}

#[test]
fn a_key_ring_without_a_signing_key_says_what_to_do() {
    let legacy = format!(
        r#"{{"format":1,"active":1,"index_root_key":1,"keys":[{{"id":1,"created":"x","secret":"{}"}}]}}"#,
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [1u8; 32])
    );
    let ring = KeyRing::from_env_base64(&base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        legacy,
    ))
    .unwrap();
    let config = AuthConfig::for_base_url(AUDIENCE);
    let error = TokenVerifier::from_config(&config, &ring).unwrap_err();
    assert_eq!(error.setting, "key_file");
    assert!(
        error.message.contains("fhirvault keys init"),
        "{}",
        error.message
    );
    assert!(TokenIssuer::from_config(&config, &ring).is_err());
}

#[test]
fn ttls_and_default_scopes() {
    assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
    assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_ttl("30d"), Ok(MAX_TTL));
    for bad in [
        "",
        "1",
        "h",
        "0s",
        "31d",
        "1.5h",
        "-1h",
        "1 h",
        "1H",
        "99999999999999999999d",
    ] {
        assert!(parse_ttl(bad).is_err(), "{bad}");
    }
    assert_eq!(default_scope("admin"), Some("user/*.cruds"));
    assert_eq!(default_scope("clinician"), None);
}

#[test]
fn bearer_tokens_from_headers() {
    let headers = |values: &[&str]| {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        map
    };
    assert_eq!(
        bearer_token(&headers(&["Bearer abc.def.ghi"])).unwrap(),
        "abc.def.ghi"
    );
    assert_eq!(bearer_token(&headers(&["bearer  abc"])).unwrap(), "abc");
    assert!(matches!(
        bearer_token(&headers(&[])),
        Err(ApiError::MissingToken)
    ));
    assert!(matches!(
        bearer_token(&headers(&["Basic dXNlcjpwdw=="])),
        Err(ApiError::MissingToken)
    ));
    for bad in [
        &["Bearer"][..],
        &["Bearer "],
        &["Bearer a b"],
        &["Bearer a", "Bearer b"],
    ] {
        assert!(
            matches!(bearer_token(&headers(bad)), Err(ApiError::InvalidToken(_))),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn refusals_render_as_operation_outcomes_with_challenges() {
    async fn render(error: ApiError) -> (u16, HeaderMap, Value) {
        let response = error.into_response();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, headers, serde_json::from_slice(&body).unwrap())
    }
    let challenge = |headers: &HeaderMap| {
        headers
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_string())
    };

    let (status, headers, outcome) = render(ApiError::MissingToken).await;
    assert_eq!(status, 401);
    assert_eq!(
        challenge(&headers).as_deref(),
        Some(r#"Bearer realm="fhirvault""#)
    );
    assert_eq!(outcome["issue"][0]["code"], "login");

    let (status, headers, outcome) = render(ApiError::from(TokenError::Expired)).await;
    assert_eq!(status, 401);
    assert_eq!(
        challenge(&headers).as_deref(),
        Some(
            r#"Bearer realm="fhirvault", error="invalid_token", error_description="the token has expired""#
        )
    );
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert_eq!(
        (
            outcome["issue"][0]["code"].as_str(),
            outcome["issue"][0]["diagnostics"].as_str()
        ),
        (Some("login"), Some("the token has expired"))
    );
    let (_, headers, _) = render(ApiError::InvalidToken("a \"quoted\" \\ text\u{e9}".into())).await;
    assert!(
        challenge(&headers)
            .unwrap()
            .ends_with(r#"error_description="a  quoted    text ""#),
        "{headers:?}"
    );

    let (status, headers, outcome) = render(ApiError::Forbidden(
        "scope patient/Observation.rs does not allow writes".into(),
    ))
    .await;
    assert_eq!(
        (status, outcome["issue"][0]["code"].as_str()),
        (403, Some("forbidden"))
    );
    assert!(challenge(&headers).is_none());

    let (status, headers, outcome) = render(ApiError::TooManyRequests {
        retry_after_secs: 30,
    })
    .await;
    assert_eq!(
        (status, outcome["issue"][0]["code"].as_str()),
        (429, Some("throttled"))
    );
    assert_eq!(headers.get(header::RETRY_AFTER).unwrap(), "30");
}

#[test]
fn the_role_claim_is_where_the_provider_puts_it() {
    let keys = Keys::new();
    let roles = |verifier: &TokenVerifier, changes: Value| {
        verifier
            .verify(&keys.rs256(rs_header(), with(claims(), changes)), NOW)
            .map(|claims| claims.roles)
    };
    // The default: `role`, else Entra ID's `roles` (app roles, an array).
    let default = keys.verifier();
    assert_eq!(roles(&default, json!({})).unwrap(), ["clinician"]);
    assert_eq!(
        roles(
            &default,
            json!({"role": null, "roles": ["device-hub", "Task.Read"]})
        )
        .unwrap(),
        ["device-hub", "Task.Read"]
    );
    assert_eq!(
        roles(&default, json!({"roles": ["admin"]})).unwrap(),
        ["clinician"],
        "role wins"
    );
    assert!(roles(&default, json!({"role": null})).unwrap().is_empty());
    // Keycloak's realm roles, by dotted path; only there.
    let keycloak = keys
        .verifier()
        .with_role_claim(RoleClaim::parse("realm_access.roles").unwrap());
    assert_eq!(
        roles(
            &keycloak,
            json!({"realm_access": {"roles": ["offline_access", "auditor"]}})
        )
        .unwrap(),
        ["offline_access", "auditor"]
    );
    assert!(
        roles(&keycloak, json!({"realm_access": {}}))
            .unwrap()
            .is_empty(),
        "`role` is not read"
    );
    // A namespaced claim whose name holds dots is read as it is.
    let namespaced = keys
        .verifier()
        .with_role_claim(RoleClaim::parse("https://fhirvault.example/role").unwrap());
    assert_eq!(
        roles(
            &namespaced,
            json!({"https://fhirvault.example/role": "crm"})
        )
        .unwrap(),
        ["crm"]
    );
    // Anything but a string or strings is a malformed token, named without its value.
    for bad in [
        json!({"role": 7}),
        json!({"role": ["admin", 1]}),
        json!({"role": {"name": "admin"}}),
    ] {
        let error = roles(&default, bad.clone()).unwrap_err();
        assert!(
            matches!(&error, TokenError::InvalidClaims(m) if m.contains("role") && !m.contains("admin")),
            "{bad}: {error:?}"
        );
    }
    for bad in ["", "realm_access..roles", ".roles", "a b"] {
        assert!(RoleClaim::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn the_key_ring_writes_the_role_where_it_is_read() {
    let (ring, mut config) = ring_config();
    config.role_claim = RoleClaim::parse("realm_access.roles").unwrap();
    let issuer = TokenIssuer::from_config(&config, &ring).unwrap();
    let token = issuer.issue_at(&admin(), NOW).unwrap();
    let payload: Value = serde_json::from_slice(
        &jwt::decode_part(token.split('.').nth(1).unwrap(), "payload").unwrap(),
    )
    .unwrap();
    assert_eq!(payload["realm_access"], json!({"roles": "admin"}));
    assert!(payload.get("role").is_none());
    let verifier = TokenVerifier::from_config(&config, &ring).unwrap();
    assert_eq!(verifier.verify(&token, NOW).unwrap().roles, ["admin"]);
}
