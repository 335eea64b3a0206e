//! Just enough UCUM to compare quantities written in different units of the same kind: `5 mg`
//! and `0.005 g`, `72 /min` and `1.2 /s`. A quantity whose UCUM code converts is indexed a second
//! time in canonical form, and a quantity search with a UCUM unit compares in that form.
//! <https://ucum.org/ucum>
//!
//! Understood: a metric atom with a prefix (`mg`, `uL`, `kPa`, `mmol`), the non-metric atoms below,
//! annotations (`{beats}` is 1), and one division (`mg/dL`, `/min`, `{beats}/min`). Anything else
//! (products, exponents, temperatures with an offset) has no canonical form and is compared by
//! its code only, as before.

/// The UCUM code system.
pub const UCUM: &str = "http://unitsofmeasure.org";

/// Metric atoms (which take prefixes) and their canonical atom; all factors are 1.
const METRIC: &[(&str, &str)] = &[
    ("g", "g"),
    ("m", "m"),
    ("L", "L"),
    ("l", "L"),
    ("s", "s"),
    ("mol", "mol"),
    ("eq", "eq"),
    ("Pa", "Pa"),
    ("U", "U"),
    ("IU", "IU"),
];

/// Atoms without prefixes: (atom, factor, canonical atom).
const PLAIN: &[(&str, f64, &str)] = &[
    ("min", 60.0, "s"),
    ("h", 3_600.0, "s"),
    ("d", 86_400.0, "s"),
    ("wk", 604_800.0, "s"),
    ("mm[Hg]", 133.322_387_415, "Pa"),
    ("%", 1.0, "%"),
    ("1", 1.0, "1"),
];

const PREFIXES: &[(&str, f64)] = &[
    ("da", 1e1),
    ("Y", 1e24),
    ("Z", 1e21),
    ("E", 1e18),
    ("P", 1e15),
    ("T", 1e12),
    ("G", 1e9),
    ("M", 1e6),
    ("k", 1e3),
    ("h", 1e2),
    ("d", 1e-1),
    ("c", 1e-2),
    ("m", 1e-3),
    ("u", 1e-6),
    ("n", 1e-9),
    ("p", 1e-12),
    ("f", 1e-15),
    ("a", 1e-18),
];

/// The stored parameter name of a quantity's canonical rows: apart from the parameter's own rows,
/// so a search by value alone (or a sort) never sees a value twice in two units. U+001F cannot
/// occur in a stored resource.
pub fn canonical_param(param: &str) -> String {
    format!("{param}\u{1f}ucum")
}

/// `code` in canonical form: the factor to multiply a value by, and the canonical code.
pub fn canonical(code: &str) -> Option<(f64, String)> {
    let (numerator, denominator) = match code.split_once('/') {
        Some((n, d)) => (n, Some(d)),
        None => (code, None),
    };
    let (factor, unit) = if numerator.is_empty() {
        (1.0, String::new())
    } else {
        atom(numerator)?
    };
    match denominator {
        None => Some((factor, unit)),
        Some(denominator) => {
            let (divisor, per) = atom(denominator)?;
            // `1/min`, `{beats}/min` and `/min` are one unit.
            let unit = if unit == "1" { "" } else { unit.as_str() };
            Some((factor / divisor, format!("{unit}/{per}")))
        }
    }
}

/// One (possibly prefixed or annotated) atom.
fn atom(text: &str) -> Option<(f64, String)> {
    // `{beats}` alone is 1; `{…}` after an atom is a note on it.
    let text = match text.find('{') {
        Some(0) if text.ends_with('}') => "1",
        Some(i) if text.ends_with('}') => &text[..i],
        Some(_) => return None,
        None => text,
    };
    if let Some((_, factor, unit)) = PLAIN.iter().find(|(atom, _, _)| *atom == text) {
        return Some((*factor, unit.to_string()));
    }
    if let Some((_, unit)) = METRIC.iter().find(|(atom, _)| *atom == text) {
        return Some((1.0, unit.to_string()));
    }
    PREFIXES.iter().find_map(|(prefix, factor)| {
        let rest = text.strip_prefix(prefix)?;
        METRIC
            .iter()
            .find(|(atom, _)| *atom == rest)
            .map(|(_, unit)| (*factor, unit.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::canonical;

    fn close(code: &str, factor: f64, unit: &str) {
        let (f, u) = canonical(code).unwrap_or_else(|| panic!("{code} converts"));
        assert!(
            (f - factor).abs() <= factor.abs() * 1e-12,
            "{code}: factor {f}, expected {factor}"
        );
        assert_eq!(u, unit, "{code}");
    }

    #[test]
    fn converts_the_units_of_clinical_quantities() {
        close("mg", 1e-3, "g");
        close("g", 1.0, "g");
        close("kg", 1e3, "g");
        close("ug", 1e-6, "g");
        close("mg/dL", 1e-3 / 0.1, "g/L");
        close("mmol/L", 1e-3, "mol/L");
        close("/min", 1.0 / 60.0, "/s");
        close("{beats}/min", 1.0 / 60.0, "/s");
        close("min", 60.0, "s");
        close("mm[Hg]", 133.322_387_415, "Pa");
        close("kPa", 1e3, "Pa");
        close("dL", 0.1, "L");
        close("%", 1.0, "%");
        close("1", 1.0, "1");
        close("1/min", 1.0 / 60.0, "/s");
        assert!(canonical("Cel").is_none(), "temperatures have an offset");
        assert!(canonical("kg.m2").is_none());
        assert!(canonical("mg/kg/d").is_none());
    }
}
