//! `POST /hl7v2`: one HL7 v2 message as the body (`x-application/hl7-v2+er7`, or `text/plain`),
//! its acknowledgement(s) as the response body.
//!
//! The ACK is the answer whatever the message's fate (200 with AA, AE or AR); in enhanced mode an
//! accept ACK and an application ACK follow each other in one body; when the sender asked for no
//! acknowledgement the answer is 204. When the database fails nothing is acknowledged: 503 with an
//! OperationOutcome, and the sender resends.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::audit::AuditFacts;
use super::caller::Authenticated;
use super::negotiate::read_limited;
use crate::error::ApiError;
use crate::hl7v2::ingest::Disposition;

/// The media type of ER7-encoded HL7 v2 over HTTP.
pub const ER7_MEDIA_TYPE: &str = "x-application/hl7-v2+er7";

pub async fn ingest_message(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    request: Request,
) -> Result<Response, ApiError> {
    // Ingestion creates Patients, Devices and Observations on the server's behalf: only the
    // roles made for it may send, and their token must allow creating Observations.
    if !caller.role.may_ingest() {
        return Err(ApiError::Forbidden(format!(
            "the {} role may not send HL7 v2 messages",
            caller.role
        )));
    }
    if caller
        .covering("Observation", crate::auth::Permission::Create)
        .next()
        .is_none()
    {
        return Err(crate::auth::access::insufficient_scope(
            &caller,
            "Observation",
            crate::auth::Permission::Create,
        ));
    }
    let media_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if !matches!(
        media_type.as_str(),
        ER7_MEDIA_TYPE | "text/plain" | "application/hl7-v2"
    ) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "POST /hl7v2 takes an HL7 v2 message as {ER7_MEDIA_TYPE} (or text/plain)"
        )));
    }
    let limit = state.ingestor.service().config.hl7v2.max_message_bytes;
    let body = read_limited(request.into_body(), limit).await?;
    let answer = state.ingestor.ingest_from(&body, &caller).await;
    // The ingestor audited every answer it gave (a stored or refused message in its
    // transaction, a resend on its own, whatever the transport); an unavailable store, which
    // answered nothing, is recorded by the audit layer.
    let facts = match answer.disposition {
        Disposition::Unavailable => AuditFacts::default(),
        Disposition::Stored
        | Disposition::Duplicate
        | Disposition::Rejected
        | Disposition::DeadLettered => AuditFacts::recorded(),
    };
    if answer.disposition == Disposition::Unavailable {
        return Err(ApiError::Unavailable(
            "the message could not be stored now and was not acknowledged; resend it".into(),
        ));
    }
    if answer.frames.is_empty() {
        return Ok(facts.attach(StatusCode::NO_CONTENT.into_response()));
    }
    let body = answer.frames.concat();
    Ok(facts.attach(
        (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                format!("{ER7_MEDIA_TYPE}; charset=utf-8"),
            )],
            body,
        )
            .into_response(),
    ))
}
