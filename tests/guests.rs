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
    "bzhello",
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
