//! From a parsed search to SQL over the index tables. Each parameter becomes one
//! `h.id [NOT] IN (SELECT id FROM <index table> …)` condition on the head table, so every
//! parameter uses its table's lookup index and the parameters combine with AND.
//!
//! Chains and `_has` nest: the inner criterion is compiled for the other resource type, as a set
//! of live ids of that type (`SELECT hN.id FROM resource_heads hN WHERE … AND hN.deleted = 0`),
//! joined through `search_reference` rows. A chain through a deleted resource therefore never
//! matches, and `:not` or `:missing` inside a chain mean the same as at the top.

use super::cursor::{KeyKind, OrderKey};
use super::extract::{decimal_range, normalize_string, parse_date_range};
use super::index_rows::{BlindTerm, composite_param};
use super::phi::{
    MAX_PREFIX_CHARS, SEGMENT_SEPARATORS, displays_indexed, is_protected, is_segmented,
    of_type_param, reference_identifier_param, text_param,
};
use super::query::{
    Compartment, Criterion, ParamFilter, Restriction, SearchRequest, Visibility,
    composite_value_kind, split_unescaped, unescape,
};
use super::registry::{COMPARTMENT_SELF, ParamType, SearchParamRegistry};
use super::ucum;
use crate::crypto::KeyRing;
use crate::error::{ApiError, ApiResult};
use crate::fhir::id::truncate;
use crate::fhir::instant::now_micros;
use crate::fhir::validation::{Subsumption, SubsumptionError, Validator};
use crate::store::Bind;
use crate::store::index::COMPOSITE_CODES_TABLE;
use std::borrow::Cow;

/// The WHERE clause (over `resource_heads h`) and its binds; `$1` is the resource type.
#[derive(Debug, Clone)]
pub struct Plan {
    pub where_sql: String,
    /// The binds of `where_sql`, then those of `sort_keys`.
    pub binds: Vec<Bind>,
    /// How many of `binds` belong to `where_sql` (a COUNT binds only those).
    pub where_binds: usize,
    /// Sort key expressions over `h`, selected as `k0`, `k1`, … next to `h.id AS id`.
    pub sort_keys: Vec<String>,
    /// The ORDER BY keys over `id` and the `k` columns; the last is always `id` ascending.
    pub order: Vec<OrderKey>,
    /// The indexes in `binds` of the clock (now, µs, for the Consent check): set to the time of
    /// planning, which a plan run again later must set anew
    /// ([`crate::service::read_plans`]).
    pub clock_binds: Vec<usize>,
    /// The plan means the same at any later time once its clock binds are set anew; false when
    /// something else in it was computed from the time (the slack of `ap`).
    pub reusable: bool,
}

struct Builder<'a> {
    binds: Vec<Bind>,
    keys: &'a KeyRing,
    /// Value set expansions and code system hierarchies, for `:in`, `:not-in`, `:below` and
    /// `:above`.
    value_sets: &'a Validator,
    base_url: &'a str,
    registry: &'a SearchParamRegistry,
    /// Table aliases handed out so far (nested subqueries need their own).
    aliases: usize,
    /// What the caller may see, ANDed at every level; taken out while an access rule itself
    /// compiles (a rule's own joins are the rule, not a search the caller makes).
    visibility: Option<&'a dyn Visibility>,
    /// See [`Plan::clock_binds`] and [`Plan::reusable`].
    clock_binds: Vec<usize>,
    reusable: bool,
}

impl Builder<'_> {
    fn bind(&mut self, bind: Bind) -> String {
        self.binds.push(bind);
        format!("${}", self.binds.len())
    }

    fn text(&mut self, value: impl Into<String>) -> String {
        self.bind(Bind::Text(value.into()))
    }

    /// The placeholder of the current time (µs), recorded as a clock bind.
    fn clock(&mut self) -> String {
        self.clock_binds.push(self.binds.len());
        self.bind(Bind::Int(now_micros()))
    }

    fn alias(&mut self, prefix: &str) -> String {
        self.aliases += 1;
        format!("{prefix}{}", self.aliases)
    }
}

/// The resource a criterion is compiled against: its type (for blind tokens and parameter
/// lookups), the placeholder (or column) holding that type, and the alias of its head row.
///
/// A criterion compiles in one of two forms. As the *driver* (`probe == false`) it is
/// `h.id IN (SELECT r.id FROM index …)`: the database starts from the index rows that match,
/// through the lookup key. As a *probe* it is `EXISTS (SELECT 1 FROM index r WHERE … AND
/// r.id = h.id)`: one resource is checked through the owner index. A search has at most one
/// driver, the criterion most likely to be selective; with none, the database walks the head
/// table in the requested order and probes each resource, which stops as soon as a page is full.
struct Scope {
    resource_type: String,
    type_bind: String,
    head: String,
    id: String,
    probe: bool,
}

impl Scope {
    fn new(resource_type: &str, type_bind: String, head: String, probe: bool) -> Scope {
        let id = format!("{head}.id");
        Scope {
            resource_type: resource_type.to_string(),
            type_bind,
            head,
            id,
            probe,
        }
    }

    fn with_probe(&self, probe: bool) -> Scope {
        Scope {
            probe,
            resource_type: self.resource_type.clone(),
            type_bind: self.type_bind.clone(),
            head: self.head.clone(),
            id: self.id.clone(),
        }
    }

    /// The resource has (or, `negate`d, has no) row in `table` (alias `r`) matching `condition`.
    fn has_row(&self, table: &str, condition: &str, negate: bool) -> String {
        let not = if negate { "NOT " } else { "" };
        if self.probe {
            format!(
                "{not}EXISTS (SELECT 1 FROM {table} r WHERE {condition} AND r.id = {})",
                self.id
            )
        } else {
            format!(
                "{} {not}IN (SELECT r.id FROM {table} r WHERE {condition})",
                self.id
            )
        }
    }
}

/// How likely a criterion is to select few resources: lower drives first; `None` never drives
/// (negations and `:missing` select most resources; `_has` is cheapest probed per resource).
fn driver_rank(
    registry: &SearchParamRegistry,
    resource_type: &str,
    criterion: &Criterion,
) -> Option<u8> {
    match criterion {
        Criterion::Chain { .. } => Some(1),
        Criterion::Has { .. }
        | Criterion::AnyOf(_)
        | Criterion::Consent(_)
        | Criterion::PatientLink { .. } => None,
        Criterion::Param(filter) => match (filter.code.as_str(), filter.modifier.as_deref()) {
            (_, Some("not" | "missing" | "not-in")) | ("_lastUpdated", _) => None,
            ("_id", _) => Some(0),
            (code, _)
                if filter.kind == ParamType::Reference
                    || is_protected(registry, resource_type, code, filter.kind) =>
            {
                Some(1)
            }
            ("identifier", _) | (_, Some("identifier")) => Some(1),
            _ if filter.kind == ParamType::Composite => Some(2),
            _ => Some(3),
        },
    }
}

pub fn plan(
    request: &SearchRequest,
    registry: &SearchParamRegistry,
    value_sets: &Validator,
    keys: &KeyRing,
    base_url: &str,
) -> ApiResult<Plan> {
    let visibility = request.visibility.as_deref();
    let mut builder = Builder {
        binds: Vec::new(),
        keys,
        value_sets,
        base_url,
        registry,
        aliases: 0,
        visibility,
        clock_binds: Vec::new(),
        reusable: true,
    };
    // A system-level search compares each index row with its own resource's type.
    let (scope, mut conditions) = if request.is_system() {
        let scope = Scope::new(
            &request.resource_type,
            "h.resource_type".into(),
            "h".into(),
            true,
        );
        let mut conditions = vec!["h.deleted = 0".to_string()];
        if !request.types.is_empty() {
            let types: Vec<String> = request
                .types
                .iter()
                .map(|t| builder.text(t.clone()))
                .collect();
            conditions.push(format!("h.resource_type IN ({})", types.join(", ")));
        }
        (scope, conditions)
    } else {
        let type_bind = builder.text(request.resource_type.clone());
        let conditions = vec![
            format!("h.resource_type = {type_bind}"),
            "h.deleted = 0".to_string(),
        ];
        (
            Scope::new(&request.resource_type, type_bind, "h".into(), true),
            conditions,
        )
    };
    let driver = request
        .criteria
        .iter()
        .enumerate()
        .filter_map(|(i, c)| driver_rank(registry, &request.resource_type, c).map(|rank| (rank, i)))
        .min()
        .map(|(_, i)| i);
    for (i, criterion) in request.criteria.iter().enumerate() {
        conditions.push(criterion_condition(
            &mut builder,
            &scope.with_probe(Some(i) != driver),
            criterion,
        )?);
    }
    if let Some(compartment) = &request.compartment {
        conditions.push(compartment_condition(&mut builder, &scope, compartment));
    }
    if let Some(patient) = &request.patient_of {
        conditions.push(format!("h.compartment = {}", builder.text(patient.clone())));
    }
    if request.patient_of_any {
        conditions.push("h.compartment IS NOT NULL".to_string());
    }
    if request.is_system() {
        conditions.extend(system_restriction(&mut builder, request)?);
    } else {
        conditions.extend(restriction_condition(&mut builder, &scope)?);
    }
    let where_binds = builder.binds.len();
    let mut sort_keys = Vec::new();
    let mut order = Vec::new();
    let id_key = |descending| OrderKey {
        column: "id".into(),
        descending,
        nullable: false,
        kind: KeyKind::Text,
    };
    for key in &request.sort {
        if key.code == "_id" {
            order.push(id_key(key.descending));
            continue;
        }
        let column = format!("k{}", sort_keys.len());
        let (sql, kind) = sort_key(&mut builder, &scope, &key.code, key.descending)?;
        sort_keys.push(sql);
        // Resources without a value sort last either way (the two databases disagree on NULLs).
        order.push(OrderKey {
            column,
            descending: key.descending,
            nullable: key.code != "_lastUpdated",
            kind,
        });
    }
    // Ties broken by id (and type, across types) so that pages never overlap or skip.
    order.push(id_key(false));
    if request.is_system() {
        order.push(OrderKey {
            column: "resource_type".into(),
            descending: false,
            nullable: false,
            kind: KeyKind::Text,
        });
    }
    let plan = Plan {
        where_sql: all_of(&conditions),
        binds: builder.binds,
        where_binds,
        sort_keys,
        order,
        clock_binds: builder.clock_binds,
        reusable: builder.reusable,
    };
    within_statement_limits(&plan)?;
    Ok(plan)
}

/// `alternatives` ORed (`1 = 0` for none), as a balanced tree of parentheses. SQLite parses
/// `a OR b OR c …` into a tree as deep as the list is long and refuses expressions deeper than
/// 1,000, which a parameter's 500 values (each a comparison of its own) would exceed; balanced,
/// the depth grows with the logarithm of the count.
fn any_of(alternatives: &[String]) -> String {
    balanced(alternatives, "OR", "1 = 0")
}

/// `conditions` ANDed (`1 = 1` for none), balanced as [`any_of`]: repeated parameters add up.
fn all_of(conditions: &[String]) -> String {
    balanced(conditions, "AND", "1 = 1")
}

fn balanced(operands: &[String], operator: &str, empty: &str) -> String {
    match operands {
        [] => empty.to_string(),
        [one] => format!("({one})"),
        _ => {
            let (left, right) = operands.split_at(operands.len() / 2);
            format!(
                "({} {operator} {})",
                balanced(left, operator, empty),
                balanced(right, operator, empty)
            )
        }
    }
}

/// Most values one search statement binds. SQLite takes at most 32,766 per statement and
/// PostgreSQL 65,535; a query past them would fail in the database. Comma-separated values,
/// repeated parameters and value-set expansions (each `:in` is limited on its own, by
/// [`MAX_LISTED_CODES`]) all add up here, so the limit is on the whole.
const MAX_BINDS: usize = 20_000;

/// Longest SQL text of one search statement's conditions and sort keys. SQLite refuses
/// statements over 1,000,000 bytes; the page and count statements add a little around these.
const MAX_SQL_BYTES: usize = 500_000;

/// A 400 `too-costly` for a search too large for one statement, rather than the database's
/// error (a 500) after planning it.
fn within_statement_limits(plan: &Plan) -> ApiResult<()> {
    let sql_bytes = plan.where_sql.len() + plan.sort_keys.iter().map(String::len).sum::<usize>();
    if plan.binds.len() > MAX_BINDS || sql_bytes > MAX_SQL_BYTES {
        return Err(ApiError::TooCostly(format!(
            "this search is too large to run as one query (at most {MAX_BINDS} values in all); \
             split it into several searches with fewer values or parameters"
        )));
    }
    Ok(())
}

/// The value a resource is sorted by for parameter `code`: its lowest value ascending, its
/// highest descending (a resource can have several), as a subquery on its index rows.
fn sort_key(
    b: &mut Builder,
    scope: &Scope,
    code: &str,
    descending: bool,
) -> ApiResult<(String, KeyKind)> {
    if code == "_lastUpdated" {
        return Ok(("h.last_updated".into(), KeyKind::Int));
    }
    let unknown = || {
        ApiError::bad_request(format!(
            "_sort: {} has no search parameter `{}`",
            scope.resource_type,
            truncate(code)
        ))
    };
    let param = b
        .registry
        .get(&scope.resource_type, code)
        .ok_or_else(unknown)?;
    if is_protected(b.registry, &scope.resource_type, code, param.kind) {
        return Err(ApiError::bad_request(format!(
            "_sort: `{}` is protected (stored as keyed tokens), so it has no order to sort by",
            truncate(code)
        )));
    }
    let kind = param.kind;
    let (value, key_kind) = match kind {
        ParamType::Date => ("r.start_us", KeyKind::Int),
        ParamType::Number | ParamType::Quantity => ("((r.low + r.high) / 2)", KeyKind::Real),
        ParamType::Token => ("r.code", KeyKind::Text),
        ParamType::String => ("r.normalized", KeyKind::Text),
        ParamType::Reference => ("r.url", KeyKind::Text),
        ParamType::Uri => ("r.value", KeyKind::Text),
        ParamType::Composite | ParamType::Special => {
            return Err(ApiError::bad_request(format!(
                "_sort: `{}` is not a sortable parameter",
                truncate(code)
            )));
        }
    };
    let aggregate = if descending { "MAX" } else { "MIN" };
    let param = param_is(b, scope, code);
    let sql = format!(
        "(SELECT {aggregate}({value}) FROM {} r WHERE r.resource_type = {} AND {param} AND r.id = h.id)",
        table_for(kind),
        scope.type_bind
    );
    Ok((sql, key_kind))
}

fn criterion_condition(b: &mut Builder, scope: &Scope, criterion: &Criterion) -> ApiResult<String> {
    match criterion {
        Criterion::Param(filter) => filter_condition(b, scope, filter),
        // Driver: the targets that match, then the references to them. Probe: this resource's
        // references, then whether their target matches.
        Criterion::Chain {
            reference,
            branches,
        } => {
            let mut alternatives = Vec::with_capacity(branches.len());
            for (target_type, inner) in branches {
                let (c, param) = (b.alias("c"), b.text(reference.clone()));
                let local = local_reference(b, &c);
                let (id, ty) = (&scope.id, &scope.type_bind);
                alternatives.push(if scope.probe {
                    let (target, matches) = live_target(b, target_type, &format!("{c}.target_id"), inner, false)?;
                    format!(
                        "EXISTS (SELECT 1 FROM search_reference {c} WHERE {c}.resource_type = {ty} AND {c}.id = {id} \
                         AND {c}.param = {param} AND {c}.target_type = {target} AND {local} AND {matches})"
                    )
                } else {
                    let (target, targets) = live_ids(b, target_type, inner, false)?;
                    format!(
                        "{id} IN (SELECT {c}.id FROM search_reference {c} WHERE {c}.resource_type = {ty} AND {c}.param = {param} \
                         AND {c}.target_type = {target} AND {c}.target_id IN ({targets}) AND {local})"
                    )
                });
            }
            Ok(any_of(&alternatives))
        }
        // Driver: the sources that match, then what they point to. Probe: the references to this
        // resource, then whether their source matches.
        Criterion::Has {
            source_type,
            reference,
            inner,
        } => {
            let (c, param) = (b.alias("c"), b.text(reference.clone()));
            let local = local_reference(b, &c);
            let (id, ty) = (&scope.id, &scope.type_bind);
            let (implied, inner) =
                implied_by_target(b, source_type, reference, &scope.resource_type, inner);
            if scope.probe {
                let (source, matches) =
                    live_target(b, source_type, &format!("{c}.id"), &inner, implied)?;
                Ok(format!(
                    "EXISTS (SELECT 1 FROM search_reference {c} WHERE {c}.resource_type = {source} AND {c}.param = {param} \
                     AND {c}.target_id = {id} AND {c}.target_type = {ty} AND {local} AND {matches})"
                ))
            } else {
                let (source, sources) = live_ids(b, source_type, &inner, implied)?;
                Ok(format!(
                    "{id} IN (SELECT {c}.target_id FROM search_reference {c} WHERE {c}.resource_type = {source} AND {c}.param = {param} \
                     AND {c}.target_type = {ty} AND {c}.id IN ({sources}) AND {local})"
                ))
            }
        }
        Criterion::AnyOf(groups) => {
            let probe = scope.with_probe(true);
            let mut alternatives = Vec::with_capacity(groups.len());
            for group in groups {
                let all: ApiResult<Vec<String>> = group
                    .iter()
                    .map(|c| criterion_condition(b, &probe, c))
                    .collect();
                let all = all?;
                alternatives.push(all_of(&all));
            }
            Ok(any_of(&alternatives))
        }
        Criterion::Consent(filter) => Ok(consent_condition(b, scope, filter)),
        Criterion::PatientLink { links, patient } => {
            patient_link_condition(b, scope, links, patient)
        }
    }
}

/// [`Criterion::PatientLink`]: some reference of the resource through one of `links` points at
/// a live local Patient that matches `patient`, which is what the chains `link:Patient.…` over
/// `links`, ORed, mean.
///
/// Where the head row's `compartment_complete` says that its `compartment` is the only Patient
/// the resource references, and by relative references only
/// ([`crate::search::index_rows::compartment_is_complete`], migration 0011), that is the same
/// as "the compartment's Patient matches": the compartment is the first Patient one of the
/// resource's patient links points at ([`crate::search::index_rows::patient_compartment`], the
/// same links as the rule's), so at least one link points at it and none at another Patient. One
/// lookup of the Patient's head then replaces a subquery on the reference rows per link.
/// Otherwise (`0`: a second Patient, an absolute URL, …) the links are followed as the chains
/// did, all of them in one subquery: `local_reference` keeps references to other servers out.
fn patient_link_condition(
    b: &mut Builder,
    scope: &Scope,
    links: &[String],
    patient: &Criterion,
) -> ApiResult<String> {
    if links.is_empty() {
        return Ok("1 = 0".into());
    }
    let (head, id, ty) = (&scope.head, &scope.id, &scope.type_bind);
    let c = b.alias("c");
    let params: Vec<String> = links.iter().map(|l| b.text(l.clone())).collect();
    let local = local_reference(b, &c);
    let (target, by_link) = live_target(b, "Patient", &format!("{c}.target_id"), patient, false)?;
    let follow_links = format!(
        "EXISTS (SELECT 1 FROM search_reference {c} WHERE {c}.resource_type = {ty} AND {c}.id = {id} \
         AND {c}.param IN ({}) AND {c}.target_type = {target} AND {local} AND {by_link})",
        params.join(", ")
    );
    // The compartment stands for the links only if they are all of the type's patient links:
    // it may come from any of them.
    let every_link = b
        .registry
        .patient_links(&scope.resource_type)
        .iter()
        .all(|l| l == COMPARTMENT_SELF || links.contains(l));
    if !every_link {
        return Ok(follow_links);
    }
    let (_, by_compartment) =
        live_target(b, "Patient", &format!("{head}.compartment"), patient, false)?;
    Ok(format!(
        "(({head}.compartment_complete = 1 AND {by_compartment}) \
         OR ({head}.compartment_complete = 0 AND {follow_links}))"
    ))
}

/// The patient's Consents let the caller see the resource (`crate::auth::consent` has the rule):
/// its patient is its compartment; the rows of that patient that match the caller's actors and
/// purposes, the resource's type and id, and now are ranked by (recorded, depth), deny before
/// permit, and the first decides. Written as "a row of the other effect that no row of this
/// effect outranks", so that it needs no window functions and stays one index probe by patient
/// for the many patients without Consents.
fn consent_condition(
    b: &mut Builder,
    scope: &Scope,
    filter: &crate::auth::consent::ConsentFilter,
) -> String {
    let head = &scope.head;
    let now = b.clock();
    let actors: Vec<String> = filter.actors.iter().map(|a| b.text(a.clone())).collect();
    let purposes: Vec<String> = filter.purposes.iter().map(|p| b.text(p.clone())).collect();
    let (actors, purposes, ty) = (actors.join(", "), purposes.join(", "), &scope.type_bind);
    let matching = |a: &str| {
        format!(
            "{a}.actor IN ({actors}) AND {a}.purpose IN ({purposes}) AND {a}.class IN ('*', {ty}) \
             AND ({a}.data_id = '' OR ({a}.data_type = {ty} AND {a}.data_id = {head}.id)) AND {a}.starts <= {now} AND {a}.ends > {now}"
        )
    };
    let (d, p) = (b.alias("cd"), b.alias("cp"));
    let (deny, permit) = (matching(&d), matching(&p));
    if filter.default_permit {
        format!(
            "({head}.compartment IS NULL OR NOT EXISTS (SELECT 1 FROM consent_rules {d} WHERE {d}.patient_id = {head}.compartment AND {d}.permit = 0 AND {deny} \
             AND NOT EXISTS (SELECT 1 FROM consent_rules {p} WHERE {p}.patient_id = {d}.patient_id AND {p}.permit = 1 AND {permit} \
             AND ({p}.recorded > {d}.recorded OR ({p}.recorded = {d}.recorded AND {p}.depth > {d}.depth)))))"
        )
    } else {
        format!(
            "({head}.compartment IS NULL OR EXISTS (SELECT 1 FROM consent_rules {p} WHERE {p}.patient_id = {head}.compartment AND {p}.permit = 1 AND {permit} \
             AND NOT EXISTS (SELECT 1 FROM consent_rules {d} WHERE {d}.patient_id = {p}.patient_id AND {d}.permit = 0 AND {deny} \
             AND ({d}.recorded > {p}.recorded OR ({d}.recorded = {p}.recorded AND {d}.depth >= {p}.depth)))))"
        )
    }
}

/// What the caller may see of `scope`'s type, as a condition on its head row; `None` when it
/// may see everything.
fn restriction_condition(b: &mut Builder, scope: &Scope) -> ApiResult<Option<String>> {
    let Some(visibility) = b.visibility else {
        return Ok(None);
    };
    let criteria = match visibility.restriction(&scope.resource_type)? {
        Restriction::Everything => return Ok(None),
        Restriction::Nothing => return Ok(Some("1 = 0".into())),
        Restriction::Where(criteria) => criteria,
    };
    b.visibility = None;
    let probe = scope.with_probe(true);
    let compiled: ApiResult<Vec<String>> = criteria
        .iter()
        .map(|c| criterion_condition(b, &probe, c))
        .collect();
    b.visibility = Some(visibility);
    Ok(Some(all_of(&compiled?)))
}

/// A system-level search sees, of each type it spans, what the caller may see of that type.
fn system_restriction(b: &mut Builder, request: &SearchRequest) -> ApiResult<Option<String>> {
    if b.visibility.is_none() {
        // Unrestricted (an admin): everything but the audit trail, which is the auditors'.
        return Ok(Some(format!(
            "h.resource_type <> '{}'",
            crate::auth::role::AUDIT_EVENT
        )));
    }
    let types: Vec<String> = if request.types.is_empty() {
        b.registry
            .resource_types()
            .iter()
            .map(|t| t.to_string())
            .collect()
    } else {
        request.types.clone()
    };
    let mut alternatives = Vec::new();
    for resource_type in types {
        let type_bind = b.text(resource_type.clone());
        let scope = Scope::new(&resource_type, type_bind.clone(), "h".into(), true);
        match restriction_condition(b, &scope)? {
            None => alternatives.push(format!("h.resource_type = {type_bind}")),
            Some(condition) if condition == "1 = 0" => {}
            Some(condition) => {
                alternatives.push(format!("(h.resource_type = {type_bind} AND {condition})"))
            }
        }
    }
    Ok(Some(any_of(&alternatives)))
}

/// Membership of `h` in a compartment: one of the compartment's parameters points at its owner,
/// or `h` is the owner itself (a Patient is in its own compartment).
fn compartment_condition(b: &mut Builder, scope: &Scope, compartment: &Compartment) -> String {
    let owner_id = b.text(compartment.id.clone());
    let mut alternatives = Vec::new();
    if compartment.params.iter().any(|p| p == COMPARTMENT_SELF) {
        alternatives.push(format!("h.id = {owner_id}"));
    }
    let params: Vec<String> = compartment
        .params
        .iter()
        .filter(|p| *p != COMPARTMENT_SELF)
        .map(|p| b.text(p.clone()))
        .collect();
    if !params.is_empty() {
        let owner_type = b.text(compartment.resource_type.clone());
        let local = local_reference(b, "c");
        alternatives.push(format!(
            "h.id IN (SELECT c.id FROM search_reference c WHERE c.resource_type = {} AND c.param IN ({}) \
             AND c.target_type = {owner_type} AND c.target_id = {owner_id} AND {local})",
            scope.type_bind,
            params.join(", ")
        ));
    }
    any_of(&alternatives)
}

/// Reference row `c` points into this server (relative, or absolute on our base), so a chain
/// never follows a reference to another server into a local resource with the same type and id.
fn local_reference(b: &mut Builder, c: &str) -> String {
    let base = b.text(format!("{}/", b.base_url));
    format!("({c}.url NOT LIKE '%://%' OR substr({c}.url, 1, length({base})) = {base})")
}

/// Whether the `_has` sources' rule is implied by the target being visible
/// ([`crate::search::query::Visibility::left_after_target`]), and the sources' criterion with what is left of
/// the rule (a Consent still decides per type) ANDed in.
fn implied_by_target<'c>(
    b: &Builder,
    source_type: &str,
    reference: &str,
    target_type: &str,
    inner: &'c Criterion,
) -> (bool, Cow<'c, Criterion>) {
    match b
        .visibility
        .and_then(|v| v.left_after_target(source_type, reference, target_type))
    {
        None => (false, Cow::Borrowed(inner)),
        Some(left) if left.is_empty() => (true, Cow::Borrowed(inner)),
        Some(left) => (
            true,
            Cow::Owned(Criterion::AnyOf(vec![
                std::iter::once(inner.clone()).chain(left).collect(),
            ])),
        ),
    }
}

/// `SELECT` of the ids of live `resource_type` resources that match `criterion`, and the
/// placeholder holding `resource_type`. `implied`: the caller's rule for the type is known to
/// hold (see [`implied_by_target`]) and is not checked again.
fn live_ids(
    b: &mut Builder,
    resource_type: &str,
    criterion: &Criterion,
    implied: bool,
) -> ApiResult<(String, String)> {
    let type_bind = b.text(resource_type.to_string());
    let h = b.alias("h");
    let inner = Scope::new(resource_type, type_bind.clone(), h.clone(), false);
    let mut condition = criterion_condition(b, &inner, criterion)?;
    if !implied && let Some(visible) = restriction_condition(b, &inner)? {
        condition = format!("{condition} AND {visible}");
    }
    let sql = format!(
        "SELECT {h}.id FROM resource_heads {h} WHERE {h}.resource_type = {type_bind} AND {h}.deleted = 0 AND {condition}"
    );
    Ok((type_bind, sql))
}

/// Whether the live `resource_type` resource with id `id` (an SQL expression) matches
/// `criterion`, checked as a probe; and the placeholder holding `resource_type`. `implied` as
/// for [`live_ids`].
fn live_target(
    b: &mut Builder,
    resource_type: &str,
    id: &str,
    criterion: &Criterion,
    implied: bool,
) -> ApiResult<(String, String)> {
    let type_bind = b.text(resource_type.to_string());
    let h = b.alias("h");
    let inner = Scope::new(resource_type, type_bind.clone(), h.clone(), true);
    let mut condition = criterion_condition(b, &inner, criterion)?;
    if !implied && let Some(visible) = restriction_condition(b, &inner)? {
        condition = format!("{condition} AND {visible}");
    }
    let sql = format!(
        "EXISTS (SELECT 1 FROM resource_heads {h} WHERE {h}.resource_type = {type_bind} AND {h}.id = {id} AND {h}.deleted = 0 AND {condition})"
    );
    Ok((type_bind, sql))
}

fn filter_condition(b: &mut Builder, scope: &Scope, filter: &ParamFilter) -> ApiResult<String> {
    // Display texts and identifiers inside references live only as blind tokens, under their own
    // parameter names; they are searched with starts-with and token semantics respectively.
    match filter.modifier.as_deref() {
        Some("text") if filter.kind == ParamType::Token => return text_filter(b, scope, filter),
        Some("of-type") => {
            return blind_filter(b, scope, filter, &of_type_param(&filter.code));
        }
        Some("identifier") if filter.kind == ParamType::Reference => {
            let as_token = ParamFilter {
                kind: ParamType::Token,
                modifier: None,
                ..filter.clone()
            };
            return blind_filter(
                b,
                scope,
                &as_token,
                &reference_identifier_param(&filter.code),
            );
        }
        _ => {}
    }
    // `_id` and `_lastUpdated` live on the head row itself (parsing allows `_id:not` only).
    match filter.code.as_str() {
        "_id" => {
            let ids: Vec<String> = filter.values.iter().map(|v| b.text(unescape(v))).collect();
            let not = if filter.modifier.is_some() {
                "NOT "
            } else {
                ""
            };
            return Ok(format!("{} {not}IN ({})", scope.id, ids.join(", ")));
        }
        "_lastUpdated" => {
            let alternatives = filter
                .values
                .iter()
                .map(|v| last_updated_condition(b, scope, filter, v))
                .collect::<ApiResult<Vec<_>>>()?;
            return Ok(any_of(&alternatives));
        }
        _ => {}
    }
    if filter.kind == ParamType::Composite {
        return composite_filter(b, scope, filter);
    }
    let phi = is_protected(b.registry, &scope.resource_type, &filter.code, filter.kind);
    let table = if phi {
        "search_blind"
    } else {
        table_for(filter.kind)
    };
    // Parsing refuses these on protected parameters ([`super::phi::BLIND_MODIFIERS`]).
    if matches!(
        filter.modifier.as_deref(),
        Some("in" | "not-in" | "below" | "above")
    ) && filter.kind == ParamType::Token
    {
        return code_list_filter(b, scope, filter);
    }
    if filter.modifier.as_deref() == Some("missing") {
        let missing = match filter.values.as_slice() {
            [v] if v == "true" => true,
            [v] if v == "false" => false,
            _ => {
                return Err(param_error(
                    filter,
                    "the :missing modifier takes true or false",
                ));
            }
        };
        let param = param_is(b, scope, &filter.code);
        let condition = format!("r.resource_type = {} AND {param}", scope.type_bind);
        return Ok(scope.has_row(table, &condition, missing));
    }
    // Values in a UCUM unit that converts are compared against the canonical rows, which are
    // stored under a parameter name of their own.
    let (canonical, plain): (Vec<&String>, Vec<&String>) = filter
        .values
        .iter()
        .partition(|value| !phi && is_canonical_ucum(filter.kind, value));
    let negate = filter.modifier.as_deref() == Some("not");
    let registry = b.registry;
    let mut branches = Vec::new();
    for code in registry.stored_codes(&scope.resource_type, &filter.code) {
        for (param, values) in [
            (code.to_string(), &plain),
            (ucum::canonical_param(code), &canonical),
        ] {
            if values.is_empty() {
                continue;
            }
            let mut alternatives = Vec::new();
            for value in values {
                alternatives.push(if phi {
                    // Blind tokens are keyed by the parameter they are stored under.
                    blind_condition(b, &scope.resource_type, filter, code, value)?
                } else {
                    value_condition(b, filter, value)?
                });
            }
            let param = b.text(param);
            branches.push(format!("(r.param = {param} AND {})", any_of(&alternatives)));
        }
    }
    let condition = format!(
        "r.resource_type = {} AND {}",
        scope.type_bind,
        any_of(&branches)
    );
    Ok(scope.has_row(table, &condition, negate))
}

/// `r.param` is one of the parameters the values of `code` are stored under (several for a
/// union of parameters, see [`crate::search::union_params`]).
fn param_is(b: &mut Builder, scope: &Scope, code: &str) -> String {
    let registry = b.registry;
    let codes: Vec<String> = registry
        .stored_codes(&scope.resource_type, code)
        .into_iter()
        .map(|c| b.text(c.to_string()))
        .collect();
    match codes.as_slice() {
        [one] => format!("r.param = {one}"),
        _ => format!("r.param IN ({})", codes.join(", ")),
    }
}

/// A quantity value whose unit is a UCUM code with a canonical form (`5|http://unitsofmeasure.org|mg`).
fn is_canonical_ucum(kind: ParamType, value: &str) -> bool {
    match split_unescaped(value, '|').as_slice() {
        [_, system, code] => {
            kind == ParamType::Quantity
                && unescape(system) == ucum::UCUM
                && ucum::canonical(&unescape(code)).is_some()
        }
        _ => false,
    }
}

/// `code-value-quantity=[system|]code$[prefix]value` and the like: rows of the second component's
/// table stored under the composite's name joined with the first component's code
/// ([`composite_param`]).
fn composite_filter(b: &mut Builder, scope: &Scope, filter: &ParamFilter) -> ApiResult<String> {
    let second_kind = b
        .registry
        .get(&scope.resource_type, &filter.code)
        .and_then(composite_value_kind)
        .ok_or_else(|| param_error(filter, "this composite is not indexed"))?;
    let second_filter = ParamFilter {
        kind: second_kind,
        modifier: None,
        ..filter.clone()
    };
    let mut alternatives = Vec::new();
    for value in &filter.values {
        let parts = split_unescaped(value, '$');
        let [first, second] = parts.as_slice() else {
            return Err(param_error(
                filter,
                "a composite value is [system|]code$value; escape a literal $ as \\$",
            ));
        };
        let (system, code) = match split_unescaped(first, '|').as_slice() {
            [code] if !code.is_empty() => (None, unescape(code)),
            [system, code] if !code.is_empty() => (Some(unescape(system)), unescape(code)),
            _ => {
                return Err(param_error(
                    filter,
                    "the first part of a composite value is a code or system|code",
                ));
            }
        };
        let canonical = is_canonical_ucum(second_kind, second);
        let finish = |key: String| {
            if canonical {
                ucum::canonical_param(&key)
            } else {
                key
            }
        };
        let registry = b.registry;
        let mut keys = Vec::new();
        for stored in registry.stored_codes(&scope.resource_type, &filter.code) {
            match &system {
                Some(system) => {
                    keys.push(b.text(finish(composite_param(stored, Some(system), &code))))
                }
                // The code under every system it was stored with, and the key without a
                // system that rows stored before migration 0012 also have.
                None => {
                    let before = b.text(finish(composite_param(stored, None, &code)));
                    let prefix = b.text(format!("{stored}\u{1f}"));
                    let suffix = b.text(finish(format!("\u{1f}{code}")));
                    let (param, coded) = (b.text(stored), b.text(code.clone()));
                    keys.push(format!(
                        "SELECT {before} UNION ALL SELECT {prefix} || c.system || {suffix} \
                         FROM {COMPOSITE_CODES_TABLE} c WHERE c.resource_type = {} \
                         AND c.param = {param} AND c.code = {coded}",
                        scope.type_bind
                    ));
                }
            }
        }
        let keys = match system {
            Some(_) => keys.join(", "),
            None => keys.join(" UNION ALL "),
        };
        let condition = value_condition(b, &second_filter, second)?;
        alternatives.push(format!("(r.param IN ({keys}) AND {condition})"));
    }
    let condition = format!(
        "r.resource_type = {} AND {}",
        scope.type_bind,
        any_of(&alternatives)
    );
    Ok(scope.has_row(table_for(second_kind), &condition, false))
}

/// Most codes the values of one `:in`, `:not-in`, `:below` or `:above` parameter expand to
/// together (both databases bind at most tens of thousands of parameters per query).
const MAX_LISTED_CODES: usize = 5_000;

/// `:in` / `:not-in` (a coding of the resource is, or is not, in one of the value sets named by
/// the values, expanded from the spec's own files) and `:below` / `:above` (a coding is the
/// named code or one it subsumes, or one that subsumes it, in the code system's hierarchy): each
/// value becomes lists of codes by system, looked up by key like any code.
fn code_list_filter(b: &mut Builder, scope: &Scope, filter: &ParamFilter) -> ApiResult<String> {
    let mut alternatives = Vec::new();
    // Counted over all the values: each may stay under the limit while hundreds together
    // would not.
    let mut listed = 0;
    for value in &filter.values {
        let systems = match filter.modifier.as_deref() {
            Some("below") => subsumed_codes(b, filter, value, Subsumption::Below)?,
            Some("above") => subsumed_codes(b, filter, value, Subsumption::Above)?,
            _ => value_set_codes(b, filter, value)?,
        };
        listed += systems.iter().map(|(_, codes)| codes.len()).sum::<usize>();
        if listed > MAX_LISTED_CODES {
            return Err(param_error(
                filter,
                &format!(
                    "this expands to more than {MAX_LISTED_CODES} codes; search by code instead"
                ),
            ));
        }
        for (system, codes) in systems {
            let system = b.text(system);
            let codes: Vec<String> = codes.into_iter().map(|code| b.text(code)).collect();
            if !codes.is_empty() {
                // Elements of type `code` are stored without a system: the binding implies it.
                alternatives.push(format!(
                    "(r.system IN ({system}, '') AND r.code IN ({}))",
                    codes.join(", ")
                ));
            }
        }
    }
    let param = param_is(b, scope, &filter.code);
    let negate = filter.modifier.as_deref() == Some("not-in");
    let codes = any_of(&alternatives);
    let condition = format!(
        "r.resource_type = {} AND {param} AND {codes}",
        scope.type_bind
    );
    Ok(scope.has_row("search_token", &condition, negate))
}

/// The codes of the spec value set named by an `:in` / `:not-in` value, by system.
fn value_set_codes(
    b: &Builder,
    filter: &ParamFilter,
    value: &str,
) -> ApiResult<Vec<(String, Vec<String>)>> {
    b.value_sets.value_set_codes(&unescape(value)).ok_or_else(|| {
        param_error(filter, "the value set is not one whose codes this server can enumerate from the FHIR specification's value sets")
    })
}

/// The codes a `:below` / `:above` value (`system|code`) stands for, from the code system's
/// hierarchy in the spec's files. Never falls back to matching the code alone: a system whose
/// hierarchy the server does not hold is a 400.
fn subsumed_codes(
    b: &Builder,
    filter: &ParamFilter,
    value: &str,
    direction: Subsumption,
) -> ApiResult<Vec<(String, Vec<String>)>> {
    let parts = split_unescaped(value, '|');
    let [system, code] = parts.as_slice() else {
        return Err(param_error(
            filter,
            "a :below or :above value is system|code",
        ));
    };
    if system.is_empty() || code.is_empty() {
        return Err(param_error(
            filter,
            ":below and :above need both the code system and the code (system|code): subsumption is defined within one code system",
        ));
    }
    let system = unescape(system);
    let codes = b
        .value_sets
        .subsumption(&system, &unescape(code), direction)
        .map_err(|error| {
            let why = match error {
                SubsumptionError::UnknownSystem => format!(
                    "subsumption is not available for code system {}: this server holds only the hierarchies of the code systems the FHIR specification defines in full",
                    truncate(&system)
                ),
                SubsumptionError::NotIsA => format!(
                    "subsumption is not available for code system {}: its hierarchy groups codes rather than classifying them (hierarchyMeaning)",
                    truncate(&system)
                ),
                SubsumptionError::UnknownCode => format!(
                    "code system {} does not define this code",
                    truncate(&system)
                ),
            };
            param_error(filter, &why)
        })?;
    Ok(vec![(system, codes)])
}

/// `_lastUpdated` lives on the head row of the resource in scope.
fn last_updated_condition(
    b: &mut Builder,
    scope: &Scope,
    filter: &ParamFilter,
    value: &str,
) -> ApiResult<String> {
    let column = format!("{}.last_updated", scope.head);
    date_condition(b, filter, value, &column, &format!("({column} + 1)"))
}

/// `:text` on a token: every word of one of the values must be a word of a display text: a
/// blind word row, or a token row of a coding that carries its known display (see
/// [`crate::search::known_displays`]).
/// (Parsing refuses it on types whose display texts are not indexed.)
fn text_filter(b: &mut Builder, scope: &Scope, filter: &ParamFilter) -> ApiResult<String> {
    let registry = b.registry;
    let stored_codes = registry.stored_codes(&scope.resource_type, &filter.code);
    let param_names: Vec<String> = stored_codes.iter().map(|c| text_param(c)).collect();
    let plain_codes: Vec<&str> = stored_codes
        .iter()
        .copied()
        .filter(|code| {
            registry
                .get(&scope.resource_type, code)
                .is_some_and(|p| !is_protected(registry, &scope.resource_type, code, p.kind))
        })
        .collect();
    let mut alternatives = Vec::new();
    for value in &filter.values {
        let normalized = normalize_string(&unescape(value));
        let words = super::index_rows::text_words(&normalized);
        if words.is_empty() {
            return Err(param_error(filter, ":text needs at least one word"));
        }
        let mut all = Vec::new();
        for word in words {
            let mut stored = Vec::with_capacity(param_names.len());
            for param_name in &param_names {
                let token = BlindTerm::Word(word).token(b.keys, &scope.resource_type, param_name);
                let (param, token) = (b.text(param_name.clone()), b.text(token));
                stored.push(format!("(r.param = {param} AND r.token = {token})"));
            }
            let condition = format!(
                "r.resource_type = {} AND {}",
                scope.type_bind,
                any_of(&stored)
            );
            // Types with fixed displays store no word rows (see `phi::FIXED_DISPLAYS`).
            let mut found_by = Vec::new();
            if displays_indexed(&scope.resource_type) {
                found_by.push(scope.has_row("search_blind", &condition, false));
            }
            if let Some(codes) = known_codes_with_word(b, scope, &plain_codes, word) {
                found_by.push(codes);
            }
            // Neither (a word no known display has, on a type without word rows): `1 = 0`.
            all.push(any_of(&found_by));
        }
        alternatives.push(all_of(&all));
    }
    Ok(any_of(&alternatives))
}

/// The resource has a token row, under one of the plain parameters `params`, of a coding that
/// carries its known display and that display has `word`; `None` when no known display has it.
fn known_codes_with_word(
    b: &mut Builder,
    scope: &Scope,
    params: &[&str],
    word: &str,
) -> Option<String> {
    let registry = b.registry;
    let by_system = registry.known_displays.codes_with_word(word);
    if by_system.is_empty() || params.is_empty() {
        return None;
    }
    let params: Vec<String> = params.iter().map(|p| b.text(p.to_string())).collect();
    let codes: Vec<String> = by_system
        .into_iter()
        .map(|(system, codes)| {
            let system = b.text(system.to_string());
            let codes: Vec<String> = codes.into_iter().map(|c| b.text(c.to_string())).collect();
            format!("(r.system = {system} AND r.code IN ({}))", codes.join(", "))
        })
        .collect();
    let condition = format!(
        "r.resource_type = {} AND r.param IN ({}) AND {} AND r.known_display = 1",
        scope.type_bind,
        params.join(", "),
        any_of(&codes)
    );
    Some(scope.has_row("search_token", &condition, false))
}

/// A filter answered from `search_blind` rows stored under `param`.
fn blind_filter(
    b: &mut Builder,
    scope: &Scope,
    filter: &ParamFilter,
    param: &str,
) -> ApiResult<String> {
    let alternatives = filter
        .values
        .iter()
        .map(|v| blind_condition(b, &scope.resource_type, filter, param, v))
        .collect::<ApiResult<Vec<_>>>()?;
    let param = b.text(param.to_string());
    let condition = format!(
        "r.resource_type = {} AND r.param = {param} AND {}",
        scope.type_bind,
        any_of(&alternatives)
    );
    Ok(scope.has_row("search_blind", &condition, false))
}

fn table_for(kind: ParamType) -> &'static str {
    match kind {
        ParamType::Token => "search_token",
        ParamType::String => "search_string",
        ParamType::Reference => "search_reference",
        ParamType::Date => "search_date",
        ParamType::Number | ParamType::Quantity => "search_number",
        ParamType::Uri => "search_uri",
        ParamType::Composite | ParamType::Special => "search_token",
    }
}

fn param_error(filter: &ParamFilter, message: &str) -> ApiError {
    ApiError::bad_request(format!("search parameter `{}`: {message}", filter.code))
}

/// One value of a plain (non-PHI) parameter, as a condition on index row `r`.
fn value_condition(b: &mut Builder, filter: &ParamFilter, value: &str) -> ApiResult<String> {
    match filter.kind {
        ParamType::Token => token_condition(b, filter, value),
        ParamType::String => {
            let normalized = normalize_string(&unescape(value));
            match filter.modifier.as_deref() {
                Some("exact") => Ok(format!("r.exact = {}", b.text(unescape(value)))),
                Some("contains") => Ok(format!(
                    "r.normalized LIKE {} ESCAPE '\\'",
                    b.text(format!("%{}%", like_escape(&normalized)))
                )),
                _ => Ok(format!(
                    "r.normalized LIKE {} ESCAPE '\\'",
                    b.text(format!("{}%", like_escape(&normalized)))
                )),
            }
        }
        ParamType::Reference => reference_condition(b, filter, value),
        ParamType::Date => date_condition(b, filter, value, "r.start_us", "r.end_us"),
        ParamType::Number | ParamType::Quantity => number_condition(b, filter, value),
        ParamType::Uri => {
            let uri = unescape(value);
            match filter.modifier.as_deref() {
                // substr, not LIKE: uris compare case-sensitively, as in both databases' `=`.
                Some("below") => {
                    let v = b.text(uri);
                    Ok(format!("substr(r.value, 1, length({v})) = {v}"))
                }
                Some("above") => {
                    let v = b.text(uri);
                    Ok(format!("substr({v}, 1, length(r.value)) = r.value"))
                }
                _ => Ok(format!("r.value = {}", b.text(uri))),
            }
        }
        ParamType::Composite | ParamType::Special => Err(param_error(
            filter,
            "this parameter type is not supported yet",
        )),
    }
}

fn token_condition(b: &mut Builder, filter: &ParamFilter, value: &str) -> ApiResult<String> {
    let parts = split_unescaped(value, '|');
    Ok(match parts.as_slice() {
        [code] => format!("r.code = {}", b.text(unescape(code))),
        [system, code] if system.is_empty() => {
            format!("(r.system = '' AND r.code = {})", b.text(unescape(code)))
        }
        [system, code] if code.is_empty() => format!("r.system = {}", b.text(unescape(system))),
        [system, code] => {
            let (s, c) = (b.text(unescape(system)), b.text(unescape(code)));
            format!("(r.system = {s} AND r.code = {c})")
        }
        _ => {
            return Err(param_error(
                filter,
                "a token is [system]|[code]; escape a literal | as \\|",
            ));
        }
    })
}

fn reference_condition(b: &mut Builder, filter: &ParamFilter, value: &str) -> ApiResult<String> {
    let value = unescape(value);
    let local = value
        .strip_prefix(b.base_url)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(&value)
        .to_string();
    let type_modifier = filter
        .modifier
        .clone()
        .filter(|m| m.chars().next().is_some_and(|c| c.is_ascii_uppercase()));
    let segments: Vec<&str> = local.split('/').collect();
    let condition = match segments.as_slice() {
        _ if local.contains("://") || local.starts_with("urn:") => {
            format!("r.url = {}", b.text(local.clone()))
        }
        [id] => match &type_modifier {
            Some(t) => {
                let (t, id) = (b.text(t.clone()), b.text(id.to_string()));
                format!("(r.target_type = {t} AND r.target_id = {id})")
            }
            None => format!("r.target_id = {}", b.text(id.to_string())),
        },
        [t, id] => {
            let (t, id) = (b.text(t.to_string()), b.text(id.to_string()));
            format!("(r.target_type = {t} AND r.target_id = {id})")
        }
        [t, id, "_history", version] => {
            let (t, id, v) = (
                b.text(t.to_string()),
                b.text(id.to_string()),
                b.text(version.to_string()),
            );
            format!("(r.target_type = {t} AND r.target_id = {id} AND r.target_version = {v})")
        }
        _ => {
            return Err(param_error(
                filter,
                "a reference is [type]/[id], [id] or an absolute URL",
            ));
        }
    };
    Ok(condition)
}

/// The comparison prefixes of date, number and quantity values.
const PREFIXES: [&str; 9] = ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"];

fn split_prefix(value: &str) -> (&str, &str) {
    match value.get(..2) {
        Some(p) if PREFIXES.contains(&p) && value.len() > 2 => (p, &value[2..]),
        _ => ("eq", value),
    }
}

/// Date comparison between the target range [`start`, `end`) and the search range, with the
/// meanings of R4 search.html#prefix.
fn date_condition(
    b: &mut Builder,
    filter: &ParamFilter,
    value: &str,
    start: &str,
    end: &str,
) -> ApiResult<String> {
    let (prefix, text) = split_prefix(value);
    let (qs, qe) = parse_date_range(text).ok_or_else(|| {
        param_error(
            filter,
            "not a valid FHIR date (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss][Z|±hh:mm])",
        )
    })?;
    let (s, e) = (b.bind(Bind::Int(qs)), b.bind(Bind::Int(qe)));
    Ok(match prefix {
        "eq" => format!("({start} >= {s} AND {end} <= {e})"),
        "ne" => format!("NOT ({start} >= {s} AND {end} <= {e})"),
        "gt" => format!("{end} > {e}"),
        "lt" => format!("{start} < {s}"),
        "ge" => format!("{end} > {s}"),
        "le" => format!("{start} < {e}"),
        "sa" => format!("{start} >= {e}"),
        "eb" => format!("{end} <= {s}"),
        _ => {
            // ap: within 10% of the distance from now (R4), at least the value's own range.
            b.reusable = false;
            let slack = ((now_micros() - qs).abs() / 10).max(0);
            let (s, e) = (
                b.bind(Bind::Int(qs.saturating_sub(slack))),
                b.bind(Bind::Int(qe.saturating_add(slack))),
            );
            format!("({start} < {e} AND {end} > {s})")
        }
    })
}

/// Number and quantity comparisons. The target is the middle of its stored precision range; the
/// search value's implicit range (from its significant digits) decides `eq`.
fn number_condition(b: &mut Builder, filter: &ParamFilter, value: &str) -> ApiResult<String> {
    let mut parts = split_unescaped(value, '|');
    let (prefix, number) = split_prefix(&parts[0]);
    let prefix = prefix.to_string();
    let (mut q, mut low, mut high) =
        decimal_range(number).ok_or_else(|| param_error(filter, "not a valid number"))?;
    // A UCUM unit that converts is compared in canonical form, against the canonical rows.
    if is_canonical_ucum(filter.kind, value)
        && let [_, _, code] = parts.as_mut_slice()
        && let Some((factor, unit)) = ucum::canonical(&unescape(code))
    {
        (q, low, high) = (q * factor, low * factor, high * factor);
        *code = unit.replace('\\', "\\\\").replace('|', "\\|");
    }
    let mid = "((r.low + r.high) / 2)";
    let mut condition = match prefix.as_str() {
        "eq" => {
            let (l, h) = (b.bind(Bind::Real(low)), b.bind(Bind::Real(high)));
            format!("({mid} >= {l} AND {mid} < {h})")
        }
        "ne" => {
            let (l, h) = (b.bind(Bind::Real(low)), b.bind(Bind::Real(high)));
            format!("NOT ({mid} >= {l} AND {mid} < {h})")
        }
        "gt" | "sa" => format!("{mid} > {}", b.bind(Bind::Real(q))),
        "lt" | "eb" => format!("{mid} < {}", b.bind(Bind::Real(q))),
        "ge" => format!("{mid} >= {}", b.bind(Bind::Real(q))),
        "le" => format!("{mid} <= {}", b.bind(Bind::Real(q))),
        _ => {
            let slack = (q * 0.1).abs();
            let (l, h) = (b.bind(Bind::Real(q - slack)), b.bind(Bind::Real(q + slack)));
            format!("({mid} >= {l} AND {mid} <= {h})")
        }
    };
    match parts.as_slice() {
        [_] => {}
        [_, system, code] if filter.kind == ParamType::Quantity => {
            if !system.is_empty() {
                condition = format!("{condition} AND r.system = {}", b.text(unescape(system)));
            }
            if !code.is_empty() {
                condition = format!("{condition} AND r.code = {}", b.text(unescape(code)));
            }
        }
        _ => {
            return Err(param_error(
                filter,
                "a quantity is [prefix]number|[system]|[code]",
            ));
        }
    }
    Ok(format!("({condition})"))
}

/// One value of a protected parameter, as a condition on blind tokens. Only the semantics that can be
/// answered from tokens are offered; the rest is a clear 400 rather than a wrong answer.
fn blind_condition(
    b: &mut Builder,
    resource_type: &str,
    filter: &ParamFilter,
    param: &str,
    value: &str,
) -> ApiResult<String> {
    let keys = b.keys;
    let token = |term: BlindTerm| term.token(keys, resource_type, param);
    let unescaped = unescape(value);
    let token = match (filter.kind, filter.modifier.as_deref()) {
        (ParamType::String, None) => {
            let normalized = normalize_string(&unescaped);
            if normalized.chars().count() > MAX_PREFIX_CHARS {
                return Err(param_error(
                    filter,
                    &format!(
                        "values of this protected parameter are searchable by their first {MAX_PREFIX_CHARS} characters; shorten the value"
                    ),
                ));
            }
            if is_segmented(resource_type, &filter.code) {
                // `10.1.2.` means the segment `10.1.2`, which is what is indexed.
                token(BlindTerm::Prefix(
                    normalized.trim_end_matches(SEGMENT_SEPARATORS),
                ))
            } else {
                token(BlindTerm::Prefix(&normalized))
            }
        }
        (ParamType::String, Some("exact")) => token(BlindTerm::Exact(&unescaped)),
        (ParamType::Token, Some("of-type")) => match split_unescaped(value, '|').as_slice() {
            [system, code, value]
                if !system.is_empty() && !code.is_empty() && !value.is_empty() =>
            {
                token(BlindTerm::OfType(
                    &unescape(system),
                    &unescape(code),
                    &unescape(value),
                ))
            }
            _ => {
                return Err(param_error(
                    filter,
                    ":of-type takes [type system]|[type code]|[value], all three given; escape a literal | as \\|",
                ));
            }
        },
        (ParamType::Token, None) => match split_unescaped(value, '|').as_slice() {
            [code] => token(BlindTerm::Code(&unescape(code))),
            [system, code] if system.is_empty() => {
                token(BlindTerm::CodeWithoutSystem(&unescape(code)))
            }
            [system, code] if !code.is_empty() => {
                token(BlindTerm::SystemCode(&unescape(system), &unescape(code)))
            }
            _ => {
                return Err(param_error(
                    filter,
                    "this protected parameter is searchable by [system]|code or code only",
                ));
            }
        },
        (ParamType::Date, None) => {
            let (prefix, date) = split_prefix(value);
            let plain_date = date.len() <= 10 && parse_date_range(date).is_some();
            if prefix != "eq" || !plain_date {
                return Err(param_error(
                    filter,
                    "this protected date is searchable only for equality with a date (YYYY, YYYY-MM or YYYY-MM-DD); ranges would reveal it",
                ));
            }
            token(BlindTerm::Date(date))
        }
        (_, modifier) => {
            return Err(param_error(
                filter,
                &format!(
                    "{} is not available on this protected parameter: its values are stored as keyed tokens",
                    modifier.map_or_else(
                        || "this kind of search".to_string(),
                        |m| format!("the :{} modifier", truncate(m))
                    )
                ),
            ));
        }
    };
    Ok(format!("r.token = {}", b.text(token)))
}

/// Escape `%`, `_` and `\` for a LIKE pattern with `ESCAPE '\'`.
fn like_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(split_prefix("ge2020"), ("ge", "2020"));
        assert_eq!(split_prefix("2020"), ("eq", "2020"));
        assert_eq!(split_prefix("ne"), ("eq", "ne"));
    }
}
