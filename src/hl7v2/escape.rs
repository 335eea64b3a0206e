//! HL7 v2 escape sequences: decoding the text of one subcomponent, and the inverse encoding for text we
//! write into a message (ACK and ERR texts).
//!
//! The parser splits on delimiters first and decodes each subcomponent afterwards: an escape sequence never
//! contains a delimiter (that is what escaping is for), so the order cannot change the result. Decoding
//! walks the text by `str::find` and slices only at positions of the escape character, which are always
//! char boundaries; non-ASCII text before or after a sequence (`üü\S\x`, `Müller\T\Söhne`) is safe.
//!
//! # Decoding rules (`E` is the message's escape character, `\` by default)
//!
//! | sequence | result |
//! | --- | --- |
//! | `\F\` `\S\` `\T\` `\R\` `\E\` | the field, component, subcomponent, repetition and escape character |
//! | `\P\` | the truncation character (HL7 2.7 MSH-2 position 5); kept literally when MSH-2 has none |
//! | `\H\` `\N\` | dropped: start and end of highlighting have no plain-text form |
//! | `\.br\` | a line break (`"\n"`) |
//! | `\.sp n\` | ends the line and skips n blank lines (n absent = 1): `"\n"` then n more `"\n"` |
//! | `\.ce\` | ends the line (centring has no plain-text form): `"\n"` |
//! | `\.sk n\` | n spaces (n absent = 1) |
//! | `\.in n\` `\.ti n\` `\.fi\` `\.nf\` | dropped: indentation and fill modes have no plain-text form |
//! | `\Xhh…\` | the bytes given in hex, read as UTF-8 when valid and as ISO-8859-1 otherwise |
//! | `\Z…\` `\C…\` `\M…\` | kept literally: local escapes and character-set switches we cannot interpret, kept so that nothing is silently lost |
//! | anything else, or no closing `E` | kept literally |
//!
//! The counts of `.sp` and `.sk` are capped at [`MAX_FORMAT_REPEAT`], so a short sequence can never expand
//! into a large allocation.

use super::er7::Delimiters;

/// The largest count honoured by `\.sp n\` and `\.sk n\`; larger counts are clamped to it.
pub const MAX_FORMAT_REPEAT: usize = 100;

/// Decodes the escape sequences in `raw`, the text of one subcomponent.
pub fn decode(raw: &str, delimiters: &Delimiters) -> String {
    let Some(esc) = delimiters.escape else {
        return raw.to_owned();
    };
    if !raw.contains(esc) {
        return raw.to_owned();
    }
    let esc_len = esc.len_utf8();
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(open) = rest.find(esc) {
        out.push_str(&rest[..open]);
        let after_open = &rest[open + esc_len..];
        let Some(close) = after_open.find(esc) else {
            // Unterminated: the escape character and everything after it stay as they are.
            out.push_str(&rest[open..]);
            return out;
        };
        let sequence = &after_open[..close];
        if !decode_sequence(sequence, delimiters, &mut out) {
            // Unknown or malformed: keep the whole sequence, both escape characters included.
            out.push_str(&rest[open..open + esc_len + close + esc_len]);
        }
        rest = &after_open[close + esc_len..];
    }
    out.push_str(rest);
    out
}

/// Appends the meaning of one escape sequence (the text between the escape characters) to `out`;
/// returns false, appending nothing, when the sequence is one we keep literally.
fn decode_sequence(sequence: &str, d: &Delimiters, out: &mut String) -> bool {
    let single = match sequence {
        "F" => Some(d.field),
        "S" => Some(d.component),
        "T" => Some(d.subcomponent),
        "R" => Some(d.repetition),
        "E" => d.escape,
        "P" => d.truncation,
        _ => None,
    };
    if let Some(c) = single {
        out.push(c);
        return true;
    }
    match sequence.as_bytes().first() {
        _ if sequence == "H" || sequence == "N" => true,
        Some(b'.') => decode_formatting(&sequence[1..], out),
        Some(b'X') => decode_hex(&sequence[1..], out),
        _ => false,
    }
}

/// Formatting commands of the FT data type (`.br`, `.sp n`, …), `command` being the text after the dot.
fn decode_formatting(command: &str, out: &mut String) -> bool {
    // Commands are two ASCII letters; checking the bytes first keeps the slice at a char boundary.
    if command.len() < 2 || !command.as_bytes()[..2].iter().all(u8::is_ascii_lowercase) {
        return false;
    }
    let (name, argument) = command.split_at(2);
    let Some(count) = format_argument(argument) else {
        return false;
    };
    match (name, count) {
        ("br", None) | ("ce", None) => out.push('\n'),
        ("sp", n) => {
            let blank_lines = clamp_count(n.unwrap_or(1));
            out.extend(std::iter::repeat_n('\n', 1 + blank_lines));
        }
        ("sk", n) => out.extend(std::iter::repeat_n(' ', clamp_count(n.unwrap_or(1)))),
        ("in", _) | ("ti", _) | ("fi", None) | ("nf", None) => {}
        _ => return false,
    }
    true
}

/// The optional number after a formatting command: `Some(None)` when absent, `Some(Some(n))` for an
/// optionally signed integer (spaces before it allowed), `None` when the argument is malformed.
fn format_argument(argument: &str) -> Option<Option<i64>> {
    let trimmed = argument.trim_start_matches(' ');
    if trimmed.is_empty() {
        return Some(None);
    }
    let digits = trimmed.strip_prefix(['+', '-']).unwrap_or(trimmed);
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    trimmed.parse::<i64>().ok().map(Some)
}

fn clamp_count(n: i64) -> usize {
    usize::try_from(n.max(0)).map_or(MAX_FORMAT_REPEAT, |n| n.min(MAX_FORMAT_REPEAT))
}

/// `\Xhh…\`: an even, non-zero number of hex digits. The bytes are UTF-8 when they form valid UTF-8
/// (what a UTF-8 sender means) and ISO-8859-1 otherwise (what a Latin-1 sender means).
fn decode_hex(hex: &str, out: &mut String) -> bool {
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return false;
    }
    let bytes: Vec<u8> = hex
        .as_bytes()
        .chunks_exact(2)
        .map(|pair| (hex_value(pair[0]) << 4) | hex_value(pair[1]))
        .collect();
    match std::str::from_utf8(&bytes) {
        Ok(text) => out.push_str(text),
        Err(_) => out.extend(bytes.iter().map(|&b| char::from(b))),
    }
    true
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0, // unreachable: callers check is_ascii_hexdigit first
    }
}

/// Encodes `text` for use as one subcomponent: delimiters become `\F\ \S\ \T\ \R\ \E\ \P\`, a line
/// feed becomes `\.br\`, and a carriage return or another control character (tab excepted) becomes
/// `\Xhh\`, since a bare CR or LF would end the segment. When `.` is one of the delimiters, `\.br\`
/// would be cut apart by the parser, so a line feed becomes `\X0A\` instead. The result holds no
/// delimiter outside escape sequences, and `decode(encode(t)) == t` for every text.
///
/// Returns `None` when the text needs escaping but the delimiters have no escape character.
pub fn encode(text: &str, d: &Delimiters) -> Option<String> {
    let needs_escape = |c: char| {
        [d.field, d.component, d.repetition, d.subcomponent].contains(&c)
            || Some(c) == d.escape
            || Some(c) == d.truncation
            || (c.is_ascii_control() && c != '\t')
    };
    if !text.chars().any(needs_escape) {
        return Some(text.to_owned());
    }
    let esc = d.escape?;
    let dot_is_delimiter = [d.field, d.component, d.repetition, esc, d.subcomponent].contains(&'.')
        || d.truncation == Some('.');
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        let code = if c == d.field {
            "F"
        } else if c == d.component {
            "S"
        } else if c == d.subcomponent {
            "T"
        } else if c == d.repetition {
            "R"
        } else if c == esc {
            "E"
        } else if Some(c) == d.truncation {
            "P"
        } else if c == '\n' && !dot_is_delimiter {
            ".br"
        } else if c.is_ascii_control() && c != '\t' {
            out.push(esc);
            out.push_str(&format!("X{:02X}", u32::from(c)));
            out.push(esc);
            continue;
        } else {
            out.push(c);
            continue;
        };
        out.push(esc);
        out.push_str(code);
        out.push(esc);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn std_delims() -> Delimiters {
        Delimiters::default()
    }

    fn dec(raw: &str) -> String {
        decode(raw, &std_delims())
    }

    #[test]
    fn delimiter_escapes() {
        assert_eq!(dec(r"a\F\b\S\c\T\d\R\e\E\f"), r"a|b^c&d~e\f");
    }

    #[test]
    fn escapes_after_non_ascii_text() {
        assert_eq!(dec(r"üü\S\x"), "üü^x");
        assert_eq!(dec(r"Müller\T\Söhne"), "Müller&Söhne");
        assert_eq!(dec(r"日本\F\語\E\"), r"日本|語\");
        assert_eq!(dec(r"ü\Xc3bc\ü"), "üüü");
    }

    #[test]
    fn truncation_escape_needs_a_truncation_character() {
        assert_eq!(dec(r"a\P\b"), r"a\P\b");
        let d = Delimiters {
            truncation: Some('#'),
            ..std_delims()
        };
        assert_eq!(decode(r"a\P\b", &d), "a#b");
    }

    #[test]
    fn highlighting_is_dropped() {
        assert_eq!(dec(r"\H\ALARM\N\ now"), "ALARM now");
    }

    #[test]
    fn formatting_commands() {
        assert_eq!(dec(r"a\.br\b"), "a\nb");
        assert_eq!(dec(r"a\.sp\b"), "a\n\nb");
        assert_eq!(dec(r"a\.sp 2\b"), "a\n\n\nb");
        assert_eq!(dec(r"a\.sp0\b"), "a\nb");
        assert_eq!(dec(r"a\.sk 3\b"), "a   b");
        assert_eq!(dec(r"a\.sk\b"), "a b");
        assert_eq!(dec(r"\.in +4\a\.ti -2\b\.fi\\.nf\c"), "abc");
        assert_eq!(dec(r"a\.ce\b"), "a\nb");
    }

    #[test]
    fn formatting_counts_are_capped() {
        assert_eq!(dec(r"\.sp 999999\").len(), 1 + MAX_FORMAT_REPEAT);
        assert_eq!(dec(r"\.sk 999999\").len(), MAX_FORMAT_REPEAT);
        assert_eq!(dec(r"\.sk -5\"), "");
    }

    #[test]
    fn malformed_formatting_is_kept_literally() {
        for raw in [
            r"\.xx\",
            r"\.br2\",
            r"\.sp x\",
            r"\.\",
            r"\.b\",
            r"\.sp 1234567\",
            r"\.ü\",
            r"\.bü\",
        ] {
            assert_eq!(dec(raw), raw, "{raw}");
        }
    }

    #[test]
    fn hex_escapes() {
        assert_eq!(dec(r"\X41\"), "A");
        assert_eq!(dec(r"\X0D0A\"), "\r\n");
        assert_eq!(dec(r"M\XC3BC\ller"), "Müller"); // valid UTF-8
        assert_eq!(dec(r"M\XFC\ller"), "Müller"); // not UTF-8: ISO-8859-1
        assert_eq!(dec(r"\Xe282ac\"), "€");
    }

    #[test]
    fn malformed_hex_is_kept_literally() {
        for raw in [r"\X\", r"\X4\", r"\X4G\", r"\X414\", r"\Xü1\"] {
            assert_eq!(dec(raw), raw, "{raw}");
        }
    }

    #[test]
    fn local_and_charset_escapes_are_kept() {
        for raw in [r"\Zabc\", r"\C2842\", r"\M2442\"] {
            assert_eq!(dec(raw), raw, "{raw}");
        }
    }

    #[test]
    fn unknown_and_unterminated_escapes_are_kept() {
        assert_eq!(dec(r"\Q\"), r"\Q\");
        assert_eq!(dec(r"\\"), r"\\");
        assert_eq!(dec(r"a\S"), r"a\S");
        assert_eq!(dec(r"a\"), r"a\");
        assert_eq!(dec(r"\S\\"), r"^\");
        assert_eq!(dec(r"ü\"), r"ü\");
        // A sequence is consumed as a pair of escape characters: \Q\ stays, then "F\" is unterminated.
        assert_eq!(dec(r"\Q\F\"), r"\Q\F\");
    }

    #[test]
    fn custom_escape_character() {
        let d = Delimiters {
            field: '#',
            component: '$',
            repetition: '~',
            escape: Some('@'),
            subcomponent: '&',
            truncation: None,
        };
        assert_eq!(decode("a@S@b@F@c@E@d\\S\\", &d), "a$b#c@d\\S\\");
        assert_eq!(encode("a$b#c@d\\", &d).as_deref(), Some("a@S@b@F@c@E@d\\"));
    }

    #[test]
    fn non_ascii_escape_character() {
        let d = Delimiters {
            escape: Some('§'),
            ..std_delims()
        };
        assert_eq!(decode("ü§S§ü§F§", &d), "ü^ü|");
        assert_eq!(decode("ü§Sü", &d), "ü§Sü");
    }

    #[test]
    fn no_escape_character_means_no_decoding() {
        let d = Delimiters {
            escape: None,
            ..std_delims()
        };
        assert_eq!(decode(r"a\S\b", &d), r"a\S\b");
        assert_eq!(encode("plain", &d).as_deref(), Some("plain"));
        assert_eq!(encode("a^b", &d), None);
    }

    #[test]
    fn encode_examples() {
        let d = std_delims();
        assert_eq!(
            encode("Müller & Söhne", &d).as_deref(),
            Some(r"Müller \T\ Söhne")
        );
        assert_eq!(
            encode("a|b^c~d\\e", &d).as_deref(),
            Some(r"a\F\b\S\c\R\d\E\e")
        );
        assert_eq!(
            encode("line1\nline2\r\t", &d).as_deref(),
            Some("line1\\.br\\line2\\X0D\\\t")
        );
        let d5 = Delimiters {
            truncation: Some('#'),
            ..d
        };
        assert_eq!(encode("#1", &d5).as_deref(), Some(r"\P\1"));
    }

    #[test]
    fn a_line_break_is_hex_when_the_dot_is_a_delimiter() {
        // Found by fuzzing: with `.` as the repetition character, `\.br\` in an ACK's MSH-3 was
        // split into two repetitions when the ACK was parsed.
        let d = Delimiters {
            repetition: '.',
            ..std_delims()
        };
        let encoded = encode("a\nb.c", &d).unwrap();
        assert_eq!(encoded, r"a\X0A\b\R\c");
        assert_eq!(decode(&encoded, &d), "a\nb.c");
        let d = Delimiters {
            escape: Some('.'),
            ..std_delims()
        };
        assert_eq!(encode("a\nb", &d).as_deref(), Some("a.X0A.b"));
        assert_eq!(encode("a\nb", &std_delims()).as_deref(), Some(r"a\.br\b"));
    }

    use crate::hl7v2::test_rng::next;

    #[test]
    fn property_decode_inverts_encode_and_never_panics() {
        const ALPHABET: &[char] = &[
            'a', 'Z', '0', ' ', '|', '^', '~', '\\', '&', '#', '\n', '\r', '\t', '\u{1}', 'ü', 'ß',
            '€', '語', '😀', 'X', 'S', '.', 'b', 'r',
        ];
        let d = Delimiters {
            truncation: Some('#'),
            ..std_delims()
        };
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        for _ in 0..20_000 {
            let len = (next(&mut state) % 24) as usize;
            let text: String = (0..len)
                .map(|_| ALPHABET[(next(&mut state) % ALPHABET.len() as u64) as usize])
                .collect();
            let encoded = encode(&text, &d).expect("escape character present");
            assert_eq!(decode(&encoded, &d), text);
            // Decoding arbitrary text (here: the unencoded text) must not panic either.
            let _ = decode(&text, &d);
        }
    }
}
