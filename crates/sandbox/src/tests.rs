//! The allowlists' answers, read with the BPF interpreter, and the real
//! filter in child processes (confining is for the whole process and for
//! good, so each such test re-executes this test binary filtered to
//! itself).

use std::process::{Command, Output};

use seccompiler::sock_filter;

use crate::bpf::{run, SeccompData};
use crate::*;

const TRAP: u32 = libc::SECCOMP_RET_TRAP;
const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const GIB4: u64 = 1 << 32;

/// The prefix followed by "allow everything": what the prefix alone lets
/// through to seccompiler's part.
fn prefix_then_allow() -> Vec<sock_filter> {
    let mut p = prefix::program();
    p.push(sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: ALLOW,
    });
    p
}

fn mmap(addr: u64, len: u64, prot: i32, flags: i32, fd: i32) -> SeccompData {
    SeccompData::x86_64(
        libc::SYS_mmap,
        &[addr, len, prot as u64, flags as u64, fd as u32 as u64, 0],
    )
}

fn mprotect(addr: u64, len: u64, prot: i32) -> SeccompData {
    SeccompData::x86_64(libc::SYS_mprotect, &[addr, len, prot as u64])
}

const RW: i32 = libc::PROT_READ | libc::PROT_WRITE;
const RX: i32 = libc::PROT_READ | libc::PROT_EXEC;
const ANON: i32 = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
const FIXED: i32 = libc::MAP_SHARED | libc::MAP_FIXED;

#[test]
fn the_prefix_traps_i386_calls_whatever_the_number() {
    let p = prefix_then_allow();
    for nr in [1, 4, 20, 252] {
        let data = SeccompData {
            arch: 0x4000_0003,
            ..SeccompData::x86_64(nr, &[])
        };
        assert_eq!(run(&p, &data), TRAP, "i386 call {nr}");
    }
    assert_eq!(run(&p, &SeccompData::x86_64(libc::SYS_write, &[1])), ALLOW);
}

#[test]
fn the_prefix_keeps_executable_and_fixed_ranges_below_4_gib() {
    let p = prefix_then_allow();
    let fd = 5;
    // Guest RAM and the monitor region: inside, or ending exactly at 4 GiB.
    assert_eq!(run(&p, &mmap(0x1000, 0x0FFF_F000, RX, FIXED, fd)), ALLOW);
    assert_eq!(run(&p, &mmap(0xFFC0_0000, 0x40_0000, RX, FIXED, fd)), ALLOW);
    assert_eq!(run(&p, &mprotect(0xFFC0_0000, 0x40_0000, RX)), ALLOW);
    // Crossing 4 GiB, or above it: refused, executable or fixed.
    assert_eq!(run(&p, &mmap(0xFFC0_0000, 0x40_1000, RX, FIXED, fd)), TRAP);
    assert_eq!(run(&p, &mprotect(0xFFFF_F000, 0x2000, RX)), TRAP);
    assert_eq!(run(&p, &mprotect(GIB4, 0x1000, RX)), TRAP);
    assert_eq!(run(&p, &mprotect(0x1000, GIB4, RX)), TRAP);
    assert_eq!(run(&p, &mmap(0x5555_0000_0000, 0x1000, RX, ANON, -1)), TRAP);
    assert_eq!(
        run(
            &p,
            &mmap(0x5555_0000_0000, 0x1000, RW, ANON | libc::MAP_FIXED, -1)
        ),
        TRAP
    );
    // An executable mapping wherever the kernel likes: the hint is
    // checked, so NULL passes the prefix (the rules refuse it).
    assert_eq!(run(&p, &mmap(0, 0x1000, RX, ANON, -1)), ALLOW);
    // Neither executable nor fixed: not the prefix's business.
    assert_eq!(run(&p, &mmap(0, 0x1000, RW, ANON, -1)), ALLOW);
    assert_eq!(run(&p, &mprotect(0x7F00_0000_0000, 0x1000, RW)), ALLOW);
}

fn common() -> Vec<sock_filter> {
    let p = Allowlist::common_for(1234, &[7]).program().unwrap();
    assert!(p.len() < 512, "{} instructions run on every call", p.len());
    p
}

#[test]
fn the_common_list_allows_what_every_popek_thread_does() {
    let p = common();
    let allowed = [
        SeccompData::x86_64(libc::SYS_write, &[1]),
        SeccompData::x86_64(libc::SYS_write, &[2]),
        SeccompData::x86_64(libc::SYS_write, &[7]),
        SeccompData::x86_64(libc::SYS_read, &[0]),
        SeccompData::x86_64(libc::SYS_ioctl, &[0, libc::TCGETS]),
        SeccompData::x86_64(libc::SYS_ioctl, &[0, libc::TCSETS]),
        SeccompData::x86_64(libc::SYS_tgkill, &[1234, 1235, libc::SIGALRM as u64]),
        SeccompData::x86_64(libc::SYS_prctl, &[libc::PR_GET_NAME as u64]),
        SeccompData::x86_64(libc::SYS_fcntl, &[3, libc::F_GETFD as u64]),
        SeccompData::x86_64(libc::SYS_madvise, &[0, 0, libc::MADV_DONTNEED as u64]),
        SeccompData::x86_64(libc::SYS_mremap, &[0x7F00_0000_0000, 1, 2, 1]),
        SeccompData::x86_64(libc::SYS_restart_syscall, &[]),
        SeccompData::x86_64(libc::SYS_futex, &[]),
        SeccompData::x86_64(libc::SYS_exit, &[]),
        SeccompData::x86_64(libc::SYS_exit_group, &[]),
        mmap(0, 64 << 20, libc::PROT_NONE, ANON | libc::MAP_NORESERVE, -1),
        mmap(0, 0x1000, RW, ANON, -1),
        mprotect(0x7F00_0000_0000, 0x1000, RW),
    ];
    for data in allowed {
        assert_eq!(run(&p, &data), ALLOW, "{data:?}");
    }
}

#[test]
fn the_common_list_refuses_the_rest_and_the_wrong_arguments() {
    let p = common();
    let refused = [
        // Calls on no list.
        SeccompData::x86_64(libc::SYS_openat, &[]),
        SeccompData::x86_64(libc::SYS_clone3, &[]),
        SeccompData::x86_64(libc::SYS_rseq, &[]),
        SeccompData::x86_64(libc::SYS_sched_getaffinity, &[]),
        SeccompData::x86_64(libc::SYS_socket, &[]),
        SeccompData::x86_64(libc::SYS_execve, &[]),
        SeccompData::x86_64(libc::SYS_kill, &[1234, 9]),
        SeccompData::x86_64(libc::SYS_ptrace, &[]),
        SeccompData::x86_64(libc::SYS_prlimit64, &[]),
        // The x32 ABI's write: the same arch, another number.
        SeccompData::x86_64(libc::SYS_write | 0x4000_0000, &[1]),
        // Allowed calls, wrong arguments.
        SeccompData::x86_64(libc::SYS_write, &[0]),
        SeccompData::x86_64(libc::SYS_write, &[3]),
        SeccompData::x86_64(libc::SYS_write, &[(1u64 << 32) | 8]),
        SeccompData::x86_64(libc::SYS_read, &[3]),
        SeccompData::x86_64(libc::SYS_ioctl, &[0, libc::TIOCSTI]),
        SeccompData::x86_64(libc::SYS_ioctl, &[1, libc::TCSETS]),
        SeccompData::x86_64(libc::SYS_tgkill, &[1, 1, 9]),
        SeccompData::x86_64(libc::SYS_prctl, &[libc::PR_SET_NAME as u64]),
        SeccompData::x86_64(libc::SYS_fcntl, &[3, libc::F_DUPFD_CLOEXEC as u64]),
        SeccompData::x86_64(libc::SYS_fcntl, &[3, libc::F_SETFL as u64]),
        SeccompData::x86_64(libc::SYS_madvise, &[0, 0, libc::MADV_REMOVE as u64]),
        SeccompData::x86_64(libc::SYS_mremap, &[0x10_0000, 1, 2, 1]),
        SeccompData::x86_64(
            libc::SYS_mremap,
            &[
                0x7F00_0000_0000,
                1,
                2,
                (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
            ],
        ),
        // No executable memory at all, below 4 GiB or not; no file
        // mappings.
        mmap(0x10_0000, 0x1000, RX, ANON | libc::MAP_FIXED, -1),
        mmap(0, 0x1000, RX, ANON, -1),
        mmap(0, 0x1000, RW, libc::MAP_SHARED, 3),
        mprotect(0x10_0000, 0x1000, RX),
        mprotect(0x7F00_0000_0000, 0x1000, RX),
    ];
    for data in refused {
        assert_eq!(run(&p, &data), TRAP, "{data:?}");
    }
}

#[test]
fn allow_with_any_arguments_outranks_rules() {
    let mut l = Allowlist::common_for(1, &[]);
    l.allow(libc::SYS_mprotect);
    l.allow_if(libc::SYS_mprotect, [arg_is(0, 0)]);
    let p = l.program().unwrap();
    assert_eq!(run(&p, &mprotect(0x10_0000, 0x1000, RX)), ALLOW);
    // The prefix still holds executable memory below 4 GiB.
    assert_eq!(run(&p, &mprotect(0x7F00_0000_0000, 0x1000, RX)), TRAP);
}

// The real filter, in child processes.

const CHILD_ENV: &str = "POPEK_SANDBOX_CHILD";

fn is_child(name: &str) -> bool {
    std::env::var(CHILD_ENV).as_deref() == Ok(name)
}

/// Runs the test `name` of this binary in a child process with `env`.
fn child(name: &str, env: &[(&str, &str)]) -> Output {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .envs(env.iter().copied())
        .output()
        .expect("spawn the child test process");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// In the child: a worker thread started and waited for, the common list
/// with the SIGSYS report, then the probe the environment asks for (if
/// any); the worker exits under the filter and so does the process.
#[test]
fn confined_child() {
    if !is_child("tests::confined_child") {
        return;
    }
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::Builder::new()
        .name("sbx-worker".into())
        .spawn(move || {
            ready_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            // Some work under the filter: memory, a lock, output.
            let v: Vec<u64> = (0..100_000).collect();
            eprintln!("worker sum {}", v.iter().sum::<u64>());
        })
        .unwrap();
    ready_rx.recv().unwrap();
    install_reporter().unwrap();
    Allowlist::common().confine().unwrap();
    go_tx.send(()).unwrap();
    worker.join().unwrap();
    eprintln!("confined child done");
}

/// In the child: a panic under the filter, on a worker thread and then on
/// the test's own thread.
#[test]
fn confined_panic_child() {
    if !is_child("tests::confined_panic_child") {
        return;
    }
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::Builder::new()
        .name("sbx-worker".into())
        .spawn(move || {
            ready_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            panic!("worker panics on purpose");
        })
        .unwrap();
    ready_rx.recv().unwrap();
    install_reporter().unwrap();
    Allowlist::common().confine().unwrap();
    go_tx.send(()).unwrap();
    assert!(worker.join().is_err());
    panic!("main panics on purpose");
}

#[test]
fn a_panic_under_the_filter_prints_its_message() {
    let out = child("tests::confined_panic_child", &[("RUST_BACKTRACE", "0")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // libtest reports the failed test and exits 101.
    assert_eq!(out.status.code(), Some(101), "{stderr}");
    assert!(
        stderr.contains("panicked at") && stderr.contains("worker panics on purpose"),
        "{stderr}"
    );
    assert!(stderr.contains("main panics on purpose"), "{stderr}");
    assert!(stdout.contains("1 failed"), "{stdout}");
    assert!(!stderr.contains("refused"), "{stderr}");
}

/// In the child: the probe the environment asks for, without a filter.
#[test]
fn unconfined_child() {
    if !is_child("tests::unconfined_child") {
        return;
    }
    probe::Probe::from_env().unwrap().make();
    eprintln!("unconfined child done");
}

#[test]
fn confined_threads_work_and_exit_and_the_process_exits() {
    let out = child("tests::confined_child", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("worker sum 4999950000"), "{stderr}");
    assert!(stderr.contains("confined child done"), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the child did not run the test"
    );
}

/// The child's one report line for `probe`, after checking its status.
fn refusal(probe: &str) -> String {
    let out = child("tests::confined_child", &[(probe::VAR, probe)]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(10), "{probe}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("sandbox")).collect();
    assert_eq!(lines.len(), 1, "{probe}: {stderr}");
    assert!(!stderr.contains("confined child done"), "{stderr}");
    lines[0].to_owned()
}

#[test]
fn a_refused_call_is_named_with_its_thread_and_exits_10() {
    let want = |what: &str, thread: &str| {
        format!(
            "popek: the sandbox refused {what} on thread {thread}; this is a popek bug, please report it"
        )
    };
    assert_eq!(
        refusal("openat@thread"),
        want("system call 257 (openat)", "popek-probe")
    );
    assert_eq!(
        refusal("ioctl@thread"),
        want("system call 16 (ioctl)", "popek-probe")
    );
    // On the test's own thread, whose name libtest chose.
    let line = refusal("mprotect");
    assert!(
        line.starts_with("popek: the sandbox refused system call 10 (mprotect) on thread "),
        "{line}"
    );
    assert_eq!(
        refusal("i386@thread"),
        want("i386 system call 20", "popek-probe")
    );
}

#[test]
fn unconfined_the_probes_are_harmless() {
    for probe in ["openat", "ioctl", "mprotect@thread", "i386"] {
        let out = child("tests::unconfined_child", &[(probe::VAR, probe)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{probe}: {stderr}");
        assert!(stderr.contains("unconfined child done"), "{stderr}");
    }
}
