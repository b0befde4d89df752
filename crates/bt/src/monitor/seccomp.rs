//! The seccomp filters: guest `int 0x80` becomes SIGSYS, guest code can
//! make no host system call at all, and once set up the whole process is
//! confined to the calls the monitor needs.
//!
//! Two filters, stacked (the strictest answer wins):
//!
//! 1. [`install`] (at `Monitor::new`): an i386 call (guest `int 0x80`, or
//!    `int 0x80` from code that far-jumped to the host's 64-bit segment) or
//!    any call made from an instruction pointer below 4 GiB (guest code
//!    that reached 64-bit mode and executed `syscall`) is answered with
//!    SECCOMP_RET_TRAP: not executed, SIGSYS instead. The monitor's own code
//!    lives above 4 GiB, so its calls pass.
//! 2. [`confine`] (once the engine has started its threads): an allowlist
//!    of the x86-64 calls the monitor makes while the guest runs. Anything
//!    else traps too: no file can be opened, no process signalled (tgkill
//!    only to this process), no socket made, no terminal input injected
//!    (ioctl only for the terminal modes), even by host code a guest might
//!    have hijacked.
//!
//! The filters are hand-written BPF: seccompiler compiles for one target
//! arch and kills on an arch mismatch, which is the opposite of what filter
//! 1 needs.

use super::MonitorError;

/// AUDIT_ARCH_I386 from linux/audit.h (EM_386 | __AUDIT_ARCH_LE).
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// AUDIT_ARCH_X86_64 (EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE).
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// Offsets in struct seccomp_data.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_IP_HIGH: u32 = 12;
const DATA_ARG0_LOW: u32 = 16;
const DATA_ARG1_LOW: u32 = 24;

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

fn jeq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: BPF_JEQ_K,
        jt,
        jf,
        k,
    }
}

/// Filter 1: i386 calls and calls from below 4 GiB trap; the rest pass.
pub fn program() -> Vec<libc::sock_filter> {
    vec![
        stmt(BPF_LD_W_ABS, DATA_ARCH),
        jeq(AUDIT_ARCH_I386, 0, 1),
        stmt(BPF_RET_K, libc::SECCOMP_RET_TRAP),
        stmt(BPF_LD_W_ABS, DATA_IP_HIGH),
        jeq(0, 0, 1),
        stmt(BPF_RET_K, libc::SECCOMP_RET_TRAP),
        stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW),
    ]
}

/// The x86-64 calls the monitor and its threads make while a guest runs:
/// memory management (guest mappings, SMC protection), signals (exits,
/// kicks), futexes (the alarm thread), console I/O, sleeping, and exit.
const ALLOWED: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_close,
    libc::SYS_fcntl,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_mremap,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_futex,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_modify_ldt,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_sched_yield,
    libc::SYS_getrandom,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// ioctl requests allowed: reading and restoring the terminal's modes.
const IOCTLS: &[libc::c_ulong] = &[
    libc::TCGETS,
    libc::TCSETS,
    libc::TCSETSW,
    libc::TCSETSF,
    libc::TIOCGWINSZ,
];

/// Filter 2: the allowlist; `pid` is the only process tgkill may signal.
pub fn allowlist(pid: u32) -> Vec<libc::sock_filter> {
    let trap = stmt(BPF_RET_K, libc::SECCOMP_RET_TRAP);
    let allow = stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW);
    let mut p = vec![
        stmt(BPF_LD_W_ABS, DATA_ARCH),
        jeq(AUDIT_ARCH_X86_64, 1, 0),
        trap,
        stmt(BPF_LD_W_ABS, DATA_NR),
    ];
    for &nr in ALLOWED {
        p.push(jeq(nr as u32, 0, 1));
        p.push(allow);
    }
    // tgkill(pid, tid, sig): only to this process.
    p.push(jeq(libc::SYS_tgkill as u32, 0, 4));
    p.push(stmt(BPF_LD_W_ABS, DATA_ARG0_LOW));
    p.push(jeq(pid, 0, 1));
    p.push(allow);
    p.push(trap);
    // ioctl(fd, request, ...): terminal modes only.
    p.push(jeq(libc::SYS_ioctl as u32, 0, (2 * IOCTLS.len() + 1) as u8));
    p.push(stmt(BPF_LD_W_ABS, DATA_ARG1_LOW));
    for &req in IOCTLS {
        p.push(jeq(req as u32, 0, 1));
        p.push(allow);
    }
    p.push(trap);
    p
}

fn no_new_privs() -> Result<(), MonitorError> {
    // SAFETY: prctl with integer arguments has no memory effects.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if r != 0 {
        return Err(MonitorError::Host(format!(
            "prctl(PR_SET_NO_NEW_PRIVS): {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Loads `prog` with seccomp(2); `flags` e.g. SECCOMP_FILTER_FLAG_TSYNC.
fn load(prog: &[libc::sock_filter], flags: libc::c_ulong, what: &str) -> Result<(), MonitorError> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `prog`, alive for the call; the kernel copies
    // the program. The programs allow every call the monitor makes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(MonitorError::Host(format!(
            "seccomp({what}): {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Installs filter 1 on the calling thread (threads it creates later
/// inherit it). Sets PR_SET_NO_NEW_PRIVS, which seccomp requires without
/// CAP_SYS_ADMIN.
pub fn install() -> Result<(), MonitorError> {
    no_new_privs()?;
    load(&program(), 0, "guest system call filter")
}

/// Installs filter 2 on every thread of the process.
pub fn confine() -> Result<(), MonitorError> {
    no_new_privs()?;
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    load(
        &allowlist(pid),
        libc::SECCOMP_FILTER_FLAG_TSYNC as libc::c_ulong,
        "allowlist",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_traps_i386_and_low_instruction_pointers() {
        let p = program();
        assert_eq!(p[1].k, AUDIT_ARCH_I386);
        assert_eq!(p[2].k, libc::SECCOMP_RET_TRAP);
        assert_eq!(p[3].k, DATA_IP_HIGH);
        assert_eq!(p[5].k, libc::SECCOMP_RET_TRAP);
        assert_eq!(p.last().unwrap().k, libc::SECCOMP_RET_ALLOW);
    }

    #[test]
    fn allowlist_ends_in_a_trap_and_jumps_stay_inside() {
        let p = allowlist(1234);
        assert_eq!(p.last().unwrap().k, libc::SECCOMP_RET_TRAP);
        for (i, ins) in p.iter().enumerate() {
            if ins.code == BPF_JEQ_K {
                assert!(
                    i + 1 + usize::from(ins.jt.max(ins.jf)) < p.len(),
                    "jump at {i}"
                );
            }
        }
        // Neither open nor kill nor socket is allowed.
        for nr in [
            libc::SYS_open,
            libc::SYS_openat,
            libc::SYS_kill,
            libc::SYS_socket,
        ] {
            assert!(!ALLOWED.contains(&nr));
        }
    }
}
