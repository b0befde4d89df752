//! The apic guest (guests/apic): the local APIC, the I/O APIC and the MSRs
//! a PC guest touches, under both engines and, where it is installed,
//! under QEMU, the reference its checks were written against.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_pass, kvm_available, popek, Run};

/// Checks the guest makes only where CPUID's hypervisor leaf says popek
/// (QEMU 7.2 TCG does not raise these #GPs or move the registers).
const POPEK_ONLY: usize = 19;

fn run(engine: &str) -> Run {
    popek(&["run", "--engine", engine, "--guest", "apic", "--stats"])
}

#[test]
fn apic_under_bt() {
    let run = run("bt");
    let checks = assert_pass(&run);
    assert!(run.stdout.contains("paging off (popek)"), "{}", run.show());
    assert!(
        !run.stdout.contains("checked under popek only"),
        "{}",
        run.show()
    );
    assert!(
        checks >= 100 + POPEK_ONLY,
        "{checks} checks\n{}",
        run.show()
    );
}

#[test]
fn apic_under_kvm_is_the_same_as_under_bt() {
    if !kvm_available() {
        return;
    }
    let kvm = run("kvm");
    assert_pass(&kvm);
    // Every RDMSR and WRMSR but the few KVM keeps went to popek's model.
    let msr_exits = kvm
        .stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("msr"))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(msr_exits.is_some_and(|n| n > 30), "{}", kvm.show());
    let bt = run("bt");
    assert_eq!(
        bt.stdout,
        kvm.stdout,
        "bt\n{}\nkvm\n{}",
        bt.show(),
        kvm.show()
    );
}

/// The guest as QEMU boots it: `qemu-system-i386 -kernel apic.elf`, with
/// the isa-debug-exit device popek's port 0xF4 imitates.
#[test]
fn apic_under_qemu_tcg() {
    let qemu = "qemu-system-i386";
    if Command::new(qemu).arg("--version").output().is_err() {
        eprintln!("skipped: {qemu} is not installed");
        return;
    }
    let guest = popek_guests::find("apic").expect("the apic guest is embedded");
    let elf = std::env::temp_dir().join(format!("popek-apic-{}.elf", std::process::id()));
    std::fs::write(&elf, guest.image).unwrap();
    let mut child = Command::new(qemu)
        .arg("-kernel")
        .arg(&elf)
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
    let run = Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        status: out.status.code().unwrap_or(-1),
    };
    let checks = assert_pass(&run);
    assert!(run.stdout.contains("(not popek)"), "{}", run.show());
    // The same checks as under popek, but for the popek-only ones.
    let bt = assert_pass(&self::run("bt"));
    assert_eq!(checks + POPEK_ONLY, bt, "{}", run.show());
}
