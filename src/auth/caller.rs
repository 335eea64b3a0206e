//! Who is asking: the verified facts of a token (or of a device hub's certificate), in the form
//! the access rules use.

use std::sync::{Arc, LazyLock};

use ring::digest;

use super::consent::{self, ConsentDefault, ConsentFilter, PurposesOfUse};
use super::role::Role;
use super::scope::{Context, Permission, Scope};
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's `sub` (for a device hub without a token: its configured name).
    pub subject: String,
    pub issuer: String,
    pub client_id: Option<String>,
    pub role: Role,
    pub scopes: Vec<Scope>,
    /// The id of the token's patient (`patient` claim), for the patient role and `patient/` scopes.
    pub patient: Option<String>,
    /// The id of the token's organisation (`org` claim).
    pub org: Option<String>,
    /// The purpose of use (v3 PurposeOfUse code): the token's `purpose` claim; for a request,
    /// what it declared (`X-Purpose-Of-Use`) or its role's default ([`Caller::for_request`]).
    pub purpose: Option<String>,
    /// What the patients' Consents allow this caller, for this request's purpose; `None` when
    /// consent does not limit it ([`crate::auth::consent`]).
    pub consent: Option<ConsentFilter>,
    /// Emergency access (purpose ETREAT) by a clinician: consent does not filter, and every
    /// audit record of the request is flagged.
    pub break_glass: bool,
    /// The network address the request came from (for the audit trail).
    pub address: Option<String>,
}

impl Caller {
    /// The server itself: imports, HL7 v2 mapping and other work done on its own behalf.
    pub fn server() -> Caller {
        Caller {
            subject: "fhirvault".into(),
            issuer: "fhirvault".into(),
            client_id: None,
            role: Role::Admin,
            scopes: vec![Scope {
                context: Context::System,
                resource_type: None,
                permissions: Permission::ALL.to_vec(),
                query: None,
            }],
            patient: None,
            org: None,
            purpose: None,
            consent: None,
            break_glass: false,
            address: None,
        }
    }

    /// [`Caller::server`], shared.
    pub fn server_shared() -> Arc<Caller> {
        static SERVER: LazyLock<Arc<Caller>> = LazyLock::new(|| Arc::new(Caller::server()));
        SERVER.clone()
    }

    /// A device hub that presented a configured client certificate: it may ingest HL7 v2 and
    /// read its organisation's Devices, nothing else.
    pub fn of_hub(hub: &crate::tls::HubIdentity) -> Caller {
        Caller {
            subject: hub.name.clone(),
            issuer: "mtls".into(),
            client_id: Some(hub.name.clone()),
            role: Role::DeviceHub,
            scopes: super::scope::parse_scopes("system/Device.rs system/Observation.c")
                .unwrap_or_default(),
            org: hub.org.as_deref().map(|org| claim_id(org, "Organization")),
            ..Caller::server()
        }
    }

    /// This caller for one request: its purpose of use (declared in the request, else the
    /// token's, else the role's default), the consent filter for that purpose, and the address.
    /// A request may not declare another purpose than the token fixes, and only clinicians may
    /// declare emergency treatment (break-the-glass).
    pub fn for_request(
        &self,
        declared: Option<&str>,
        address: Option<String>,
        purposes: &PurposesOfUse,
        default: ConsentDefault,
    ) -> ApiResult<Caller> {
        let declared = match declared {
            Some(text) => Some(purposes.parse(text.trim()).ok_or_else(|| {
                ApiError::bad_request(
                    "X-Purpose-Of-Use must be a v3 PurposeOfUse code (e.g. TREAT, HPAYMT, ETREAT)",
                )
            })?),
            None => None,
        };
        let claimed = match self.purpose.as_deref() {
            Some(text) => Some(purposes.parse(text).ok_or_else(|| {
                ApiError::Forbidden(
                    "the token's `purpose` claim is not a v3 PurposeOfUse code".into(),
                )
            })?),
            None => None,
        };
        let purpose = match (declared, claimed) {
            (Some(d), Some(c)) if d != c => {
                return Err(ApiError::Forbidden(format!(
                    "this token is for purpose of use {c}; the request may not declare {d}"
                )));
            }
            (Some(p), _) | (None, Some(p)) => p.to_string(),
            (None, None) => consent::default_purpose(self.role).to_string(),
        };
        let emergency = purposes.is_emergency(&purpose);
        if emergency && self.role != Role::Clinician {
            return Err(ApiError::Forbidden(
                "emergency access (purpose of use ETREAT, break-the-glass) is for clinicians only"
                    .into(),
            ));
        }
        let mut caller = self.clone();
        caller.consent = consent::filter_for(self, &purpose, purposes, default);
        caller.break_glass = emergency;
        caller.purpose = Some(purpose);
        caller.address = address;
        Ok(caller)
    }

    /// Admin with a scope over every type and interaction: nothing to filter.
    pub fn is_unrestricted(&self) -> bool {
        self.role == Role::Admin
            && self.scopes.iter().any(|s| {
                s.context != Context::Patient
                    && s.resource_type.is_none()
                    && s.query.is_none()
                    && s.permissions.len() == Permission::ALL.len()
            })
    }

    /// The scopes that cover `permission` on `resource_type`.
    pub fn covering(
        &self,
        resource_type: &str,
        permission: Permission,
    ) -> impl Iterator<Item = &Scope> {
        self.scopes
            .iter()
            .filter(move |s| s.covers(resource_type, permission))
    }

    /// A short fingerprint of everything that decides what this caller sees. Page links carry
    /// it, so that a link handed to someone else does not page through the first caller's view.
    pub fn fingerprint(&self) -> String {
        let scopes: Vec<String> = self.scopes.iter().map(Scope::to_string).collect();
        let facts = [
            self.issuer.as_str(),
            self.subject.as_str(),
            self.role.name(),
            &scopes.join(" "),
            self.patient.as_deref().unwrap_or(""),
            self.org.as_deref().unwrap_or(""),
            &self
                .consent
                .as_ref()
                .map(ConsentFilter::describe)
                .unwrap_or_default(),
        ]
        .join("\u{1f}");
        let hash = digest::digest(&digest::SHA256, facts.as_bytes());
        hex::encode(&hash.as_ref()[..12])
    }
}

/// The id of a claim that may be a reference (`Organization/abc`) or a bare id (`abc`).
pub fn claim_id(value: &str, resource_type: &str) -> String {
    value
        .strip_prefix(resource_type)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(value)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_is_unrestricted() {
        assert!(Caller::server().is_unrestricted());
        let mut narrowed = Caller::server();
        narrowed.scopes = super::super::scope::parse_scopes("user/Patient.rs").expect("scope");
        assert!(!narrowed.is_unrestricted());
        assert_ne!(narrowed.fingerprint(), Caller::server().fingerprint());
    }

    #[test]
    fn claim_ids() {
        assert_eq!(claim_id("Organization/org-a", "Organization"), "org-a");
        assert_eq!(claim_id("org-a", "Organization"), "org-a");
    }
}
