//! A classic-BPF interpreter for seccomp programs, so tests can ask what a
//! filter answers for a given call without installing it (installing is
//! for the whole process and cannot be undone). It runs the instructions
//! the kernel's seccomp accepts and panics on any other, so a program it
//! runs is one the kernel would run the same way.

use seccompiler::sock_filter;

/// The `struct seccomp_data` a filter sees.
#[derive(Clone, Copy, Debug, Default)]
pub struct SeccompData {
    /// System call number.
    pub nr: i32,
    /// AUDIT_ARCH_* of the call.
    pub arch: u32,
    /// Instruction pointer after the call instruction.
    pub ip: u64,
    /// The six arguments.
    pub args: [u64; 6],
}

impl SeccompData {
    /// An x86-64 call `nr` with `args` (the rest zero) from host code.
    pub fn x86_64(nr: libc::c_long, args: &[u64]) -> SeccompData {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        SeccompData {
            nr: nr as i32,
            arch: crate::prefix::AUDIT_ARCH_X86_64,
            ip: 0x5555_0000_1000,
            args: a,
        }
    }

    /// The 32-bit word at byte `offset`, as BPF_LD|BPF_W|BPF_ABS reads it.
    fn word(&self, offset: u32) -> u32 {
        match offset {
            0 => self.nr as u32,
            4 => self.arch,
            8 => self.ip as u32,
            12 => (self.ip >> 32) as u32,
            16..=63 if offset.is_multiple_of(4) => {
                let arg = self.args[(offset as usize - 16) / 8];
                if offset.is_multiple_of(8) {
                    arg as u32
                } else {
                    (arg >> 32) as u32
                }
            }
            _ => panic!("load from offset {offset} of seccomp_data"),
        }
    }
}

/// Runs `program` on `data` and returns its SECCOMP_RET_* answer.
pub fn run(program: &[sock_filter], data: &SeccompData) -> u32 {
    let (mut a, mut x) = (0u32, 0u32);
    let mut pc = 0usize;
    loop {
        let ins = program.get(pc).expect("the program runs off its end");
        pc += 1;
        let code = u32::from(ins.code);
        let src = if code & libc::BPF_X != 0 { x } else { ins.k };
        match code & 0x07 {
            libc::BPF_LD => {
                assert_eq!(code, libc::BPF_LD | libc::BPF_W | libc::BPF_ABS);
                a = data.word(ins.k);
            }
            libc::BPF_ALU => match code & 0xF0 {
                libc::BPF_ADD => a = a.wrapping_add(src),
                libc::BPF_AND => a &= src,
                op => panic!("ALU op {op:#x}"),
            },
            libc::BPF_MISC => {
                assert_eq!(code, libc::BPF_MISC | libc::BPF_TAX);
                x = a;
            }
            libc::BPF_JMP => {
                let taken = match code & 0xF0 {
                    libc::BPF_JA => {
                        pc += ins.k as usize;
                        continue;
                    }
                    libc::BPF_JEQ => a == src,
                    libc::BPF_JGT => a > src,
                    libc::BPF_JGE => a >= src,
                    libc::BPF_JSET => a & src != 0,
                    op => panic!("jump op {op:#x}"),
                };
                pc += usize::from(if taken { ins.jt } else { ins.jf });
            }
            libc::BPF_RET => {
                assert_eq!(code, libc::BPF_RET | libc::BPF_K);
                return ins.k;
            }
            class => panic!("instruction class {class:#x}"),
        }
    }
}
