//! Kicking the vCPU out of KVM_RUN when the virtual PIT's next interrupt
//! comes due, so a guest that computes without exiting still sees its timer.
//!
//! A helper thread sleeps until the deadline the run loop publishes, then
//! sends [`KICK_SIGNAL`] to the vCPU thread. The handler sets the vCPU's
//! `kvm_run.immediate_exit`, so a kick that lands just before KVM_RUN is not
//! lost: KVM_RUN then returns EINTR at once.

use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

#[derive(Default)]
struct Shared {
    deadline: Option<Instant>,
    quit: bool,
}

/// The kicker thread and its shared deadline.
pub struct Kicker {
    shared: Arc<(Mutex<Shared>, Condvar)>,
    thread: Option<JoinHandle<()>>,
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
        let shared = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("popek-kvm-kick".into())
            .spawn(move || kicker_loop(&s, vcpu_thread))?;
        Ok(Kicker {
            shared,
            thread: Some(thread),
        })
    }

    /// Asks for a kick `after` from now (None: no timer armed).
    pub fn arm(&self, after: Option<Duration>) {
        let (m, cv) = &*self.shared;
        m.lock().unwrap().deadline = after.map(|d| Instant::now() + d);
        cv.notify_one();
    }
}

fn kicker_loop(shared: &(Mutex<Shared>, Condvar), vcpu: libc::pthread_t) {
    let (m, cv) = shared;
    let mut s = m.lock().unwrap();
    loop {
        if s.quit {
            return;
        }
        match s.deadline {
            None => s = cv.wait(s).unwrap(),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    s.deadline = None;
                    // SAFETY: the vCPU thread outlives the kicker: Kicker::drop
                    // joins this thread before the vCPU thread can exit.
                    unsafe { libc::pthread_kill(vcpu, KICK_SIGNAL) };
                } else {
                    s = cv.wait_timeout(s, d - now).unwrap().0;
                }
            }
        }
    }
}

impl Drop for Kicker {
    fn drop(&mut self) {
        {
            let (m, cv) = &*self.shared;
            m.lock().unwrap().quit = true;
            cv.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        IMMEDIATE_EXIT.store(std::ptr::null_mut(), Ordering::Release);
    }
}
