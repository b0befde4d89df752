//! The hand-written head of every allowlist program, run before
//! seccompiler's part. It holds the two checks seccompiler cannot express:
//!
//! 1. A call of another architecture than x86-64 (in practice an i386 call:
//!    `int 0x80`) is answered with SECCOMP_RET_TRAP. seccompiler's program
//!    starts with an arch check that *kills the process* on a mismatch,
//!    silently; under the BT engine guest `int 0x80` arrives exactly so and
//!    must become SIGSYS (filter 1, `bt::monitor::seccomp::program`, traps
//!    it too, so the BT handler turns it into a guest system call), and in
//!    any engine an i386 call from host code must be reported like any
//!    other refused call, not kill the process without a word.
//! 2. Executable memory only below 4 GiB: `mmap` with PROT_EXEC or
//!    MAP_FIXED and `mprotect` with PROT_EXEC must name a range that ends at
//!    or below 4 GiB. seccompiler compares each argument with a constant;
//!    this needs the sum of two arguments (address + length). Below 4 GiB
//!    lie guest RAM and the BT monitor's region, which only the guest and
//!    translated code execute, and filter 1 traps every call made from
//!    there; above it lives the host's own code. A MAP_FIXED mapping above
//!    4 GiB could replace host memory, so it is held to the same range.
//!
//! Whatever passes falls through to seccompiler's program, which then
//! decides by its own rules (so the KVM engine, which allows no PROT_EXEC at
//! all, refuses an executable range even below 4 GiB).

use seccompiler::sock_filter;

/// AUDIT_ARCH_X86_64 (EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE).
pub const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;

/// Offsets in `struct seccomp_data`: nr, arch, then the arguments, 8 bytes
/// each, low half first (little endian).
const NR: u32 = 0;
const ARCH: u32 = 4;
const fn arg_low(i: u32) -> u32 {
    16 + 8 * i
}
const fn arg_high(i: u32) -> u32 {
    16 + 8 * i + 4
}

const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const JGE_X: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_X) as u16;
const TAX: u16 = (libc::BPF_MISC | libc::BPF_TAX) as u16;
const ADD_X: u16 = (libc::BPF_ALU | libc::BPF_ADD | libc::BPF_X) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// The prefix. Its last instruction is followed by seccompiler's program:
/// a jump to "next" (`NEXT` below) lands on that program's first
/// instruction. Jump offsets count from the instruction after the jump.
pub fn program() -> Vec<sock_filter> {
    const TRAP_AT: u8 = 22;
    const NEXT: u8 = 23;
    let trap = || stmt(RET, libc::SECCOMP_RET_TRAP);
    // (index, instruction); the indices are checked below.
    let p: Vec<(u8, sock_filter)> = vec![
        (0, stmt(LD_ABS, ARCH)),
        (1, jump(JEQ, AUDIT_ARCH_X86_64, 1, 0)),
        (2, trap()),
        (3, stmt(LD_ABS, NR)),
        (4, jump(JEQ, libc::SYS_mmap as u32, 0, 9 - 5)),
        // mmap(addr, len, prot, flags, fd, off)
        (5, stmt(LD_ABS, arg_low(2))),
        (6, jump(JSET, libc::PROT_EXEC as u32, 12 - 7, 0)),
        (7, stmt(LD_ABS, arg_low(3))),
        (8, jump(JSET, libc::MAP_FIXED as u32, 12 - 9, NEXT - 9)),
        (9, jump(JEQ, libc::SYS_mprotect as u32, 0, NEXT - 10)),
        // mprotect(addr, len, prot)
        (10, stmt(LD_ABS, arg_low(2))),
        (11, jump(JSET, libc::PROT_EXEC as u32, 0, NEXT - 12)),
        // The range [addr, addr + len) must end at or below 4 GiB: both
        // high halves zero, and the 32-bit sum of the low halves must not
        // wrap (A >= X), unless it wraps to exactly 0 (ends at 4 GiB).
        (12, stmt(LD_ABS, arg_high(0))),
        (13, jump(JEQ, 0, 0, TRAP_AT - 14)),
        (14, stmt(LD_ABS, arg_high(1))),
        (15, jump(JEQ, 0, 0, TRAP_AT - 16)),
        (16, stmt(LD_ABS, arg_low(0))),
        (17, stmt(TAX, 0)),
        (18, stmt(LD_ABS, arg_low(1))),
        (19, stmt(ADD_X, 0)),
        (20, jump(JEQ, 0, NEXT - 21, 0)),
        (21, jump(JGE_X, 0, NEXT - 22, 0)),
        (TRAP_AT, trap()),
    ];
    p.into_iter()
        .enumerate()
        .map(|(i, (at, ins))| {
            assert_eq!(usize::from(at), i, "prefix instruction numbered wrongly");
            ins
        })
        .collect()
}
