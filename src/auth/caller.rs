//! Who is asking: the verified facts of a token (or of a device hub's certificate), in the form
//! the access rules use.

use std::sync::{Arc, LazyLock};

use ring::digest;

use super::role::Role;
use super::scope::{Context, Permission, Scope};

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
    /// The purpose of use the caller declared (v3 PurposeOfUse code).
    pub purpose: Option<String>,
}

impl Caller {
    /// The server itself: imports, HL7 v2 mapping and other work done on its own behalf.
    pub fn server() -> Caller {
        Caller {
            subject: "fhirvault".into(),
            issuer: "fhirvault".into(),
            client_id: None,
            role: Role::Admin,
            scopes: vec![Scope { context: Context::System, resource_type: None, permissions: Permission::ALL.to_vec(), query: None }],
            patient: None,
            org: None,
            purpose: None,
        }
    }

    /// [`Caller::server`], shared.
    pub fn server_shared() -> Arc<Caller> {
        static SERVER: LazyLock<Arc<Caller>> = LazyLock::new(|| Arc::new(Caller::server()));
        SERVER.clone()
    }

    /// Admin with a scope over every type and interaction: nothing to filter.
    pub fn is_unrestricted(&self) -> bool {
        self.role == Role::Admin
            && self.scopes.iter().any(|s| {
                s.context != Context::Patient && s.resource_type.is_none() && s.query.is_none() && s.permissions.len() == Permission::ALL.len()
            })
    }

    /// The scopes that cover `permission` on `resource_type`.
    pub fn covering(&self, resource_type: &str, permission: Permission) -> impl Iterator<Item = &Scope> {
        self.scopes.iter().filter(move |s| s.covers(resource_type, permission))
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
        ]
        .join("\u{1f}");
        let hash = digest::digest(&digest::SHA256, facts.as_bytes());
        hex::encode(&hash.as_ref()[..12])
    }
}

/// The id of a claim that may be a reference (`Organization/abc`) or a bare id (`abc`).
pub fn claim_id(value: &str, resource_type: &str) -> String {
    value.strip_prefix(resource_type).and_then(|rest| rest.strip_prefix('/')).unwrap_or(value).to_string()
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
