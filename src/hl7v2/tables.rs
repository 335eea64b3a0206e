//! HL7 v2 table values to FHIR codes: OBX-11 (table 0085), OBR-25 (0123), OBX-8 (0078), PID-8 (0001).
//!
//! The maps follow the concept maps of the HL7 Version 2 to FHIR IG (v2mappings 1.0.0, and
//! 1.0.0-ballot where noted): `table-hl70085-to-observation-status`,
//! `table-hl70123-queries-to-diagnostic-report-status`, `table-hl70078-to-v3-observationinterpretation`
//! and `table-hl70001-to-administrative-gender`. Target codes are checked against the R4 definitions
//! in `shared/fhir-r4/` (observation-status, diagnostic-report-status, data-absent-reason,
//! v3-ObservationInterpretation, administrative-gender).
//!
//! Nothing is guessed. A value outside the v2 table is [`TableError::Unknown`]; a value of the table
//! that the IG maps to nothing is [`TableError::NotMapped`] with the reason, so the mapper can answer
//! AE/AR with a message that says which field and value, and why. Table values are not PHI, so errors
//! name them. Values are matched exactly after trimming blanks: v2 table codes are upper case, and a
//! lower-case `f` is not taken to mean `F`.

use std::fmt;

/// `Observation.status` code system.
pub const OBSERVATION_STATUS_SYSTEM: &str = "http://hl7.org/fhir/observation-status";
/// `DiagnosticReport.status` code system.
pub const DIAGNOSTIC_REPORT_STATUS_SYSTEM: &str = "http://hl7.org/fhir/diagnostic-report-status";
/// `Observation.dataAbsentReason` code system (R4).
pub const DATA_ABSENT_REASON_SYSTEM: &str =
    "http://terminology.hl7.org/CodeSystem/data-absent-reason";
/// `Observation.interpretation` code system.
pub const INTERPRETATION_SYSTEM: &str =
    "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";
/// `Patient.gender` code system.
pub const ADMINISTRATIVE_GENDER_SYSTEM: &str = "http://hl7.org/fhir/administrative-gender";

/// Why a v2 table value could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableError {
    /// The field is empty where a value is needed.
    Empty {
        table: &'static str,
        field: &'static str,
    },
    /// The value is not in the v2 table.
    Unknown {
        table: &'static str,
        field: &'static str,
        value: String,
    },
    /// The value is in the v2 table, but the v2-to-FHIR IG maps it to no FHIR code.
    NotMapped {
        table: &'static str,
        field: &'static str,
        value: String,
        reason: &'static str,
    },
}

impl TableError {
    /// The v2 field (e.g. `OBX-11`), for ERR-2 and the ACK text.
    pub fn field(&self) -> &'static str {
        match self {
            TableError::Empty { field, .. }
            | TableError::Unknown { field, .. }
            | TableError::NotMapped { field, .. } => field,
        }
    }
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::Empty { table, field } => {
                write!(
                    f,
                    "{field} is empty; a value from HL7 table {table} is required"
                )
            }
            TableError::Unknown {
                table,
                field,
                value,
            } => {
                write!(f, "{field} value {value:?} is not in HL7 table {table}")
            }
            TableError::NotMapped {
                table,
                field,
                value,
                reason,
            } => {
                write!(
                    f,
                    "{field} value {value:?} (HL7 table {table}) has no FHIR equivalent: {reason}"
                )
            }
        }
    }
}

impl std::error::Error for TableError {}

/// `Observation.status` as mapped from OBX-11.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObservationStatus {
    Final,
    Preliminary,
    Amended,
    Corrected,
    EnteredInError,
    /// The result could not be obtained (OBX-11 `X`); the Observation carries no value and
    /// `dataAbsentReason` = [`ObservationStatus::data_absent_reason`].
    Cancelled,
}

impl ObservationStatus {
    /// The code in [`OBSERVATION_STATUS_SYSTEM`].
    pub fn code(self) -> &'static str {
        match self {
            ObservationStatus::Final => "final",
            ObservationStatus::Preliminary => "preliminary",
            ObservationStatus::Amended => "amended",
            ObservationStatus::Corrected => "corrected",
            ObservationStatus::EnteredInError => "entered-in-error",
            ObservationStatus::Cancelled => "cancelled",
        }
    }

    /// The `dataAbsentReason` (in [`DATA_ABSENT_REASON_SYSTEM`]) that goes with the status.
    ///
    /// Only `cancelled` (OBX-11 `X`, "results cannot be obtained for this observation") has one. The
    /// IG gives no code; we use `error` ("some system or workflow process error means that the
    /// information is not available"): for a Holter analysis `X` means the analyser could not compute
    /// the value (noise, lead off, too few beats), not that it was never attempted (`not-performed`).
    pub fn data_absent_reason(self) -> Option<&'static str> {
        match self {
            ObservationStatus::Cancelled => Some("error"),
            _ => None,
        }
    }
}

const T0085: &str = "0085";
const F_OBX11: &str = "OBX-11";

/// OBX-11 (table 0085) as an [`ObservationStatus`], per the IG's 0085 concept map.
///
/// | OBX-11 | FHIR | |
/// |---|---|---|
/// | F | final | |
/// | P | preliminary | |
/// | C | corrected | |
/// | A | amended | |
/// | D, W | entered-in-error | |
/// | X | cancelled + dataAbsentReason `error` | |
/// | B, I, N, O, R, S, U, V | — | `NotMapped`: the IG maps them to nothing |
pub fn observation_status_of(obx11: &str) -> Result<ObservationStatus, TableError> {
    let value = obx11.trim();
    let not_mapped = |reason| {
        Err(TableError::NotMapped {
            table: T0085,
            field: F_OBX11,
            value: value.to_string(),
            reason,
        })
    };
    match value {
        "" => Err(TableError::Empty {
            table: T0085,
            field: F_OBX11,
        }),
        "F" => Ok(ObservationStatus::Final),
        "P" => Ok(ObservationStatus::Preliminary),
        "C" => Ok(ObservationStatus::Corrected),
        "A" => Ok(ObservationStatus::Amended),
        "D" | "W" => Ok(ObservationStatus::EnteredInError),
        "X" => Ok(ObservationStatus::Cancelled),
        "B" => not_mapped(
            "an appended report (results reviewed, values unchanged) is not mapped by the v2-to-FHIR IG; send F with the addition as a note",
        ),
        "I" => not_mapped(
            "'results pending' carries no result; the v2-to-FHIR IG 1.0.0 maps it to nothing (the 2020 ballot's 'registered' was dropped)",
        ),
        "N" => not_mapped(
            "'not asked' is not mapped by the v2-to-FHIR IG; it describes an observation that was not sought",
        ),
        "O" => not_mapped(
            "'order detail only (no result)' carries no result and is not mapped by the v2-to-FHIR IG",
        ),
        "R" => not_mapped(
            "'results entered, not verified' is not mapped by the v2-to-FHIR IG; send P for an unverified result",
        ),
        "S" => not_mapped(
            "'partial results' is deprecated since v2.6 and not mapped by the v2-to-FHIR IG 1.0.0; send P",
        ),
        "U" => not_mapped(
            "'status change to final without retransmitting results' updates earlier results and is not a result itself; resend the results with F",
        ),
        "V" => not_mapped("'verified' is not mapped by the v2-to-FHIR IG 1.0.0; send F"),
        _ => Err(TableError::Unknown {
            table: T0085,
            field: F_OBX11,
            value: value.to_string(),
        }),
    }
}

/// OBX-11 to (`Observation.status` code, `dataAbsentReason` code). See [`observation_status_of`].
pub fn observation_status(obx11: &str) -> Result<(&'static str, Option<&'static str>), TableError> {
    observation_status_of(obx11).map(|s| (s.code(), s.data_absent_reason()))
}

const T0123: &str = "0123";
const F_OBR25: &str = "OBR-25";

/// OBR-25 (table 0123) to `DiagnosticReport.status`, per the IG's 0123 concept map
/// (`table-hl70123-queries-to-diagnostic-report-status`, 1.0.0).
///
/// | OBR-25 | FHIR |
/// |---|---|
/// | O, I, S | registered |
/// | P | preliminary |
/// | R | partial |
/// | C | corrected |
/// | F | final |
/// | X | cancelled |
/// | A, M, N, Y, Z | `NotMapped` |
pub fn report_status(obr25: &str) -> Result<&'static str, TableError> {
    let value = obr25.trim();
    let not_mapped = |reason| {
        Err(TableError::NotMapped {
            table: T0123,
            field: F_OBR25,
            value: value.to_string(),
            reason,
        })
    };
    match value {
        "" => Err(TableError::Empty {
            table: T0123,
            field: F_OBR25,
        }),
        "O" | "I" | "S" => Ok("registered"),
        "P" => Ok("preliminary"),
        "R" => Ok("partial"),
        "C" => Ok("corrected"),
        "F" => Ok("final"),
        "X" => Ok("cancelled"),
        "A" => not_mapped(
            "'some, but not all, results available' is left unmapped by the v2-to-FHIR IG; send P or R",
        ),
        "M" => not_mapped("'corrected, not final' is not mapped by the v2-to-FHIR IG"),
        "N" => {
            not_mapped("'procedure completed, results pending' is not mapped by the v2-to-FHIR IG")
        }
        "Y" => {
            not_mapped("'no order on record for this test' is an order error, not a report status")
        }
        "Z" => not_mapped("'no record of this patient' is a patient error, not a report status"),
        _ => Err(TableError::Unknown {
            table: T0123,
            field: F_OBR25,
            value: value.to_string(),
        }),
    }
}

const T0078: &str = "0078";
const F_OBX8: &str = "OBX-8";

/// Table 0078 codes and their v3-ObservationInterpretation displays. The IG maps every code to the
/// same code in v3-ObservationInterpretation; the displays are those of the R4 code system.
/// `CAR`, `E`, `EX`, `EXP`, `HX`, `LX`, `NCL`, `UNE` are later additions to table 0078 that the IG's
/// map lists and the R4 v3 code system has.
const INTERPRETATIONS: [(&str, &str); 46] = [
    ("<", "Off scale low"),
    (">", "Off scale high"),
    ("A", "Abnormal"),
    ("AA", "Critical abnormal"),
    ("AC", "Anti-complementary substances present"),
    ("B", "Better"),
    ("CAR", "Carrier"),
    ("D", "Significant change down"),
    ("DET", "Detected"),
    ("E", "Equivocal"),
    ("EX", "outside threshold"),
    ("EXP", "Expected"),
    ("H", "High"),
    ("HH", "Critical high"),
    ("HM", "Hold for Medical Review"),
    ("HU", "Significantly high"),
    ("HX", "above high threshold"),
    ("I", "Intermediate"),
    ("IE", "Insufficient evidence"),
    ("IND", "Indeterminate"),
    ("L", "Low"),
    ("LL", "Critical low"),
    ("LU", "Significantly low"),
    ("LX", "below low threshold"),
    ("MS", "moderately susceptible"),
    ("N", "Normal"),
    ("NCL", "No CLSI defined breakpoint"),
    ("ND", "Not detected"),
    ("NEG", "Negative"),
    ("NR", "Non-reactive"),
    ("NS", "Non-susceptible"),
    ("OBX", "Interpretation qualifiers in separate OBX segments"),
    ("POS", "Positive"),
    ("QCF", "Quality control failure"),
    ("R", "Resistant"),
    ("RR", "Reactive"),
    ("S", "Susceptible"),
    ("SDD", "Susceptible-dose dependent"),
    ("SYN-R", "Synergy - resistant"),
    ("SYN-S", "Synergy - susceptible"),
    ("TOX", "Cytotoxic substance present"),
    ("U", "Significant change up"),
    ("UNE", "Unexpected"),
    ("VS", "very susceptible"),
    ("W", "Worse"),
    ("WR", "Weakly reactive"),
];

/// Every (code, display) that [`interpretation`] can answer.
pub fn interpretation_codings() -> &'static [(&'static str, &'static str)] {
    &INTERPRETATIONS
}

/// One OBX-8 value (the field repeats: call once per repetition) to (code, display) in
/// [`INTERPRETATION_SYSTEM`]. The code is the same as in table 0078.
///
/// `null` ("no range defined, or normal ranges don't apply") is a value of table 0078 with no
/// interpretation code: it is `NotMapped`, and the mapper leaves `Observation.interpretation` out.
pub fn interpretation(obx8: &str) -> Result<(&'static str, &'static str), TableError> {
    let value = obx8.trim();
    if value.is_empty() {
        return Err(TableError::Empty {
            table: T0078,
            field: F_OBX8,
        });
    }
    if value == "null" {
        return Err(TableError::NotMapped {
            table: T0078,
            field: F_OBX8,
            value: value.to_string(),
            reason: "'no range defined, or normal ranges don't apply' means no interpretation; leave Observation.interpretation out",
        });
    }
    INTERPRETATIONS
        .iter()
        .find(|(code, _)| *code == value)
        .copied()
        .ok_or_else(|| TableError::Unknown {
            table: T0078,
            field: F_OBX8,
            value: value.to_string(),
        })
}

const T0001: &str = "0001";
const F_PID8: &str = "PID-8";

/// PID-8 (table 0001) to `Patient.gender`, per the IG's 0001 concept map (1.0.0-ballot):
/// M male, F female, O other, A (ambiguous) other, N (not applicable) other, U unknown.
///
/// An empty PID-8 is `Empty`: the mapper leaves `Patient.gender` out rather than sending `unknown`
/// (absent and "unknown" are different statements).
pub fn gender(pid8: &str) -> Result<&'static str, TableError> {
    match pid8.trim() {
        "" => Err(TableError::Empty {
            table: T0001,
            field: F_PID8,
        }),
        "M" => Ok("male"),
        "F" => Ok("female"),
        "O" | "A" | "N" => Ok("other"),
        "U" => Ok("unknown"),
        other => Err(TableError::Unknown {
            table: T0001,
            field: F_PID8,
            value: other.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn obx11_mapped_values() {
        assert_eq!(observation_status("F"), Ok(("final", None)));
        assert_eq!(observation_status("P"), Ok(("preliminary", None)));
        assert_eq!(observation_status("C"), Ok(("corrected", None)));
        assert_eq!(observation_status("A"), Ok(("amended", None)));
        assert_eq!(observation_status("D"), Ok(("entered-in-error", None)));
        assert_eq!(observation_status("W"), Ok(("entered-in-error", None)));
        assert_eq!(observation_status("X"), Ok(("cancelled", Some("error"))));
        assert_eq!(observation_status(" F "), Ok(("final", None)));
        assert_eq!(observation_status_of("X"), Ok(ObservationStatus::Cancelled));
    }

    #[test]
    fn obx11_values_the_ig_leaves_unmapped() {
        for v in ["B", "I", "N", "O", "R", "S", "U", "V"] {
            match observation_status(v) {
                Err(TableError::NotMapped {
                    table: "0085",
                    field: "OBX-11",
                    value,
                    reason,
                }) => {
                    assert_eq!(value, v);
                    assert!(!reason.is_empty());
                }
                other => panic!("{v}: {other:?}"),
            }
        }
    }

    #[test]
    fn obx11_unknown_and_empty() {
        let err = observation_status("Q").unwrap_err();
        assert_eq!(
            err,
            TableError::Unknown {
                table: "0085",
                field: "OBX-11",
                value: "Q".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "OBX-11 value \"Q\" is not in HL7 table 0085"
        );
        assert_eq!(err.field(), "OBX-11");
        assert_eq!(
            observation_status("f"),
            Err(TableError::Unknown {
                table: "0085",
                field: "OBX-11",
                value: "f".into()
            })
        );
        assert_eq!(
            observation_status(""),
            Err(TableError::Empty {
                table: "0085",
                field: "OBX-11"
            })
        );
        assert_eq!(
            observation_status("  "),
            Err(TableError::Empty {
                table: "0085",
                field: "OBX-11"
            })
        );
        assert!(observation_status("FF").is_err());
    }

    #[test]
    fn obx11_every_status_code_is_an_r4_observation_status() {
        let r4 = [
            "registered",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "cancelled",
            "entered-in-error",
            "unknown",
        ];
        for v in ["F", "P", "C", "A", "D", "W", "X"] {
            assert!(r4.contains(&observation_status(v).unwrap().0), "{v}");
        }
    }

    #[test]
    fn obr25() {
        for (v, want) in [
            ("O", "registered"),
            ("I", "registered"),
            ("S", "registered"),
            ("P", "preliminary"),
            ("R", "partial"),
            ("C", "corrected"),
            ("F", "final"),
            ("X", "cancelled"),
        ] {
            assert_eq!(report_status(v), Ok(want), "{v}");
        }
        for v in ["A", "M", "N", "Y", "Z"] {
            assert!(
                matches!(
                    report_status(v),
                    Err(TableError::NotMapped {
                        field: "OBR-25",
                        ..
                    })
                ),
                "{v}"
            );
        }
        assert_eq!(
            report_status("Q"),
            Err(TableError::Unknown {
                table: "0123",
                field: "OBR-25",
                value: "Q".into()
            })
        );
        assert_eq!(
            report_status(""),
            Err(TableError::Empty {
                table: "0123",
                field: "OBR-25"
            })
        );
    }

    #[test]
    fn obx8() {
        assert_eq!(interpretation("N"), Ok(("N", "Normal")));
        assert_eq!(interpretation("H"), Ok(("H", "High")));
        assert_eq!(interpretation("L"), Ok(("L", "Low")));
        assert_eq!(interpretation("HH"), Ok(("HH", "Critical high")));
        assert_eq!(interpretation("LL"), Ok(("LL", "Critical low")));
        assert_eq!(interpretation("A"), Ok(("A", "Abnormal")));
        assert_eq!(interpretation("AA"), Ok(("AA", "Critical abnormal")));
        assert_eq!(interpretation("<"), Ok(("<", "Off scale low")));
        assert_eq!(interpretation(">"), Ok((">", "Off scale high")));
        // Every entry maps to itself, and no code appears twice.
        let mut seen = std::collections::HashSet::new();
        for (code, display) in INTERPRETATIONS {
            assert_eq!(interpretation(code), Ok((code, display)));
            assert!(seen.insert(code), "{code}");
        }
        assert!(matches!(
            interpretation("null"),
            Err(TableError::NotMapped { field: "OBX-8", .. })
        ));
        assert_eq!(
            interpretation("h"),
            Err(TableError::Unknown {
                table: "0078",
                field: "OBX-8",
                value: "h".into()
            })
        );
        assert_eq!(
            interpretation("ZZ"),
            Err(TableError::Unknown {
                table: "0078",
                field: "OBX-8",
                value: "ZZ".into()
            })
        );
        assert_eq!(
            interpretation(""),
            Err(TableError::Empty {
                table: "0078",
                field: "OBX-8"
            })
        );
    }

    #[test]
    fn pid8() {
        assert_eq!(gender("M"), Ok("male"));
        assert_eq!(gender("F"), Ok("female"));
        assert_eq!(gender("O"), Ok("other"));
        assert_eq!(gender("A"), Ok("other"));
        assert_eq!(gender("N"), Ok("other"));
        assert_eq!(gender("U"), Ok("unknown"));
        assert_eq!(
            gender("X"),
            Err(TableError::Unknown {
                table: "0001",
                field: "PID-8",
                value: "X".into()
            })
        );
        assert_eq!(
            gender("m"),
            Err(TableError::Unknown {
                table: "0001",
                field: "PID-8",
                value: "m".into()
            })
        );
        assert_eq!(
            gender(""),
            Err(TableError::Empty {
                table: "0001",
                field: "PID-8"
            })
        );
    }

    #[test]
    fn error_messages_say_what_to_fix() {
        let e = observation_status("U").unwrap_err().to_string();
        assert!(
            e.starts_with("OBX-11 value \"U\" (HL7 table 0085) has no FHIR equivalent: "),
            "{e}"
        );
        assert_eq!(
            gender("").unwrap_err().to_string(),
            "PID-8 is empty; a value from HL7 table 0001 is required"
        );
    }
}
