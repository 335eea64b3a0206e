//! Consent at access time: the patient's privacy Consents decide, per request, which patients'
//! data a caller's queries may touch.
//!
//! **Who is subject to consent.** Parties the data is *shared with*: insurers and the CRM, by the
//! deployment's default ([`ConsentDefault`]: opt-in shares nothing without a permitting Consent,
//! opt-out shares unless denied), and clinicians. A clinician reaches only the patients its
//! organisation manages (its care relationship), so for clinicians the default is always
//! "permitted": no Consent is needed to treat, but a deny that covers them applies. A clinician
//! declaring emergency treatment (purpose `ETREAT`, break-the-glass) is not filtered by consent;
//! every such request is audited and flagged. Admins, the patient itself, device hubs (which
//! collect, not receive, data) and auditors are not subject to consent.
//!
//! **The decision rule.** Every active patient-privacy Consent of the patient is flattened into
//! rows ([`rules`]). For a request — the caller's organisation and role, its purpose of use (and
//! the broader purposes containing it), the resource's type and id, now — the matching rows are
//! ranked by the Consent's `dateTime` (newest first), then by nesting depth (the most specific
//! provision first), then deny before permit; the first decides. No matching row: the default.
//! So a newer Consent overrides an older one where both speak, and each keeps deciding where
//! only it speaks; within one Consent a nested provision is an exception to its parent.
//!
//! **Where.** The rows live next to the search index, written in the transaction of the Consent
//! version (a withdrawal is effective for the next request), and the decision is a condition
//! the planner puts into every query beside the role rules ([`crate::search::query::Criterion::Consent`]).
//! The resource's patient is its compartment (`resource_heads.compartment`).

pub mod purpose;
pub mod rules;

use serde::Deserialize;

use super::{Caller, Role};
pub use purpose::PurposesOfUse;

/// What a deployment shares with insurers and the CRM when a patient has said nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ConsentDefault {
    /// Nothing without a permitting Consent.
    OptIn,
    /// Everything unless a Consent denies it.
    #[default]
    OptOut,
}

impl std::str::FromStr for ConsentDefault {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "opt-in" => Ok(ConsentDefault::OptIn),
            "opt-out" => Ok(ConsentDefault::OptOut),
            other => Err(format!(
                "`{other}` is not a consent default (opt-in or opt-out)"
            )),
        }
    }
}

/// What consent asks of one caller's queries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConsentFilter {
    /// The actor keys the caller matches: any, its organisation, its role.
    pub actors: Vec<String>,
    /// Its purpose of use with the broader purposes containing it, and any.
    pub purposes: Vec<String>,
    /// The decision where no row matches.
    pub default_permit: bool,
}

impl ConsentFilter {
    /// A short text of everything the filter depends on (for [`Caller::fingerprint`]).
    pub fn describe(&self) -> String {
        format!(
            "{}|{}|{}",
            self.actors.join(","),
            self.purposes.join(","),
            self.default_permit
        )
    }
}

/// The purpose a role acts for when neither token nor request names one.
pub fn default_purpose(role: Role) -> &'static str {
    match role {
        Role::Clinician | Role::DeviceHub => "TREAT",
        Role::Insurer => "HPAYMT",
        Role::Crm | Role::Auditor => "HOPERAT",
        Role::Patient => "PATRQT",
        Role::Admin => "HSYSADMIN",
    }
}

/// The consent filter for `caller` acting for `purpose`; `None` when consent does not limit it
/// (see the module documentation for who is subject and why).
pub fn filter_for(
    caller: &Caller,
    purpose: &str,
    purposes: &PurposesOfUse,
    default: ConsentDefault,
) -> Option<ConsentFilter> {
    let default_permit = match caller.role {
        Role::Clinician if purposes.is_emergency(purpose) => return None,
        Role::Clinician => true,
        Role::Insurer | Role::Crm => default == ConsentDefault::OptOut,
        Role::Admin | Role::Patient | Role::DeviceHub | Role::Auditor => return None,
    };
    let mut actors = vec![
        rules::ANY.to_string(),
        format!("role:{}", caller.role.name()),
    ];
    actors.extend(caller.org.as_ref().map(|org| format!("Organization/{org}")));
    let mut codes = vec![rules::ANY.to_string()];
    codes.extend(purposes.with_ancestors(purpose));
    Some(ConsentFilter {
        actors,
        purposes: codes,
        default_permit,
    })
}
