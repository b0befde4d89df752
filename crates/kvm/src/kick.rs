//! Kicking the vCPU out of KVM_RUN when a virtual timer's next interrupt
//! comes due, so a guest that computes without exiting still sees its timer.
//!
//! A helper thread sleeps until the deadline the run loop publishes, then
//! sends [`KICK_SIGNAL`] to the vCPU thread. The handler sets the vCPU's
//! `kvm_run.immediate_exit`, so a kick that lands just before KVM_RUN is not
//! lost: KVM_RUN then returns EINTR at once.

use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::Duration;

use machine::alarm::Alarm;

/// The signal used to kick the vCPU thread.
pub const KICK_SIGNAL: libc::c_int = libc::SIGUSR1;

/// The vCPU's `kvm_run.immediate_exit` byte, for the signal handler.
static IMMEDIATE_EXIT: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());

extern "C" fn on_kick(_sig: libc::c_int) {
    let p = IMMEDIATE_EXIT.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: `p` points into the vCPU's kvm_run mapping, which stays
        // mapped until `Kicker::drop` clears the pointer (before the vCPU is
        // dropped). A volatile byte store is async-signal-safe.
        unsafe { p.write_volatile(1) };
    }
}

/// The kicker: an alarm aimed at the vCPU thread.
pub struct Kicker {
    alarm: Alarm,
}

impl Kicker {
    /// Installs the handler and starts the kicker aimed at the calling thread.
    /// `immediate_exit` must stay valid until the kicker is dropped.
    pub fn start(immediate_exit: *mut u8) -> std::io::Result<Self> {
        IMMEDIATE_EXIT.store(immediate_exit, Ordering::Release);
        // SAFETY: installing a handler that only performs a volatile store;
        // no SA_RESTART so that the KVM_RUN ioctl returns EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_kick as extern "C" fn(libc::c_int) as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(KICK_SIGNAL, &sa, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        // SAFETY: pthread_self has no preconditions.
        let vcpu_thread = unsafe { libc::pthread_self() };
        let alarm = Alarm::start("popek-kvm-kick", move || {
            // SAFETY: the vCPU thread outlives the kicker: dropping the
            // Kicker joins the alarm thread before the vCPU thread can exit.
            unsafe { libc::pthread_kill(vcpu_thread, KICK_SIGNAL) };
        })?;
        Ok(Kicker { alarm })
    }

    /// Asks for a kick `after` from now (None: no timer armed).
    pub fn arm(&self, after: Option<Duration>) {
        self.alarm.arm(after);
    }
}

impl Drop for Kicker {
    fn drop(&mut self) {
        // The alarm field is dropped (its thread joined) after this runs;
        // no kick can come later than that, and the handler checks for null.
        IMMEDIATE_EXIT.store(std::ptr::null_mut(), Ordering::Release);
    }
}
