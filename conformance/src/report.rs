//! Renders a run: one text line per case for people, JUnit XML for CI dashboards, JSON for tools.

use serde_json::json;

use crate::client::clip;
use crate::runner::{CaseResult, Run, Status};

/// `PASS id  name`, `FAIL id  name — what was expected, what came back`, or
/// `SKIP id  name — why`, on one line.
pub fn text_line(result: &CaseResult) -> String {
    match &result.status {
        Status::Pass => format!("PASS {:<11} {}", result.id, result.name),
        Status::Fail(message) => format!("FAIL {:<11} {} — {}", result.id, result.name, one_line(message)),
        Status::Skip(reason) => format!("SKIP {:<11} {} — {}", result.id, result.name, one_line(reason)),
    }
}

/// The closing lines: counts, then the failed ids.
pub fn text_summary(run: &Run) -> String {
    let mut out =
        format!("\nconformance: {} passed, {} failed, {} skipped\n", run.passed(), run.failed(), run.skipped());
    out.push_str(&format!(
        "{} case(s) in {:.1} s against {}",
        run.results.len(),
        run.duration.as_secs_f64(),
        run.base_url
    ));
    let failed: Vec<&str> =
        run.results.iter().filter(|result| result.failed()).map(|result| result.id.as_str()).collect();
    if !failed.is_empty() {
        out.push_str(&format!("\nfailed: {}", failed.join(", ")));
    }
    out
}

/// JUnit XML: one `<testsuite>` per area, one `<testcase>` per case.
pub fn junit(run: &Run) -> String {
    let mut areas: Vec<&'static str> = Vec::new();
    for result in &run.results {
        if !areas.contains(&result.area) {
            areas.push(result.area);
        }
    }
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    xml.push_str(&format!(
        "<testsuites name=\"fhirvault-conformance\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{:.3}\">\n",
        run.results.len(),
        run.failed(),
        run.skipped(),
        run.duration.as_secs_f64()
    ));
    for area in areas {
        let results: Vec<&CaseResult> = run.results.iter().filter(|result| result.area == area).collect();
        let failures = results.iter().filter(|result| result.failed()).count();
        let skipped = results.iter().filter(|result| matches!(result.status, Status::Skip(_))).count();
        let time: f64 = results.iter().map(|result| result.duration.as_secs_f64()).sum();
        xml.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{time:.3}\">\n",
            escape(area),
            results.len()
        ));
        xml.push_str(&format!(
            "    <properties><property name=\"base-url\" value=\"{}\"/><property name=\"run-id\" value=\"{}\"/></properties>\n",
            escape(&run.base_url),
            escape(&run.run_id)
        ));
        for result in results {
            let open = format!(
                "    <testcase classname=\"conformance.{}\" name=\"{}\" time=\"{:.3}\"",
                escape(area),
                escape(&format!("{} {}", result.id, result.name)),
                result.duration.as_secs_f64()
            );
            match &result.status {
                Status::Pass => xml.push_str(&format!("{open}/>\n")),
                Status::Fail(message) => xml.push_str(&format!(
                    "{open}>\n      <failure message=\"{}\" type=\"AssertionError\">{}</failure>\n    </testcase>\n",
                    escape(&one_line(message)),
                    escape(message)
                )),
                Status::Skip(reason) => xml.push_str(&format!(
                    "{open}>\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                    escape(&one_line(reason))
                )),
            }
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

/// JSON: the run's identity, the counts, and every case with its status and message.
pub fn json(run: &Run) -> String {
    let cases: Vec<_> = run
        .results
        .iter()
        .map(|result| {
            let (status, message) = match &result.status {
                Status::Pass => ("pass", None),
                Status::Fail(message) => ("fail", Some(message)),
                Status::Skip(reason) => ("skip", Some(reason)),
            };
            json!({
                "id": result.id,
                "area": result.area,
                "name": result.name,
                "status": status,
                "durationMs": result.duration.as_millis() as u64,
                "message": message,
            })
        })
        .collect();
    let report = json!({
        "tool": "fhirvault-conformance",
        "baseUrl": run.base_url,
        "runId": run.run_id,
        "summary": { "total": run.results.len(), "passed": run.passed(), "failed": run.failed(), "skipped": run.skipped() },
        "durationMs": run.duration.as_millis() as u64,
        "cases": cases,
    });
    let mut text = serde_json::to_string_pretty(&report).unwrap_or_else(|_| "{}".to_string());
    text.push('\n');
    text
}

/// Escapes text for XML attributes and character data. Characters XML 1.0 forbids (most
/// control characters) become U+FFFD rather than making the file unreadable.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn one_line(message: &str) -> String {
    clip(message, 400)
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_the_five_xml_specials_and_control_characters() {
        assert_eq!(escape(r#"a&b<c>d"e'f"#), "a&amp;b&lt;c&gt;d&quot;e&apos;f");
        assert_eq!(escape("x\u{1}y\nz"), "x\u{FFFD}y\nz");
    }
}
