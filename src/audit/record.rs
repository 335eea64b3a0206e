//! One audited event ([`AuditRecord`]) and the AuditEvent it becomes, in the shape of IHE BALP
//! (Basic Audit Log Patterns, <https://profiles.ihe.net/ITI/BALP/>) for FHIR R4:
//! <https://hl7.org/fhir/R4/auditevent.html>.
//!
//! # What goes where
//!
//! - `type`/`subtype`: a REST interaction is `audit-event-type|rest` with its
//!   `restful-interaction` code; the other events take a DICOM event type (Import, Export,
//!   Patient Record, Audit Log Used) and an ISO 21089 lifecycle subtype.
//! - `agent`: the caller (who = the token's issuer and subject as an identifier, its role, its
//!   client id as `altId`, its network address, its purposes), the caller's organisation when the
//!   token names one, and this server as the receiving side (BALP's "server" agent).
//! - `source`: this server, as an application server.
//! - `entity`: what was touched: resources, the patient, the query (base64, as R4 defines
//!   `entity.query`), an HL7 v2 message by control id.
//!
//! No field carries names, identifiers or other patient data, with one exception: `entity.query`
//! holds the query as the client sent it. It lives only in the sealed body; no search parameter of
//! AuditEvent indexes it.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

use crate::auth::caller::claim_id;
use crate::auth::{Caller, Role};
use crate::fhir::instant::{Micros, format_instant};

/// The code system of purposes of use (and of break-the-glass, `BTG`).
pub const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
/// The code system our role names are written in (`agent.role`).
pub const ROLE_SYSTEM: &str = "urn:fhirvault:role";
const AUDIT_EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const RESTFUL_INTERACTION: &str = "http://hl7.org/fhir/restful-interaction";
const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const LIFECYCLE: &str = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle";
const PARTICIPATION_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
const SECURITY_ROLE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/extra-security-role-type";
const SOURCE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
/// Identifier system of a URL (this server's base URL identifies it).
const URI_SYSTEM: &str = "urn:ietf:rfc:3986";

/// A coding this module writes with a fixed display: (system, code, display).
type Fixed = (&'static str, &'static str, &'static str);

const REST_OPERATION: Fixed = (AUDIT_EVENT_TYPE, "rest", "RESTful Operation");
const IMPORT: Fixed = (DCM, "110107", "Import");
const EXPORT: Fixed = (DCM, "110106", "Export");
const PATIENT_RECORD: Fixed = (DCM, "110110", "Patient Record");
const AUDIT_LOG_USED: Fixed = (DCM, "110101", "Audit Log Used");
const USER_AUTHENTICATION: Fixed = (DCM, "110114", "User Authentication");
const LOGIN: Fixed = (DCM, "110122", "Login");
const RECEIVE: Fixed = (
    LIFECYCLE,
    "receive",
    "Receive/Retain Record Lifecycle Event",
);
const DISCLOSE: Fixed = (LIFECYCLE, "disclose", "Disclose Record Lifecycle Event");
const REIDENTIFY: Fixed = (
    LIFECYCLE,
    "reidentify",
    "Re-identify Record Lifecycle Event",
);
const DESTROY: Fixed = (
    LIFECYCLE,
    "destroy",
    "Destroy/Delete Record Lifecycle Event",
);
const VERIFY: Fixed = (LIFECYCLE, "verify", "Verify Record Lifecycle Event");
const DESTINATION: Fixed = (DCM, "110152", "Destination Role ID");
const APPLICATION: Fixed = (DCM, "110150", "Application");
const INFORMATION_RECIPIENT: Fixed = (PARTICIPATION_TYPE, "IRCP", "information recipient");
const DATA_COLLECTOR: Fixed = (SECURITY_ROLE_TYPE, "datacollector", "data collector");
const APPLICATION_SERVER: Fixed = (SOURCE_TYPE, "4", "Application Server");
const SYSTEM_OBJECT: Fixed = (ENTITY_TYPE, "2", "System Object");
const PERSON: Fixed = (ENTITY_TYPE, "1", "Person");
const PATIENT_ROLE: Fixed = (OBJECT_ROLE, "1", "Patient");
const REPORT: Fixed = (OBJECT_ROLE, "3", "Report");
const DOMAIN_RESOURCE: Fixed = (OBJECT_ROLE, "4", "Domain Resource");
const JOB: Fixed = (OBJECT_ROLE, "20", "Job");
const QUERY: Fixed = (OBJECT_ROLE, "24", "Query");
const BREAK_THE_GLASS: Fixed = (ACT_REASON, "BTG", "break the glass");

/// Every (system, code, display) an AuditEvent of this server can carry: its codings come from
/// these fixed tables only, so the search index knows their displays
/// ([`crate::search::known_displays`]) and `:text` finds their words without word rows.
pub fn displayed_codings() -> Vec<Fixed> {
    let fixed = [
        REST_OPERATION,
        IMPORT,
        EXPORT,
        PATIENT_RECORD,
        AUDIT_LOG_USED,
        USER_AUTHENTICATION,
        LOGIN,
        RECEIVE,
        DISCLOSE,
        REIDENTIFY,
        DESTROY,
        VERIFY,
        DESTINATION,
        APPLICATION,
        INFORMATION_RECIPIENT,
        DATA_COLLECTOR,
        APPLICATION_SERVER,
        SYSTEM_OBJECT,
        PERSON,
        PATIENT_ROLE,
        REPORT,
        DOMAIN_RESOURCE,
        JOB,
        QUERY,
        BREAK_THE_GLASS,
    ];
    let interactions = RestInteraction::ALL
        .into_iter()
        .map(|i| (RESTFUL_INTERACTION, i.code(), i.code()));
    fixed.into_iter().chain(interactions).collect()
}

/// One audited event: who did what to which data, when, from where, why, and how it ended.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    /// When it happened: microseconds since the Unix epoch.
    pub recorded: Micros,
    pub event: Event,
    pub outcome: Outcome,
    /// Why it failed, e.g. "403: the crm role may not read Claim resources". Server error
    /// messages never hold PHI.
    pub outcome_desc: Option<String>,
    /// Who: `None` for a request refused before the server knew who sent it (a missing or
    /// refused token), recorded as a failed [`Event::Login`].
    pub caller: Option<Arc<Caller>>,
    /// The client's network address (IP).
    pub address: Option<String>,
    /// v3 PurposeOfUse codes (system [`ACT_REASON`]).
    pub purpose: Vec<String>,
    /// Emergency access (purpose ETREAT) that overrode a patient's consent.
    pub break_glass: bool,
    pub entities: Vec<Entity>,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Rest(RestInteraction),
    /// HL7 v2 data received and stored.
    Ingest,
    /// Data handed out in bulk.
    Export,
    /// A pseudonym turned back into a person.
    Reidentify,
    /// AuditEvents past their retention exported and removed.
    Prune,
    /// Read records found lost before they reached the chains: a read journal segment deleted
    /// or cut short ([`crate::audit::journal`]).
    JournalLoss,
    /// A request whose credentials were refused (no token, an invalid one, or one that grants
    /// nothing): someone tried to get in.
    Login,
}

/// The codes of <http://hl7.org/fhir/restful-interaction>.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestInteraction {
    Read,
    Vread,
    Update,
    Patch,
    Delete,
    HistoryInstance,
    HistoryType,
    HistorySystem,
    Create,
    SearchType,
    SearchSystem,
    Transaction,
    Batch,
    Operation,
}

impl RestInteraction {
    pub const ALL: [RestInteraction; 14] = [
        RestInteraction::Read,
        RestInteraction::Vread,
        RestInteraction::Update,
        RestInteraction::Patch,
        RestInteraction::Delete,
        RestInteraction::HistoryInstance,
        RestInteraction::HistoryType,
        RestInteraction::HistorySystem,
        RestInteraction::Create,
        RestInteraction::SearchType,
        RestInteraction::SearchSystem,
        RestInteraction::Transaction,
        RestInteraction::Batch,
        RestInteraction::Operation,
    ];

    pub fn code(self) -> &'static str {
        match self {
            RestInteraction::Read => "read",
            RestInteraction::Vread => "vread",
            RestInteraction::Update => "update",
            RestInteraction::Patch => "patch",
            RestInteraction::Delete => "delete",
            RestInteraction::HistoryInstance => "history-instance",
            RestInteraction::HistoryType => "history-type",
            RestInteraction::HistorySystem => "history-system",
            RestInteraction::Create => "create",
            RestInteraction::SearchType => "search-type",
            RestInteraction::SearchSystem => "search-system",
            RestInteraction::Transaction => "transaction",
            RestInteraction::Batch => "batch",
            RestInteraction::Operation => "operation",
        }
    }

    /// `AuditEvent.action`: searches execute a query (E, as BALP's Query pattern has it).
    fn action(self) -> &'static str {
        match self {
            RestInteraction::Create => "C",
            RestInteraction::Read
            | RestInteraction::Vread
            | RestInteraction::HistoryInstance
            | RestInteraction::HistoryType
            | RestInteraction::HistorySystem => "R",
            RestInteraction::Update | RestInteraction::Patch => "U",
            RestInteraction::Delete => "D",
            RestInteraction::SearchType
            | RestInteraction::SearchSystem
            | RestInteraction::Transaction
            | RestInteraction::Batch
            | RestInteraction::Operation => "E",
        }
    }
}

/// `AuditEvent.outcome` (<http://hl7.org/fhir/audit-event-outcome>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    MinorFailure,
    SeriousFailure,
    MajorFailure,
}

impl Outcome {
    /// 2xx and 3xx succeeded; a 4xx is the client's (minor) failure, a 5xx the server's (serious).
    pub fn from_status(status: u16) -> Outcome {
        match status {
            0..=399 => Outcome::Success,
            400..=499 => Outcome::MinorFailure,
            _ => Outcome::SeriousFailure,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Outcome::Success => "0",
            Outcome::MinorFailure => "4",
            Outcome::SeriousFailure => "8",
            Outcome::MajorFailure => "12",
        }
    }
}

/// Something the event touched (`AuditEvent.entity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entity {
    /// A resource or one of its versions: `Observation/1`, `Observation/1/_history/2`.
    Resource { reference: String },
    /// The patient the data is about.
    Patient { id: String },
    /// A search: the query string as sent, and the searched type (none for a system search).
    Query {
        query: String,
        resource_type: Option<String>,
    },
    /// An HL7 v2 message, by its control id (MSH-10).
    Message { control_id: String },
    /// A bulk export job, by its id.
    ExportJob { id: String },
    /// A file of a bulk export: its URL, the resource type of its lines and how many there are.
    ExportFile {
        url: String,
        resource_type: String,
        count: i64,
    },
}

impl Entity {
    fn to_json(&self) -> Value {
        match self {
            Entity::Resource { reference } => json!({
                "what": {"reference": reference},
                "type": coding(SYSTEM_OBJECT),
                "role": coding(DOMAIN_RESOURCE),
            }),
            Entity::Patient { id } => json!({
                "what": {"reference": format!("Patient/{id}")},
                "type": coding(PERSON),
                "role": coding(PATIENT_ROLE),
            }),
            Entity::Query {
                query,
                resource_type,
            } => {
                let mut entity = json!({
                    "type": coding(SYSTEM_OBJECT),
                    "role": coding(QUERY),
                    "query": BASE64.encode(query.as_bytes()),
                });
                if let Some(resource_type) = resource_type {
                    entity["detail"] =
                        json!([{"type": "resource-type", "valueString": resource_type}]);
                }
                entity
            }
            Entity::Message { control_id } => job(control_id),
            Entity::ExportJob { id } => job(id),
            Entity::ExportFile {
                url,
                resource_type,
                count,
            } => json!({
                "what": {"identifier": {"system": URI_SYSTEM, "value": printable(url)}},
                "type": coding(SYSTEM_OBJECT),
                "role": coding(REPORT),
                "detail": [
                    {"type": "resource-type", "valueString": printable(resource_type)},
                    {"type": "count", "valueString": count.to_string()},
                ],
            }),
        }
    }
}

impl Event {
    /// `type`, `subtype` codings and `action`.
    fn codes(self) -> (Value, Value, &'static str) {
        let (kind, subtype, action) = match self {
            Event::Rest(interaction) => {
                let code = interaction.code();
                return (
                    coding(REST_OPERATION),
                    json!([coding((RESTFUL_INTERACTION, code, code))]),
                    interaction.action(),
                );
            }
            Event::Ingest => (IMPORT, RECEIVE, "C"),
            Event::Export => (EXPORT, DISCLOSE, "R"),
            Event::Reidentify => (PATIENT_RECORD, REIDENTIFY, "R"),
            Event::Prune => (AUDIT_LOG_USED, DESTROY, "D"),
            Event::JournalLoss => (AUDIT_LOG_USED, VERIFY, "E"),
            // DICOM's User Authentication event; its subtypes are DICOM's, not lifecycle events.
            Event::Login => {
                return (coding(USER_AUTHENTICATION), json!([coding(LOGIN)]), "E");
            }
        };
        (coding(kind), json!([coding(subtype)]), action)
    }
}

impl AuditRecord {
    /// An event of the audit trail's own upkeep (pruning, a loss found in the read journal):
    /// done by this server, now, for record management (`RECORDMGT`), about no resource.
    pub fn record_management(event: Event, outcome: Outcome, description: String) -> AuditRecord {
        AuditRecord {
            recorded: crate::fhir::instant::now_micros(),
            event,
            outcome,
            outcome_desc: Some(description),
            caller: Some(Caller::server_shared()),
            address: None,
            purpose: vec!["RECORDMGT".into()],
            break_glass: false,
            entities: Vec::new(),
        }
    }

    /// The AuditEvent resource (without `id` and `meta.versionId`/`lastUpdated`, which the write
    /// path sets). `base_url` identifies this server.
    pub fn to_audit_event(&self, base_url: &str) -> Value {
        let (kind, subtype, action) = self.event.codes();
        let mut purposes = self.purpose.clone();
        if self.break_glass && !purposes.iter().any(|p| p == "ETREAT") {
            purposes.push("ETREAT".into());
        }
        let purpose_of_use: Vec<Value> = purposes
            .iter()
            .map(|code| json!({"coding": [{"system": ACT_REASON, "code": printable(code)}]}))
            .collect();

        let mut event = Map::new();
        event.insert("resourceType".into(), json!("AuditEvent"));
        if self.break_glass {
            event.insert(
                "meta".into(),
                json!({"security": [coding(BREAK_THE_GLASS)]}),
            );
        }
        event.insert("type".into(), kind);
        event.insert("subtype".into(), subtype);
        event.insert("action".into(), json!(action));
        event.insert("recorded".into(), json!(format_instant(self.recorded)));
        event.insert("outcome".into(), json!(self.outcome.code()));
        if let Some(description) = self
            .outcome_desc
            .as_deref()
            .filter(|d| !d.trim().is_empty())
        {
            event.insert("outcomeDesc".into(), json!(printable(description)));
        }
        if !purpose_of_use.is_empty() {
            event.insert("purposeOfEvent".into(), json!(purpose_of_use));
        }
        event.insert(
            "agent".into(),
            json!(self.agents(base_url, &purpose_of_use)),
        );
        event.insert(
            "source".into(),
            json!({"observer": server_reference(base_url), "type": [coding(APPLICATION_SERVER)]}),
        );
        if !self.entities.is_empty() {
            event.insert(
                "entity".into(),
                Value::Array(self.entities.iter().map(Entity::to_json).collect()),
            );
        }
        Value::Object(event)
    }

    /// The caller (requestor), its organisation, and this server as the receiving side.
    fn agents(&self, base_url: &str, purpose_of_use: &[Value]) -> Vec<Value> {
        let destination = json!({
            "type": {"coding": [coding(DESTINATION)]},
            "who": server_reference(base_url),
            "requestor": false,
        });
        let Some(caller) = self.caller.as_deref() else {
            // Nobody the server could identify: what it knows is where the request came from.
            let mut user = Map::new();
            user.insert("who".into(), json!({"display": "unauthenticated"}));
            user.insert("requestor".into(), json!(true));
            self.insert_network(&mut user);
            return vec![Value::Object(user), destination];
        };
        let is_server = *caller == *Caller::server_shared();
        let mut user = Map::new();
        let recipient = || coding(INFORMATION_RECIPIENT);
        let (kind, who) = if is_server {
            (coding(APPLICATION), server_reference(base_url))
        } else {
            let identifier =
                json!({"system": printable(&caller.issuer), "value": printable(&caller.subject)});
            match (caller.role, caller.patient.as_deref()) {
                (Role::DeviceHub, _) => (
                    coding(DATA_COLLECTOR),
                    json!({"type": "Device", "identifier": identifier}),
                ),
                // A patient reading their own record is findable with `AuditEvent?patient=`.
                (Role::Patient, Some(patient)) => (
                    recipient(),
                    json!({"reference": format!("Patient/{}", claim_id(patient, "Patient")), "identifier": identifier}),
                ),
                _ => (recipient(), json!({"identifier": identifier})),
            }
        };
        user.insert("type".into(), json!({"coding": [kind]}));
        user.insert(
            "role".into(),
            json!([{"coding": [{"system": ROLE_SYSTEM, "code": caller.role.name()}]}]),
        );
        user.insert("who".into(), who);
        if let Some(client_id) = caller.client_id.as_deref().filter(|c| !c.is_empty()) {
            user.insert("altId".into(), json!(printable(client_id)));
        }
        user.insert("requestor".into(), json!(true));
        self.insert_network(&mut user);
        if !purpose_of_use.is_empty() {
            user.insert("purposeOfUse".into(), json!(purpose_of_use));
        }
        let mut agents = vec![Value::Object(user)];
        if let Some(org) = caller.org.as_deref().filter(|o| !o.is_empty()) {
            agents.push(json!({"who": {"reference": format!("Organization/{}", claim_id(org, "Organization"))}, "requestor": false}));
        }
        if !is_server {
            agents.push(destination);
        }
        agents
    }

    /// The client's network address on its agent.
    fn insert_network(&self, agent: &mut Map<String, Value>) {
        if let Some(address) = self.address.as_deref().filter(|a| !a.is_empty()) {
            agent.insert(
                "network".into(),
                json!({"address": printable(address), "type": "2"}),
            );
        }
    }
}

/// A job (an HL7 v2 message being processed, a bulk export), by its identifier.
fn job(id: &str) -> Value {
    json!({
        "what": {"identifier": {"value": printable(id)}},
        "type": coding(SYSTEM_OBJECT),
        "role": coding(JOB),
    })
}

fn coding((system, code, display): Fixed) -> Value {
    json!({"system": system, "code": code, "display": display})
}

/// This server, as a Reference: identified by its base URL.
fn server_reference(base_url: &str) -> Value {
    json!({"identifier": {"system": URI_SYSTEM, "value": base_url}, "display": "fhirvault"})
}

/// `text` without control characters (FHIR strings allow none but tab, CR and LF; an
/// AuditEvent is written whatever the caller sent).
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scope::parse_scopes;

    const BASE: &str = "https://fhir.example/fhir";

    use crate::fhir::validation::tests::validator;

    fn clinician() -> Arc<Caller> {
        Arc::new(Caller {
            subject: "dr-huber".into(),
            issuer: "https://idp.example/realms/clinic".into(),
            client_id: Some("ehr-app".into()),
            role: Role::Clinician,
            scopes: parse_scopes("user/*.rs").expect("scopes"),
            patient: None,
            org: Some("Organization/org-a".into()),
            purpose: Some("TREAT".into()),
            consent: None,
            break_glass: false,
            address: Some("10.0.0.7".into()),
        })
    }

    fn record(event: Event, caller: Arc<Caller>, entities: Vec<Entity>) -> AuditRecord {
        AuditRecord {
            recorded: 1_700_000_000_123_456,
            event,
            outcome: Outcome::Success,
            outcome_desc: None,
            caller: Some(caller),
            address: Some("10.1.2.3".into()),
            purpose: vec!["TREAT".into()],
            break_glass: false,
            entities,
        }
    }

    fn assert_valid(event: &Value) {
        let issues = validator().validate(event);
        assert!(
            issues.iter().all(|i| !i.is_error()),
            "{event:#}\n{issues:#?}"
        );
    }

    fn every_entity() -> Vec<Entity> {
        vec![
            Entity::Resource {
                reference: "Observation/obs-1/_history/2".into(),
            },
            Entity::Patient { id: "p-1".into() },
            Entity::Query {
                query: "name=Muster&birthdate=1980".into(),
                resource_type: Some("Patient".into()),
            },
            Entity::Message {
                control_id: "MSG-0001".into(),
            },
            Entity::ExportJob {
                id: "8c7e2f0e-5d1e-4b4a-9a7e-3c1f2d4b6e80".into(),
            },
            Entity::ExportFile {
                url: "https://fhir.example/fhir/$export-file/8c7e/0".into(),
                resource_type: "Observation".into(),
                count: 12,
            },
        ]
    }

    fn every_event() -> impl Iterator<Item = Event> {
        RestInteraction::ALL.into_iter().map(Event::Rest).chain([
            Event::Ingest,
            Event::Export,
            Event::Reidentify,
            Event::Prune,
            Event::JournalLoss,
            Event::Login,
        ])
    }

    #[test]
    fn every_event_kind_is_a_valid_audit_event() {
        let events = every_event();
        for event in events {
            let json = record(event, clinician(), every_entity()).to_audit_event(BASE);
            assert_valid(&json);
        }
        // The validator does check AuditEvents: a wrong action code and a missing agent fail.
        let mut broken = record(Event::Ingest, clinician(), Vec::new()).to_audit_event(BASE);
        broken["action"] = json!("X");
        broken.as_object_mut().unwrap().remove("agent");
        let issues = validator().validate(&broken);
        let at = |path: &str| {
            issues
                .iter()
                .any(|i| i.is_error() && i.expression.as_deref() == Some(path))
        };
        assert!(
            at("AuditEvent.action") && at("AuditEvent.agent"),
            "{issues:#?}"
        );
    }

    /// Every coding object in `value` that has a display, as (system, code, display).
    fn displayed(value: &Value, out: &mut Vec<(String, String, String)>) {
        match value {
            Value::Object(map) => {
                let text = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_string);
                if let (Some(system), Some(code), Some(display)) =
                    (text("system"), text("code"), text("display"))
                {
                    out.push((system, code, display));
                }
                map.values().for_each(|v| displayed(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| displayed(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_displayed_coding_is_in_the_fixed_tables() {
        let with_role = |role: Role, patient: Option<&str>| {
            let mut caller = (*clinician()).clone();
            caller.role = role;
            caller.patient = patient.map(str::to_string);
            Some(Arc::new(caller))
        };
        let callers = [
            Some(clinician()),
            with_role(Role::DeviceHub, None),
            with_role(Role::Patient, Some("Patient/p-1")),
            Some(Caller::server_shared()),
            None,
        ];
        let events = every_event();
        let known = displayed_codings();
        let mut seen = Vec::new();
        for event in events {
            for caller in &callers {
                let mut record = record(event, clinician(), every_entity());
                record.caller = caller.clone();
                record.break_glass = true;
                displayed(&record.to_audit_event(BASE), &mut seen);
            }
        }
        for (system, code, display) in &seen {
            assert!(
                known.contains(&(system.as_str(), code.as_str(), display.as_str())),
                "{system}|{code} \"{display}\" is written but not in displayed_codings()"
            );
        }
        // And every listed one is written by some event.
        for (system, code, display) in known {
            assert!(
                seen.iter()
                    .any(|s| (s.0.as_str(), s.1.as_str(), s.2.as_str()) == (system, code, display)),
                "{system}|{code} is listed but never written"
            );
        }
    }

    #[test]
    fn a_read_in_balp_shape() {
        let json = record(
            Event::Rest(RestInteraction::Read),
            clinician(),
            vec![
                Entity::Resource {
                    reference: "Observation/obs-1".into(),
                },
                Entity::Patient { id: "p-1".into() },
            ],
        )
        .to_audit_event(BASE);
        assert_eq!(json["type"]["code"], "rest");
        assert_eq!(
            json["subtype"][0],
            json!({"system": RESTFUL_INTERACTION, "code": "read", "display": "read"})
        );
        assert_eq!(json["action"], "R");
        assert_eq!(json["recorded"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(json["outcome"], "0");
        assert_eq!(json["purposeOfEvent"][0]["coding"][0]["code"], "TREAT");
        let user = &json["agent"][0];
        assert_eq!(
            user["who"]["identifier"],
            json!({"system": "https://idp.example/realms/clinic", "value": "dr-huber"})
        );
        assert_eq!(user["requestor"], true);
        assert_eq!(user["altId"], "ehr-app");
        assert_eq!(
            user["role"][0]["coding"][0],
            json!({"system": ROLE_SYSTEM, "code": "clinician"})
        );
        assert_eq!(user["network"], json!({"address": "10.1.2.3", "type": "2"}));
        assert_eq!(user["purposeOfUse"][0]["coding"][0]["code"], "TREAT");
        assert_eq!(
            json["agent"][1],
            json!({"who": {"reference": "Organization/org-a"}, "requestor": false})
        );
        assert_eq!(json["agent"][2]["type"]["coding"][0]["code"], "110152");
        assert_eq!(json["source"]["observer"]["identifier"]["value"], BASE);
        assert_eq!(json["source"]["type"][0]["code"], "4");
        assert_eq!(json["entity"][0]["what"]["reference"], "Observation/obs-1");
        assert_eq!(
            (
                json["entity"][0]["type"]["code"].clone(),
                json["entity"][0]["role"]["code"].clone()
            ),
            (json!("2"), json!("4"))
        );
        assert_eq!(json["entity"][1]["what"]["reference"], "Patient/p-1");
        assert_eq!(
            (
                json["entity"][1]["type"]["code"].clone(),
                json["entity"][1]["role"]["code"].clone()
            ),
            (json!("1"), json!("1"))
        );
        assert!(json.get("meta").is_none() && json.get("outcomeDesc").is_none());
    }

    #[test]
    fn non_rest_events_take_dicom_types_and_lifecycle_subtypes() {
        for (event, kind, subtype, action) in [
            (Event::Ingest, "110107", "receive", "C"),
            (Event::Export, "110106", "disclose", "R"),
            (Event::Reidentify, "110110", "reidentify", "R"),
            (Event::Prune, "110101", "destroy", "D"),
        ] {
            let json = record(event, clinician(), Vec::new()).to_audit_event(BASE);
            assert_eq!(
                (
                    json["type"]["system"].as_str(),
                    json["type"]["code"].as_str()
                ),
                (Some(DCM), Some(kind))
            );
            assert_eq!(
                (
                    json["subtype"][0]["system"].as_str(),
                    json["subtype"][0]["code"].as_str()
                ),
                (Some(LIFECYCLE), Some(subtype))
            );
            assert_eq!(json["action"], action);
        }
        for (interaction, action) in [
            (RestInteraction::Create, "C"),
            (RestInteraction::Vread, "R"),
            (RestInteraction::HistoryType, "R"),
            (RestInteraction::Patch, "U"),
            (RestInteraction::Delete, "D"),
            (RestInteraction::SearchSystem, "E"),
            (RestInteraction::Transaction, "E"),
        ] {
            assert_eq!(
                record(Event::Rest(interaction), clinician(), Vec::new()).to_audit_event(BASE)["action"],
                action
            );
        }
    }

    #[test]
    fn entities_of_queries_and_messages() {
        let json = record(
            Event::Rest(RestInteraction::SearchType),
            clinician(),
            every_entity(),
        )
        .to_audit_event(BASE);
        let query = &json["entity"][2];
        assert_eq!(query["role"]["code"], "24");
        assert_eq!(
            BASE64.decode(query["query"].as_str().unwrap()).unwrap(),
            b"name=Muster&birthdate=1980"
        );
        assert_eq!(
            query["detail"][0],
            json!({"type": "resource-type", "valueString": "Patient"})
        );
        assert!(
            !json.to_string().contains("Muster"),
            "the query travels base64-encoded only"
        );
        let message = &json["entity"][3];
        assert_eq!(message["what"]["identifier"]["value"], "MSG-0001");
        assert_eq!(
            (
                message["type"]["code"].clone(),
                message["role"]["code"].clone()
            ),
            (json!("2"), json!("20"))
        );
        assert_eq!(
            json["entity"][4]["what"]["identifier"]["value"],
            "8c7e2f0e-5d1e-4b4a-9a7e-3c1f2d4b6e80"
        );
        let file = &json["entity"][5];
        assert_eq!(
            file["what"]["identifier"]["value"],
            "https://fhir.example/fhir/$export-file/8c7e/0"
        );
        assert_eq!(
            file["detail"][0],
            json!({"type": "resource-type", "valueString": "Observation"})
        );
        assert_eq!(
            file["detail"][1],
            json!({"type": "count", "valueString": "12"})
        );
    }

    #[test]
    fn break_glass_is_labelled_and_keeps_etreat() {
        let mut emergency = record(
            Event::Rest(RestInteraction::Read),
            clinician(),
            vec![Entity::Patient { id: "p-1".into() }],
        );
        emergency.break_glass = true;
        emergency.purpose = vec![];
        emergency.outcome = Outcome::from_status(200);
        let json = emergency.to_audit_event(BASE);
        assert_valid(&json);
        assert_eq!(json["meta"]["security"][0]["code"], "BTG");
        assert_eq!(json["meta"]["security"][0]["system"], ACT_REASON);
        assert_eq!(json["purposeOfEvent"][0]["coding"][0]["code"], "ETREAT");
        assert_eq!(
            json["agent"][0]["purposeOfUse"][0]["coding"][0]["code"],
            "ETREAT"
        );
    }

    #[test]
    fn failures_carry_their_description() {
        let mut refused = record(Event::Rest(RestInteraction::Read), clinician(), Vec::new());
        refused.outcome = Outcome::from_status(403);
        refused.outcome_desc = Some("403: the crm role may not read\u{0} Claim resources".into());
        let json = refused.to_audit_event(BASE);
        assert_valid(&json);
        assert_eq!(json["outcome"], "4");
        assert_eq!(
            json["outcomeDesc"],
            "403: the crm role may not read  Claim resources"
        );
        assert_eq!(Outcome::from_status(304), Outcome::Success);
        assert_eq!(Outcome::from_status(503).code(), "8");
        assert_eq!(Outcome::MajorFailure.code(), "12");
    }

    #[test]
    fn device_hubs_patients_and_the_server_as_agents() {
        let hub = Arc::new(Caller {
            role: Role::DeviceHub,
            org: None,
            client_id: None,
            ..(*clinician()).clone()
        });
        let json = record(
            Event::Ingest,
            hub,
            vec![Entity::Message {
                control_id: "1".into(),
            }],
        )
        .to_audit_event(BASE);
        assert_valid(&json);
        assert_eq!(json["agent"][0]["who"]["type"], "Device");
        assert_eq!(
            json["agent"][0]["type"]["coding"][0]["code"],
            "datacollector"
        );
        assert!(json["agent"][0].get("altId").is_none());
        assert_eq!(
            json["agent"].as_array().unwrap().len(),
            2,
            "no organisation agent without an org"
        );

        let patient = Arc::new(Caller {
            role: Role::Patient,
            patient: Some("p-7".into()),
            org: None,
            ..(*clinician()).clone()
        });
        let json =
            record(Event::Rest(RestInteraction::Read), patient, Vec::new()).to_audit_event(BASE);
        assert_valid(&json);
        assert_eq!(json["agent"][0]["who"]["reference"], "Patient/p-7");

        let mut pruned = record(Event::Prune, Caller::server_shared(), Vec::new());
        pruned.address = None;
        let json = pruned.to_audit_event(BASE);
        assert_valid(&json);
        assert_eq!(
            json["agent"].as_array().unwrap().len(),
            1,
            "the server is not listed twice"
        );
        assert_eq!(
            json["agent"][0]["who"]["identifier"],
            json!({"system": URI_SYSTEM, "value": BASE})
        );
        assert_eq!(json["agent"][0]["type"]["coding"][0]["code"], "110150");
        assert!(json["agent"][0].get("network").is_none());
    }

    #[test]
    fn a_refused_login_names_where_it_came_from() {
        let mut refused = record(Event::Login, clinician(), Vec::new());
        refused.caller = None;
        refused.outcome = Outcome::MinorFailure;
        refused.outcome_desc = Some("401: the token has expired".into());
        let json = refused.to_audit_event(BASE);
        assert_valid(&json);
        assert_eq!(json["type"]["code"], "110114");
        assert_eq!(json["subtype"][0]["code"], "110122");
        assert_eq!(json["action"], "E");
        let user = &json["agent"][0];
        assert_eq!(user["who"]["display"], "unauthenticated");
        assert_eq!(user["network"]["address"], "10.1.2.3");
        assert_eq!(user["requestor"], true);
        assert_eq!(json["agent"][1]["who"]["display"], "fhirvault");
    }
}
