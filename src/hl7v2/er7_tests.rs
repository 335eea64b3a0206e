//! Tests of the ER7 parser and batch splitter. `SAMPLE_ORU` is a realistic Holter result for other
//! modules' tests to reuse.

use super::*;

/// A Holter ECG result as an IHE PCD-01 ORU^R01: device (MDS 1.0.0.0) and metrics (1.1.1.x) in OBX,
/// the recorder's EUI-64 in OBX-18, escapes after non-ASCII text in PID-5 and OBX-5.
pub const SAMPLE_ORU: &str = concat!(
    "MSH|^~\\&|HOLTER_ANALYZER^0123456789ABCDEF^EUI-64|CARDIO_LAB|FHIRVAULT|KLINIKUM_WIEN|20260314123005+0100||",
    "ORU^R01^ORU_R01|MSG-20260314-0001|P|2.6|||NE|AL||UNICODE UTF-8|||IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO\r",
    "PID|1||1234010180^^^SVNR^SS~PAT-77^^^CARDIO_LAB^MR||Müller\\T\\Söhne^Anna^^^^^L||19800101|F\r",
    "PV1|1|O|CARDIO^^^KLINIKUM_WIEN\r",
    "OBR|1|ORD-4711^CARDIO_LAB|REP-0815^HOLTER_ANALYZER|252768^MDC_ECG_HOLTER^MDC|||20260313080000+0100|20260314080000+0100\r",
    "OBX|1||69837^MDC_DEV_ECG_HOLTER_MDS^MDC|1.0.0.0|||||||X|||||||0123456789ABCDEF^^0123456789ABCDEF^EUI-64\r",
    "OBX|2|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|72|264864^{beat}/min^MDC|||||F|||20260314080000+0100||||0123456789ABCDEF^^0123456789ABCDEF^EUI-64\r",
    "OBX|3|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.2|41|264864^{beat}/min^MDC|||||F|||20260314033012+0100||||0123456789ABCDEF^^0123456789ABCDEF^EUI-64\r",
    "OBX|4|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.3|148|264864^{beat}/min^MDC|||||F|||20260313171544+0100||||0123456789ABCDEF^^0123456789ABCDEF^EUI-64\r",
    "OBX|5|NM|8867-4^Heart rate^LN|1.1.1.4|1.50|264338^s^MDC|||||F|||20260314080000+0100||||0123456789ABCDEF^^0123456789ABCDEF^EUI-64\r",
    "OBX|6|FT|18844-1^ECG interpretation^LN|1.1.2.1|Sinusrhythmus\\.br\\keine Pausen \\T\\ keine VES~üü\\S\\x|||||||F|||20260314080000+0100\r",
    "NTE|1|L|\"\"\r",
);

fn parse(text: &str) -> Result<Message, ParseError> {
    Message::parse(text.as_bytes())
}

fn sample() -> Message {
    parse(SAMPLE_ORU).expect("the sample parses")
}

fn names(m: &Message) -> Vec<&str> {
    m.segments().iter().map(Segment::name).collect()
}

fn err(text: &str) -> ParseError {
    parse(text).expect_err("must be rejected")
}

const MSH: &str = "MSH|^~\\&|A|B|C|D|20260314||ORU^R01|1|P|2.5";

// --- The sample and the accessors -----------------------------------------------------------------

#[test]
fn sample_parses_every_segment() {
    let m = sample();
    assert_eq!(
        names(&m),
        [
            "MSH", "PID", "PV1", "OBR", "OBX", "OBX", "OBX", "OBX", "OBX", "OBX", "NTE"
        ]
    );
    assert_eq!(m.charset(), Charset::Utf8);
    assert_eq!(*m.delimiters(), Delimiters::default());
    assert_eq!(m.all("OBX").count(), 6);
}

#[test]
fn msh_numbering_counts_the_separator_as_field_one() {
    let m = sample();
    let msh = m.first("MSH").unwrap();
    assert_eq!(msh.text(1), "|");
    assert_eq!(msh.text(2), "^~\\&");
    assert_eq!(msh.field(2).unwrap().raw(), "^~\\&");
    assert_eq!(msh.get(3, 0, 2, 1), "0123456789ABCDEF");
    assert_eq!(msh.get(9, 0, 1, 1), "ORU");
    assert_eq!(msh.get(9, 0, 2, 1), "R01");
    assert_eq!(msh.text(10), "MSG-20260314-0001");
    assert_eq!(msh.text(12), "2.6");
    assert_eq!(msh.text(18), "UNICODE UTF-8");
    assert_eq!(msh.field_count(), 21);
}

#[test]
fn other_segments_count_from_the_first_field_after_the_name() {
    let m = sample();
    let pid = m.first("PID").unwrap();
    assert_eq!(pid.text(1), "1");
    assert_eq!(pid.repetitions(3).len(), 2);
    assert_eq!(pid.get(3, 0, 1, 1), "1234010180");
    assert_eq!(pid.get(3, 0, 5, 1), "SS");
    assert_eq!(pid.get(3, 1, 4, 1), "CARDIO_LAB");
    assert_eq!(pid.repetitions(3)[1].component(5), "MR");
    assert_eq!(pid.text(7), "19800101");
}

#[test]
fn pcd01_observation_fields() {
    let m = sample();
    let obx: Vec<&Segment> = m.all("OBX").collect();
    assert_eq!(obx[0].text(4), "1.0.0.0");
    assert_eq!(obx[1].text(4), "1.1.1.1");
    assert_eq!(obx[1].text(5), "72");
    assert_eq!(obx[4].text(5), "1.50", "numbers keep their text");
    assert_eq!(obx[1].get(6, 0, 2, 1), "{beat}/min");
    assert_eq!(obx[0].get(18, 0, 1, 1), "0123456789ABCDEF");
    assert_eq!(obx[0].get(18, 0, 4, 1), "EUI-64");
    assert_eq!(obx[5].text(18), "");
}

#[test]
fn absent_positions_are_empty() {
    let m = sample();
    let pid = m.first("PID").unwrap();
    assert!(pid.field(0).is_none());
    assert!(pid.field(99).is_none());
    assert!(pid.repetitions(99).is_empty());
    assert!(
        pid.repetitions(2).is_empty(),
        "an empty field has no repetitions"
    );
    assert_eq!(pid.get(3, 5, 1, 1), "");
    assert_eq!(pid.get(3, 0, 0, 1), "");
    assert_eq!(pid.get(3, 0, 1, 0), "");
    assert_eq!(pid.get(3, 0, 99, 1), "");
    assert_eq!(pid.get(3, 0, 1, 9), "");
    assert_eq!(pid.get(usize::MAX, usize::MAX, usize::MAX, usize::MAX), "");
    assert!(m.first("ZZZ").is_none());
}

#[test]
fn components_and_subcomponents() {
    let m = parse(&format!("{MSH}\rZAB|a&b&c^d~^^~x")).unwrap();
    let z = m.first("ZAB").unwrap();
    let reps = z.repetitions(1);
    assert_eq!(reps.len(), 3);
    assert_eq!(reps[0].sub(1, 1), "a");
    assert_eq!(reps[0].sub(1, 3), "c");
    assert_eq!(
        reps[0].component(1),
        "a",
        "component() is the first subcomponent"
    );
    assert_eq!(reps[0].components()[0].subcomponents(), ["a", "b", "c"]);
    assert_eq!(reps[0].component(2), "d");
    assert!(reps[1].is_empty());
    assert_eq!(reps[1].components().len(), 3);
    assert!(!reps[2].is_empty());
    assert_eq!(z.get(1, 2, 1, 1), "x");
}

#[test]
fn explicit_null_is_kept_as_two_quotes() {
    let m = sample();
    let nte = m.first("NTE").unwrap();
    assert_eq!(nte.text(3), "\"\"");
    assert!(nte.field(3).unwrap().is_null());
    assert!(!nte.field(2).unwrap().is_null());
    assert!(m.first("PID").unwrap().field(2).unwrap().is_empty());
}

// --- Escapes inside messages ---------------------------------------------------------------------

#[test]
fn escapes_are_decoded_after_non_ascii_text() {
    let m = sample();
    assert_eq!(m.first("PID").unwrap().get(5, 0, 1, 1), "Müller&Söhne");
    let ft = m.all("OBX").nth(5).unwrap();
    assert_eq!(
        ft.get(5, 0, 1, 1),
        "Sinusrhythmus\nkeine Pausen & keine VES"
    );
    assert_eq!(ft.get(5, 1, 1, 1), "üü^x");
    assert_eq!(
        ft.field(5).unwrap().raw(),
        "Sinusrhythmus\\.br\\keine Pausen \\T\\ keine VES~üü\\S\\x"
    );
}

#[test]
fn escaped_delimiters_do_not_split() {
    let m = parse(&format!("{MSH}\rZAB|a\\F\\b\\S\\c\\R\\d\\T\\e")).unwrap();
    let z = m.first("ZAB").unwrap();
    assert_eq!(z.field_count(), 1);
    assert_eq!(z.repetitions(1).len(), 1);
    assert_eq!(z.text(1), "a|b^c~d&e");
}

#[test]
fn custom_delimiters() {
    let m = parse("MSH#$~@&#SND#FAC#####ORU$R01#1#P#2.5\nPID###123$$$SVNR##Müller@T@Söhne$Anna\n")
        .unwrap();
    let d = m.delimiters();
    assert_eq!(
        (d.field, d.component, d.repetition, d.escape, d.subcomponent),
        ('#', '$', '~', Some('@'), '&')
    );
    let msh = m.first("MSH").unwrap();
    assert_eq!(msh.text(1), "#");
    assert_eq!(msh.text(2), "$~@&");
    assert_eq!(msh.get(9, 0, 2, 1), "R01");
    let pid = m.first("PID").unwrap();
    assert_eq!(pid.get(3, 0, 4, 1), "SVNR");
    assert_eq!(pid.get(5, 0, 1, 1), "Müller&Söhne");
    assert_eq!(
        m.to_er7(),
        "MSH#$~@&#SND#FAC#####ORU$R01#1#P#2.5\rPID###123$$$SVNR##Müller@T@Söhne$Anna\r"
    );
}

#[test]
fn non_ascii_delimiters_work_on_char_boundaries() {
    let m = parse("MSH§^~\\&§A§B\rPID§1§§ü§ü\\F\\").unwrap();
    assert_eq!(m.delimiters().field, '§');
    let pid = m.first("PID").unwrap();
    assert_eq!(pid.text(3), "ü");
    assert_eq!(pid.text(4), "ü§");
    assert_eq!(Message::parse(&m.to_er7_bytes()).unwrap(), m);
}

#[test]
fn truncation_character_from_five_character_msh2() {
    let m =
        parse("MSH|^~\\&#|A|B|C|D|20260314||ORU^R01|1|P|2.7\rOBX|1|ST|X||abc#~a\\P\\b").unwrap();
    let d = m.delimiters();
    assert_eq!(d.truncation, Some('#'));
    assert_eq!(d.encoding_characters(), "^~\\&#");
    let msh = m.first("MSH").unwrap();
    assert_eq!(msh.text(2), "^~\\&#");
    assert_eq!(msh.text(3), "A");
    let obx = m.first("OBX").unwrap();
    assert_eq!(
        obx.get(5, 0, 1, 1),
        "abc#",
        "a truncation character is kept as data"
    );
    assert_eq!(obx.get(5, 1, 1, 1), "a#b");
}

// --- Segment terminators and structure -----------------------------------------------------------

#[test]
fn cr_lf_crlf_and_mixed_endings_give_the_same_message() {
    let expected = sample();
    let bare = SAMPLE_ORU.trim_end_matches('\r');
    for ending in ["\n", "\r\n", "\r"] {
        let text = bare.replace('\r', ending);
        assert_eq!(parse(&text).unwrap(), expected, "ending {ending:?}");
        assert_eq!(
            parse(&format!("{text}{ending}")).unwrap(),
            expected,
            "with final {ending:?}"
        );
    }
    let mut mixed = String::new();
    for (i, line) in bare.split('\r').enumerate() {
        mixed.push_str(line);
        mixed.push_str(["\n", "\r\n", "\r"][i % 3]);
    }
    assert_eq!(parse(&mixed).unwrap(), expected);
}

#[test]
fn lf_separated_message_yields_all_segments() {
    // hl7-parser 0.3 in strict mode returns MSH alone for this.
    let m = parse(&format!("{MSH}\nPID|1||123\nOBR|1\nOBX|1|NM|X||5\n")).unwrap();
    assert_eq!(names(&m), ["MSH", "PID", "OBR", "OBX"]);
}

#[test]
fn segment_without_fields_keeps_the_following_segments() {
    // hl7-parser 0.3 drops everything after "PID".
    let m = parse(&format!("{MSH}\rPID\rOBX|1|NM|X||5\rZ01")).unwrap();
    assert_eq!(names(&m), ["MSH", "PID", "OBX", "Z01"]);
    assert_eq!(m.first("PID").unwrap().field_count(), 0);
    assert_eq!(m.first("OBX").unwrap().text(5), "5");
    assert_eq!(m.to_er7(), format!("{MSH}\rPID\rOBX|1|NM|X||5\rZ01\r"));
}

#[test]
fn empty_lines_are_skipped_and_trailing_fields_kept() {
    let m = parse(&format!("\r\n\n{MSH}\r\r\n\nPID|1||\n\n")).unwrap();
    assert_eq!(names(&m), ["MSH", "PID"]);
    assert_eq!(
        m.first("PID").unwrap().field_count(),
        3,
        "empty trailing fields are kept"
    );
    assert_eq!(m.to_er7(), format!("{MSH}\rPID|1||\r"));
}

#[test]
fn msh_alone_and_msh_without_more_fields() {
    let m = parse("MSH|^~\\&").unwrap();
    assert_eq!(m.first("MSH").unwrap().field_count(), 2);
    assert_eq!(m.to_er7(), "MSH|^~\\&\r");
    let m = parse("MSH|^~\\&|").unwrap();
    assert_eq!(m.first("MSH").unwrap().field_count(), 3);
    assert_eq!(m.to_er7(), "MSH|^~\\&|\r");
}

#[test]
fn message_cut_mid_field_is_structurally_fine() {
    // Truncation inside the last field cannot be seen in ER7 alone; the batch trailer counts and the
    // MLLP frame are what catch it. What we guarantee is that nothing before the cut is lost.
    let cut = &SAMPLE_ORU[..SAMPLE_ORU.find("Sinusrhythmus").unwrap() + 5];
    let m = parse(cut).unwrap();
    assert_eq!(m.segments().len(), 10);
    assert_eq!(m.all("OBX").last().unwrap().text(5), "Sinus");
}

#[test]
fn byte_order_mark_is_skipped() {
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(SAMPLE_ORU.as_bytes());
    assert_eq!(Message::parse(&bytes).unwrap(), sample());
}

#[test]
fn first_segment_must_be_msh() {
    for text in [
        "PID|1\rMSH|^~\\&|A",
        " MSH|^~\\&|A",
        "msh|^~\\&|A",
        "MS",
        "\u{FEFF}\u{FEFF}MSH|^~\\&",
    ] {
        let e = err(text);
        assert_eq!(
            (e.code, e.location.as_str()),
            (100, "segment 1"),
            "{text:?}"
        );
    }
    for text in ["", "\r\n\r\n", "\u{FEFF}"] {
        let e = err(text);
        assert_eq!(e.code, 100);
        assert!(e.message.contains("empty"), "{text:?}: {}", e.message);
    }
}

#[test]
fn malformed_segments_are_rejected_not_dropped() {
    let cases = [
        ("pid|1", 2),
        ("PI|1", 2),
        ("P", 2),
        ("1ID|1", 2),
        ("PIDX|1", 2),
        ("PID^1", 2),
        ("Ü12|1", 2),
        (" PID|1", 2),
        ("PID|1\rOBX|1\r  ", 4),
        ("PID|1\rOBX|1|ST|X||line one\nline two", 4),
    ];
    for (tail, segment) in cases {
        let e = err(&format!("{MSH}\r{tail}"));
        assert_eq!(e.code, 100, "{tail:?}");
        assert_eq!(e.location, format!("segment {segment}"), "{tail:?}");
    }
}

#[test]
fn a_second_header_inside_a_message_is_rejected() {
    for tail in [MSH, "BHS|^~\\&", "BTS|1", "FHS|^~\\&", "FTS|1"] {
        let e = err(&format!("{MSH}\rPID|1\r{tail}"));
        assert_eq!((e.code, e.location.as_str()), (100, "segment 3"), "{tail}");
        assert!(e.message.contains("split_batch"));
    }
}

// --- MSH-1 and MSH-2 -----------------------------------------------------------------------------

#[test]
fn msh1_and_msh2_errors() {
    let cases: [(&str, u16, &str); 11] = [
        ("MSH", 101, "MSH-1"),
        ("MSH|", 101, "MSH-2"),
        ("MSH||A", 101, "MSH-2"),
        ("MSH|^~&|A", 102, "MSH-2"),
        ("MSH|^~\\&#!|A", 102, "MSH-2"),
        ("MSH|^~\\^|A", 102, "MSH-2"),
        ("MSH|^~\\||A", 102, "MSH-2"),
        ("MSH|^~\\a|A", 102, "MSH-2"),
        ("MSH|^~ &|A", 102, "MSH-2"),
        ("MSHA^~\\&A", 102, "MSH-1"),
        ("MSH ^~\\& A", 102, "MSH-1"),
    ];
    for (text, code, location) in cases {
        let e = err(text);
        assert_eq!(
            (e.code, e.location.as_str()),
            (code, location),
            "{text:?}: {}",
            e.message
        );
    }
    let e = err("MSH|^~\\&#!|A");
    assert!(e.message.contains("holds 6"), "{}", e.message);
}

#[test]
fn msh2_with_field_separator_repeated_is_rejected() {
    // "MSH|^|~\&": MSH-2 is "^" (one character).
    let e = err("MSH|^|~\\&|A");
    assert_eq!((e.code, e.location.as_str()), (102, "MSH-2"));
    assert!(e.message.contains("holds 1"));
}

// --- Character sets ------------------------------------------------------------------------------

fn latin1_bytes(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap())
        .collect()
}

#[test]
fn invalid_utf8_without_msh18_is_latin1() {
    let bytes = latin1_bytes(&format!("{MSH}\rPID|1||123||Müller\\T\\Söhne^Jürgen"));
    assert!(std::str::from_utf8(&bytes).is_err());
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.charset(), Charset::Latin1);
    assert_eq!(m.first("PID").unwrap().get(5, 0, 1, 1), "Müller&Söhne");
    assert_eq!(m.first("PID").unwrap().get(5, 0, 2, 1), "Jürgen");
    assert_eq!(m.to_er7_bytes(), [bytes.as_slice(), b"\r"].concat());
    assert_eq!(Message::parse(&m.to_er7_bytes()).unwrap(), m);
}

#[test]
fn declared_latin1_is_read_as_latin1_even_when_valid_utf8() {
    let mut bytes = b"MSH|^~\\&|A|B|C|D|2026||ORU^R01|1|P|2.5||||||8859/1\rPID|1||x||".to_vec();
    bytes.extend_from_slice("ü".as_bytes()); // C3 BC: two Latin-1 characters
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.charset(), Charset::Latin1);
    assert_eq!(m.first("PID").unwrap().text(5), "Ã¼");
    assert_eq!(Message::parse(&m.to_er7_bytes()).unwrap(), m);
}

#[test]
fn msh18_first_repetition_decides() {
    let m = parse("MSH|^~\\&|A|B|C|D|2026||ORU^R01|1|P|2.5||||||UNICODE UTF-8~8859/1\rPID|1||ü")
        .unwrap();
    assert_eq!(m.charset(), Charset::Utf8);
    assert_eq!(m.first("PID").unwrap().text(3), "ü");
}

#[test]
fn declared_utf8_with_invalid_bytes_is_rejected_with_offset() {
    let mut bytes =
        b"MSH|^~\\&|A|B|C|D|2026||ORU^R01|1|P|2.5||||||UNICODE UTF-8\rPID|1||M".to_vec();
    let at = bytes.len();
    bytes.extend_from_slice(b"\xFCller");
    let e = Message::parse(&bytes).unwrap_err();
    assert_eq!((e.code, e.location.as_str()), (102, "MSH-18"));
    assert!(e.message.contains(&format!("offset {at}")), "{}", e.message);
}

#[test]
fn declared_ascii_with_non_ascii_bytes_is_rejected() {
    let e = err("MSH|^~\\&|A|B|C|D|2026||ORU^R01|1|P|2.5||||||ASCII\rPID|1||ü");
    assert_eq!((e.code, e.location.as_str()), (102, "MSH-18"));
    let m = parse("MSH|^~\\&|A|B|C|D|2026||ORU^R01|1|P|2.5||||||ASCII\rPID|1||u").unwrap();
    assert_eq!(m.charset(), Charset::Ascii);
}

#[test]
fn unsupported_charset_is_a_table_error() {
    for charset in ["UNICODE UTF-16", "8859/15", "utf-8", "ISO IR87"] {
        let e = err(&format!(
            "MSH|^~\\&|A|B|C|D|2026||ORU^R01|1|P|2.5||||||{charset}\rPID|1"
        ));
        assert_eq!((e.code, e.location.as_str()), (103, "MSH-18"), "{charset}");
        assert!(!e.message.contains(charset));
    }
}

#[test]
fn byte_order_mark_contradicting_latin1_is_rejected() {
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(&latin1_bytes(&format!("{MSH}\rPID|1||ü")));
    let e = Message::parse(&bytes).unwrap_err();
    assert_eq!((e.code, e.location.as_str()), (102, "MSH-18"));
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(b"MSH|^~\\&|A|B|C|D|2026||ORU^R01|1|P|2.5||||||8859/1\r");
    assert_eq!(Message::parse(&bytes).unwrap_err().location, "MSH-18");
}

#[test]
fn control_characters_are_rejected_with_their_offset() {
    let e = err(&format!("{MSH}\rPID|1||12\u{0}3"));
    let at = MSH.len() + "\rPID|1||12".len();
    assert_eq!((e.code, e.location.clone()), (102, format!("byte {at}")));
    let e = Message::parse(b"\x0bMSH|^~\\&|A\r\x1c\r").unwrap_err();
    assert_eq!(e.location, "byte 0");
    assert!(e.message.contains("0x0B"));
    // Tab is text.
    assert_eq!(
        parse(&format!("{MSH}\rNTE|1||a\tb"))
            .unwrap()
            .first("NTE")
            .unwrap()
            .text(3),
        "a\tb"
    );
}

// --- Errors never quote input --------------------------------------------------------------------

#[test]
fn error_messages_never_quote_input() {
    const SECRET: &str = "Geheimname";
    let cases = [
        format!("{SECRET}|1"),
        format!("{MSH}\rPID|1||{SECRET}\n{SECRET}^Anna"),
        format!("{MSH}\rPID|1\r{}", SECRET.to_uppercase()),
        format!("MSH|^~\\&|A|B|C|D|2026||ORU^R01|1|P|2.5||||||{SECRET}\rPID|1"),
        format!("MSH|{SECRET}|A"),
        format!("{MSH}\rPID|1||{SECRET}\u{7}"),
        format!(
            "{MSH}\rZAB|{}",
            format!("{SECRET}^").repeat(MAX_COMPONENTS + 1)
        ),
    ];
    for text in &cases {
        let e = err(text);
        for part in [&e.message, &e.location] {
            assert!(
                !part.to_lowercase().contains(&SECRET.to_lowercase()[..4]),
                "{e}"
            );
        }
    }
}

#[test]
fn parse_error_display() {
    let e = err("PID|1");
    assert_eq!(
        e.to_string(),
        "HL7 error 100 at segment 1: the message must start with an MSH segment"
    );
}

// --- Limits --------------------------------------------------------------------------------------

#[test]
fn too_many_segments() {
    let mut text = String::from(MSH);
    text.push_str(&"\rNTE|1".repeat(MAX_SEGMENTS - 1));
    assert_eq!(parse(&text).unwrap().segments().len(), MAX_SEGMENTS);
    text.push_str("\rNTE|1");
    let e = err(&text);
    assert_eq!(
        (e.code, e.location.clone()),
        (104, format!("segment {}", MAX_SEGMENTS + 1))
    );
}

#[test]
fn too_many_fields_repetitions_components_subcomponents() {
    let fields = format!("{MSH}\rZAB{}", "|".repeat(MAX_FIELDS));
    assert_eq!(
        parse(&fields).unwrap().first("ZAB").unwrap().field_count(),
        MAX_FIELDS
    );
    let e = err(&format!("{fields}|"));
    assert_eq!(
        (e.code, e.location.clone()),
        (104, format!("ZAB-{}", MAX_FIELDS + 1))
    );

    let msh_fields = format!("MSH|^~\\&{}", "|".repeat(MAX_FIELDS - 2));
    assert_eq!(
        parse(&msh_fields)
            .unwrap()
            .first("MSH")
            .unwrap()
            .field_count(),
        MAX_FIELDS
    );
    assert_eq!(err(&format!("{msh_fields}|")).code, 104);

    for (delimiter, max) in [
        ('~', MAX_REPETITIONS),
        ('^', MAX_COMPONENTS),
        ('&', MAX_SUBCOMPONENTS),
    ] {
        let at_limit = format!("{MSH}\rZAB|{}", delimiter.to_string().repeat(max - 1));
        assert!(parse(&at_limit).is_ok(), "{delimiter}");
        let e = err(&format!("{at_limit}{delimiter}"));
        assert_eq!((e.code, e.location.as_str()), (104, "ZAB-1"), "{delimiter}");
    }
}

#[test]
fn too_many_values_in_total() {
    // Each field: 99 components of 100 subcomponents; enough fields and segments to pass MAX_VALUES.
    let component = "&".repeat(MAX_SUBCOMPONENTS - 1);
    let field = vec![component; MAX_COMPONENTS].join("^");
    let segment = format!("ZAB|{}", vec![field; 20].join("|"));
    let per_segment = MAX_COMPONENTS * MAX_SUBCOMPONENTS * 20;
    let segments = MAX_VALUES / per_segment + 1;
    let text = format!("{MSH}\r{}", vec![segment; segments].join("\r"));
    assert!(text.len() < MAX_MESSAGE_BYTES);
    let e = err(&text);
    assert_eq!(e.code, 104);
    assert!(e.message.contains("values"));
}

#[test]
fn too_many_bytes() {
    let mut bytes = MSH.as_bytes().to_vec();
    bytes.resize(MAX_MESSAGE_BYTES + 1, b'x');
    let e = Message::parse(&bytes).unwrap_err();
    assert_eq!((e.code, e.location.as_str()), (104, "message"));
}

// --- Round trip ----------------------------------------------------------------------------------

#[test]
fn to_er7_is_canonical() {
    assert_eq!(sample().to_er7(), SAMPLE_ORU);
    let messy = format!(
        "\u{FEFF}\n{}\r\n\r\n",
        SAMPLE_ORU.trim_end_matches('\r').replace('\r', "\r\n")
    );
    assert_eq!(parse(&messy).unwrap().to_er7(), SAMPLE_ORU);
}

#[test]
fn round_trip_of_the_sample() {
    let m = sample();
    assert_eq!(parse(&m.to_er7()).unwrap(), m);
    assert_eq!(Message::parse(&m.to_er7_bytes()).unwrap(), m);
}

use crate::hl7v2::test_rng::XorShift;

/// One random edit of `bytes`: bytes that matter to the parser are preferred over random ones.
fn mutate(rng: &mut XorShift, bytes: &mut Vec<u8>) {
    const INTERESTING: &[&[u8]] = &[
        b"|",
        b"^",
        b"~",
        b"\\",
        b"&",
        b"#",
        b"\r",
        b"\n",
        b"\r\n",
        b"\"\"",
        b"\\S\\",
        b"\\X",
        b"\\.br\\",
        b"\\.sp 99\\",
        b"\\XC3\\",
        b"\xC3",
        b"\xBC",
        "ü".as_bytes(),
        "€".as_bytes(),
        b"\xEF\xBB\xBF",
        b"\x00",
        b"\x0B",
        b"\x1C",
        b"MSH",
        b"BTS|",
        b"ZZZ",
        b"8859/1",
        b"UNICODE UTF-8",
        b"ASCII",
    ];
    let position = rng.below(bytes.len() + 1);
    match rng.below(6) {
        0 if !bytes.is_empty() => {
            let end = (position + 1 + rng.below(8)).min(bytes.len());
            bytes.drain(position.min(end)..end);
        }
        1 => {
            let insert = INTERESTING[rng.below(INTERESTING.len())];
            bytes.splice(position..position, insert.iter().copied());
        }
        2 if position < bytes.len() => bytes[position] = rng.next() as u8,
        3 => bytes.truncate(position),
        4 if position < bytes.len() => bytes[position] ^= 1 << rng.below(8),
        _ => {
            let from = rng.below(bytes.len());
            let len = rng.below(16).min(bytes.len() - from);
            let copy = bytes[from..from + len].to_vec();
            bytes.splice(position..position, copy);
        }
    }
}

#[test]
fn property_parse_never_panics_and_round_trips() {
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let seeds: Vec<Vec<u8>> = vec![
        SAMPLE_ORU.as_bytes().to_vec(),
        SAMPLE_ORU.replace('\r', "\n").into_bytes(),
        latin1_bytes(&format!("{MSH}\rPID|1||Müller\\T\\Söhne")),
        b"MSH#$~@&#SND#FAC#####ORU$R01#1#P#2.7\nPID###123$$$SVNR#M@T@S\n".to_vec(),
        b"MSH|^~\\&#|A\rOBX|1|ST|X||a#\\P\\".to_vec(),
    ];
    let (mut accepted, mut rejected) = (0, 0);
    for round in 0..6_000 {
        let mut bytes = seeds[round % seeds.len()].clone();
        for _ in 0..1 + rng.below(6) {
            mutate(&mut rng, &mut bytes);
        }
        match Message::parse(&bytes) {
            Ok(m) => {
                accepted += 1;
                let again = Message::parse(&m.to_er7_bytes()).expect("canonical form parses");
                assert_eq!(again, m, "round trip of mutation {round}");
                assert_eq!(again.to_er7(), m.to_er7());
            }
            Err(e) => {
                rejected += 1;
                assert!(
                    [100, 101, 102, 103, 104].contains(&e.code),
                    "mutation {round}: {e}"
                );
                assert!(!e.message.is_empty() && !e.location.is_empty());
            }
        }
        let _ = split_batch(&bytes);
    }
    // Both outcomes must be exercised, or the mutations are too weak or too strong to test anything.
    assert!(
        accepted > 500 && rejected > 500,
        "accepted {accepted}, rejected {rejected}"
    );
}

#[test]
fn property_arbitrary_bytes_never_panic() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..3_000 {
        let len = rng.below(200);
        let mut bytes: Vec<u8> = b"MSH".to_vec();
        bytes.extend((0..len).map(|_| {
            let alphabet = b"|^~\\&#\r\nAZ09 .\"\xC3\xBC\xFF";
            alphabet[rng.below(alphabet.len())]
        }));
        if let Ok(m) = Message::parse(&bytes) {
            assert_eq!(Message::parse(&m.to_er7_bytes()).unwrap(), m);
        }
        let _ = split_batch(&bytes);
        let _ = split_batch(&bytes[3..]);
    }
}

// --- Batches -------------------------------------------------------------------------------------

fn message(id: usize) -> String {
    format!("MSH|^~\\&|A|B|C|D|2026||ORU^R01|{id}|P|2.5\rPID|1||{id}\rOBX|1|NM|X||{id}\r")
}

fn split(text: &str) -> Result<Vec<String>, ParseError> {
    split_batch(text.as_bytes()).map(|messages| {
        messages
            .into_iter()
            .map(|m| String::from_utf8(m).unwrap())
            .collect()
    })
}

fn split_err(text: &str) -> ParseError {
    split(text).expect_err("must be rejected")
}

#[test]
fn plain_stream_of_messages() {
    let text = format!("{}{}{}", message(1), message(2), message(3));
    let messages = split(&text).unwrap();
    assert_eq!(messages, [message(1), message(2), message(3)]);
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(
            parse(m).unwrap().first("MSH").unwrap().text(10),
            (i + 1).to_string()
        );
    }
}

#[test]
fn single_message_is_a_stream_of_one() {
    assert_eq!(split(SAMPLE_ORU).unwrap(), [SAMPLE_ORU]);
}

#[test]
fn full_batch_file_with_counts() {
    let text = format!(
        "FHS|^~\\&|A\rBHS|^~\\&|A\r{}{}BTS|2\rBHS|^~\\&|A\r{}BTS|1|note\rFTS|2\r",
        message(1),
        message(2),
        message(3)
    );
    assert_eq!(split(&text).unwrap(), [message(1), message(2), message(3)]);
    let lf = text.replace('\r', "\r\n");
    let messages = split(&lf).unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(parse(&messages[2]).unwrap(), parse(&message(3)).unwrap());
}

#[test]
fn empty_counts_and_empty_batches() {
    let text = format!("BHS|^~\\&\r{}BTS\r", message(1));
    assert_eq!(split(&text).unwrap().len(), 1);
    let text = format!("BHS|^~\\&\r{}BTS||x\r", message(1));
    assert_eq!(split(&text).unwrap().len(), 1);
    assert_eq!(
        split("FHS|^~\\&\rBHS|^~\\&\rBTS|0\rFTS|1").unwrap().len(),
        0
    );
}

#[test]
fn file_without_batches_counts_as_one_batch() {
    let text = format!("FHS|^~\\&\r{}{}FTS|1\r", message(1), message(2));
    assert_eq!(split(&text).unwrap().len(), 2);
    let e = split_err(&format!("FHS|^~\\&\r{}FTS|2\r", message(1)));
    assert_eq!((e.code, e.location.as_str()), (100, "FTS-1"));
}

#[test]
fn wrong_counts_are_rejected() {
    let e = split_err(&format!("BHS|^~\\&\r{}{}BTS|3\r", message(1), message(2)));
    assert_eq!((e.code, e.location.as_str()), (100, "BTS-1"));
    assert!(
        e.message.contains("announces 3 messages but 2 were found"),
        "{}",
        e.message
    );
    let e = split_err(&format!(
        "FHS|^~\\&\rBHS|^~\\&\r{}BTS|1\rFTS|2\r",
        message(1)
    ));
    assert_eq!((e.code, e.location.as_str()), (100, "FTS-1"));
    for count in ["x", "-1", "1.0", "1234567890"] {
        let e = split_err(&format!("BHS|^~\\&\r{}BTS|{count}\r", message(1)));
        assert_eq!((e.code, e.location.as_str()), (102, "BTS-1"), "{count}");
    }
}

#[test]
fn truncated_batches_are_rejected() {
    let e = split_err(&format!("BHS|^~\\&\r{}{}", message(1), message(2)));
    assert_eq!(e.code, 100);
    assert!(e.message.contains("BTS"));
    let e = split_err(&format!("FHS|^~\\&\rBHS|^~\\&\r{}BTS|1\r", message(1)));
    assert!(e.message.contains("FTS"));
}

#[test]
fn misplaced_framing_is_rejected() {
    let cases = [
        (format!("PID|1\r{}", message(1)), "segment 1"),
        (format!("{}FHS|^~\\&\r", message(1)), "segment 4"),
        (format!("{}BTS|1\r", message(1)), "segment 4"),
        (format!("{}FTS|1\r", message(1)), "segment 4"),
        (
            format!("BHS|^~\\&\rBHS|^~\\&\r{}BTS|1\r", message(1)),
            "segment 2",
        ),
        (
            format!("BHS|^~\\&\rPID|1\r{}BTS|1\r", message(1)),
            "segment 2",
        ),
        (
            format!("BHS|^~\\&\r{}BTS|1\r{}", message(1), message(2)),
            "segment 6",
        ),
        (
            format!("{}BHS|^~\\&\r{}BTS|1\r", message(1), message(2)),
            "segment 4",
        ),
        (
            format!("BHS|^~\\&\r{}BTS|1\rPID|1\r", message(1)),
            "segment 6",
        ),
        (
            format!("FHS|^~\\&\r{}FTS|1\r{}", message(1), message(2)),
            "segment 6",
        ),
        (
            format!("FHS|^~\\&\r{}FTS|1\rPID|1", message(1)),
            "segment 6",
        ),
        (
            format!("FHS|^~\\&\rBHS|^~\\&\r{}FTS|1\r", message(1)),
            "segment 6",
        ),
    ];
    for (text, location) in &cases {
        let e = split_err(text);
        assert_eq!(
            (e.code, e.location.as_str()),
            (100, *location),
            "{text:?}: {}",
            e.message
        );
    }
}

#[test]
fn trailer_with_a_different_separator_is_rejected() {
    let e = split_err(&format!("BHS|^~\\&\r{}BTS#1\r", message(1)));
    assert_eq!((e.code, e.location.as_str()), (102, "BTS-1"));
    let custom = "BHS#$~@&\rMSH#$~@&#A\rBTS#1#x\r";
    assert_eq!(split(custom).unwrap(), ["MSH#$~@&#A\r"]);
}

#[test]
fn empty_input_is_rejected_and_blank_lines_are_ignored() {
    for text in ["", "\r\n", "\u{FEFF}\n"] {
        assert_eq!(split_err(text).code, 100, "{text:?}");
    }
    let text = format!("\u{FEFF}\r\n{}\n\n{}\r\n", message(1), message(2));
    let messages = split(&text).unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(parse(&messages[0]).unwrap(), parse(&message(1)).unwrap());
}

#[test]
fn batches_keep_each_message_s_own_bytes() {
    // A Latin-1 message next to a UTF-8 one: each is split out unchanged and parsed with its own charset.
    let mut bytes = b"BHS|^~\\&\r".to_vec();
    bytes.extend_from_slice(&latin1_bytes("MSH|^~\\&|A\rPID|1||Jürgen\r"));
    bytes.extend_from_slice("MSH|^~\\&|A\rPID|1||Jürgen\rBTS|2\r".as_bytes());
    let messages = split_batch(&bytes).unwrap();
    let parsed: Vec<Message> = messages
        .iter()
        .map(|m| Message::parse(m).unwrap())
        .collect();
    assert_eq!(parsed[0].charset(), Charset::Latin1);
    assert_eq!(parsed[1].charset(), Charset::Utf8);
    assert_eq!(
        parsed[0].first("PID").unwrap().text(3),
        parsed[1].first("PID").unwrap().text(3)
    );
}
