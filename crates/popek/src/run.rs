//! `popek run`: build the machine, pick the engine, run, report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use machine::machine::DEFAULT_MEMORY_MIB;
use machine::{Engine, EngineError, Exit, MachineBuilder};

use crate::console;

/// Exit status when popek itself cannot start the guest (bad input, missing
/// host feature). Guest exits through the debug port are always odd.
const STATUS_POPEK_ERROR: u8 = 2;
/// Exit status when the engine cannot run this guest on this host.
const STATUS_UNSUPPORTED: u8 = 4;

/// Which engine runs the vCPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum EngineKind {
    /// Binary translation of kernel code, direct execution of user code.
    #[default]
    Bt,
    /// Hardware-assisted virtualization through /dev/kvm.
    Kvm,
}

/// Whether the bt engine advertises SYSENTER (`--sep`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Sep {
    /// Where the host's fast path takes SYSENTER from 32-bit code (Intel).
    #[default]
    Auto,
    /// Always: on AMD hosts each SYSENTER traps as #UD and is emulated.
    On,
    /// Never: system calls go through `int 0x80`, as before.
    Off,
}

/// Parses a size such as `2M`, `512K` or `1048576` (bytes).
fn parse_size(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1 << 10),
        Some((i, 'm' | 'M')) => (&s[..i], 1 << 20),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 2M, 512K or a byte count)"))?;
    n.checked_mul(mult)
        .and_then(|b| u32::try_from(b).ok())
        .ok_or_else(|| format!("{s} is too large"))
}

/// Parses `--tc-size`: a size the BT engine's translation cache can have.
fn parse_tc_size(s: &str) -> Result<u32, String> {
    let size = parse_size(s)?;
    bt::engine::BtOptions::check_tc_size(size)?;
    Ok(size)
}

/// Options of `popek run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Execution engine.
    #[arg(long, value_enum, default_value_t)]
    engine: EngineKind,
    /// An embedded guest (see `popek guests`).
    #[arg(long, conflicts_with = "kernel")]
    guest: Option<String>,
    /// A kernel image: multiboot (ELF or a.out kludge) or Linux bzImage.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// An initial RAM disk (Linux initrd, or a multiboot module).
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// The kernel command line.
    #[arg(long, default_value = "")]
    append: String,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = DEFAULT_MEMORY_MIB)]
    memory: u64,
    /// Print the engine's statistics to stderr at exit (always done for the
    /// default guest).
    #[arg(long)]
    stats: bool,
    /// Write the engine's statistics as JSON to this file at exit.
    #[arg(long, value_name = "FILE")]
    stats_json: Option<PathBuf>,
    /// Console lines that start with PREFIX end a statistics phase named by
    /// the rest of the line, instead of POST codes on port 0x80 (phases
    /// are in --stats-json; bt engine).
    #[arg(long, value_name = "PREFIX", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    mark_lines: Option<String>,
    /// Translation-cache size for the bt engine (e.g. 2M, 512K; a multiple
    /// of 4K from 4K to 3M).
    #[arg(long, value_parser = parse_tc_size, default_value = "2M")]
    tc_size: u32,
    /// Run guest user code in the bt monitor's own process, re-protecting
    /// guest kernel pages at every user/kernel switch, instead of in a
    /// process of its own (for comparison: docs/perf.md).
    #[arg(long)]
    one_process: bool,
    /// Whether the bt engine's CPU advertises SYSENTER (CPUID SEP), which
    /// Linux's vDSO then uses for system calls: by default where the host
    /// takes SYSENTER from 32-bit code through its own fast path (Intel
    /// hosts), where it is far cheaper than `int 0x80`.
    #[arg(long, value_enum, default_value_t = Sep::Auto)]
    sep: Sep,
    /// Leave every guest `int 0x80` to the host's own path, instead of
    /// running sites that trap often as `int3` from a copy of their page
    /// (a program reading such a site would see 0xCC: docs/bt.md).
    #[arg(long)]
    no_int80_patch: bool,
    /// Write the bt engine's translated blocks (those live when the run
    /// ends) to /tmp/perf-PID.map, so that `perf report` names translated
    /// code by its guest address.
    #[arg(long)]
    perf_map: bool,
    /// Name translated code in the perf map by these guest symbols (a
    /// System.map, or /proc/kallsyms as the guest printed it).
    #[arg(long, value_name = "FILE", requires = "perf_map")]
    guest_symbols: Option<PathBuf>,
}

/// The perf map `--perf-map` asks for: /tmp/perf-PID.map, where perf
/// looks for names of code generated at run time, opened now because a
/// confined engine can open no file.
fn perf_map(args: &RunArgs) -> Result<Option<bt::engine::PerfMap>, String> {
    if !args.perf_map {
        return Ok(None);
    }
    let symbols = match &args.guest_symbols {
        Some(path) => {
            // Like the kernel and the initrd: a regular file only, so that
            // a FIFO or /dev/zero is refused rather than read forever.
            let bytes = read_file("guest symbols", path, ram_limit(args))?;
            let symbols = bt::engine::GuestSymbols::parse(&String::from_utf8_lossy(&bytes));
            if symbols.is_empty() {
                return Err(format!(
                    "{} holds no text symbols (expected System.map or kallsyms lines)",
                    path.display()
                ));
            }
            symbols
        }
        None => Default::default(),
    };
    let path = PathBuf::from(format!("/tmp/perf-{}.map", std::process::id()));
    let file = create_new(&path)?;
    sandbox::allow_writes_to(std::os::fd::AsRawFd::as_raw_fd(&file));
    tracing::info!("perf map: {}", path.display());
    Ok(Some(bt::engine::PerfMap::new(file, symbols)))
}

/// Creates `path`, which must not exist yet: /tmp is shared, and a name
/// anyone can predict (perf's /tmp/perf-PID.map) must not let a planted
/// file or link make popek write over another file.
fn create_new(path: &Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// Reads the file a user named as `what` (kernel, initrd): only a regular
/// file, and only if it fits in `limit` bytes (the guest's RAM), so that
/// a device, a FIFO or a huge file is refused before anything is read.
fn read_file(what: &str, path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

    let cannot = |e: std::io::Error| format!("cannot read {what} {}: {e}", path.display());
    // O_NONBLOCK: opening a FIFO would otherwise wait for a writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let is = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(format!(
            "the {what} {} is {is}; give a regular file",
            path.display()
        ));
    }
    if meta.len() > limit {
        return Err(format!(
            "the {what} {} is {} bytes, more than the guest's {} MiB of RAM can hold",
            path.display(),
            meta.len(),
            limit >> 20
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow after the check: never read past the limit.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "the {what} {} grew past the guest's {} MiB of RAM while it was read",
            path.display(),
            limit >> 20
        ));
    }
    Ok(bytes)
}

/// The most bytes a kernel or initrd can have: all of guest RAM.
fn ram_limit(args: &RunArgs) -> u64 {
    args.memory.saturating_mul(1 << 20)
}

fn kernel_image(args: &RunArgs) -> Result<Vec<u8>, String> {
    if let Some(path) = &args.kernel {
        return read_file("kernel", path, ram_limit(args));
    }
    let name = args.guest.as_deref().unwrap_or(popek_guests::DEFAULT);
    match popek_guests::find(name) {
        Some(g) => Ok(g.image.to_vec()),
        None => {
            let names: Vec<_> = popek_guests::GUESTS.iter().map(|g| g.name).collect();
            Err(format!(
                "no embedded guest named {name:?}; the guests are: {}",
                names.join(", ")
            ))
        }
    }
}

fn fail(status: u8, msg: impl std::fmt::Display) -> ExitCode {
    console::restore_terminal();
    eprintln!("popek: {msg}");
    ExitCode::from(status)
}

/// Runs a guest and returns the process exit status.
pub fn run(args: &RunArgs) -> ExitCode {
    let kernel = match kernel_image(args) {
        Ok(k) => k,
        Err(e) => return fail(STATUS_POPEK_ERROR, e),
    };
    let mut builder = MachineBuilder::new()
        .memory_mib(args.memory)
        .kernel(kernel)
        .cmdline(args.append.clone());
    if let Some(prefix) = &args.mark_lines {
        builder = builder.mark_lines(prefix.clone());
    }
    if let Some(path) = &args.initrd {
        match read_file("initrd", path, ram_limit(args)) {
            Ok(i) => builder = builder.initrd(i),
            Err(e) => return fail(STATUS_POPEK_ERROR, e),
        }
    }
    // Bad input is reported before any host feature is probed.
    let mut machine = match builder.input(console::spawn_input()).build() {
        Ok(m) => m,
        Err(e) => return fail(STATUS_POPEK_ERROR, e),
    };
    let mut engine: Box<dyn Engine> = match args.engine {
        EngineKind::Kvm => match kvm::KvmEngine::new() {
            Ok(e) => {
                tracing::info!("{}", e.host().describe());
                Box::new(e)
            }
            Err(e) => return fail(STATUS_UNSUPPORTED, e),
        },
        EngineKind::Bt => {
            let engine = bt::engine::BtEngine::new(bt::engine::BtOptions {
                tc_size: args.tc_size,
                user_process: !args.one_process,
                sep: match args.sep {
                    Sep::Auto => None,
                    Sep::On => Some(true),
                    Sep::Off => Some(false),
                },
                patch_int80: !args.no_int80_patch,
            });
            match perf_map(args) {
                Ok(Some(map)) => Box::new(engine.with_perf_map(map)),
                Ok(None) => Box::new(engine),
                Err(e) => return fail(STATUS_POPEK_ERROR, e),
            }
        }
    };
    for line in &machine.boot_summary {
        tracing::info!("{line}");
    }
    tracing::info!(engine = engine.name(), format = ?machine.format, "starting guest");

    // Opened before the run: once the engine confines the process it can
    // open no file, and writes only where it was told it may.
    let mut stats_file = match &args.stats_json {
        Some(path) => match std::fs::File::create(path) {
            Ok(f) => {
                sandbox::allow_writes_to(std::os::fd::AsRawFd::as_raw_fd(&f));
                Some((f, path))
            }
            Err(e) => {
                return fail(
                    STATUS_POPEK_ERROR,
                    format!("cannot create {}: {e}", path.display()),
                )
            }
        },
        None => None,
    };
    let raw = console::enter_raw_mode();
    let result = engine.run(&mut machine);
    machine.flush_console();
    drop(raw);
    // The default guest exists to show what the engine did: its run ends
    // with the statistics table.
    let default_run = args.guest.is_none() && args.kernel.is_none();
    if args.stats || default_run {
        eprintln!("{}", engine.stats_table());
    }
    if let Some((file, path)) = &mut stats_file {
        use std::io::Write;
        let json = engine.stats_json().unwrap_or_else(|| "{}".into());
        if let Err(e) = writeln!(file, "{json}") {
            eprintln!("popek: cannot write {}: {e}", path.display());
        }
    }
    match result {
        Ok(exit) => {
            report(&exit);
            ExitCode::from(exit.exit_status() as u8)
        }
        Err(EngineError::GuestUnsupported(fault)) => fail(STATUS_UNSUPPORTED, fault),
        Err(e) => fail(STATUS_UNSUPPORTED, e),
    }
}

fn report(exit: &Exit) {
    match exit {
        Exit::DebugExit(v) => tracing::info!("guest wrote {v:#x} to the debug-exit port"),
        Exit::Reset => eprintln!("popek: the guest reset the machine; there is no firmware to reboot into, so the run ends here"),
        Exit::PowerOff => eprintln!("popek: the guest powered the machine off (ACPI S5)"),
        Exit::Halted(state) => eprintln!(
            "popek: the guest halted at EIP={:08x} with nothing left to wake it",
            state.eip
        ),
        Exit::Shutdown(fault) => eprintln!("popek: {fault}"),
        Exit::Escape(fault) => eprintln!("popek: security stop: {fault}"),
        Exit::UserQuit => eprintln!("popek: quit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_new_refuses_a_planted_link_and_leaves_its_target_alone() {
        let dir = std::env::temp_dir();
        let target = dir.join(format!("popek-run-target-{}", std::process::id()));
        let link = dir.join(format!("popek-run-link-{}", std::process::id()));
        std::fs::write(&target, "precious").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let refused = create_new(&link);
        assert!(refused.is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_file(&target).unwrap();
        // A fresh name is created.
        let fresh = dir.join(format!("popek-run-fresh-{}", std::process::id()));
        assert!(create_new(&fresh).is_ok());
        std::fs::remove_file(&fresh).unwrap();
    }
}
