//! From a caller to query conditions: what it may see of each resource type, as search
//! criteria the planner ANDs into every query ([`Visibility`]).
//!
//! The rules are written as FHIR searches (`subject:Patient.organization=Organization/org-a`),
//! parsed by the same parser as a client's query and compiled by the same planner, so a rule
//! means exactly what the search means, and reviewing a rule is reading a search.
//!
//! A caller sees a resource of type T for interaction P when
//! 1. its role reaches T for P ([`role::reach`]), within the reach's rule, and
//! 2. one of its scopes covers T and P, within that scope's query (if any) and, for a
//!    `patient/` scope, within the token patient's compartment, and
//! 3. the Consents of the resource's patient allow it ([`super::consent`]).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use super::caller::Caller;
use super::role::{self, Reach};
use super::scope::{Context, Permission, Scope};
use crate::error::{ApiError, ApiResult};
use crate::search::query::{Criterion, Restriction, SearchRequest, Visibility};
use crate::search::registry::{COMPARTMENT_SELF, SearchParamRegistry};

/// What `caller` may see for `permission`, as the [`Visibility`] of its searches; `None` for an
/// unrestricted caller (nothing to add to any query).
pub fn visibility(
    caller: &Arc<Caller>,
    registry: &Arc<SearchParamRegistry>,
    permission: Permission,
) -> Option<Arc<dyn Visibility>> {
    if caller.is_unrestricted() {
        return None;
    }
    Some(Arc::new(Access {
        caller: caller.clone(),
        key: format!("{}|{permission:?}", caller.fingerprint()),
        registry: registry.clone(),
        permission,
    }))
}

/// Refuse outright what no rule could allow: the role does not reach the type, or no scope
/// covers the interaction. (Whether one particular resource is within reach is the query's to
/// decide.)
pub fn require(
    caller: &Caller,
    registry: &SearchParamRegistry,
    resource_type: &str,
    permission: Permission,
) -> ApiResult<()> {
    if resource_type == role::AUDIT_EVENT
        && matches!(
            permission,
            Permission::Create | Permission::Update | Permission::Delete
        )
    {
        return Err(ApiError::MethodNotAllowed(
            "AuditEvents are written by the server only: they cannot be created, changed or deleted through the API".into(),
        ));
    }
    let in_compartment = !patient_links(registry, resource_type).is_empty();
    if role::reach(caller.role, resource_type, permission, in_compartment).is_none() {
        return Err(ApiError::Forbidden(format!(
            "the {} role may not {} {resource_type} resources",
            caller.role,
            verb(permission)
        )));
    }
    if caller.covering(resource_type, permission).next().is_none() {
        return Err(insufficient_scope(caller, resource_type, permission));
    }
    Ok(())
}

/// The refusal of a caller whose role allows `permission` on `resource_type` but whose scopes
/// do not: a 403 whose challenge names a scope that would (RFC 6750 §3.1). The scope keeps the
/// context (`patient`, `user`, `system`) of the token's own scopes, as the client would ask its
/// authorization server for it again.
pub fn insufficient_scope(
    caller: &Caller,
    resource_type: &str,
    permission: Permission,
) -> ApiError {
    let context = caller
        .scopes
        .first()
        .map_or(Context::User, |scope| scope.context);
    let scope = Scope {
        context,
        resource_type: Some(resource_type.to_string()),
        permissions: vec![permission],
        query: None,
    }
    .to_string();
    ApiError::InsufficientScope {
        message: format!(
            "no scope of this token allows to {} {resource_type} resources (a `{scope}` scope is needed)",
            verb(permission)
        ),
        scope,
    }
}

/// The parameters that put a resource of `resource_type` with a Patient
/// ([`SearchParamRegistry::patient_links`]).
pub fn patient_links(registry: &SearchParamRegistry, resource_type: &str) -> Vec<String> {
    registry.patient_links(resource_type)
}

fn verb(permission: Permission) -> &'static str {
    match permission {
        Permission::Create => "create",
        Permission::Read => "read",
        Permission::Update => "update",
        Permission::Delete => "delete",
        Permission::Search => "search",
    }
}

#[derive(Debug)]
struct Access {
    caller: Arc<Caller>,
    /// The caller's [`Caller::fingerprint`] and the permission: everything the rules depend on,
    /// so the key of its compiled rules (and of what is planned with them).
    key: String,
    registry: Arc<SearchParamRegistry>,
    permission: Permission,
}

/// Compiled rules by caller fingerprint, type and permission: a caller sends many requests, and
/// parsing its rules again for each (several searches per type) would cost more than checking
/// them. The fingerprint covers everything a rule depends on (role, scopes, patient, org).
static COMPILED: LazyLock<Mutex<HashMap<String, Restriction>>> = LazyLock::new(Mutex::default);

/// Rules remembered at most; when full, the cache starts over.
const MAX_COMPILED: usize = 10_000;

impl Visibility for Access {
    fn restriction(&self, resource_type: &str) -> ApiResult<Restriction> {
        let key = format!("{}|{resource_type}", self.key);
        if let Some(found) = COMPILED.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(found.clone());
        }
        let compiled = self.compile(resource_type)?;
        let mut cache = COMPILED.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_COMPILED {
            cache.clear();
        }
        cache.insert(key, compiled.clone());
        Ok(compiled)
    }

    /// Under the compartment rules (a clinician's patients, a patient's own compartment) a
    /// resource linked to a visible Patient through one of its patient links is visible, unless
    /// a scope narrows the source type further; only its patient's Consents are left to check
    /// (they may deny some types of a patient's data and not others).
    fn left_after_target(
        &self,
        source_type: &str,
        reference: &str,
        target_type: &str,
    ) -> Option<Vec<Criterion>> {
        if target_type != "Patient" {
            return None;
        }
        let links = patient_links(&self.registry, source_type);
        if !links.iter().any(|l| l == reference) {
            return None;
        }
        let source = role::reach(self.caller.role, source_type, self.permission, true);
        let patient = role::reach(self.caller.role, "Patient", self.permission, true);
        let compartment_rule = matches!(
            source,
            Some(Reach::PatientsOfOrganization | Reach::OwnCompartment)
        );
        let unnarrowed = self
            .caller
            .covering(source_type, self.permission)
            .any(|s| s.query.is_none() && s.context != Context::Patient);
        (compartment_rule && source == patient && unnarrowed).then(|| {
            self.consent_criterion(source_type, &links)
                .into_iter()
                .collect()
        })
    }

    fn reuse_key(&self) -> Option<&str> {
        Some(&self.key)
    }
}

impl Access {
    /// The rule for `resource_type`: the role's reach and the scopes, combined.
    fn compile(&self, resource_type: &str) -> ApiResult<Restriction> {
        let links = patient_links(&self.registry, resource_type);
        let Some(reach) = role::reach(
            self.caller.role,
            resource_type,
            self.permission,
            !links.is_empty(),
        ) else {
            return Ok(Restriction::Nothing);
        };
        let Some(mut criteria) = self.reach_criteria(reach, resource_type, &links)? else {
            return Ok(Restriction::Nothing);
        };
        match self.scope_groups(resource_type, &links)? {
            None => return Ok(Restriction::Nothing),
            Some(groups) if groups.iter().any(Vec::is_empty) => {}
            Some(groups) => criteria.push(Criterion::AnyOf(groups)),
        }
        criteria.extend(self.consent_criterion(resource_type, &links));
        Ok(if criteria.is_empty() {
            Restriction::Everything
        } else {
            Restriction::Where(criteria)
        })
    }
}

impl Access {
    /// The caller's Consent filter, for types with a patient. A Consent stays visible to those
    /// it names, denials included: a clinic must be able to see that, and why, a patient's data
    /// is no longer shared with it.
    fn consent_criterion(&self, resource_type: &str, links: &[String]) -> Option<Criterion> {
        let consent = self.caller.consent.as_ref()?;
        (!links.is_empty() && resource_type != "Consent")
            .then(|| Criterion::Consent(consent.clone()))
    }

    /// The role's rule for `resource_type`; `None` when the token lacks the claim the rule
    /// needs (an insurer without `org` sees nothing).
    fn reach_criteria(
        &self,
        reach: Reach,
        resource_type: &str,
        compartment: &[String],
    ) -> ApiResult<Option<Vec<Criterion>>> {
        let org = self.caller.org.as_deref();
        let rule = match reach {
            Reach::Everything => return Ok(Some(Vec::new())),
            Reach::PatientsOfOrganization => {
                let Some(org) = org else { return Ok(None) };
                let organization = format!("Organization/{org}");
                let managed = self.criterion("Patient", "organization", &organization)?;
                if resource_type == "Patient" {
                    return Ok(Some(vec![managed]));
                }
                let mut alternatives = vec![vec![Criterion::PatientLink {
                    links: compartment
                        .iter()
                        .filter(|p| *p != COMPARTMENT_SELF)
                        .cloned()
                        .collect(),
                    patient: Box::new(managed),
                }]];
                if resource_type == "Device" {
                    // Recorders the clinic owns, assigned to a patient or not.
                    alternatives.push(vec![self.criterion(
                        resource_type,
                        "organization",
                        &organization,
                    )?]);
                }
                Criterion::AnyOf(alternatives)
            }
            Reach::OwnCompartment => {
                let Some(patient) = self.caller.patient.as_deref() else {
                    return Ok(None);
                };
                self.own_compartment(resource_type, compartment, patient)?
            }
            Reach::InsuredByOrganization => {
                let Some(org) = org else { return Ok(None) };
                let payer = format!("Organization/{org}");
                let searches: Vec<(String, String)> = match resource_type {
                    "Coverage" => vec![("payor".into(), payer)],
                    "Claim" | "ClaimResponse" | "CoverageEligibilityResponse" => {
                        vec![("insurer".into(), payer)]
                    }
                    "CoverageEligibilityRequest" => vec![(
                        "_has:CoverageEligibilityResponse:request:insurer".into(),
                        payer,
                    )],
                    "Patient" => ["beneficiary", "subscriber", "policy-holder"]
                        .iter()
                        .map(|p| (format!("_has:Coverage:{p}:payor"), payer.clone()))
                        .chain([("_has:Claim:patient:insurer".to_string(), payer.clone())])
                        .collect(),
                    _ => return Ok(None),
                };
                self.any_of(resource_type, &searches)?
            }
            Reach::OwnedDevices => {
                let Some(org) = org else { return Ok(None) };
                self.criterion(
                    resource_type,
                    "organization",
                    &format!("Organization/{org}"),
                )?
            }
        };
        Ok(Some(vec![rule]))
    }

    /// Resources in Patient `patient`'s compartment (and that Patient).
    fn own_compartment(
        &self,
        resource_type: &str,
        compartment: &[String],
        patient: &str,
    ) -> ApiResult<Criterion> {
        let mut searches = Vec::new();
        for param in compartment {
            if param == COMPARTMENT_SELF {
                searches.push(("_id".to_string(), patient.to_string()));
            } else {
                searches.push((param.clone(), format!("Patient/{patient}")));
            }
        }
        self.any_of(resource_type, &searches)
    }

    /// For each covering scope, the criteria it adds (its query; the token patient's
    /// compartment for a `patient/` scope). `None` when no scope covers the type; a group that
    /// is empty means a scope covers the type without restriction.
    fn scope_groups(
        &self,
        resource_type: &str,
        compartment: &[String],
    ) -> ApiResult<Option<Vec<Vec<Criterion>>>> {
        let mut groups = Vec::new();
        for scope in self.caller.covering(resource_type, self.permission) {
            let mut group = Vec::new();
            if let Some(query) = &scope.query {
                let Ok(pairs) = serde_urlencoded::from_str::<Vec<(String, String)>>(query) else {
                    continue;
                };
                match SearchRequest::parse(&self.registry, resource_type, &pairs, true, 1, 1) {
                    // Only selecting parameters narrow; a query of result parameters alone
                    // (`?_sort=date`) selects nothing and must not count as "no restriction".
                    Ok(request) if request.criteria.len() == pairs.len() => {
                        group.extend(request.criteria)
                    }
                    // A scope whose query does not parse grants nothing (never everything).
                    _ => continue,
                }
            }
            if scope.context == Context::Patient {
                let Some(patient) = self.caller.patient.as_deref() else {
                    continue;
                };
                if compartment.is_empty() {
                    continue;
                }
                group.push(self.own_compartment(resource_type, compartment, patient)?);
            }
            groups.push(group);
        }
        Ok((!groups.is_empty()).then_some(groups))
    }

    /// Any of the searches `code=value` on `resource_type` (searches that do not apply to the
    /// type, e.g. a compartment parameter that cannot point at a Patient, are left out).
    fn any_of(&self, resource_type: &str, searches: &[(String, String)]) -> ApiResult<Criterion> {
        let mut groups = Vec::new();
        for (code, value) in searches {
            let pairs = [(code.clone(), value.clone())];
            if let Ok(request) =
                SearchRequest::parse(&self.registry, resource_type, &pairs, true, 1, 1)
            {
                groups.push(request.criteria);
            }
        }
        Ok(Criterion::AnyOf(groups))
    }

    fn criterion(&self, resource_type: &str, code: &str, value: &str) -> ApiResult<Criterion> {
        let pairs = [(code.to_string(), value.to_string())];
        let mut request = SearchRequest::parse(&self.registry, resource_type, &pairs, true, 1, 1)
            .map_err(|error| {
            tracing::error!(resource_type, code, %error, "an access rule does not parse");
            ApiError::Internal
        })?;
        Ok(request.criteria.remove(0))
    }
}
