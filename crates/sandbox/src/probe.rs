//! `POPEK_SANDBOX_PROBE`: makes a process try one call its sandbox must
//! refuse, right after confining, so that tests can watch the real filter
//! of a real run refuse it (status [`crate::STATUS_REFUSED`] and the report
//! line) instead of trusting that it was installed. Unconfined, every probe
//! call is harmless and the run goes on as if nothing happened, so a test
//! that expects the refusal fails.
//!
//! Values: `openat` (a call on no allowlist), `ioctl` (an allowed call with
//! a refused request: TIOCSTI, terminal input injection), `mprotect`
//! (executable memory above 4 GiB), `i386` (`int 0x80` from host code).
//! With the suffix `@thread` the call is made by a thread named
//! `popek-probe`, started (and waited for) before confining, instead of
//! the confining thread.

use std::sync::mpsc::{channel, Sender};
use std::thread::JoinHandle;

/// The environment variable that asks for a probe.
pub const VAR: &str = "POPEK_SANDBOX_PROBE";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Openat,
    Ioctl,
    Mprotect,
    I386,
}

impl Call {
    fn parse(s: &str) -> Option<Call> {
        Some(match s {
            "openat" => Call::Openat,
            "ioctl" => Call::Ioctl,
            "mprotect" => Call::Mprotect,
            "i386" => Call::I386,
            _ => return None,
        })
    }

    /// Makes the call. Each is harmless where it is allowed.
    fn make(self) {
        match self {
            Call::Openat => {
                // SAFETY: openat with a static NUL-terminated path.
                let fd = unsafe { libc::openat(libc::AT_FDCWD, c"/dev/null".as_ptr(), 0) };
                if fd >= 0 {
                    // SAFETY: the descriptor was just opened here.
                    unsafe { libc::close(fd) };
                }
            }
            Call::Ioctl => {
                let byte = b'\n';
                // SAFETY: TIOCSTI reads one byte from the pointer. Where it
                // is allowed it would type a newline into our own
                // terminal, if stdin is one.
                unsafe { libc::ioctl(0, libc::TIOCSTI, &byte) };
            }
            Call::Mprotect => {
                // SAFETY: a fresh private page, made executable and
                // unmapped again; nothing else refers to it.
                unsafe {
                    let p = libc::mmap(
                        std::ptr::null_mut(),
                        4096,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    );
                    if p != libc::MAP_FAILED {
                        libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC);
                        libc::munmap(p, 4096);
                    }
                }
            }
            Call::I386 => {
                // SAFETY: i386 getpid (20) through `int 0x80` from 64-bit
                // code: takes no argument and changes nothing. The compat
                // entry may clobber R8-R11.
                unsafe {
                    core::arch::asm!(
                        "int 0x80",
                        inlateout("rax") 20i64 => _,
                        out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                        options(nostack),
                    );
                }
            }
        }
    }
}

/// A probe asked for by the environment, ready to be made once confined.
pub struct Probe {
    call: Option<Call>,
    /// The helper thread for `@thread`, waiting for the go.
    thread: Option<(Sender<()>, JoinHandle<()>)>,
}

impl Probe {
    /// Reads [`VAR`]; for `@thread`, starts the helper thread and waits
    /// until it runs (its start-up calls must not meet the filter).
    pub fn from_env() -> Result<Probe, String> {
        let Ok(value) = std::env::var(VAR) else {
            return Ok(Probe {
                call: None,
                thread: None,
            });
        };
        let (name, on_thread) = match value.strip_suffix("@thread") {
            Some(name) => (name, true),
            None => (value.as_str(), false),
        };
        let call = Call::parse(name).ok_or_else(|| {
            format!(
                "{VAR}={value}: expected openat, ioctl, mprotect or i386, optionally with @thread"
            )
        })?;
        let thread = if on_thread {
            let (go_tx, go_rx) = channel::<()>();
            let (ready_tx, ready_rx) = channel::<()>();
            let handle = std::thread::Builder::new()
                .name("popek-probe".into())
                .spawn(move || {
                    let _ = ready_tx.send(());
                    if go_rx.recv().is_ok() {
                        call.make();
                    }
                })
                .map_err(|e| format!("starting the probe thread: {e}"))?;
            let _ = ready_rx.recv();
            Some((go_tx, handle))
        } else {
            None
        };
        Ok(Probe {
            call: Some(call),
            thread,
        })
    }

    /// Makes the call (on the helper thread, waiting for it, if asked).
    pub fn make(self) {
        match (self.call, self.thread) {
            (_, Some((go, handle))) => {
                let _ = go.send(());
                let _ = handle.join();
            }
            (Some(call), None) => call.make(),
            (None, None) => {}
        }
    }
}
