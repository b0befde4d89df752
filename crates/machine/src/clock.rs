//! Time sources for timed devices: the host monotonic clock in a VM, a
//! manual clock in unit tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The host CPU's time-stamp counter.
pub fn host_tsc() -> u64 {
    // SAFETY: RDTSC reads a counter and has no memory effects; the host
    // lets user code run it (popek never sets PR_TSC_SIGSEGV).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// A monotonic nanosecond clock.
pub trait Clock: Send + Sync {
    /// Nanoseconds since an arbitrary fixed origin.
    fn now_ns(&self) -> u64;
}

/// The host's monotonic clock.
pub struct HostClock {
    origin: Instant,
}

impl HostClock {
    /// A clock whose origin is now.
    pub fn new() -> Arc<Self> {
        Arc::new(HostClock {
            origin: Instant::now(),
        })
    }
}

impl Clock for HostClock {
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

/// A clock that moves only when told to, for deterministic device tests.
#[derive(Default)]
pub struct ManualClock {
    ns: AtomicU64,
}

impl ManualClock {
    /// A manual clock at time zero.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Moves time forward by `ns`.
    pub fn advance(&self, ns: u64) {
        self.ns.fetch_add(ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.ns.load(Ordering::SeqCst)
    }
}
