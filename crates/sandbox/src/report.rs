//! What happens when the sandbox refuses one of popek's own calls: one line
//! on stderr naming the call and the thread, and exit status
//! [`STATUS_REFUSED`]. Never a silent core dump.
//!
//! The filters answer a refused call with SECCOMP_RET_TRAP: the call is not
//! made and the thread gets SIGSYS with the call's number in `si_syscall`.
//! If the thread has SIGSYS blocked (glibc blocks every signal while a
//! thread starts and while it exits), the kernel resets the handler to
//! SIG_DFL and the process dumps core without a word: that is why every
//! thread must have finished starting before the process is confined, and
//! why every call of a thread's exit path is on the allowlists.
//!
//! Everything here runs in a signal handler: no allocation, no lock, and
//! only calls the allowlists allow (prctl(PR_GET_NAME), ioctl(0, TCSETS)
//! to put the user's terminal back, write to fd 2, exit_group), or the
//! report would itself be refused while SIGSYS is blocked.

use std::sync::atomic::{AtomicPtr, Ordering};

use crate::names;
use crate::prefix::AUDIT_ARCH_X86_64;

/// Exit status of a popek process whose sandbox refused one of popek's own
/// system calls (a popek bug). popek's own failures are even.
pub const STATUS_REFUSED: u8 = 10;

/// The terminal modes to put back on stdin before exiting for a refused
/// call (null: stdin is no terminal, or its modes were never changed).
static TERMINAL: AtomicPtr<libc::termios> = AtomicPtr::new(std::ptr::null_mut());

/// Remembers the user's terminal modes of stdin, so that a refused call
/// puts them back (with TCSETS on fd 0, which the allowlists allow) before
/// the process exits. The console calls it when it enters raw mode.
pub fn keep_terminal_modes(modes: libc::termios) {
    // A previous copy is leaked, not freed: a report may be reading it.
    TERMINAL.store(Box::into_raw(Box::new(modes)), Ordering::Release);
}

/// si_code of a SIGSYS raised by a seccomp filter.
const SYS_SECCOMP: i32 = 1;

/// The head of `siginfo_t` as the kernel fills it for SIGSYS (the `_sigsys`
/// member of its union, which the libc crate does not name).
#[repr(C)]
struct SigsysInfo {
    signo: i32,
    errno: i32,
    code: i32,
    _pad: i32,
    call_addr: *mut libc::c_void,
    syscall: i32,
    arch: u32,
}

/// A line assembled on the stack, for a signal handler's report (nothing
/// there may allocate); what does not fit is cut.
pub struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    /// An empty line.
    pub fn new() -> Line {
        Line {
            buf: [0; 256],
            len: 0,
        }
    }

    /// The bytes so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Appends `s`.
    pub fn push(&mut self, s: &[u8]) {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    /// Appends `v` in hexadecimal, `0x` and no leading zeros.
    pub fn push_hex(&mut self, v: u64) {
        self.push(b"0x");
        self.push_digits(v, 16);
    }

    /// Appends `v` in decimal.
    pub fn push_decimal(&mut self, v: u32) {
        self.push_digits(u64::from(v), 10);
    }

    /// Appends `v`'s digits in `radix` (10 or 16), no leading zeros.
    fn push_digits(&mut self, mut v: u64, radix: u64) {
        // u64::MAX has 20 decimal digits, 16 hexadecimal ones.
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b"0123456789abcdef"[(v % radix) as usize];
            v /= radix;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

impl Default for Line {
    fn default() -> Self {
        Line::new()
    }
}

/// The report for a refused call: `nr` of architecture `arch`, made by the
/// thread named `thread`.
fn refusal_line(nr: i32, arch: u32, thread: &[u8]) -> Line {
    let mut line = Line::new();
    line.push(b"popek: the sandbox refused ");
    if arch == AUDIT_ARCH_X86_64 {
        line.push(b"system call ");
        line.push_decimal(nr as u32);
        if let Some(name) = names::name(i64::from(nr)) {
            line.push(b" (");
            line.push(name.as_bytes());
            line.push(b")");
        }
    } else {
        line.push(b"i386 system call ");
        line.push_decimal(nr as u32);
    }
    line.push(b" on thread ");
    line.push(thread);
    line.push(b"; this is a popek bug, please report it\n");
    line
}

/// If `info` is a SIGSYS raised by a seccomp filter, prints which call was
/// refused on which thread and exits the process with [`STATUS_REFUSED`];
/// otherwise (a SIGSYS someone sent) returns, and the caller takes the
/// default action.
///
/// # Safety
/// `info` must be the siginfo the kernel passed to a SIGSYS handler.
pub unsafe fn report_if_refused(info: *const libc::siginfo_t) {
    // SAFETY: the caller passes the kernel's siginfo for SIGSYS, whose
    // layout SigsysInfo mirrors (include/uapi/asm-generic/siginfo.h).
    let si = unsafe { &*info.cast::<SigsysInfo>() };
    if si.code != SYS_SECCOMP {
        return;
    }
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes, NUL-terminated.
    let named = unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) } == 0;
    let thread: &[u8] = if named {
        let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        &name[..len]
    } else {
        b"?"
    };
    let line = refusal_line(si.syscall, si.arch, thread);
    let modes = TERMINAL.load(Ordering::Acquire);
    if !modes.is_null() {
        // SAFETY: a published termios is never freed; TCSETS reads it.
        unsafe { libc::ioctl(0, libc::TCSETS, modes) };
    }
    // SAFETY: write and exit_group are async-signal-safe; the buffer is
    // ours. exit_group rather than exit(): nothing may run after this (no
    // atexit handler, no flush that could itself be refused).
    unsafe {
        libc::write(2, line.as_bytes().as_ptr().cast(), line.as_bytes().len());
        libc::syscall(libc::SYS_exit_group, libc::c_long::from(STATUS_REFUSED));
    }
    // exit_group does not return; were it refused, the caller's default
    // path (a core dump) would still end the process.
}

extern "C" fn on_sigsys(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    unsafe { report_if_refused(info) };
    // A SIGSYS someone sent: take the default action (a core dump) as if
    // this handler did not exist.
    // SAFETY: signal and raise are async-signal-safe.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Installs a SIGSYS handler that reports refused calls, for a process
/// whose engine has no SIGSYS handler of its own (the KVM engine; the BT
/// engine's handler calls [`report_if_refused`] for host code itself).
pub fn install_reporter() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid starting point; the handler is
    // async-signal-safe (see the module doc). SA_ONSTACK: std gives every
    // thread a signal stack, which a handler needs after a stack overflow.
    let r = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigsys as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut())
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(line: &Line) -> &str {
        std::str::from_utf8(line.as_bytes()).unwrap()
    }

    #[test]
    fn numbers_go_in_hex_and_decimal_and_a_long_line_is_cut() {
        let mut line = Line::new();
        line.push_hex(0x7f34_5de7_a5e9);
        line.push(b" ");
        line.push_hex(0);
        line.push(b" ");
        line.push_decimal(11);
        assert_eq!(text(&line), "0x7f345de7a5e9 0x0 11");
        for _ in 0..100 {
            line.push(b"abc");
        }
        assert_eq!(line.as_bytes().len(), 256);
    }

    #[test]
    fn a_refusal_names_the_call_and_the_thread() {
        let line = refusal_line(302, AUDIT_ARCH_X86_64, b"popek-stdin");
        assert_eq!(
            text(&line),
            "popek: the sandbox refused system call 302 (prlimit64) on thread popek-stdin; \
             this is a popek bug, please report it\n"
        );
        let line = refusal_line(20, 0x4000_0003, b"popek");
        assert!(
            text(&line)
                .starts_with("popek: the sandbox refused i386 system call 20 on thread popek;"),
            "{}",
            text(&line)
        );
        let line = refusal_line(400, AUDIT_ARCH_X86_64, b"t");
        assert!(text(&line).contains("system call 400 on thread t;"));
    }

    #[test]
    fn sigsys_info_matches_the_kernel_layout() {
        // si_call_addr shares its place with si_addr, which libc names.
        assert_eq!(std::mem::offset_of!(SigsysInfo, call_addr), 16);
        assert_eq!(std::mem::offset_of!(SigsysInfo, syscall), 24);
        assert_eq!(std::mem::offset_of!(SigsysInfo, arch), 28);
        // SAFETY: a zeroed siginfo_t is plain data.
        let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let p = std::ptr::addr_of_mut!(si).cast::<SigsysInfo>();
        // SAFETY: siginfo_t is 128 bytes, more than SigsysInfo.
        unsafe { (*p).call_addr = 0x1234 as *mut libc::c_void };
        // SAFETY: reading the field libc knows at the same offset.
        assert_eq!(unsafe { si.si_addr() } as usize, 0x1234);
    }
}
