//! The translation-cache size sweep: the whole demo and a Linux boot to
//! /init under bt at each `--tc-size` from 64 KiB to the largest (three
//! sizes with --quick), with the hit rate, evictions and time at each size
//! (one run per size).

use super::linux::{self, Artifacts};
use super::measure::{Runner, SweepPoint, TcCounters};
use super::runners::{BtOptions, GuestRun, Kernel};
use super::{run_guest, Bench, Group, Job};

const KIB: u32 = 1024;

/// The sizes swept: every power of two from 64 KiB, and the largest.
fn sizes(quick: bool) -> Vec<u32> {
    let max = bt::engine::TC_MAX;
    let mut v: Vec<u32> = (6..)
        .map(|p| (1u32 << p) * KIB)
        .take_while(|&s| s < max)
        .collect();
    v.push(max);
    if quick {
        // Linux boots in ~75 s at 64 KiB (it thrashes): --quick starts at
        // 256 KiB.
        vec![256 * KIB, 1024 * KIB, max]
    } else {
        v
    }
}

pub(super) fn jobs(b: &Bench, linux: Option<&Artifacts>) -> Vec<Job> {
    let mut jobs = Vec::new();
    let boot = linux.map(|l| linux::boot_only_guest(b, l));
    for size in sizes(b.quick) {
        let demo = GuestRun {
            kernel: Kernel::Embedded("demo"),
            initrd: None,
            append: String::new(),
        };
        jobs.push(Job::new(format!("sweep demo {}K", size / KIB), move |b| {
            point(b, "demo", &demo, size, |out| Some(out.elapsed))
        }));
        match &boot {
            Some(Ok(guest)) => {
                let guest = guest.clone();
                jobs.push(Job::new(format!("sweep linux {}K", size / KIB), move |b| {
                    point(b, "linux/boot", &guest, size, linux::init_time)
                }));
            }
            Some(Err(e)) => {
                let e = e.clone();
                jobs.push(Job::new("sweep linux", move |b| {
                    b.note(format!("no Linux sweep: {e}"))
                }));
            }
            None => {}
        }
    }
    jobs
}

fn point(
    b: &mut Bench,
    workload: &str,
    guest: &GuestRun,
    size: u32,
    time: fn(&super::child::Output) -> Option<std::time::Duration>,
) {
    let stats = b.scratch("sweep.json");
    let opts = BtOptions {
        tc_size: Some(size),
        stats_json: Some(stats.clone()),
        ..BtOptions::default()
    };
    let out = match run_guest(b, Group::Sweep, Runner::Bt, guest, &opts) {
        Ok(out) => out,
        Err(why) => return b.note(format!("sweep {workload} at {}K: {why}", size / KIB)),
    };
    let json = std::fs::read_to_string(&stats)
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok());
    let (Some(json), Some(t)) = (json, time(&out)) else {
        return b.note(format!(
            "sweep {workload} at {}K: no statistics",
            size / KIB
        ));
    };
    b.sweep.push(SweepPoint {
        workload: workload.to_string(),
        tc_size: size,
        seconds: t.as_secs_f64(),
        tc: TcCounters::from_json(&json),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_run_from_64k_to_the_largest() {
        let max = bt::engine::TC_MAX;
        let full = sizes(false);
        assert_eq!(full[0], 64 * KIB);
        assert_eq!(*full.last().unwrap(), max);
        assert!(full.windows(2).all(|w| w[0] < w[1]));
        let quick = sizes(true);
        assert_eq!(quick, [256 * KIB, 1024 * KIB, max]);
    }
}
