//! A span of host memory below 4 GiB that the cache stores into: either
//! mapped by the monitor inside its region, or owned (for tests and tools).

use std::io;
use std::sync::Arc;

use super::gate::Gate;

/// Host memory at a 32-bit address, borrowed from the monitor or owned.
///
/// Translated code runs in 32-bit compatibility mode and emitted code probes
/// tables with 32-bit addresses, so every region the cache hands out lives
/// below 4 GiB, whoever mapped it.
///
/// A region inside the monitor region carries the monitor's [`Gate`]:
/// the monitor region is inaccessible while guest user code runs, and every
/// access through [`Region::bytes`] or [`Region::bytes_mut`] opens it
/// first.
pub struct Region {
    base: u32,
    len: u32,
    owned: bool,
    gate: Option<Arc<Gate>>,
}

impl Region {
    /// Wraps memory the caller mapped read-write at `base..base+len`.
    ///
    /// # Safety
    /// `base..base+len` must be mapped readable and writable for the life of
    /// the returned value, and nothing else may hold Rust references into it.
    pub unsafe fn from_raw(base: u32, len: u32) -> Region {
        assert!(
            u64::from(base) + u64::from(len) <= 1 << 32,
            "region crosses 4 GiB"
        );
        Region {
            base,
            len,
            owned: false,
            gate: None,
        }
    }

    /// Wraps memory the caller mapped at `base..base+len`, inside the
    /// range of `gate`, which is opened before every access.
    ///
    /// # Safety
    /// As for [`Region::from_raw`], and `base..base+len` must lie inside
    /// the gate's range, which is readable and writable while open. The
    /// gate must not be closed while a slice returned by this region is
    /// alive.
    pub unsafe fn gated(base: u32, len: u32, gate: Arc<Gate>) -> Region {
        let start = base as usize;
        assert!(
            start >= gate.base() && start + len as usize <= gate.base() + gate.len(),
            "region outside its gate"
        );
        // SAFETY: the caller's guarantees are from_raw's.
        let r = unsafe { Region::from_raw(base, len) };
        Region {
            gate: Some(gate),
            ..r
        }
    }

    /// Maps `len` bytes of fresh anonymous memory below 2 GiB
    /// (`MAP_32BIT`), so that offsets turn into valid 32-bit host addresses
    /// even outside a monitor process.
    pub fn anonymous(len: u32, exec: bool) -> io::Result<Region> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty region"));
        }
        let mut prot = libc::PROT_READ | libc::PROT_WRITE;
        if exec {
            prot |= libc::PROT_EXEC;
        }
        // SAFETY: a fresh private mapping at an address the kernel picks
        // cannot alias anything Rust holds.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = p as usize;
        // MAP_32BIT promises the low 2 GiB; check rather than trust it,
        // because a wrong base would silently truncate every host address.
        if u64::try_from(base).map_or(true, |b| b + u64::from(len) > 1 << 32) {
            // SAFETY: we just mapped exactly this range.
            unsafe { libc::munmap(p, len as usize) };
            return Err(io::Error::other("MAP_32BIT mapping above 4 GiB"));
        }
        Ok(Region {
            base: base as u32,
            len,
            owned: true,
            gate: None,
        })
    }

    /// Host address of the first byte.
    pub fn base(&self) -> u32 {
        self.base
    }

    /// Length in bytes.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the region is empty (never true for a usable region).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole region as bytes.
    pub fn bytes(&self) -> &[u8] {
        if let Some(g) = &self.gate {
            g.open();
        }
        // SAFETY: construction guarantees base..base+len is mapped and
        // readable for our lifetime (a gated region's gate was just opened
        // and stays open while the slice lives), and `&self` excludes
        // writers through us.
        unsafe { std::slice::from_raw_parts(self.base as usize as *const u8, self.len as usize) }
    }

    /// The whole region as mutable bytes.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        if let Some(g) = &self.gate {
            g.open();
        }
        // SAFETY: as in `bytes`, and `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.base as usize as *mut u8, self.len as usize) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: we mapped exactly this range in `anonymous` and no
            // slice into it outlives `self`.
            unsafe { libc::munmap(self.base as usize as *mut libc::c_void, self.len as usize) };
        }
    }
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Region({:#x}..{:#x}{}{})",
            self.base,
            u64::from(self.base) + u64::from(self.len),
            if self.owned { ", owned" } else { "" },
            if self.gate.is_some() { ", gated" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_region_is_below_4g_zeroed_and_writable() {
        let mut r = Region::anonymous(8192, false).unwrap();
        assert!(u64::from(r.base()) + 8192 <= 1 << 32);
        assert_eq!(r.len(), 8192);
        assert!(r.bytes().iter().all(|&b| b == 0));
        r.bytes_mut()[8191] = 0xAB;
        assert_eq!(r.bytes()[8191], 0xAB);
    }

    #[test]
    fn borrowed_region_is_not_unmapped_on_drop() {
        let owner = Region::anonymous(4096, false).unwrap();
        {
            // SAFETY: `owner` keeps the range mapped past this scope.
            let mut view = unsafe { Region::from_raw(owner.base(), 4096) };
            view.bytes_mut()[0] = 7;
        }
        // Reading after the borrowed view dropped would fault if it unmapped.
        assert_eq!(owner.bytes()[0], 7);
    }

    #[test]
    fn empty_anonymous_region_is_refused() {
        assert!(Region::anonymous(0, false).is_err());
    }
}
