//! Search (R4 search.html, http.html#search): token, string, reference and date parameters,
//! paging, strict handling, POST _search and _summary=count.

use serde_json::{Value, json};

use super::{Case, Created, Ctx, searchset};
use crate::check::{self, Outcome, ensure};
use crate::client::query;
use crate::fixtures::{self, HEART_RATE, LOINC, identifier_query};

pub fn cases() -> Vec<Case> {
    vec![
        Case::new("search-001", "Patient?identifier=system|value finds exactly the created Patient", by_identifier),
        Case::new(
            "search-002",
            "Patient?name=<lowercase prefix> finds it (starts-with, case-insensitive)",
            by_name_prefix,
        ),
        Case::new("search-003", "Patient?name= is accent-insensitive (nunez finds Núñez)", by_name_accents),
        Case::new("search-004", "Patient?name= matches the start of a name, not the middle", by_name_not_contains),
        Case::new("search-005", "Observation?subject=Patient/<id>&code=loinc|8867-4 finds it", by_subject_and_code),
        Case::new("search-006", "Observation?date= with ge, lt, gt and month precision", by_date),
        Case::new("search-007", "_count=1 returns one entry and a next link to the rest", paging),
        Case::new("search-008", "an unknown parameter is ignored by default", unknown_parameter_lenient),
        Case::new("search-009", "an unknown parameter with Prefer: handling=strict → 400", unknown_parameter_strict),
        Case::new("search-010", "POST Patient/_search with a form body finds the same ids as GET", post_search),
        Case::new("search-011", "_summary=count gives the total and no entries", summary_count),
        Case::new("search-012", "a deleted resource is no longer found", deleted_not_found),
        Case::new("search-013", "Patient?_id=<id> finds exactly it", by_id),
        Case::new("search-014", "Patient?name:exact= matches case-sensitively and whole", by_name_exact),
        Case::new("search-015", "Observation?patient=<id> finds the Patient's Observation", by_patient),
        Case::new(
            "search-016",
            "Observation?subject:Patient.identifier=system|value (chained, if supported)",
            chained_identifier,
        ),
        Case::new("search-017", "Observation?_include=Observation:subject adds the Patient (if supported)", include),
        Case::new(
            "search-018",
            "Patient?_revinclude=Observation:subject adds the Observation (if supported)",
            revinclude,
        ),
        Case::new("search-019", "Patient?identifier=a,b (OR) finds both", identifier_or),
        Case::new(
            "search-020",
            "Patient?_has:Observation:subject:code=loinc|8867-4 finds the Patient (if supported)",
            has,
        ),
        Case::new(
            "search-021",
            "a chain through a deleted Patient finds nothing (if chains are supported)",
            chain_through_deleted,
        ),
        Case::new(
            "search-022",
            "_include + _revinclude:iterate add the Patient and its other Observation, each once (if supported)",
            include_iterate,
        ),
        Case::new("search-023", "Patient/<id>/Observation finds the Patient's Observation and no other", compartment),
        Case::new(
            "search-024",
            "code-value-quantity=loinc|8867-4$gt70 finds a 72 /min heart rate, $gt80 does not",
            composite,
        ),
        Case::new(
            "search-025",
            "_sort=-date orders a Patient's Observations newest first; next links page through them",
            sort_and_page,
        ),
        Case::new("search-026", "_summary=true leaves out non-summary elements and tags the match SUBSETTED", summary),
        Case::new("search-027", "value-quantity in another UCUM unit (1.2 /s) finds 72 /min", ucum),
        Case::new(
            "search-028",
            "Patient?identifier:of-type=v2-0203|MR|<value> matches the type and value together (if supported)",
            of_type,
        ),
        Case::new(
            "search-029",
            "Observation?status:below=observation-status|amended finds a corrected Observation, :above=…|corrected too (if supported)",
            token_below_above,
        ),
        Case::new(
            "search-030",
            "_contained=false (the default) is accepted and finds the same resources",
            contained_false,
        ),
        Case::new(
            "search-031",
            "a code element matches system|code with the system its binding implies (gender=administrative-gender|female), not another",
            bound_system,
        ),
        Case::new(
            "search-032",
            "a parameter with 500 values (OR) finds the one that matches, by POST _search",
            many_values,
        ),
        Case::new(
            "search-033",
            "_total=accurate: the next page's total also counts a match created after the first page",
            accurate_total_per_page,
        ),
        Case::new(
            "search-034",
            ":text matches the words of a coding's display and of the concept's text, each Observation by its own",
            text_of_displays,
        ),
    ]
}

/// The ids of the `resource_type` matches of a search.
fn found(ctx: &Ctx, resource_type: &str, params: &[(&str, &str)]) -> Result<Vec<String>, String> {
    let bundle = ctx.search(resource_type, params)?;
    Ok(check::ids_of(&bundle, resource_type))
}

/// `ids` is exactly `[expected]`.
fn exactly(ids: &[String], expected: &str, what: &str) -> Outcome {
    ensure(ids == [expected], || format!("{what}: expected exactly [{expected:?}], got {ids:?}"))
}

fn excludes(ids: &[String], unexpected: &str, what: &str) -> Outcome {
    ensure(!ids.iter().any(|id| id == unexpected), || {
        format!("{what}: expected {unexpected:?} not to match, but it did")
    })
}

fn describe(params: &[(&str, &str)]) -> String {
    params.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("&")
}

fn by_identifier(ctx: &Ctx) -> Outcome {
    let unique = ctx.unique();
    let created = ctx.create(&fixtures::patient(&unique))?;
    let identifier = identifier_query(&unique);
    let params = [("identifier", identifier.as_str())];
    let bundle = ctx.search("Patient", &params)?;
    exactly(&check::ids_of(&bundle, "Patient"), &created.id, &describe(&params))?;
    let entry = &check::entries(&bundle)[0];
    check::str_eq(entry, "/search/mode", "match", "the searchset entry")?;
    let full_url = entry["fullUrl"].as_str().unwrap_or_default();
    ensure(full_url.ends_with(&format!("Patient/{}", created.id)), || {
        format!("the searchset entry: expected fullUrl …/Patient/{}, got {full_url:?}", created.id)
    })
}

fn by_name_prefix(ctx: &Ctx) -> Outcome {
    let unique = ctx.unique();
    let created = ctx.create(&fixtures::patient(&unique))?;
    let family = fixtures::family(&unique);
    // "Conf<unique>Doe" → "conf<unique>": lowercase, and shorter than the name.
    let prefix = family.to_lowercase().trim_end_matches("doe").to_string();
    let ids = found(ctx, "Patient", &[("name", &prefix)])?;
    exactly(&ids, &created.id, &format!("name={prefix}"))
}

fn by_name_accents(ctx: &Ctx) -> Outcome {
    let unique = ctx.unique();
    let mut patient = fixtures::patient(&unique);
    patient["name"] = json!([{ "family": format!("Núñez{unique}"), "given": ["Zoë"] }]);
    let created = ctx.create(&patient)?;
    let query = format!("nunez{unique}");
    let ids = found(ctx, "Patient", &[("name", &query)])?;
    exactly(&ids, &created.id, &format!("name={query}"))
}

fn by_name_not_contains(ctx: &Ctx) -> Outcome {
    let unique = ctx.unique();
    let created = ctx.create(&fixtures::patient(&unique))?;
    // The family is "Conf<unique>Doe": "<unique>" is inside it but not at its start.
    let ids = found(ctx, "Patient", &[("name", &unique)])?;
    excludes(&ids, &created.id, &format!("name={unique}"))
}

/// A Patient and a heart-rate Observation of theirs.
fn patient_with_observation(ctx: &Ctx) -> Result<(Created, Created), String> {
    let patient = ctx.create(&fixtures::patient(&ctx.unique()))?;
    let observation = ctx.create(&fixtures::observation(&ctx.unique(), Some(&patient.reference())))?;
    Ok((patient, observation))
}

fn by_subject_and_code(ctx: &Ctx) -> Outcome {
    let (patient, observation) = patient_with_observation(ctx)?;
    let subject = patient.reference();
    let full_code = format!("{LOINC}|{HEART_RATE}");
    for code in [full_code.as_str(), HEART_RATE] {
        let params = [("subject", subject.as_str()), ("code", code)];
        exactly(&found(ctx, "Observation", &params)?, &observation.id, &describe(&params))?;
    }
    let other = format!("{LOINC}|8310-5");
    let params = [("subject", subject.as_str()), ("code", other.as_str())];
    let ids = found(ctx, "Observation", &params)?;
    ensure(ids.is_empty(), || format!("{}: expected no match, got {ids:?}", describe(&params)))
}

fn by_date(ctx: &Ctx) -> Outcome {
    // The fixture Observation is effective 2026-03-15T10:30:00Z.
    let (patient, observation) = patient_with_observation(ctx)?;
    let subject = patient.reference();
    for (date, should_match) in [
        ("ge2026-01-01", true),
        ("lt2026-01-01", false),
        ("2026-03", true),
        ("gt2026-04-01", false),
        ("le2026-03-15", true),
    ] {
        let params = [("subject", subject.as_str()), ("date", date)];
        let ids = found(ctx, "Observation", &params)?;
        if should_match {
            exactly(&ids, &observation.id, &describe(&params))?;
        } else {
            ensure(ids.is_empty(), || format!("{}: expected no match, got {ids:?}", describe(&params)))?;
        }
    }
    Ok(())
}

/// Two Patients sharing one identifier; returns the identifier query and their ids (sorted).
fn two_patients(ctx: &Ctx) -> Result<(String, Vec<String>), String> {
    let unique = ctx.unique();
    let mut ids = vec![ctx.create(&fixtures::patient(&unique))?.id, ctx.create(&fixtures::patient(&unique))?.id];
    ids.sort();
    Ok((identifier_query(&unique), ids))
}

fn paging(ctx: &Ctx) -> Outcome {
    let (identifier, expected) = two_patients(ctx)?;
    let first = ctx.get(&format!("Patient?{}", query(&[("identifier", &identifier), ("_count", "1")]))).send()?;
    let page1 = searchset(&first)?;
    let mut ids = check::ids_of(&page1, "Patient");
    ensure(ids.len() == 1, || format!("{}: expected 1 entry, got {}", first.label, ids.len()))?;
    let next = check::link(&page1, "next").ok_or_else(|| format!("{}: expected a next link, got none", first.label))?;

    let second = ctx.get(next).send()?;
    let page2 = searchset(&second)?;
    let more = check::ids_of(&page2, "Patient");
    ensure(more.len() == 1, || format!("{}: expected 1 entry on the next page, got {}", second.label, more.len()))?;
    ids.extend(more);
    ids.sort();
    ensure(ids == expected, || format!("the two pages: expected {expected:?}, got {ids:?}"))?;
    ensure(check::link(&page2, "next").is_none(), || {
        format!("{}: expected no next link on the last page", second.label)
    })
}

/// R4 search.html#total: with `_total=accurate` the server "must ensure that the total number of
/// matches is accurate", so a page read after a write counts that write.
fn accurate_total_per_page(ctx: &Ctx) -> Outcome {
    let unique = ctx.unique();
    for _ in 0..2 {
        ctx.create(&fixtures::patient(&unique))?;
    }
    let identifier = identifier_query(&unique);
    let params = [("identifier", identifier.as_str()), ("_count", "1"), ("_total", "accurate")];
    let first = ctx.get(&format!("Patient?{}", query(&params))).send()?;
    let page1 = searchset(&first)?;
    ensure(check::total(&page1) == Some(2), || {
        format!("{}: expected total 2, got {:?}", first.label, check::total(&page1))
    })?;
    let next = check::link(&page1, "next").ok_or_else(|| format!("{}: expected a next link, got none", first.label))?;
    ctx.create(&fixtures::patient(&unique))?;
    let second = ctx.get(next).send()?;
    let page2 = searchset(&second)?;
    ensure(check::total(&page2) == Some(3), || {
        format!("{}: expected total 3 after a third match was created, got {:?}", second.label, check::total(&page2))
    })
}

fn text_of_displays(ctx: &Ctx) -> Outcome {
    let unique = ctx.unique();
    let mut standard = fixtures::observation(&unique, None);
    standard["code"]["text"] = json!("Resting pulse");
    let standard = ctx.create(&standard)?;
    // The same LOINC code with a display of its own: its words are its own.
    let mut own = fixtures::observation(&unique, None);
    own["code"]["coding"][0]["display"] = json!("Puls");
    let own = ctx.create(&own)?;
    let identifier = identifier_query(&unique);
    let with = |text: &'static str| [("identifier", identifier.clone()), ("code:text", text.to_string())];
    let search = |text: &'static str| -> Result<(Vec<String>, String), String> {
        let params = with(text);
        let params: Vec<(&str, &str)> = params.iter().map(|(n, v)| (*n, v.as_str())).collect();
        Ok((found(ctx, "Observation", &params)?, describe(&params)))
    };
    let (ids, what) = search("heart rate")?;
    exactly(&ids, &standard.id, &what)?;
    let (ids, what) = search("RESTING heart")?;
    exactly(&ids, &standard.id, &what)?;
    let (ids, what) = search("puls")?;
    exactly(&ids, &own.id, &what)?;
    let (ids, what) = search("heart puls")?;
    ensure(ids.is_empty(), || format!("{what}: expected no match, got {ids:?}"))
}

fn unknown_parameter_lenient(ctx: &Ctx) -> Outcome {
    found_along_with(ctx, ("no-such-parameter", "x"))
}

/// A new Patient is found by its identifier together with `extra`, a parameter that must not
/// change the answer.
fn found_along_with(ctx: &Ctx, extra: (&str, &str)) -> Outcome {
    let unique = ctx.unique();
    let created = ctx.create(&fixtures::patient(&unique))?;
    let identifier = identifier_query(&unique);
    let params = [("identifier", identifier.as_str()), extra];
    exactly(&found(ctx, "Patient", &params)?, &created.id, &describe(&params))
}

fn unknown_parameter_strict(ctx: &Ctx) -> Outcome {
    let unique = ctx.unique();
    ctx.setup(fixtures::patient(&unique))?;
    let params = query(&[("identifier", &identifier_query(&unique)), ("no-such-parameter", "x")]);
    let response = ctx.get(&format!("Patient?{params}")).header("Prefer", "handling=strict").send()?;
    check::error(&response, &[400])
}

fn post_search(ctx: &Ctx) -> Outcome {
    let (identifier, expected) = two_patients(ctx)?;
    let get = ctx.search("Patient", &[("identifier", &identifier)])?;
    let mut by_get = check::ids_of(&get, "Patient");
    by_get.sort();
    ensure(by_get == expected, || format!("GET identifier={identifier}: expected {expected:?}, got {by_get:?}"))?;

    let form = query(&[("identifier", &identifier)]);
    let response = ctx.post("Patient/_search").body("application/x-www-form-urlencoded", form).send()?;
    let post = searchset(&response)?;
    let mut by_post = check::ids_of(&post, "Patient");
    by_post.sort();
    ensure(by_post == expected, || format!("{}: expected the GET ids {expected:?}, got {by_post:?}", response.label))
}

fn summary_count(ctx: &Ctx) -> Outcome {
    let (identifier, _) = two_patients(ctx)?;
    let params = [("identifier", identifier.as_str()), ("_summary", "count")];
    let bundle = ctx.search("Patient", &params)?;
    let total = check::total(&bundle);
    ensure(total == Some(2), || format!("{}: expected total 2, got {total:?}", describe(&params)))?;
    let entries = check::entries(&bundle).len();
    ensure(entries == 0, || format!("{}: expected no entries, got {entries}", describe(&params)))
}

fn deleted_not_found(ctx: &Ctx) -> Outcome {
    let unique = ctx.unique();
    let created = ctx.create(&fixtures::patient(&unique))?;
    let response = ctx.delete(&created.reference()).send()?;
    check::status(&response, &[200, 204]).map_err(|error| format!("setup: {error}"))?;
    let identifier = identifier_query(&unique);
    let ids = found(ctx, "Patient", &[("identifier", &identifier)])?;
    ensure(ids.is_empty(), || format!("identifier={identifier} after delete: expected no match, got {ids:?}"))
}

fn by_id(ctx: &Ctx) -> Outcome {
    let created = ctx.create(&fixtures::patient(&ctx.unique()))?;
    exactly(&found(ctx, "Patient", &[("_id", &created.id)])?, &created.id, &format!("_id={}", created.id))
}

fn by_name_exact(ctx: &Ctx) -> Outcome {
    let unique = ctx.unique();
    let created = ctx.create(&fixtures::patient(&unique))?;
    let family = fixtures::family(&unique);
    exactly(&found(ctx, "Patient", &[("name:exact", &family)])?, &created.id, &format!("name:exact={family}"))?;
    let lower = family.to_lowercase();
    excludes(&found(ctx, "Patient", &[("name:exact", &lower)])?, &created.id, &format!("name:exact={lower}"))?;
    let prefix = &family[..family.len() - 3];
    excludes(&found(ctx, "Patient", &[("name:exact", prefix)])?, &created.id, &format!("name:exact={prefix}"))
}

fn by_patient(ctx: &Ctx) -> Outcome {
    let (patient, observation) = patient_with_observation(ctx)?;
    let ids = found(ctx, "Observation", &[("patient", &patient.id)])?;
    exactly(&ids, &observation.id, &format!("patient={}", patient.id))
}

/// Searches with `Prefer: handling=strict` for an optional feature: `None` when the server
/// refuses it with a 4xx OperationOutcome (it says it lacks the feature, which R4 allows).
fn optional_search(ctx: &Ctx, resource_type: &str, params: &[(&str, &str)]) -> Result<Option<Value>, String> {
    let response = ctx.get(&format!("{resource_type}?{}", query(params))).header("Prefer", "handling=strict").send()?;
    if (400..500).contains(&response.status) && response.resource_type() == Some("OperationOutcome") {
        return Ok(None);
    }
    searchset(&response).map(Some)
}

fn unsupported(params: &[(&str, &str)]) -> Outcome {
    check::skip(format!("the server refuses {} under handling=strict (optional in R4)", describe(params)))
}

fn chained_identifier(ctx: &Ctx) -> Outcome {
    let unique = ctx.unique();
    let patient = ctx.create(&fixtures::patient(&unique))?;
    let observation = ctx.create(&fixtures::observation(&ctx.unique(), Some(&patient.reference())))?;
    let identifier = identifier_query(&unique);
    let params = [("subject:Patient.identifier", identifier.as_str())];
    let Some(bundle) = optional_search(ctx, "Observation", &params)? else { return unsupported(&params) };
    exactly(&check::ids_of(&bundle, "Observation"), &observation.id, &describe(&params))
}

/// The search.mode of the entry holding `resource_type/id`.
fn mode_of<'b>(bundle: &'b Value, resource_type: &str, id: &str) -> Option<&'b str> {
    check::entries(bundle)
        .iter()
        .find(|entry| entry["resource"]["resourceType"] == resource_type && entry["resource"]["id"] == id)
        .and_then(|entry| entry["search"]["mode"].as_str())
}

fn expect_mode(bundle: &Value, resource_type: &str, id: &str, mode: &str, what: &str) -> Outcome {
    let got = mode_of(bundle, resource_type, id);
    ensure(got == Some(mode), || {
        let found = if got.is_none() { "no such entry".to_string() } else { format!("search.mode {got:?}") };
        format!("{what}: expected {resource_type}/{id} with search.mode {mode}, got {found}")
    })
}

fn include(ctx: &Ctx) -> Outcome {
    let (patient, observation) = patient_with_observation(ctx)?;
    let params = [("_id", observation.id.as_str()), ("_include", "Observation:subject")];
    let Some(bundle) = optional_search(ctx, "Observation", &params)? else { return unsupported(&params) };
    expect_mode(&bundle, "Observation", &observation.id, "match", &describe(&params))?;
    expect_mode(&bundle, "Patient", &patient.id, "include", &describe(&params))
}

fn revinclude(ctx: &Ctx) -> Outcome {
    let (patient, observation) = patient_with_observation(ctx)?;
    let params = [("_id", patient.id.as_str()), ("_revinclude", "Observation:subject")];
    let Some(bundle) = optional_search(ctx, "Patient", &params)? else { return unsupported(&params) };
    expect_mode(&bundle, "Patient", &patient.id, "match", &describe(&params))?;
    expect_mode(&bundle, "Observation", &observation.id, "include", &describe(&params))
}

fn has(ctx: &Ctx) -> Outcome {
    let (patient, _) = patient_with_observation(ctx)?;
    let code = format!("{LOINC}|{HEART_RATE}");
    let params = [("_id", patient.id.as_str()), ("_has:Observation:subject:code", code.as_str())];
    let Some(bundle) = optional_search(ctx, "Patient", &params)? else { return unsupported(&params) };
    exactly(&check::ids_of(&bundle, "Patient"), &patient.id, &describe(&params))?;
    let other = [("_id", patient.id.as_str()), ("_has:Observation:subject:code", "http://loinc.org|0000-0")];
    let ids = found(ctx, "Patient", &other)?;
    ensure(ids.is_empty(), || format!("{}: expected no match, got {ids:?}", describe(&other)))
}

fn chain_through_deleted(ctx: &Ctx) -> Outcome {
    let unique = ctx.unique();
    let patient = ctx.create(&fixtures::patient(&unique))?;
    ctx.create(&fixtures::observation(&ctx.unique(), Some(&patient.reference())))?;
    let identifier = identifier_query(&unique);
    let params = [("subject:Patient.identifier", identifier.as_str())];
    if optional_search(ctx, "Observation", &params)?.is_none() {
        return unsupported(&params);
    }
    let response = ctx.delete(&patient.reference()).send()?;
    check::status(&response, &[200, 204]).map_err(|error| format!("setup: {error}"))?;
    let ids = found(ctx, "Observation", &params)?;
    ensure(ids.is_empty(), || {
        format!("{} after deleting the Patient: expected no match, got {ids:?}", describe(&params))
    })
}

fn include_iterate(ctx: &Ctx) -> Outcome {
    let (patient, observation) = patient_with_observation(ctx)?;
    let second = ctx.create(&fixtures::observation(&ctx.unique(), Some(&patient.reference())))?;
    let params = [
        ("_id", observation.id.as_str()),
        ("_include", "Observation:subject"),
        ("_revinclude:iterate", "Observation:subject"),
    ];
    let Some(bundle) = optional_search(ctx, "Observation", &params)? else { return unsupported(&params) };
    let what = describe(&params);
    expect_mode(&bundle, "Observation", &observation.id, "match", &what)?;
    expect_mode(&bundle, "Patient", &patient.id, "include", &what)?;
    expect_mode(&bundle, "Observation", &second.id, "include", &what)?;
    let entries = check::entries(&bundle).len();
    ensure(entries == 3, || format!("{what}: expected 3 entries (each resource once), got {entries}"))
}

fn compartment(ctx: &Ctx) -> Outcome {
    let (patient, observation) = patient_with_observation(ctx)?;
    let (other, _) = patient_with_observation(ctx)?;
    let code = format!("{LOINC}|{HEART_RATE}");
    let params = [("code", code.as_str())];
    let bundle = ctx.search(&format!("{}/Observation", patient.reference()), &params)?;
    exactly(
        &check::ids_of(&bundle, "Observation"),
        &observation.id,
        &format!("{}/Observation?code={code}", patient.reference()),
    )?;
    let bundle = ctx.search(&format!("{}/Observation", other.reference()), &params)?;
    excludes(
        &check::ids_of(&bundle, "Observation"),
        &observation.id,
        &format!("{}/Observation?code={code}", other.reference()),
    )
}

fn composite(ctx: &Ctx) -> Outcome {
    let (patient, observation) = patient_with_observation(ctx)?;
    let subject = patient.reference();
    for (value, expected) in [("gt70", true), ("gt80", false)] {
        let code = format!("{LOINC}|{HEART_RATE}${value}");
        let params = [("subject", subject.as_str()), ("code-value-quantity", code.as_str())];
        let ids = found(ctx, "Observation", &params)?;
        let what = describe(&params);
        if expected { exactly(&ids, &observation.id, &what)? } else { excludes(&ids, &observation.id, &what)? }
    }
    Ok(())
}

fn sort_and_page(ctx: &Ctx) -> Outcome {
    let patient = ctx.create(&fixtures::patient(&ctx.unique()))?;
    let mut created = Vec::new();
    for day in ["2026-01-05", "2026-03-05", "2026-02-05"] {
        let mut observation = fixtures::observation(&ctx.unique(), Some(&patient.reference()));
        observation["effectiveDateTime"] = json!(day);
        created.push((day, ctx.create(&observation)?.id));
    }
    created.sort();
    let expected: Vec<String> = created.into_iter().rev().map(|(_, id)| id).collect();
    let subject = patient.reference();
    let params = [("subject", subject.as_str()), ("_sort", "-date"), ("_count", "1")];
    let mut bundle = ctx.search("Observation", &params)?;
    let mut seen = check::ids_of(&bundle, "Observation");
    while let Some(next) = check::link(&bundle, "next").map(str::to_string) {
        bundle = searchset(&ctx.get(&next).send()?)?;
        seen.extend(check::ids_of(&bundle, "Observation"));
    }
    ensure(seen == expected, || format!("{}: expected {expected:?} over the pages, got {seen:?}", describe(&params)))
}

fn summary(ctx: &Ctx) -> Outcome {
    let (_, observation) = patient_with_observation(ctx)?;
    let params = [("_id", observation.id.as_str()), ("_summary", "true")];
    let bundle = ctx.search("Observation", &params)?;
    let entries = check::entries(&bundle);
    let Some(resource) = entries.iter().find(|e| e["search"]["mode"] == "match").map(|e| &e["resource"]) else {
        return Err(format!("{}: no match", describe(&params)));
    };
    ensure(resource.get("identifier").is_some() && resource.get("code").is_some(), || {
        format!("{}: summary elements identifier and code missing: {resource}", describe(&params))
    })?;
    let tagged = resource["meta"]["tag"].as_array().is_some_and(|tags| tags.iter().any(|t| t["code"] == "SUBSETTED"));
    ensure(tagged, || format!("{}: the match is not tagged SUBSETTED", describe(&params)))
}

fn ucum(ctx: &Ctx) -> Outcome {
    let (patient, observation) = patient_with_observation(ctx)?;
    let subject = patient.reference();
    let params = [("subject", subject.as_str()), ("value-quantity", "1.2|http://unitsofmeasure.org|/s")];
    exactly(&found(ctx, "Observation", &params)?, &observation.id, &describe(&params))
}

fn identifier_or(ctx: &Ctx) -> Outcome {
    let (first, second) = (ctx.unique(), ctx.unique());
    let mut expected = vec![ctx.create(&fixtures::patient(&first))?.id, ctx.create(&fixtures::patient(&second))?.id];
    expected.sort();
    let either = format!("{},{}", identifier_query(&first), identifier_query(&second));
    let mut ids = found(ctx, "Patient", &[("identifier", &either)])?;
    ids.sort();
    ensure(ids == expected, || format!("identifier={either}: expected {expected:?}, got {ids:?}"))
}

/// The v2 identifier type code system (`MR` medical record number, `PI` patient internal).
const IDENTIFIER_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";

fn of_type(ctx: &Ctx) -> Outcome {
    let unique = ctx.unique();
    let mut patient = fixtures::patient(&unique);
    let record = format!("MR-{unique}");
    patient["identifier"].as_array_mut().into_iter().for_each(|identifiers| {
        identifiers.push(json!({
            "system": "urn:fhirvault-conformance:mrn", "value": record,
            "type": { "coding": [{ "system": IDENTIFIER_TYPE, "code": "MR" }] }
        }))
    });
    let created = ctx.create(&patient)?;
    let matching = format!("{IDENTIFIER_TYPE}|MR|{record}");
    let params = [("identifier:of-type", matching.as_str())];
    let Some(bundle) = optional_search(ctx, "Patient", &params)? else {
        return unsupported(&params);
    };
    exactly(&check::ids_of(&bundle, "Patient"), &created.id, &describe(&params))?;
    // Another type with the same value, and the type with the value of the untyped identifier.
    for value in [format!("{IDENTIFIER_TYPE}|PI|{record}"), format!("{IDENTIFIER_TYPE}|MR|{unique}")] {
        let params = [("identifier:of-type", value.as_str())];
        excludes(&found(ctx, "Patient", &params)?, &created.id, &describe(&params))?;
    }
    Ok(())
}

fn token_below_above(ctx: &Ctx) -> Outcome {
    let unique = ctx.unique();
    let mut observation = fixtures::observation(&unique, None);
    observation["status"] = json!("corrected");
    let created = ctx.create(&observation)?;
    let identifier = identifier_query(&unique);
    let status = "http://hl7.org/fhir/observation-status";
    for (modifier, code, expected) in [
        ("below", "amended", true),
        ("below", "final", false),
        ("above", "corrected", true),
        ("above", "amended", false),
    ] {
        let name = format!("status:{modifier}");
        let value = format!("{status}|{code}");
        let params = [("identifier", identifier.as_str()), (name.as_str(), value.as_str())];
        let Some(bundle) = optional_search(ctx, "Observation", &params)? else {
            return unsupported(&params);
        };
        let ids = check::ids_of(&bundle, "Observation");
        let what = describe(&params);
        if expected { exactly(&ids, &created.id, &what)? } else { excludes(&ids, &created.id, &what)? }
    }
    Ok(())
}

fn contained_false(ctx: &Ctx) -> Outcome {
    found_along_with(ctx, ("_contained", "false"))
}

fn many_values(ctx: &Ctx) -> Outcome {
    let unique = ctx.unique();
    let created = ctx.create(&fixtures::patient(&unique))?;
    let identifier = identifier_query(&unique);
    let mut values: Vec<String> = (1..500).map(|i| format!("{identifier}-{i}")).collect();
    values.insert(250, identifier);
    let listed = values.join(",");
    let form = query(&[("identifier", &listed)]);
    let response = ctx.post("Patient/_search").body("application/x-www-form-urlencoded", form).send()?;
    let ids = check::ids_of(&searchset(&response)?, "Patient");
    exactly(&ids, &created.id, &format!("{}: identifier=<500 values, one of them the Patient's>", response.label))
}

fn bound_system(ctx: &Ctx) -> Outcome {
    found_along_with(ctx, ("gender", "http://hl7.org/fhir/administrative-gender|female"))?;
    let unique = ctx.unique();
    let created = ctx.create(&fixtures::patient(&unique))?;
    let identifier = identifier_query(&unique);
    let params = [("identifier", identifier.as_str()), ("gender", "http://example.org/other|female")];
    excludes(&found(ctx, "Patient", &params)?, &created.id, &describe(&params))
}
