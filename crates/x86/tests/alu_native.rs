//! The data emulator's ALU against the host CPU: the same operation on the
//! same operands must give the same result and arithmetic flags (AF after a
//! logic operation is undefined and not compared).

use std::arch::asm;

use iced_x86::Mnemonic;
use x86::emulate::alu;
use x86::state::flags as fl;

const ARITH: u32 = fl::CF | fl::PF | fl::AF | fl::ZF | fl::SF | fl::OF;

/// Runs `op` natively at operand size `size` with CF set to `carry`, and
/// returns the result and flags.
fn native(op: Mnemonic, a: u32, b: u32, size: u32, carry: bool) -> (u32, u32) {
    let mut x = a;
    let flags: u64;
    macro_rules! run {
        ($insn:literal, $m:literal) => {
            // SAFETY: register-only arithmetic; pushfq/pop use the stack,
            // which asm! allows without `nostack`.
            unsafe {
                asm!(
                    "bt {c:e}, 0",
                    concat!($insn, " {x:", $m, "}, {y:", $m, "}"),
                    "pushfq",
                    "pop {f}",
                    c = in(reg) u32::from(carry),
                    x = inout(reg_abcd) x,
                    y = in(reg_abcd) b,
                    f = out(reg) flags,
                )
            }
        };
    }
    macro_rules! sized {
        ($insn:literal) => {
            match size {
                1 => run!($insn, "l"),
                2 => run!($insn, "x"),
                _ => run!($insn, "e"),
            }
        };
    }
    match op {
        Mnemonic::Add => sized!("add"),
        Mnemonic::Adc => sized!("adc"),
        Mnemonic::Sub => sized!("sub"),
        Mnemonic::Sbb => sized!("sbb"),
        Mnemonic::And => sized!("and"),
        Mnemonic::Or => sized!("or"),
        Mnemonic::Xor => sized!("xor"),
        _ => unreachable!(),
    }
    let m = if size == 4 {
        u32::MAX
    } else {
        (1 << (size * 8)) - 1
    };
    (x & m, flags as u32 & ARITH)
}

#[test]
fn alu_matches_the_host_cpu() {
    // Edge values of each size, and a deterministic pseudo-random spread.
    let mut values = vec![
        0u32,
        1,
        0x7F,
        0x80,
        0xFF,
        0x7FFF,
        0x8000,
        0xFFFF,
        0x7FFF_FFFF,
        0x8000_0000,
        u32::MAX,
        0x0F,
        0x10,
    ];
    let mut seed = 0x1234_5678u32;
    for _ in 0..40 {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        values.push(seed);
    }
    let ops = [
        Mnemonic::Add,
        Mnemonic::Adc,
        Mnemonic::Sub,
        Mnemonic::Sbb,
        Mnemonic::And,
        Mnemonic::Or,
        Mnemonic::Xor,
    ];
    let mut compared = 0;
    for size in [1u32, 2, 4] {
        let m = if size == 4 {
            u32::MAX
        } else {
            (1 << (size * 8)) - 1
        };
        for &a in &values {
            for &b in &values {
                for carry in [false, true] {
                    for op in ops {
                        let (a, b) = (a & m, b & m);
                        let (want, mut want_f) = native(op, a, b, size, carry);
                        let cf = if carry { fl::CF } else { 0 };
                        let (got, mut got_f) = alu(op, a, b, size, cf | fl::FIXED1);
                        got_f &= ARITH;
                        if matches!(op, Mnemonic::And | Mnemonic::Or | Mnemonic::Xor) {
                            want_f &= !fl::AF;
                            got_f &= !fl::AF;
                        }
                        assert_eq!(
                            (got, got_f),
                            (want, want_f),
                            "{op:?} {a:#x}, {b:#x} size {size} carry {carry}"
                        );
                        compared += 1;
                    }
                }
            }
        }
    }
    assert!(compared > 10_000);
}
