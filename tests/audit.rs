//! `popek audit`: the census of an embedded guest whose sensitive and
//! privileged instructions are known from its source, and the answers to
//! bad input.

mod common;

use common::popek;

fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("popek-audit-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

/// The count the kind tables give for `kind` (0 if the kind is not listed).
fn count(stdout: &str, kind: &str) -> u64 {
    stdout
        .lines()
        .filter(|l| l.starts_with("  "))
        .find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some(kind)).then(|| words.next().unwrap().parse().unwrap())
        })
        .unwrap_or(0)
}

#[test]
fn sensitive_guest_census_matches_its_source() {
    let run = popek(&["audit", "--guest", "sensitive"]);
    assert_eq!(run.status, 0, "{}", run.show());
    let out = &run.stdout;
    assert!(
        out.contains("format: ELF32 i386, 1 executable section"),
        "{out}"
    );
    // Each of these is written once in guests/sensitive or guests/lib, in
    // code the compiler keeps exactly once (a function called once, or
    // assembly). pushf: four asm statements in test_flags, one with two.
    // popf: two in test_flags, one in lib/multiboot.S. far-jmp: two in
    // transfers.S, one reloading CS in lib/cpu.c. into: two in transfers.S.
    let expected = [
        ("sgdt", 1),
        ("sidt", 1),
        ("smsw", 1),
        ("str", 1),
        ("pushf", 5),
        ("popf", 3),
        ("far-call", 1),
        ("far-ret", 1),
        ("far-jmp", 3),
        ("int", 1),
        ("int3", 1),
        ("into", 2),
        ("iret", 1),
        ("lgdt", 1),
        ("lidt", 1),
        ("ltr", 1),
        ("clts", 1),
        ("lmsw", 1),
        ("invlpg", 1),
        ("wbinvd", 1),
        ("ins-outs", 2),
    ];
    for (kind, n) in expected {
        assert_eq!(count(out, kind), n, "{kind}\n{out}");
    }
    // LAR/LSL/VERR/VERW sit in small static helpers that gcc inlines at
    // each call site, so their number is the compiler's choice: at least
    // the one written.
    for kind in ["lar", "lsl", "verr", "verw", "sldt", "mov-cr", "mov-dr"] {
        assert!(count(out, kind) >= 1, "{kind}\n{out}");
    }
    // Nothing the guest lacks is reported.
    for kind in ["sysenter", "syscall", "rdtscp", "xsave", "vmx"] {
        assert_eq!(count(out, kind), 0, "{kind}\n{out}");
    }
    assert!(
        out.contains("kinds of sensitive-unprivileged instructions appear")
            && out.contains("these are what a trap-and-emulate monitor would miss"),
        "{out}"
    );
    // do_int3's INT3 follows a RET, but the symbol there says it is
    // reached: it is not taken for padding.
    assert!(!out.contains("of the int3s"), "{out}");
    // The sweep restarts at _start, so the multiboot header's last byte
    // cannot swallow the CLI there: one invalid byte, reported as such.
    assert!(
        out.contains("(1 byte decoded to no instruction, first at 0x0010000b"),
        "{out}"
    );
}

#[test]
fn json_carries_the_same_census() {
    let run = popek(&["audit", "--guest", "sensitive", "--json"]);
    assert_eq!(run.status, 0, "{}", run.show());
    let j = run.stdout.trim();
    assert!(
        j.starts_with("{\"source\": \"embedded guest \\\"sensitive\\\"\""),
        "{j}"
    );
    assert!(j.ends_with('}'), "{j}");
    assert!(
        j.contains("{\"kind\": \"sgdt\", \"class\": \"sensitive-unprivileged\", \"count\": 1, "),
        "{j}"
    );
    assert!(
        j.contains("{\"kind\": \"pushf\", \"class\": \"sensitive-unprivileged\", \"count\": 5, "),
        "{j}"
    );
    assert!(
        j.contains("\"name\": \".text\", \"address\": 1048576"),
        "{j}"
    );
}

#[test]
fn bzimage_guest_is_audited_past_its_setup_sectors() {
    let run = popek(&["audit", "--guest", "bzhello"]);
    assert_eq!(run.status, 0, "{}", run.show());
    assert!(
        run.stdout.contains(
            "format: bzImage (boot protocol 2.15), protected-mode kernel audited as flat code at \
             0x100000"
        ),
        "{}",
        run.show()
    );
}

#[test]
fn flat_file_is_decoded_at_its_base() {
    // cli; pushf; sidt [0x2000]; out 0x80, al
    let path = temp_file(
        "flat.bin",
        &[
            0xFA, 0x9C, 0x0F, 0x01, 0x0D, 0x00, 0x20, 0x00, 0x00, 0xE6, 0x80,
        ],
    );
    let run = popek(&[
        "audit",
        path.to_str().unwrap(),
        "--flat",
        "--base",
        "0xc0000000",
    ]);
    std::fs::remove_file(&path).ok();
    assert_eq!(run.status, 0, "{}", run.show());
    let out = &run.stdout;
    assert!(out.contains("format: flat binary at 0xc0000000"), "{out}");
    assert_eq!(count(out, "cli"), 1);
    assert_eq!(count(out, "pushf"), 1);
    assert_eq!(count(out, "sidt"), 1);
    assert_eq!(count(out, "in-out"), 1);
    let sidt = out.lines().find(|l| l.starts_with("  sidt")).unwrap();
    assert!(sidt.contains("0xc0000002"), "{sidt}");
    assert!(
        out.contains(
            "2 kinds of privileged instructions appear (2 instructions): these trap when the \
             kernel runs deprivileged"
        ),
        "{out}"
    );
    assert!(
        out.contains("No control-flow instructions appear."),
        "{out}"
    );
}

#[test]
fn missing_file_is_named() {
    let run = popek(&["audit", "/nonexistent/vmlinuz"]);
    assert_eq!(run.status, 2, "{}", run.show());
    assert!(
        run.stderr
            .contains("popek: cannot read kernel /nonexistent/vmlinuz"),
        "{}",
        run.show()
    );
}

#[test]
fn unknown_format_suggests_flat() {
    let path = temp_file("unknown.bin", &[0x90; 64]);
    let run = popek(&["audit", path.to_str().unwrap()]);
    std::fs::remove_file(&path).ok();
    assert_eq!(run.status, 2, "{}", run.show());
    assert!(run.stderr.contains("unknown format"), "{}", run.show());
    assert!(run.stderr.contains("--flat"), "{}", run.show());
}

/// A bzImage header (protocol 2.15, one setup sector) announcing a
/// `length`-byte payload, followed by `payload`.
fn bzimage(payload: &[u8], length: u32) -> Vec<u8> {
    let mut f = vec![0u8; 1024];
    f[0x1F1] = 1;
    f[0x1FE..0x200].copy_from_slice(&0xAA55u16.to_le_bytes());
    f[0x202..0x206].copy_from_slice(b"HdrS");
    f[0x206..0x208].copy_from_slice(&0x020Fu16.to_le_bytes());
    f[0x211] = 1;
    f[0x248..0x24C].copy_from_slice(&0u32.to_le_bytes());
    f[0x24C..0x250].copy_from_slice(&length.to_le_bytes());
    f.extend_from_slice(payload);
    f
}

#[test]
fn unsupported_compression_is_named() {
    let payload = b"BZh91AY&SY\x00\x00\x00\x00";
    let path = temp_file("bzip2.bzImage", &bzimage(payload, payload.len() as u32));
    let run = popek(&["audit", path.to_str().unwrap()]);
    std::fs::remove_file(&path).ok();
    assert_eq!(run.status, 2, "{}", run.show());
    assert!(
        run.stderr
            .contains("unsupported compression: the bzImage payload is bzip2-compressed"),
        "{}",
        run.show()
    );
}

#[test]
fn truncated_bzimage_is_reported() {
    let path = temp_file("cut.bzImage", &bzimage(&[0x1F, 0x8B, 0x08], 4096));
    let run = popek(&["audit", path.to_str().unwrap()]);
    std::fs::remove_file(&path).ok();
    assert_eq!(run.status, 2, "{}", run.show());
    assert!(
        run.stderr.contains(
            "truncated file: the bzImage payload (payload_offset + payload_length) needs 5120 \
             bytes, the file has 1027"
        ),
        "{}",
        run.show()
    );
}

#[test]
fn unknown_guest_lists_the_known_ones() {
    let run = popek(&["audit", "--guest", "nosuch"]);
    assert_eq!(run.status, 2, "{}", run.show());
    assert!(
        run.stderr.contains("no embedded guest named \"nosuch\"")
            && run.stderr.contains("sensitive"),
        "{}",
        run.show()
    );
}

#[test]
fn a_file_or_a_guest_is_required() {
    let run = popek(&["audit"]);
    assert_eq!(run.status, 2, "{}", run.show());
    assert!(run.stderr.contains("required"), "{}", run.show());
}
