//! popek's sandbox: once a popek process has set up its engine and started
//! every thread it will ever have, it confines itself to a seccomp
//! allowlist of the x86-64 system calls it still needs, with their
//! arguments checked where that is practical. A call off the list is not
//! made: the thread gets SIGSYS, and the process prints which call on which
//! thread was refused and exits with [`STATUS_REFUSED`] (a popek bug;
//! [`report`]).
//!
//! The allowlist of each engine starts from [`Allowlist::common`] (what any
//! popek thread does until the process exits: memory, futexes, signals,
//! timers, the console, exit) and adds its own (the BT engine: guest
//! mappings and LDT writes, `bt::monitor::seccomp`; the KVM engine: its
//! vCPU ioctls, `kvm::confine`). seccompiler compiles the list; a short
//! hand-written [`prefix`] runs first for what seccompiler cannot say.
//!
//! Rules for whoever confines:
//! - every thread must be running before [`Allowlist::confine`]: a thread
//!   still starting (glibc registers rseq and blocks all signals, std
//!   queries its affinity and sets up a signal stack) would meet the filter
//!   with SIGSYS blocked and die without a word. No thread can be started
//!   afterwards (clone is refused);
//! - the SIGSYS handler must call [`report_if_refused`] (the BT engine's
//!   own handler does for host code; otherwise [`install_reporter`]).

#![warn(missing_docs)]

pub mod bpf;
mod names;
pub mod prefix;
pub mod probe;
pub mod report;

use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::sync::Mutex;

use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};

pub use report::{install_reporter, keep_terminal_modes, report_if_refused, STATUS_REFUSED};
pub use seccompiler::{sock_filter, BpfProgram};

/// One condition on a system call argument.
pub type Condition = SeccompCondition;

/// An error building or installing a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sandbox: {}", self.0)
    }
}

impl std::error::Error for Error {}

fn cond(arg: u8, len: SeccompCmpArgLen, op: SeccompCmpOp, value: u64) -> Condition {
    SeccompCondition::new(arg, len, op, value).expect("argument index below 6")
}

/// Argument `arg` (its low 32 bits: an int, a descriptor, a request)
/// equals `value`.
pub fn arg_is(arg: u8, value: u32) -> Condition {
    cond(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value.into())
}

/// Argument `arg` (low 32 bits) has none of the bits of `mask`.
pub fn arg_lacks(arg: u8, mask: u32) -> Condition {
    cond(
        arg,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(mask.into()),
        0,
    )
}

/// Argument `arg` (low 32 bits) has every bit of `mask`.
pub fn arg_has(arg: u8, mask: u32) -> Condition {
    cond(
        arg,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(mask.into()),
        mask.into(),
    )
}

/// Argument `arg` (all 64 bits: an address) is at least `value`.
pub fn arg_at_least(arg: u8, value: u64) -> Condition {
    cond(arg, SeccompCmpArgLen::Qword, SeccompCmpOp::Ge, value)
}

/// Descriptors besides stdout and stderr that the confined process may
/// write to (files opened before the run, such as `--stats-json`).
static OUTPUTS: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

/// Lets the process write to `fd` once confined; call before confining.
pub fn allow_writes_to(fd: RawFd) {
    OUTPUTS.lock().unwrap_or_else(|e| e.into_inner()).push(fd);
}

/// The descriptors given to [`allow_writes_to`].
pub fn outputs() -> Vec<RawFd> {
    OUTPUTS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The terminal requests the console makes on stdin: reading and setting
/// its modes (raw mode, and putting the user's modes back at exit). Not
/// TIOCSTI (typing into the terminal) nor anything else.
const TERMINAL_REQUESTS: [libc::c_ulong; 4] =
    [libc::TCGETS, libc::TCSETS, libc::TCSETSW, libc::TCSETSF];

/// A set of system calls, each allowed always or when one of its rules
/// (every condition of the rule holds) matches. Everything else traps.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    /// None: any arguments.
    calls: BTreeMap<i64, Option<Vec<SeccompRule>>>,
}

impl Allowlist {
    /// An empty list: every call traps.
    pub fn new() -> Allowlist {
        Allowlist::default()
    }

    /// Allows `nr` with any arguments.
    pub fn allow(&mut self, nr: libc::c_long) -> &mut Allowlist {
        self.calls.insert(nr, None);
        self
    }

    /// Allows `nr` when every one of `conditions` holds (in addition to
    /// the rules it already has; a call allowed with any arguments stays
    /// so).
    pub fn allow_if(
        &mut self,
        nr: libc::c_long,
        conditions: impl IntoIterator<Item = Condition>,
    ) -> &mut Allowlist {
        let rule =
            SeccompRule::new(conditions.into_iter().collect()).expect("a rule has conditions");
        // None (any arguments) stays None.
        if let Some(rules) = self.calls.entry(nr).or_insert_with(|| Some(Vec::new())) {
            rules.push(rule);
        }
        self
    }

    /// What every popek process needs once its threads run, whichever the
    /// engine, for process `pid` writing to stdout, stderr and `outputs`:
    ///
    /// - memory, for the allocator: `brk`, `munmap`; `mmap` of anonymous
    ///   memory and `mprotect`, neither executable; `madvise` only
    ///   MADV_DONTNEED (malloc trimming, glibc's thread exit); `mremap`
    ///   only of mappings above 4 GiB (never guest memory) and never to a
    ///   fixed address;
    /// - threads and signals: `futex`, `sched_yield`, `gettid`, `getpid`,
    ///   `rt_sigreturn`, `rt_sigprocmask`, `rt_sigaction`, `sigaltstack`
    ///   (std's signal stacks are torn down at thread exit), `tgkill` only
    ///   to `pid` (kicks), `restart_syscall` (a sleep a kick interrupted
    ///   resumes through it), `exit`, `exit_group`;
    /// - time: `clock_gettime`, `clock_nanosleep`, `nanosleep`; and
    ///   `getrandom` (std's HashMap keys, per thread);
    /// - the console: `read` only from fd 0; `write` only to 1, 2 and
    ///   `outputs`; `ioctl` only on fd 0 and only the terminal-mode
    ///   requests; `close` of any descriptor; `fcntl` only F_GETFD (std
    ///   built with debug assertions checks that a descriptor is open
    ///   before closing it);
    /// - `prctl` only PR_GET_NAME, for the report of a refused call.
    ///
    /// Not limited, and why: `futex`, `munmap`, `close`, `brk`,
    /// `rt_sigaction`, non-executable `mprotect` act only on this
    /// process's own memory, descriptors and signals, and their callers
    /// (allocator, std, glibc) pass values no filter could predict; the
    /// worst they allow is a crash. Never allowed: opening anything,
    /// sockets, new processes and threads (clone, fork, execve), signals
    /// to anyone but this process (no kill; tgkill to `pid` only), ptrace,
    /// and every call not named here.
    pub fn common_for(pid: u32, outputs: &[RawFd]) -> Allowlist {
        use libc::*;
        let mut l = Allowlist::new();
        for nr in [
            SYS_brk,
            SYS_munmap,
            SYS_futex,
            SYS_sched_yield,
            SYS_gettid,
            SYS_getpid,
            SYS_rt_sigreturn,
            SYS_rt_sigprocmask,
            SYS_rt_sigaction,
            SYS_sigaltstack,
            SYS_restart_syscall,
            SYS_exit,
            SYS_exit_group,
            SYS_clock_gettime,
            SYS_clock_nanosleep,
            SYS_nanosleep,
            SYS_getrandom,
            SYS_close,
        ] {
            l.allow(nr);
        }
        // mmap(addr, len, prot, flags, fd, off), mprotect(addr, len, prot)
        l.allow_if(
            SYS_mmap,
            [
                arg_has(3, MAP_ANONYMOUS as u32),
                arg_lacks(2, PROT_EXEC as u32),
            ],
        );
        l.allow_if(SYS_mprotect, [arg_lacks(2, PROT_EXEC as u32)]);
        // madvise(addr, len, advice)
        l.allow_if(SYS_madvise, [arg_is(2, MADV_DONTNEED as u32)]);
        // mremap(old, old_len, new_len, flags, new_addr)
        l.allow_if(
            SYS_mremap,
            [
                arg_at_least(0, 1 << 32),
                arg_lacks(3, (MREMAP_FIXED | MREMAP_DONTUNMAP) as u32),
            ],
        );
        // tgkill(tgid, tid, sig)
        l.allow_if(SYS_tgkill, [arg_is(0, pid)]);
        // read(fd, buf, len), write(fd, buf, len)
        l.allow_if(SYS_read, [arg_is(0, 0)]);
        for fd in [1, 2].iter().chain(outputs) {
            l.allow_if(SYS_write, [arg_is(0, *fd as u32)]);
        }
        // ioctl(fd, request, arg)
        for req in TERMINAL_REQUESTS {
            l.allow_if(SYS_ioctl, [arg_is(0, 0), arg_is(1, req as u32)]);
        }
        // fcntl(fd, cmd, ...)
        l.allow_if(SYS_fcntl, [arg_is(1, F_GETFD as u32)]);
        // prctl(option, ...)
        l.allow_if(SYS_prctl, [arg_is(0, PR_GET_NAME as u32)]);
        l
    }

    /// [`Allowlist::common_for`] this process and the descriptors given to
    /// [`allow_writes_to`].
    pub fn common() -> Allowlist {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as u32;
        Allowlist::common_for(pid, &outputs())
    }

    /// The BPF program: the hand-written [`prefix`], then seccompiler's
    /// compilation of the list (anything not on it: SECCOMP_RET_TRAP).
    pub fn program(&self) -> Result<BpfProgram, Error> {
        let rules = self
            .calls
            .iter()
            .map(|(&nr, rules)| (nr, rules.clone().unwrap_or_default()))
            .collect();
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Trap,
            SeccompAction::Allow,
            TargetArch::x86_64,
        )
        .map_err(|e| Error(e.to_string()))?;
        let compiled: BpfProgram = filter
            .try_into()
            .map_err(|e: seccompiler::BackendError| Error(e.to_string()))?;
        let mut program = prefix::program();
        program.extend(compiled);
        // BPF_MAXINSNS: the kernel refuses longer programs.
        if program.len() > 4096 {
            return Err(Error(format!(
                "the filter has {} instructions, more than the kernel's 4096",
                program.len()
            )));
        }
        Ok(program)
    }

    /// Confines every thread of the process to this list (TSYNC), then
    /// makes the [`probe`] call if the environment asks for one. Every
    /// thread must be running already (see the crate doc).
    pub fn confine(&self) -> Result<(), Error> {
        let probe = probe::Probe::from_env().map_err(Error)?;
        self.confine_quietly()?;
        probe.make();
        Ok(())
    }

    /// [`Allowlist::confine`] without the probe: for a helper process
    /// (the BT engine's user-code process), so that a probe is made once,
    /// by the process the tests watch.
    pub fn confine_quietly(&self) -> Result<(), Error> {
        let program = self.program()?;
        seccompiler::apply_filter_all_threads(&program).map_err(|e| Error(e.to_string()))
    }
}

#[cfg(test)]
mod tests;
