//! Parsing a search query string into typed parts: result controls (`_count`, `_sort`, …) and the
//! parameter filters (ANDed parameters, each with ORed values).
//! <https://hl7.org/fhir/R4/search.html>

use super::cursor::Cursor;
use super::phi;
use super::registry::{ParamType, SearchParam, SearchParamRegistry};
use crate::error::{ApiError, ApiResult};
use crate::fhir::id::truncate;
use crate::fhir::outcome::{Issue, IssueCode, Severity};
use crate::fhir::validation::Subset;

/// One parameter of the query: all its values are ORed; separate parameters are ANDed.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamFilter {
    pub code: String,
    pub modifier: Option<String>,
    pub kind: ParamType,
    /// The raw (still escaped) values, split on unescaped commas.
    pub values: Vec<String>,
}

/// What one query parameter asks of a resource of the searched type.
#[derive(Debug, Clone, PartialEq)]
pub enum Criterion {
    /// A search parameter of the resource itself.
    Param(ParamFilter),
    /// `reference[:Type].rest`: the resource that `reference` points to matches `rest`. One
    /// branch per possible target type (all the parameter's targets that define `rest`, or the
    /// one named by `:Type`); any branch may match.
    Chain {
        reference: String,
        branches: Vec<(String, Criterion)>,
    },
    /// `_has:Source:reference:rest`: some `Source` resource whose `reference` points at this
    /// resource matches `rest`.
    Has {
        source_type: String,
        reference: String,
        inner: Box<Criterion>,
    },
    /// Any of the groups matches; each group is a list of ANDed criteria (an empty group
    /// matches everything, no groups match nothing). Never parsed from a query: access rules
    /// use it ([`Visibility`]).
    AnyOf(Vec<Vec<Criterion>>),
    /// The patient's Consents let the caller see the resource. Never parsed from a query: access
    /// rules use it ([`crate::auth::consent`]).
    Consent(crate::auth::consent::ConsentFilter),
    /// Some Patient the resource points at through one of `links` (its patient links) matches
    /// `patient`: the same as the chains `link:Patient.…` over `links`, ORed. Never parsed from
    /// a query: the clinician's access rule uses it, because the planner can answer it from the
    /// head row's compartment where that names every Patient the resource references (and
    /// `links` are all the type's patient links), instead of following each link.
    PatientLink {
        links: Vec<String>,
        patient: Box<Criterion>,
    },
}

/// Which resources of a type the caller may see. A search ANDs this to its own criteria at
/// every level — the searched type, every chain target, every `_has` source and every included
/// resource — so what a caller may not see never matches, never counts and never leaks
/// through a join. Implemented by the access-control layer ([`crate::auth`]).
pub trait Visibility: std::fmt::Debug + Send + Sync {
    fn restriction(&self, resource_type: &str) -> ApiResult<Restriction>;

    /// A key that two visibilities share only if they give the same restriction for every type
    /// (and the same [`Visibility::left_after_target`]), so that what is planned under one can be
    /// used again under the other; `None`: nothing may be reused.
    fn reuse_key(&self) -> Option<&str> {
        None
    }

    /// What is left to check of a `source_type` resource that points through `reference` at a
    /// `target_type` resource the caller may see: `None` when its whole rule (the target being
    /// visible implies nothing); otherwise the criteria the target does not imply (empty: none),
    /// so that `_has` need not check the rest again (an Observation whose subject is a visible
    /// patient is in that patient's compartment). `None` when unsure.
    fn left_after_target(
        &self,
        _source_type: &str,
        _reference: &str,
        _target_type: &str,
    ) -> Option<Vec<Criterion>> {
        None
    }
}

/// The part of a type a caller may see.
#[derive(Debug, Clone, PartialEq)]
pub enum Restriction {
    /// Every resource of the type.
    Everything,
    /// None at all.
    Nothing,
    /// Those matching every criterion.
    Where(Vec<Criterion>),
}

/// `_include` / `_revinclude`: resources to add to a page besides the matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    /// `_revinclude`: resources of `source_type` whose `param` points at a page resource.
    pub reverse: bool,
    /// `:iterate`: apply to included resources too, until nothing new turns up.
    pub iterate: bool,
    pub source_type: String,
    /// The reference parameter; `None` for `*` (every reference parameter of `source_type`).
    pub param: Option<String>,
    /// Only targets of this type (`_include=Observation:subject:Patient`).
    pub target_type: Option<String>,
}

/// The compartment a search is confined to (`Patient/123/Observation?…`): resources whose
/// `params` (from the compartment definition) point at `resource_type/id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compartment {
    pub resource_type: String,
    pub id: String,
    pub params: Vec<String>,
}

/// The `resource_type` of a system-level search (`GET [base]?…`): only the parameters every
/// resource has (`Resource`-level ones) apply, to every type or to those `_type` lists.
pub const SYSTEM: &str = "Resource";

/// Deepest nesting of chains and `_has` in one parameter. Each level is one more subquery; the
/// cap keeps a single request from asking the database for an unbounded join.
pub const MAX_CHAIN_DEPTH: usize = 4;

/// `_total`: what `Bundle.total` of a searchset holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotalMode {
    /// Not counted (a first page that holds every match still tells its size).
    None,
    /// `estimate`, and a search without `_total`: counted if the count takes no longer than
    /// `store.count_timeout_ms`, otherwise left out with a warning. This server does not guess:
    /// a total it gives is exact.
    Estimate,
    /// Always counted, within the statement time limit of a request (503 past it).
    Accurate,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub code: String,
    pub descending: bool,
}

/// A parsed search.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub resource_type: String,
    /// ANDed criteria.
    pub criteria: Vec<Criterion>,
    pub includes: Vec<Include>,
    pub compartment: Option<Compartment>,
    /// `Patient/[id]/$everything`: only resources whose patient (their compartment column) is
    /// this Patient, and the Patient itself.
    pub patient_of: Option<String>,
    /// `Patient/$export`: only resources whose patient (their compartment column) is some
    /// Patient, and the Patients themselves.
    pub patient_of_any: bool,
    /// `_type` of a system-level search: the types searched (empty: all).
    pub types: Vec<String>,
    pub count: usize,
    pub offset: usize,
    /// `_cursor`: where this page lies (from a page link); it replaces `_offset`. Opened from
    /// [`SearchRequest::cursor_token`] by the service, which holds the keys it is sealed with.
    pub cursor: Option<Cursor>,
    /// The `_cursor` parameter as sent: a sealed [`Cursor`].
    pub cursor_token: Option<String>,
    pub sort: Vec<SortKey>,
    pub total: TotalMode,
    pub summary_count: bool,
    /// `_summary=true|text|data` or `_elements`: what each match keeps.
    pub subset: Option<Subset>,
    /// The parameters that were used, in order, for the `self` link.
    pub used: Vec<(String, String)>,
    /// Parameters that were ignored (unknown or unsupported), reported as a warning.
    pub warnings: Vec<Issue>,
    /// What the caller may see; `None` for the server itself (imports, HL7 v2 ingestion) and
    /// for callers without restrictions.
    pub visibility: Option<std::sync::Arc<dyn Visibility>>,
    /// The fingerprint of a restricted caller, bound into page links ([`Cursor::owner`]).
    pub owner: Option<String>,
    /// The pseudonymous view the matches and includes are shown in, if any.
    pub view: Option<crate::auth::pseudonymise::Profile>,
}

/// Most comma-separated alternatives one parameter may have (keeps every query far below the
/// databases' bind-parameter limits).
pub const MAX_OR_VALUES: usize = 500;

/// Deepest offset a page may start at; deeper pages would make the database skip that many rows.
pub const MAX_OFFSET: usize = 100_000;

/// Parameters that shape the result rather than select resources.
const RESULT_PARAMS: &[&str] = &[
    "_count",
    "_offset",
    "_cursor",
    "_sort",
    "_total",
    "_summary",
    "_format",
    "_pretty",
    "_elements",
];

/// Whether `name` shapes a result (`_count`, `_sort`, `_include:iterate`, …) rather than
/// selecting resources.
pub fn is_result_param(name: &str) -> bool {
    let code = name.split(':').next().unwrap_or_default();
    RESULT_PARAMS.contains(&code)
        || matches!(
            code,
            "_include" | "_revinclude" | "_contained" | "_containedType"
        )
}

impl SearchRequest {
    /// Parse `pairs` for a search on `resource_type`. With `strict` (`Prefer: handling=strict`),
    /// unknown or unsupported parameters are an error instead of a warning.
    pub fn parse(
        registry: &SearchParamRegistry,
        resource_type: &str,
        pairs: &[(String, String)],
        strict: bool,
        default_count: usize,
        max_count: usize,
    ) -> ApiResult<SearchRequest> {
        let mut request = SearchRequest {
            resource_type: resource_type.to_string(),
            criteria: Vec::new(),
            includes: Vec::new(),
            compartment: None,
            patient_of: None,
            patient_of_any: false,
            types: Vec::new(),
            count: default_count,
            offset: 0,
            cursor: None,
            cursor_token: None,
            sort: Vec::new(),
            total: TotalMode::Estimate,
            summary_count: false,
            subset: None,
            used: Vec::new(),
            warnings: Vec::new(),
            visibility: None,
            owner: None,
            view: None,
        };
        for (name, value) in pairs {
            if name.chars().chain(value.chars()).any(char::is_control) {
                return Err(ApiError::bad_request(format!(
                    "search parameter `{}` contains control characters",
                    truncate(&name.replace(char::is_control, "?"))
                )));
            }
            if RESULT_PARAMS.contains(&name.as_str()) {
                request.apply_result_param(name, value, max_count)?;
                continue;
            }
            let unsupported = |why: &str| -> ApiResult<Option<Issue>> {
                let text = format!("search parameter `{}` was ignored: {why}", truncate(name));
                if strict {
                    Err(ApiError::bad_request(text))
                } else {
                    Ok(Some(Issue {
                        severity: Severity::Warning,
                        code: IssueCode::NotSupported,
                        diagnostics: text,
                        expression: None,
                    }))
                }
            };
            let (code, modifier) = name.split_once(':').unwrap_or((name.as_str(), ""));
            let warning = if name == "_type" && resource_type == SYSTEM {
                for resource_type in value.split(',').filter(|t| !t.is_empty()) {
                    if !registry.resource_types().contains(&resource_type) {
                        return Err(ApiError::bad_request(format!(
                            "_type: unknown resource type `{}`",
                            truncate(resource_type)
                        )));
                    }
                    request.types.push(resource_type.to_string());
                }
                request.used.push((name.clone(), value.clone()));
                None
            } else if matches!(code, "_include" | "_revinclude") {
                let iterate = match modifier {
                    "" => false,
                    "iterate" | "recurse" => true,
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "{code}: the only modifier is :iterate"
                        )));
                    }
                };
                for value in value.split(',').filter(|v| !v.is_empty()) {
                    request.includes.push(parse_include(
                        registry,
                        code == "_revinclude",
                        iterate,
                        value,
                    )?);
                }
                request.used.push((name.clone(), value.clone()));
                None
            } else if matches!(code, "_contained" | "_containedType") {
                check_contained(name, value)?;
                request.used.push((name.clone(), value.clone()));
                None
            } else {
                match parse_criterion(registry, resource_type, name, value, 0) {
                    Ok(criterion) => {
                        request.criteria.push(criterion);
                        request.used.push((name.clone(), value.clone()));
                        None
                    }
                    Err(Refusal::Invalid(error)) => return Err(error),
                    Err(Refusal::Unsupported(why)) => unsupported(&why)?,
                }
            };
            request.warnings.extend(warning);
        }
        Ok(request)
    }

    /// A system-level search (`GET [base]?…`).
    pub fn is_system(&self) -> bool {
        self.resource_type == SYSTEM
    }

    /// Whether any criterion selects resources (conditional operations need one).
    pub fn has_criteria(&self) -> bool {
        !self.criteria.is_empty()
    }

    fn apply_result_param(&mut self, name: &str, value: &str, max_count: usize) -> ApiResult<()> {
        match name {
            "_count" => {
                let count: usize = value
                    .parse()
                    .map_err(|_| ApiError::bad_request("_count must be a non-negative integer"))?;
                if count > max_count {
                    return Err(ApiError::bad_request(format!(
                        "_count may be at most {max_count} on this server"
                    )));
                }
                self.count = count;
                self.used.push((name.into(), self.count.to_string()));
            }
            "_cursor" => self.cursor_token = Some(value.to_string()),
            "_offset" => {
                self.offset = value
                    .parse()
                    .ok()
                    .filter(|offset| *offset <= MAX_OFFSET)
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "_offset must be an integer from 0 to {MAX_OFFSET}"
                        ))
                    })?;
            }
            "_sort" => {
                for key in value.split(',').filter(|k| !k.is_empty()) {
                    let (code, descending) = match key.strip_prefix('-') {
                        Some(code) => (code, true),
                        None => (key, false),
                    };
                    // Whether `code` can be sorted by is the planner's to say (it knows the type).
                    self.sort.push(SortKey {
                        code: code.to_string(),
                        descending,
                    });
                }
                self.used.push((name.into(), value.into()));
            }
            "_total" => {
                self.total = match value {
                    "none" => TotalMode::None,
                    "estimate" => TotalMode::Estimate,
                    "accurate" => TotalMode::Accurate,
                    _ => {
                        return Err(ApiError::bad_request(
                            "_total must be none, estimate or accurate",
                        ));
                    }
                };
                self.used.push((name.into(), value.into()));
            }
            "_summary" => {
                match value {
                    "count" => self.summary_count = true,
                    "true" => self.subset = Some(Subset::Summary),
                    "text" => self.subset = Some(Subset::Text),
                    "data" => self.subset = Some(Subset::Data),
                    "false" => {}
                    _ => {
                        return Err(ApiError::bad_request(
                            "_summary must be true, text, data, count or false",
                        ));
                    }
                }
                self.used.push((name.into(), value.into()));
            }
            "_elements" => {
                let names: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
                    .collect();
                if names
                    .iter()
                    .any(|n| !n.chars().all(|c| c.is_ascii_alphanumeric()))
                {
                    return Err(ApiError::bad_request(
                        "_elements lists top-level element names (letters and digits), separated by commas",
                    ));
                }
                if self.subset.is_none() {
                    self.subset = Some(Subset::Elements(names));
                }
                self.used.push((name.into(), value.into()));
            }
            // The middleware already refused other formats; JSON is all this server speaks.
            "_format"
                if !matches!(value, "json" | "application/json" | "application/fhir+json") =>
            {
                return Err(ApiError::NotAcceptable(
                    "_format: this server speaks JSON only (json, application/fhir+json)".into(),
                ));
            }
            _ => {} // _pretty: accepted, output unchanged
        }
        Ok(())
    }
}

/// `_contained` and `_containedType` (R4 search.html#contained). Contained resources are not
/// indexed on their own here, so a search never matches one and never returns one: that is
/// `_contained=false`, the default, and under it `_containedType` changes nothing. Asking for
/// contained matches is a 400 rather than a warning, because ignoring it would answer another
/// question than the one asked.
fn check_contained(name: &str, value: &str) -> ApiResult<()> {
    match (name, value) {
        ("_contained", "false") | ("_containedType", "container" | "contained") => Ok(()),
        ("_contained", "true" | "both") => Err(ApiError::NotSupported(
            "_contained=true and _contained=both are not supported: contained resources are not indexed on their own, so searches match only the resources that contain them (_contained=false, the default)".into(),
        )),
        ("_contained", _) => Err(ApiError::bad_request(
            "_contained must be false, true or both (this server supports false, the default)",
        )),
        ("_containedType", _) => Err(ApiError::bad_request(
            "_containedType must be container or contained",
        )),
        _ => Err(ApiError::bad_request(format!(
            "search parameter `{}` takes no modifier",
            truncate(name)
        ))),
    }
}

/// Why a parameter cannot be used: a client error (400 always), or something this server does not
/// offer (a warning, or 400 under `Prefer: handling=strict`).
enum Refusal {
    Invalid(ApiError),
    Unsupported(String),
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Refusal::Invalid(error)
    }
}

/// Parse parameter `name` (with chains and `_has`) on `resource_type`.
fn parse_criterion(
    registry: &SearchParamRegistry,
    resource_type: &str,
    name: &str,
    value: &str,
    depth: usize,
) -> Result<Criterion, Refusal> {
    if depth > MAX_CHAIN_DEPTH {
        return Err(Refusal::Invalid(ApiError::bad_request(format!(
            "search parameter `{}`: chains and _has nest at most {MAX_CHAIN_DEPTH} levels deep",
            truncate(name)
        ))));
    }
    if let Some(rest) = name.strip_prefix("_has:") {
        let mut parts = rest.splitn(3, ':');
        let (Some(source_type), Some(reference), Some(inner)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(Refusal::Invalid(ApiError::bad_request(format!(
                "search parameter `{}`: _has is _has:[type]:[reference parameter]:[parameter]",
                truncate(name)
            ))));
        };
        reference_param(registry, source_type, reference, Some(resource_type))?;
        let inner = parse_criterion(registry, source_type, inner, value, depth + 1)?;
        return Ok(Criterion::Has {
            source_type: source_type.to_string(),
            reference: reference.to_string(),
            inner: Box::new(inner),
        });
    }
    if let Some((link, rest)) = name.split_once('.') {
        let (reference, type_modifier) = link
            .split_once(':')
            .map_or((link, None), |(r, t)| (r, Some(t)));
        let param = reference_param(registry, resource_type, reference, type_modifier)?;
        let candidates: Vec<&str> = match type_modifier {
            Some(target) => vec![target],
            None => param.targets.iter().map(String::as_str).collect(),
        };
        let next_code = rest.split(['.', ':']).next().unwrap_or_default();
        let mut branches = Vec::new();
        for target in candidates {
            if next_code != "_has" && registry.get(target, next_code).is_none() {
                continue;
            }
            branches.push((
                target.to_string(),
                parse_criterion(registry, target, rest, value, depth + 1)?,
            ));
        }
        if branches.is_empty() {
            return Err(Refusal::Unsupported(format!(
                "no resource type that `{}` can point to has a search parameter `{}`",
                truncate(reference),
                truncate(next_code)
            )));
        }
        return Ok(Criterion::Chain {
            reference: reference.to_string(),
            branches,
        });
    }
    let (code, modifier) = name
        .split_once(':')
        .map_or((name, None), |(c, m)| (c, Some(m.to_string())));
    let param = registry.get(resource_type, code).ok_or_else(|| {
        Refusal::Unsupported(format!(
            "{resource_type} has no search parameter `{}`",
            truncate(code)
        ))
    })?;
    if param.kind == ParamType::Special {
        return Err(Refusal::Unsupported(
            "special parameters (near, …) are not supported".into(),
        ));
    }
    if param.kind == ParamType::Composite && composite_value_kind(param).is_none() {
        return Err(Refusal::Unsupported(
            "only composites of a code and a concept, quantity, number or date are indexed".into(),
        ));
    }
    if !param.is_indexed() || crate::search::phi::is_unindexed(code) {
        return Err(Refusal::Unsupported(
            "this parameter has no index here (full-text and phonetic search are not offered)"
                .into(),
        ));
    }
    check_modifier(registry, resource_type, param, modifier.as_deref(), name)?;
    let values = split_unescaped(value, ',');
    if values.len() > MAX_OR_VALUES {
        return Err(Refusal::Invalid(ApiError::bad_request(format!(
            "search parameter `{}` has more than {MAX_OR_VALUES} alternatives",
            truncate(name)
        ))));
    }
    Ok(Criterion::Param(ParamFilter {
        code: code.to_string(),
        modifier,
        kind: param.kind,
        values,
    }))
}

/// The reference parameter `code` of `resource_type`, which must be able to point at `target`
/// (if given).
fn reference_param<'r>(
    registry: &'r SearchParamRegistry,
    resource_type: &str,
    code: &str,
    target: Option<&str>,
) -> Result<&'r SearchParam, Refusal> {
    let param = registry.get(resource_type, code).ok_or_else(|| {
        Refusal::Unsupported(format!(
            "{} has no search parameter `{}`",
            truncate(resource_type),
            truncate(code)
        ))
    })?;
    if param.kind != ParamType::Reference {
        return Err(Refusal::Invalid(ApiError::bad_request(format!(
            "`{}` is not a reference parameter of {}, so it cannot be chained or included",
            truncate(code),
            truncate(resource_type)
        ))));
    }
    if let Some(target) =
        target.filter(|t| !param.targets.is_empty() && !param.targets.iter().any(|p| p == t))
    {
        return Err(Refusal::Invalid(ApiError::bad_request(format!(
            "`{}` of {} cannot point to {} resources",
            truncate(code),
            truncate(resource_type),
            truncate(target)
        ))));
    }
    Ok(param)
}

/// `[source type]:[parameter or *][:target type]`.
fn parse_include(
    registry: &SearchParamRegistry,
    reverse: bool,
    iterate: bool,
    value: &str,
) -> ApiResult<Include> {
    let which = if reverse { "_revinclude" } else { "_include" };
    let mut parts = value.splitn(3, ':');
    let (Some(source_type), Some(param)) = (parts.next(), parts.next()) else {
        return Err(ApiError::bad_request(format!(
            "{which} is [type]:[search parameter][:target type], or [type]:*"
        )));
    };
    let target_type = parts.next().map(str::to_string);
    if !registry.resource_types().contains(&source_type) {
        return Err(ApiError::bad_request(format!(
            "{which}: unknown resource type `{}`",
            truncate(source_type)
        )));
    }
    let param = if param == "*" {
        None
    } else {
        reference_param(registry, source_type, param, target_type.as_deref()).map_err(
            |refusal| match refusal {
                Refusal::Invalid(error) => error,
                Refusal::Unsupported(why) => ApiError::bad_request(format!("{which}: {why}")),
            },
        )?;
        Some(param.to_string())
    };
    Ok(Include {
        reverse,
        iterate,
        source_type: source_type.to_string(),
        param,
        target_type,
    })
}

/// The type of the second component of a composite this server indexes (a token, then a token,
/// quantity, number or date), or `None` for other composites.
pub fn composite_value_kind(param: &SearchParam) -> Option<ParamType> {
    match param.components.as_slice() {
        [first, second] if first.kind == ParamType::Token => matches!(
            second.kind,
            ParamType::Token | ParamType::Quantity | ParamType::Number | ParamType::Date
        )
        .then_some(second.kind),
        _ => None,
    }
}

/// Modifiers each parameter type accepts here (R4 search.html, "Modifiers"); references also
/// take `:[type]`.
fn kind_modifiers(kind: ParamType) -> &'static [&'static str] {
    match kind {
        ParamType::String => &["missing", "exact", "contains"],
        ParamType::Token => &[
            "missing", "not", "text", "in", "not-in", "below", "above", "of-type",
        ],
        ParamType::Reference => &["missing", "identifier"],
        ParamType::Uri => &["missing", "below", "above"],
        ParamType::Date | ParamType::Number | ParamType::Quantity => &["missing"],
        ParamType::Composite | ParamType::Special => &[],
    }
}

/// The modifiers that work on parameter `param` of `resource_type`: its type's, except
/// `:of-type` where its values are not Identifiers, `:text` on protected parameters of types
/// whose display texts are not indexed ([`phi::displays_indexed`]), those blind tokens cannot
/// answer on a protected parameter ([`phi::BLIND_MODIFIERS`]), and on `_id` (`:not` only) and
/// `_lastUpdated` (none), which live on the head row. Parsing enforces exactly this list and the CapabilityStatement publishes it.
pub fn supported_modifiers(
    registry: &SearchParamRegistry,
    resource_type: &str,
    param: &SearchParam,
) -> Vec<&'static str> {
    let code = param.code.as_str();
    let of_kind: &[&str] = match code {
        "_id" => &["not"],
        "_lastUpdated" => &[],
        _ => kind_modifiers(param.kind),
    };
    let protected = phi::is_protected(registry, resource_type, code, param.kind);
    of_kind
        .iter()
        .copied()
        .filter(|modifier| match *modifier {
            "of-type" => registry.datatypes.reaches_identifier(resource_type, code),
            // Without word rows (fixed displays), `:text` finds the known displays of codings
            // through their token rows, which protected parameters do not have.
            "text" => phi::displays_indexed(resource_type) || !protected,
            _ => true,
        })
        .filter(|modifier| !protected || phi::BLIND_MODIFIERS.contains(modifier))
        .collect()
}

/// A 400 unless `modifier` is one of [`supported_modifiers`] (or a `:[type]` on a reference),
/// saying why.
fn check_modifier(
    registry: &SearchParamRegistry,
    resource_type: &str,
    param: &SearchParam,
    modifier: Option<&str>,
    name: &str,
) -> ApiResult<()> {
    let Some(modifier) = modifier else {
        return Ok(());
    };
    let is_type_modifier = param.kind == ParamType::Reference
        && modifier
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_uppercase());
    if is_type_modifier || supported_modifiers(registry, resource_type, param).contains(&modifier) {
        return Ok(());
    }
    let why = if !kind_modifiers(param.kind).contains(&modifier) {
        format!(
            "modifier `:{}` is not supported for this parameter type",
            truncate(modifier)
        )
    } else if matches!(param.code.as_str(), "_id" | "_lastUpdated") {
        "this modifier is not available here; _id takes :not, _lastUpdated none".into()
    } else if modifier == "of-type" {
        format!(
            ":of-type applies to parameters whose values are Identifiers, and {} of {resource_type} is not one",
            param.code
        )
    } else if modifier == "text" && !phi::displays_indexed(resource_type) {
        format!(
            "the display texts of {resource_type} are not indexed: :text finds only the displays of the server's own code tables, and this parameter's values are stored as keyed tokens; search by code"
        )
    } else {
        format!(
            "the :{modifier} modifier is not available on this protected parameter: its values are stored as keyed tokens"
        )
    };
    Err(ApiError::bad_request(format!(
        "search parameter `{}`: {why}",
        truncate(name)
    )))
}

/// Split on `separator` where it is not escaped with a backslash, and unescape `\,` `\|` `\$` `\\`.
pub fn split_unescaped(value: &str, separator: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ (',' | '|' | '$' | '\\')) if escaped != separator => {
                    current.push('\\');
                    current.push(escaped);
                }
                Some(escaped) if escaped == separator => current.push(escaped),
                Some(other) => {
                    current.push('\\');
                    current.push(other);
                }
                None => current.push('\\'),
            },
            c if c == separator => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    parts.push(current);
    parts
}

/// Escape a value for use in a search parameter (`\\`, `,`, `|`, `$`), the inverse of [`unescape`].
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '|' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A token criterion `system|value` as a query string (`identifier=…`), escaped and URL-encoded.
pub fn token_criteria(param: &str, system: &str, value: &str) -> String {
    serde_urlencoded::to_string([(param, format!("{}|{}", escape(system), escape(value)))])
        .unwrap_or_default()
}

/// Remove the remaining escapes of a value part.
pub fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modifiers_follow_type_datatype_and_protection() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fhir-resources");
        let (_, registry) = crate::server::load_definitions(&dir).expect("definitions");
        let of = |resource_type: &str, code: &str| {
            let param = registry.get(resource_type, code).expect(code);
            supported_modifiers(&registry, resource_type, param)
        };
        let all_token = ["missing", "not", "text", "in", "not-in", "below", "above"];
        assert_eq!(of("Observation", "code"), all_token);
        // Identifiers are protected: blind tokens answer presence, display words and of-type.
        assert_eq!(of("Patient", "identifier"), ["missing", "text", "of-type"]);
        assert_eq!(of("Device", "identifier"), ["missing", "text", "of-type"]);
        assert_eq!(of("Patient", "telecom"), ["missing", "text"]);
        assert_eq!(of("Patient", "name"), ["missing", "exact"]);
        assert_eq!(of("Organization", "name"), ["missing", "exact", "contains"]);
        assert_eq!(of("Observation", "subject"), ["missing", "identifier"]);
        assert_eq!(of("Device", "url"), ["missing", "below", "above"]);
        assert_eq!(of("Observation", "date"), ["missing"]);
        // AuditEvent displays have no word rows: :text finds the fixed displays by their codes.
        assert!(of("AuditEvent", "type").contains(&"text"));
        assert_eq!(of("Patient", "_id"), ["not"]);
        assert!(of("Patient", "_lastUpdated").is_empty());
    }

    #[test]
    fn contained_parameters() {
        assert!(check_contained("_contained", "false").is_ok());
        assert!(check_contained("_containedType", "container").is_ok());
        assert!(check_contained("_containedType", "contained").is_ok());
        for (name, value) in [
            ("_contained", "true"),
            ("_contained", "both"),
            ("_contained", "FALSE"),
            ("_containedType", "both"),
            ("_contained:x", "false"),
        ] {
            assert!(check_contained(name, value).is_err(), "{name}={value}");
        }
        assert!(matches!(
            check_contained("_contained", "true"),
            Err(ApiError::NotSupported(_))
        ));
    }

    #[test]
    fn escaping() {
        assert_eq!(split_unescaped("a,b\\,c", ','), ["a", "b,c"]);
        assert_eq!(split_unescaped("http://x|a\\|b", '|'), ["http://x", "a|b"]);
        assert_eq!(unescape("a\\|b"), "a|b");
        assert_eq!(unescape(&escape("a|b,c$d\\e")), "a|b,c$d\\e");
        assert_eq!(split_unescaped(&escape("x|y"), '|'), ["x|y"]);
        assert_eq!(
            token_criteria("identifier", "urn:oid:1.2", "a&b|c"),
            "identifier=urn%3Aoid%3A1.2%7Ca%26b%5C%7Cc"
        );
        assert_eq!(split_unescaped("", ','), [""]);
    }
}
