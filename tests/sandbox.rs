//! The sandbox of a real run, under each engine: a call popek makes on
//! purpose right after confining (`POPEK_SANDBOX_PROBE`) is refused, named
//! on one line and ends the run with status 10; unconfined the same call
//! is harmless and the run would end with the guest's own status. The
//! terminal is still put back at exit, and --stats-json still written,
//! under the sandbox.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

use common::{kvm_available, popek, Run};

const PROBE: &str = "POPEK_SANDBOX_PROBE";

/// The engines that can run here (kvm skipped, with the reason printed,
/// where /dev/kvm cannot be opened).
fn engines() -> Vec<&'static str> {
    let mut e = vec!["bt"];
    if kvm_available() {
        e.push("kvm");
    }
    e
}

/// Runs the `hello` guest under `engine` with `probe`.
fn probed(engine: &str, probe: &str) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_popek"))
        .args(["run", "--engine", engine, "--guest", "hello"])
        .env(PROBE, probe)
        .stdin(Stdio::null())
        .output()
        .expect("popek binary runs");
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        status: out.status.code().unwrap_or(-1),
    }
}

fn line(what: &str, thread: &str) -> String {
    format!(
        "popek: the sandbox refused {what} on thread {thread}; this is a popek bug, please report it\n"
    )
}

#[test]
fn a_refused_call_names_itself_and_exits_10() {
    for engine in engines() {
        for (probe, what, thread) in [
            // On no list.
            ("openat", "system call 257 (openat)", "popek"),
            // An allowed call with a refused request (TIOCSTI).
            ("ioctl", "system call 16 (ioctl)", "popek"),
            // Executable memory above 4 GiB: the sandbox's prefix (bt) or
            // the KVM engine's list, which allows none.
            ("mprotect", "system call 10 (mprotect)", "popek"),
            // `int 0x80` from host code: never a guest call.
            ("i386", "i386 system call 20", "popek"),
            // Another thread than the vCPU's, started before confining.
            ("openat@thread", "system call 257 (openat)", "popek-probe"),
        ] {
            let run = probed(engine, probe);
            assert_eq!(run.status, 10, "{engine} {probe}\n{}", run.show());
            assert_eq!(
                run.stderr,
                line(what, thread),
                "{engine} {probe}: exactly the one line\n{}",
                run.show()
            );
            // The probe ran after the guest was set up, before it printed.
            assert!(!run.stdout.contains("PASS"), "{}", run.show());
        }
    }
}

#[test]
fn without_a_probe_the_run_is_the_guests() {
    for engine in engines() {
        let run = popek(&["run", "--engine", engine, "--guest", "hello"]);
        assert_eq!(run.status, 1, "{engine}\n{}", run.show());
        assert!(!run.stderr.contains("sandbox"), "{}", run.show());
    }
}

#[test]
fn an_unknown_probe_is_an_error_not_a_pass() {
    let run = probed("bt", "chmod");
    assert_ne!(run.status, 1, "{}", run.show());
    assert!(run.stderr.contains(PROBE), "{}", run.show());
}

#[test]
fn stats_json_is_written_under_the_sandbox() {
    for engine in engines() {
        let path = std::env::temp_dir().join(format!(
            "popek-sandbox-{engine}-{}.json",
            std::process::id()
        ));
        let p = path.to_str().unwrap();
        let run = popek(&[
            "run",
            "--engine",
            engine,
            "--guest",
            "hello",
            "--stats-json",
            p,
        ]);
        let json = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::remove_file(&path).ok();
        assert_eq!(run.status, 1, "{engine}\n{}", run.show());
        assert!(json.starts_with('{') && json.ends_with("}\n"), "{json:?}");
        if engine == "bt" {
            assert!(json.contains("\"engine\":\"bt\""), "{json}");
        }
    }
}

/// A new pseudo-terminal: (master, slave).
fn pty() -> (OwnedFd, OwnedFd) {
    // SAFETY: posix_openpt, grantpt, unlockpt and ptsname_r on a
    // descriptor we own; the path buffer is ours and NUL-terminated by
    // ptsname_r; each returned descriptor is owned once.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(master >= 0, "posix_openpt");
        let master = OwnedFd::from_raw_fd(master);
        assert_eq!(libc::grantpt(master.as_raw_fd()), 0);
        assert_eq!(libc::unlockpt(master.as_raw_fd()), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(
            libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()),
            0
        );
        let slave = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        assert!(slave >= 0, "open the pty slave");
        (master, OwnedFd::from_raw_fd(slave))
    }
}

fn modes(fd: &OwnedFd) -> libc::termios {
    // SAFETY: a zeroed termios is plain data; tcgetattr fills it.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(fd.as_raw_fd(), &mut t), 0);
        t
    }
}

/// A guest that runs for seconds under `engine` (debug build), to type at.
fn long_guest(engine: &str) -> &'static str {
    match engine {
        "bt" => "demo",
        _ => "tc",
    }
}

#[test]
fn the_terminal_is_raw_while_confined_takes_ctrl_a_x_and_is_put_back() {
    use std::io::Write;
    for engine in engines() {
        let (master, slave) = pty();
        let before = modes(&slave);
        assert_ne!(before.c_lflag & libc::ICANON, 0, "a fresh pty is cooked");
        let mut child = Command::new(env!("CARGO_BIN_EXE_popek"))
            .args(["run", "--engine", engine, "--guest", long_guest(engine)])
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("popek binary runs");
        // Raw mode comes before the engine confines the process; typing
        // once it is raw reaches the stdin reader, which runs confined.
        let mut raw = false;
        for _ in 0..2000 {
            if modes(&slave).c_lflag & libc::ICANON == 0 {
                raw = true;
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        if raw {
            std::fs::File::from(master.try_clone().unwrap())
                .write_all(b"\x01x")
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let after = modes(&slave);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(raw, "{engine}: the terminal never went raw: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{engine}: {stderr}");
        assert_eq!(stderr, "popek: quit\n", "{engine}");
        assert_eq!(
            (after.c_lflag, after.c_iflag, after.c_oflag),
            (before.c_lflag, before.c_iflag, before.c_oflag),
            "{engine}: the terminal's modes were not restored"
        );
    }
}

#[test]
fn a_refused_call_puts_the_terminal_back() {
    for engine in engines() {
        let (_master, slave) = pty();
        let before = modes(&slave);
        let out = Command::new(env!("CARGO_BIN_EXE_popek"))
            .args(["run", "--engine", engine, "--guest", "hello"])
            .env(PROBE, "openat")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .output()
            .expect("popek binary runs");
        let after = modes(&slave);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(10), "{engine}: {stderr}");
        assert_eq!(stderr, line("system call 257 (openat)", "popek"));
        // The probe ran in raw mode and ended the process from the SIGSYS
        // handler: only the report can have put the modes back.
        assert_eq!(
            (after.c_lflag, after.c_iflag, after.c_oflag),
            (before.c_lflag, before.c_iflag, before.c_oflag),
            "{engine}: the terminal's modes were not restored"
        );
    }
}
