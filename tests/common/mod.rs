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
    let checks = assert_checks_pass(run);
    assert_eq!(
        run.status,
        1,
        "a passing guest writes 0 to port 0xF4\n{}",
        run.show()
    );
    checks
}

/// Asserts the checks of a self-checking guest, whatever its exit: every
/// check line is `ok`, at least one ran, and the last line is `PASS n/n`
/// with n the number of checks. Returns n.
pub fn assert_checks_pass(run: &Run) -> usize {
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
    checks
}

/// Asserts that a guest printed exactly the same under bt as under kvm.
pub fn assert_same_console(bt: &Run, kvm: &Run) {
    assert_eq!(
        bt.stdout,
        kvm.stdout,
        "bt vs kvm\n{}\n{}",
        bt.show(),
        kvm.show()
    );
}

/// What one of guests/'s fetch scripts (`linux/fetch`, `qemu/fetch`)
/// printed: its `NAME=PATH` lines ([`popek_guests::fetch`]). If the
/// registry cannot be reached the test fails and says so: nothing passes
/// without what it needs.
pub fn fetch(script: &str) -> popek_guests::Fetched {
    popek_guests::fetch(script).unwrap_or_else(|e| panic!("{e}"))
}

/// The value of `name` among what a fetch script printed; the test fails
/// without it.
pub fn fetched(vars: &popek_guests::Fetched, name: &str) -> String {
    vars.need(name).unwrap_or_else(|e| panic!("{e}"))
}

/// The qemu-system-i386 the cross-checks run: the one on PATH, else
/// Debian's, fetched once by guests/qemu/fetch.
fn qemu_binary() -> &'static std::path::Path {
    static QEMU: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    QEMU.get_or_init(|| fetched(&fetch("qemu/fetch"), "QEMU").into())
}

/// The guest as QEMU TCG boots it, the reference the guests are checked
/// against: `qemu-system-i386 -kernel NAME.elf -append APPEND` with the
/// isa-debug-exit device popek's port 0xF4 imitates.
pub fn qemu(guest: &str, append: &str) -> Run {
    use std::time::{Duration, Instant};
    let qemu = qemu_binary();
    let image = popek_guests::find(guest).expect("the guest is embedded");
    let elf = std::env::temp_dir().join(format!("popek-{guest}-{}.elf", std::process::id()));
    std::fs::write(&elf, image.image).unwrap();
    let mut child = Command::new(qemu)
        .arg("-kernel")
        .arg(&elf)
        .args(["-append", append])
        .args(["-serial", "stdio", "-display", "none", "-monitor", "none"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"])
        .args(["-no-reboot", "-m", "256"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu starts");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    std::fs::remove_file(&elf).ok();
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        status: out.status.code().unwrap_or(-1),
    }
}

/// True on a host whose KVM is kvm-pvm (docs/kvm.md): no paged guests,
/// and a ring-3 INT n arrives as #UD.
pub fn kvm_is_pvm() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}
