//! The lowload guest (guests/lowload): a multiboot kernel linked below
//! 1 MiB, over the loader's default boot data, under both engines and
//! QEMU TCG.

mod common;

use common::{assert_pass, assert_same_console, kvm_available, popek, qemu};

#[test]
fn lowload_under_bt_moves_the_boot_data() {
    let run = popek(&["run", "--guest", "lowload", "--append", "low", "-v"]);
    assert_pass(&run);
    assert!(
        run.stderr
            .contains("boot area moved out of the kernel's way"),
        "{}",
        run.show()
    );
}

#[test]
fn lowload_under_kvm_is_the_same_as_under_bt() {
    if !kvm_available() {
        return;
    }
    let kvm = popek(&[
        "run", "--engine", "kvm", "--guest", "lowload", "--append", "low",
    ]);
    assert_pass(&kvm);
    let bt = popek(&["run", "--guest", "lowload", "--append", "low"]);
    assert_same_console(&bt, &kvm);
}

#[test]
fn lowload_under_qemu_tcg() {
    let run = qemu("lowload", "low");
    assert_pass(&run);
}
