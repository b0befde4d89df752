//! Debian's unmodified i386 Linux as a benchmark: the time to boot to
//! /init, and static i386 programs of ours (guests/linux/bench) run in it
//! and natively as host processes. One boot runs every program several
//! times; its first run is the cold one (an empty translation cache).
//!
//! Our programs reach the guest through a second initramfs archive
//! appended to Debian's: its /init replaces the busybox shell's with a
//! script that runs the workloads, marks each with a console line (so bt
//! can split its counters per workload) and powers off.

use std::path::{Path, PathBuf};
use std::time::Duration;

use popek_guests::linux_bench;

use super::child::Output;
use super::measure::{Runner, TcCounters};
use super::runners::{BtOptions, GuestRun, Kernel};
use super::{run_guest, Bench, Group, Job};

/// The console lines the bench's /init prints before each workload.
const MARK: &str = "popek-phase: ";
/// The mark printed first thing in /init: the boot is over.
const INIT: &str = "init";
/// The mark printed just before `poweroff -f`.
const POWEROFF: &str = "poweroff";
/// The kernel command line for every runner.
const APPEND: &str = "console=ttyS0 quiet";

/// Debian's kernels and initrd, and busybox for the native shell workload.
pub(super) struct Artifacts {
    flavours: Vec<(&'static str, PathBuf)>,
    initrd: PathBuf,
    busybox: Option<PathBuf>,
    version: String,
}

impl Artifacts {
    /// Runs guests/linux/fetch (it only prints the paths once the cache is
    /// full); only a popek run from its source tree has it.
    pub(super) fn find(b: &mut Bench) -> Result<Artifacts, String> {
        b.note("guests/linux/fetch: Debian's kernels (cached after the first run)");
        let vars = popek_guests::fetch("linux/fetch")?;
        Ok(Artifacts {
            flavours: vec![
                ("686", vars.need("KERNEL_686")?.into()),
                ("686-pae", vars.need("KERNEL_686_PAE")?.into()),
            ],
            initrd: vars.need("INITRD")?.into(),
            busybox: vars.get("BUSYBOX").map(PathBuf::from),
            version: vars.get("VERSION").unwrap_or_default().to_string(),
        })
    }
}

/// The bench's /init: the workloads `(name, rounds)` each run `reps` times.
fn init_script(workloads: &[(&str, u32)], reps: usize) -> String {
    let mut s = String::from(
        "#!/bin/sh\n\
         # popek bench's /init: run the workloads, then power off.\n\
         /bin/busybox --install -s\n\
         mount -t proc proc /proc\n\
         mount -t tmpfs tmpfs /tmp\n",
    );
    s.push_str(&format!("echo '{MARK}{INIT}'\n"));
    for (name, rounds) in workloads {
        s.push_str(&format!("echo '{MARK}{name}'\n"));
        for _ in 0..reps {
            s.push_str(&format!("/bin/popek-bench {name} {rounds}\n"));
        }
    }
    s.push_str(&format!("echo '{MARK}{POWEROFF}'\npoweroff -f\n"));
    s
}

/// Debian's initrd with our archive appended, written to `out`.
fn initrd(base: &Path, out: &Path, init: &str) -> Result<(), String> {
    let base = std::fs::read(base).map_err(|e| format!("cannot read {}: {e}", base.display()))?;
    std::fs::write(out, linux_bench::combined_initrd(&base, init))
        .map_err(|e| format!("cannot write {}: {e}", out.display()))
}

const BOOT_INITRD: &str = "initrd-boot";

/// An initrd whose /init powers off as soon as it runs (boot time only).
pub(super) fn boot_initrd(b: &Bench, linux: &Artifacts) -> Result<PathBuf, String> {
    let path = b.scratch(BOOT_INITRD);
    initrd(&linux.initrd, &path, &init_script(&[], 0))?;
    Ok(path)
}

/// A boot-only run of the first flavour.
pub(super) fn boot_only_guest(b: &Bench, linux: &Artifacts) -> Result<GuestRun, String> {
    Ok(GuestRun {
        kernel: Kernel::File(linux.flavours[0].1.clone()),
        initrd: Some(boot_initrd(b, linux)?),
        append: APPEND.into(),
    })
}

/// When the boot reached /init.
pub(super) fn init_time(out: &Output) -> Option<Duration> {
    out.line(&format!("{MARK}{INIT}")).map(|(t, _)| t)
}

/// Rounds of each workload in the guest, fewer than the programs' defaults
/// (~0.1 s natively): a system call under bt or QEMU costs 4-100 times a
/// native one, and the whole group has to fit in a few boots (QEMU's
/// fork+wait takes the longest, ~0.1 s for 200 rounds). Figures are per
/// round, so runners with different round counts still compare.
const GUEST_ROUNDS: [(&str, u32); 8] = [
    ("forkwait", 200),
    ("syscall", 2000),
    ("vsyscall", 5000),
    ("pipe", 400),
    ("pgfault", 1000),
    ("ctxsw", 500),
    ("compute", 60_000_000),
    ("shell", 10),
];

/// The workloads with the rounds each runs in the guest (halved by
/// --quick); natively each runs its default rounds.
fn workloads(quick: bool) -> Vec<(&'static str, u32)> {
    linux_bench::WORKLOADS
        .iter()
        .map(|w| {
            let rounds = GUEST_ROUNDS
                .iter()
                .find(|(n, _)| *n == w.name)
                .map_or(w.rounds, |(_, r)| *r);
            (w.name, if quick { (rounds / 2).max(1) } else { rounds })
        })
        .collect()
}

/// The phase that began at console mark `name`: the phase after the one
/// the mark ended (bt's `--stats-json`).
pub(super) fn phase_after<'a>(
    stats: &'a serde_json::Value,
    name: &str,
) -> Option<&'a serde_json::Value> {
    let phases = stats["phases"].as_array()?;
    let i = phases.iter().position(|p| p["mark"] == name)?;
    phases.get(i + 1)
}

pub(super) fn jobs(b: &Bench, linux: &Artifacts) -> Vec<Job> {
    let mut jobs = Vec::new();
    let reps = b.runs + 1;
    let work = workloads(b.quick);
    let full_path = b.scratch("initrd-bench");
    let written = initrd(&linux.initrd, &full_path, &init_script(&work, reps))
        .and_then(|()| boot_initrd(b, linux).map(|_| ()));
    let boot_path = b.scratch(BOOT_INITRD);
    if let Err(e) = written {
        return vec![Job::new("linux", move |b| {
            b.note(format!("no Linux workloads: {e}"))
        })];
    }
    let version = linux.version.clone();
    jobs.push(Job::new("linux: version", move |b| {
        b.note(format!(
            "Linux: Debian's {version}, command line \"{APPEND}\""
        ))
    }));
    for run in 0..b.runs {
        for (flavour, kernel) in &linux.flavours {
            // The first flavour runs the programs; the other only boots,
            // and only once with --quick.
            let programs = *flavour == linux.flavours[0].0;
            if !programs && b.quick && run > 0 {
                continue;
            }
            let initrd = if programs { &full_path } else { &boot_path };
            let guest = GuestRun {
                kernel: Kernel::File(kernel.clone()),
                initrd: Some(initrd.clone()),
                append: APPEND.into(),
            };
            for r in [Runner::Bt, Runner::Kvm, Runner::Qemu] {
                let label = format!("linux {flavour} {r} {}/{}", run + 1, b.runs);
                let guest = guest.clone();
                let flavour = *flavour;
                jobs.push(Job::new(label, move |b| {
                    boot(b, r, flavour, &guest, programs, run == 0)
                }));
            }
        }
        let busybox = linux.busybox.clone();
        let native_work: Vec<(&str, u32)> = linux_bench::WORKLOADS
            .iter()
            .map(|w| (w.name, w.rounds))
            .collect();
        jobs.push(Job::new(
            format!("linux programs native {}/{}", run + 1, b.runs),
            move |b| native(b, &native_work, reps, busybox.as_deref()),
        ));
    }
    jobs
}

const BOOT_UNIT: &str = "s";
const UNIT: &str = "cycles/round";

fn boot(b: &mut Bench, r: Runner, flavour: &str, guest: &GuestRun, programs: bool, first: bool) {
    let boot_name = format!("linux/boot-{flavour}");
    let down_name = format!("linux/poweroff-{flavour}");
    let stats = b.scratch(&format!("linux-{flavour}.json"));
    let opts = BtOptions {
        mark_lines: Some(MARK),
        stats_json: Some(stats.clone()),
        ..BtOptions::default()
    };
    let out = match run_guest(b, Group::Linux, r, guest, &opts) {
        Ok(out) => out,
        Err(why) => {
            b.missing(&boot_name, BOOT_UNIT, r, why.clone());
            if programs {
                for (name, _) in workloads(b.quick) {
                    b.missing(&format!("linux/{name}"), UNIT, r, why.clone());
                }
            }
            return;
        }
    };
    match init_time(&out) {
        Some(t) => b.sample(&boot_name, BOOT_UNIT, r, t.as_secs_f64()),
        None => b.missing(&boot_name, BOOT_UNIT, r, "no /init line"),
    }
    if let Some((t, _)) = out.line(&format!("{MARK}{POWEROFF}")) {
        let down = out.elapsed.saturating_sub(t);
        b.sample(&down_name, BOOT_UNIT, r, down.as_secs_f64());
    }
    let json = (r == Runner::Bt)
        .then(|| std::fs::read_to_string(&stats).ok())
        .flatten()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok());
    if let (Some(json), true) = (&json, first) {
        if let Some(p) = phases_until(json, INIT) {
            b.workload(&boot_name, BOOT_UNIT).tc = Some(TcCounters::from_json(p));
        }
    }
    if programs {
        results(b, r, &out);
        if let (Some(json), true) = (&json, first) {
            for (name, _) in workloads(b.quick) {
                if let Some(p) = phase_after(json, name) {
                    let tc = TcCounters::from_json(p);
                    b.workload(&format!("linux/{name}"), UNIT).tc = Some(tc);
                }
            }
        }
    }
}

/// The phase that the mark `name` ended (from the start of the run).
pub(super) fn phases_until<'a>(
    stats: &'a serde_json::Value,
    name: &str,
) -> Option<&'a serde_json::Value> {
    stats["phases"]
        .as_array()?
        .iter()
        .find(|p| p["mark"] == name)
}

/// Reads `popek-bench NAME rounds=N cycles=T per_round=P` lines: each
/// workload's first line is its cold run, the rest are the samples.
fn results(b: &mut Bench, r: Runner, out: &Output) {
    let mut seen = std::collections::BTreeSet::new();
    for line in out.lines_with("popek-bench ") {
        let mut words = line.split_whitespace().skip(1);
        let Some(name) = words.next() else { continue };
        let full = format!("linux/{name}");
        match per_round(words) {
            Some(v) if seen.insert(name.to_string()) => {
                b.workload(&full, UNIT).cold.insert(r, v);
            }
            Some(v) => b.sample(&full, UNIT, r, v),
            None => b.missing(&full, UNIT, r, line.to_string()),
        }
    }
}

/// Cycles per round from `rounds=N cycles=T`, in full precision (the
/// program's own `per_round=` is an integer).
fn per_round<'a>(words: impl Iterator<Item = &'a str>) -> Option<f64> {
    let (mut rounds, mut cycles) = (None, None);
    for w in words {
        if let Some(v) = w.strip_prefix("rounds=") {
            rounds = v.parse::<f64>().ok();
        } else if let Some(v) = w.strip_prefix("cycles=") {
            cycles = v.parse::<f64>().ok();
        }
    }
    Some(cycles? / rounds.filter(|r| *r > 0.0)?)
}

/// The demo's compute loop run natively: `iterations` of the same
/// compute_kernel.c, cycles per iteration.
pub(super) fn native_compute(b: &Bench, iterations: u32) -> Result<f64, String> {
    let program = b
        .tools
        .executable("popek-bench", linux_bench::ELF)
        .map_err(|e| format!("cannot write the native program: {e}"))?;
    let mut cmd = std::process::Command::new(&program);
    cmd.args(["compute", &iterations.to_string()]);
    let out = super::child::run(&mut cmd, Duration::from_secs(60))
        .map_err(|e| format!("cannot run i386 programs here: {e}"))?;
    out.line("popek-bench compute ")
        .filter(|_| out.status == Some(0))
        .and_then(|(_, l)| per_round(l.split_whitespace()))
        .ok_or_else(|| format!("native i386 program: {}", out.failure()))
}

/// The same programs as host processes, `reps` times each.
fn native(b: &mut Bench, work: &[(&str, u32)], reps: usize, busybox: Option<&Path>) {
    let program = match b.tools.executable("popek-bench", linux_bench::ELF) {
        Ok(p) => p,
        Err(e) => return b.note(format!("cannot write the native program: {e}")),
    };
    let mut lines = Vec::new();
    for (name, rounds) in work {
        let mut cmd = std::process::Command::new(&program);
        cmd.args([name.to_string(), rounds.to_string()]);
        if *name == "shell" {
            match busybox {
                Some(bb) => {
                    cmd.arg(bb);
                }
                None => {
                    b.missing("linux/shell", UNIT, Runner::Native, "fetch gave no BUSYBOX");
                    continue;
                }
            }
        }
        for _ in 0..reps {
            match super::child::run(&mut cmd, Duration::from_secs(60)) {
                Ok(out) if out.status == Some(0) => lines.extend(out.lines),
                Ok(out) => {
                    let why = format!("native i386 program: {}", out.failure());
                    b.missing(&format!("linux/{name}"), UNIT, Runner::Native, why);
                    break;
                }
                Err(e) => {
                    let why = format!("cannot run i386 programs here: {e}");
                    b.missing(&format!("linux/{name}"), UNIT, Runner::Native, why);
                    break;
                }
            }
        }
    }
    let out = Output {
        lines,
        ..Output::default()
    };
    results(b, Runner::Native, &out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_init_script_marks_every_workload_and_powers_off() {
        let s = init_script(&[("forkwait", 100), ("pipe", 10)], 2);
        assert_eq!(
            per_round("x rounds=4 cycles=10 per_round=2".split(' ')),
            Some(2.5)
        );
        assert_eq!(per_round("x rounds=0 cycles=10".split(' ')), None);
        let marks: Vec<_> = s.lines().filter(|l| l.contains(MARK)).collect();
        assert_eq!(
            marks,
            [
                "echo 'popek-phase: init'",
                "echo 'popek-phase: forkwait'",
                "echo 'popek-phase: pipe'",
                "echo 'popek-phase: poweroff'"
            ]
        );
        assert_eq!(s.matches("/bin/popek-bench forkwait 100\n").count(), 2);
        assert!(s.ends_with("poweroff -f\n"));
    }

    #[test]
    fn phases_are_found_by_mark() {
        let j: serde_json::Value = serde_json::from_str(
            r#"{"phases":[{"mark":"init","n":1},{"mark":"forkwait","n":2},{"exit":true,"n":3}]}"#,
        )
        .unwrap();
        assert_eq!(phases_until(&j, "init").unwrap()["n"], 1);
        assert_eq!(phase_after(&j, "init").unwrap()["n"], 2);
        assert_eq!(phase_after(&j, "forkwait").unwrap()["n"], 3);
        assert!(phase_after(&j, "absent").is_none());
    }
}
