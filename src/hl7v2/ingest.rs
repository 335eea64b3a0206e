//! Ingesting one message: parse, check the header, recognise a resend, map, store, answer.
//!
//! The answer is decided before the commit and stored with it: the message's bookkeeping row
//! (`hl7_messages`, keyed by an HMAC of sending application, facility and MSH-10) commits in the
//! same database transaction as the resources the message creates, so an acknowledged message is
//! stored exactly once and a resend, even after a restart, gets the same ACK again. A message that
//! cannot be parsed, mapped or stored is kept sealed in the dead-letter store with the reason.
//!
//! Nothing is acknowledged that is not durable: when the database fails under a commit (or under
//! the dead-letter write), the answer is [`Disposition::Unavailable`] and the transport sends no
//! ACK (MLLP closes the connection), so the sender resends.

use std::collections::HashMap;
use std::sync::Arc;

use super::ack::{Echo, Hl7Error};
use super::codes::CodeTable;
use super::er7::Message;
use super::map::{MapContext, Mapped, PatientSource, map_message};
use super::mode::{AckMode, Verdict, answer_frames};
use super::plan::{GroupMatches, Match, Resolved, Sender, criteria, plan};
use crate::auth::{Caller, Permission, Role};
use crate::crypto::Aad;
use crate::error::{ApiError, ApiResult};
use crate::fhir::id::FhirId;
use crate::fhir::instant::now_micros;
use crate::service::Service;
use crate::service::conditional::Matches;
use crate::store::hl7v2::{self as rows, DeadLetter, StoredMessage};
use crate::store::{Conn, versions};

/// Blind-index "parameters" the bookkeeping HMACs are keyed under (domain separation).
const MESSAGE_KEY_PARAM: &str = "hl7v2/message-key";
const CONTENT_PARAM: &str = "hl7v2/message-content";
const ACK_PURPOSE: &str = "hl7v2-ack";
const DEAD_LETTER_PURPOSE: &str = "hl7v2-dead-letter";

/// Plans of one message tried at most (a match can go stale between planning and writing).
const MAX_ATTEMPTS: usize = 3;

/// Message versions this mapping was written for.
const VERSIONS: &[&str] = &[
    "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2", "2.9",
];

/// What happened to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Mapped and committed.
    Stored,
    /// Stored before; the earlier answer was repeated and nothing new was written.
    Duplicate,
    /// Could not be mapped or stored; kept in the dead-letter store (AE).
    DeadLettered,
    /// Not accepted (unparseable, unsupported, or a different message under a used key); kept in
    /// the dead-letter store (AR).
    Rejected,
    /// The database failed: nothing was acknowledged, the sender must resend.
    Unavailable,
}

/// The answer to one message.
#[derive(Debug, Clone)]
pub struct Answer {
    /// ACK messages to send, in order (none when the sender asked for none, or when unavailable).
    pub frames: Vec<String>,
    pub disposition: Disposition,
    /// The dead letter that holds the message, if it was kept there.
    pub dead_letter: Option<String>,
}

/// Ingests messages through the service's write path.
#[derive(Clone)]
pub struct Ingestor {
    service: Service,
    codes: Arc<CodeTable>,
}

impl Ingestor {
    pub fn new(service: Service) -> anyhow::Result<Ingestor> {
        let codes = CodeTable::load()
            .map_err(|e| anyhow::anyhow!("loading the HL7 v2 code tables: {e}"))?;
        Ok(Ingestor {
            service,
            codes: Arc::new(codes),
        })
    }

    pub fn service(&self) -> &Service {
        &self.service
    }

    /// Ingest one message (the bytes between MLLP framing, or an HTTP body).
    /// [`Ingestor::ingest_from`] on the server's own behalf (message files, replays).
    pub async fn ingest(&self, raw: &[u8]) -> Answer {
        self.ingest_from(raw, &crate::auth::Caller::server_shared())
            .await
    }

    /// Ingest one message sent by `sender` (the hub or token that delivered it, which the audit
    /// record of a stored message names).
    pub async fn ingest_from(
        &self,
        raw: &[u8],
        delivered_by: &std::sync::Arc<crate::auth::Caller>,
    ) -> Answer {
        let message = match Message::parse(raw) {
            Ok(message) => message,
            Err(error) => {
                let error = Hl7Error::new(error.code, error.location, error.message);
                return self
                    .refuse(
                        raw,
                        &Echo::default(),
                        AckMode::Original,
                        Verdict::Rejected,
                        vec![error],
                        delivered_by,
                    )
                    .await;
            }
        };
        let echo = Echo::of(&message);
        let mode = AckMode::of(&message);
        if let Err(error) = check_header(&message) {
            return self
                .refuse(
                    raw,
                    &echo,
                    mode,
                    Verdict::Rejected,
                    vec![error],
                    delivered_by,
                )
                .await;
        }
        let keys = self.service.keys.current();
        let sender = sender_of(&echo);
        let message_key = keys.blind_token(
            MESSAGE_KEY_PARAM,
            &format!("{sender}|{}", echo.control_id),
            128,
        );
        let content_hash = keys.blind_token(CONTENT_PARAM, &message.to_er7(), 256);

        match self
            .earlier_answer(&message_key, &content_hash, &echo.control_id, delivered_by)
            .await
        {
            Ok(Some(answer)) => return answer,
            Ok(None) => {}
            Err(Conflicting) => {
                let error = Hl7Error::new(
                    205,
                    "MSH^1^10",
                    "this message control id was already used for a different message from this sender",
                );
                return self
                    .refuse(
                        raw,
                        &echo,
                        mode,
                        Verdict::Rejected,
                        vec![error],
                        delivered_by,
                    )
                    .await;
            }
        }

        let context = MapContext {
            codes: &self.codes,
            config: &self.service.config.hl7v2,
        };
        let mapped = match map_message(&message, &context) {
            Ok(mapped) => mapped,
            Err(errors) => {
                return self
                    .refuse(raw, &echo, mode, Verdict::Failed, errors, delivered_by)
                    .await;
            }
        };
        let frames = answer_frames(mode, &echo, Verdict::Accepted, &[]);
        let Ok(sealed_frames) = self.seal_frames(&message_key, &frames) else {
            return unavailable();
        };
        let stored = StoredMessage {
            content_hash: content_hash.clone(),
            ack: sealed_frames,
            provenance_id: String::new(),
        };
        // A hub's new devices and patients are its organisation's, so that its next messages
        // may name them.
        let owner = (delivered_by.role == Role::DeviceHub)
            .then_some(delivered_by.org.as_deref())
            .flatten();
        let sender_ref = Sender {
            sender: &sender,
            control_id: &echo.control_id,
            owner,
        };
        // A match made before the write can go stale (another message created the same patient
        // meanwhile); the write notices and the message is planned again.
        for _ in 0..MAX_ATTEMPTS {
            match self
                .store(
                    &mapped,
                    &sender_ref,
                    delivered_by,
                    &message_key,
                    stored.clone(),
                )
                .await
            {
                Ok(Some(resources)) => {
                    tracing::info!(resources, "HL7 v2 message stored");
                    return Answer {
                        frames,
                        disposition: Disposition::Stored,
                        dead_letter: None,
                    };
                }
                Ok(None) => continue,
                Err(Failure::Refused(errors)) => {
                    return self
                        .refuse(raw, &echo, mode, Verdict::Failed, errors, delivered_by)
                        .await;
                }
                // Another connection stored the same message first (a resend racing its original).
                Err(Failure::AlreadyStored) => {
                    return match self
                        .earlier_answer(&message_key, &content_hash, &echo.control_id, delivered_by)
                        .await
                    {
                        Ok(Some(answer)) => answer,
                        _ => unavailable(),
                    };
                }
                Err(Failure::Unavailable) => return unavailable(),
            }
        }
        tracing::warn!("HL7 v2 message: patient or device matches kept changing; not acknowledged");
        unavailable()
    }

    /// Match, plan, validate, index and seal outside the write lock; then confirm the matches and
    /// write everything with the message's bookkeeping row in one transaction. `Ok(None)` when a
    /// match went stale.
    async fn store(
        &self,
        mapped: &Mapped,
        sender: &Sender<'_>,
        delivered_by: &std::sync::Arc<crate::auth::Caller>,
        message_key: &str,
        mut row: StoredMessage,
    ) -> Result<Option<usize>, Failure> {
        let matches = self.match_groups(mapped, delivered_by).await?;
        let planned = plan(mapped, &matches, sender);
        let open = self.service.clock.open();
        let mut writes = Vec::with_capacity(planned.len());
        for resource in planned {
            self.service
                .check_resource(resource.resource_type, &resource.body)
                .map_err(|e| Failure::Refused(vec![store_error(&e)]))?;
            let (write, _) = self
                .service
                .prepare_version(
                    resource.resource_type,
                    &resource.id,
                    resource.body,
                    None,
                    "POST",
                    None,
                )
                .map_err(|e| Failure::Refused(vec![store_error(&e)]))?;
            writes.push(write);
        }
        row.provenance_id = writes.last().map(|w| w.id.clone()).unwrap_or_default();
        let confirmations: Vec<Match> = matches
            .into_iter()
            .flat_map(|g| g.patient.into_iter().chain(g.devices))
            .collect();
        let service = self.service.clone();
        let key = message_key.to_string();
        let record = self.ingest_record(delivered_by, sender.control_id, &writes);
        // Sealed here, in parallel with other messages, not by the single writer.
        let sealed = crate::audit::chain::seal(&self.service, &[record]).map_err(failure_of)?;
        let result = self
            .service
            .write_opened(open, move |conn| {
                Box::pin(async move {
                    for found in &confirmations {
                        if !still_holds(&service, conn, found).await? {
                            return Ok(None);
                        }
                    }
                    rows::insert_message(conn, &key, &row, now_micros()).await?;
                    let chains = service.config.audit.chains;
                    crate::audit::chain::write_with_events(conn, chains, &writes, &sealed).await?;
                    Ok(Some(writes.len()))
                })
            })
            .await;
        result.map_err(|error| match error {
            ApiError::Conflict(_) => Failure::AlreadyStored,
            error => failure_of(error),
        })
    }

    /// The audit record of a stored message: the message, every resource it created or updated,
    /// and the patients they concern (their compartments).
    fn ingest_record(
        &self,
        delivered_by: &std::sync::Arc<crate::auth::Caller>,
        control_id: &str,
        writes: &[crate::store::write::VersionWrite],
    ) -> crate::audit::AuditRecord {
        use crate::audit::{Entity, Event, Outcome};
        let patients: std::collections::BTreeSet<&String> = writes
            .iter()
            .filter_map(|w| w.compartment.patient.as_ref())
            .collect();
        let mut entities: Vec<Entity> = vec![Entity::Message {
            control_id: control_id.to_string(),
        }];
        entities.extend(
            patients
                .into_iter()
                .map(|id| Entity::Patient { id: id.clone() }),
        );
        entities.extend(writes.iter().map(|w| Entity::Resource {
            reference: format!("{}/{}/_history/{}", w.resource_type, w.id, w.version),
        }));
        self.service.audit_record(
            delivered_by,
            Event::Ingest,
            Outcome::Success,
            None,
            entities,
        )
    }

    /// The audit record of a resend answered from the store: the message, and the Provenance of
    /// what it stored the first time (which names every resource and so every patient).
    fn resend_record(
        &self,
        delivered_by: &Arc<Caller>,
        control_id: &str,
        provenance_id: &str,
    ) -> crate::audit::AuditRecord {
        use crate::audit::{Entity, Event, Outcome};
        let mut entities = vec![Entity::Message {
            control_id: control_id.to_string(),
        }];
        if !provenance_id.is_empty() {
            entities.push(Entity::Resource {
                reference: format!("Provenance/{provenance_id}"),
            });
        }
        self.service.audit_record(
            delivered_by,
            Event::Ingest,
            Outcome::Success,
            Some("a resend of a stored message: its earlier answer was repeated, nothing new was stored".into()),
            entities,
        )
    }

    /// Match every group's patient (by PID identifier, or through its devices) and devices.
    /// The devices a message names must be the sender's ([`Ingestor::devices_of_sender`]).
    async fn match_groups(
        &self,
        mapped: &Mapped,
        sender: &Arc<Caller>,
    ) -> Result<Vec<GroupMatches>, Failure> {
        let mut seen: HashMap<(&'static str, String), Resolved> = HashMap::new();
        let mut groups = Vec::with_capacity(mapped.groups.len());
        for (group, (patient_criteria, device_criteria)) in
            mapped.groups.iter().zip(criteria(mapped))
        {
            let mut matched = GroupMatches::default();
            if let Some(criteria) = patient_criteria {
                let resolved = self
                    .resolve(&mut seen, "Patient", &criteria, "PID^1^3")
                    .await?;
                matched.patient = Some(Match {
                    resource_type: "Patient",
                    criteria,
                    resolved,
                });
            }
            for criteria in device_criteria {
                let resolved = self
                    .resolve(&mut seen, "Device", &criteria, "OBX^1^18")
                    .await?;
                matched.devices.push(Match {
                    resource_type: "Device",
                    criteria,
                    resolved,
                });
            }
            self.devices_of_sender(&matched.devices, sender).await?;
            if let Some(patient) = &matched.patient {
                self.patient_of_sender(patient, sender).await?;
            }
            if matches!(group.patient, PatientSource::Device) {
                let mut found = None;
                for device in matched.devices.iter().filter_map(|d| match &d.resolved {
                    Resolved::Existing(id) => Some(id),
                    Resolved::New(_) => None,
                }) {
                    if let Some(patient) = self
                        .patient_of_device(device)
                        .await
                        .map_err(|_| Failure::Unavailable)?
                    {
                        found = Some(patient);
                        break;
                    }
                }
                let Some(patient) = found else {
                    return Err(Failure::Refused(vec![unknown_device()]));
                };
                matched.patient_through_device = Some(patient);
            }
            groups.push(matched);
        }
        Ok(groups)
    }

    /// A sender may name only devices it may see: a device hub its own (`Device.owner` is its
    /// organisation, the hub's read rule in [`crate::auth::access`]); the server itself and an
    /// unrestricted admin any. Otherwise a hub could file its readings under another
    /// organisation's recorder, and so under that recorder's patient. Another's device is
    /// answered exactly as an unknown one (AE, ERR 204 at OBX-18), so that the answer does not
    /// tell a hub which identifiers exist elsewhere.
    async fn devices_of_sender(
        &self,
        devices: &[Match],
        sender: &Arc<Caller>,
    ) -> Result<(), Failure> {
        let stored: Vec<String> = devices
            .iter()
            .filter_map(|d| match &d.resolved {
                Resolved::Existing(id) => Some(id.clone()),
                Resolved::New(_) => None,
            })
            .collect();
        if stored.is_empty() || sender.is_unrestricted() {
            return Ok(());
        }
        let mut conn = self
            .service
            .reader()
            .await
            .map_err(|_| Failure::Unavailable)?;
        let visible = self
            .service
            .visible_ids(&mut conn, sender, Permission::Read, "Device", &stored)
            .await
            .map_err(failure_of)?;
        if stored.iter().all(|id| visible.contains(id)) {
            return Ok(());
        }
        tracing::info!(role = %sender.role, client = ?sender.client_id, "HL7 v2 message names a device that is not the sender's; refused");
        Err(Failure::Refused(vec![unknown_device()]))
    }

    /// A stored patient that a message's PID names must be within the sender's reach: for a
    /// device hub, managed by its organisation (`Patient.managingOrganization`, as the patients
    /// its messages create are) or the patient of one of its own devices. Otherwise a hub could
    /// file readings under any patient whose identifier it knows. A new patient is the sender's
    /// own; the server itself and an unrestricted admin may name any. Refused with ERR 204 and
    /// kept as a dead letter: an administrator can assign the patient and replay it.
    async fn patient_of_sender(
        &self,
        patient: &Match,
        sender: &Arc<Caller>,
    ) -> Result<(), Failure> {
        let Resolved::Existing(id) = &patient.resolved else {
            return Ok(());
        };
        if sender.is_unrestricted() {
            return Ok(());
        }
        if let Some(org) = sender.org.as_deref() {
            let organization = format!("Organization/{org}");
            let managed = [
                ("_id", id.as_str()),
                ("organization", organization.as_str()),
            ];
            let patient = format!("Patient/{id}");
            let owns_its_device = [
                ("patient", patient.as_str()),
                ("organization", organization.as_str()),
            ];
            for (resource_type, criteria) in [("Patient", managed), ("Device", owns_its_device)] {
                let criteria =
                    serde_urlencoded::to_string(criteria).map_err(|_| Failure::Unavailable)?;
                if !matches!(
                    self.stored_matches(resource_type, &criteria).await?,
                    Matches::None
                ) {
                    return Ok(());
                }
            }
        }
        tracing::info!(role = %sender.role, client = ?sender.client_id, "HL7 v2 message names a patient outside the sender's organisation; refused");
        Err(Failure::Refused(vec![Hl7Error::new(
            204,
            "PID^1^3",
            "the patient identified in PID-3 is not one the sender may send results for (managed by its organisation, or the patient of one of its devices): have the patient assigned to the sender's organisation, then replay the message",
        )]))
    }

    /// The stored resources of `resource_type` that `criteria` (a query string) select, all of
    /// them (the server's view, not the sender's).
    async fn stored_matches(
        &self,
        resource_type: &str,
        criteria: &str,
    ) -> Result<Matches, Failure> {
        let mut conn = self
            .service
            .reader()
            .await
            .map_err(|_| Failure::Unavailable)?;
        self.service
            .conditional_matches(
                &mut conn,
                &Caller::server_shared(),
                Permission::Search,
                resource_type,
                criteria,
            )
            .await
            .map_err(failure_of)
    }

    /// The stored resource `criteria` select, or a fresh id for a new one.
    async fn resolve(
        &self,
        seen: &mut HashMap<(&'static str, String), Resolved>,
        resource_type: &'static str,
        criteria: &str,
        location: &str,
    ) -> Result<Resolved, Failure> {
        if let Some(found) = seen.get(&(resource_type, criteria.to_string())) {
            return Ok(found.clone());
        }
        let resolved = match self.stored_matches(resource_type, criteria).await? {
            Matches::One(id) => Resolved::Existing(id),
            Matches::None => Resolved::New(FhirId::generate().into_string()),
            Matches::Many(_) => {
                return Err(Failure::Refused(vec![Hl7Error::new(
                    207,
                    location,
                    format!(
                        "the identifier matches more than one stored {resource_type}; resolve the duplicates"
                    ),
                )]));
            }
        };
        seen.insert((resource_type, criteria.to_string()), resolved.clone());
        Ok(resolved)
    }

    /// The stored answer for a resend; `Conflicting` when the key was used for other content.
    /// Answering a resend hands out what was stored (the ACK says which results are in), so it is
    /// audited like a read: on every transport, and with no ACK when the record cannot be
    /// written (the sender resends).
    async fn earlier_answer(
        &self,
        message_key: &str,
        content_hash: &str,
        control_id: &str,
        delivered_by: &Arc<Caller>,
    ) -> Result<Option<Answer>, Conflicting> {
        let found = match self.service.reader().await {
            Ok(mut conn) => rows::find_message(&mut conn, message_key)
                .await
                .ok()
                .flatten(),
            Err(_) => None,
        };
        let Some(found) = found else { return Ok(None) };
        if found.content_hash != content_hash {
            return Err(Conflicting);
        }
        let frames = self
            .open_frames(message_key, &found.ack)
            .unwrap_or_default();
        tracing::info!(provenance = %found.provenance_id, "HL7 v2 message was stored before; answered again");
        let record = self.resend_record(delivered_by, control_id, &found.provenance_id);
        if let Err(error) = self.service.audit(vec![record]).await {
            tracing::warn!(%error, "the audit record of a resend could not be written; not acknowledged");
            return Ok(Some(unavailable()));
        }
        Ok(Some(Answer {
            frames,
            disposition: Disposition::Duplicate,
            dead_letter: None,
        }))
    }

    /// The `Patient/id` a stored Device is assigned to.
    async fn patient_of_device(&self, device_id: &str) -> ApiResult<Option<String>> {
        let device = self
            .service
            .read(&Caller::server_shared(), "Device", device_id)
            .await?;
        let reference = device
            .resource
            .as_ref()
            .and_then(|d| d["patient"]["reference"].as_str())
            .map(str::to_string);
        Ok(reference.filter(|r| r.starts_with("Patient/")))
    }

    /// Answer a message that will not be stored, after keeping it in the dead-letter store and
    /// recording the refusal in the audit trail (in one transaction; whatever the transport).
    async fn refuse(
        &self,
        raw: &[u8],
        echo: &Echo,
        mode: AckMode,
        verdict: Verdict,
        errors: Vec<Hl7Error>,
        delivered_by: &std::sync::Arc<crate::auth::Caller>,
    ) -> Answer {
        let reason = errors
            .iter()
            .map(|e| format!("{} {}: {}", e.code, e.location, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        let code = errors.first().map_or(207, |e| e.code);
        let record = self.refusal_record(delivered_by, echo, verdict, &reason);
        let dead_letter = match self.keep_dead_letter(raw, code, &reason, record).await {
            Ok(id) => id,
            Err(_) => return unavailable(),
        };
        tracing::warn!(dead_letter = %dead_letter, code, ?verdict, "HL7 v2 message not stored; kept as a dead letter");
        let disposition = if verdict == Verdict::Rejected {
            Disposition::Rejected
        } else {
            Disposition::DeadLettered
        };
        Answer {
            frames: answer_frames(mode, echo, verdict, &errors),
            disposition,
            dead_letter: Some(dead_letter),
        }
    }

    /// The audit record of a refused message: who delivered it, its control id, and why (the
    /// ERR texts, which never hold PHI).
    fn refusal_record(
        &self,
        delivered_by: &std::sync::Arc<crate::auth::Caller>,
        echo: &Echo,
        verdict: Verdict,
        reason: &str,
    ) -> crate::audit::AuditRecord {
        use crate::audit::{Entity, Event, Outcome};
        let entities = (!echo.control_id.is_empty())
            .then(|| Entity::Message {
                control_id: echo.control_id.clone(),
            })
            .into_iter()
            .collect();
        let verdict = if verdict == Verdict::Rejected {
            "rejected"
        } else {
            "not stored"
        };
        self.service.audit_record(
            delivered_by,
            Event::Ingest,
            Outcome::MinorFailure,
            Some(format!("{verdict}: {reason}")),
            entities,
        )
    }

    async fn keep_dead_letter(
        &self,
        raw: &[u8],
        code: u16,
        reason: &str,
        record: crate::audit::AuditRecord,
    ) -> ApiResult<String> {
        let keys = self.service.keys.current();
        let content_hash = keys.blind_token(
            CONTENT_PARAM,
            &hex::encode(ring::digest::digest(&ring::digest::SHA256, raw)),
            256,
        );
        let sealed = keys.seal(
            &Aad::Blob {
                purpose: DEAD_LETTER_PURPOSE,
                key: &content_hash,
            },
            raw,
        )?;
        let now = now_micros();
        let letter = DeadLetter {
            id: uuid::Uuid::now_v7().to_string(),
            content_hash,
            first_seen: now,
            last_seen: now,
            attempts: 1,
            error_code: i64::from(code),
            reason: reason.to_string(),
            key_id: i64::from(keys.active_key_id()),
            message: sealed,
            resolved_at: None,
        };
        let service = self.service.clone();
        self.service
            .write(move |conn| {
                Box::pin(async move {
                    let id = rows::keep_dead_letter(conn, &letter).await?;
                    crate::audit::append(&service, conn, &[record]).await?;
                    Ok(id)
                })
            })
            .await
    }

    /// Answer a frame the MLLP layer could not take apart (bad trailer, interrupted, too large):
    /// rejected with ERR 100 and kept as a dead letter, echoing its MSH when one can be read.
    pub async fn reject_frame(
        &self,
        partial: &[u8],
        reason: &str,
        delivered_by: &std::sync::Arc<crate::auth::Caller>,
    ) -> Answer {
        let parsed = Message::parse(partial).ok();
        let echo = parsed.as_ref().map(Echo::of).unwrap_or_default();
        let mode = parsed.as_ref().map_or(AckMode::Original, AckMode::of);
        let error = Hl7Error::new(100, "", format!("the MLLP frame was rejected: {reason}"));
        self.refuse(
            partial,
            &echo,
            mode,
            Verdict::Rejected,
            vec![error],
            delivered_by,
        )
        .await
    }

    /// The raw bytes of a dead letter.
    pub fn open_dead_letter(&self, letter: &DeadLetter) -> ApiResult<Vec<u8>> {
        let keys = self.service.keys.current();
        Ok(keys.open(
            &Aad::Blob {
                purpose: DEAD_LETTER_PURPOSE,
                key: &letter.content_hash,
            },
            &letter.message,
        )?)
    }

    /// Ingest a dead letter again (after a mapping or configuration fix); marks it resolved when
    /// the message is now stored (or was stored meanwhile).
    pub async fn replay(&self, id: &str) -> ApiResult<Answer> {
        let mut conn = self.service.reader().await?;
        let letter = rows::find_dead_letter(&mut conn, id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no dead letter {id}")))?;
        drop(conn);
        let raw = self.open_dead_letter(&letter)?;
        let answer = self.ingest(&raw).await;
        if matches!(
            answer.disposition,
            Disposition::Stored | Disposition::Duplicate
        ) {
            let id = id.to_string();
            self.service
                .write(move |conn| {
                    Box::pin(async move {
                        Ok(rows::resolve_dead_letter(conn, &id, now_micros()).await?)
                    })
                })
                .await?;
        }
        Ok(answer)
    }

    fn seal_frames(&self, message_key: &str, frames: &[String]) -> ApiResult<Vec<u8>> {
        let plain = serde_json::to_vec(frames).map_err(|_| ApiError::Internal)?;
        Ok(self.service.keys.current().seal(
            &Aad::Blob {
                purpose: ACK_PURPOSE,
                key: message_key,
            },
            &plain,
        )?)
    }

    fn open_frames(&self, message_key: &str, sealed: &[u8]) -> ApiResult<Vec<String>> {
        let plain = self.service.keys.current().open(
            &Aad::Blob {
                purpose: ACK_PURPOSE,
                key: message_key,
            },
            sealed,
        )?;
        serde_json::from_slice(&plain).map_err(|_| ApiError::Internal)
    }
}

/// The key was used before for a different message.
struct Conflicting;

/// Why a message was not stored.
enum Failure {
    /// It cannot be stored as it is (mapping, validation, matching): AE, dead letter.
    Refused(Vec<Hl7Error>),
    /// The same message was stored meanwhile by another connection.
    AlreadyStored,
    /// The database failed: no ACK.
    Unavailable,
}

/// ERR 204 (unknown key identifier) at OBX-18: no device of the sender, with a patient, has the
/// message's equipment identifiers. The same text whether the device is unknown, has no patient,
/// or belongs to someone else.
fn unknown_device() -> Hl7Error {
    Hl7Error::new(
        204,
        "OBX^1^18",
        "no patient is known for the equipment identifier(s) of this message among the sender's devices: register the Device, owned by the sender's organisation, with its patient first",
    )
}

/// Is a match made before the write still true inside it?
async fn still_holds(service: &Service, conn: &mut Conn, found: &Match) -> ApiResult<bool> {
    match &found.resolved {
        Resolved::Existing(id) => {
            let head = versions::head(
                conn,
                service.store.backend(),
                found.resource_type,
                id,
                false,
            )
            .await?;
            Ok(head.is_some_and(|h| !h.deleted))
        }
        Resolved::New(_) => Ok(matches!(
            service
                .conditional_matches(
                    conn,
                    &Caller::server_shared(),
                    Permission::Search,
                    found.resource_type,
                    &found.criteria
                )
                .await?,
            Matches::None
        )),
    }
}

fn unavailable() -> Answer {
    Answer {
        frames: Vec::new(),
        disposition: Disposition::Unavailable,
        dead_letter: None,
    }
}

/// `MSH-3|MSH-4` as sent.
fn sender_of(echo: &Echo) -> String {
    format!("{}|{}", echo.sending_application, echo.sending_facility)
}

/// Message type, event, control id and version must be ones this server takes.
pub(crate) fn check_header(message: &Message) -> Result<(), Hl7Error> {
    let Some(msh) = message.first("MSH") else {
        return Err(Hl7Error::new(
            100,
            "MSH",
            "the message does not start with an MSH segment",
        ));
    };
    let (code, event) = (msh.get(9, 0, 1, 1), msh.get(9, 0, 2, 1));
    if code.is_empty() {
        return Err(Hl7Error::new(
            101,
            "MSH^1^9",
            "MSH-9 (message type) is required",
        ));
    }
    if code != "ORU" {
        return Err(Hl7Error::new(
            200,
            "MSH^1^9^1^1",
            "only ORU^R01 result messages are accepted here",
        ));
    }
    if event != "R01" {
        return Err(Hl7Error::new(
            201,
            "MSH^1^9^1^2",
            "only the R01 event of ORU is accepted here",
        ));
    }
    if msh.text(10).is_empty() {
        return Err(Hl7Error::new(
            101,
            "MSH^1^10",
            "MSH-10 (message control id) is required",
        ));
    }
    let version = msh.get(12, 0, 1, 1);
    if !VERSIONS.contains(&version) {
        return Err(Hl7Error::new(
            203,
            "MSH^1^12",
            "MSH-12 must be an HL7 version from 2.3 to 2.9",
        ));
    }
    Ok(())
}

/// An error of the store or validation as an ERR, without any content of the resources (the
/// validator's own texts may quote values).
/// What a failed lookup or store means for the message: the database failing is no ACK (the
/// sender resends), anything else refuses it.
fn failure_of(error: ApiError) -> Failure {
    match error {
        ApiError::Unavailable(_) | ApiError::Timeout | ApiError::Internal => Failure::Unavailable,
        error => Failure::Refused(vec![store_error(&error)]),
    }
}

fn store_error(error: &ApiError) -> Hl7Error {
    match error {
        ApiError::Invalid(issues) | ApiError::Unprocessable(issues) => {
            let paths: Vec<&str> = issues
                .iter()
                .filter(|i| i.is_error())
                .filter_map(|i| i.expression.as_deref())
                .collect();
            Hl7Error::new(
                207,
                "",
                format!(
                    "the mapped resources are not valid FHIR at: {}",
                    paths.join(", ")
                ),
            )
        }
        ApiError::MultipleMatches(_) => Hl7Error::new(
            207,
            "PID^1^3",
            "the patient or device identifier matches more than one stored resource; resolve the duplicates",
        ),
        _ => Hl7Error::new(207, "", "the message could not be stored"),
    }
}
