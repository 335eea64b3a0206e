//! Tokens of a FHIRPath expression. Keywords (`and`, `as`, `is`, …) are plain identifiers here;
//! the parser decides by position whether one is an operator or a name (`.as(Quantity)`).

use super::{FhirPathError, Result};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    /// A `` `backtick` `` identifier: never a keyword.
    Quoted(String),
    Str(String),
    Num(String),
    DateTime(String),
    Var(String),
    Dollar(String),
    Sym(&'static str),
    End,
}

const SYMBOLS: &[&str] = &[
    "<=", ">=", "!=", "!~", ".", ",", "(", ")", "[", "]", "{", "}", "|", "=", "~", "<", ">", "+",
    "-", "*", "/", "&",
];

pub(super) fn lex(src: &str) -> Result<Vec<(Tok, usize)>> {
    let bytes = src.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    let err = |offset: usize, message: &str| FhirPathError::Parse {
        offset,
        message: message.into(),
    };
    let ident_end = |mut j: usize| {
        while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
            j += 1;
        }
        j
    };
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            i = ident_end(i);
            toks.push((Tok::Ident(src[start..i].to_owned()), start));
        } else if c.is_ascii_digit() {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            // A decimal point only when a digit follows: `entry[0].resource` must stay a path.
            if i + 1 < bytes.len() && bytes[i] == b'.' && bytes[i + 1].is_ascii_digit() {
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
            }
            toks.push((Tok::Num(src[start..i].to_owned()), start));
        } else if c == b'\'' || c == b'`' {
            let (text, next) =
                lex_quoted(src, i).ok_or_else(|| err(start, "unterminated quote"))?;
            i = next;
            toks.push((
                if c == b'\'' {
                    Tok::Str(text)
                } else {
                    Tok::Quoted(text)
                },
                start,
            ));
        } else if c == b'%' {
            if bytes.get(i + 1) == Some(&b'`') || bytes.get(i + 1) == Some(&b'\'') {
                let (text, next) =
                    lex_quoted(src, i + 1).ok_or_else(|| err(start, "unterminated quote"))?;
                i = next;
                toks.push((Tok::Var(text), start));
            } else {
                i = ident_end(i + 1);
                if i == start + 1 {
                    return Err(err(start, "expected a name after %"));
                }
                toks.push((Tok::Var(src[start + 1..i].to_owned()), start));
            }
        } else if c == b'$' {
            i = ident_end(i + 1);
            toks.push((Tok::Dollar(src[start + 1..i].to_owned()), start));
        } else if c == b'@' {
            i += 1;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || b"-:.+TZ".contains(&bytes[i]))
            {
                i += 1;
            }
            toks.push((Tok::DateTime(src[start + 1..i].to_owned()), start));
        } else if let Some(sym) = SYMBOLS.iter().find(|s| src[i..].starts_with(**s)) {
            i += sym.len();
            toks.push((Tok::Sym(sym), start));
        } else {
            return Err(err(start, "unexpected character"));
        }
    }
    toks.push((Tok::End, src.len()));
    Ok(toks)
}

/// Reads a quoted string or identifier starting at the opening quote; returns its unescaped
/// text and the offset after the closing quote.
fn lex_quoted(src: &str, open: usize) -> Option<(String, usize)> {
    let quote = src[open..].chars().next()?;
    let mut out = String::new();
    let mut chars = src[open + 1..].char_indices();
    while let Some((k, c)) = chars.next() {
        match c {
            '\\' => {
                let (_, e) = chars.next()?;
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'f' => out.push('\u{c}'),
                    'u' => {
                        let hex: String = (0..4)
                            .filter_map(|_| chars.next().map(|(_, h)| h))
                            .collect();
                        out.push(
                            u32::from_str_radix(&hex, 16)
                                .ok()
                                .and_then(char::from_u32)?,
                        );
                    }
                    other => out.push(other),
                }
            }
            c if c == quote => return Some((out, open + 1 + k + c.len_utf8())),
            c => out.push(c),
        }
    }
    None
}
