//! Holter measure codes and OBX-6 units: which FHIR coding an OBX-3 denotes, and which UCUM unit an
//! OBX-6 unit is.
//!
//! Every code lives in one of three data tables under `data/`, each row with the document it was
//! checked against, so that a clinician can review the table without reading Rust:
//!
//! - `holter-measures.tsv`: one row per Holter measure (LOINC, MDC, our own key, UCUM unit, category);
//! - `mdc-units.tsv`: ISO/IEEE 11073-10101 unit codes (`MDC_DIM_*`) and their UCUM equivalents;
//! - `unit-aliases.tsv`: unit texts that v2 senders put in OBX-6 without a coding system (`bpm`, `ms`).
//!
//! The tables are compiled in (`include_str!`) and parsed once by [`CodeTable::load`]; a malformed row
//! is an error naming the file, the line and the column, never a panic. Where no standard code could be
//! verified, a measure carries only our own code ([`HOLTER_SYSTEM`]); `docs/holter-codes.md` explains
//! the tables and how to propose a change.
//!
//! A lookup that finds nothing returns `None`: the mapper reports the OBX as unmapped (AE with an ERR
//! segment) rather than guessing.

use std::collections::HashMap;
use std::sync::OnceLock;

/// ISO/IEEE 11073-10101 (MDC), as FHIR R4 names it.
pub const MDC_SYSTEM: &str = "urn:iso:std:iso:11073:10101";
/// LOINC.
pub const LOINC_SYSTEM: &str = "http://loinc.org";
/// Our own code system for Holter measures without a verified standard code; codes are the
/// lower-case kebab keys of `holter-measures.tsv`.
pub const HOLTER_SYSTEM: &str = "https://fhirvault.example/CodeSystem/holter";
/// UCUM.
pub const UCUM_SYSTEM: &str = "http://unitsofmeasure.org";
/// SNOMED CT.
pub const SNOMED_SYSTEM: &str = "http://snomed.info/sct";
/// The FHIR observation-category code system (`vital-signs`, `procedure`).
pub const OBSERVATION_CATEGORY_SYSTEM: &str =
    "http://terminology.hl7.org/CodeSystem/observation-category";
/// The HL7 v2 coding-system name (table 0396, `99zzz` local form) under which senders use our keys.
pub const HOLTER_V2_NAME: &str = "99HOLTER";

/// How far (in hours) the analysed period may be from a LOINC code's period (e.g. "24 hour mean")
/// and still be sent with that code. A "24-hour Holter" rarely analyses exactly 24:00:00; a 23.5 h or
/// 24.5 h analysis is still the 24-hour measure, a 48 h one is not. Clinical review: docs/holter-codes.md.
pub const LOINC_PERIOD_TOLERANCE_HOURS: f64 = 1.0;

const MEASURES_FILE: &str = "holter-measures.tsv";
const MEASURES_TSV: &str = include_str!("data/holter-measures.tsv");
const MEASURE_COLUMNS: [&str; 12] = [
    "key",
    "display",
    "loinc",
    "loinc_display",
    "loinc_period_h",
    "base_loinc",
    "mdc_code",
    "mdc_refid",
    "ucum_unit",
    "category",
    "source",
    "notes",
];

const UNITS_FILE: &str = "mdc-units.tsv";
const UNITS_TSV: &str = include_str!("data/mdc-units.tsv");
const UNIT_COLUMNS: [&str; 7] = [
    "mdc_code",
    "partition",
    "term_code",
    "mdc_refid",
    "ucum",
    "display",
    "source",
];

const ALIASES_FILE: &str = "unit-aliases.tsv";
const ALIASES_TSV: &str = include_str!("data/unit-aliases.tsv");
const ALIAS_COLUMNS: [&str; 4] = ["alias", "ucum", "display", "note"];

/// MDC partitions used here (ISO/IEEE 11073-10101 clause 7.2: code = partition * 2^16 + term code).
const MDC_PARTITION_SCADA: u32 = 2;
const MDC_PARTITION_DIM: u32 = 4;

/// FHIR observation category of a measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    VitalSigns,
    Procedure,
}

impl Category {
    pub const ALL: [Category; 2] = [Category::VitalSigns, Category::Procedure];

    /// The code in [`OBSERVATION_CATEGORY_SYSTEM`].
    pub fn code(self) -> &'static str {
        match self {
            Category::VitalSigns => "vital-signs",
            Category::Procedure => "procedure",
        }
    }

    /// The display of [`Category::code`] in the R4 code system.
    pub fn display(self) -> &'static str {
        match self {
            Category::VitalSigns => "Vital Signs",
            Category::Procedure => "Procedure",
        }
    }

    fn parse(s: &str) -> Option<Category> {
        match s {
            "vital-signs" => Some(Category::VitalSigns),
            "procedure" => Some(Category::Procedure),
            _ => None,
        }
    }
}

/// One Holter measure: a row of `holter-measures.tsv`.
#[derive(Debug, Clone, PartialEq)]
pub struct Measure {
    /// Our own code (lower-case kebab) in [`HOLTER_SYSTEM`]; always present.
    pub key: String,
    pub display: String,
    /// (LOINC code, LOINC long common name).
    pub loinc: Option<(String, String)>,
    /// The period, in hours, that the LOINC code itself names (24 for "Heart rate 24 hour mean").
    /// Such a code fits only an analysed period of that length; see [`Measure::codings`].
    pub loinc_period_hours: Option<u32>,
    /// (LOINC code, display) of the broader code also sent so that a vital-signs Observation meets
    /// the extensible binding of the R4 vital-signs profile (8867-4 Heart rate for the mean, minimum
    /// and maximum). It is another row's LOINC code, so it is never used to look a measure up.
    pub base_loinc: Option<(String, String)>,
    /// (numeric context-free MDC code, REFID), e.g. ("147842", "MDC_ECG_HEART_RATE").
    pub mdc: Option<(String, String)>,
    /// The UCUM unit the measure is expected in.
    pub ucum: Option<String>,
    pub category: Category,
}

/// One coding of `Observation.code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coding {
    pub system: &'static str,
    pub code: String,
    pub display: String,
}

impl Measure {
    /// The codings to put in `Observation.code`, most specific first: the measure's LOINC code, its
    /// base LOINC code, its MDC code, and always our own key.
    ///
    /// `analysed_hours` is the length of the period the value covers (e.g. from OBR-7/OBR-8 or the
    /// analysed-duration measure). A LOINC code that names a period (24 h) is included only when
    /// `analysed_hours` is known and within [`LOINC_PERIOD_TOLERANCE_HOURS`] of it; a 7-day mean heart
    /// rate is not a "Heart rate 24 hour mean".
    pub fn codings(&self, analysed_hours: Option<f64>) -> Vec<Coding> {
        let mut out = Vec::with_capacity(4);
        if let Some((code, display)) = &self.loinc {
            let fits = match self.loinc_period_hours {
                None => true,
                Some(period) => analysed_hours.is_some_and(|h| {
                    h.is_finite() && (h - f64::from(period)).abs() <= LOINC_PERIOD_TOLERANCE_HOURS
                }),
            };
            if fits {
                out.push(Coding {
                    system: LOINC_SYSTEM,
                    code: code.clone(),
                    display: display.clone(),
                });
            }
        }
        if let Some((code, display)) = &self.base_loinc {
            out.push(Coding {
                system: LOINC_SYSTEM,
                code: code.clone(),
                display: display.clone(),
            });
        }
        if let Some((code, refid)) = &self.mdc {
            out.push(Coding {
                system: MDC_SYSTEM,
                code: code.clone(),
                display: refid.clone(),
            });
        }
        out.push(Coding {
            system: HOLTER_SYSTEM,
            code: self.key.clone(),
            display: self.display.clone(),
        });
        out
    }
}

impl CodeTable {
    /// Every coding [`Measure::codings`] can put in an `Observation.code`, whatever the analysed
    /// period, with its display.
    pub fn displayed_codings(&self) -> Vec<Coding> {
        self.measures
            .iter()
            .flat_map(|measure| {
                let every_period = measure
                    .loinc_period_hours
                    .map(f64::from)
                    .map(|hours| measure.codings(Some(hours)));
                every_period.unwrap_or_else(|| measure.codings(None))
            })
            .collect()
    }
}

/// One row of `mdc-units.tsv`.
#[derive(Debug, Clone, PartialEq)]
struct MdcUnit {
    code: String,
    refid: String,
    ucum: String,
    display: String,
}

/// The parsed code tables. Build once with [`CodeTable::load`] (or share [`CodeTable::shared`]).
#[derive(Debug)]
pub struct CodeTable {
    measures: Vec<Measure>,
    by_key: HashMap<String, usize>,
    by_loinc: HashMap<String, usize>,
    by_mdc_code: HashMap<String, usize>,
    by_mdc_refid: HashMap<String, usize>,
    units: Vec<MdcUnit>,
    unit_by_code: HashMap<String, usize>,
    unit_by_refid: HashMap<String, usize>,
    /// alias → (ucum, display)
    aliases: HashMap<String, (String, String)>,
    /// ucum → display, from the unit tables, for UCUM units sent as such
    ucum_display: HashMap<String, String>,
}

impl CodeTable {
    /// Parses and checks the compiled-in tables. Every error names the file, line and column.
    pub fn load() -> Result<CodeTable, String> {
        Self::from_sources(MEASURES_TSV, UNITS_TSV, ALIASES_TSV)
    }

    /// The tables parsed once per process. The error (a broken table is a build defect) is kept and
    /// returned to every caller, so start-up can refuse to serve instead of panicking.
    pub fn shared() -> Result<&'static CodeTable, &'static str> {
        static TABLE: OnceLock<Result<CodeTable, String>> = OnceLock::new();
        TABLE
            .get_or_init(CodeTable::load)
            .as_ref()
            .map_err(String::as_str)
    }

    fn from_sources(measures: &str, units: &str, aliases: &str) -> Result<CodeTable, String> {
        let mut table = CodeTable {
            measures: Vec::new(),
            by_key: HashMap::new(),
            by_loinc: HashMap::new(),
            by_mdc_code: HashMap::new(),
            by_mdc_refid: HashMap::new(),
            units: Vec::new(),
            unit_by_code: HashMap::new(),
            unit_by_refid: HashMap::new(),
            aliases: HashMap::new(),
            ucum_display: HashMap::new(),
        };
        table.load_measures(measures)?;
        table.load_units(units)?;
        table.load_aliases(aliases)?;
        Ok(table)
    }

    fn load_measures(&mut self, text: &str) -> Result<(), String> {
        let rows = parse_tsv(MEASURES_FILE, text, &MEASURE_COLUMNS)?;
        // base_loinc refers to another row's LOINC code: resolve after all rows are read.
        let mut pending_base: Vec<(usize, usize, String)> = Vec::new();
        for row in rows {
            let at = |col: usize| row.at(col);
            let f = &row.fields;
            let key = f[0].to_string();
            if !is_kebab_key(&key) {
                return Err(format!(
                    "{}: key {key:?} is not lower-case kebab (a-z, 0-9, single '-')",
                    at(0)
                ));
            }
            let display = required(f[1], || at(1))?;
            let loinc = match (f[2], f[3]) {
                ("", "") => None,
                (code, "") if !code.is_empty() => {
                    return Err(format!("{}: LOINC {code} has no long common name", at(3)));
                }
                ("", _) => return Err(format!("{}: loinc_display without a LOINC code", at(2))),
                (code, name) => {
                    if !is_valid_loinc(code) {
                        return Err(format!(
                            "{}: {code:?} is not a LOINC code with a valid check digit",
                            at(2)
                        ));
                    }
                    Some((code.to_string(), name.to_string()))
                }
            };
            let loinc_period_hours = match f[4] {
                "" => None,
                s => match s.parse::<u32>() {
                    Ok(h) if h > 0 && loinc.is_some() => Some(h),
                    Ok(_) if loinc.is_none() => {
                        return Err(format!("{}: a LOINC period without a LOINC code", at(4)));
                    }
                    _ => {
                        return Err(format!(
                            "{}: {s:?} is not a positive whole number of hours",
                            at(4)
                        ));
                    }
                },
            };
            let mdc = match (f[6], f[7]) {
                ("", "") => None,
                (code, refid) => {
                    let number: u32 = code
                        .parse()
                        .map_err(|_| format!("{}: MDC code {code:?} is not a number", at(6)))?;
                    if number >> 16 != MDC_PARTITION_SCADA {
                        return Err(format!(
                            "{}: MDC code {code} is in partition {}, not 2 (SCADA: measurements)",
                            at(6),
                            number >> 16
                        ));
                    }
                    if !refid.starts_with("MDC_") || !is_refid(refid) {
                        return Err(format!("{}: {refid:?} is not an MDC REFID", at(7)));
                    }
                    Some((code.to_string(), refid.to_string()))
                }
            };
            let ucum = match f[8] {
                "" => None,
                u if is_plausible_ucum(u) => Some(u.to_string()),
                u => return Err(format!("{}: {u:?} is not a plausible UCUM unit", at(8))),
            };
            let category = Category::parse(f[9]).ok_or_else(|| {
                format!("{}: {:?} is neither vital-signs nor procedure", at(9), f[9])
            })?;
            required(f[10], || at(10))?;
            if loinc.is_none() && mdc.is_none() && !f[10].contains(HOLTER_SYSTEM) {
                return Err(format!(
                    "{}: a measure without LOINC or MDC must say in its source that it uses {HOLTER_SYSTEM}",
                    at(10)
                ));
            }

            let index = self.measures.len();
            insert_unique(&mut self.by_key, key.clone(), index, || {
                format!("{}: duplicate key {key}", at(0))
            })?;
            if let Some((code, _)) = &loinc {
                insert_unique(&mut self.by_loinc, code.clone(), index, || {
                    format!("{}: LOINC {code} is already used by another measure", at(2))
                })?;
            }
            if let Some((code, refid)) = &mdc {
                insert_unique(&mut self.by_mdc_code, code.clone(), index, || {
                    format!(
                        "{}: MDC code {code} is already used by another measure",
                        at(6)
                    )
                })?;
                insert_unique(&mut self.by_mdc_refid, refid.clone(), index, || {
                    format!(
                        "{}: REFID {refid} is already used by another measure",
                        at(7)
                    )
                })?;
            }
            if !f[5].is_empty() {
                pending_base.push((index, row.line, f[5].to_string()));
            }
            self.measures.push(Measure {
                key,
                display,
                loinc,
                loinc_period_hours,
                base_loinc: None,
                mdc,
                ucum,
                category,
            });
        }
        for (index, line, code) in pending_base {
            let base = self
                .by_loinc
                .get(&code)
                .filter(|&&other| other != index)
                .and_then(|&other| self.measures[other].loinc.clone())
                .ok_or_else(|| {
                    format!("{MEASURES_FILE} line {line} column base_loinc: {code} is not the LOINC code of another measure")
                })?;
            self.measures[index].base_loinc = Some(base);
        }
        if self.measures.is_empty() {
            return Err(format!("{MEASURES_FILE}: no measures"));
        }
        Ok(())
    }

    fn load_units(&mut self, text: &str) -> Result<(), String> {
        for row in parse_tsv(UNITS_FILE, text, &UNIT_COLUMNS)? {
            let at = |col: usize| row.at(col);
            let f = &row.fields;
            let number = |col: usize| -> Result<u32, String> {
                f[col]
                    .parse()
                    .map_err(|_| format!("{}: {:?} is not a number", at(col), f[col]))
            };
            let (code, partition, term) = (number(0)?, number(1)?, number(2)?);
            if partition != MDC_PARTITION_DIM {
                return Err(format!(
                    "{}: units are in partition 4 (DIM), not {partition}",
                    at(1)
                ));
            }
            if term >= 1 << 16 || code != (partition << 16) + term {
                return Err(format!("{}: {code} is not 4 * 65536 + {term}", at(0)));
            }
            let refid = f[3];
            if !refid.starts_with("MDC_DIM_") || !is_refid(refid) {
                return Err(format!("{}: {refid:?} is not an MDC_DIM_ REFID", at(3)));
            }
            if !is_plausible_ucum(f[4]) {
                return Err(format!(
                    "{}: {:?} is not a plausible UCUM unit",
                    at(4),
                    f[4]
                ));
            }
            let display = required(f[5], || at(5))?;
            required(f[6], || at(6))?;
            let index = self.units.len();
            insert_unique(&mut self.unit_by_code, f[0].to_string(), index, || {
                format!("{}: duplicate code", at(0))
            })?;
            insert_unique(&mut self.unit_by_refid, refid.to_string(), index, || {
                format!("{}: duplicate REFID", at(3))
            })?;
            self.ucum_display
                .entry(f[4].to_string())
                .or_insert_with(|| display.clone());
            self.units.push(MdcUnit {
                code: f[0].to_string(),
                refid: refid.to_string(),
                ucum: f[4].to_string(),
                display,
            });
        }
        if self.units.is_empty() {
            return Err(format!("{UNITS_FILE}: no units"));
        }
        Ok(())
    }

    fn load_aliases(&mut self, text: &str) -> Result<(), String> {
        for row in parse_tsv(ALIASES_FILE, text, &ALIAS_COLUMNS)? {
            let at = |col: usize| row.at(col);
            let f = &row.fields;
            let alias = required(f[0], || at(0))?;
            if !is_plausible_ucum(f[1]) {
                return Err(format!(
                    "{}: {:?} is not a plausible UCUM unit",
                    at(1),
                    f[1]
                ));
            }
            let display = required(f[2], || at(2))?;
            if self
                .aliases
                .insert(alias.clone(), (f[1].to_string(), display.clone()))
                .is_some()
            {
                return Err(format!("{}: duplicate alias {alias:?}", at(0)));
            }
            self.ucum_display.entry(f[1].to_string()).or_insert(display);
        }
        Ok(())
    }

    /// All measures, in table order.
    pub fn measures(&self) -> &[Measure] {
        &self.measures
    }

    /// The measure with our own key.
    pub fn by_key(&self, key: &str) -> Option<&Measure> {
        self.by_key.get(key).map(|&i| &self.measures[i])
    }

    /// One OBX-3 triplet as sent (identifier, coding-system name; call again with OBX-3.4/3.6 for the
    /// alternate triplet): the measure it denotes, found by LOINC code (`LN`), MDC numeric code or
    /// REFID (`MDC`), or our own key ([`HOLTER_V2_NAME`]). The system name is compared without regard
    /// to case and surrounding blanks; the code is matched exactly. An empty or unknown system name
    /// finds nothing: a code is never interpreted without knowing its system.
    pub fn measure(&self, code: &str, system_name: &str) -> Option<&Measure> {
        let code = code.trim();
        if code.is_empty() {
            return None;
        }
        let index = match normalise_system(system_name).as_str() {
            "LN" => self.by_loinc.get(code),
            "MDC" if code.bytes().all(|b| b.is_ascii_digit()) => self.by_mdc_code.get(code),
            "MDC" => self.by_mdc_refid.get(code),
            HOLTER_V2_NAME => self.by_key.get(code),
            _ => None,
        }?;
        Some(&self.measures[*index])
    }

    /// A whole OBX-3 (CWE): identifier, text and system of the primary and, if sent, the alternate
    /// triplet. For MDC the text (OBX-3.2/3.5) carries the REFID and is used too.
    ///
    /// `Ok(None)` when nothing is recognised; `Err` when the parts contradict each other (e.g. the
    /// primary is heart rate and the alternate a PVC rate, or an MDC code with another measure's
    /// REFID): such a message is rejected rather than one reading picked.
    pub fn measure_cwe(&self, triplets: &[(&str, &str, &str)]) -> Result<Option<&Measure>, String> {
        let mut found: Option<&Measure> = None;
        for &(id, text, system) in triplets {
            let mut candidates = vec![self.measure(id, system)];
            if normalise_system(system) == "MDC" && text.trim().starts_with("MDC_") {
                candidates.push(self.measure(text, system));
            }
            for m in candidates.into_iter().flatten() {
                match found {
                    Some(previous) if previous.key != m.key => {
                        return Err(format!(
                            "OBX-3 names two different measures: {} and {}",
                            previous.key, m.key
                        ));
                    }
                    _ => found = Some(m),
                }
            }
        }
        Ok(found)
    }

    /// The FHIR system URI of an HL7 v2 coding-system name (table 0396), or `None` if this server does
    /// not know it. `ISO+` and `ANS+` (v2 unit tables) have no FHIR URI and give `None`; of the local
    /// `99zzz` names only [`HOLTER_V2_NAME`] is known.
    pub fn system_uri(name: &str) -> Option<&'static str> {
        match normalise_system(name).as_str() {
            "LN" => Some(LOINC_SYSTEM),
            "MDC" => Some(MDC_SYSTEM),
            "SCT" => Some(SNOMED_SYSTEM),
            "UCUM" => Some(UCUM_SYSTEM),
            HOLTER_V2_NAME => Some(HOLTER_SYSTEM),
            _ => None,
        }
    }

    /// OBX-6 (identifier, text, coding-system name) to (UCUM code, display).
    ///
    /// - `MDC`: through `mdc-units.tsv`, by numeric code or REFID; if both identifier and text name a
    ///   known unit they must agree.
    /// - `UCUM`: the identifier as sent, if it is a plausible UCUM expression.
    /// - no system, `ISO+`, `ANS+`: the identifier (else the text) through `unit-aliases.tsv`, exact
    ///   match (`mV` is millivolt, `MV` is not mapped).
    ///
    /// `None` when the unit is unknown or contradictory: the mapper reports it unmapped.
    pub fn ucum_unit(&self, id: &str, text: &str, system_name: &str) -> Option<(String, String)> {
        let (id, text) = (id.trim(), text.trim());
        match normalise_system(system_name).as_str() {
            "MDC" => {
                let by_id = if id.bytes().all(|b| b.is_ascii_digit()) {
                    self.unit_by_code.get(id)
                } else {
                    self.unit_by_refid.get(id)
                };
                let by_text = self.unit_by_refid.get(text);
                let index = match (by_id, by_text) {
                    (Some(a), Some(b)) if a != b => return None,
                    (Some(a), _) => *a,
                    (None, Some(b)) if id.is_empty() => *b,
                    _ => return None,
                };
                let unit = &self.units[index];
                Some((unit.ucum.clone(), unit.display.clone()))
            }
            "UCUM" => {
                if !is_plausible_ucum(id) {
                    return None;
                }
                let display = self
                    .ucum_display
                    .get(id)
                    .cloned()
                    .or_else(|| (!text.is_empty()).then(|| text.to_string()))
                    .unwrap_or_else(|| id.to_string());
                Some((id.to_string(), display))
            }
            "" | "ISO+" | "ANS+" => {
                let alias = if id.is_empty() { text } else { id };
                self.aliases.get(alias).cloned()
            }
            _ => None,
        }
    }
}

struct Row<'a> {
    file: &'a str,
    columns: &'a [&'a str],
    line: usize,
    fields: Vec<&'a str>,
}

impl Row<'_> {
    /// Where a field is, for error messages: `file line N column NAME`.
    fn at(&self, col: usize) -> String {
        format!(
            "{} line {} column {}",
            self.file, self.line, self.columns[col]
        )
    }
}

/// Tab-separated rows after a header that must equal `columns`. Blank lines and lines starting with
/// `#` are skipped; every other row must have exactly the header's number of fields.
fn parse_tsv<'a>(
    file: &'a str,
    text: &'a str,
    columns: &'a [&'a str],
) -> Result<Vec<Row<'a>>, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
    let (header_line, header) = lines.next().ok_or_else(|| format!("{file}: empty"))?;
    let header: Vec<&str> = header.split('\t').collect();
    if header != columns {
        return Err(format!(
            "{file} line {header_line}: header is {header:?}, expected {columns:?}"
        ));
    }
    let mut rows = Vec::new();
    for (line, l) in lines {
        let fields: Vec<&str> = l.split('\t').map(str::trim).collect();
        if fields.len() != columns.len() {
            return Err(format!(
                "{file} line {line}: {} fields, expected {}",
                fields.len(),
                columns.len()
            ));
        }
        rows.push(Row {
            file,
            columns,
            line,
            fields,
        });
    }
    Ok(rows)
}

fn required(value: &str, at: impl Fn() -> String) -> Result<String, String> {
    if value.is_empty() {
        Err(format!("{}: must not be empty", at()))
    } else {
        Ok(value.to_string())
    }
}

fn insert_unique(
    map: &mut HashMap<String, usize>,
    key: String,
    index: usize,
    err: impl Fn() -> String,
) -> Result<(), String> {
    if map.insert(key, index).is_some() {
        Err(err())
    } else {
        Ok(())
    }
}

fn normalise_system(name: &str) -> String {
    name.trim().to_ascii_uppercase()
}

fn is_kebab_key(key: &str) -> bool {
    !key.is_empty()
        && key.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

fn is_refid(refid: &str) -> bool {
    refid
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// `NNNN-C` with LOINC's mod-10 check digit (from the right, every other digit doubled, digit sums
/// added; the check digit brings the total to a multiple of ten).
pub fn is_valid_loinc(code: &str) -> bool {
    let Some((number, check)) = code.split_once('-') else {
        return false;
    };
    if number.is_empty()
        || number.len() > 7
        || check.len() != 1
        || !number
            .bytes()
            .chain(check.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return false;
    }
    let sum: u32 = number
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let doubled = d * 2;
                doubled / 10 + doubled % 10
            } else {
                d
            }
        })
        .sum();
    (10 - sum % 10) % 10 == u32::from(check.as_bytes()[0] - b'0')
}

/// A cheap plausibility check of a UCUM expression (case-sensitive symbols, `.` and `/` operators,
/// exponents, `[..]` atoms, `{..}` annotations), not a full UCUM parser: it rejects blanks, non-ASCII,
/// unbalanced brackets and dangling operators, which is what senders get wrong in practice.
pub fn is_plausible_ucum(unit: &str) -> bool {
    if unit.is_empty() || unit.len() > 64 || !unit.bytes().all(|b| b.is_ascii_graphic()) {
        return false;
    }
    let bytes = unit.as_bytes();
    let mut square = 0u32;
    let mut round = 0u32;
    let mut in_annotation = false;
    let mut previous_operator = true; // a leading '/' is allowed ("/min"); a leading '.' is not
    for (i, &b) in bytes.iter().enumerate() {
        if in_annotation {
            match b {
                b'}' => in_annotation = false,
                b'{' => return false,
                _ => {}
            }
            previous_operator = false;
            continue;
        }
        match b {
            b'{' => in_annotation = true,
            b'}' => return false,
            b'[' => square += 1,
            b']' => {
                if square == 0 {
                    return false;
                }
                square -= 1;
            }
            b'(' => round += 1,
            b')' => {
                if round == 0 {
                    return false;
                }
                round -= 1;
            }
            b'.' if i == 0 || previous_operator => return false,
            b'/' if previous_operator && i != 0 => return false,
            b'.' | b'/' => {
                previous_operator = true;
                continue;
            }
            b if b.is_ascii_alphanumeric() => {}
            b'%' | b'\'' | b'*' | b'^' | b'+' | b'-' | b'_' => {}
            _ => return false,
        }
        previous_operator = false;
    }
    !in_annotation && square == 0 && round == 0 && !previous_operator
}

/// Keys the issue requires the table to hold (checked by the unit tests, and useful to the mapper's
/// own tests).
pub const REQUIRED_KEYS: [&str; 17] = [
    "heart-rate",
    "hr-mean",
    "hr-min",
    "hr-max",
    "pvc-count",
    "pvc-rate",
    "sve-count",
    "sve-rate",
    "pause-count",
    "pause-longest",
    "rr-mean",
    "hrv-sdnn",
    "hrv-rmssd",
    "st-level",
    "af-burden",
    "recording-duration",
    "analysed-duration",
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn table() -> CodeTable {
        CodeTable::load().expect("compiled-in tables parse")
    }

    #[test]
    fn tables_load_and_hold_the_required_measures() {
        let t = table();
        for key in REQUIRED_KEYS {
            assert!(t.by_key(key).is_some(), "missing measure {key}");
        }
        assert!(CodeTable::shared().is_ok());
    }

    #[test]
    fn every_measure_row_is_well_formed() {
        let t = table();
        let mut seen = HashSet::new();
        for m in t.measures() {
            assert!(is_kebab_key(&m.key), "{}", m.key);
            assert!(seen.insert(m.key.clone()));
            assert!(!m.display.is_empty());
            assert!(
                m.ucum.as_deref().is_some_and(is_plausible_ucum),
                "{} has no unit",
                m.key
            );
            if let Some((code, name)) = &m.loinc {
                assert!(is_valid_loinc(code) && !name.is_empty(), "{}", m.key);
            }
            if let Some((code, refid)) = &m.mdc {
                let n: u32 = code.parse().unwrap();
                assert_eq!(n >> 16, 2, "{}", m.key);
                assert!(refid.starts_with("MDC_"));
            }
            if m.loinc_period_hours.is_some() {
                assert!(m.loinc.is_some());
            }
            // The vital-signs measures are the heart-rate family and carry 8867-4 one way or another.
            if m.category == Category::VitalSigns {
                let codes: Vec<String> =
                    m.codings(Some(24.0)).into_iter().map(|c| c.code).collect();
                assert!(codes.iter().any(|c| c == "8867-4"), "{}", m.key);
            }
        }
        // Every row of the file became a measure.
        let rows = MEASURES_TSV
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .count();
        assert_eq!(rows - 1, t.measures().len());
    }

    #[test]
    fn every_unit_row_is_well_formed() {
        let t = table();
        let rows = UNITS_TSV
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .count();
        assert_eq!(rows - 1, t.units.len());
        for u in &t.units {
            let code: u32 = u.code.parse().unwrap();
            assert_eq!(code >> 16, 4, "{}", u.refid);
            assert!(is_plausible_ucum(&u.ucum), "{}", u.refid);
        }
    }

    #[test]
    fn known_codes_are_where_the_standards_put_them() {
        let t = table();
        let hr = t.by_key("heart-rate").unwrap();
        assert_eq!(hr.mdc, Some(("147842".into(), "MDC_ECG_HEART_RATE".into())));
        assert_eq!(147842, 2 * 65536 + 16770);
        assert_eq!(
            t.by_key("rr-interval").unwrap().mdc.as_ref().unwrap().0,
            (2 * 65536 + 16168).to_string()
        );
        assert_eq!(
            t.by_key("hr-mean").unwrap().loinc.as_ref().unwrap().0,
            "41924-2"
        );
        assert_eq!(
            t.by_key("hr-min").unwrap().loinc.as_ref().unwrap().0,
            "8883-1"
        );
        assert_eq!(
            t.by_key("hr-max").unwrap().loinc.as_ref().unwrap().0,
            "8873-2"
        );
        assert_eq!(
            t.by_key("heart-rate").unwrap().category,
            Category::VitalSigns
        );
        assert_eq!(t.by_key("pvc-count").unwrap().category, Category::Procedure);
        assert_eq!(t.by_key("af-burden").unwrap().ucum.as_deref(), Some("%"));
        assert_eq!(
            t.ucum_unit("264864", "MDC_DIM_BEAT_PER_MIN", "MDC"),
            Some(("/min".into(), "beats per minute".into()))
        );
        assert_eq!(t.ucum_unit("264338", "", "MDC").unwrap().0, "ms");
        assert_eq!(
            t.ucum_unit("266418", "MDC_DIM_MILLI_VOLT", "MDC")
                .unwrap()
                .0,
            "mV"
        );
        assert_eq!(t.ucum_unit("266419", "", "MDC").unwrap().0, "uV");
        assert_eq!(
            t.ucum_unit("262688", "MDC_DIM_PERCENT", "MDC").unwrap().0,
            "%"
        );
    }

    #[test]
    fn measure_lookup_by_each_system() {
        let t = table();
        assert_eq!(t.measure("8867-4", "LN").unwrap().key, "heart-rate");
        assert_eq!(t.measure("41924-2", " ln ").unwrap().key, "hr-mean");
        assert_eq!(t.measure("147842", "MDC").unwrap().key, "heart-rate");
        assert_eq!(
            t.measure("MDC_ECG_HEART_RATE", "MDC").unwrap().key,
            "heart-rate"
        );
        assert_eq!(t.measure("148066", "MDC").unwrap().key, "pvc-rate");
        assert_eq!(t.measure("pvc-count", "99HOLTER").unwrap().key, "pvc-count");
        assert_eq!(t.measure("pvc-count", "99holter").unwrap().key, "pvc-count");
        // No system, unknown system, wrong system, unknown code: nothing.
        assert!(t.measure("8867-4", "").is_none());
        assert!(t.measure("8867-4", "L").is_none());
        assert!(t.measure("147842", "LN").is_none());
        assert!(
            t.measure("148065", "MDC").is_none(),
            "unverified MDC_ECG_V_P_C_CNT is not mapped"
        );
        assert!(t.measure("", "LN").is_none());
        assert!(
            t.measure("PVC-COUNT", "99HOLTER").is_none(),
            "keys are case-sensitive"
        );
        // base_loinc is not a lookup key: 8867-4 stays heart-rate.
        assert_eq!(
            t.by_key("hr-max").unwrap().base_loinc.as_ref().unwrap().0,
            "8867-4"
        );
    }

    #[test]
    fn measure_cwe_uses_both_triplets_and_rejects_contradictions() {
        let t = table();
        let m = t
            .measure_cwe(&[
                ("147842", "MDC_ECG_HEART_RATE", "MDC"),
                ("8867-4", "Heart rate", "LN"),
            ])
            .unwrap();
        assert_eq!(m.unwrap().key, "heart-rate");
        // Unknown primary, known alternate.
        let m = t
            .measure_cwe(&[("X1", "local", "99ACME"), ("hr-max", "", "99HOLTER")])
            .unwrap();
        assert_eq!(m.unwrap().key, "hr-max");
        // REFID in the text only.
        let m = t.measure_cwe(&[("", "MDC_ECG_V_P_C_RATE", "MDC")]).unwrap();
        assert_eq!(m.unwrap().key, "pvc-rate");
        assert!(
            t.measure_cwe(&[("147842", "MDC_ECG_V_P_C_RATE", "MDC")])
                .is_err()
        );
        assert!(
            t.measure_cwe(&[("8867-4", "", "LN"), ("pvc-rate", "", "99HOLTER")])
                .is_err()
        );
        assert_eq!(t.measure_cwe(&[("1-8", "x", "LN")]).unwrap(), None);
    }

    #[test]
    fn codings_respect_the_loinc_period() {
        let t = table();
        let mean = t.by_key("hr-mean").unwrap();
        let systems = |cs: Vec<Coding>| {
            cs.into_iter()
                .map(|c| (c.system, c.code))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            systems(mean.codings(Some(23.6))),
            vec![
                (LOINC_SYSTEM, "41924-2".to_string()),
                (LOINC_SYSTEM, "8867-4".to_string()),
                (HOLTER_SYSTEM, "hr-mean".to_string())
            ]
        );
        assert_eq!(
            systems(mean.codings(Some(48.0))),
            vec![
                (LOINC_SYSTEM, "8867-4".to_string()),
                (HOLTER_SYSTEM, "hr-mean".to_string())
            ]
        );
        assert_eq!(mean.codings(None).len(), 2);
        assert_eq!(mean.codings(Some(f64::NAN)).len(), 2);
        let hr = t.by_key("heart-rate").unwrap();
        assert_eq!(
            systems(hr.codings(None)),
            vec![
                (LOINC_SYSTEM, "8867-4".to_string()),
                (MDC_SYSTEM, "147842".to_string()),
                (HOLTER_SYSTEM, "heart-rate".to_string())
            ]
        );
        let own = t.by_key("af-burden").unwrap().codings(None);
        assert_eq!(own.len(), 1);
        assert_eq!(own[0].system, HOLTER_SYSTEM);
    }

    #[test]
    fn system_uris() {
        assert_eq!(CodeTable::system_uri("LN"), Some(LOINC_SYSTEM));
        assert_eq!(CodeTable::system_uri("mdc"), Some(MDC_SYSTEM));
        assert_eq!(CodeTable::system_uri("SCT"), Some(SNOMED_SYSTEM));
        assert_eq!(CodeTable::system_uri("UCUM"), Some(UCUM_SYSTEM));
        assert_eq!(CodeTable::system_uri("99HOLTER"), Some(HOLTER_SYSTEM));
        assert_eq!(CodeTable::system_uri("ISO+"), None);
        assert_eq!(CodeTable::system_uri("ANS+"), None);
        assert_eq!(CodeTable::system_uri("99ACME"), None);
        assert_eq!(CodeTable::system_uri(""), None);
    }

    #[test]
    fn units() {
        let t = table();
        // MDC by REFID alone, contradictory MDC, unknown MDC.
        assert_eq!(t.ucum_unit("MDC_DIM_MILLI_SEC", "", "MDC").unwrap().0, "ms");
        assert_eq!(t.ucum_unit("", "MDC_DIM_SEC", "MDC").unwrap().0, "s");
        assert_eq!(t.ucum_unit("264864", "MDC_DIM_MILLI_SEC", "MDC"), None);
        assert_eq!(t.ucum_unit("999999", "", "MDC"), None);
        assert_eq!(
            t.ucum_unit("999999", "MDC_DIM_SEC", "MDC"),
            None,
            "an unknown code is not rescued by its text"
        );
        // UCUM as sent.
        assert_eq!(
            t.ucum_unit("/min", "", "UCUM"),
            Some(("/min".into(), "per minute".into()))
        );
        assert_eq!(
            t.ucum_unit("mm[Hg]", "mmHg", "UCUM"),
            Some(("mm[Hg]".into(), "mmHg".into()))
        );
        assert_eq!(t.ucum_unit("beats per min", "", "UCUM"), None);
        assert_eq!(t.ucum_unit("ms/", "", "UCUM"), None);
        // v2 text units.
        assert_eq!(
            t.ucum_unit("bpm", "", ""),
            Some(("/min".into(), "beats per minute".into()))
        );
        assert_eq!(
            t.ucum_unit("", "ms", ""),
            Some(("ms".into(), "millisecond".into()))
        );
        assert_eq!(t.ucum_unit("%", "", "ISO+").unwrap().0, "%");
        assert_eq!(t.ucum_unit("mV", "", "ANS+").unwrap().0, "mV");
        assert_eq!(t.ucum_unit("µV", "", "").unwrap().0, "uV");
        assert_eq!(t.ucum_unit("MV", "", ""), None, "megavolt is not millivolt");
        assert_eq!(t.ucum_unit("furlongs", "", ""), None);
        assert_eq!(
            t.ucum_unit("bpm", "", "99ACME"),
            None,
            "unknown unit systems are not guessed"
        );
    }

    #[test]
    fn ucum_plausibility() {
        for ok in [
            "/min",
            "ms",
            "%",
            "mV",
            "uV",
            "{beats}",
            "1",
            "mm[Hg]",
            "10*3/uL",
            "m2",
            "kg/m2",
            "/h",
            "{beats}/min",
        ] {
            assert!(is_plausible_ucum(ok), "{ok}");
        }
        for bad in [
            "",
            " ms",
            "beats per min",
            "ms/",
            ".ms",
            "{beats",
            "beats}",
            "mm[Hg",
            "µV",
            "m//s",
            "a{b{c}}",
        ] {
            assert!(!is_plausible_ucum(bad), "{bad}");
        }
    }

    #[test]
    fn loinc_check_digits() {
        for ok in ["8867-4", "41924-2", "8883-1", "8873-2", "103205-1"] {
            assert!(is_valid_loinc(ok), "{ok}");
        }
        for bad in ["8867-5", "8867", "-4", "8867-44", "88a7-4", ""] {
            assert!(!is_valid_loinc(bad), "{bad}");
        }
    }

    #[test]
    fn malformed_tables_are_errors_not_panics() {
        let header = MEASURE_COLUMNS.join("\t");
        let units = UNITS_TSV;
        let aliases = ALIASES_TSV;
        let row = |fields: [&str; 12]| format!("{header}\n{}\n", fields.join("\t"));
        let own = "fhirvault own code (https://fhirvault.example/CodeSystem/holter)";
        let cases = [
            (String::new(), "empty"),
            ("key\tdisplay\n".to_string(), "header"),
            (format!("{header}\nonly\ttwo\n"), "fields"),
            (
                row([
                    "Bad_Key",
                    "x",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "ms",
                    "procedure",
                    own,
                    "",
                ]),
                "kebab",
            ),
            (
                row([
                    "a",
                    "x",
                    "8867-5",
                    "Heart rate",
                    "",
                    "",
                    "",
                    "",
                    "ms",
                    "procedure",
                    own,
                    "",
                ]),
                "check digit",
            ),
            (
                row([
                    "a",
                    "x",
                    "8867-4",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "ms",
                    "procedure",
                    own,
                    "",
                ]),
                "long common name",
            ),
            (
                row([
                    "a",
                    "x",
                    "",
                    "",
                    "",
                    "",
                    "262656",
                    "MDC_DIM_DIMLESS",
                    "ms",
                    "procedure",
                    own,
                    "",
                ]),
                "partition",
            ),
            (
                row([
                    "a",
                    "x",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "m s",
                    "procedure",
                    own,
                    "",
                ]),
                "UCUM",
            ),
            (
                row(["a", "x", "", "", "", "", "", "", "ms", "lab", own, ""]),
                "vital-signs",
            ),
            (
                row([
                    "a",
                    "x",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "ms",
                    "procedure",
                    "somewhere",
                    "",
                ]),
                "must say",
            ),
            (
                row([
                    "a",
                    "x",
                    "",
                    "",
                    "24",
                    "",
                    "",
                    "",
                    "ms",
                    "procedure",
                    own,
                    "",
                ]),
                "period",
            ),
            (
                row([
                    "a",
                    "x",
                    "",
                    "",
                    "",
                    "8867-4",
                    "",
                    "",
                    "ms",
                    "procedure",
                    own,
                    "",
                ]),
                "another measure",
            ),
            (
                format!(
                    "{header}\na\tx\t\t\t\t\t\t\tms\tprocedure\t{own}\t\na\ty\t\t\t\t\t\t\tms\tprocedure\t{own}\t\n"
                ),
                "duplicate key",
            ),
        ];
        for (text, expected) in cases {
            let err = CodeTable::from_sources(&text, units, aliases).expect_err(expected);
            assert!(err.contains(expected), "{expected:?} not in {err:?}");
            assert!(err.contains(MEASURES_FILE), "{err}");
        }
        let unit_header = UNIT_COLUMNS.join("\t");
        let err = CodeTable::from_sources(
            MEASURES_TSV,
            &format!("{unit_header}\n264865\t4\t2720\tMDC_DIM_BEAT_PER_MIN\t/min\tbpm\tx\n"),
            aliases,
        )
        .unwrap_err();
        assert!(err.contains("4 * 65536 + 2720"), "{err}");
        let err = CodeTable::from_sources(
            MEASURES_TSV,
            units,
            "alias\tucum\tdisplay\tnote\nbpm\t/min\tx\t\nbpm\t/min\tx\t\n",
        )
        .unwrap_err();
        assert!(err.contains("duplicate alias"), "{err}");
    }
}
