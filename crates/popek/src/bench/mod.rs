//! `popek bench`: a suite of workloads run under bt, kvm (where this host
//! can), QEMU TCG (on PATH, or fetched) and natively, side by side in one run;
//! the translation cache's counters per workload and a sweep of its size;
//! one table on stdout, JSON and an SVG plot on request.
//!
//! Every figure is a sample the workload measured itself (RDTSC cycles
//! around its loop: the guest's TSC is the host's under every runner) or
//! the host's wall clock at a console line, summarised as min/median/max,
//! and compared as ratios within the same run, because absolute times on
//! shared machines drift from run to run.

mod child;
mod demo;
mod linux;
mod measure;
mod nano;
mod plot;
mod report;
mod runners;
mod sweep;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use measure::{Runner, SweepPoint, Workload};
use runners::Tools;

/// A group of workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Group {
    /// The demo OS's steps (compute, fork+wait, pipe, preemption).
    Demo,
    /// Debian's Linux: boot, and static i386 programs run in it.
    Linux,
    /// The nanobenchmarks of Adams and Agesen (ASPLOS 2006), in a guest of ours.
    Nano,
    /// The translation-cache size sweep over the demo and a Linux boot.
    Sweep,
}

/// Options of `popek bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A short run: fewer repetitions, one Linux flavour, three cache sizes.
    #[arg(long)]
    quick: bool,
    /// Repetitions of each measurement (default 5, or 3 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: Option<u32>,
    /// Run only these groups (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Group>,
    /// Write every result as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw the ratios and the cache-size sweep as SVG to FILE.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// The qemu-system-i386 to compare with (default: the one on PATH).
    #[arg(long, value_name = "PATH", conflicts_with = "no_qemu")]
    qemu: Option<PathBuf>,
    /// Leave QEMU out even if it is installed.
    #[arg(long)]
    no_qemu: bool,
    /// Keep the scratch folder (initrds, bt's statistics of the last run
    /// of each kind) and print where it is.
    #[arg(long)]
    keep: bool,
}

/// One process run of the plan, with the label the progress bar shows.
struct Job {
    label: String,
    run: Box<dyn FnOnce(&mut Bench)>,
}

impl Job {
    fn new(label: impl Into<String>, run: impl FnOnce(&mut Bench) + 'static) -> Job {
        Job {
            label: label.into(),
            run: Box::new(run),
        }
    }
}

/// The state of a benchmark run: tools, results so far, progress.
pub struct Bench {
    tools: Tools,
    /// Repetitions of each measurement.
    runs: usize,
    quick: bool,
    workloads: Vec<Workload>,
    sweep: Vec<SweepPoint>,
    /// Runners a group cannot use on this host, and why (found once).
    unavailable: BTreeMap<(Group, Runner), String>,
    /// Things the reader of the table should know.
    notes: Vec<String>,
    bar: ProgressBar,
}

impl Bench {
    /// The results of `name`, created on first use (table order is first use).
    fn workload(&mut self, name: &str, unit: &'static str) -> &mut Workload {
        let i = match self.workloads.iter().position(|w| w.name == name) {
            Some(i) => i,
            None => {
                self.workloads.push(Workload::new(name, unit));
                self.workloads.len() - 1
            }
        };
        &mut self.workloads[i]
    }

    /// Records a sample.
    fn sample(&mut self, name: &str, unit: &'static str, r: Runner, value: f64) {
        self.workload(name, unit)
            .samples
            .entry(r)
            .or_default()
            .push(value);
    }

    /// Records why `r` has no result for `name` (the first reason stays).
    fn missing(&mut self, name: &str, unit: &'static str, r: Runner, why: impl Into<String>) {
        self.workload(name, unit)
            .missing
            .entry(r)
            .or_insert_with(|| why.into());
    }

    /// A remark printed above the progress bar and kept for the report.
    fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        if !self.notes.contains(&text) {
            self.bar.println(format!("note: {text}"));
            self.notes.push(text);
        }
    }

    /// Why `r` cannot run `group` here, if it was found out already.
    fn unavailable(&self, group: Group, r: Runner) -> Option<&String> {
        self.unavailable.get(&(group, r))
    }

    /// Marks `r` as unable to run `group`, with the reason (noted once).
    fn set_unavailable(&mut self, group: Group, r: Runner, why: String) {
        if self.unavailable.contains_key(&(group, r)) {
            return;
        }
        let name = format!("{group:?}").to_lowercase();
        self.note(format!("{r} cannot run the {name} workloads here: {why}"));
        self.unavailable.insert((group, r), why);
    }

    /// A fresh path in the scratch folder.
    fn scratch(&self, name: &str) -> PathBuf {
        self.tools.tmp.join(name)
    }
}

/// How long any one process may run before it is stopped.
const LIMIT: Duration = Duration::from_secs(300);

/// Runs `popek bench`.
pub fn run(args: &BenchArgs) -> ExitCode {
    match bench(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("popek bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn bench(args: &BenchArgs) -> Result<(), String> {
    let popek = std::env::current_exe().map_err(|e| format!("cannot find popek itself: {e}"))?;
    let (qemu, no_qemu) = match (&args.qemu, args.no_qemu) {
        (_, true) => (None, "QEMU left out (--no-qemu)".to_string()),
        (Some(q), false) => (Some(q.clone()), String::new()),
        (None, false) => match runners::find_qemu() {
            Ok(q) => (Some(q), String::new()),
            Err(why) => (None, format!("no QEMU TCG column: {why}")),
        },
    };
    let tmp = std::env::temp_dir().join(format!("popek-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    // Fail on an unwritable output before minutes of measuring, not after.
    for path in [&args.json, &args.svg].into_iter().flatten() {
        std::fs::File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let quick = args.quick;
    let runs = args.runs.map_or(if quick { 3 } else { 5 }, |r| r as usize);
    let mut b = Bench {
        tools: Tools { popek, qemu, tmp },
        runs,
        quick,
        workloads: Vec::new(),
        sweep: Vec::new(),
        unavailable: BTreeMap::new(),
        notes: Vec::new(),
        bar: ProgressBar::hidden(),
    };
    if b.tools.qemu.is_none() {
        b.note(no_qemu);
    }
    let groups = |g: Group| args.only.is_empty() || args.only.contains(&g);
    let mut jobs = Vec::new();
    if groups(Group::Demo) {
        jobs.extend(demo::jobs(&b));
    }
    if groups(Group::Nano) {
        jobs.extend(nano::jobs(&b));
    }
    if groups(Group::Linux) || groups(Group::Sweep) {
        match linux::Artifacts::find(&mut b) {
            Ok(linux) => {
                if groups(Group::Linux) {
                    jobs.extend(linux::jobs(&b, &linux));
                }
                if groups(Group::Sweep) {
                    jobs.extend(sweep::jobs(&b, Some(&linux)));
                }
            }
            Err(why) => {
                b.note(format!("no Linux workloads: {why}"));
                if groups(Group::Sweep) {
                    jobs.extend(sweep::jobs(&b, None));
                }
            }
        }
    }
    b.bar = ProgressBar::new(jobs.len() as u64);
    b.bar.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    for job in jobs {
        b.bar.set_message(job.label.clone());
        (job.run)(&mut b);
        b.bar.inc(1);
    }
    b.bar.finish_and_clear();
    if args.keep {
        eprintln!(
            "popek bench: the scratch files are in {}",
            b.tools.tmp.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&b.tools.tmp);
    }

    let report = report::Report {
        runs: b.runs,
        quick: b.quick,
        workloads: &b.workloads,
        sweep: &b.sweep,
        notes: &b.notes,
        elapsed: b.bar.elapsed(),
    };
    print!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, report.json())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        plot::draw(path, &report).map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
    }
    Ok(())
}

/// The number in `line` right after `prefix` (digits, one dot).
fn number_after(line: &str, prefix: &str) -> Option<f64> {
    let at = line.find(prefix)? + prefix.len();
    let digits: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    digits.parse().ok()
}

/// The number in `line` right before `suffix`.
fn number_before(line: &str, suffix: &str) -> Option<f64> {
    let end = line.find(suffix)?;
    let start = line[..end]
        .rfind(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or(0, |i| i + 1);
    line[start..end].parse().ok()
}

/// Status of a popek run that could not run the guest on this engine here.
const STATUS_UNSUPPORTED: i32 = 4;

/// Runs `guest` under `r` (bt, kvm or qemu) and returns its output if it
/// ended well (status 0, or 1 for a debug-port exit of 0).
/// A runner that cannot run the group's guests on this host is marked
/// unavailable for the group, so that it is tried once.
fn run_guest(
    b: &mut Bench,
    group: Group,
    r: Runner,
    guest: &runners::GuestRun,
    opts: &runners::BtOptions,
) -> Result<child::Output, String> {
    if let Some(why) = b.unavailable(group, r) {
        return Err(why.clone());
    }
    let mut cmd = match r {
        Runner::Bt | Runner::Kvm => b.tools.popek(r, guest, opts),
        Runner::Qemu => match b.tools.qemu(guest) {
            Ok(Some(cmd)) => cmd,
            Ok(None) => return Err("no QEMU (see the note above)".into()),
            Err(e) => return Err(format!("cannot prepare the kernel for QEMU: {e}")),
        },
        Runner::Native => unreachable!("native runs are programs, not guests"),
    };
    let out = child::run(&mut cmd, LIMIT).map_err(|e| format!("cannot start {r}: {e}"))?;
    // Both popek and QEMU exit with 2v+1 for a write of v to the debug
    // port, and 0 when the guest powers off or halts for good.
    if matches!(out.status, Some(0 | 1)) && !out.timed_out {
        return Ok(out);
    }
    if r == Runner::Kvm {
        // popek's own word that this KVM cannot run the guest, else the
        // guest's (ours say which check failed): either way the group's
        // other guests will not fare better here.
        let why = if out.status == Some(STATUS_UNSUPPORTED) {
            out.stderr
                .lines()
                .next()
                .map(|l| l.trim_start_matches("popek: "))
        } else {
            out.lines_with("FAIL ").next()
        };
        let why = why.map_or_else(|| out.failure(), str::to_string);
        b.set_unavailable(group, r, why.clone());
        return Err(why);
    }
    Err(out.failure())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_around_words() {
        let l = "forkwait: 1000 rounds ok, cycles 1015813780, 1015813 cycles/round";
        assert_eq!(number_before(l, " cycles/round"), Some(1015813.0));
        assert_eq!(number_after(l, "cycles "), Some(1015813780.0));
        assert_eq!(number_after(l, "absent "), None);
        assert_eq!(
            number_before("5.78 cycles/iteration", " cycles/it"),
            Some(5.78)
        );
    }
}
