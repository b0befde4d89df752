//! The `nanobench` guest (Adams and Agesen's nanobenchmarks): every
//! benchmark prints `nano NAME: CYCLES cycles/iter (ITERS iters)` with a
//! positive count, its checks pass, and `iters=` and `only=` do what they
//! say. The numbers themselves are never compared: this is a test of the
//! benchmark, not a timed test.

mod common;

use common::{assert_pass, kvm_available, popek, Run};

/// Every benchmark, in the order the guest runs them.
const BENCHMARKS: &[&str] = &[
    "syscall", "sysenter", "in", "cr8wr", "callret", "pgfault", "divzero", "ptemod",
];

/// What one `nano` line said: cycles per iteration (None for `n/a`) and
/// the iteration count.
#[derive(Debug, PartialEq)]
struct Result {
    name: String,
    cycles: Option<u64>,
    iters: Option<u64>,
}

/// One `nano` line without its prefix, or None if it has another shape.
fn parse(rest: &str) -> Option<Result> {
    let (name, value) = rest.split_once(": ")?;
    if value.starts_with("n/a (") && value.ends_with(')') {
        return Some(Result {
            name: name.into(),
            cycles: None,
            iters: None,
        });
    }
    let (cycles, iters) = value
        .strip_suffix(" iters)")?
        .split_once(" cycles/iter (")?;
    Some(Result {
        name: name.into(),
        cycles: Some(cycles.parse().ok()?),
        iters: Some(iters.parse().ok()?),
    })
}

/// The `nano NAME: ...` lines of a run, parsed strictly; a line that
/// starts with `nano ` but has another shape fails the test.
fn results(run: &Run) -> Vec<Result> {
    run.stdout
        .lines()
        .filter_map(|line| line.strip_prefix("nano "))
        .map(|rest| {
            parse(rest).unwrap_or_else(|| panic!("malformed line `nano {rest}`\n{}", run.show()))
        })
        .collect()
}

/// Asserts that the run measured exactly `names`, in order, each with a
/// positive cycle count over `iters` iterations, except that `cr8wr` may
/// be `n/a` (no local APIC) and `sysenter` too (no SEP in CPUID: bt's
/// default on AMD hosts), and that the guest passed its checks.
fn assert_measured(run: &Run, names: &[&str], iters: u64) {
    let got = results(run);
    let got_names: Vec<&str> = got.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(got_names, names, "\n{}", run.show());
    for r in &got {
        if (r.name == "cr8wr" || r.name == "sysenter") && r.cycles.is_none() {
            continue;
        }
        assert!(
            r.cycles.is_some_and(|c| c > 0),
            "{r:?} is not a positive cycle count\n{}",
            run.show()
        );
        assert_eq!(r.iters, Some(iters), "\n{}", run.show());
    }
    assert_pass(run);
}

fn run(engine: &str, append: &str) -> Run {
    popek(&[
        "run",
        "--engine",
        engine,
        "--guest",
        "nanobench",
        "--append",
        append,
    ])
}

#[test]
fn every_benchmark_runs_and_checks_itself_under_bt() {
    let run = run("bt", "iters=300");
    assert_measured(&run, BENCHMARKS, 300);
    // popek has a local APIC, so the TPR (CR8's 32-bit counterpart) is
    // measured rather than reported n/a.
    let cr8wr = results(&run).into_iter().find(|r| r.name == "cr8wr");
    assert!(
        cr8wr.and_then(|r| r.cycles).is_some(),
        "cr8wr was not measured\n{}",
        run.show()
    );
}

#[test]
fn sysenter_is_measured_where_sep_is_advertised_and_not_otherwise() {
    let on = popek(&[
        "run",
        "--guest",
        "nanobench",
        "--sep",
        "on",
        "--append",
        "only=sysenter iters=200",
    ]);
    assert_measured(&on, &["sysenter"], 200);
    assert!(
        results(&on)[0].cycles.is_some(),
        "sysenter was not measured\n{}",
        on.show()
    );
    let off = popek(&[
        "run",
        "--guest",
        "nanobench",
        "--sep",
        "off",
        "--append",
        "only=sysenter",
    ]);
    assert!(
        off.stdout.contains("nano sysenter: n/a (no SEP in CPUID)"),
        "{}",
        off.show()
    );
    assert_pass(&off);
}

#[test]
fn only_runs_one_benchmark() {
    let run = run("bt", "only=pgfault iters=50");
    assert_measured(&run, &["pgfault"], 50);
}

#[test]
fn default_iteration_counts_are_used_without_iters() {
    let run = run("bt", "only=callret");
    let got = results(&run);
    assert_eq!(got.len(), 1, "\n{}", run.show());
    assert!(got[0].iters.is_some_and(|n| n > 1000), "\n{}", run.show());
    assert_pass(&run);
}

#[test]
fn bad_arguments_fail_the_run() {
    for append in ["iters=0", "iters=12x", "only=nosuch"] {
        let run = run("bt", append);
        assert!(results(&run).is_empty(), "{append}\n{}", run.show());
        assert!(
            run.stdout.lines().any(|l| l.starts_with("FAIL ")),
            "{append}\n{}",
            run.show()
        );
        assert_eq!(run.status, 3, "{append}\n{}", run.show());
    }
}

#[test]
fn every_benchmark_runs_under_kvm_where_kvm_can_page() {
    if !kvm_available() {
        return;
    }
    let run = run("kvm", "iters=100");
    // A host whose KVM cannot run a paged 32-bit guest: popek stops with
    // status 4 and says why, or (with the guest's IDT already loaded) the
    // guest gets #GP for its MOV to CR0 and says so itself.
    if run.status == 4 {
        let why = run.stderr.lines().next().unwrap_or_default();
        eprintln!("skipped under kvm: {why}");
        return;
    }
    if let Some(why) = run
        .stdout
        .lines()
        .find(|l| l.contains("this virtual CPU cannot run a paged guest"))
    {
        eprintln!("skipped under kvm: {why}");
        return;
    }
    assert_measured(&run, BENCHMARKS, 100);
}
