//! SMART App Launch scopes: what a token allows, per resource type and interaction.
//! <https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html>
//!
//! A resource scope is `context/Type.permissions[?query]`: context `patient`, `user` or `system`;
//! `Type` a resource type or `*`; permissions a subset of `cruds` in that order (v2), or the v1
//! forms `read` (= `rs`), `write` (= `cud`) and `*` (= `cruds`). A query (v2 only) narrows the
//! scope to resources matching a search, e.g. `patient/Observation.rs?category=vital-signs`.
//! Other scopes (`openid`, `fhirUser`, `launch/patient`, `offline_access`, …) grant no data
//! access and are ignored here.

use std::fmt;

/// The interactions a scope can permit (the letters of `cruds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

impl Permission {
    pub const ALL: [Permission; 5] = [
        Permission::Create,
        Permission::Read,
        Permission::Update,
        Permission::Delete,
        Permission::Search,
    ];

    fn letter(self) -> char {
        match self {
            Permission::Create => 'c',
            Permission::Read => 'r',
            Permission::Update => 'u',
            Permission::Delete => 'd',
            Permission::Search => 's',
        }
    }
}

/// Whose data a scope reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Context {
    /// Only the token's patient (`patient` claim): every access is confined to its compartment.
    Patient,
    /// What the user (the token's role) may see.
    User,
    /// A backend service, again within the token's role.
    System,
}

/// One resource scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub context: Context,
    /// A resource type, or `None` for `*`.
    pub resource_type: Option<String>,
    /// Sorted, without repeats.
    pub permissions: Vec<Permission>,
    /// The scope's search restriction (`category=vital-signs`), still URL-encoded; `None` when
    /// the scope covers every resource of its type.
    pub query: Option<String>,
}

impl Scope {
    pub fn covers(&self, resource_type: &str, permission: Permission) -> bool {
        self.resource_type
            .as_deref()
            .is_none_or(|t| t == resource_type)
            && self.permissions.contains(&permission)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let context = match self.context {
            Context::Patient => "patient",
            Context::User => "user",
            Context::System => "system",
        };
        let permissions: String = self.permissions.iter().map(|p| p.letter()).collect();
        write!(
            f,
            "{context}/{}.{permissions}",
            self.resource_type.as_deref().unwrap_or("*")
        )?;
        if let Some(query) = &self.query {
            write!(f, "?{query}")?;
        }
        Ok(())
    }
}

/// Why a scope string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error(
        "scope `{0}` has permissions that are neither SMART v2 (`cruds`, in that order) nor v1 (`read`, `write`, `*`)"
    )]
    Permissions(String),
    #[error("scope `{0}` names no resource type")]
    NoType(String),
    #[error("scope `{0}`: a v1 scope (`.read`, `.write`, `.*`) cannot carry a query")]
    QueryOnV1(String),
}

/// The resource scopes of a token's space-separated `scope` claim. Scopes that are not resource
/// scopes are skipped; a resource scope that is malformed makes the whole token's scope invalid
/// (a typo must not silently grant nothing, or more).
pub fn parse_scopes(claim: &str) -> Result<Vec<Scope>, ScopeError> {
    let mut scopes = Vec::new();
    for word in claim.split_ascii_whitespace() {
        if let Some(scope) = parse_scope(word)? {
            scopes.push(scope);
        }
    }
    Ok(scopes)
}

fn parse_scope(word: &str) -> Result<Option<Scope>, ScopeError> {
    let Some((context, rest)) = word.split_once('/') else {
        return Ok(None);
    };
    let context = match context {
        "patient" => Context::Patient,
        "user" => Context::User,
        "system" => Context::System,
        // `launch/patient`, `launch/encounter`: launch context requests, not permissions.
        _ => return Ok(None),
    };
    let shown = || crate::fhir::id::truncate(word).to_string();
    let (resource, query) = match rest.split_once('?') {
        Some((resource, query)) => (resource, Some(query.to_string())),
        None => (rest, None),
    };
    let Some((resource_type, permissions)) = resource.rsplit_once('.') else {
        return Err(ScopeError::NoType(shown()));
    };
    if resource_type.is_empty() {
        return Err(ScopeError::NoType(shown()));
    }
    let (permissions, v1) = match permissions {
        "read" => (vec![Permission::Read, Permission::Search], true),
        "write" => (
            vec![Permission::Create, Permission::Update, Permission::Delete],
            true,
        ),
        "*" => (Permission::ALL.to_vec(), true),
        letters => (
            v2_permissions(letters).ok_or_else(|| ScopeError::Permissions(shown()))?,
            false,
        ),
    };
    if v1 && query.is_some() {
        return Err(ScopeError::QueryOnV1(shown()));
    }
    let resource_type = (resource_type != "*").then(|| resource_type.to_string());
    Ok(Some(Scope {
        context,
        resource_type,
        permissions,
        query: query.filter(|q| !q.is_empty()),
    }))
}

/// `cruds` letters, each at most once and in that order (SMART v2 requires the order).
fn v2_permissions(letters: &str) -> Option<Vec<Permission>> {
    let mut permissions = Vec::new();
    let mut next = Permission::ALL.iter();
    for letter in letters.chars() {
        let permission = next.by_ref().find(|p| p.letter() == letter)?;
        permissions.push(*permission);
    }
    (!permissions.is_empty()).then_some(permissions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Scope {
        let mut scopes = parse_scopes(text).expect("valid");
        assert_eq!(scopes.len(), 1, "{text}");
        scopes.remove(0)
    }

    #[test]
    fn v2_scopes() {
        let scope = one("patient/Observation.rs");
        assert_eq!(scope.context, Context::Patient);
        assert_eq!(scope.resource_type.as_deref(), Some("Observation"));
        assert!(
            scope.covers("Observation", Permission::Read)
                && scope.covers("Observation", Permission::Search)
        );
        assert!(
            !scope.covers("Observation", Permission::Create)
                && !scope.covers("Patient", Permission::Read)
        );
        let all = one("user/*.cruds");
        assert!(Permission::ALL.iter().all(|p| all.covers("Claim", *p)));
        assert_eq!(one("system/Claim.r").permissions, vec![Permission::Read]);
        assert_eq!(all.to_string(), "user/*.cruds");
    }

    #[test]
    fn v1_scopes_map_to_v2() {
        assert_eq!(
            one("patient/Observation.read").permissions,
            vec![Permission::Read, Permission::Search]
        );
        assert_eq!(
            one("user/Patient.write").permissions,
            vec![Permission::Create, Permission::Update, Permission::Delete]
        );
        assert_eq!(one("user/*.*").permissions, Permission::ALL.to_vec());
    }

    #[test]
    fn queries_narrow_v2_scopes() {
        let scope = one("patient/Observation.rs?category=vital-signs");
        assert_eq!(scope.query.as_deref(), Some("category=vital-signs"));
        assert_eq!(
            scope.to_string(),
            "patient/Observation.rs?category=vital-signs"
        );
        assert!(matches!(
            parse_scopes("patient/Observation.read?category=x"),
            Err(ScopeError::QueryOnV1(_))
        ));
    }

    #[test]
    fn non_resource_scopes_are_skipped() {
        assert!(
            parse_scopes("openid fhirUser launch/patient offline_access")
                .expect("valid")
                .is_empty()
        );
        assert_eq!(
            parse_scopes("openid user/Patient.r").expect("valid").len(),
            1
        );
    }

    #[test]
    fn malformed_resource_scopes_are_refused() {
        for bad in [
            "user/Patient.sr",
            "user/Patient.rr",
            "user/Patient.x",
            "user/Patient.",
            "user/.r",
            "user/Patient",
        ] {
            assert!(parse_scopes(bad).is_err(), "{bad}");
        }
    }
}
