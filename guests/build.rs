//! Builds popek's test guests from source and generates the table that
//! `lib.rs` includes.
//!
//! Every guest is a directory next to this file holding C (`*.c`) and
//! assembly (`*.S`) sources. Each is compiled with the host's gcc in 32-bit
//! freestanding mode, together with the shared runtime in `lib/`, and linked
//! with `ld -m elf_i386` at 1 MiB using `lib/link.ld`:
//!
//! * multiboot guests become an ELF image with a multiboot v1 header
//!   (`lib/multiboot*` supplies the header and entry);
//! * bzImage guests are turned into a flat binary with objcopy and prefixed
//!   with a boot sector and setup sectors that carry a Linux boot protocol
//!   setup header (see [`bzimage`]).
//!
//! The output is `$OUT_DIR/guests.rs`, a `GUESTS` table whose images are
//! `include_bytes!` of the built files. No binaries are committed.

use std::env;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How a guest is booted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    /// An ELF with a multiboot v1 header, for popek's multiboot loader.
    Multiboot,
    /// A Linux bzImage, for popek's Linux boot protocol loader.
    BzImage,
}

/// One guest to build.
struct GuestSpec {
    /// Directory under `guests/` and the name given to `--guest`.
    name: &'static str,
    /// One line saying what it checks.
    summary: &'static str,
    /// Boot protocol.
    format: Format,
}

/// Every guest, in the order `popek` lists them.
const GUESTS: &[GuestSpec] = &[
    GuestSpec {
        name: "hello",
        summary: "greets and checks the multiboot hand-over (magic, memory, loader name)",
        format: Format::Multiboot,
    },
    GuestSpec {
        name: "interrupts",
        summary:
            "PIC + PIT timer interrupts with HLT, and exception vectors, error codes and frames",
        format: Format::Multiboot,
    },
    GuestSpec {
        name: "sensitive",
        summary:
            "every sensitive and privileged instruction at CPL 0 gives its architectural result",
        format: Format::Multiboot,
    },
    GuestSpec {
        name: "usermode",
        summary: "ring 3 via IRET, int 0x80 system calls, TSS stack switch, #GP on CLI/HLT/IN",
        format: Format::Multiboot,
    },
];

/// The compiler flags every guest source is built with.
const CFLAGS: &[&str] = &[
    "-m32",
    "-ffreestanding",
    "-nostdlib",
    "-fno-pic",
    "-fno-pie",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-fcf-protection=none",
    // No x87/SSE code: the guests never initialise the FPU.
    "-mgeneral-regs-only",
    "-ffunction-sections",
    "-fdata-sections",
    "-O2",
    "-std=gnu11",
    "-Wall",
    "-Wextra",
    "-Werror",
];

/// The linker flags every guest is linked with (plus `-T lib/link.ld`).
const LDFLAGS: &[&str] = &[
    "-m",
    "elf_i386",
    "-nostdlib",
    "--gc-sections",
    "-z",
    "max-page-size=0x1000",
    "-z",
    "noexecstack",
    "--build-id=none",
    "--no-warn-rwx-segments",
];

fn main() {
    if let Err(message) = run() {
        eprintln!("error: popek-guests: {message}");
        std::process::exit(1);
    }
}

/// Builds every guest and writes `guests.rs`; any failure is a message.
fn run() -> Result<(), String> {
    let src = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=lib");
    for guest in GUESTS {
        println!("cargo:rerun-if-changed={}", guest.name);
    }

    require_tool("gcc", "gcc (Debian: apt-get install gcc)")?;
    require_tool("ld", "GNU ld (Debian: apt-get install binutils)")?;
    if GUESTS.iter().any(|g| g.format == Format::BzImage) {
        require_tool("objcopy", "GNU objcopy (Debian: apt-get install binutils)")?;
    }

    // Guests are independent: build them side by side.
    let results: Vec<Result<PathBuf, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = GUESTS
            .iter()
            .map(|guest| {
                let (src, out) = (&src, &out);
                scope.spawn(move || build_guest(guest, src, out))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a build thread panicked".into()))
            })
            .collect()
    });

    let mut table = String::from("/// Every embedded guest.\npub static GUESTS: &[Guest] = &[\n");
    for (guest, result) in GUESTS.iter().zip(results) {
        let image = result.map_err(|e| format!("guest `{}` failed to build:\n{e}", guest.name))?;
        table.push_str(&format!(
            "    Guest {{ name: {:?}, summary: {:?}, image: include_bytes!({:?}) }},\n",
            guest.name,
            guest.summary,
            image.display().to_string()
        ));
    }
    table.push_str("];\n");
    write(&out.join("guests.rs"), table.as_bytes())
}

/// Fails with an explanation when `tool` cannot be run.
fn require_tool(tool: &str, what: &str) -> Result<(), String> {
    match Command::new(tool).arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "`{tool} --version` failed ({}); the guests are built from source and need {what}",
            o.status
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(format!(
            "`{tool}` not found; the guests are built from source (gcc -m32 -ffreestanding, \
             ld -m elf_i386) and need {what}"
        )),
        Err(e) => Err(format!("cannot run `{tool}`: {e}")),
    }
}

/// Compiles and links one guest; returns the path of its final image.
fn build_guest(guest: &GuestSpec, src: &Path, out: &Path) -> Result<PathBuf, String> {
    let lib = src.join("lib");
    let obj_dir = out.join("obj").join(guest.name);
    fs::create_dir_all(&obj_dir).map_err(|e| format!("{}: {e}", obj_dir.display()))?;

    // The multiboot header and entry belong to multiboot guests only; a
    // bzImage guest brings its own 32-bit entry.
    let mut sources: Vec<PathBuf> = list_sources(&lib)?
        .into_iter()
        .filter(|p| {
            let multiboot_part = file_name(p).starts_with("multiboot");
            guest.format == Format::Multiboot || !multiboot_part
        })
        .collect();
    sources.extend(list_sources(&src.join(guest.name))?);

    let mut objects = Vec::new();
    for source in &sources {
        // lib/ and the guest directory may hold files of the same name.
        let prefix = if source.starts_with(&lib) { "lib-" } else { "" };
        let object = obj_dir.join(format!("{prefix}{}.o", file_name(source)));
        let mut cc = Command::new("gcc");
        cc.args(CFLAGS)
            .arg("-I")
            .arg(&lib)
            .arg("-c")
            .arg(source)
            .arg("-o")
            .arg(&object);
        run_tool(&mut cc)?;
        objects.push(object);
    }

    let elf = out.join(format!("{}.elf", guest.name));
    let mut ld = Command::new("ld");
    ld.args(LDFLAGS)
        .arg("-T")
        .arg(lib.join("link.ld"))
        .arg("-o")
        .arg(&elf)
        .args(&objects);
    run_tool(&mut ld)?;

    match guest.format {
        Format::Multiboot => Ok(elf),
        Format::BzImage => {
            let flat = out.join(format!("{}.bin", guest.name));
            let mut objcopy = Command::new("objcopy");
            objcopy.args(["-O", "binary"]).arg(&elf).arg(&flat);
            run_tool(&mut objcopy)?;
            let kernel = fs::read(&flat).map_err(|e| format!("{}: {e}", flat.display()))?;
            let image = bzimage::build(&kernel)?;
            let path = out.join(format!("{}.bzImage", guest.name));
            write(&path, &image)?;
            Ok(path)
        }
    }
}

/// The `*.c` and `*.S` files directly in `dir`, sorted for a stable build.
fn list_sources(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut sources = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if matches!(path.extension().and_then(|e| e.to_str()), Some("c" | "S")) {
            sources.push(path);
        }
    }
    sources.sort();
    if sources.is_empty() {
        return Err(format!("no .c or .S sources in {}", dir.display()));
    }
    Ok(sources)
}

/// The final component of `path`, as text.
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Runs a build tool; a failure carries the command line and its output.
fn run_tool(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{shown} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// Writes `bytes` to `path`.
fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The Linux bzImage container (Documentation/arch/x86/boot.rst).
mod bzimage {
    /// Builds a bzImage from a flat 32-bit kernel linked at 0x100000.
    pub fn build(_kernel: &[u8]) -> Result<Vec<u8>, String> {
        Err("bzImage guests are not supported yet".into())
    }
}
