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
//!    lives above 4 GiB, so its calls pass. Hand-written BPF: seccompiler
//!    compiles for one arch and kills the process on a mismatch, the
//!    opposite of what this filter is for, and cannot test the
//!    instruction pointer.
//! 2. [`confine`] (once the engine has started its threads and each has
//!    finished starting): the BT engine's [`allowlist`], built by the
//!    sandbox crate (shared with the KVM engine). Anything else traps too:
//!    no file can be opened, no process signalled (tgkill only to this
//!    process), no socket made, no terminal input injected (ioctl only for
//!    the terminal modes), no executable memory above 4 GiB, even by host
//!    code a guest might have hijacked. A refused call from host code is a
//!    popek bug: the SIGSYS handler reports it (`switch::host_signal`) and
//!    the process exits 10.

use std::os::fd::RawFd;

use super::MonitorError;

/// AUDIT_ARCH_I386 from linux/audit.h (EM_386 | __AUDIT_ARCH_LE).
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// Offsets in struct seccomp_data.
const DATA_ARCH: u32 = 4;
const DATA_IP_HIGH: u32 = 12;

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

/// Filter 2: the BT engine's allowlist, [`sandbox::Allowlist::common`]
/// and what the monitor adds once set up:
///
/// - `modify_ldt(1, ...)`: writing the LDT shadows of guest segments;
/// - `mmap` of guest RAM (the memfd `ram_fd`, never anonymous) at fixed
///   addresses, executable or not: the shadow MMU's mappings; the
///   sandbox's prefix holds such ranges below 4 GiB;
/// - `mprotect` with any protection, for guest pages (W^X for self-modifying
///   code, views) and the monitor region (its gate): the prefix holds
///   executable ranges below 4 GiB, where filter 1 traps every call.
///
/// PROT_NONE reservations (anonymous, MAP_FIXED) are the common list's
/// anonymous mappings, held below 4 GiB by the prefix because they are
/// fixed.
pub fn allowlist(
    pid: u32,
    ram_fd: RawFd,
    outputs: &[RawFd],
    child: Option<i32>,
) -> sandbox::Allowlist {
    let mut l = sandbox::Allowlist::common_for(pid, outputs);
    if let Some(child) = child {
        // The user-code process: kicks passed on, and its death noticed.
        l.allow_if(libc::SYS_tgkill, [sandbox::arg_is(0, child as u32)]);
        l.allow_if(libc::SYS_wait4, [sandbox::arg_is(0, child as u32)]);
    }
    // modify_ldt(func, ptr, bytecount): func 1 writes an entry.
    l.allow_if(libc::SYS_modify_ldt, [sandbox::arg_is(0, 1)]);
    // mmap(addr, len, prot, flags, fd, off)
    l.allow_if(
        libc::SYS_mmap,
        [
            sandbox::arg_is(4, ram_fd as u32),
            sandbox::arg_has(3, libc::MAP_FIXED as u32),
            sandbox::arg_lacks(3, libc::MAP_ANONYMOUS as u32),
        ],
    );
    l.allow(libc::SYS_mprotect);
    l
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

/// Installs filter 2 on every thread of the process (each must be running
/// already: see the sandbox crate). A call it refuses reaches the monitor's
/// SIGSYS handler from host code, which reports it and exits 10.
pub fn confine(ram_fd: RawFd, child: Option<i32>) -> Result<(), MonitorError> {
    let list = allowlist(std::process::id(), ram_fd, &sandbox::outputs(), child);
    list.confine()
        .map_err(|e| MonitorError::Host(format!("confining the process: {e}")))
}

/// The user-code process's list (monitor/user_space.rs): far shorter
/// than the monitor's, since that process only waits for its turn,
/// changes guest mappings and LDT shadows, and runs guest code. It cannot
/// read the terminal, write anywhere but stderr (a popek bug's report),
/// signal anyone but itself or make executable memory above 4 GiB. It maps
/// only `guest_fds`: guest RAM and the frame copies
/// (monitor/frame_copies.rs).
pub fn user_process_allowlist(pid: u32, guest_fds: &[RawFd]) -> sandbox::Allowlist {
    use libc::*;
    let mut l = sandbox::Allowlist::new();
    for nr in [
        SYS_futex,
        SYS_gettid,
        SYS_getpid,
        SYS_rt_sigreturn,
        SYS_rt_sigaction,
        SYS_rt_sigprocmask,
        SYS_sched_yield,
        SYS_brk,
        SYS_munmap,
        SYS_mprotect,
        SYS_exit,
        SYS_exit_group,
    ] {
        l.allow(nr);
    }
    // The allocator's memory, and guest RAM at fixed addresses.
    l.allow_if(
        SYS_mmap,
        [
            sandbox::arg_has(3, MAP_ANONYMOUS as u32),
            sandbox::arg_lacks(2, PROT_EXEC as u32),
        ],
    );
    for &fd in guest_fds {
        l.allow_if(
            SYS_mmap,
            [
                sandbox::arg_is(4, fd as u32),
                sandbox::arg_has(3, MAP_FIXED as u32),
                sandbox::arg_lacks(3, MAP_ANONYMOUS as u32),
            ],
        );
    }
    l.allow_if(SYS_modify_ldt, [sandbox::arg_is(0, 1)]);
    l.allow_if(SYS_tgkill, [sandbox::arg_is(0, pid)]);
    // A refused call's report: its line, its thread's name, and the
    // terminal's modes put back.
    l.allow_if(SYS_write, [sandbox::arg_is(0, 2)]);
    l.allow_if(SYS_prctl, [sandbox::arg_is(0, PR_GET_NAME as u32)]);
    l.allow_if(
        SYS_ioctl,
        [sandbox::arg_is(0, 0), sandbox::arg_is(1, TCSETS as u32)],
    );
    l
}

/// Confines the user-code process to [`user_process_allowlist`].
pub fn confine_user_process(guest_fds: &[RawFd]) -> Result<(), MonitorError> {
    let list = user_process_allowlist(std::process::id(), guest_fds);
    list.confine_quietly()
        .map_err(|e| MonitorError::Host(format!("confining the user-code process: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandbox::bpf::{run, SeccompData};

    const TRAP: u32 = libc::SECCOMP_RET_TRAP;
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

    #[test]
    fn program_traps_i386_and_low_instruction_pointers() {
        let p: Vec<sandbox::sock_filter> = program()
            .iter()
            .map(|i| sandbox::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect();
        let host = SeccompData::x86_64(libc::SYS_openat, &[]);
        assert_eq!(
            run(&p, &host),
            ALLOW,
            "filter 1 leaves host calls to filter 2"
        );
        let i386 = SeccompData {
            arch: AUDIT_ARCH_I386,
            ip: 0x10_0000,
            ..host
        };
        assert_eq!(run(&p, &i386), TRAP);
        assert_eq!(
            run(
                &p,
                &SeccompData {
                    ip: 0x5555_0000_0000,
                    ..i386
                }
            ),
            TRAP
        );
        let from_low = SeccompData {
            ip: 0xFFC0_1000,
            ..host
        };
        assert_eq!(run(&p, &from_low), TRAP);
    }

    fn mmap(addr: u64, len: u64, prot: i32, flags: i32, fd: i32) -> SeccompData {
        SeccompData::x86_64(
            libc::SYS_mmap,
            &[addr, len, prot as u64, flags as u64, fd as u32 as u64, 0],
        )
    }

    fn mprotect(addr: u64, len: u64, prot: i32) -> SeccompData {
        SeccompData::x86_64(libc::SYS_mprotect, &[addr, len, prot as u64])
    }

    const RWX: i32 = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC;
    const RX: i32 = libc::PROT_READ | libc::PROT_EXEC;

    #[test]
    fn the_allowlist_takes_the_monitors_calls_and_no_others() {
        let ram = 4;
        let p = allowlist(1234, ram, &[], None).program().unwrap();
        let fixed = libc::MAP_SHARED | libc::MAP_FIXED;
        let reserve =
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED;
        for (what, data) in [
            (
                "LDT write",
                SeccompData::x86_64(libc::SYS_modify_ldt, &[1, 0, 16]),
            ),
            (
                "guest RAM",
                mmap(0x40_0000, 0x1000, RWX, fixed | libc::MAP_POPULATE, ram),
            ),
            (
                "reservation",
                mmap(0x40_0000, 0x1000, libc::PROT_NONE, reserve, -1),
            ),
            ("W^X", mprotect(0x10_0000, 0x1000, RX)),
            ("gate", mprotect(0xFFC0_0000, 0x40_0000, RWX)),
            (
                "kick",
                SeccompData::x86_64(libc::SYS_tgkill, &[1234, 1, 14]),
            ),
        ] {
            assert_eq!(run(&p, &data), ALLOW, "{what}");
        }
        for (what, data) in [
            (
                "LDT read",
                SeccompData::x86_64(libc::SYS_modify_ldt, &[0, 0, 16]),
            ),
            (
                "RAM above 4 GiB",
                mmap(0x7F00_0000_0000, 0x1000, RWX, fixed, ram),
            ),
            (
                "RAM not fixed",
                mmap(0, 0x1000, libc::PROT_READ, libc::MAP_SHARED, ram),
            ),
            ("another file", mmap(0x40_0000, 0x1000, RX, fixed, 3)),
            ("anonymous code", mmap(0x40_0000, 0x1000, RX, reserve, -1)),
            ("host code", mprotect(0x5555_0000_0000, 0x1000, RWX)),
            ("across 4 GiB", mprotect(0xFFC0_0000, 0x40_1000, RX)),
            ("open", SeccompData::x86_64(libc::SYS_openat, &[])),
            ("kill", SeccompData::x86_64(libc::SYS_kill, &[1234, 9])),
            ("socket", SeccompData::x86_64(libc::SYS_socket, &[])),
            ("thread", SeccompData::x86_64(libc::SYS_clone3, &[])),
            (
                "TIOCSTI",
                SeccompData::x86_64(libc::SYS_ioctl, &[0, libc::TIOCSTI]),
            ),
        ] {
            assert_eq!(run(&p, &data), TRAP, "{what}");
        }
    }

    #[test]
    fn the_user_process_maps_guest_ram_and_frame_copies_only() {
        let (ram, copies) = (4, 5);
        let p = user_process_allowlist(1234, &[ram, copies])
            .program()
            .unwrap();
        let fixed = libc::MAP_SHARED | libc::MAP_FIXED | libc::MAP_POPULATE;
        for fd in [ram, copies] {
            assert_eq!(
                run(&p, &mmap(0x40_0000, 0x1000, RX, fixed, fd)),
                ALLOW,
                "fd {fd}"
            );
            assert_eq!(
                run(&p, &mmap(0, 0x1000, RX, libc::MAP_SHARED, fd)),
                TRAP,
                "fd {fd} not fixed"
            );
        }
        for (what, data) in [
            ("another file", mmap(0x40_0000, 0x1000, RX, fixed, 6)),
            (
                "anonymous code",
                mmap(0, 0x1000, RX, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1),
            ),
            ("open", SeccompData::x86_64(libc::SYS_openat, &[])),
        ] {
            assert_eq!(run(&p, &data), TRAP, "{what}");
        }
    }
}
