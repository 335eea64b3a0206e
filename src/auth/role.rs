//! The roles a token can carry, and what each may do: one reviewed table ([`reach`]).
//!
//! A role says which interactions it may use on which resource types, and how far it reaches
//! (every resource, the patients of its organisation, its own compartment, …). Scopes can only
//! narrow that further; see [`super::access`] for how both become a query condition.

use std::fmt;
use std::str::FromStr;

use super::scope::Permission;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything, including key management.
    Admin,
    /// Clinical data of the patients of its organisation (token `org`); may re-identify.
    Clinician,
    /// Pseudonymised reads and searches across every patient; never direct identifiers.
    Crm,
    /// Coverage and claims paid by its organisation (token `org`), and the patients they name.
    Insurer,
    /// Its own compartment (token `patient`), read; its own Consents, read and write.
    Patient,
    /// HL7 v2 ingestion, and the Devices its organisation owns.
    DeviceHub,
    /// AuditEvent and Provenance, read.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Admin,
        Role::Clinician,
        Role::Crm,
        Role::Insurer,
        Role::Patient,
        Role::DeviceHub,
        Role::Auditor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Clinician => "clinician",
            Role::Crm => "crm",
            Role::Insurer => "insurer",
            Role::Patient => "patient",
            Role::DeviceHub => "device-hub",
            Role::Auditor => "auditor",
        }
    }

    /// May this role send HL7 v2 messages?
    pub fn may_ingest(self) -> bool {
        matches!(self, Role::Admin | Role::DeviceHub)
    }

    /// May this role turn a pseudonym back into a person?
    pub fn may_reidentify(self) -> bool {
        matches!(self, Role::Admin | Role::Clinician)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|role| role.name() == text)
            .ok_or_else(|| {
                format!(
                    "unknown role; the roles are {}",
                    Role::ALL.map(Role::name).join(", ")
                )
            })
    }
}

/// How far a role reaches into the resources of one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Every resource of the type.
    Everything,
    /// Resources in the compartment of a Patient whose `managingOrganization` is the token's
    /// organisation (and those Patients).
    PatientsOfOrganization,
    /// Resources in the token patient's compartment (and that Patient).
    OwnCompartment,
    /// Coverage, claims and eligibility paid by the token's organisation, and the Patients
    /// they name.
    InsuredByOrganization,
    /// Devices the token's organisation owns (`Device.owner`).
    OwnedDevices,
}

/// Resource types only the auditor (and admin) reads: the trail of who saw what.
const AUDIT_TYPES: &[&str] = &[AUDIT_EVENT, "Provenance"];

/// The audit trail's type ([`crate::audit`]).
pub const AUDIT_EVENT: &str = "AuditEvent";

/// What the CRM may see (pseudonymised): the patients and their device data, not claims,
/// consents or the audit trail.
const CRM_TYPES: &[&str] = &[
    "Patient",
    "Observation",
    "DiagnosticReport",
    "Device",
    "Organization",
];

/// The insurer's own resources.
const INSURANCE_TYPES: &[&str] = &[
    "Coverage",
    "Claim",
    "ClaimResponse",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
];

/// What an insurer writes: its decision on a claim. Not Coverage or eligibility responses: the
/// insurer's reach over Patients is derived from those, so writing them would let it grant
/// itself any patient.
const INSURER_WRITES: &[&str] = &["ClaimResponse"];

/// Shared reference data outside any patient's compartment that clinicians read: who and where,
/// not about whom. Every other type outside the compartment (Bundle, Binary, Linkage, …) may
/// hold a whole record and is the admin's.
const REFERENCE_DATA: &[&str] = &[
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Location",
    "HealthcareService",
    "Endpoint",
    "Medication",
    "Substance",
    "ActivityDefinition",
    "PlanDefinition",
    "Questionnaire",
    "StructureDefinition",
    "ValueSet",
    "CodeSystem",
    "ConceptMap",
    "NamingSystem",
    "SearchParameter",
    "CapabilityStatement",
    "OperationDefinition",
    "CompartmentDefinition",
    "ImplementationGuide",
];

/// The policy table: may `role` use `permission` on `resource_type`, and how far does it reach?
/// `in_patient_compartment` says whether the type belongs to the Patient compartment.
pub fn reach(
    role: Role,
    resource_type: &str,
    permission: Permission,
    in_patient_compartment: bool,
) -> Option<Reach> {
    let reads = matches!(permission, Permission::Read | Permission::Search);
    if resource_type == AUDIT_EVENT {
        // The audit trail is written by the server alone, and read by auditors alone: an admin
        // who runs the server does not get to read (or rewrite) the record of what it did.
        return (role == Role::Auditor && reads).then_some(Reach::Everything);
    }
    match role {
        Role::Admin => Some(Reach::Everything),
        Role::Clinician => {
            if AUDIT_TYPES.contains(&resource_type) {
                // The trail of who did what: its own Provenance it may read, never rewrite.
                (resource_type == "Provenance" && reads).then_some(Reach::PatientsOfOrganization)
            } else if in_patient_compartment {
                Some(Reach::PatientsOfOrganization)
            } else {
                (reads && REFERENCE_DATA.contains(&resource_type)).then_some(Reach::Everything)
            }
        }
        Role::Crm => (reads && CRM_TYPES.contains(&resource_type)).then_some(Reach::Everything),
        Role::Insurer => {
            if INSURANCE_TYPES.contains(&resource_type) {
                (reads
                    || (INSURER_WRITES.contains(&resource_type)
                        && permission != Permission::Delete))
                    .then_some(Reach::InsuredByOrganization)
            } else if resource_type == "Patient" {
                reads.then_some(Reach::InsuredByOrganization)
            } else if resource_type == "Organization" {
                reads.then_some(Reach::Everything)
            } else {
                None
            }
        }
        Role::Patient => {
            if AUDIT_TYPES.contains(&resource_type) || !in_patient_compartment {
                None
            } else if reads || resource_type == "Consent" {
                Some(Reach::OwnCompartment)
            } else {
                None
            }
        }
        Role::DeviceHub => (reads && resource_type == "Device").then_some(Reach::OwnedDevices),
        Role::Auditor => {
            (reads && AUDIT_TYPES.contains(&resource_type)).then_some(Reach::Everything)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Permission::*;

    #[test]
    fn names_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.name().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn the_table() {
        assert_eq!(reach(Role::Admin, "AuditEvent", Delete, true), None);
        assert_eq!(reach(Role::Admin, "AuditEvent", Read, true), None);
        assert_eq!(
            reach(Role::Auditor, "AuditEvent", Search, true),
            Some(Reach::Everything)
        );
        assert_eq!(reach(Role::Auditor, "AuditEvent", Create, true), None);
        assert_eq!(
            reach(Role::Clinician, "Observation", Update, true),
            Some(Reach::PatientsOfOrganization)
        );
        assert_eq!(
            reach(Role::Clinician, "Organization", Read, false),
            Some(Reach::Everything)
        );
        assert_eq!(reach(Role::Clinician, "Organization", Update, false), None);
        assert_eq!(reach(Role::Clinician, "AuditEvent", Read, true), None);
        assert_eq!(
            reach(Role::Clinician, "Provenance", Read, true),
            Some(Reach::PatientsOfOrganization)
        );
        assert_eq!(reach(Role::Clinician, "Provenance", Delete, true), None);
        assert_eq!(reach(Role::Clinician, "Bundle", Read, false), None);
        assert_eq!(reach(Role::Clinician, "Binary", Read, false), None);
        assert_eq!(
            reach(Role::Crm, "Observation", Search, true),
            Some(Reach::Everything)
        );
        assert_eq!(reach(Role::Crm, "Observation", Create, true), None);
        assert_eq!(reach(Role::Crm, "Claim", Read, true), None);
        assert_eq!(
            reach(Role::Insurer, "Claim", Read, true),
            Some(Reach::InsuredByOrganization)
        );
        assert_eq!(reach(Role::Insurer, "Claim", Update, true), None);
        assert_eq!(
            reach(Role::Insurer, "ClaimResponse", Create, true),
            Some(Reach::InsuredByOrganization)
        );
        assert_eq!(reach(Role::Insurer, "Coverage", Create, true), None);
        assert_eq!(
            reach(Role::Insurer, "Patient", Read, true),
            Some(Reach::InsuredByOrganization)
        );
        assert_eq!(reach(Role::Insurer, "Observation", Read, true), None);
        assert_eq!(
            reach(Role::Patient, "Observation", Read, true),
            Some(Reach::OwnCompartment)
        );
        assert_eq!(reach(Role::Patient, "Observation", Create, true), None);
        assert_eq!(
            reach(Role::Patient, "Consent", Create, true),
            Some(Reach::OwnCompartment)
        );
        assert_eq!(reach(Role::Patient, "AuditEvent", Read, true), None);
        assert_eq!(reach(Role::Patient, "Organization", Read, false), None);
        assert_eq!(
            reach(Role::DeviceHub, "Device", Read, true),
            Some(Reach::OwnedDevices)
        );
        assert_eq!(reach(Role::DeviceHub, "Observation", Read, true), None);
        assert_eq!(
            reach(Role::Auditor, "Provenance", Search, true),
            Some(Reach::Everything)
        );
        assert_eq!(reach(Role::Auditor, "Patient", Read, true), None);
    }
}
