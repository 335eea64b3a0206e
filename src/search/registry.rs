//! The search-parameter registry, built at start-up from the specification's own data.
//!
//! Like Blaze's `search_param_registry.clj`, we do not hand-type which parameters exist: the
//! official R4 `SearchParameter` Bundle (`fhir-resources/search-parameters.json`) and the Patient
//! `CompartmentDefinition` are loaded once into lookup tables — by url, by (resource type, code),
//! and by resource type for the Patient compartment. Adding a project-specific parameter is then a
//! matter of data, not code.
//!
//! Each spec expression is a union over the parameter's bases (`Patient.name | Person.name`); it
//! is split per base type here, parsed once by [`crate::search::fhirpath`], and kept compiled so
//! extraction never re-parses.
//!
//! Parameters we cannot index are logged at `debug` and skipped, as Blaze does: type `special`
//! (`near`, `_query`), expressions that do not parse, and composites whose components are
//! unknown. Parameters without an expression (`_text`, `_content`) are kept, so the search layer
//! can recognise them, but [`SearchParam::is_indexed`] is false for them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use tracing::debug;

use crate::search::fhirpath::Expression;
use crate::search::union_params::{Unions, unions_of};

/// The R4 search parameter types (`SearchParameter.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamType {
    Number,
    Date,
    String,
    Token,
    Reference,
    Composite,
    Quantity,
    Uri,
    Special,
}

impl ParamType {
    /// The type for a `SearchParameter.type` code.
    pub fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "number" => ParamType::Number,
            "date" => ParamType::Date,
            "string" => ParamType::String,
            "token" => ParamType::Token,
            "reference" => ParamType::Reference,
            "composite" => ParamType::Composite,
            "quantity" => ParamType::Quantity,
            "uri" => ParamType::Uri,
            "special" => ParamType::Special,
            _ => return None,
        })
    }

    pub fn code(self) -> &'static str {
        match self {
            ParamType::Number => "number",
            ParamType::Date => "date",
            ParamType::String => "string",
            ParamType::Token => "token",
            ParamType::Reference => "reference",
            ParamType::Composite => "composite",
            ParamType::Quantity => "quantity",
            ParamType::Uri => "uri",
            ParamType::Special => "special",
        }
    }

    /// The modifiers R4 allows for a type when the SearchParameter does not list its own
    /// (the R4 bundle never does). Reference's `:[type]` modifiers come from `targets`.
    fn default_modifiers(self) -> &'static [&'static str] {
        match self {
            ParamType::String => &["missing", "exact", "contains"],
            ParamType::Token => &[
                "missing", "text", "not", "above", "below", "in", "not-in", "of-type",
            ],
            ParamType::Reference => &["missing", "type", "identifier", "above", "below"],
            ParamType::Uri => &["missing", "above", "below"],
            ParamType::Number | ParamType::Date | ParamType::Quantity | ParamType::Composite => {
                &["missing"]
            }
            ParamType::Special => &[],
        }
    }
}

/// One part of a composite parameter.
#[derive(Debug, Clone)]
pub struct Component {
    /// Url of the component's own SearchParameter.
    pub definition: String,
    /// Relative to each node of the composite's expression (`value.as(Quantity)`).
    pub expression: String,
    pub compiled: Expression,
    /// The type of the definition, which decides how the component's values are indexed.
    pub kind: ParamType,
}

/// A search parameter as the server uses it.
#[derive(Debug, Clone)]
pub struct SearchParam {
    pub url: String,
    pub code: String,
    pub kind: ParamType,
    pub base: Vec<String>,
    /// Per base resource type, the part of the spec expression that applies to it.
    pub expressions: HashMap<String, String>,
    /// The same expressions, parsed.
    pub compiled: HashMap<String, Expression>,
    pub targets: Vec<String>,
    pub modifiers: Vec<String>,
    pub comparators: Vec<String>,
    pub components: Vec<Component>,
    pub multiple_or: bool,
    pub multiple_and: bool,
}

impl SearchParam {
    /// The compiled expression for a resource type; Resource-level parameters have one for all.
    pub fn expression_for(&self, resource_type: &str) -> Option<&Expression> {
        self.compiled
            .get(resource_type)
            .or_else(|| self.compiled.get("Resource"))
            .or_else(|| self.compiled.get("DomainResource"))
    }

    /// The expression's text for `resource_type`, like [`SearchParam::expression_for`].
    pub fn expression_text_for(&self, resource_type: &str) -> Option<&str> {
        self.expressions
            .get(resource_type)
            .or_else(|| self.expressions.get("Resource"))
            .or_else(|| self.expressions.get("DomainResource"))
            .map(String::as_str)
    }

    /// Whether extraction produces index rows for this parameter (`_text`, `_content` have no
    /// expression and need a full-text index instead).
    pub fn is_indexed(&self) -> bool {
        !self.compiled.is_empty() && self.kind != ParamType::Special
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Parameters that tie a resource of this type to a Patient but that the R4 compartment
/// definition leaves out. A Holter recorder assigned to a patient (`Device.patient`) is that
/// patient's data all the same (for access rules, consent and the compartment column).
const EXTRA_PATIENT_LINKS: &[(&str, &[&str])] = &[("Device", &["patient"])];

/// The compartment whose membership we track: patients (the sharding key, see DESIGN.md).
const PATIENT: &str = "Patient";
/// Stands for "the compartment's own resource" among a type's compartment params.
pub const COMPARTMENT_SELF: &str = "{def}";

/// All search parameters, indexed for the lookups search, extraction and the
/// CapabilityStatement need.
#[derive(Debug, Clone, Default)]
pub struct SearchParamRegistry {
    params: Vec<SearchParam>,
    by_url: HashMap<String, usize>,
    /// Type-specific parameters: type → code → index into `params`.
    by_type: HashMap<String, BTreeMap<String, usize>>,
    /// Parameters on `Resource`/`DomainResource`, valid for every type: code → index.
    common: BTreeMap<String, usize>,
    patient_compartment: HashMap<String, Vec<String>>,
    /// Datatypes behind each token and string parameter, for the PHI policy (filled at start-up
    /// from the schema, see [`crate::search::sensitivity`]).
    pub datatypes: crate::search::sensitivity::ParamDatatypes,
    /// The code systems that token parameters over `code` elements imply (filled at start-up
    /// from the definitions' bindings, see [`crate::search::code_systems`]).
    pub implied_systems: crate::search::code_systems::ImpliedSystems,
    /// Codings whose displays the server knows from its own code tables (filled at start-up,
    /// see [`crate::search::known_displays`]): `:text` finds their words by the codes.
    pub known_displays: crate::search::known_displays::KnownDisplays,
    /// Parameters answered from the rows of others ([`crate::search::union_params`]).
    unions: Unions,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawParam {
    url: String,
    code: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    base: Vec<String>,
    expression: Option<String>,
    #[serde(default)]
    target: Vec<String>,
    #[serde(default)]
    modifier: Vec<String>,
    #[serde(default)]
    comparator: Vec<String>,
    #[serde(default)]
    component: Vec<RawComponent>,
    multiple_or: Option<bool>,
    multiple_and: Option<bool>,
}

#[derive(Deserialize)]
struct RawComponent {
    definition: String,
    expression: String,
}

#[derive(Deserialize)]
struct RawCompartment {
    code: String,
    #[serde(default)]
    resource: Vec<RawCompartmentResource>,
}

#[derive(Deserialize)]
struct RawCompartmentResource {
    code: String,
    #[serde(default)]
    param: Vec<String>,
}

fn read_json(path: &Path) -> Result<Value, RegistryError> {
    let bytes = std::fs::read(path).map_err(|source| RegistryError::Io {
        path: path.into(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| RegistryError::Json {
        path: path.into(),
        source,
    })
}

impl SearchParamRegistry {
    /// Loads the SearchParameter Bundle and the Patient CompartmentDefinition.
    pub fn load(search_params_json: &Path, compartment_json: &Path) -> Result<Self, RegistryError> {
        Self::from_json(read_json(search_params_json)?, read_json(compartment_json)?)
    }

    /// Builds the registry from already parsed JSON (a Bundle of SearchParameter and a
    /// CompartmentDefinition).
    pub fn from_json(search_params: Value, compartment: Value) -> Result<Self, RegistryError> {
        let Value::Object(mut bundle) = search_params else {
            return Err(RegistryError::Invalid(
                "search parameters: expected a Bundle".into(),
            ));
        };
        let Some(Value::Array(entries)) = bundle.remove("entry") else {
            return Err(RegistryError::Invalid(
                "search parameters: Bundle has no entry".into(),
            ));
        };
        let raw: Vec<RawParam> = entries
            .into_iter()
            .filter_map(|mut entry| {
                let resource = entry.get_mut("resource").map(Value::take)?;
                match serde_json::from_value::<RawParam>(resource) {
                    Ok(raw) => Some(raw),
                    Err(e) => {
                        debug!(error = %e, "skipping malformed SearchParameter entry");
                        None
                    }
                }
            })
            .collect();

        let mut registry = SearchParamRegistry::default();
        // Composites name their components by url, so the kinds of all params are known first.
        let kinds: HashMap<&str, ParamType> = raw
            .iter()
            .filter_map(|p| ParamType::from_code(&p.kind).map(|k| (p.url.as_str(), k)))
            .collect();
        for p in &raw {
            if let Some(param) = build_param(p, &kinds) {
                registry.insert_param(param);
            }
        }
        registry.find_unions();

        let compartment: RawCompartment = serde_json::from_value(compartment)
            .map_err(|e| RegistryError::Invalid(format!("compartment definition: {e}")))?;
        if compartment.code != PATIENT {
            return Err(RegistryError::Invalid(format!(
                "expected the Patient compartment definition, got {}",
                compartment.code
            )));
        }
        for r in compartment.resource {
            let mut params = r.param;
            if r.code == PATIENT {
                params.insert(0, COMPARTMENT_SELF.to_owned());
            }
            if !params.is_empty() {
                registry.patient_compartment.insert(r.code, params);
            }
        }
        registry
            .patient_compartment
            .entry(PATIENT.to_owned())
            .or_insert_with(|| vec![COMPARTMENT_SELF.to_owned()]);
        Ok(registry)
    }

    /// Adds a parameter, replacing one with the same url (e.g. a project-specific override).
    pub fn insert(&mut self, param: SearchParam) {
        self.insert_param(param);
        self.find_unions();
    }

    fn insert_param(&mut self, param: SearchParam) {
        let index = match self.by_url.get(&param.url) {
            Some(&i) => {
                self.params[i] = param;
                i
            }
            None => {
                self.params.push(param);
                self.params.len() - 1
            }
        };
        let param = &self.params[index];
        self.by_url.insert(param.url.clone(), index);
        for base in &param.base {
            if base == "Resource" || base == "DomainResource" {
                self.common.insert(param.code.clone(), index);
            } else {
                self.by_type
                    .entry(base.clone())
                    .or_default()
                    .insert(param.code.clone(), index);
            }
        }
    }

    /// (type, code) lookup, including the Resource-level parameters for every type. The type is
    /// not checked against the list of resource types: that is the job of the path extractor.
    pub fn get(&self, resource_type: &str, code: &str) -> Option<&SearchParam> {
        self.by_type
            .get(resource_type)
            .and_then(|codes| codes.get(code))
            .or_else(|| self.common.get(code))
            .map(|&i| &self.params[i])
    }

    pub fn by_url(&self, url: &str) -> Option<&SearchParam> {
        self.by_url.get(url).map(|&i| &self.params[i])
    }

    /// All parameters applicable to a type, sorted by code (for the CapabilityStatement).
    pub fn params_for(&self, resource_type: &str) -> Vec<&SearchParam> {
        let mut codes: BTreeMap<&str, usize> = self
            .common
            .iter()
            .map(|(code, &i)| (code.as_str(), i))
            .collect();
        if let Some(specific) = self.by_type.get(resource_type) {
            codes.extend(specific.iter().map(|(code, &i)| (code.as_str(), i)));
        }
        codes.into_values().map(|i| &self.params[i]).collect()
    }

    /// Resource types that have parameters of their own, sorted.
    pub fn resource_types(&self) -> Vec<&str> {
        let mut types: Vec<&str> = self.by_type.keys().map(String::as_str).collect();
        types.sort_unstable();
        types
    }

    /// The param codes that put a resource of this type into a Patient's compartment, e.g.
    /// Observation → `["subject", "performer"]`. For Patient the list starts with
    /// [`COMPARTMENT_SELF`]: a patient is in its own compartment. Empty for types that are
    /// never in one (Organization, Device, …).
    pub fn patient_compartment_params(&self, resource_type: &str) -> &[String] {
        self.patient_compartment
            .get(resource_type)
            .map_or(&[], Vec::as_slice)
    }

    /// The parameters that put a resource of `resource_type` with a Patient: the Patient
    /// compartment definition's, and the links it leaves out ([`EXTRA_PATIENT_LINKS`]).
    pub fn patient_links(&self, resource_type: &str) -> Vec<String> {
        let mut params = self.patient_compartment_params(resource_type).to_vec();
        for (_, extra) in EXTRA_PATIENT_LINKS
            .iter()
            .filter(|(t, _)| *t == resource_type)
        {
            params.extend(extra.iter().map(|p| p.to_string()));
        }
        params
    }

    /// The parameter codes whose index rows hold the values of `code` on `resource_type`: its
    /// members if it is a union of other parameters ([`crate::search::union_params`]), which
    /// are stored instead of it, else the code itself.
    pub fn stored_codes<'a>(&'a self, resource_type: &str, code: &'a str) -> Vec<&'a str> {
        match self
            .unions
            .get(&(resource_type.to_string(), code.to_string()))
        {
            Some(members) => members.iter().map(String::as_str).collect(),
            None => vec![code],
        }
    }

    /// Whether `code` on `resource_type` is answered from other parameters' rows (and so has
    /// none of its own).
    pub fn is_union(&self, resource_type: &str, code: &str) -> bool {
        self.unions
            .contains_key(&(resource_type.to_string(), code.to_string()))
    }

    fn find_unions(&mut self) {
        let mut unions = Unions::new();
        for resource_type in self.resource_types() {
            unions.extend(unions_of(resource_type, self.params_for(resource_type)));
        }
        self.unions = unions;
    }

    /// All parameters, in load order.
    pub fn iter(&self) -> impl Iterator<Item = &SearchParam> {
        self.params.iter()
    }
}

fn build_param(p: &RawParam, kinds: &HashMap<&str, ParamType>) -> Option<SearchParam> {
    let Some(kind) = ParamType::from_code(&p.kind) else {
        debug!(url = %p.url, kind = %p.kind, "skipping search parameter of unknown type");
        return None;
    };
    if kind == ParamType::Special {
        debug!(url = %p.url, "skipping search parameter of type special");
        return None;
    }
    let expressions = match &p.expression {
        Some(expr) => split_by_base(expr, &p.base),
        None => HashMap::new(),
    };
    let mut compiled = HashMap::with_capacity(expressions.len());
    for (base, expr) in &expressions {
        match Expression::parse(expr) {
            Ok(e) => {
                if let Err(err) = e.check_supported() {
                    // Kept: evaluation will fail and be logged per resource, which is what
                    // an operator needs to see if such a parameter is ever added.
                    debug!(url = %p.url, %base, %err, "search parameter uses unsupported FHIRPath");
                }
                compiled.insert(base.clone(), e);
            }
            Err(err) => {
                debug!(url = %p.url, %base, %err, "skipping unparseable search parameter");
                return None;
            }
        }
    }
    let mut components = Vec::with_capacity(p.component.len());
    for c in &p.component {
        let Some(&kind) = kinds.get(c.definition.as_str()) else {
            debug!(url = %p.url, component = %c.definition, "skipping composite: no such component");
            return None;
        };
        let compiled = match Expression::parse(&c.expression) {
            Ok(e) => e,
            Err(err) => {
                debug!(url = %p.url, %err, "skipping composite: component does not parse");
                return None;
            }
        };
        components.push(Component {
            definition: c.definition.clone(),
            expression: c.expression.clone(),
            compiled,
            kind,
        });
    }
    let modifiers = if p.modifier.is_empty() {
        kind.default_modifiers()
            .iter()
            .map(|m| (*m).to_owned())
            .collect()
    } else {
        p.modifier.clone()
    };
    Some(SearchParam {
        url: p.url.clone(),
        code: p.code.clone(),
        kind,
        base: p.base.clone(),
        expressions,
        compiled,
        targets: p.target.clone(),
        modifiers,
        comparators: p.comparator.clone(),
        components,
        multiple_or: p.multiple_or.unwrap_or(true),
        multiple_and: p.multiple_and.unwrap_or(true),
    })
}

/// Splits a spec expression into the alternatives for each base type.
///
/// The top-level `|` alternatives each start with the type they are about, possibly inside
/// parentheses (`(Observation.value as Quantity)`). Alternatives on `Resource`/`DomainResource`
/// apply to every base, and so do the few written as bare paths without a type
/// (InsurancePlan's `name | alias`), which FHIRPath evaluates against the resource anyway.
pub fn split_by_base(expression: &str, bases: &[String]) -> HashMap<String, String> {
    let alternatives = split_top_level_union(expression);
    let mut out = HashMap::new();
    for base in bases {
        let parts: Vec<&str> = alternatives
            .iter()
            .copied()
            .filter(|alt| {
                let subject = leading_type(alt);
                subject == base
                    || subject == "Resource"
                    || subject == "DomainResource"
                    || !subject.starts_with(|c: char| c.is_ascii_uppercase())
            })
            .collect();
        if parts.is_empty() {
            debug!(%base, %expression, "search parameter has no expression for one of its bases");
        } else {
            out.insert(base.clone(), parts.join(" | "));
        }
    }
    out
}

/// The alternatives of an expression's top-level `|`, ignoring `|` inside parentheses, brackets
/// and string literals.
pub(crate) fn split_top_level_union(expression: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quote, mut escaped, mut start) = (0i32, None::<char>, false, 0);
    for (i, c) in expression.char_indices() {
        if let Some(q) = quote {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                c if c == q => quote = None,
                _ => {}
            }
            continue;
        }
        match c {
            '\'' | '`' => quote = Some(c),
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            '|' if depth == 0 => {
                parts.push(expression[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(expression[start..].trim());
    parts.retain(|p| !p.is_empty());
    parts
}

/// The first identifier of an alternative, skipping opening parentheses.
fn leading_type(alternative: &str) -> &str {
    let rest = alternative.trim_start_matches(|c: char| c == '(' || c.is_whitespace());
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    &rest[..end]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// The registry from the vendored spec files, loaded once per test binary.
    pub(crate) fn r4() -> &'static SearchParamRegistry {
        static REGISTRY: OnceLock<SearchParamRegistry> = OnceLock::new();
        REGISTRY.get_or_init(|| {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fhir-resources");
            SearchParamRegistry::load(
                &dir.join("search-parameters.json"),
                &dir.join("compartmentdefinition-patient.json"),
            )
            .expect("the vendored R4 search parameters load")
        })
    }

    #[test]
    fn splits_union_expressions_per_base() {
        let bases: Vec<String> = ["Patient", "Person", "Practitioner"]
            .map(String::from)
            .into();
        let split = split_by_base(
            "Patient.telecom.where(system='phone') | Person.telecom.where(system='a|b') | (Practitioner.x as Quantity) | (Practitioner.y as Range)",
            &bases,
        );
        assert_eq!(split["Patient"], "Patient.telecom.where(system='phone')");
        assert_eq!(split["Person"], "Person.telecom.where(system='a|b')");
        assert_eq!(
            split["Practitioner"],
            "(Practitioner.x as Quantity) | (Practitioner.y as Range)"
        );
        let untyped = split_by_base("name | alias", &["InsurancePlan".to_owned()]);
        assert_eq!(untyped["InsurancePlan"], "name | alias");
        let common = split_by_base("Resource.id", &["Resource".to_owned()]);
        assert_eq!(common["Resource"], "Resource.id");
    }

    #[test]
    fn loads_r4_params_by_type_code_and_url() {
        let reg = r4();
        let name = reg.get("Patient", "name").expect("Patient.name");
        assert_eq!(name.kind, ParamType::String);
        assert_eq!(name.expressions["Patient"], "Patient.name");
        let subject = reg
            .get("Observation", "subject")
            .expect("Observation.subject");
        assert_eq!(subject.kind, ParamType::Reference);
        assert!(subject.targets.iter().any(|t| t == "Patient"));
        let patient = reg
            .get("Observation", "patient")
            .expect("Observation.patient");
        assert_eq!(
            patient.expressions["Observation"],
            "Observation.subject.where(resolve() is Patient)"
        );
        assert_eq!(
            patient.expressions.len(),
            patient.base.len(),
            "one expression per base"
        );
        let code = reg
            .by_url("http://hl7.org/fhir/SearchParameter/clinical-code")
            .expect("clinical-code");
        assert!(code.base.iter().any(|b| b == "Observation"));
        assert_eq!(reg.get("Patient", "no-such-param").map(|p| &p.code), None);
        let date = reg.get("Observation", "date").expect("date");
        assert!(date.comparators.iter().any(|c| c == "sa"));
        assert!(
            reg.get("Location", "near").is_none(),
            "special params are skipped"
        );
    }

    #[test]
    fn resource_level_params_apply_to_every_type() {
        let reg = r4();
        for ty in ["Patient", "Observation", "Binary", "Parameters"] {
            for code in [
                "_id",
                "_lastUpdated",
                "_tag",
                "_profile",
                "_security",
                "_source",
                "_text",
                "_content",
            ] {
                assert!(reg.get(ty, code).is_some(), "{ty}.{code}");
            }
        }
        let id = reg.get("Device", "_id").unwrap();
        assert_eq!(
            id.expression_for("Device").map(Expression::source),
            Some("Resource.id")
        );
        assert_eq!(
            reg.get("Device", "_lastUpdated")
                .and_then(|p| p.expression_for("Device"))
                .map(Expression::source),
            Some("Resource.meta.lastUpdated")
        );
        assert!(!reg.get("Patient", "_text").unwrap().is_indexed());
    }

    #[test]
    fn params_for_is_sorted_and_complete() {
        let reg = r4();
        let params = reg.params_for("Patient");
        let codes: Vec<&str> = params.iter().map(|p| p.code.as_str()).collect();
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        assert_eq!(codes, sorted);
        for code in [
            "_id",
            "birthdate",
            "family",
            "identifier",
            "name",
            "telecom",
            "general-practitioner",
        ] {
            assert!(codes.contains(&code), "{code}");
        }
        assert!(reg.resource_types().contains(&"Observation"));
    }

    #[test]
    fn composite_components_resolve_to_their_types() {
        let reg = r4();
        let cvq = reg
            .get("Observation", "code-value-quantity")
            .expect("code-value-quantity");
        assert_eq!(cvq.kind, ParamType::Composite);
        let kinds: Vec<ParamType> = cvq.components.iter().map(|c| c.kind).collect();
        assert_eq!(kinds, vec![ParamType::Token, ParamType::Quantity]);
        assert_eq!(cvq.components[1].expression, "value.as(Quantity)");
    }

    #[test]
    fn patient_compartment_membership() {
        let reg = r4();
        assert_eq!(
            reg.patient_compartment_params("Observation"),
            ["subject", "performer"]
        );
        assert_eq!(
            reg.patient_compartment_params("Patient"),
            [COMPARTMENT_SELF, "link"]
        );
        assert_eq!(
            reg.patient_compartment_params("Claim"),
            ["patient", "payee"]
        );
        assert!(reg.patient_compartment_params("Organization").is_empty());
        assert!(reg.patient_compartment_params("Device").is_empty());
        // Every compartment param names a real reference param of that type.
        for ty in ["Observation", "Claim", "Coverage", "Consent", "Encounter"] {
            for code in reg.patient_compartment_params(ty) {
                let p = reg.get(ty, code).unwrap_or_else(|| panic!("{ty}.{code}"));
                assert_eq!(p.kind, ParamType::Reference, "{ty}.{code}");
            }
        }
    }

    /// The compartment access rules (`Criterion::PatientLink`) and the `compartment` column both
    /// take every patient link as a way to a Patient; that is the chain `link:Patient.…` only if
    /// each can point at one.
    #[test]
    fn every_patient_link_can_point_at_a_patient() {
        let reg = r4();
        for ty in reg.resource_types() {
            for code in reg.patient_links(ty) {
                if code == COMPARTMENT_SELF {
                    continue;
                }
                let p = reg.get(ty, &code).unwrap_or_else(|| panic!("{ty}.{code}"));
                assert_eq!(p.kind, ParamType::Reference, "{ty}.{code}");
                assert!(
                    p.targets.is_empty() || p.targets.iter().any(|t| t == "Patient"),
                    "{ty}.{code} cannot point at a Patient"
                );
            }
        }
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(
            SearchParamRegistry::from_json(serde_json::json!([]), serde_json::json!({})).is_err()
        );
        let empty_bundle =
            serde_json::json!({"resourceType": "Bundle", "entry": [{"resource": {"x": 1}}]});
        let compartment = serde_json::json!({"code": "Patient", "resource": []});
        let reg = SearchParamRegistry::from_json(empty_bundle, compartment).unwrap();
        assert!(reg.params_for("Patient").is_empty());
        assert_eq!(
            reg.patient_compartment_params("Patient"),
            [COMPARTMENT_SELF]
        );
        assert!(matches!(
            SearchParamRegistry::load(Path::new("/nonexistent.json"), Path::new("/x")),
            Err(RegistryError::Io { .. })
        ));
    }
}
