//! The data set of the search benchmark, generated deterministically: every resource is a pure
//! function of its kind and index (a xorshift64* stream seeded from both), so the benchmark can
//! rebuild any resource's search values (a patient's identifier, pseudonym, …) without storing
//! them, and two runs with the same sizes load the same bytes.
//!
//! Per patient: 100 Observations (FHIRVAULT_BENCH_OBSERVATIONS / 100 patients), 3 Devices, one
//! Coverage and 3 Claims; plus 10 insurer Organizations and one provider Organization.
//! Observations: 70 % heart rate (LOINC 8867-4, with the MDC code, as the load bench's fixture),
//! 30 % PVC count (LOINC 8894-5, the code the issue names), each with a subject, one of the
//! patient's Devices, an `effectiveDateTime` spread uniformly over 2026 and a `valueQuantity`.
//!
//! Ids are chosen here (`p000001`, `d000001`, `o00000001`, …) and kept by the import path, so
//! references are written before their targets exist.
//!
//! Privacy Consents ([`consent`]) are not part of the import: the bench writes them through the
//! HTTP API after the load, so `consent_rules` is filled by the server's own write path. One
//! patient in ten holds one; most deny parties other than the clinic (the CRM, an insurer,
//! marketing use by anyone), and one patient in a hundred denies the clinic itself.

#![allow(dead_code)]

use serde_json::{Value, json};

/// Business identifier system of the generated patients (the Austrian social security number
/// OID, as in the load bench's fixture). The server derives each Patient's pseudonym from
/// `SVNR_SYSTEM|value` of this, its first identifier.
pub const SVNR_SYSTEM: &str = "urn:oid:1.2.40.0.10.1.4.3.1";
pub const MRN_SYSTEM: &str = "urn:oid:1.2.40.0.34.99.4613.3";
pub const LOINC: &str = "http://loinc.org";
pub const HEART_RATE: &str = "8867-4";
pub const PVC_COUNT: &str = "8894-5";
const UCUM: &str = "http://unitsofmeasure.org";

/// Start of 2026 (UTC) and its length, for dates spread over the year.
pub const YEAR_START: i64 = 1_767_225_600;
pub const YEAR_SECONDS: u64 = 365 * 86_400;

/// Family names; 4 of 40 start with "Mei", so `Patient?name=mei` matches about 10 % of patients.
const FAMILY: [&str; 40] = [
    "Meier",
    "Meindl",
    "Meissner",
    "Meixner",
    "Gruber",
    "Huber",
    "Bauer",
    "Wagner",
    "Müller",
    "Pichler",
    "Steiner",
    "Moser",
    "Mayer",
    "Hofer",
    "Leitner",
    "Berger",
    "Fuchs",
    "Eder",
    "Fischer",
    "Schmid",
    "Winkler",
    "Weber",
    "Schwarz",
    "Maier",
    "Schneider",
    "Reiter",
    "Mayr",
    "Schmidt",
    "Wimmer",
    "Egger",
    "Brunner",
    "Lang",
    "Baumgartner",
    "Auer",
    "Binder",
    "Lechner",
    "Wolf",
    "Wallner",
    "Aigner",
    "Ebner",
];
/// Given names; none starts with "mei".
const GIVEN: [&str; 20] = [
    "Maria",
    "Anna",
    "Elisabeth",
    "Theresia",
    "Johanna",
    "Sophie",
    "Lena",
    "Hannah",
    "Julia",
    "Katharina",
    "Johann",
    "Josef",
    "Franz",
    "Karl",
    "Lukas",
    "Tobias",
    "David",
    "Florian",
    "Paul",
    "Jakob",
];
const CITIES: [(&str, &str); 8] = [
    ("Wien", "1060"),
    ("Graz", "8010"),
    ("Linz", "4020"),
    ("Salzburg", "5020"),
    ("Innsbruck", "6020"),
    ("Klagenfurt", "9020"),
    ("Villach", "9500"),
    ("Wels", "4600"),
];

pub const INSURERS: usize = 10;

/// How many of each resource a data set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub observations: usize,
    pub patients: usize,
    pub devices: usize,
    pub coverages: usize,
    pub claims: usize,
    pub organizations: usize,
}

impl Sizes {
    pub fn for_observations(observations: usize) -> Sizes {
        let patients = (observations / 100).max(1);
        Sizes {
            observations,
            patients,
            devices: 3 * patients,
            coverages: patients,
            claims: 3 * patients,
            organizations: INSURERS + 1,
        }
    }

    pub fn total(&self) -> usize {
        self.observations
            + self.patients
            + self.devices
            + self.coverages
            + self.claims
            + self.organizations
    }

    /// The resource types in load order (targets first, though the server does not require it),
    /// with their counts.
    pub fn kinds(&self) -> [(Kind, usize); 6] {
        [
            (Kind::Organization, self.organizations),
            (Kind::Patient, self.patients),
            (Kind::Device, self.devices),
            (Kind::Coverage, self.coverages),
            (Kind::Claim, self.claims),
            (Kind::Observation, self.observations),
        ]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Organization,
    Patient,
    Device,
    Coverage,
    Claim,
    Observation,
}

impl Kind {
    pub fn resource_type(self) -> &'static str {
        match self {
            Kind::Organization => "Organization",
            Kind::Patient => "Patient",
            Kind::Device => "Device",
            Kind::Coverage => "Coverage",
            Kind::Claim => "Claim",
            Kind::Observation => "Observation",
        }
    }

    fn tag(self) -> u64 {
        self as u64 + 1
    }
}

/// xorshift64* (Vigna); plenty for spreading test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so neighbouring seeds give unrelated streams (and never 0).
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn for_entity(kind: Kind, index: usize) -> Rng {
        Rng::new((kind.tag() << 48) ^ index as u64)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() >> 32) * n) >> 32
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

pub fn patient_id(i: usize) -> String {
    format!("p{:06}", i + 1)
}
pub fn device_id(i: usize) -> String {
    format!("d{:06}", i + 1)
}
pub fn coverage_id(i: usize) -> String {
    format!("cov{:06}", i + 1)
}
pub fn claim_id(i: usize) -> String {
    format!("c{:07}", i + 1)
}
pub fn observation_id(i: usize) -> String {
    format!("o{:08}", i + 1)
}
/// The provider organization: the last one.
pub fn clinic_id(sizes: &Sizes) -> String {
    organization_id(sizes.organizations - 1)
}

pub fn organization_id(i: usize) -> String {
    format!("org{:02}", i + 1)
}
/// The insurer of patient `i` (organizations 0..INSURERS are insurers, the last is the provider).
pub fn insurer_of(patient: usize) -> usize {
    patient % INSURERS
}

/// The patient's social security number (unique per index): what `Patient?identifier=` looks for.
pub fn svnr(i: usize) -> String {
    format!("{}", 1_000_000_000u64 + i as u64 * 37)
}

/// The identity string the server derives the pseudonym from (its first business identifier).
pub fn pseudonym_identity(i: usize) -> String {
    format!("{SVNR_SYSTEM}|{}", svnr(i))
}

/// An instant in 2026, RFC 3339 with a UTC offset.
pub fn instant(seconds_into_year: u64) -> String {
    let t = chrono::DateTime::from_timestamp(YEAR_START + seconds_into_year as i64, 0)
        .expect("valid time");
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn date(seconds_into_year: u64) -> String {
    instant(seconds_into_year)[..10].to_string()
}

pub fn resource(kind: Kind, index: usize, sizes: &Sizes) -> Value {
    match kind {
        Kind::Organization => organization(index, sizes),
        Kind::Patient => patient(index, sizes),
        Kind::Device => device(index),
        Kind::Coverage => coverage(index),
        Kind::Claim => claim(index, sizes),
        Kind::Observation => observation(index, sizes),
    }
}

pub fn organization(i: usize, sizes: &Sizes) -> Value {
    let name = if i + 1 == sizes.organizations {
        "Holter Diagnostics Clinic".to_string()
    } else {
        format!("Insurer {:02}", i + 1)
    };
    json!({
        "resourceType": "Organization",
        "id": organization_id(i),
        "active": true,
        "name": name,
    })
}

/// Patient `i`, managed by the provider organization (the clinic whose clinician the search
/// benchmark also searches as).
pub fn patient(i: usize, sizes: &Sizes) -> Value {
    let mut rng = Rng::for_entity(Kind::Patient, i);
    let family = *rng.pick(&FAMILY);
    let given = *rng.pick(&GIVEN);
    let (city, postal) = *rng.pick(&CITIES);
    let birth = chrono::NaiveDate::from_ymd_opt(1930, 1, 1).expect("date")
        + chrono::Days::new(rng.below(70 * 365));
    json!({
        "resourceType": "Patient",
        "id": patient_id(i),
        "identifier": [
            {"use": "official", "system": SVNR_SYSTEM, "value": svnr(i)},
            {
                "use": "usual",
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                "system": MRN_SYSTEM,
                "value": format!("MRN-{:07}", i + 1)
            }
        ],
        "active": true,
        "name": [{"use": "official", "family": family, "given": [given]}],
        "telecom": [{"system": "phone", "value": format!("+43 664 {:07}", rng.below(10_000_000)), "use": "mobile"}],
        "gender": if rng.below(2) == 0 { "female" } else { "male" },
        "birthDate": birth.format("%Y-%m-%d").to_string(),
        "address": [{
            "use": "home",
            "line": [format!("Hauptstraße {}", 1 + rng.below(200))],
            "city": city,
            "postalCode": postal,
            "country": "AT"
        }],
        "managingOrganization": {"reference": format!("Organization/{}", clinic_id(sizes))}
    })
}

/// Device `i` belongs to patient `i / 3`.
pub fn device(i: usize) -> Value {
    json!({
        "resourceType": "Device",
        "id": device_id(i),
        "identifier": [{"system": "urn:fhirvault-bench:holter-serial", "value": format!("HX7-{:07}", i + 1)}],
        "status": "active",
        "manufacturer": "Holter Instruments",
        "deviceName": [{"name": "HX7 Holter recorder", "type": "model-name"}],
        "patient": {"reference": format!("Patient/{}", patient_id(i / 3))}
    })
}

/// Coverage `i` is patient `i`'s.
pub fn coverage(i: usize) -> Value {
    json!({
        "resourceType": "Coverage",
        "id": coverage_id(i),
        "status": "active",
        "beneficiary": {"reference": format!("Patient/{}", patient_id(i))},
        "payor": [{"reference": format!("Organization/{}", organization_id(insurer_of(i)))}]
    })
}

/// Claim `i` belongs to patient `i / 3` and points at that patient's Coverage and insurer.
pub fn claim(i: usize, sizes: &Sizes) -> Value {
    let mut rng = Rng::for_entity(Kind::Claim, i);
    let patient = i / 3;
    json!({
        "resourceType": "Claim",
        "id": claim_id(i),
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
        "use": "claim",
        "patient": {"reference": format!("Patient/{}", patient_id(patient))},
        "created": date(rng.below(YEAR_SECONDS)),
        "insurer": {"reference": format!("Organization/{}", organization_id(insurer_of(patient)))},
        "provider": {"reference": format!("Organization/{}", organization_id(sizes.organizations - 1))},
        "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]},
        "insurance": [{
            "sequence": 1,
            "focal": true,
            "coverage": {"reference": format!("Coverage/{}", coverage_id(patient))}
        }],
        "total": {"value": (50 + rng.below(400)) as f64, "currency": "EUR"}
    })
}

/// The patient Observation `i` belongs to: observations are dealt out round-robin, so every
/// patient has `observations / patients` of them (±1).
pub fn observation_patient(i: usize, sizes: &Sizes) -> usize {
    i % sizes.patients
}

pub fn observation(i: usize, sizes: &Sizes) -> Value {
    let mut rng = Rng::for_entity(Kind::Observation, i);
    let patient = observation_patient(i, sizes);
    let device = 3 * patient + rng.below(3) as usize;
    let when = instant(rng.below(YEAR_SECONDS));
    if rng.below(10) < 7 {
        json!({
            "resourceType": "Observation",
            "id": observation_id(i),
            "status": "final",
            "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "vital-signs",
                "display": "Vital Signs"
            }]}],
            "code": {
                "coding": [
                    {"system": LOINC, "code": HEART_RATE, "display": "Heart rate"},
                    {"system": "urn:iso:std:iso:11073:10101", "code": "147842", "display": "MDC_ECG_HEART_RATE"}
                ],
                "text": "Heart rate"
            },
            "subject": {"reference": format!("Patient/{}", patient_id(patient))},
            "device": {"reference": format!("Device/{}", device_id(device))},
            "effectiveDateTime": when,
            "valueQuantity": {"value": 45 + rng.below(90), "unit": "/min", "system": UCUM, "code": "/min"}
        })
    } else {
        json!({
            "resourceType": "Observation",
            "id": observation_id(i),
            "status": "final",
            "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "procedure"
            }]}],
            "code": {"coding": [{"system": LOINC, "code": PVC_COUNT}], "text": "PVC count"},
            "subject": {"reference": format!("Patient/{}", patient_id(patient))},
            "device": {"reference": format!("Device/{}", device_id(device))},
            "effectiveDateTime": when,
            "valueQuantity": {"value": rng.below(300), "unit": "beats", "system": UCUM, "code": "{beats}"}
        })
    }
}

/// Whether patient `i` holds a privacy Consent: one patient in ten.
pub fn has_consent(i: usize) -> bool {
    i % 10 == 3
}

/// Whether patient `i`'s Consent denies the clinic (the search bench's clinician): one patient
/// in a hundred, so the consent filter really removes something from the clinician's results.
pub fn denies_clinic(i: usize) -> bool {
    i % 100 == 3
}

pub fn consent_id(i: usize) -> String {
    format!("cons{:06}", i + 1)
}

/// The patients holding a Consent, and how many of them deny the clinic.
pub fn consent_counts(sizes: &Sizes) -> (usize, usize) {
    let holders = (0..sizes.patients).filter(|&i| has_consent(i)).count();
    let clinic = (0..sizes.patients).filter(|&i| denies_clinic(i)).count();
    (holders, clinic)
}

/// Patient `i`'s active patient-privacy Consent (docs/consent.md), or `None`. The clinic's
/// patients who deny it deny everything to `Organization/<clinic>`; the others deny, in turn:
/// the CRM role everything; their insurer the Observations; anyone marketing use (actor "any",
/// purpose HMARKT: rows the clinician's probe reaches and must reject on purpose); the insurer
/// role Observations and Devices.
pub fn consent(i: usize, sizes: &Sizes) -> Option<Value> {
    if !has_consent(i) {
        return None;
    }
    let actor = |reference: Value| {
        json!([{
            "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
            "reference": reference
        }])
    };
    let organization = |id: String| actor(json!({"reference": format!("Organization/{id}")}));
    let role =
        |name: &str| actor(json!({"identifier": {"system": "urn:fhirvault:role", "value": name}}));
    let class = |types: &[&str]| -> Value {
        types
            .iter()
            .map(|t| json!({"system": "http://hl7.org/fhir/resource-types", "code": t}))
            .collect()
    };
    let provision = if denies_clinic(i) {
        json!({"type": "deny", "actor": organization(clinic_id(sizes))})
    } else {
        match (i / 10) % 4 {
            0 => json!({"type": "deny", "actor": role("crm")}),
            1 => {
                json!({"type": "deny", "actor": organization(organization_id(insurer_of(i))), "class": class(&["Observation"])})
            }
            2 => {
                json!({"type": "deny", "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HMARKT"}]})
            }
            _ => {
                json!({"type": "deny", "actor": role("insurer"), "class": class(&["Observation", "Device"])})
            }
        }
    };
    Some(json!({
        "resourceType": "Consent",
        "id": consent_id(i),
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{}", patient_id(i))},
        "dateTime": "2026-01-01T00:00:00Z",
        "provision": provision
    }))
}
