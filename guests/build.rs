//! Builds popek's test guests from source and generates the table that
//! `lib.rs` includes.
//!
//! Every guest is a directory next to this file holding C (`*.c`) and
//! assembly (`*.S`) sources. Each is compiled with the host's gcc in 32-bit
//! freestanding mode, together with the shared runtime in `lib/`, and linked
//! with `ld -m elf_i386` at 1 MiB (or where [`LINK_ADDRESSES`] says) using
//! `lib/link.ld`:
//!
//! * multiboot guests become an ELF image with a multiboot v1 header
//!   (`lib/multiboot*` supplies the header and entry);
//! * bzImage guests are turned into a flat binary with objcopy and prefixed
//!   with a boot sector and setup sectors that carry a Linux boot protocol
//!   setup header (see [`bzimage`]).
//!
//! A guest with its own `link.ld` (the demo OS, linked above 0xC0000000) is
//! linked with that script instead and brings its own multiboot header and
//! entry: `lib/multiboot*` assume code running where `lib/link.ld` links it.
//! A guest listed in [`USER_PROGRAMS`] also gets user programs: each is
//! compiled from `<guest>/user/`, linked on its own with `<guest>/user/link.ld`
//! and embedded into the guest as an ELF file, with a table of them (see
//! [`build_user_programs`]).
//!
//! The output is `$OUT_DIR/guests.rs`, a `GUESTS` table whose images are
//! `include_bytes!` of the built files. No binaries are committed.
//!
//! Beside the guests, `linux/bench/` is built into `popek-bench`, a static
//! Linux i386 program (not a guest: it runs under Debian's kernel, and
//! natively) with the workloads in [`LINUX_BENCH_WORKLOADS`]; see
//! [`build_linux_bench`]. It becomes `$OUT_DIR/linux_bench.rs`.

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
    GuestSpec {
        name: "tc",
        summary: "translation cache: hot loops, deep call/ret, jump tables, self-modifying code",
        format: Format::Multiboot,
    },
    GuestSpec {
        name: "hostile",
        summary: "ring 3 attacks its monitor (attack=a..e): host selectors, WRPKRU, far jmp to 0x33, int 0x80",
        format: Format::Multiboot,
    },
    GuestSpec {
        name: "vector",
        summary: "bt only: xmm/ymm/zmm0-7, k0-k7 and MXCSR (avx=1, avx512=1) keep the guest's values \
                  across every kind of exit, in ring 3 and ring 0, and start zeroed",
        format: Format::Multiboot,
    },
    GuestSpec {
        name: "paging",
        summary: "32-bit paging: 4 KiB/4 MiB pages, #PF codes and CR2, ring 3, A/D, INVLPG, CR3, PGE",
        format: Format::Multiboot,
    },
    GuestSpec {
        name: "pae",
        summary: "PAE paging: 64-bit entries, 2 MiB pages, #PF codes (reserved bits too), A/D, INVLPG, PDPT switch",
        format: Format::Multiboot,
    },
    GuestSpec {
        name: "mmio",
        summary: "loads and stores, paging off, to the MMIO scratch device at 0xFEB00000 \
                  (ID, scratch register, access counters) in every width, and to an \
                  unclaimed page",
        format: Format::Multiboot,
    },
    GuestSpec {
        name: "nanobench",
        summary: "Adams & Agesen's nanobenchmarks in cycles/iteration: syscall, in, cr8wr, \
                  callret, pgfault, divzero, ptemod (iters=N, only=NAME)",
        format: Format::Multiboot,
    },
    GuestSpec {
        name: "apic",
        summary: "local APIC and I/O APIC: base MSR, registers, TPR/PPR, self-IPI and EOI, \
                  timer one-shot and periodic, PIT through the I/O APIC, the PIC beside them, \
                  and the MSRs a PC guest touches",
        format: Format::Multiboot,
    },
    GuestSpec {
        name: "tasks",
        summary: "hardware task switches: JMP/CALL to a TSS and through task gates, IRET with NT, \
                  INT n and #DF through task gates, #TS/#NP/#GP before and after the switch, \
                  the T bit, CR3 with paging (nopaging, nouser, nodf skip parts)",
        format: Format::Multiboot,
    },
    GuestSpec {
        name: "fwcfg",
        summary: "QEMU's fw_cfg at 0x510: signature, ID, RAM size against the multiboot map, \
                  CPU count, command line, the file directory and etc/e820",
        format: Format::Multiboot,
    },
    GuestSpec {
        name: "lowload",
        summary: "a multiboot kernel linked at 0x8000: the loader keeps its boot data out of \
                  the kernel's way, in usable RAM",
        format: Format::Multiboot,
    },
    GuestSpec {
        name: "firmware",
        summary: "ACPI (RSDP, RSDT, FADT, FACS, DSDT, MADT, HPET) and MP tables: checksums and \
                  contents; the HPET counter and the PM timer against the TSC; HPET one-shot, \
                  periodic and level-triggered interrupts through the I/O APIC; ends with an \
                  ACPI S5 power-off",
        format: Format::Multiboot,
    },
    GuestSpec {
        name: "bzhello",
        summary: "Linux boot protocol entry state, boot_params, e820 map, command line and initrd",
        format: Format::BzImage,
    },
    GuestSpec {
        name: "demo",
        summary: "a small multitasking OS: paging, processes, fork/exec/wait, pipes, timer \
                  preemption; init runs a compute benchmark, fork+wait x1000, pipe, \
                  preemption and memory tests",
        format: Format::Multiboot,
    },
];

/// Guests linked somewhere other than 1 MiB with `lib/link.ld`, and where:
/// the multiboot loader must place them there and keep its own data clear.
/// `lowload` is at 0x10000, not the 0x8000 test kernels often use: QEMU,
/// the reference the guests are checked against, always puts its multiboot
/// information and memory map at 0x9000..0x9600, over such a kernel.
const LINK_ADDRESSES: &[(&str, u64)] = &[("lowload", 0x10000)];

/// The user programs one guest embeds.
struct UserPrograms {
    /// The guest that embeds them.
    guest: &'static str,
    /// Sources (relative to `<guest>/user/`) linked into every program.
    runtime: &'static [&'static str],
    /// Each program: its name (what exec asks for) and its own sources in
    /// `<guest>/user/`.
    programs: &'static [(&'static str, &'static [&'static str])],
}

/// Guests with user programs.
const USER_PROGRAMS: &[UserPrograms] = &[UserPrograms {
    guest: "demo",
    // The string functions are the kernel runtime's: pure code, no I/O.
    runtime: &["ulib.c", "../../lib/string.c"],
    programs: &[
        ("init", &["init.c"]),
        ("compute", &["compute.c", "compute_kernel.c"]),
        ("forkwait", &["forkwait.c"]),
        ("pipe", &["pipe.c"]),
        ("preempt", &["preempt.c", "compute_kernel.c"]),
        ("memory", &["memory.c"]),
    ],
}];

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

/// One workload of `popek-bench`: its name (the program's first argument
/// and the C function `bench_<name>`), what it measures, and the rounds it
/// runs when not told (chosen to take about 0.1 s natively on the machine
/// this was written on).
struct BenchWorkload {
    name: &'static str,
    summary: &'static str,
    rounds: u32,
}

/// Every workload of `popek-bench`, in the order `popek bench` runs them.
/// This table is the one source of their names and default rounds: the C
/// program gets it as `workloads.h`, `lib.rs` as `linux_bench::WORKLOADS`.
const LINUX_BENCH_WORKLOADS: &[BenchWorkload] = &[
    BenchWorkload {
        name: "forkwait",
        summary: "fork; the child exits at once; the parent waits for it (per round)",
        rounds: 1000,
    },
    BenchWorkload {
        name: "syscall",
        summary: "getppid through int 0x80 (per call)",
        rounds: 50_000,
    },
    BenchWorkload {
        name: "vsyscall",
        summary: "getppid through the vDSO's __kernel_vsyscall, as C libraries call (per call)",
        rounds: 200_000,
    },
    BenchWorkload {
        name: "pipe",
        summary: "one byte to a child and back over two pipes (per round trip)",
        rounds: 8_000,
    },
    BenchWorkload {
        name: "pgfault",
        summary: "first write to a fresh anonymous private page, with mmap and munmap \
                  in regions of up to 1024 pages (per page)",
        rounds: 50_000,
    },
    BenchWorkload {
        name: "ctxsw",
        summary: "two processes on CPU 0 passing a turn back and forth, each waking the \
                  other and sleeping on a futex (per hand-off: one switch)",
        rounds: 12_000,
    },
    BenchWorkload {
        name: "compute",
        summary: "the demo's compute loop, user code only (per iteration)",
        // The demo's COMPUTE_DEFAULT_ITERATIONS: only that count has a
        // known checksum to check.
        rounds: 60_000_000,
    },
    BenchWorkload {
        name: "shell",
        summary: "busybox sh runs a loop of `busybox true`: fork and exec (per iteration)",
        rounds: 250,
    },
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
    println!("cargo:rerun-if-changed=linux/bench");

    require_tool("gcc", "gcc (Debian: apt-get install gcc)")?;
    require_tool("ld", "GNU ld (Debian: apt-get install binutils)")?;
    if GUESTS.iter().any(|g| g.format == Format::BzImage) {
        require_tool("objcopy", "GNU objcopy (Debian: apt-get install binutils)")?;
    }

    // Guests are independent: build them side by side.
    let (results, bench): (Vec<Result<PathBuf, String>>, _) = std::thread::scope(|scope| {
        let bench = scope.spawn(|| build_linux_bench(&src, &out));
        let handles: Vec<_> = GUESTS
            .iter()
            .map(|guest| {
                let (src, out) = (&src, &out);
                scope.spawn(move || build_guest(guest, src, out))
            })
            .collect();
        let join = |h: std::thread::ScopedJoinHandle<'_, Result<PathBuf, String>>| {
            h.join()
                .unwrap_or_else(|_| Err("a build thread panicked".into()))
        };
        (handles.into_iter().map(join).collect(), join(bench))
    });
    let bench = bench.map_err(|e| format!("popek-bench (linux/bench) failed to build:\n{e}"))?;
    write_linux_bench_table(&bench, &out)?;

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

    // A guest with its own linker script brings its own entry.
    let own_script = src.join(guest.name).join("link.ld");
    let script = if own_script.exists() {
        own_script
    } else {
        lib.join("link.ld")
    };
    let lib_entry = guest.format == Format::Multiboot && script.starts_with(&lib);

    // The multiboot header and entry belong to multiboot guests only; a
    // bzImage guest brings its own 32-bit entry.
    let mut sources: Vec<PathBuf> = list_sources(&lib)?
        .into_iter()
        .filter(|p| lib_entry || !file_name(p).starts_with("multiboot"))
        .collect();
    // A bzImage's real-mode setup code (`setup*.S`) is linked on its own.
    let (setup, kernel_sources): (Vec<PathBuf>, Vec<PathBuf>) =
        list_sources(&src.join(guest.name))?
            .into_iter()
            .partition(|p| guest.format == Format::BzImage && file_name(p).starts_with("setup"));
    sources.extend(kernel_sources);
    if let Some(user) = USER_PROGRAMS.iter().find(|u| u.guest == guest.name) {
        sources.push(build_user_programs(user, src, &obj_dir)?);
    }

    let objects = compile(&sources, &lib, &obj_dir)?;

    let elf = out.join(format!("{}.elf", guest.name));
    let mut ld = Command::new("ld");
    ld.args(LDFLAGS);
    if let Some((_, at)) = LINK_ADDRESSES.iter().find(|(name, _)| *name == guest.name) {
        ld.arg(format!("--defsym=__link_base={at:#x}"));
    }
    ld.arg("-T").arg(&script).arg("-o").arg(&elf).args(&objects);
    run_tool(&mut ld)?;

    match guest.format {
        Format::Multiboot => Ok(elf),
        Format::BzImage => {
            let flat = out.join(format!("{}.bin", guest.name));
            let mut objcopy = Command::new("objcopy");
            objcopy.args(["-O", "binary"]).arg(&elf).arg(&flat);
            run_tool(&mut objcopy)?;
            let kernel = fs::read(&flat).map_err(|e| format!("{}: {e}", flat.display()))?;
            let setup_code = link_setup(guest, &setup, &lib, &obj_dir, out)?;
            let image = bzimage::build(&setup_code, &kernel)?;
            let path = out.join(format!("{}.bzImage", guest.name));
            write(&path, &image)?;
            Ok(path)
        }
    }
}

/// Builds a guest's user programs (each its own ELF, linked with
/// `<guest>/user/link.ld`) and writes an assembly file that embeds them
/// with `.incbin` and lists them in a table the guest's kernel reads:
///
/// ```c
/// struct program { const char *name; const u8 *elf; u32 size; };
/// extern const struct program programs[]; extern const u32 program_count;
/// ```
///
/// Returns the path of that assembly file, to be compiled into the guest.
fn build_user_programs(user: &UserPrograms, src: &Path, obj_dir: &Path) -> Result<PathBuf, String> {
    let dir = src.join(user.guest).join("user");
    let user_obj = obj_dir.join("user");
    fs::create_dir_all(&user_obj).map_err(|e| format!("{}: {e}", user_obj.display()))?;
    let paths = |names: &[&str]| -> Vec<PathBuf> { names.iter().map(|n| dir.join(n)).collect() };
    let runtime = compile(&paths(user.runtime), &dir, &user_obj)?;

    let mut asm = String::from(
        "/* Generated by guests/build.rs: the embedded user programs. */\n\
         \t.section .rodata.programs, \"a\"\n",
    );
    let mut table = String::from(
        "\t.section .rodata.program_table, \"a\"\n\t.balign 4\n\t.globl programs\nprograms:\n",
    );
    for (i, (name, sources)) in user.programs.iter().enumerate() {
        let mut objects = compile(&paths(sources), &dir, &user_obj)?;
        objects.extend(runtime.iter().cloned());
        let elf = user_obj.join(format!("{name}.elf"));
        let mut ld = Command::new("ld");
        ld.args(LDFLAGS)
            .arg("-T")
            .arg(dir.join("link.ld"))
            .arg("-o")
            .arg(&elf)
            .args(&objects);
        run_tool(&mut ld)?;
        asm.push_str(&format!(
            "\t.balign 16\nprogram_{i}:\n\t.incbin {:?}\nprogram_{i}_end:\nprogram_{i}_name:\n\t.asciz {name:?}\n",
            elf.display().to_string()
        ));
        table.push_str(&format!(
            "\t.long program_{i}_name, program_{i}, program_{i}_end - program_{i}\n"
        ));
    }
    table.push_str(&format!(
        "\t.globl program_count\nprogram_count:\n\t.long {}\n",
        user.programs.len()
    ));
    asm.push_str(&table);
    asm.push_str("\t.section .note.GNU-stack, \"\", @progbits\n");
    let path = obj_dir.join("programs.S");
    write(&path, asm.as_bytes())?;
    Ok(path)
}

/// Compiles each source into `obj_dir`; returns the object files.
fn compile(sources: &[PathBuf], lib: &Path, obj_dir: &Path) -> Result<Vec<PathBuf>, String> {
    compile_with(sources, lib, &[], obj_dir)
}

/// [`compile`] with more include directories after `lib`.
fn compile_with(
    sources: &[PathBuf],
    lib: &Path,
    includes: &[&Path],
    obj_dir: &Path,
) -> Result<Vec<PathBuf>, String> {
    let mut objects = Vec::new();
    for source in sources {
        // lib/ and the guest directory may hold files of the same name.
        let prefix = if source.starts_with(lib) { "lib-" } else { "" };
        let object = obj_dir.join(format!("{prefix}{}.o", file_name(source)));
        let mut cc = Command::new("gcc");
        cc.args(CFLAGS).arg("-I").arg(lib);
        for dir in includes {
            cc.arg("-I").arg(dir);
        }
        cc.arg("-c").arg(source).arg("-o").arg(&object);
        run_tool(&mut cc)?;
        objects.push(object);
    }
    Ok(objects)
}

/// Builds `popek-bench` from `linux/bench/*.c`, the guests' string
/// functions and the demo's compute loop
/// (`demo/user/compute_kernel.c`, so the compute workload runs the very
/// machine code the demo and the native bench run), with the guests'
/// code-generation flags and no libc, linked as a static i386 executable
/// by ld's default script. The workload table reaches the C code as a
/// generated `workloads.h` of `WORKLOAD(name, rounds)` lines. Returns the
/// path of the program.
fn build_linux_bench(src: &Path, out: &Path) -> Result<PathBuf, String> {
    let dir = src.join("linux").join("bench");
    let compute = src.join("demo").join("user");
    let obj_dir = out.join("obj").join("linux-bench");
    fs::create_dir_all(&obj_dir).map_err(|e| format!("{}: {e}", obj_dir.display()))?;

    let mut header =
        String::from("/* Generated by guests/build.rs from LINUX_BENCH_WORKLOADS. */\n");
    for w in LINUX_BENCH_WORKLOADS {
        header.push_str(&format!("WORKLOAD({}, {}u)\n", w.name, w.rounds));
    }
    write(&obj_dir.join("workloads.h"), header.as_bytes())?;

    let lib = src.join("lib");
    let mut sources = list_sources(&dir)?;
    sources.push(compute.join("compute_kernel.c"));
    // memset and memcpy, which gcc may call even in freestanding code: the
    // guests' own, no copy.
    sources.push(lib.join("string.c"));
    let objects = compile_with(&sources, &dir, &[&obj_dir, &compute, &lib], &obj_dir)?;

    let elf = out.join("popek-bench");
    let mut ld = Command::new("ld");
    ld.args(LDFLAGS)
        .args(["-static", "-e", "_start", "-o"])
        .arg(&elf)
        .args(&objects);
    run_tool(&mut ld)?;
    Ok(elf)
}

/// Writes `$OUT_DIR/linux_bench.rs`: the program and its workload table,
/// for `lib.rs`'s `linux_bench` module.
fn write_linux_bench_table(elf: &Path, out: &Path) -> Result<(), String> {
    let mut table = format!(
        "/// The static i386 Linux program `popek-bench` (an ELF executable).\n\
         pub static ELF: &[u8] = include_bytes!({:?});\n\n\
         /// Every workload, with its default rounds, in the order `popek bench` runs them.\n\
         pub static WORKLOADS: &[Workload] = &[\n",
        elf.display().to_string()
    );
    for w in LINUX_BENCH_WORKLOADS {
        table.push_str(&format!(
            "    Workload {{ name: {:?}, summary: {:?}, rounds: {} }},\n",
            w.name, w.summary, w.rounds
        ));
    }
    table.push_str("];\n");
    write(&out.join("linux_bench.rs"), table.as_bytes())
}

/// Links a bzImage guest's real-mode setup code at the offset it occupies
/// in the setup sectors and returns it as flat bytes (empty if the guest
/// has none: the setup sectors then only halt).
fn link_setup(
    guest: &GuestSpec,
    setup: &[PathBuf],
    lib: &Path,
    obj_dir: &Path,
    out: &Path,
) -> Result<Vec<u8>, String> {
    if setup.is_empty() {
        return Ok(Vec::new());
    }
    let objects = compile(setup, lib, obj_dir)?;
    let elf = out.join(format!("{}-setup.elf", guest.name));
    let mut ld = Command::new("ld");
    ld.args(LDFLAGS)
        .arg(format!("-Ttext={:#x}", bzimage::SETUP_CODE_OFFSET))
        .args(["-e", "setup_start", "-o"])
        .arg(&elf)
        .args(&objects);
    run_tool(&mut ld)?;
    let flat = out.join(format!("{}-setup.bin", guest.name));
    let mut objcopy = Command::new("objcopy");
    objcopy.args(["-O", "binary"]).arg(&elf).arg(&flat);
    run_tool(&mut objcopy)?;
    fs::read(&flat).map_err(|e| format!("{}: {e}", flat.display()))
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
///
/// Layout: a 512-byte boot sector, `SETUP_SECTS` setup sectors, then the
/// protected-mode kernel, which the loader puts at 0x100000. The setup
/// header spans the end of the boot sector (from 0x1F1) and the start of
/// the first setup sector; a loader copies it into boot_params.
mod bzimage {
    /// Setup sectors after the boot sector.
    const SETUP_SECTS: usize = 4;
    /// Bytes before the protected-mode kernel.
    const SETUP_BYTES: usize = (SETUP_SECTS + 1) * 512;
    /// Where the real-mode setup code starts (after the header, which ends
    /// at 0x26C in protocol 2.15); the jump at 0x200 lands here.
    pub const SETUP_CODE_OFFSET: usize = 0x280;
    /// Boot protocol 2.15.
    const VERSION: u16 = 0x020F;
    /// Load address of the protected-mode kernel (code32_start).
    const KERNEL_ADDR: u32 = 0x100000;
    /// loadflags: the protected-mode code is loaded at 0x100000.
    const LOADED_HIGH: u8 = 0x01;
    /// Longest command line the kernel accepts, without the NUL.
    const CMDLINE_SIZE: u32 = 2047;
    /// Real-mode code for the boot sector and the default setup:
    /// `cli; hlt; jmp $-1` (never run by popek; well-formed for others).
    const HALT: [u8; 4] = [0xFA, 0xF4, 0xEB, 0xFD];
    /// The kernel's version string, pointed to by `kernel_version`.
    const VERSION_STRING: &[u8] = b"popek bzhello\0";
    /// Where the version string goes (in the last setup sector).
    const VERSION_STRING_OFFSET: usize = SETUP_BYTES - 64;

    /// Builds a bzImage from real-mode setup code linked at
    /// [`SETUP_CODE_OFFSET`] (may be empty) and a flat 32-bit kernel linked
    /// at 0x100000 whose first bytes hold the `kernel_info` ("LToP") and
    /// the `PKBZ` marker followed by the kernel's memory size (entry.S).
    pub fn build(setup_code: &[u8], kernel: &[u8]) -> Result<Vec<u8>, String> {
        let kernel_info = find(kernel, b"LToP", 256)
            .ok_or("the kernel has no kernel_info (\"LToP\") in its first 256 bytes")?;
        let marker = find(kernel, b"PKBZ", 256)
            .ok_or("the kernel has no PKBZ size marker in its first 256 bytes")?;
        let init_size = le32(kernel, marker + 4);
        if setup_code.len() > VERSION_STRING_OFFSET - SETUP_CODE_OFFSET {
            return Err(format!("setup code too large: {} bytes", setup_code.len()));
        }

        let mut image = vec![0u8; SETUP_BYTES];
        image[..HALT.len()].copy_from_slice(&HALT);
        let mut put =
            |off: usize, bytes: &[u8]| image[off..off + bytes.len()].copy_from_slice(bytes);

        put(0x1F1, &[SETUP_SECTS as u8]); // setup_sects
        put(0x1F4, &(kernel.len().div_ceil(16) as u32).to_le_bytes()); // syssize (16-byte units)
        put(0x1FA, &0xFFFFu16.to_le_bytes()); // vid_mode: normal
        put(0x1FE, &0xAA55u16.to_le_bytes()); // boot_flag
        let jump = (SETUP_CODE_OFFSET - 0x202) as u8;
        put(0x200, &[0xEB, jump]); // jmp short to the setup code
        put(0x202, b"HdrS"); // header magic
        put(0x206, &VERSION.to_le_bytes()); // version
        put(0x20C, &0x1000u16.to_le_bytes()); // start_sys_seg (obsolete)
        let version_ptr = (VERSION_STRING_OFFSET - 0x200) as u16;
        put(0x20E, &version_ptr.to_le_bytes()); // kernel_version
        put(0x211, &[LOADED_HIGH]); // loadflags
        put(0x212, &0x8000u16.to_le_bytes()); // setup_move_size
        put(0x214, &KERNEL_ADDR.to_le_bytes()); // code32_start
        put(0x22C, &0x7FFF_FFFFu32.to_le_bytes()); // initrd_addr_max
        put(0x230, &KERNEL_ADDR.to_le_bytes()); // kernel_alignment
        put(0x234, &[0]); // relocatable_kernel: no, load at 0x100000
        put(0x235, &[20]); // min_alignment: 1 MiB (log2)
        put(0x238, &CMDLINE_SIZE.to_le_bytes()); // cmdline_size
        put(0x258, &u64::from(KERNEL_ADDR).to_le_bytes()); // pref_address
        put(0x260, &init_size.to_le_bytes()); // init_size
        put(0x268, &(kernel_info as u32).to_le_bytes()); // kernel_info_offset

        if setup_code.is_empty() {
            put(SETUP_CODE_OFFSET, &HALT);
        } else {
            put(SETUP_CODE_OFFSET, setup_code);
        }
        put(VERSION_STRING_OFFSET, VERSION_STRING);

        image.extend_from_slice(kernel);
        // Pad to whole 16-byte units, as syssize counts them.
        image.resize(SETUP_BYTES + kernel.len().div_ceil(16) * 16, 0);
        Ok(image)
    }

    /// Offset of `needle` within the first `limit` bytes of `hay`.
    fn find(hay: &[u8], needle: &[u8], limit: usize) -> Option<usize> {
        hay[..hay.len().min(limit)]
            .windows(needle.len())
            .position(|w| w == needle)
    }

    /// Little-endian u32 at `off` (0 past the end).
    fn le32(bytes: &[u8], off: usize) -> u32 {
        bytes
            .get(off..off + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}
