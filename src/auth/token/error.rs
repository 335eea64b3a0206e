//! [`TokenError`]: why a bearer token was refused.

/// Why a bearer token was refused. Each is a 401 (`invalid_token`) for the client.
///
/// The `Display` text goes into the OperationOutcome and the `WWW-Authenticate` header, and may be
/// logged: it says what is wrong, never quoting the token, a claim value, a key or a key id (a
/// `sub` or `patient` claim is PHI; a token is a credential). It holds no `"` or `\`, so it fits
/// an RFC 6750 `error_description` as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is larger than {0} bytes")]
    TooLarge(usize),
    /// Not a compact JWS: part count, base64url, JSON shape or a header field. Says which.
    #[error("the token is malformed: {0}")]
    Malformed(String),
    /// `alg` is not RS256 or ES256 (`none`, HS*, PS*, anything else).
    #[error("the token's signature algorithm is not accepted (only RS256 and ES256)")]
    UnsupportedAlgorithm,
    /// The header has `crit`: extensions this server does not implement must make it fail.
    #[error(
        "the token's header names critical extensions (crit), which this server does not support"
    )]
    CriticalHeader,
    /// `typ` is present and not `JWT` or `at+jwt`.
    #[error("the token's type (typ) is not JWT or at+jwt")]
    WrongType,
    /// No configured key has the token's `kid` and fits its `alg`.
    #[error("no trusted key matches the token's key id and algorithm")]
    NoMatchingKey,
    #[error("the token's signature is not valid")]
    BadSignature,
    /// A claim is missing or has the wrong type. Says which (by name).
    #[error("the token's claims are not valid: {0}")]
    InvalidClaims(String),
    #[error("the token has expired")]
    Expired,
    /// `nbf` is later than now (plus the leeway).
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    /// `iat` is later than now (plus the leeway): a clock far off, or a forged token.
    #[error("the token was issued in the future (iat)")]
    IssuedInFuture,
    #[error("the token was not issued by the issuer this server trusts (iss)")]
    WrongIssuer,
    #[error("the token is not meant for this server (aud)")]
    WrongAudience,
}
