//! Evaluation of the syntax tree over a resource's JSON.
//!
//! Collections are `Vec<Node>`; booleans follow FHIRPath's three-valued logic, where the empty
//! collection means "unknown" (`Patient.deceased != false` is empty for a patient without
//! `deceased`, and `exists() and …` turns that into `false`).

use std::borrow::Cow;

use serde_json::Value;

use super::node::{Node, push_children};
use super::parse::{BinOp, Expr, Function};
use super::reference::parse_literal_reference;
use super::{FhirPathError, Result};

struct Env<'b> {
    resource: &'b Value,
}

/// Evaluates `root` with `focus` as context and `resource` as `%resource`.
pub(super) fn evaluate<'b>(
    root: &Expr,
    focus: Node<'b>,
    resource: &'b Value,
) -> Result<Vec<Node<'b>>> {
    eval(root, &[focus], &Env { resource })
}

/// Whether a value of type `actual` is a `wanted` in the sense of FHIRPath `is`/`as`.
///
/// Type names in the spec's expressions are not spelled consistently (`value.as(DateTime)` next
/// to `as dateTime`), and FHIR has no two types whose names differ only in case, so the
/// comparison ignores case and a `FHIR.`/`System.` namespace.
fn type_matches(actual: &str, wanted: &str) -> bool {
    let wanted = wanted
        .strip_prefix("FHIR.")
        .or_else(|| wanted.strip_prefix("System."))
        .unwrap_or(wanted);
    actual.eq_ignore_ascii_case(wanted)
}

/// Fails with the first construct of the tree that evaluation does not support.
pub(super) fn check(e: &Expr) -> Result<()> {
    match e {
        Expr::Empty | Expr::Literal(..) | Expr::This | Expr::Resource | Expr::Constant(_) => Ok(()),
        Expr::Unsupported(what) => Err(FhirPathError::Unsupported(what.clone())),
        Expr::Member(target, _) => target.as_deref().map_or(Ok(()), check),
        Expr::Index(a, b) => check(a).and_then(|()| check(b)),
        Expr::Binary(BinOp::Unsupported(op), ..) => {
            Err(FhirPathError::Unsupported(format!("operator {op}")))
        }
        Expr::Binary(_, a, b) => check(a).and_then(|()| check(b)),
        Expr::Is(a, _) | Expr::As(a, _) => check(a),
        Expr::Call(target, f) => {
            target.as_deref().map_or(Ok(()), check)?;
            match f {
                Function::Where(c) | Function::Extension(c) | Function::Exists(Some(c)) => check(c),
                Function::Unsupported(name) => Err(FhirPathError::Unsupported(name.clone())),
                _ => Ok(()),
            }
        }
    }
}

fn boolean<'b>(b: bool) -> Vec<Node<'b>> {
    vec![Node::owned(Value::Bool(b), Some("boolean"))]
}

fn maybe_boolean<'b>(b: Option<bool>) -> Vec<Node<'b>> {
    b.map_or_else(Vec::new, boolean)
}

/// FHIRPath's singleton evaluation of a collection as a boolean: empty is "unknown", one
/// boolean is itself, any other single item is true.
fn to_bool(items: &[Node<'_>]) -> Result<Option<bool>> {
    match items {
        [] => Ok(None),
        [one] => Ok(Some(one.value.as_bool().unwrap_or(true))),
        _ => Err(FhirPathError::Evaluation(format!(
            "expected a single boolean, got {} items",
            items.len()
        ))),
    }
}

fn eval<'b>(e: &Expr, input: &[Node<'b>], env: &Env<'b>) -> Result<Vec<Node<'b>>> {
    match e {
        Expr::Empty => Ok(Vec::new()),
        Expr::Literal(v, t) => Ok(vec![Node::owned(v.clone(), Some(t))]),
        Expr::This => Ok(input.to_vec()),
        Expr::Resource => Ok(vec![Node::resource(env.resource)]),
        Expr::Constant(c) => Ok(vec![Node::owned(Value::String((*c).into()), Some("uri"))]),
        Expr::Unsupported(what) => Err(FhirPathError::Unsupported(what.clone())),
        Expr::Member(None, name) => {
            let mut out = Vec::new();
            for node in input {
                // A leading type name (`Patient.name`) selects the context resource itself.
                if name.starts_with(|c: char| c.is_ascii_uppercase())
                    && node
                        .value
                        .get("resourceType")
                        .and_then(Value::as_str)
                        .is_some_and(|rt| {
                            rt == name || name == "Resource" || name == "DomainResource"
                        })
                {
                    out.push(node.clone());
                } else {
                    push_children(node, name, &mut out);
                }
            }
            Ok(out)
        }
        Expr::Member(Some(target), name) => {
            let mut out = Vec::new();
            for node in eval(target, input, env)? {
                push_children(&node, name, &mut out);
            }
            Ok(out)
        }
        Expr::Index(target, index) => {
            let items = eval(target, input, env)?;
            let index = eval(index, input, env)?;
            let i = match index.as_slice() {
                [one] => one.value.as_u64(),
                _ => None,
            };
            let i =
                i.ok_or_else(|| FhirPathError::Evaluation("index must be one integer".into()))?;
            Ok(usize::try_from(i)
                .ok()
                .and_then(|i| items.into_iter().nth(i))
                .into_iter()
                .collect())
        }
        Expr::Is(target, t) => {
            let items = eval(target, input, env)?;
            match items.as_slice() {
                [] => Ok(Vec::new()),
                [one] => Ok(boolean(one.type_name().is_some_and(|a| type_matches(a, t)))),
                _ => Err(FhirPathError::Evaluation("`is` wants a single item".into())),
            }
        }
        Expr::As(target, t) => Ok(cast(eval(target, input, env)?, t)),
        Expr::Binary(op, a, b) => binary(*op, a, b, input, env),
        Expr::Call(target, f) => {
            let items = match target {
                Some(t) => eval(t, input, env)?,
                None => input.to_vec(),
            };
            call(f, items, input, env)
        }
    }
}

/// `as T` / `ofType(T)`: keeps the items that are a `T`, and types the ones whose type we do not
/// know (a non-choice element such as `Patient.name`) as `T` rather than dropping them.
fn cast<'b>(items: Vec<Node<'b>>, t: &str) -> Vec<Node<'b>> {
    items
        .into_iter()
        .filter_map(|mut node| match node.type_name() {
            Some(actual) => type_matches(actual, t).then_some(node),
            None => {
                let t = t.rsplit('.').next().unwrap_or(t);
                node.fhir_type = Some(t.to_owned());
                Some(node)
            }
        })
        .collect()
}

fn call<'b>(
    f: &Function,
    items: Vec<Node<'b>>,
    input: &[Node<'b>],
    env: &Env<'b>,
) -> Result<Vec<Node<'b>>> {
    Ok(match f {
        Function::Where(criteria) => filter(items, criteria, env)?,
        Function::Exists(None) => boolean(!items.is_empty()),
        Function::Exists(Some(criteria)) => boolean(!filter(items, criteria, env)?.is_empty()),
        Function::Empty => boolean(items.is_empty()),
        Function::HasValue => boolean(matches!(
            items.as_slice(),
            [one] if !matches!(*one.value, Value::Object(_) | Value::Array(_))
        )),
        Function::Not => maybe_boolean(to_bool(&items)?.map(|b| !b)),
        Function::First => items.into_iter().take(1).collect(),
        Function::Last => items.into_iter().last().into_iter().collect(),
        Function::Count => vec![Node::owned(Value::from(items.len()), Some("integer"))],
        Function::Resolve => items.iter().filter_map(|n| resolve(n, env)).collect(),
        Function::As(t) | Function::OfType(t) => cast(items, t),
        Function::Is(t) => match items.as_slice() {
            [] => Vec::new(),
            [one] => boolean(one.type_name().is_some_and(|a| type_matches(a, t))),
            _ => return Err(FhirPathError::Evaluation("is() wants a single item".into())),
        },
        Function::Extension(url) => {
            // The argument is evaluated against the outer context, like any FHIRPath argument
            // that does not iterate.
            let url = eval(url, input, env)?;
            let url = match url.as_slice() {
                [one] => one.value.as_str().map(str::to_owned),
                _ => None,
            };
            let url =
                url.ok_or_else(|| FhirPathError::Evaluation("extension() wants one url".into()))?;
            let mut out = Vec::new();
            for node in &items {
                push_children(node, "extension", &mut out);
            }
            out.retain(|ext| ext.value.get("url").and_then(Value::as_str) == Some(url.as_str()));
            out
        }
        Function::Unsupported(name) => return Err(FhirPathError::Unsupported(name.clone())),
    })
}

fn filter<'b>(items: Vec<Node<'b>>, criteria: &Expr, env: &Env<'b>) -> Result<Vec<Node<'b>>> {
    let mut out = Vec::new();
    for item in items {
        let keep = to_bool(&eval(criteria, std::slice::from_ref(&item), env)?)?;
        if keep == Some(true) {
            out.push(item);
        }
    }
    Ok(out)
}

/// `resolve()` without a database: what search parameters ask of it is the target's type
/// (`resolve() is Patient`), which a literal reference names. Contained resources (`#id`) are
/// resolved for real; a reference we cannot type (`urn:uuid:…`, a bare identifier) resolves to
/// nothing, as FHIRPath prescribes for unresolvable references.
fn resolve<'b>(node: &Node<'b>, env: &Env<'b>) -> Option<Node<'b>> {
    let reference = node.value.get("reference").and_then(Value::as_str);
    if let Some(local) = reference.and_then(|r| r.strip_prefix('#')) {
        let contained = env.resource.get("contained")?.as_array()?;
        let found = contained
            .iter()
            .find(|c| c.get("id").and_then(Value::as_str) == Some(local))?;
        return Some(Node::resource(found));
    }
    let (target_type, target_id) = match reference.and_then(parse_literal_reference) {
        Some(parsed) => (parsed.target_type, Some(parsed.id)),
        None => (
            node.value.get("type").and_then(Value::as_str)?.to_owned(),
            None,
        ),
    };
    // A stub standing in for the target: enough for `is`, `.id` and `resolve() is Patient`.
    let mut stub = serde_json::Map::new();
    stub.insert("resourceType".into(), Value::String(target_type.clone()));
    if let Some(id) = target_id {
        stub.insert("id".into(), Value::String(id));
    }
    Some(Node {
        value: Cow::Owned(Value::Object(stub)),
        fhir_type: Some(target_type),
    })
}

fn binary<'b>(
    op: BinOp,
    a: &Expr,
    b: &Expr,
    input: &[Node<'b>],
    env: &Env<'b>,
) -> Result<Vec<Node<'b>>> {
    if let BinOp::Unsupported(op) = op {
        return Err(FhirPathError::Unsupported(format!("operator {op}")));
    }
    let left = eval(a, input, env)?;
    // `and`/`or` short-circuit: `x.exists() and x != false` must not look at x when it is absent.
    match (op, to_bool_lenient(op, &left)?) {
        (BinOp::And, Some(false)) => return Ok(boolean(false)),
        (BinOp::Or, Some(true)) => return Ok(boolean(true)),
        (BinOp::Implies, Some(false)) => return Ok(boolean(true)),
        _ => {}
    }
    let right = eval(b, input, env)?;
    Ok(match op {
        BinOp::Union => union(left, right),
        BinOp::Eq => maybe_boolean(equals(&left, &right)),
        BinOp::Ne => maybe_boolean(equals(&left, &right).map(|b| !b)),
        BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge => {
            let ordering = match (left.as_slice(), right.as_slice()) {
                ([], _) | (_, []) => None,
                ([l], [r]) => compare(&l.value, &r.value),
                _ => {
                    return Err(FhirPathError::Evaluation(
                        "comparison wants single items".into(),
                    ));
                }
            };
            maybe_boolean(ordering.map(|o| match op {
                BinOp::Lt => o.is_lt(),
                BinOp::Gt => o.is_gt(),
                BinOp::Le => o.is_le(),
                _ => o.is_ge(),
            }))
        }
        BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Implies => {
            let (l, r) = (to_bool(&left)?, to_bool(&right)?);
            maybe_boolean(match op {
                BinOp::And => match (l, r) {
                    (Some(false), _) | (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                },
                BinOp::Or => match (l, r) {
                    (Some(true), _) | (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                },
                BinOp::Xor => l.zip(r).map(|(l, r)| l != r),
                _ => match (l, r) {
                    (Some(false), _) | (_, Some(true)) => Some(true),
                    (Some(true), Some(false)) => Some(false),
                    _ => None,
                },
            })
        }
        BinOp::Unsupported(_) => Vec::new(),
    })
}

/// FHIRPath's `|`: both sides, without duplicates (within each side as well as across). Large
/// collections are compared through their serialisation to stay linear.
fn union<'b>(left: Vec<Node<'b>>, right: Vec<Node<'b>>) -> Vec<Node<'b>> {
    const LINEAR_UP_TO: usize = 32;
    let total = left.len() + right.len();
    let mut out: Vec<Node<'b>> = Vec::with_capacity(total);
    if total <= LINEAR_UP_TO {
        for node in left.into_iter().chain(right) {
            if !out.iter().any(|n| n.value == node.value) {
                out.push(node);
            }
        }
    } else {
        let mut seen = std::collections::HashSet::with_capacity(total);
        out.extend(
            left.into_iter()
                .chain(right)
                .filter(|n| seen.insert(n.value.to_string())),
        );
    }
    out
}

fn to_bool_lenient(op: BinOp, items: &[Node<'_>]) -> Result<Option<bool>> {
    match op {
        BinOp::And | BinOp::Or | BinOp::Implies => to_bool(items),
        _ => Ok(None),
    }
}

/// FHIRPath `=` on collections: empty if either side is empty, else item-wise equality.
fn equals(left: &[Node<'_>], right: &[Node<'_>]) -> Option<bool> {
    if left.is_empty() || right.is_empty() {
        return None;
    }
    Some(
        left.len() == right.len()
            && left
                .iter()
                .zip(right)
                .all(|(l, r)| value_eq(&l.value, &r.value)),
    )
}

fn value_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        _ => a == b,
    }
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}
