//! The `vector` guest under the BT engine: the guest's vector registers
//! start zeroed and keep the guest's values across every kind of exit, in
//! user code (run directly) and kernel code (translated).
//!
//! The guest cannot find out which vector extensions the host CPU has (its
//! CPUID is popek's, without AVX, while its user code runs on the host's),
//! so the test asks the host and tells the guest on its command line. BT
//! only: under KVM the guest kernel would have to enable XSAVE itself.

mod common;

use common::{assert_pass, popek, Run};

/// Checks the guest makes whatever the registers: 2 of the init state,
/// 8 in user code, 8 in kernel code (one of them by FXSAVE).
const CHECKS: usize = 18;

fn run_vector(append: Option<&str>) -> Run {
    let mut args = vec!["run", "--engine", "bt", "--guest", "vector"];
    if let Some(a) = append {
        args.extend(["--append", a]);
    }
    popek(&args)
}

/// Runs the guest with `append` and requires all its checks to pass on
/// `regs` (the names it gives the registers it compared).
fn passes_on(append: Option<&str>, regs: &str) {
    let run = run_vector(append);
    assert_eq!(assert_pass(&run), CHECKS, "{}", run.show());
    for line in [
        format!("ok   kernel: {regs} read as zero before any write"),
        format!("ok   user: {regs} kept across 3 timer interrupts while spinning"),
        format!("ok   kernel: {regs} kept across a #GP it handled"),
        format!("ok   user: {regs} hold what kernel code wrote"),
        // Under bt the first vector instruction of a kernel run may be an
        // FXSAVE: it must store the guest's registers, never the
        // monitor's (docs/bt.md, *Vector state only where it is used*).
        "ok   kernel: xmm0-7 and MXCSR by FXSAVE hold what user code wrote".to_string(),
    ] {
        assert!(run.stdout.contains(&line), "{line}\n{}", run.show());
    }
}

#[test]
fn xmm_registers_are_the_guests_at_every_exit() {
    passes_on(None, "xmm0-7 and MXCSR");
}

#[test]
fn ymm_registers_are_the_guests_at_every_exit() {
    if !std::arch::is_x86_feature_detected!("avx") {
        eprintln!("skipped: ymm0-7 (host has no AVX)");
        return;
    }
    passes_on(Some("avx=1"), "ymm0-7 and MXCSR");
}

#[test]
fn zmm_and_opmask_registers_are_the_guests_at_every_exit() {
    // The guest moves whole opmask registers with KMOVQ (AVX-512 BW).
    if !std::arch::is_x86_feature_detected!("avx512f")
        || !std::arch::is_x86_feature_detected!("avx512bw")
    {
        eprintln!("skipped: zmm0-7 and k0-k7 (host has no AVX-512)");
        return;
    }
    passes_on(Some("avx512=1"), "zmm0-7, k0-k7 and MXCSR");
}
