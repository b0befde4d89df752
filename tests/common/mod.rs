//! Helpers shared by the integration tests: run the popek binary, read
//! what the guest printed, and skip with a reason where the host lacks KVM.

#![allow(dead_code)]

use std::process::{Command, Output, Stdio};

/// What one `popek` run produced.
pub struct Run {
    /// The guest's serial output.
    pub stdout: String,
    /// popek's own messages.
    pub stderr: String,
    /// Process exit status.
    pub status: i32,
}

impl Run {
    /// The whole run, for assertion messages.
    pub fn show(&self) -> String {
        format!(
            "status {}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `popek` with `args`, stdin closed.
pub fn popek(args: &[&str]) -> Run {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_popek"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("popek binary runs");
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        status: out.status.code().unwrap_or(-1),
    }
}

/// True if /dev/kvm can be opened; otherwise prints why the test is skipped.
pub fn kvm_available() -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            eprintln!("skipped: /dev/kvm cannot be opened ({e})");
            false
        }
    }
}

/// Asserts a self-checking guest's verdict: every check line is `ok`, the
/// last line is `PASS n/n` with n the number of checks, and the guest exited
/// through the debug port with 0 (status 1).
pub fn assert_pass(run: &Run) -> usize {
    let lines: Vec<&str> = run.stdout.lines().collect();
    let checks = lines.iter().filter(|l| l.starts_with("ok ")).count();
    let failed: Vec<_> = lines.iter().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        failed.is_empty(),
        "failed checks {failed:?}\n{}",
        run.show()
    );
    assert!(checks > 0, "no checks ran\n{}", run.show());
    let last = lines.last().copied().unwrap_or_default();
    assert_eq!(last, format!("PASS {checks}/{checks}"), "\n{}", run.show());
    assert_eq!(
        run.status,
        1,
        "a passing guest writes 0 to port 0xF4\n{}",
        run.show()
    );
    checks
}
