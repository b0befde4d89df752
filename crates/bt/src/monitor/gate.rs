//! The gate of the monitor region: the low part of the monitor (vCPU
//! fields translated code reaches through GS, the TC exit stub, the
//! indirect-branch table and the translation cache, all below 4 GiB) is
//! PROT_NONE while guest user code runs directly, and read-write-execute
//! otherwise.
//!
//! This host has no protection keys (docs/host-facts.md), and 32-bit code
//! can load the host's flat selectors (0x2b) and address all of the low
//! 4 GiB through them: segment limits protect nothing there, page
//! protections do. So [`Monitor::run_user`](super::Monitor::run_user)
//! closes the gate right before it enters guest user code, and whatever
//! touches the region afterwards opens it again first: running translated
//! code, the monitor's accessors of the low vCPU fields, and every access
//! of the translation cache to its [`Region`](super::region::Region)s
//! (a region borrowed from the monitor carries the gate). Opening is lazy:
//! a user run that follows a user run (after a hidden page fault or a
//! timer tick the monitor handled by itself) costs no host call at all.
//!
//! The region is one mapping with one protection, advised MADV_HUGEPAGE
//! before its first touch: an `mprotect` of a range backed by two 2 MiB
//! huge pages changes two page-directory entries (about 2 µs a close/open
//! pair on this host), while 4 KiB pages cost in proportion to the pages
//! touched (1024 touched pages: about 140 µs a pair). Without huge pages
//! it works the same, only slower.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::address_space::{mprotect, Prot};
use super::error::MonitorError;

/// A range of host memory that is either open (read-write-execute) or
/// closed (PROT_NONE), with counters of the changes.
///
/// The gate only ever changes the protection of its whole range, so that
/// the range stays one host mapping (no VMA split, huge pages kept).
#[derive(Debug)]
pub struct Gate {
    base: usize,
    len: usize,
    open: AtomicBool,
    opens: AtomicU64,
    closes: AtomicU64,
}

/// What the gate did in one run (`popek run --stats`), and whether the
/// region is backed by huge pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionStats {
    /// Times the region was made accessible again (one `mprotect` each).
    pub opens: u64,
    /// Times the region was closed before guest user code ran.
    pub closes: u64,
    /// KiB of the region backed by transparent huge pages, as
    /// /proc/self/smaps reported it when the monitor was set up.
    pub huge_kb: u64,
}

impl RegionStats {
    /// Name and value of every counter, in display order.
    pub fn fields(&self) -> [(&'static str, u64); 3] {
        [
            ("opens", self.opens),
            ("closes", self.closes),
            ("huge pages (KiB)", self.huge_kb),
        ]
    }
}

impl Gate {
    /// A gate over `base..base+len`, which the caller mapped
    /// read-write-execute (so the gate starts open).
    ///
    /// # Safety
    /// The range must be a page-aligned mapping that lives as long as the
    /// gate, and no Rust reference into it may be live while the gate is
    /// closed (Rust code reaches it only through raw pointers and the
    /// short-lived slices of a gated `Region`).
    pub unsafe fn new(base: usize, len: usize) -> Gate {
        assert!(base + len <= 1 << 32, "a gate's range lies below 4 GiB");
        Gate {
            base,
            len,
            open: AtomicBool::new(true),
            opens: AtomicU64::new(0),
            closes: AtomicU64::new(0),
        }
    }

    /// First address of the range.
    pub fn base(&self) -> usize {
        self.base
    }

    /// Length of the range.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty (never for a real gate).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the range is accessible now.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    fn protect(&self, prot: Prot, what: &str) -> Result<(), MonitorError> {
        // SAFETY: `new`'s caller guarantees the range is a mapping of ours
        // that no Rust reference points into while it is closed; `new`
        // checked that it lies below 4 GiB.
        unsafe { mprotect(self.base as u32, self.len as u32, prot, what) }
    }

    /// Makes the range accessible (read-write-execute) if it is closed.
    pub fn try_open(&self) -> Result<(), MonitorError> {
        if self.is_open() {
            return Ok(());
        }
        self.protect(Prot::RWX, "mprotect opening the monitor region")?;
        self.open.store(true, Ordering::Relaxed);
        self.opens.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// [`Gate::try_open`] for callers that cannot report an error: an
    /// `mprotect` of our own mapping only fails when the host is out of
    /// memory for its bookkeeping, and the monitor cannot go on without
    /// its region.
    pub fn open(&self) {
        if let Err(e) = self.try_open() {
            panic!(
                "popek-bt: cannot make the monitor region {:#x}+{:#x} accessible again: {e}",
                self.base, self.len
            );
        }
    }

    /// Makes the range inaccessible (PROT_NONE) if it is open.
    pub fn close(&self) -> Result<(), MonitorError> {
        if !self.is_open() {
            return Ok(());
        }
        self.protect(Prot::NONE, "mprotect closing the monitor region")?;
        self.open.store(false, Ordering::Relaxed);
        self.closes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Opens and closes so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.opens.load(Ordering::Relaxed),
            self.closes.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::region::Region;
    use std::sync::Arc;

    /// The protection /proc/self/maps shows for the mapping at `base`.
    fn maps_prot(base: usize) -> String {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps
            .lines()
            .find(|l| {
                let (range, _) = l.split_once(' ').unwrap();
                let (lo, hi) = range.split_once('-').unwrap();
                let lo = usize::from_str_radix(lo, 16).unwrap();
                let hi = usize::from_str_radix(hi, 16).unwrap();
                (lo..hi).contains(&base)
            })
            .expect("mapped");
        line.split(' ').nth(1).unwrap().to_owned()
    }

    /// A gate over two fresh read-write-execute pages below 2 GiB.
    fn gate() -> (Region, Arc<Gate>) {
        let owner = Region::anonymous(8192, true).unwrap();
        // SAFETY: `owner` keeps the pages mapped as long as the test runs
        // and nothing holds references into them.
        let g = unsafe { Gate::new(owner.base() as usize, 8192) };
        (owner, Arc::new(g))
    }

    #[test]
    fn closes_and_opens_once_each_and_counts() {
        let (_owner, g) = gate();
        assert!(g.is_open());
        assert_eq!(maps_prot(g.base()), "rwxp");
        g.open();
        assert_eq!(g.counts(), (0, 0), "opening an open gate is free");
        g.close().unwrap();
        g.close().unwrap();
        assert!(!g.is_open());
        assert_eq!(maps_prot(g.base()), "---p");
        assert_eq!(g.counts(), (0, 1), "closing a closed gate is free");
        g.try_open().unwrap();
        g.open();
        assert_eq!(maps_prot(g.base()), "rwxp");
        assert_eq!(g.counts(), (1, 1));
    }

    #[test]
    fn a_gated_region_opens_on_access() {
        let (owner, g) = gate();
        // SAFETY: `owner` keeps the range mapped; the gate covers it.
        let mut r = unsafe { Region::gated(owner.base(), 8192, g.clone()) };
        r.bytes_mut()[4100] = 0x5A;
        g.close().unwrap();
        assert_eq!(r.bytes()[4100], 0x5A, "reading opened the region");
        assert!(g.is_open());
        g.close().unwrap();
        r.bytes_mut()[0] = 1;
        assert_eq!(g.counts(), (2, 2));
        assert_eq!(owner.bytes()[0], 1);
    }

    #[test]
    fn a_closed_gate_stops_every_access() {
        let (_owner, g) = gate();
        g.close().unwrap();
        let at = g.base() as *const u8;
        // A child process tries to read the closed range: it must die of
        // SIGSEGV. The child runs no Rust runtime code after the fork,
        // only the read and _exit.
        // SAFETY: fork in a test process; the child only reads and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: deliberately reads the closed range; _exit is
            // async-signal-safe and needs nothing of the parent's state.
            unsafe {
                let v = std::ptr::read_volatile(at);
                libc::_exit(i32::from(v) + 10);
            }
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV,
            "the child read a closed region: status {status:#x}"
        );
        g.open();
        // SAFETY: open again: the read is fine now.
        assert_eq!(unsafe { std::ptr::read_volatile(at) }, 0);
    }
}
