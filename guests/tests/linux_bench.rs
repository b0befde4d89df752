//! popek-bench run natively as a host process: every workload prints its
//! one result line in the exact format `popek bench` parses, failures
//! print theirs, and the initramfs archive that carries the program into
//! Debian's Linux reads back as written.
//!
//! Running an i386 program needs the host kernel's IA32 emulation; where
//! it is missing the native tests say so and skip.

use popek_guests::linux_bench::{self, combined_initrd, overlay_cpio, ELF, WORKLOADS};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// ENOEXEC: the host cannot run this kind of executable.
const ENOEXEC: i32 = 8;
/// ETXTBSY: another thread's child still held a writable descriptor of
/// the program (inherited between its fork and exec) when it was run.
const ETXTBSY: i32 = 26;

/// The program written out as an executable file, or why the host cannot
/// run it.
fn program() -> Result<&'static Path, &'static str> {
    static PROGRAM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PROGRAM
        .get_or_init(|| {
            let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("popek-bench-{}", std::process::id()));
            std::fs::write(&path, ELF).expect("write the program");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .expect("chmod the program");
            match Command::new(&path).args(["syscall", "1"]).output() {
                Err(e) if e.raw_os_error() == Some(ENOEXEC) => Err(format!(
                    "this host cannot run i386 programs ({e}; its kernel lacks \
                     CONFIG_IA32_EMULATION or has it turned off)"
                )),
                _ => Ok(path),
            }
        })
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(String::as_str)
}

/// Runs the program with `args`, or returns None (having said why) when
/// the host cannot run it.
fn run(args: &[&str]) -> Option<Output> {
    let path = match program() {
        Ok(path) => path,
        Err(why) => {
            eprintln!("skipped: {why}");
            return None;
        }
    };
    for _ in 0..50 {
        match Command::new(path).args(args).output() {
            Err(e) if e.raw_os_error() == Some(ETXTBSY) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            result => return Some(result.expect("popek-bench runs")),
        }
    }
    panic!("popek-bench stayed busy (ETXTBSY)");
}

/// Checks a success: one line, exit 0, and the numbers consistent.
/// Returns (rounds, cycles, per_round).
fn check_result(name: &str, out: &Output) -> (u32, u64, u64) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name}: {} with stdout {stdout:?} stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty(), "{name}: stderr {:?}", out.stderr);
    let line = stdout
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("{name}: output not one whole line: {stdout:?}"));
    assert!(
        !line.contains('\n'),
        "{name}: more than one line: {stdout:?}"
    );
    let words: Vec<&str> = line.split(' ').collect();
    let field = |i: usize, key: &str| -> u64 {
        words
            .get(i)
            .and_then(|w| w.strip_prefix(key))
            .and_then(|v| v.strip_prefix('='))
            .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name}: no {key}=<integer> at word {i} of {line:?}"))
    };
    assert_eq!(words.len(), 5, "{name}: {line:?}");
    assert_eq!(words[..2], ["popek-bench", name], "{name}: {line:?}");
    let (rounds, cycles, per_round) = (
        field(2, "rounds"),
        field(3, "cycles"),
        field(4, "per_round"),
    );
    assert!(rounds > 0, "{line}");
    assert_eq!(per_round, cycles / rounds, "{line}");
    assert!(per_round > 0, "{line}");
    (rounds as u32, cycles, per_round)
}

/// Runs `name` with `rounds` (and `extra`) and checks the result line.
fn check(name: &str, rounds: u32, extra: Option<&str>) {
    let rounds_arg = rounds.to_string();
    let mut args = vec![name, rounds_arg.as_str()];
    args.extend(extra);
    let Some(out) = run(&args) else { return };
    let (got, _, per_round) = check_result(name, &out);
    assert_eq!(got, rounds);
    println!("{name}: {per_round} cycles per round natively");
}

/// Checks a failure: exit 1 and the one FAIL line, whose reason contains
/// `reason`.
fn check_failure(args: &[&str], name: &str, reason: &str) {
    let Some(out) = run(args) else { return };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stdout:?}");
    let prefix = format!("popek-bench {name} FAIL ");
    let line = stdout.strip_suffix('\n').unwrap_or(&stdout);
    assert!(
        line.starts_with(&prefix) && !line.contains('\n') && line.contains(reason),
        "{args:?}: {stdout:?}"
    );
}

/// What guests/linux/fetch printed for `name` (it fetches into the cache
/// when needed, and fails loudly when it cannot).
fn fetched(name: &str) -> String {
    popek_guests::fetch("linux/fetch")
        .and_then(|vars| vars.need(name))
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn forkwait() {
    check("forkwait", 20, None);
}

#[test]
fn syscall() {
    check("syscall", 1000, None);
}

#[test]
fn pipe() {
    check("pipe", 200, None);
}

#[test]
fn pgfault() {
    // More than one region of 1024 pages, the last one partial.
    check("pgfault", 2500, None);
}

#[test]
fn ctxsw() {
    check("ctxsw", 500, None);
}

#[test]
fn compute_default_rounds_and_checksum() {
    // Only the default count has a known checksum, which the program checks;
    // this also pins the program's default to the table's.
    let Some(out) = run(&["compute"]) else { return };
    let (rounds, _, _) = check_result("compute", &out);
    assert_eq!(rounds, linux_bench::find("compute").unwrap().rounds);
}

#[test]
fn shell() {
    let busybox = fetched("BUSYBOX");
    check("shell", 3, Some(&busybox));
}

#[test]
fn failures() {
    check_failure(&[], "-", "no workload named");
    check_failure(&["nosuch"], "nosuch", "unknown workload");
    check_failure(&["syscall", "0"], "syscall", "ROUNDS must be");
    check_failure(&["syscall", "12x"], "syscall", "ROUNDS must be");
    check_failure(
        &["shell", "1", "/nonexistent/busybox"],
        "shell",
        "cannot execute /nonexistent/busybox",
    );
}

#[test]
fn every_workload_is_in_the_program() {
    // The usage line lists the program's own table, built from the same
    // source as WORKLOADS.
    let Some(out) = run(&[]) else { return };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let listed: Vec<&str> = stdout
        .trim_end()
        .rsplit_once("workloads: ")
        .expect("a workload list")
        .1
        .split(' ')
        .collect();
    let table: Vec<&str> = WORKLOADS.iter().map(|w| w.name).collect();
    assert_eq!(listed, table);
}

#[test]
fn program_is_a_static_i386_executable() {
    assert_eq!(&ELF[..4], b"\x7fELF");
    assert_eq!(ELF[4], 1, "ELFCLASS32");
    assert_eq!(ELF[5], 1, "little-endian");
    assert_eq!(u16::from_le_bytes([ELF[16], ELF[17]]), 2, "ET_EXEC");
    assert_eq!(u16::from_le_bytes([ELF[18], ELF[19]]), 3, "EM_386");
    // No PT_INTERP: nothing to load besides the program.
    let (phoff, phnum) = (
        u32::from_le_bytes(ELF[28..32].try_into().unwrap()) as usize,
        u16::from_le_bytes([ELF[44], ELF[45]]) as usize,
    );
    for i in 0..phnum {
        let at = phoff + 32 * i;
        let kind = u32::from_le_bytes(ELF[at..at + 4].try_into().unwrap());
        assert_ne!(kind, 3, "PT_INTERP");
    }
}

/// One file of a newc archive.
struct Entry {
    name: String,
    mode: u32,
    data: Vec<u8>,
}

/// The entries of a newc archive, up to and without the trailer, and how
/// many bytes the archive took.
fn read_archive(bytes: &[u8]) -> (Vec<Entry>, usize) {
    let mut rest = bytes;
    let mut entries = Vec::new();
    loop {
        let mut reader = cpio::NewcReader::new(rest).expect("a newc entry");
        if reader.entry().is_trailer() {
            let rest = reader.finish().expect("the trailer's end");
            return (entries, bytes.len() - rest.len());
        }
        let (name, mode) = (reader.entry().name().to_string(), reader.entry().mode());
        let mut data = Vec::new();
        reader.read_to_end(&mut data).unwrap();
        entries.push(Entry { name, mode, data });
        rest = reader.finish().unwrap();
    }
}

#[test]
fn overlay_holds_init_and_program() {
    let init = "#!/bin/busybox sh\necho hello\n";
    let archive = overlay_cpio(init);
    assert_eq!(archive.len() % 4, 0);
    assert!(archive.starts_with(b"070701"));
    let (entries, used) = read_archive(&archive);
    assert_eq!(used, archive.len(), "the archive ends with its trailer");
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["bin", "init", "bin/popek-bench"]);
    assert_eq!(entries[0].mode, 0o040755);
    assert_eq!(entries[1].mode, 0o100755);
    assert_eq!(entries[1].data, init.as_bytes());
    assert_eq!(entries[2].mode, 0o100755);
    assert_eq!(entries[2].data, ELF);
    assert_eq!(linux_bench::GUEST_PATH, "/bin/popek-bench");
}

#[test]
fn combined_initrd_pads_the_base_to_four_bytes() {
    let overlay = overlay_cpio("x");
    for len in 0..8 {
        let base = vec![0xAAu8; len];
        let initrd = combined_initrd(&base, "x");
        let padded = len.next_multiple_of(4);
        assert_eq!(&initrd[..len], &base[..]);
        assert!(initrd[len..padded].iter().all(|&b| b == 0));
        assert_eq!(&initrd[padded..], &overlay[..]);
    }
}
