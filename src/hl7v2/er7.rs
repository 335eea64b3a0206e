//! ER7 ("pipe and hat") encoding of HL7 v2: one message from bytes to a [`Message`] tree and back, and
//! the splitting of batch files into messages ([`split_batch`]).
//!
//! Why our own tokenizer rather than the hl7-parser crate (0.3.0): tried on our cases, it returns `Ok` for
//! input it has not consumed (an LF-separated message parses as MSH alone; a segment without fields drops
//! every segment after it), decodes `\T\` after non-ASCII text wrongly and panics on `üü\S\x`. Proving
//! that it consumed every byte would mean tokenizing the input a second time ourselves, and escapes had to
//! be decoded by our own code anyway, which leaves the crate nothing to contribute. The tokenizer here
//! consumes every byte by construction: each non-empty line is a segment or an error, and each segment is
//! split completely.
//!
//! # Format
//!
//! ```text
//! MSH|^~\&|SENDER|FACILITY|…|UNICODE UTF-8<CR>
//! PID|1||1234567890^^^SVNR^SS||Müller\T\Söhne^Anna<CR>
//! ```
//!
//! - The first segment is MSH, optionally after a UTF-8 byte-order mark and empty lines. MSH-1 is the
//!   field separator; MSH-2 holds 4 encoding characters (component, repetition, escape, subcomponent) or
//!   5, the fifth being the HL7 2.7 truncation character. All are distinct and none is a letter, digit,
//!   white space or control character.
//! - Segments end with CR, LF or CRLF, mixed freely; empty lines are skipped and the last terminator is
//!   optional. Every other line must be a segment: a three-character name (`A-Z`, `0-9`, first a letter)
//!   followed by the field separator or by the end of the line. Anything else is an error, never dropped.
//! - Character set per MSH-18: empty, `ASCII`, `UNICODE UTF-8` or `8859/1`. Without MSH-18, valid UTF-8
//!   is read as UTF-8 and anything else as ISO-8859-1; bytes that contradict a declared set are an error.
//!   Control characters other than CR, LF and TAB are an error (a leftover MLLP frame byte, say).
//!
//! # Model
//!
//! [`Message`] → [`Segment`] → [`Field`] → [`Repetition`] → [`Component`] → subcomponent text, numbered
//! as HL7 numbers them: fields, components and subcomponents from 1, repetitions from 0. MSH-1 is the
//! field separator and MSH-2 the encoding characters, both returned raw. Every subcomponent holds its
//! decoded text (see [`super::escape`]); every field also keeps its raw text, so [`Message::to_er7`]
//! gives back the input exactly, apart from segment terminators, empty lines and a byte-order mark. The
//! HL7 explicit null `""` is kept as the two-character text `""` ([`Field::is_null`] tells it apart), so
//! a mapper can tell "delete this value" from "no value".
//!
//! # Errors and limits
//!
//! A [`ParseError`] carries an HL7 table 0357 code and a location (`MSH-2`, `OBX-5`, `segment 4`,
//! `byte 17`); its message names positions, counts and byte offsets and never quotes input, which may
//! hold patient data. Sizes beyond the `MAX_*` constants are errors (code 104, "value too long …or the
//! length that the application is able to safely handle"), so no input can exhaust memory.

use std::fmt;

use super::escape;

/// Largest message [`Message::parse`] accepts, in bytes (a PDF report in OBX-5 fits comfortably).
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;
/// Largest input [`split_batch`] accepts, in bytes.
pub const MAX_BATCH_BYTES: usize = 256 * 1024 * 1024;
/// Most messages in one batch input.
pub const MAX_BATCH_MESSAGES: usize = 100_000;
/// Most segments in one message.
pub const MAX_SEGMENTS: usize = 10_000;
/// Most fields in one segment (HL7 defines at most a few dozen).
pub const MAX_FIELDS: usize = 256;
/// Most repetitions of one field.
pub const MAX_REPETITIONS: usize = 1_000;
/// Most components in one repetition (the largest HL7 types have about 25).
pub const MAX_COMPONENTS: usize = 100;
/// Most subcomponents in one component.
pub const MAX_SUBCOMPONENTS: usize = 100;
/// Most subcomponent values in one message: bounds the size of the tree whatever the input's shape.
pub const MAX_VALUES: usize = 1_000_000;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// HL7 table 0357 codes used by this module.
pub mod code {
    pub const SEGMENT_SEQUENCE: u16 = 100;
    pub const REQUIRED_FIELD_MISSING: u16 = 101;
    pub const DATA_TYPE: u16 = 102;
    pub const TABLE_VALUE_NOT_FOUND: u16 = 103;
    pub const VALUE_TOO_LONG: u16 = 104;
    pub const APPLICATION_INTERNAL: u16 = 207;
}

/// Why a message or batch was rejected. `message` never contains input content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// HL7 table 0357 code (see [`code`]).
    pub code: u16,
    /// Where: `MSH-2`, `OBX-5`, `segment 4`, `byte 17`.
    pub location: String,
    /// A sentence a person can act on.
    pub message: String,
}

impl ParseError {
    fn new(code: u16, location: impl Into<String>, message: impl Into<String>) -> Self {
        ParseError {
            code,
            location: location.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HL7 error {} at {}: {}",
            self.code, self.location, self.message
        )
    }
}

impl std::error::Error for ParseError {}

/// The delimiters of a message, from MSH-1 and MSH-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    pub field: char,
    pub component: char,
    pub repetition: char,
    /// Always `Some` after parsing (MSH-2 has at least 4 characters); `None` only in hand-made values,
    /// where it means that text cannot be escaped.
    pub escape: Option<char>,
    pub subcomponent: char,
    /// The HL7 2.7 truncation character (MSH-2 position 5), if the sender gave one.
    pub truncation: Option<char>,
}

impl Default for Delimiters {
    /// `|^~\&`, the delimiters nearly every sender uses.
    fn default() -> Self {
        Delimiters {
            field: '|',
            component: '^',
            repetition: '~',
            escape: Some('\\'),
            subcomponent: '&',
            truncation: None,
        }
    }
}

impl Delimiters {
    /// The text of MSH-2 for these delimiters.
    pub fn encoding_characters(&self) -> String {
        [
            Some(self.component),
            Some(self.repetition),
            self.escape,
            Some(self.subcomponent),
            self.truncation,
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Reads MSH-2 (`encoding`) given the field separator; checks the rules in the module docs.
    fn from_msh(field: char, encoding: &str) -> Result<Self, ParseError> {
        let chars: Vec<char> = encoding.chars().take(6).collect();
        if chars.is_empty() {
            return Err(ParseError::new(
                code::REQUIRED_FIELD_MISSING,
                "MSH-2",
                "MSH-2 (encoding characters) is empty; it must hold 4 characters, or 5 with a truncation character",
            ));
        }
        let [component, repetition, escape, subcomponent, rest @ ..] = chars.as_slice() else {
            return Err(bad_msh2_length(chars.len()));
        };
        let truncation = match rest {
            [] => None,
            [t] => Some(*t),
            _ => return Err(bad_msh2_length(encoding.chars().count())),
        };
        let all: Vec<char> = chars.clone().into_iter().chain([field]).collect();
        if let Some(position) = chars.iter().position(|&c| !is_delimiter_char(c)) {
            return Err(ParseError::new(
                code::DATA_TYPE,
                "MSH-2",
                format!(
                    "MSH-2 character {} is a letter, digit, space or control character; encoding characters must be punctuation",
                    position + 1
                ),
            ));
        }
        let distinct = all.iter().enumerate().all(|(i, c)| !all[..i].contains(c));
        if !distinct {
            return Err(ParseError::new(
                code::DATA_TYPE,
                "MSH-2",
                "the field separator (MSH-1) and the encoding characters (MSH-2) must all be different characters",
            ));
        }
        Ok(Delimiters {
            field,
            component: *component,
            repetition: *repetition,
            escape: Some(*escape),
            subcomponent: *subcomponent,
            truncation,
        })
    }
}

fn bad_msh2_length(found: usize) -> ParseError {
    ParseError::new(
        code::DATA_TYPE,
        "MSH-2",
        format!(
            "MSH-2 (encoding characters) must hold 4 characters, or 5 with the HL7 2.7 truncation character; it holds {found}"
        ),
    )
}

/// Delimiters must not be letters or digits (HL7), nor white space or control characters (they would
/// collide with segment terminators or vanish in transport).
fn is_delimiter_char(c: char) -> bool {
    !c.is_alphanumeric() && !c.is_whitespace() && !c.is_control()
}

/// The character set the message bytes were read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// MSH-18 `ASCII`, and every byte was ASCII.
    Ascii,
    /// MSH-18 `UNICODE UTF-8`, or no MSH-18 and the bytes were valid UTF-8.
    Utf8,
    /// MSH-18 `8859/1`, or no MSH-18 and the bytes were not valid UTF-8.
    Latin1,
}

/// One HL7 v2 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    delimiters: Delimiters,
    charset: Charset,
    segments: Vec<Segment>,
}

/// One segment: its name and its fields, `field(1)` being the first after the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    name: String,
    fields: Vec<Field>,
}

/// One field: its raw (still escaped) text and its repetitions. An empty field has no repetitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    raw: String,
    repetitions: Vec<Repetition>,
}

/// One repetition of a field: its components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repetition {
    components: Vec<Component>,
}

/// One component: the decoded text of its subcomponents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    subcomponents: Vec<String>,
}

impl Message {
    /// Parses one message from raw bytes; see the module docs for the rules. Never panics.
    pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(too_long(
                "message",
                format!(
                    "the message has {} bytes; the limit is {MAX_MESSAGE_BYTES}",
                    bytes.len()
                ),
            ));
        }
        let (body, bom_len) = match bytes.strip_prefix(UTF8_BOM) {
            Some(rest) => (rest, UTF8_BOM.len()),
            None => (bytes, 0),
        };
        let body_start = body
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(body.len());
        let body = &body[body_start..];
        let offset = bom_len + body_start;
        reject_control_bytes(body, offset)?;
        if !body.starts_with(b"MSH") {
            return Err(ParseError::new(
                code::SEGMENT_SEQUENCE,
                "segment 1",
                if body.is_empty() {
                    "the message is empty"
                } else {
                    "the message must start with an MSH segment"
                },
            ));
        }
        let charset = resolve_charset(body, bom_len > 0, offset)?;
        let text = decode_text(body, charset, offset)?;
        tokenize(&text, charset)
    }

    pub fn delimiters(&self) -> &Delimiters {
        &self.delimiters
    }

    /// The character set the bytes were read with.
    pub fn charset(&self) -> Charset {
        self.charset
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The first segment with this name.
    pub fn first(&self, name: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.name == name)
    }

    /// All segments with this name, in message order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Segment> + 'a {
        self.segments.iter().filter(move |s| s.name == name)
    }

    /// The message re-encoded canonically: the same delimiters and raw field text, no byte-order mark,
    /// each segment terminated by `'\r'` (the HL7 segment terminator, so the last one too). Two inputs
    /// that differ only in segment terminators, empty lines or a BOM give the same text, which makes it
    /// the thing to hash for idempotency. `parse(to_er7_bytes())` gives back an equal message.
    pub fn to_er7(&self) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            segment.write_er7(self.delimiters.field, &mut out);
            out.push('\r');
        }
        out
    }

    /// [`Message::to_er7`] encoded in the message's own character set (ISO-8859-1 stays ISO-8859-1), so
    /// that it parses back to an equal message.
    pub fn to_er7_bytes(&self) -> Vec<u8> {
        let text = self.to_er7();
        match self.charset {
            Charset::Ascii | Charset::Utf8 => text.into_bytes(),
            // Every char came from one ISO-8859-1 byte (escapes are kept raw), so each fits a byte.
            Charset::Latin1 => text
                .chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                .collect(),
        }
    }
}

impl Segment {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of fields after the name (for MSH, MSH-1 and MSH-2 included).
    pub fn field_count(&self) -> usize {
        self.fields.len()
    }

    /// Field `n`, counted from 1; `None` when absent.
    pub fn field(&self, n: usize) -> Option<&Field> {
        self.fields.get(n.checked_sub(1)?)
    }

    /// The repetitions of field `n`; empty when the field is absent or empty.
    pub fn repetitions(&self, n: usize) -> &[Repetition] {
        self.field(n).map_or(&[], |f| &f.repetitions)
    }

    /// Decoded value of field `n`, repetition `r` (from 0), component `c` and subcomponent `s` (from 1);
    /// `""` when absent.
    pub fn get(&self, n: usize, r: usize, c: usize, s: usize) -> &str {
        self.repetitions(n).get(r).map_or("", |rep| rep.sub(c, s))
    }

    /// The first subcomponent of the first component of the first repetition of field `n`.
    pub fn text(&self, n: usize) -> &str {
        self.get(n, 0, 1, 1)
    }

    fn write_er7(&self, field_separator: char, out: &mut String) {
        out.push_str(&self.name);
        let mut fields = self.fields.iter();
        if self.name == "MSH" {
            // MSH-1 is the separator itself, so MSH-2 follows it without another one.
            if let (Some(msh1), Some(msh2)) = (fields.next(), fields.next()) {
                out.push_str(&msh1.raw);
                out.push_str(&msh2.raw);
            }
        }
        for field in fields {
            out.push(field_separator);
            out.push_str(&field.raw);
        }
    }
}

impl Field {
    /// The text as received, escape sequences included.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    pub fn repetitions(&self) -> &[Repetition] {
        &self.repetitions
    }

    /// True for the HL7 explicit null `""` ("delete the stored value"), as opposed to an empty field.
    pub fn is_null(&self) -> bool {
        self.raw == "\"\""
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// A field taken as one literal value (MSH-1, MSH-2).
    fn literal(text: &str) -> Field {
        let component = Component {
            subcomponents: vec![text.to_owned()],
        };
        Field {
            raw: text.to_owned(),
            repetitions: vec![Repetition {
                components: vec![component],
            }],
        }
    }
}

impl Repetition {
    /// Decoded first subcomponent of component `c` (from 1); `""` when absent.
    pub fn component(&self, c: usize) -> &str {
        self.sub(c, 1)
    }

    /// Decoded subcomponent `s` of component `c` (both from 1); `""` when absent.
    pub fn sub(&self, c: usize, s: usize) -> &str {
        c.checked_sub(1)
            .and_then(|c| self.components.get(c))
            .map_or("", |component| component.sub(s))
    }

    pub fn components(&self) -> &[Component] {
        &self.components
    }

    /// True when every component is empty.
    pub fn is_empty(&self) -> bool {
        self.components.iter().all(Component::is_empty)
    }
}

impl Component {
    /// Decoded subcomponent `s` (from 1); `""` when absent.
    pub fn sub(&self, s: usize) -> &str {
        s.checked_sub(1)
            .and_then(|s| self.subcomponents.get(s))
            .map_or("", String::as_str)
    }

    pub fn subcomponents(&self) -> &[String] {
        &self.subcomponents
    }

    pub fn is_empty(&self) -> bool {
        self.subcomponents.iter().all(String::is_empty)
    }
}

fn too_long(location: impl Into<String>, message: impl Into<String>) -> ParseError {
    ParseError::new(code::VALUE_TOO_LONG, location, message)
}

/// Control bytes mean either a framing error (MLLP's 0x0B/0x1C left in) or binary data: in UTF-8 and
/// ISO-8859-1 alike a byte below 0x20 is that control character and nothing else, so checking bytes is
/// enough and gives the exact offset.
fn reject_control_bytes(body: &[u8], offset: usize) -> Result<(), ParseError> {
    let bad = body
        .iter()
        .position(|&b| b < 0x20 && !matches!(b, b'\r' | b'\n' | b'\t'));
    match bad {
        None => Ok(()),
        Some(i) => Err(ParseError::new(
            code::DATA_TYPE,
            format!("byte {}", offset + i),
            format!(
                "byte {} is the control character 0x{:02X}, which HL7 text must not contain (leftover MLLP framing?)",
                offset + i,
                body[i]
            ),
        )),
    }
}

/// The character set of `body` (starting at MSH), from MSH-18 and the bytes themselves.
fn resolve_charset(body: &[u8], had_bom: bool, offset: usize) -> Result<Charset, ParseError> {
    // MSH-18 is read from the first line, decoded provisionally: a declared charset name is ASCII, so
    // the provisional decoding cannot change it, and the whole text is decoded properly afterwards.
    let header_end = body
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(body.len());
    let header = provisional_text(&body[..header_end]);
    let (delimiters, tail) = split_msh(&header)?;
    let msh18 = tail
        .and_then(|t| t.split(delimiters.field).nth(18 - 3))
        .and_then(|f| f.split(delimiters.repetition).next())
        .unwrap_or("");
    let utf8_error = || {
        std::str::from_utf8(body)
            .err()
            .map(|e| offset + e.valid_up_to())
    };
    match msh18 {
        "" => match utf8_error() {
            None => Ok(Charset::Utf8),
            Some(at) if had_bom => Err(charset_mismatch(at, "the byte-order mark declares UTF-8")),
            Some(_) => Ok(Charset::Latin1),
        },
        "UNICODE UTF-8" => match utf8_error() {
            None => Ok(Charset::Utf8),
            Some(at) => Err(charset_mismatch(at, "MSH-18 declares UTF-8")),
        },
        "ASCII" => match body.iter().position(|b| !b.is_ascii()) {
            None => Ok(Charset::Ascii),
            Some(i) => Err(charset_mismatch(offset + i, "MSH-18 declares ASCII")),
        },
        "8859/1" if had_bom => Err(ParseError::new(
            code::DATA_TYPE,
            "MSH-18",
            "MSH-18 declares ISO-8859-1 but the message starts with a UTF-8 byte-order mark",
        )),
        "8859/1" => Ok(Charset::Latin1),
        _ => Err(ParseError::new(
            code::TABLE_VALUE_NOT_FOUND,
            "MSH-18",
            "MSH-18 names a character set this receiver does not support; send ASCII, 8859/1 or UNICODE UTF-8",
        )),
    }
}

fn charset_mismatch(byte: usize, declared: &str) -> ParseError {
    ParseError::new(
        code::DATA_TYPE,
        "MSH-18",
        format!("{declared} but the bytes from offset {byte} are not in that character set"),
    )
}

fn provisional_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => latin1(bytes),
    }
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

fn decode_text(body: &[u8], charset: Charset, offset: usize) -> Result<String, ParseError> {
    match charset {
        Charset::Latin1 => Ok(latin1(body)),
        Charset::Ascii | Charset::Utf8 => {
            std::str::from_utf8(body).map(str::to_owned).map_err(|e| {
                // resolve_charset checked this already; kept as an error rather than an unwrap.
                ParseError::new(
                    code::APPLICATION_INTERNAL,
                    format!("byte {}", offset + e.valid_up_to()),
                    "the message text could not be decoded",
                )
            })
        }
    }
}

/// Splits an MSH line into its delimiters and the text after MSH-2's closing separator (`None` when
/// MSH-2 ends the line).
fn split_msh(line: &str) -> Result<(Delimiters, Option<&str>), ParseError> {
    let after_name = line.strip_prefix("MSH").unwrap_or(line);
    let Some(field) = after_name.chars().next() else {
        return Err(ParseError::new(
            code::REQUIRED_FIELD_MISSING,
            "MSH-1",
            "MSH-1 (field separator) is missing: the MSH segment ends after its name",
        ));
    };
    if !is_delimiter_char(field) {
        return Err(ParseError::new(
            code::DATA_TYPE,
            "MSH-1",
            "MSH-1 (field separator) is a letter, digit, space or control character; it must be punctuation",
        ));
    }
    let rest = &after_name[field.len_utf8()..];
    let (encoding, tail) = match rest.find(field) {
        Some(i) => (&rest[..i], Some(&rest[i + field.len_utf8()..])),
        None => (rest, None),
    };
    Ok((Delimiters::from_msh(field, encoding)?, tail))
}

/// Counts subcomponent values across the message against [`MAX_VALUES`].
struct Budget {
    values: usize,
}

impl Budget {
    fn take(&mut self, n: usize, location: &str) -> Result<(), ParseError> {
        self.values += n;
        if self.values > MAX_VALUES {
            return Err(too_long(
                location,
                format!("the message holds more than {MAX_VALUES} values"),
            ));
        }
        Ok(())
    }
}

/// Turns the decoded text into segments. Every non-empty line becomes a segment or an error.
fn tokenize(text: &str, charset: Charset) -> Result<Message, ParseError> {
    let mut lines = text.split(['\r', '\n']).filter(|line| !line.is_empty());
    let mut budget = Budget { values: 0 };
    let header = lines.next().unwrap_or("");
    let (delimiters, msh) = parse_msh(header, &mut budget)?;
    let mut segments = vec![msh];
    for (index, line) in lines.enumerate() {
        let number = index + 2;
        if number > MAX_SEGMENTS {
            return Err(too_long(
                format!("segment {number}"),
                format!("the message has more than {MAX_SEGMENTS} segments"),
            ));
        }
        segments.push(parse_segment(line, number, &delimiters, &mut budget)?);
    }
    Ok(Message {
        delimiters,
        charset,
        segments,
    })
}

fn parse_msh(line: &str, budget: &mut Budget) -> Result<(Delimiters, Segment), ParseError> {
    if !line.starts_with("MSH") {
        return Err(ParseError::new(
            code::SEGMENT_SEQUENCE,
            "segment 1",
            "the message must start with an MSH segment",
        ));
    }
    let (delimiters, tail) = split_msh(line)?;
    let encoding = delimiters.encoding_characters();
    let mut fields = vec![
        Field::literal(&delimiters.field.to_string()),
        Field::literal(&encoding),
    ];
    if let Some(tail) = tail {
        parse_fields(tail, "MSH", 1, 3, &delimiters, budget, &mut fields)?;
    }
    Ok((
        delimiters,
        Segment {
            name: "MSH".to_owned(),
            fields,
        },
    ))
}

/// Segments that frame messages and batches; inside a message they mean two messages were run together.
const FRAMING_SEGMENTS: [&str; 5] = ["MSH", "FHS", "BHS", "BTS", "FTS"];

fn parse_segment(
    line: &str,
    number: usize,
    d: &Delimiters,
    budget: &mut Budget,
) -> Result<Segment, ParseError> {
    let location = format!("segment {number}");
    let name_bytes = line.as_bytes().get(..3).unwrap_or(&[]);
    if !is_segment_name(name_bytes) {
        return Err(ParseError::new(
            code::SEGMENT_SEQUENCE,
            location,
            format!(
                "segment {number} does not start with a segment name (three characters A-Z or 0-9, the first a letter); \
                 a line break inside a field value would cause this"
            ),
        ));
    }
    // The first three bytes are ASCII, so byte 3 is a char boundary.
    let (name, rest) = line.split_at(3);
    if FRAMING_SEGMENTS.contains(&name) {
        return Err(ParseError::new(
            code::SEGMENT_SEQUENCE,
            location,
            format!(
                "segment {number} is a message or batch header or trailer; split batches with split_batch before parsing"
            ),
        ));
    }
    let mut fields = Vec::new();
    if !rest.is_empty() {
        let Some(tail) = rest.strip_prefix(d.field) else {
            return Err(ParseError::new(
                code::SEGMENT_SEQUENCE,
                location,
                format!(
                    "segment {number}: the segment name must be followed by the field separator or the end of the line"
                ),
            ));
        };
        parse_fields(tail, name, number, 1, d, budget, &mut fields)?;
    }
    Ok(Segment {
        name: name.to_owned(),
        fields,
    })
}

fn is_segment_name(bytes: &[u8]) -> bool {
    matches!(bytes, [first, rest @ ..] if bytes.len() == 3
        && first.is_ascii_uppercase()
        && rest.iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()))
}

/// Splits `tail` (the text after a segment's first field separator) into fields numbered from `first`.
fn parse_fields(
    tail: &str,
    name: &str,
    number: usize,
    first: usize,
    d: &Delimiters,
    budget: &mut Budget,
    fields: &mut Vec<Field>,
) -> Result<(), ParseError> {
    for (index, raw) in tail.split(d.field).enumerate() {
        let position = first + index;
        if position > MAX_FIELDS {
            return Err(too_long(
                format!("{name}-{position}"),
                format!("segment {number} has more than {MAX_FIELDS} fields"),
            ));
        }
        fields.push(parse_field(
            raw,
            &format!("{name}-{position}"),
            number,
            d,
            budget,
        )?);
    }
    Ok(())
}

fn parse_field(
    raw: &str,
    location: &str,
    number: usize,
    d: &Delimiters,
    budget: &mut Budget,
) -> Result<Field, ParseError> {
    if raw.is_empty() {
        return Ok(Field {
            raw: String::new(),
            repetitions: Vec::new(),
        });
    }
    let limit = |what: &str, max: usize| {
        too_long(
            location,
            format!("{location} in segment {number} has more than {max} {what}"),
        )
    };
    let mut repetitions = Vec::new();
    for rep in raw.split(d.repetition) {
        if repetitions.len() == MAX_REPETITIONS {
            return Err(limit("repetitions", MAX_REPETITIONS));
        }
        let mut components = Vec::new();
        for comp in rep.split(d.component) {
            if components.len() == MAX_COMPONENTS {
                return Err(limit("components", MAX_COMPONENTS));
            }
            let mut subcomponents = Vec::new();
            for sub in comp.split(d.subcomponent) {
                if subcomponents.len() == MAX_SUBCOMPONENTS {
                    return Err(limit("subcomponents", MAX_SUBCOMPONENTS));
                }
                budget.take(1, location)?;
                subcomponents.push(escape::decode(sub, d));
            }
            components.push(Component { subcomponents });
        }
        repetitions.push(Repetition { components });
    }
    Ok(Field {
        raw: raw.to_owned(),
        repetitions,
    })
}

// ---------------------------------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------------------------------

/// Splits a batch file (`[FHS] {[BHS] {MSH …} [BTS]} [FTS]`) or a plain stream of messages into the
/// bytes of each message, from its MSH line to the next message, trailer or the end.
///
/// Rules, each guarding against a truncated or spliced file:
/// - FHS only first; FTS, if FHS was given, last (only empty lines may follow); a BHS needs its BTS and a
///   BTS its BHS. Once a file uses BHS, every message must sit inside a BHS … BTS batch.
/// - BTS-1 (message count) and FTS-1 (batch count), when not empty, must match what was found. A file
///   without BHS segments counts as one batch for FTS-1.
/// - Any line before the first MSH of a batch, or otherwise outside a message, is an error.
///
/// Lines are found by CR and LF bytes, which mean the same in UTF-8 and ISO-8859-1, so each message
/// keeps its own bytes and character set for [`Message::parse`].
pub fn split_batch(bytes: &[u8]) -> Result<Vec<Vec<u8>>, ParseError> {
    if bytes.len() > MAX_BATCH_BYTES {
        return Err(too_long(
            "batch",
            format!(
                "the input has {} bytes; the limit is {MAX_BATCH_BYTES}",
                bytes.len()
            ),
        ));
    }
    let start = if bytes.starts_with(UTF8_BOM) {
        UTF8_BOM.len()
    } else {
        0
    };
    let mut splitter = BatchSplitter::default();
    for (number, line) in lines(bytes, start).enumerate() {
        splitter.line(bytes, line, number + 1)?;
    }
    splitter.finish(bytes)
}

/// Byte range of one non-empty line, terminator excluded.
#[derive(Clone, Copy)]
struct Line {
    start: usize,
    end: usize,
}

/// The non-empty lines of `bytes` from `start`, split at CR, LF and CRLF.
fn lines(bytes: &[u8], start: usize) -> impl Iterator<Item = Line> + '_ {
    let mut position = start;
    std::iter::from_fn(move || {
        while position < bytes.len() {
            let line_start = position;
            let end = bytes[line_start..]
                .iter()
                .position(|&b| b == b'\r' || b == b'\n')
                .map_or(bytes.len(), |i| line_start + i);
            position = end + 1;
            if end > line_start {
                return Some(Line {
                    start: line_start,
                    end,
                });
            }
        }
        None
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    FileHeader,
    BatchHeader,
    MessageHeader,
    BatchTrailer,
    FileTrailer,
    Other,
}

fn framing(line: &[u8]) -> Framing {
    match line.get(..3) {
        Some(b"FHS") => Framing::FileHeader,
        Some(b"BHS") => Framing::BatchHeader,
        Some(b"MSH") => Framing::MessageHeader,
        Some(b"BTS") => Framing::BatchTrailer,
        Some(b"FTS") => Framing::FileTrailer,
        _ => Framing::Other,
    }
}

#[derive(Default)]
struct BatchSplitter {
    /// Messages found so far, as byte ranges.
    messages: Vec<(usize, usize)>,
    /// Start of the message being collected.
    open_message: Option<usize>,
    /// The field separator bytes of the first header (FHS, BHS or MSH), for reading BTS-1 and FTS-1.
    separator: Option<Vec<u8>>,
    file_header: bool,
    file_closed: bool,
    /// Messages in the open batch, if a BHS is open.
    open_batch: Option<usize>,
    batches: usize,
    any_lines: bool,
}

impl BatchSplitter {
    fn line(&mut self, bytes: &[u8], line: Line, number: usize) -> Result<(), ParseError> {
        let text = &bytes[line.start..line.end];
        let kind = framing(text);
        let location = format!("segment {number}");
        let sequence_error = |message: &str| {
            Err(ParseError::new(
                code::SEGMENT_SEQUENCE,
                location.clone(),
                format!("segment {number}: {message}"),
            ))
        };
        if self.file_closed {
            return sequence_error("content follows the file trailer (FTS)");
        }
        let first_line = !self.any_lines;
        self.any_lines = true;
        if kind != Framing::Other {
            if self.separator.is_none()
                && kind != Framing::BatchTrailer
                && kind != Framing::FileTrailer
            {
                self.separator = separator_of(text).map(<[u8]>::to_vec);
            }
            if kind != Framing::MessageHeader {
                self.close_message(line.start);
            }
        }
        match kind {
            Framing::FileHeader if !first_line => {
                sequence_error("a file header (FHS) may only start the input")
            }
            Framing::FileHeader => {
                self.file_header = true;
                Ok(())
            }
            Framing::BatchHeader if self.open_batch.is_some() => sequence_error(
                "a batch header (BHS) inside an open batch; the previous batch lacks its BTS",
            ),
            Framing::BatchHeader if self.batches == 0 && !self.messages.is_empty() => {
                sequence_error("a batch header (BHS) after messages outside any batch")
            }
            Framing::BatchHeader => {
                self.open_batch = Some(0);
                Ok(())
            }
            Framing::MessageHeader => self.open(line.start, number),
            Framing::BatchTrailer => self.close_batch(text, number),
            Framing::FileTrailer => self.close_file(text, number),
            Framing::Other if self.open_message.is_some() => Ok(()),
            Framing::Other => {
                sequence_error("content outside any message (every message starts with MSH)")
            }
        }
    }

    fn open(&mut self, start: usize, number: usize) -> Result<(), ParseError> {
        if self.open_batch.is_none() && self.batches > 0 {
            return Err(ParseError::new(
                code::SEGMENT_SEQUENCE,
                format!("segment {number}"),
                format!(
                    "segment {number}: a message outside a batch, in a file whose other messages are in batches"
                ),
            ));
        }
        if let Some(previous) = self.open_message.take() {
            self.messages.push((previous, start));
        }
        if self.messages.len() >= MAX_BATCH_MESSAGES {
            return Err(too_long(
                format!("segment {number}"),
                format!("the input holds more than {MAX_BATCH_MESSAGES} messages"),
            ));
        }
        self.open_message = Some(start);
        if let Some(count) = self.open_batch.as_mut() {
            *count += 1;
        }
        Ok(())
    }

    fn close_message(&mut self, end: usize) {
        if let Some(start) = self.open_message.take() {
            self.messages.push((start, end));
        }
    }

    fn close_batch(&mut self, text: &[u8], number: usize) -> Result<(), ParseError> {
        let Some(found) = self.open_batch.take() else {
            return Err(ParseError::new(
                code::SEGMENT_SEQUENCE,
                format!("segment {number}"),
                format!("segment {number}: a batch trailer (BTS) without a batch header (BHS)"),
            ));
        };
        self.batches += 1;
        self.check_count(text, number, "BTS-1", "messages", found)
    }

    fn close_file(&mut self, text: &[u8], number: usize) -> Result<(), ParseError> {
        let location = format!("segment {number}");
        if !self.file_header {
            return Err(ParseError::new(
                code::SEGMENT_SEQUENCE,
                location,
                format!("segment {number}: a file trailer (FTS) without a file header (FHS)"),
            ));
        }
        if self.open_batch.is_some() {
            return Err(ParseError::new(
                code::SEGMENT_SEQUENCE,
                location,
                format!(
                    "segment {number}: the file trailer (FTS) comes before the open batch's trailer (BTS)"
                ),
            ));
        }
        self.file_closed = true;
        // Messages straight inside a file form one implicit batch.
        let batches = if self.batches == 0 && !self.messages.is_empty() {
            1
        } else {
            self.batches
        };
        self.check_count(text, number, "FTS-1", "batches", batches)
    }

    /// Compares the count in field 1 of a trailer segment, when given, with the number found.
    fn check_count(
        &self,
        text: &[u8],
        number: usize,
        field: &str,
        what: &str,
        found: usize,
    ) -> Result<(), ParseError> {
        let Some(declared) = trailer_count(text, self.separator.as_deref()).map_err(|message| {
            ParseError::new(
                code::DATA_TYPE,
                field,
                format!("segment {number}: {message}"),
            )
        })?
        else {
            return Ok(());
        };
        if declared != found {
            return Err(ParseError::new(
                code::SEGMENT_SEQUENCE,
                field,
                format!(
                    "{field} in segment {number} announces {declared} {what} but {found} were found; the batch is incomplete or spliced"
                ),
            ));
        }
        Ok(())
    }

    fn finish(mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, ParseError> {
        self.close_message(bytes.len());
        let end = || ParseError::new(code::SEGMENT_SEQUENCE, "end of input", String::new());
        if self.open_batch.is_some() {
            return Err(ParseError {
                message:
                    "the input ends inside a batch: the batch trailer (BTS) is missing, so the batch may be truncated"
                        .into(),
                ..end()
            });
        }
        if self.file_header && !self.file_closed {
            return Err(ParseError {
                message:
                    "the input ends without the file trailer (FTS), so the file may be truncated"
                        .into(),
                ..end()
            });
        }
        if !self.any_lines {
            return Err(ParseError {
                message: "the input is empty".into(),
                ..end()
            });
        }
        Ok(self
            .messages
            .into_iter()
            .map(|(start, end)| bytes[start..end].to_vec())
            .collect())
    }
}

/// The field separator of a header line (FHS, BHS, MSH): the character after the three-letter name,
/// as bytes (one byte when ASCII or ISO-8859-1, up to four when UTF-8).
fn separator_of(line: &[u8]) -> Option<&[u8]> {
    let rest = line.get(3..)?;
    let first = *rest.first()?;
    if first.is_ascii() {
        return rest.get(..1);
    }
    let prefix = rest.get(..rest.len().min(4))?;
    let valid = match std::str::from_utf8(prefix) {
        Ok(text) => text,
        Err(e) => prefix
            .get(..e.valid_up_to())
            .and_then(|p| std::str::from_utf8(p).ok())
            .unwrap_or(""),
    };
    let width = valid.chars().next().map_or(1, char::len_utf8);
    rest.get(..width)
}

/// Field 1 of a BTS or FTS line as a count: `Ok(None)` when empty or absent.
fn trailer_count(line: &[u8], separator: Option<&[u8]>) -> Result<Option<usize>, &'static str> {
    let rest = line.get(3..).unwrap_or(&[]);
    if rest.is_empty() {
        return Ok(None);
    }
    let separator = separator.filter(|s| !s.is_empty()).unwrap_or(b"|");
    let Some(fields) = rest.strip_prefix(separator) else {
        return Err(
            "the trailer's name must be followed by the field separator of the batch header",
        );
    };
    let count = fields
        .windows(separator.len())
        .position(|w| w == separator)
        .map_or(fields, |i| &fields[..i]);
    if count.is_empty() {
        return Ok(None);
    }
    if count.len() > 9 || !count.iter().all(u8::is_ascii_digit) {
        return Err("the count must be a whole number of at most 9 digits");
    }
    // Only ASCII digits, at most 9: the parse cannot fail, and an error here would be reported anyway.
    std::str::from_utf8(count)
        .ok()
        .and_then(|digits| digits.parse().ok())
        .map(Some)
        .ok_or("the count must be a whole number")
}

/// Public within the crate so that other modules' tests can use `tests::SAMPLE_ORU`.
#[cfg(test)]
#[path = "er7_tests.rs"]
pub(crate) mod tests;
