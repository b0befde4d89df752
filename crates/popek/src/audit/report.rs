//! Presenting an audit: a table for people, JSON for scripts.

use std::fmt::Write;

use x86::classify::{Class, Kind};

use super::census::{Census, CLASSES};

/// One swept range and what it held.
#[derive(Clone, Debug)]
pub struct SectionCensus {
    /// Section name (or a description of the range).
    pub name: String,
    /// Address of its first byte.
    pub address: u64,
    /// What the sweep found.
    pub census: Census,
}

/// A whole audit: what was read, how, and the census of every range.
#[derive(Clone, Debug)]
pub struct Audit {
    /// The file or embedded guest, as the user named it.
    pub source: String,
    /// How the file was understood.
    pub format: String,
    /// Each code range, in file order.
    pub sections: Vec<SectionCensus>,
    /// All ranges added up.
    pub total: Census,
}

impl Audit {
    /// Builds the total from the sections.
    pub fn new(source: String, format: String, sections: Vec<SectionCensus>) -> Audit {
        let mut total = Census::default();
        for s in &sections {
            total.add(&s.census);
        }
        Audit {
            source,
            format,
            sections,
            total,
        }
    }
}

/// What each class means to a monitor, for the class table.
fn class_meaning(class: Class) -> &'static str {
    match class {
        Class::Privileged => "trap (#GP/#UD) in a deprivileged kernel: trap-and-emulate sees them",
        Class::SensitiveUnprivileged => {
            "act differently at CPL 3 without trapping: trap-and-emulate misses them"
        }
        Class::ControlFlow => "branches a binary translator rewrites so guest EIPs stay guest EIPs",
        Class::Innocuous => "copied verbatim by a binary translator (IDENT)",
    }
}

/// The heading over each class's kind table, saying what the kinds mean.
fn kinds_heading(class: Class, kinds: usize, instructions: u64) -> String {
    let (kinds_word, verb) = if kinds == 1 {
        ("kind", "appears")
    } else {
        ("kinds", "appear")
    };
    let instr_word = if instructions == 1 {
        "instruction"
    } else {
        "instructions"
    };
    let what = match class {
        Class::Privileged => {
            "these trap when the kernel runs deprivileged, so a trap-and-emulate monitor \
             catches every one"
        }
        Class::SensitiveUnprivileged => {
            "these are what a trap-and-emulate monitor would miss (the Popek-Goldberg \
             violations), so they must be translated"
        }
        Class::ControlFlow => "a binary translator rewrites these so guest EIPs stay guest EIPs",
        Class::Innocuous => "copied verbatim",
    };
    format!(
        "{kinds} {kinds_word} of {} instructions {verb} ({instructions} {instr_word}): {what}",
        class.name()
    )
}

/// "1 byte", "2 bytes".
fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// Where a kind occurs: the one section's name, or each section with its count.
fn where_found(audit: &Audit, kind: Kind) -> String {
    let found: Vec<&SectionCensus> = audit
        .sections
        .iter()
        .filter(|s| s.census.count(kind) > 0)
        .collect();
    if found.len() == 1 {
        return found[0].name.clone();
    }
    found
        .iter()
        .map(|s| format!("{} {}", s.name, s.census.count(kind)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The human-readable report.
pub fn text(audit: &Audit) -> String {
    let mut out = String::new();
    let t = &audit.total;
    let _ = writeln!(out, "popek audit of {}", audit.source);
    let _ = writeln!(out, "format: {}", audit.format);
    let _ = writeln!(
        out,
        "decoded: linear sweep in 32-bit mode, {} instructions in {} bytes of code",
        t.instructions, t.bytes
    );

    // Per section, by class.
    let name_w = audit
        .sections
        .iter()
        .map(|s| s.name.len())
        .chain(["section".len(), "total".len()])
        .max()
        .unwrap_or(7);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<name_w$}  {:>10}  {:>9}  {:>12}  {:>7}  {:>10}  {:>9}  {:>12}  {:>9}",
        "section",
        "address",
        "bytes",
        "instructions",
        "invalid",
        "privileged",
        "sensitive",
        "control-flow",
        "innocuous"
    );
    let row = |out: &mut String, name: &str, address: Option<u64>, c: &Census| {
        let address = address.map(|a| format!("{a:#010x}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "{name:<name_w$}  {address:>10}  {:>9}  {:>12}  {:>7}  {:>10}  {:>9}  {:>12}  {:>9}",
            c.bytes,
            c.instructions,
            c.invalid_bytes,
            c.class_count(Class::Privileged),
            c.class_count(Class::SensitiveUnprivileged),
            c.class_count(Class::ControlFlow),
            c.class_count(Class::Innocuous),
        );
    };
    for s in &audit.sections {
        row(&mut out, &s.name, Some(s.address), &s.census);
    }
    if audit.sections.len() > 1 {
        row(&mut out, "total", None, t);
    }
    if t.invalid_bytes > 0 {
        let _ = writeln!(
            out,
            "({} decoded to no instruction, first at {:#010x}: data or padding inside code; \
             the sweep skipped it and resynchronised)",
            plural(t.invalid_bytes, "byte"),
            t.first(Kind::Invalid).unwrap_or(0)
        );
    }

    // Per class.
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<22}  {:>12}  {:>6}  meaning",
        "class", "instructions", "share"
    );
    for class in CLASSES {
        let n = t.class_count(class);
        let _ = writeln!(
            out,
            "{:<22}  {n:>12}  {:>5.1}%  {}",
            class.name(),
            percent(n, t.instructions),
            class_meaning(class)
        );
    }

    // Per kind, for every class but the innocuous one (a single kind).
    let kind_w = Kind::ALL.iter().map(|k| k.name().len()).max().unwrap_or(4);
    for class in &CLASSES[..3] {
        let kinds = t.kinds_in(*class);
        let _ = writeln!(out);
        if kinds.is_empty() {
            let _ = writeln!(
                out,
                "No {} instructions appear{}",
                class.name(),
                if *class == Class::SensitiveUnprivileged {
                    ": for this code, trap and emulate would be enough"
                } else {
                    "."
                }
            );
            continue;
        }
        let _ = writeln!(
            out,
            "{}",
            kinds_heading(*class, kinds.len(), t.class_count(*class))
        );
        let _ = writeln!(
            out,
            "  {:<kind_w$}  {:>9}  {:>10}  sections",
            "kind", "count", "first at"
        );
        for kind in kinds {
            let _ = writeln!(
                out,
                "  {:<kind_w$}  {:>9}  {:#010x}  {}",
                kind.name(),
                t.count(kind),
                t.first(kind).unwrap_or(0),
                where_found(audit, kind)
            );
        }
        if *class == Class::SensitiveUnprivileged && t.int3_padding > 0 {
            let _ = writeln!(
                out,
                "  ({} of the int3s {} a jump, a return or UD2 with no symbol at {}: \
                 padding between functions or speculation traps, never reached in sequence)",
                t.int3_padding,
                if t.int3_padding == 1 {
                    "follows"
                } else {
                    "follow"
                },
                if t.int3_padding == 1 { "it" } else { "them" },
            );
        }
    }
    out
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One census as a JSON object: totals, classes, and the kinds present
/// (privileged, then sensitive-unprivileged, then control-flow, then
/// innocuous; most frequent first within each).
fn census_json(c: &Census) -> String {
    let classes: Vec<String> = CLASSES
        .iter()
        .map(|k| format!("{}: {}", json_str(k.name()), c.class_count(*k)))
        .collect();
    let kinds: Vec<String> = CLASSES
        .iter()
        .flat_map(|class| c.kinds_in(*class))
        .map(|k| {
            format!(
                "{{\"kind\": {}, \"class\": {}, \"count\": {}, \"first\": {}}}",
                json_str(k.name()),
                json_str(k.class().name()),
                c.count(k),
                c.first(k).unwrap_or(0)
            )
        })
        .collect();
    format!(
        "{{\"bytes\": {}, \"instructions\": {}, \"invalid_bytes\": {}, \"int3_padding\": {}, \
         \"classes\": {{{}}}, \"kinds\": [{}]}}",
        c.bytes,
        c.instructions,
        c.invalid_bytes,
        c.int3_padding,
        classes.join(", "),
        kinds.join(", ")
    )
}

/// The machine-readable report: one JSON object, addresses as numbers.
pub fn json(audit: &Audit) -> String {
    let sections: Vec<String> = audit
        .sections
        .iter()
        .map(|s| {
            format!(
                "{{\"name\": {}, \"address\": {}, \"census\": {}}}",
                json_str(&s.name),
                s.address,
                census_json(&s.census)
            )
        })
        .collect();
    format!(
        "{{\"source\": {}, \"format\": {}, \"sections\": [{}], \"total\": {}}}\n",
        json_str(&audit.source),
        json_str(&audit.format),
        sections.join(", "),
        census_json(&audit.total)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit() -> Audit {
        Audit::new(
            "test".into(),
            "flat binary at 0x1000".into(),
            vec![
                SectionCensus {
                    name: ".text".into(),
                    address: 0x1000,
                    // pushf; cli; pushf; nop
                    census: Census::sweep(&[0x9C, 0xFA, 0x9C, 0x90], 0x1000, &[]),
                },
                SectionCensus {
                    name: ".init.text".into(),
                    address: 0x2000,
                    // pushf; bad byte (0F 04 is undefined)
                    census: Census::sweep(&[0x9C, 0x0F, 0x04], 0x2000, &[]),
                },
            ],
        )
    }

    #[test]
    fn text_names_what_trap_and_emulate_would_miss() {
        let t = text(&audit());
        assert!(
            t.contains(
                "1 kind of sensitive-unprivileged instructions appears (3 instructions): these \
                 are what a trap-and-emulate monitor would miss"
            ),
            "{t}"
        );
        let pushf = t
            .lines()
            .find(|l| l.trim_start().starts_with("pushf"))
            .unwrap();
        assert!(pushf.contains("0x00001000"), "{pushf}");
        assert!(pushf.ends_with(".text 2, .init.text 1"), "{pushf}");
        assert!(t.contains("No control-flow instructions appear."), "{t}");
        assert!(t.lines().any(|l| l.starts_with("total")), "{t}");
        // 0F 04 is one invalid byte, then 04 alone is cut off: two bytes.
        assert!(
            t.contains("(2 bytes decoded to no instruction, first at 0x00002001"),
            "{t}"
        );
    }

    #[test]
    fn json_has_sections_classes_and_kinds() {
        let j = json(&audit());
        assert!(j.starts_with("{\"source\": \"test\", \"format\": \"flat binary at 0x1000\""));
        assert!(j.contains(
            "{\"kind\": \"pushf\", \"class\": \"sensitive-unprivileged\", \"count\": 3, \
             \"first\": 4096}"
        ));
        assert!(j.contains("\"name\": \".init.text\", \"address\": 8192"));
        assert!(j.contains("\"privileged\": 1, \"sensitive-unprivileged\": 3"));
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
