//! Assertions for cases. Each returns `Err` with one line saying what was expected and what came
//! back (via [`Response::describe`], which never includes a whole body).

use serde_json::Value;

use crate::client::{FHIR_JSON, Response, clip};

/// What a case or a step of it returns.
pub type Outcome = Result<(), String>;

/// Starts the `Err` of a case that does not apply to this server: it tested an optional feature
/// the server says it lacks. The runner reports it as SKIP, which does not fail the run.
pub const SKIPPED: &str = "skipped: ";

/// Ends a case as skipped, saying why.
pub fn skip(reason: impl Into<String>) -> Outcome {
    Err(format!("{SKIPPED}{}", reason.into()))
}

/// Fails with `message` unless `condition` holds.
pub fn ensure(condition: bool, message: impl FnOnce() -> String) -> Outcome {
    if condition { Ok(()) } else { Err(message()) }
}

/// The status is one of `expected`.
pub fn status(response: &Response, expected: &[u16]) -> Outcome {
    ensure(expected.contains(&response.status), || {
        let wanted = expected.iter().map(u16::to_string).collect::<Vec<_>>().join(" or ");
        format!("{}: expected status {wanted}, got {}", response.label, response.describe())
    })
}

/// The status is a 4xx.
pub fn client_error(response: &Response) -> Outcome {
    ensure((400..500).contains(&response.status), || {
        format!("{}: expected a 4xx status, got {}", response.label, response.describe())
    })
}

/// The Content-Type is `application/fhir+json` (parameters such as charset allowed).
pub fn fhir_json(response: &Response) -> Outcome {
    let content_type = response.header("content-type").unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    ensure(media.eq_ignore_ascii_case(FHIR_JSON), || {
        format!("{}: expected Content-Type {FHIR_JSON}, got {:?}", response.label, clip(content_type, 80))
    })
}

/// The body is a resource of `resource_type`, served as FHIR JSON; returns it.
pub fn resource<'r>(response: &'r Response, resource_type: &str) -> Result<&'r Value, String> {
    let body = response.body()?;
    ensure(response.resource_type() == Some(resource_type), || {
        format!("{}: expected a {resource_type} body, got {}", response.label, response.describe())
    })?;
    fhir_json(response)?;
    Ok(body)
}

/// The body is an OperationOutcome with at least one issue, served as FHIR JSON.
pub fn operation_outcome(response: &Response) -> Outcome {
    let body = resource(response, "OperationOutcome")?;
    let issues = body["issue"].as_array().map_or(0, Vec::len);
    ensure(issues > 0, || format!("{}: the OperationOutcome has no issue", response.label))
}

/// An error answer: one of `expected` statuses with an OperationOutcome body.
pub fn error(response: &Response, expected: &[u16]) -> Outcome {
    status(response, expected)?;
    operation_outcome(response)
}

/// The string at a JSON pointer (`/meta/versionId`), if there is one.
pub fn str_at<'v>(value: &'v Value, pointer: &str) -> Option<&'v str> {
    value.pointer(pointer)?.as_str()
}

/// The string at `pointer` equals `expected`; `what` names the document in the message.
pub fn str_eq(value: &Value, pointer: &str, expected: &str, what: &str) -> Outcome {
    let got = str_at(value, pointer);
    ensure(got == Some(expected), || format!("{what}: expected {pointer} = {expected:?}, got {}", show(got)))
}

/// The ETag header is `W/"<version>"`.
pub fn etag(response: &Response, version: &str) -> Outcome {
    let expected = format!("W/\"{version}\"");
    let got = response.header("etag");
    ensure(got == Some(expected.as_str()), || {
        format!("{}: expected ETag {expected}, got {}", response.label, show(got))
    })
}

/// The Location header ends in `/<type>/<id>/_history/<version>`; returns the id.
pub fn location(response: &Response, resource_type: &str, version: &str) -> Result<String, String> {
    let header = response.header("location").or_else(|| response.header("content-location"));
    let bad = || {
        format!("{}: expected Location …/{resource_type}/<id>/_history/{version}, got {}", response.label, show(header))
    };
    let parsed = header.and_then(parse_location).ok_or_else(bad)?;
    ensure(parsed.0 == resource_type && parsed.2 == version, bad)?;
    Ok(parsed.1)
}

/// Splits `…/Type/id/_history/vid` (absolute or relative) into its three parts.
pub fn parse_location(location: &str) -> Option<(String, String, String)> {
    let parts: Vec<&str> = location.trim_end_matches('/').rsplit('/').take(4).collect();
    match parts.as_slice() {
        [version, "_history", id, resource_type] => {
            Some((resource_type.to_string(), id.to_string(), version.to_string()))
        }
        _ => None,
    }
}

/// A Bundle's entries (empty when there are none).
pub fn entries(bundle: &Value) -> &[Value] {
    bundle["entry"].as_array().map_or(&[], Vec::as_slice)
}

/// The ids of the entries' resources of `resource_type`, in order.
pub fn ids_of(bundle: &Value, resource_type: &str) -> Vec<String> {
    entries(bundle)
        .iter()
        .filter(|entry| entry["resource"]["resourceType"] == resource_type)
        .filter_map(|entry| entry["resource"]["id"].as_str().map(str::to_string))
        .collect()
}

/// The URL of a Bundle link with `relation` (`next`, `self`, …).
pub fn link<'b>(bundle: &'b Value, relation: &str) -> Option<&'b str> {
    bundle["link"].as_array()?.iter().find(|link| link["relation"] == relation)?["url"].as_str()
}

/// Bundle.total as a number.
pub fn total(bundle: &Value) -> Option<u64> {
    bundle["total"].as_u64()
}

fn show(value: Option<&str>) -> String {
    value.map_or_else(|| "nothing".to_string(), |value| format!("{:?}", clip(value, 100)))
}

/// `got` equals `expected` as JSON (object key order aside); on failure names the first
/// differing element rather than printing either document.
pub fn same_json(expected: &Value, got: &Value, what: &str) -> Outcome {
    match first_difference(expected, got, "") {
        None => Ok(()),
        Some(difference) => Err(format!("{what}: {difference}")),
    }
}

/// Every element of `sent` (but `id` and `meta`, which the server owns) came back unchanged.
/// The server may add to what was sent (fhirvault adds a pseudonym identifier to a Patient), but
/// not drop or rewrite any of it.
pub fn kept_elements(sent: &Value, got: &Value, what: &str) -> Outcome {
    let Some(sent) = sent.as_object() else { return Ok(()) };
    for (name, value) in sent.iter().filter(|(name, _)| *name != "id" && *name != "meta") {
        let path = format!("/{name}");
        let difference = match got.get(name) {
            None => Some(format!("{path} is missing")),
            Some(returned) => lost_part(value, returned, &path),
        };
        if let Some(difference) = difference {
            return Err(format!("{what}: not what was sent: {difference}"));
        }
    }
    Ok(())
}

/// The first part of `sent` that `got` lacks or changed: objects may gain members and arrays
/// items, but every sent member and item must be there with the same value.
fn lost_part(sent: &Value, got: &Value, path: &str) -> Option<String> {
    match (sent, got) {
        (Value::Object(sent), Value::Object(got)) => sent.iter().find_map(|(name, value)| {
            let child = format!("{path}/{name}");
            match got.get(name) {
                None => Some(format!("{child} is missing")),
                Some(other) => lost_part(value, other, &child),
            }
        }),
        (Value::Array(sent), Value::Array(got)) => sent.iter().enumerate().find_map(|(index, item)| {
            if got.iter().any(|other| lost_part(item, other, "").is_none()) {
                return None;
            }
            let child = format!("{path}/{index}");
            Some(match got.get(index) {
                Some(other) => lost_part(item, other, &child).unwrap_or_else(|| format!("{child} is missing")),
                None => format!("{child} is missing"),
            })
        }),
        _ => first_difference(sent, got, path),
    }
}

fn first_difference(expected: &Value, got: &Value, path: &str) -> Option<String> {
    match (expected, got) {
        (Value::Object(expected), Value::Object(got)) => {
            for (name, value) in expected {
                let child = format!("{path}/{name}");
                match got.get(name) {
                    None => return Some(format!("{child} is missing")),
                    Some(other) => {
                        if let Some(difference) = first_difference(value, other, &child) {
                            return Some(difference);
                        }
                    }
                }
            }
            got.keys().find(|name| !expected.contains_key(*name)).map(|name| format!("{path}/{name} is unexpected"))
        }
        (Value::Array(expected), Value::Array(got)) => {
            if expected.len() != got.len() {
                return Some(format!("{} has {} item(s), expected {}", or_root(path), got.len(), expected.len()));
            }
            expected
                .iter()
                .zip(got)
                .enumerate()
                .find_map(|(index, (a, b))| first_difference(a, b, &format!("{path}/{index}")))
        }
        // Numbers compare by their text: with arbitrary_precision `1.50` and `1.5` differ, as in FHIR.
        (expected, got) if expected == got => None,
        (expected, got) => Some(format!(
            "{} is {}, expected {}",
            or_root(path),
            clip(&got.to_string(), 60),
            clip(&expected.to_string(), 60)
        )),
    }
}

fn or_root(path: &str) -> &str {
    if path.is_empty() { "the document" } else { path }
}

/// The numbers written after `"<key>":` in raw JSON text, exactly as written (`1.50`, `72`).
/// Used to check decimal fidelity on the wire, independent of any JSON library.
pub fn raw_numbers(text: &str, key: &str) -> Vec<String> {
    let needle = format!("\"{key}\"");
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(&needle) {
        rest = &rest[at + needle.len()..];
        let after = rest.trim_start();
        let Some(after) = after.strip_prefix(':') else { continue };
        let number: String = after
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'))
            .collect();
        if !number.is_empty() {
            found.push(number);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn raw_numbers_keeps_the_written_form() {
        let text = "{\"a\":{\"value\" : 1.50},\"b\":[{\"value\":72}, {\"value\":\"x\"}]}";
        assert_eq!(raw_numbers(text, "value"), vec!["1.50", "72"]);
    }

    #[test]
    fn parse_location_takes_the_last_four_segments() {
        let parsed = parse_location("http://h/fhir/Patient/abc/_history/2");
        assert_eq!(parsed, Some(("Patient".into(), "abc".into(), "2".into())));
        assert_eq!(parse_location("Patient/abc"), None);
    }

    #[test]
    fn kept_elements_allows_additions_but_not_changes() {
        let sent = json!({"identifier": [{"value": "a"}], "gender": "female"});
        let added = json!({"identifier": [{"value": "a"}, {"value": "pseudonym"}], "gender": "female", "id": "1"});
        assert_eq!(kept_elements(&sent, &added, "x"), Ok(()));
        let changed = json!({"identifier": [{"value": "b"}], "gender": "female"});
        assert_eq!(
            kept_elements(&sent, &changed, "x"),
            Err("x: not what was sent: /identifier/0/value is \"b\", expected \"a\"".into())
        );
    }

    #[test]
    fn first_difference_names_the_path() {
        let a = json!({"name": [{"family": "A"}], "gender": "female"});
        let b = json!({"name": [{"family": "B"}], "gender": "female"});
        assert_eq!(first_difference(&a, &b, ""), Some("/name/0/family is \"B\", expected \"A\"".into()));
        let decimal: Value = serde_json::from_str("{\"v\":1.50}").unwrap();
        let rounded: Value = serde_json::from_str("{\"v\":1.5}").unwrap();
        assert!(first_difference(&decimal, &rounded, "").is_some());
    }
}
