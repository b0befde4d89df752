//! The seccomp filter that turns guest `int 0x80` into SIGSYS.
//!
//! A 32-bit `int 0x80` executed by guest code reaches the host kernel as an
//! i386 system call. The filter answers every call whose audit arch is i386
//! with SECCOMP_RET_TRAP: the call is not executed, the registers are left
//! intact and the thread gets SIGSYS with RIP after the instruction. The
//! monitor's own calls are x86-64 and pass.
//!
//! The filter is hand-written BPF: seccompiler compiles for one target arch
//! and kills on an arch mismatch, which is the opposite of what we need.
//!
//! TODO(confinement): design.md section 4 asks for more once the monitor's
//! set of calls is known: an allowlist of the x86-64 calls the monitor
//! makes, and any system call whose instruction pointer lies below 4 GiB
//! (guest code that far-jumped to the host's 64-bit code segment) is fatal
//! (load `instruction_pointer` high word; non-zero -> allow, zero -> kill).

use super::MonitorError;

/// AUDIT_ARCH_I386 from linux/audit.h (EM_386 | __AUDIT_ARCH_LE).
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// Offset of `arch` in struct seccomp_data.
const DATA_ARCH: u32 = 4;

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// The filter program: i386 calls trap, everything else is allowed.
pub fn program() -> Vec<libc::sock_filter> {
    vec![
        stmt(BPF_LD_W_ABS, DATA_ARCH),
        libc::sock_filter {
            code: BPF_JEQ_K,
            jt: 0,
            jf: 1,
            k: AUDIT_ARCH_I386,
        },
        stmt(BPF_RET_K, libc::SECCOMP_RET_TRAP),
        stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW),
    ]
}

/// Installs the filter on the calling thread (threads it creates later
/// inherit it). Sets PR_SET_NO_NEW_PRIVS, which seccomp requires without
/// CAP_SYS_ADMIN.
pub fn install() -> Result<(), MonitorError> {
    let prog = program();
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with integer arguments has no memory effects.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if r != 0 {
        return Err(MonitorError::Host(format!(
            "prctl(PR_SET_NO_NEW_PRIVS): {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: `fprog` points at `prog`, alive for the call; the kernel copies
    // the program. The program only traps i386 calls, which the monitor never
    // makes, so the monitor's own behaviour is unchanged.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &fprog as *const libc::sock_fprog,
            0,
            0,
        )
    };
    if r != 0 {
        return Err(MonitorError::Host(format!(
            "prctl(PR_SET_SECCOMP): {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn program_traps_only_i386() {
        let p = super::program();
        assert_eq!(p.len(), 4);
        assert_eq!(p[1].k, super::AUDIT_ARCH_I386);
        assert_eq!(p[2].k, libc::SECCOMP_RET_TRAP);
        assert_eq!(p[3].k, libc::SECCOMP_RET_ALLOW);
    }
}
