//! The demo OS's steps: each step boots the demo alone (`run=STEP`) under
//! each runner; the figure is the one the step prints (RDTSC cycles).

use super::measure::{Runner, TcCounters};
use super::runners::{BtOptions, GuestRun, Kernel};
use super::{number_after, number_before, run_guest, Bench, Group, Job};

/// Console lines of the demo's init that start a step (bt phase marks).
const STEP_MARK: &str = "init: step ";

/// A demo step, the unit of its figure, and how to read the figure from
/// the step's line.
struct Step {
    name: &'static str,
    unit: &'static str,
    figure: fn(&str) -> Option<f64>,
}

const STEPS: [Step; 4] = [
    Step {
        name: "compute",
        unit: "cycles/iteration",
        figure: |l| number_before(l, " cycles/iteration"),
    },
    Step {
        name: "forkwait",
        unit: "cycles/round",
        figure: |l| number_before(l, " cycles/round"),
    },
    Step {
        name: "pipe",
        unit: "cycles/message",
        // "... in 512 messages of 256, ... cycles N": per 256-byte message.
        figure: |l| Some(number_after(l, "cycles ")? / number_after(l, " in ")?),
    },
    Step {
        name: "preempt",
        unit: "cycles/iteration",
        // "... ran N compute iterations each ... cycles A and B": the
        // slower of the two preempted processes, per iteration.
        figure: |l| {
            let a = number_after(l, "cycles ")?;
            let b = number_after(l, " and ")?;
            Some(a.max(b) / number_after(l, " ran ")?)
        },
    },
];

/// The demo's jobs: every step under bt, kvm and QEMU, runs interleaved so
/// that host drift hits every runner alike.
pub(super) fn jobs(b: &Bench) -> Vec<super::Job> {
    let mut jobs = Vec::new();
    for run in 0..b.runs {
        for (i, _) in STEPS.iter().enumerate() {
            for r in [Runner::Bt, Runner::Kvm, Runner::Qemu] {
                let label = format!("demo/{} {r} {}/{}", STEPS[i].name, run + 1, b.runs);
                jobs.push(Job::new(label, move |b| step(b, &STEPS[i], r, run == 0)));
            }
        }
        let label = format!("demo/compute native {}/{}", run + 1, b.runs);
        jobs.push(Job::new(label, |b| {
            let name = "demo/compute";
            match super::linux::native_compute(b, COMPUTE_ITERATIONS) {
                Ok(v) => b.sample(name, STEPS[0].unit, Runner::Native, v),
                Err(why) => b.missing(name, STEPS[0].unit, Runner::Native, why),
            }
        }));
    }
    jobs
}

/// The iterations of the demo's compute step (guests/demo/user/compute.c).
const COMPUTE_ITERATIONS: u32 = 60_000_000;

fn step(b: &mut Bench, s: &Step, r: Runner, first: bool) {
    let name = format!("demo/{}", s.name);
    let guest = GuestRun {
        kernel: Kernel::Embedded("demo"),
        initrd: None,
        append: format!("run={}", s.name),
    };
    let stats = b.scratch(&format!("demo-{}.json", s.name));
    let opts = BtOptions {
        mark_lines: Some(STEP_MARK),
        stats_json: Some(stats.clone()),
        ..BtOptions::default()
    };
    let out = match run_guest(b, Group::Demo, r, &guest, &opts) {
        Ok(out) => out,
        Err(why) => return b.missing(&name, s.unit, r, why),
    };
    let prefix = format!("{}:", s.name);
    let Some((_, line)) = out.line(&prefix) else {
        return b.missing(
            &name,
            s.unit,
            r,
            format!("no {prefix} line: {}", out.failure()),
        );
    };
    match (s.figure)(line) {
        Some(v) if line.contains(" ok") => b.sample(&name, s.unit, r, v),
        _ => {
            return b.missing(
                &name,
                s.unit,
                r,
                format!("a failed or unreadable step: {line}"),
            )
        }
    }
    if r == Runner::Bt && first {
        if let Some(tc) = step_counters(&stats, s.name) {
            b.workload(&name, s.unit).tc = Some(tc);
        }
    }
}

/// bt's counters of the phase that began at the step's mark.
fn step_counters(stats: &std::path::Path, step: &str) -> Option<TcCounters> {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(stats).ok()?).ok()?;
    super::linux::phase_after(&json, step).map(TcCounters::from_json)
}
