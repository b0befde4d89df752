//! The nanobenchmarks of Adams and Agesen (ASPLOS 2006) in our guest
//! `nanobench`: one boot measures them all, each line reading
//! `nano NAME: CYCLES cycles/iter (N iters)` or `nano NAME: n/a (why)`.

use super::measure::Runner;
use super::runners::{BtOptions, GuestRun, Kernel};
use super::{number_before, run_guest, Bench, Group, Job};

const UNIT: &str = "cycles/iteration";

pub(super) fn jobs(b: &Bench) -> Vec<Job> {
    let mut jobs = Vec::new();
    for run in 0..b.runs {
        for r in [Runner::Bt, Runner::Kvm, Runner::Qemu] {
            let label = format!("nano {r} {}/{}", run + 1, b.runs);
            jobs.push(Job::new(label, move |b| boot(b, r)));
        }
    }
    jobs
}

fn boot(b: &mut Bench, r: Runner) {
    let guest = GuestRun {
        kernel: Kernel::Embedded("nanobench"),
        initrd: None,
        append: String::new(),
    };
    let out = match run_guest(b, Group::Nano, r, &guest, &BtOptions::default()) {
        Ok(out) => out,
        // A runner that cannot run the group at all was noted already.
        Err(_) if b.unavailable(Group::Nano, r).is_some() => return,
        Err(why) => return b.note(format!("nanobench under {r}: {why}")),
    };
    let lines: Vec<String> = out.lines_with("nano ").map(str::to_string).collect();
    if lines.is_empty() {
        return b.note(format!(
            "nanobench under {r} printed no results: {}",
            out.failure()
        ));
    }
    for line in lines {
        let Some((name, rest)) = line["nano ".len()..].split_once(':') else {
            continue;
        };
        let name = format!("nano/{name}");
        match number_before(rest, " cycles/iter") {
            Some(v) => b.sample(&name, UNIT, r, v),
            None => b.missing(&name, UNIT, r, rest.trim().to_string()),
        }
    }
}
