//! Every embedded test guest under every engine that can run it here.

mod common;

use common::{assert_pass, kvm_available, popek};

/// The guests these tests know; a new guest must get a test.
const KNOWN: &[&str] = &[
    "hello",
    "sensitive",
    "interrupts",
    "usermode",
    "tc",
    "hostile",
    "paging",
    "pae",
    "demo",
    "bzhello",
    "mmio",
    // Both engines and QEMU: tests/apic.rs.
    "apic",
    // Both engines and QEMU, ends with an ACPI power-off: tests/firmware.rs.
    "firmware",
    // BT only: tests/vector.rs.
    "vector",
    // tests/nanobench.rs.
    "nanobench",
    // Both engines and QEMU: tests/tasks.rs, tests/fwcfg.rs, tests/lowload.rs.
    "tasks",
    "fwcfg",
    "lowload",
];

fn run_kvm(guest: &str, extra: &[&str]) -> Option<common::Run> {
    if !kvm_available() {
        return None;
    }
    let mut args = vec!["run", "--engine", "kvm", "--guest", guest];
    args.extend_from_slice(extra);
    Some(popek(&args))
}

#[test]
fn every_embedded_guest_has_a_test() {
    let listed = popek(&["guests"]);
    assert_eq!(listed.status, 0, "{}", listed.show());
    let names: Vec<&str> = listed
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut sorted_names = names.clone();
    sorted_names.sort_unstable();
    let mut known = KNOWN.to_vec();
    known.sort_unstable();
    assert_eq!(sorted_names, known);
}

#[test]
fn hello_under_kvm() {
    let Some(run) = run_kvm("hello", &[]) else {
        return;
    };
    assert!(
        run.stdout.starts_with("hello from a popek guest"),
        "{}",
        run.show()
    );
    assert_pass(&run);
}

#[test]
fn sensitive_under_kvm() {
    let Some(run) = run_kvm("sensitive", &[]) else {
        return;
    };
    assert_pass(&run);
}

#[test]
fn interrupts_under_kvm() {
    let Some(run) = run_kvm("interrupts", &[]) else {
        return;
    };
    assert_pass(&run);
}

#[test]
fn usermode_under_kvm() {
    // kvm-pvm delivers a ring-3 INT n to the guest as #UD (its emulator has
    // no protected-mode INT, and that path ignores
    // KVM_CAP_EXIT_ON_EMULATION_FAILURE), so popek never sees the system
    // call. On VT-x/AMD-V hosts the test runs; under bt it runs everywhere.
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        eprintln!(
            "skipped: this host's KVM is kvm-pvm, which turns a ring-3 int 0x80 into #UD (docs/kvm.md)"
        );
        return;
    }
    let Some(run) = run_kvm("usermode", &[]) else {
        return;
    };
    assert_pass(&run);
}

#[test]
fn tc_under_kvm() {
    let Some(run) = run_kvm("tc", &[]) else {
        return;
    };
    assert_pass(&run);
}

#[test]
fn mmio_reaches_the_scratch_device_under_kvm() {
    let Some(run) = run_kvm("mmio", &["--stats"]) else {
        return;
    };
    assert_eq!(assert_pass(&run), 19);
    // One KVM exit, hence one bus access, per load or store the guest
    // makes (its OR to memory is two), the unclaimed page's three included.
    let exits = run
        .stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("mmio"))
        .map(str::trim);
    assert_eq!(exits, Some("38"), "{}", run.show());
}

#[test]
fn bzhello_sees_boot_params_under_kvm() {
    let dir = std::env::temp_dir().join(format!("popek-bzhello-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let initrd = dir.join("initrd.img");
    let bytes: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&initrd, &bytes).unwrap();
    let sum: u32 = bytes
        .iter()
        .map(|&b| u32::from(b))
        .fold(0, u32::wrapping_add);
    let initrd_arg = initrd.to_str().unwrap();
    let Some(run) = run_kvm(
        "bzhello",
        &[
            "--append",
            "console=ttyS0 popek.test=1",
            "--initrd",
            initrd_arg,
        ],
    ) else {
        return;
    };
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        run.stdout.contains("cmdline: console=ttyS0 popek.test=1\n"),
        "{}",
        run.show()
    );
    let want = format!("initrd: {} bytes, sum {sum:#010x}\n", bytes.len());
    assert!(run.stdout.contains(&want), "want {want:?}\n{}", run.show());
    assert!(run.stdout.contains("e820: "), "{}", run.show());
    assert_pass(&run);
}

#[test]
fn bzhello_without_initrd_or_cmdline() {
    let Some(run) = run_kvm("bzhello", &[]) else {
        return;
    };
    assert!(run.stdout.contains("cmdline: (none)\n"), "{}", run.show());
    assert!(run.stdout.contains("initrd: (none)\n"), "{}", run.show());
    assert_pass(&run);
}

/// Runs one `hostile` scenario under KVM; asserts its check lines, in order,
/// and that it passed. Skips where KVM is absent.
fn hostile_under_kvm(attack: &str, want: &[&str]) {
    let append = format!("attack={attack}");
    let Some(run) = run_kvm("hostile", &["--append", &append]) else {
        return;
    };
    let checks: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("ok ") || l.starts_with("FAIL"))
        .collect();
    assert_eq!(checks, want, "\n{}", run.show());
    assert_pass(&run);
}

/// The last two checks of every `hostile` scenario: ring 3 kept its own segments.
const HOSTILE_END: [&str; 2] = [
    "ok   ring 3 ended in its own code segment 0x07",
    "ok   ring 3 ended with its own DS, ES, FS, GS and SS (0x0f)",
];

#[test]
fn hostile_host_selectors_under_kvm() {
    let mut want = vec![
        "ok   load of host selector 0x2b into DS raised #GP(0x28)",
        "ok   read of 0xFFC00000 past DS's 3 GiB limit raised #GP(0)",
        "ok   write of 0xFFC00000 past DS's 3 GiB limit raised #GP(0)",
        "ok   load of host selector 0x23 into ES raised #GP(0x20) (guest GDT entry 4 is its LDT)",
        "ok   read of ES:0xFFC00000 past ES's 3 GiB limit raised #GP(0)",
        "ok   load of host selector 0x2b into SS raised #GP(0x28)",
        "ok   pop of host selector 0x2b into FS raised #GP(0x28)",
        "ok   load of host selector 0x33 into GS raised #GP(0x30)",
        "ok   lds of 002b:ffc00000 raised #GP(0x28)",
    ];
    want.extend(HOSTILE_END);
    hostile_under_kvm("a", &want);
}

#[test]
fn hostile_protection_keys_under_kvm() {
    let mut want = vec![
        "ok   wrpkru raised #UD",
        "ok   rdpkru raised #UD",
        "ok   xrstor raised #UD",
        "ok   read of 0xFFC00000 through the guest's flat selector 0x17 floats high (no RAM there)",
        "ok   write of \"HOST\" to 0xFFC00000 went nowhere: read back 0xffffffff",
        "ok   read of 0xFFFFFFFC, the region's last dword, floats high",
    ];
    want.extend(HOSTILE_END);
    hostile_under_kvm("b", &want);
}

#[test]
fn hostile_far_transfer_to_host_code_under_kvm() {
    // Were the guest's 64-bit code ever run on the host, it would leave
    // this file (guests/hostile/user.S, blob64).
    let breach = std::path::Path::new("/tmp/popek-hostile-c");
    let _ = std::fs::remove_file(breach);
    let mut want = vec![
        "ok   far jmp to host selector 0x33 (64-bit code) raised #GP(0x30)",
        "ok   far call to host selector 0x33 raised #GP(0x30)",
        "ok   far ret to host selector 0x33 raised #GP(0x30)",
    ];
    want.extend(HOSTILE_END);
    hostile_under_kvm("c", &want);
    assert!(
        !breach.exists(),
        "guest code ran on the host: {breach:?} exists"
    );
}

/// Scenarios f-i far-jump to the host's 64-bit code segment; a CPU that
/// honours the guest's GDT refuses each jump with #GP(0x30), and f's trip
/// through the guest kernel with null FS and GS is an ordinary #GP.
#[test]
fn hostile_64bit_scenarios_under_kvm() {
    let mut want = vec![
        "ok   hlt at ring 3 (with FS and GS null) raised #GP(0)",
        "ok   far jmp to host selector 0x33 raised #GP(0x30)",
    ];
    want.extend(HOSTILE_END);
    hostile_under_kvm("f", &want);
    for scenario in ["g", "h", "i"] {
        let mut want = vec!["ok   far jmp to host selector 0x33 raised #GP(0x30)"];
        want.extend(HOSTILE_END);
        hostile_under_kvm(scenario, &want);
    }
}

#[test]
fn hostile_int80_and_iret_under_kvm() {
    // kvm-pvm delivers a ring-3 INT n as #UD (see usermode_under_kvm), and
    // its emulator cannot do a ring-3 IRET or a far JMP to a system
    // descriptor (X86EMUL_UNHANDLEABLE, turned into #UD): scenarios d and
    // e need VT-x/AMD-V here.
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        eprintln!(
            "skipped: this host's KVM is kvm-pvm, which turns a ring-3 int 0x80, IRET or far JMP to 0x23 into #UD"
        );
        return;
    }
    let mut want = vec![
        "ok   int 0x80 eax=5 (open \"/tmp/popek-hostile-d\") reached the guest kernel",
        "ok   int 0x80 eax=4 (write to fd 1) reached the guest kernel",
        "ok   int 0x80 eax=37 (kill(1, SIGKILL)) reached the guest kernel",
        "ok   int 0x80 eax=1 (exit(0)) reached the guest kernel",
        "ok   open returned the guest kernel's value to ring 3",
        "ok   write returned the guest kernel's value to ring 3",
        "ok   kill returned the guest kernel's value to ring 3",
    ];
    want.extend(HOSTILE_END);
    hostile_under_kvm("d", &want);
    let mut want = vec![
        "ok   iret to host selector 0x33 raised #GP(0x30)",
        "ok   far jmp to host selector 0x23 (32-bit code) raised #GP(0x20)",
    ];
    want.extend(HOSTILE_END);
    hostile_under_kvm("e", &want);
}

#[test]
fn hostile_without_a_scenario_says_how_to_choose() {
    let Some(run) = run_kvm("hostile", &[]) else {
        return;
    };
    assert!(
        run.stdout
            .contains("choose a scenario with attack=a to attack=k"),
        "{}",
        run.show()
    );
    assert_eq!(
        run.status,
        3,
        "a failing guest exits with status 3\n{}",
        run.show()
    );
}
