//! Every embedded guest, many times, two popek processes at a time, under
//! each engine that runs it here: each run must end with the guest's own
//! status. This is what caught popek killing itself with its own seccomp
//! filter (status 159, SIGSYS, no message) in about one run in forty: a
//! thread still starting when the process was confined. The race is at
//! start-up, so the short guests run most often.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use common::kvm_available;

/// One kind of run: engine, guest, `--append`, the status it must end
/// with, and how many times to run it.
struct Case {
    engine: &'static str,
    guest: &'static str,
    append: Option<&'static str>,
    status: i32,
    times: usize,
}

const fn case(engine: &'static str, guest: &'static str, status: i32, times: usize) -> Case {
    Case {
        engine,
        guest,
        append: None,
        status,
        times,
    }
}

const fn hostile(engine: &'static str, attack: &'static str, times: usize) -> Case {
    Case {
        engine,
        guest: "hostile",
        append: Some(attack),
        status: 1,
        times,
    }
}

/// The BT engine runs every guest. Self-checking guests end with 1, the
/// demo with 0 (it resets the machine); of the hostile guest's scenarios
/// only d (guest `int 0x80`) passes, the others are stopped on purpose
/// (tests/bt.rs). Times are sized for about 20 s on 2 cores, debug build.
const BT: &[Case] = &[
    case("bt", "demo", 0, 2),
    case("bt", "paging", 1, 4),
    case("bt", "pae", 1, 4),
    case("bt", "tc", 1, 4),
    case("bt", "sensitive", 1, 4),
    case("bt", "interrupts", 1, 4),
    case("bt", "hello", 1, 20),
    case("bt", "usermode", 1, 20),
    case("bt", "bzhello", 1, 20),
    case("bt", "mmio", 1, 4),
    hostile("bt", "attack=d", 20),
];

/// The KVM engine runs the non-paged guests here (kvm-pvm: no paging; the
/// `usermode` guest's ring-3 `int 0x80` becomes #UD; README). The hostile
/// guest's scenarios a-c get architectural faults under KVM and pass.
const KVM: &[Case] = &[
    case("kvm", "tc", 1, 2),
    case("kvm", "sensitive", 1, 4),
    case("kvm", "interrupts", 1, 4),
    case("kvm", "hello", 1, 20),
    case("kvm", "bzhello", 1, 12),
    case("kvm", "mmio", 1, 4),
    hostile("kvm", "attack=a", 8),
    hostile("kvm", "attack=b", 8),
    hostile("kvm", "attack=c", 8),
];

/// How one run ended: its status (or the signal that killed it), and
/// stderr.
fn run(c: &Case) -> (String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_popek"));
    cmd.args(["run", "--engine", c.engine, "--guest", c.guest]);
    if let Some(a) = c.append {
        cmd.args(["--append", a]);
    }
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("popek binary runs");
    let ended = match (out.status.code(), out.status.signal()) {
        (Some(code), _) => format!("status {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => format!("{:?}", out.status),
    };
    (ended, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn every_guest_many_times_two_at_a_time() {
    let start = Instant::now();
    let mut cases: Vec<&Case> = BT.iter().collect();
    if kvm_available() {
        cases.extend(KVM);
    }
    // The long runs first, so the two workers finish together; within a
    // kind, runs of different guests alternate.
    let rounds = cases.iter().map(|c| c.times).max().unwrap_or(0);
    let mut queue: Vec<&Case> = Vec::new();
    for round in 0..rounds {
        queue.extend(cases.iter().filter(|c| round < c.times));
    }
    queue.reverse();
    let total = queue.len();
    let queue = Mutex::new(queue);
    let results: Mutex<BTreeMap<String, (usize, Option<String>)>> = Mutex::new(BTreeMap::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let Some(c) = queue.lock().unwrap().pop() else {
                    return;
                };
                let (ended, stderr) = run(c);
                let key = format!(
                    "{} {}{} -> {ended}",
                    c.engine,
                    c.guest,
                    c.append.map(|a| format!(" {a}")).unwrap_or_default()
                );
                let ok = ended == format!("status {}", c.status) && !stderr.contains("sandbox");
                let mut r = results.lock().unwrap();
                let entry = r.entry(key).or_insert((0, None));
                entry.0 += 1;
                if !ok && entry.1.is_none() {
                    entry.1 = Some(stderr);
                }
            });
        }
    });
    let results = results.into_inner().unwrap();
    let mut report = String::new();
    let mut failed = 0;
    for (key, (n, stderr)) in &results {
        report += &format!("{n:4} {key}\n");
        if let Some(e) = stderr {
            failed += n;
            report += &format!("     first stderr: {e:?}\n");
        }
    }
    eprintln!(
        "{total} runs in {:.1} s, two at a time:\n{report}",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(
        results.values().map(|(n, _)| n).sum::<usize>(),
        total,
        "{report}"
    );
    assert_eq!(
        failed, 0,
        "{failed} of {total} runs did not end with the guest's status\n{report}"
    );
}
