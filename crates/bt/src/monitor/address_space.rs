//! The guest's linear address space inside the host process.
//!
//! Guest linear address X is host virtual address X, so the whole low 4 GiB
//! of the process belongs to the guest and to the monitor (its region, where
//! the [`Layout`] puts it). Everything is reserved PROT_NONE at start so
//! that no host allocation can land there later.

use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use super::error::MonitorError;
use crate::contract::{Layout, REGION_SIZE};

/// Size of a host and guest page.
pub const PAGE_SIZE: u32 = 4096;

/// The lowest address the host lets us map (`vm.mmap_min_addr` is 4096 here).
pub const RESERVE_START: u64 = 0x1000;

/// One past the end of the reservation: all of 32-bit linear space.
pub const RESERVE_END: u64 = 1 << 32;

/// Page protections for a guest mapping.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Prot {
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Executable.
    pub exec: bool,
}

impl Prot {
    /// No access.
    pub const NONE: Prot = Prot {
        read: false,
        write: false,
        exec: false,
    };
    /// Read only.
    pub const R: Prot = Prot {
        read: true,
        write: false,
        exec: false,
    };
    /// Read, write and execute.
    pub const RWX: Prot = Prot {
        read: true,
        write: true,
        exec: true,
    };
    /// Read and execute, no write.
    pub const RX: Prot = Prot {
        read: true,
        write: false,
        exec: true,
    };
    /// Read and write, no execute.
    pub const RW: Prot = Prot {
        read: true,
        write: true,
        exec: false,
    };

    fn bits(self) -> libc::c_int {
        let mut p = libc::PROT_NONE;
        if self.read {
            p |= libc::PROT_READ;
        }
        if self.write {
            p |= libc::PROT_WRITE;
        }
        if self.exec {
            p |= libc::PROT_EXEC;
        }
        p
    }
}

impl fmt::Debug for Prot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = |b: bool, ch: char| if b { ch } else { '-' };
        write!(
            f,
            "{}{}{}",
            c(self.read, 'r'),
            c(self.write, 'w'),
            c(self.exec, 'x')
        )
    }
}

/// The reservation of guest linear space [4 KiB, 4 GiB) in this process,
/// with the monitor region inside it where `layout` puts it.
///
/// Dropping it does not unmap anything: the monitor is process-wide and the
/// reservation lives until the process exits.
#[derive(Debug)]
pub struct AddressSpace {
    layout: Layout,
    /// Unmapped guest ranges are holes, not PROT_NONE reservation (after
    /// [`AddressSpace::punch_reservation`]: both processes when guest user
    /// code has a process of its own).
    holes: bool,
}

/// Base of this process's monitor region once it is mapped (0 before): for
/// the code that has no [`AddressSpace`] at hand (the smaps reader).
static REGION_BASE: AtomicU32 = AtomicU32::new(0);

/// Where this process's monitor region is mapped, if it is.
pub fn monitor_region() -> Option<Layout> {
    Layout::at(REGION_BASE.load(Ordering::Relaxed))
}

fn last_os_error(what: &str) -> MonitorError {
    MonitorError::Host(format!("{what}: {}", std::io::Error::last_os_error()))
}

/// The lines of /proc/self/maps that lie (partly) below 4 GiB.
fn low_mappings() -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter(|line| {
            line.split('-')
                .next()
                .and_then(|start| u64::from_str_radix(start, 16).ok())
                .is_some_and(|start| start < RESERVE_END)
        })
        .map(str::to_owned)
        .collect()
}

impl AddressSpace {
    /// Reserves [4 KiB, 4 GiB) PROT_NONE, the monitor region to lie where
    /// `layout` puts it; fails if the host already put something there (a
    /// non-PIE binary, a low heap, ...).
    pub fn reserve(layout: Layout) -> Result<AddressSpace, MonitorError> {
        let taken = low_mappings();
        if !taken.is_empty() {
            return Err(MonitorError::LowSpaceTaken(taken.join("\n")));
        }
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping, so
        // no memory this process uses can be affected; we checked above that
        // the range is empty and the kernel checks again atomically.
        let p = unsafe {
            libc::mmap(
                RESERVE_START as *mut libc::c_void,
                (RESERVE_END - RESERVE_START) as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE
                    | libc::MAP_ANONYMOUS
                    | libc::MAP_NORESERVE
                    | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            let err = std::io::Error::last_os_error();
            return Err(MonitorError::LowSpaceTaken(format!(
                "mmap of [{RESERVE_START:#x}, {RESERVE_END:#x}) failed: {err}\n{}",
                low_mappings().join("\n")
            )));
        }
        if p as u64 != RESERVE_START {
            // A kernel older than 4.17 ignores MAP_FIXED_NOREPLACE and treats
            // the address as a hint.
            // SAFETY: `p` is the mapping we just created and nobody uses it.
            unsafe { libc::munmap(p, (RESERVE_END - RESERVE_START) as usize) };
            return Err(MonitorError::Host(format!(
                "the kernel placed the 4 GiB reservation at {p:p}: MAP_FIXED_NOREPLACE unsupported"
            )));
        }
        Ok(AddressSpace {
            layout,
            holes: false,
        })
    }

    fn check_range(linear: u32, len: u32) -> Result<(), MonitorError> {
        let end = u64::from(linear) + u64::from(len);
        if linear & (PAGE_SIZE - 1) != 0
            || len & (PAGE_SIZE - 1) != 0
            || len == 0
            || u64::from(linear) < RESERVE_START
            || end > RESERVE_END
        {
            return Err(MonitorError::BadRange { linear, len });
        }
        Ok(())
    }

    /// A guest range: inside the reservation and clear of the monitor
    /// region.
    fn check_guest_range(&self, linear: u32, len: u32) -> Result<(), MonitorError> {
        Self::check_range(linear, len)?;
        let end = u64::from(linear) + u64::from(len);
        if u64::from(linear) < self.layout.end() && end > u64::from(self.layout.base()) {
            return Err(MonitorError::BadRange { linear, len });
        }
        Ok(())
    }

    /// Maps `len` bytes of the guest RAM memfd (of `ram_size` bytes) from offset `phys` at guest
    /// linear `linear` with `prot`, replacing whatever was there; with
    /// `populate` the host page tables are filled at once (one call instead
    /// of a host fault per page on first touch).
    pub fn map_ram(
        &mut self,
        (ram, ram_size): (BorrowedFd<'_>, u64),
        linear: u32,
        phys: u64,
        len: u32,
        prot: Prot,
        populate: bool,
    ) -> Result<(), MonitorError> {
        self.check_guest_range(linear, len)?;
        if phys & u64::from(PAGE_SIZE - 1) != 0 || phys + u64::from(len) > ram_size {
            return Err(MonitorError::BadRange { linear, len });
        }
        // SAFETY: the range lies inside our own reservation outside the
        // monitor region (checked above), which only guest code and the
        // monitor's raw pointers use, so MAP_FIXED replaces nothing Rust holds
        // references to.
        let p = unsafe {
            libc::mmap(
                linear as usize as *mut libc::c_void,
                len as usize,
                prot.bits(),
                libc::MAP_SHARED | libc::MAP_FIXED | if populate { libc::MAP_POPULATE } else { 0 },
                ram.as_raw_fd(),
                phys as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(last_os_error("mmap of guest RAM"));
        }
        Ok(())
    }

    /// Returns [linear, linear+len) to the PROT_NONE reservation, or
    /// makes it a hole where the reservation was punched.
    pub fn unmap(&mut self, linear: u32, len: u32) -> Result<(), MonitorError> {
        self.check_guest_range(linear, len)?;
        if self.holes {
            // SAFETY: as in map_ram: the range is ours and outside the
            // monitor region.
            return unsafe { hole(u64::from(linear), u64::from(linear) + u64::from(len)) };
        }
        // SAFETY: as in map_ram: the range is ours and outside the monitor
        // region.
        let p = unsafe { reserve_fixed(u64::from(linear), u64::from(len)) };
        if p == libc::MAP_FAILED {
            return Err(last_os_error("mmap PROT_NONE"));
        }
        Ok(())
    }

    /// Unmaps what is left of the PROT_NONE reservation outside the
    /// monitor region, and from now on leaves holes where guest pages go
    /// (but for `hole`'s anchors).
    ///
    /// A page mapped into a hole costs the host ~6.5 k cycles against
    /// ~9.5 k over the reservation, which the kernel must split (and merge
    /// again when the page goes: ~3.5 k against ~5.7 k), measured on this
    /// machine kind (docs/perf.md). No host allocation can land in a
    /// hole: the host kernel places a mapping without a fixed address in
    /// the highest gap below its mmap base (~128 TiB) that fits, and
    /// terabytes of gaps lie above 4 GiB; fixed mappings below 4 GiB are
    /// made only for guest pages and the monitor region (docs/security.md).
    /// Call before the process is confined: it reads /proc/self/maps.
    pub fn punch_reservation(&mut self) -> Result<(), MonitorError> {
        let maps = std::fs::read_to_string("/proc/self/maps")
            .map_err(|e| MonitorError::Host(format!("reading /proc/self/maps: {e}")))?;
        for (start, end) in reservation_ranges(&maps) {
            let start = start.max(RESERVE_START);
            let end = end.min(RESERVE_END);
            for (from, to) in [
                (start, end.min(u64::from(self.layout.base()))),
                (start.max(self.layout.end()), end),
            ] {
                if from < to {
                    // SAFETY: an anonymous PROT_NONE range of our own
                    // reservation outside the monitor region: nothing in it
                    // is memory anything uses.
                    unsafe { hole(from, to)? };
                }
            }
        }
        self.holes = true;
        Ok(())
    }

    /// Changes the protections of an already mapped guest range.
    pub fn protect(&mut self, linear: u32, len: u32, prot: Prot) -> Result<(), MonitorError> {
        self.check_guest_range(linear, len)?;
        // SAFETY: the range is inside our reservation, outside the monitor
        // region.
        unsafe { mprotect(linear, len, prot, "mprotect") }
    }

    /// Maps the whole monitor region, where the layout puts it, as one
    /// anonymous zeroed read-write-execute mapping, advised MADV_HUGEPAGE
    /// and touched once in every 2 MiB so that the host backs it with huge
    /// pages where it can (then changing its protection is cheap, see
    /// [`super::gate`]). Returns its address.
    pub(crate) fn map_monitor_region(&mut self) -> Result<*mut u8, MonitorError> {
        let len = REGION_SIZE as usize;
        // SAFETY: the range is the monitor region of our own reservation,
        // which nothing else maps.
        let p = unsafe {
            libc::mmap(
                self.layout.base() as usize as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(last_os_error("mmap of the monitor region"));
        }
        // Advice only: without transparent huge pages (or with THP off) the
        // region works the same, its protection changes just cost more.
        // SAFETY: madvise on our own fresh mapping.
        unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) };
        const HUGE: usize = 2 << 20;
        for at in (0..len).step_by(HUGE) {
            // A write, not a read: a read fault may map the shared huge
            // zero page, and the first real write would then fault again.
            // SAFETY: inside the fresh read-write mapping.
            unsafe { p.cast::<u8>().add(at).write_volatile(0) };
        }
        REGION_BASE.store(self.layout.base(), Ordering::Relaxed);
        Ok(p.cast())
    }
}

/// The span of guest linear space one host page table maps: a range
/// with no mapping across a whole span loses its page table.
const TABLE_SPAN: u64 = 2 << 20;

/// Unmaps [from, to), but for the first page of each page-table span in
/// it, which goes back to the PROT_NONE reservation: an anchor that keeps
/// the host's page tables there. Without them, the last page to leave a
/// span takes its page table with it (and a TLB flush), and the next page
/// mapped there builds a new one: a page mapped again and again among
/// holes cost ~13.3 k cycles against ~9.5 k among anchors or reservation.
///
/// # Safety
/// The range must hold no memory that Rust code references.
unsafe fn hole(from: u64, to: u64) -> Result<(), MonitorError> {
    // SAFETY: the caller guarantees nothing live is in the range.
    if unsafe { libc::munmap(from as usize as *mut libc::c_void, (to - from) as usize) } != 0 {
        return Err(last_os_error("munmap of guest pages"));
    }
    let mut anchor = from.next_multiple_of(TABLE_SPAN);
    while anchor < to {
        // SAFETY: inside the range just unmapped.
        if unsafe { reserve_fixed(anchor, u64::from(PAGE_SIZE)) } == libc::MAP_FAILED {
            return Err(last_os_error("mmap PROT_NONE"));
        }
        anchor += TABLE_SPAN;
    }
    Ok(())
}

/// The anonymous PROT_NONE private mappings below 4 GiB in `maps` (the
/// text of /proc/self/maps): the reservation, as [start, end).
fn reservation_ranges(maps: &str) -> Vec<(u64, u64)> {
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (range, perms, _off, _dev, inode) =
                (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
            if perms != "---p" || inode != "0" || f.next().is_some() {
                return None;
            }
            let (a, b) = maps_range(range)?;
            (a < RESERVE_END).then_some((a, b))
        })
        .collect()
}

/// The [start, end) of a /proc/self/maps line's first field
/// (`start-end`, hexadecimal).
pub(super) fn maps_range(field: &str) -> Option<(u64, u64)> {
    let (a, b) = field.split_once('-')?;
    Some((
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
    ))
}

/// A fresh zeroed read-write anonymous mapping of `len` bytes, private, or
/// `shared` with the processes forked later, wherever the kernel puts it:
/// the low 4 GiB are reserved, so above them, out of reach of 32-bit code
/// (checked). `what` names it in errors.
pub fn map_above_4g(len: usize, shared: bool, what: &str) -> Result<*mut u8, MonitorError> {
    let sharing = if shared {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE
    };
    map_high(len, sharing | libc::MAP_ANONYMOUS, None, what)
}

/// [`map_above_4g`] of the first `len` bytes of `fd`, shared.
pub fn map_fd_above_4g(
    fd: BorrowedFd<'_>,
    len: usize,
    what: &str,
) -> Result<*mut u8, MonitorError> {
    map_high(len, libc::MAP_SHARED, Some(fd), what)
}

fn map_high(
    len: usize,
    flags: i32,
    fd: Option<BorrowedFd<'_>>,
    what: &str,
) -> Result<*mut u8, MonitorError> {
    // SAFETY: a new mapping at an address of the kernel's choosing
    // replaces nothing.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd.map_or(-1, |f| f.as_raw_fd()),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(last_os_error(&format!("mmap of {what}")));
    }
    if (p as u64) < RESERVE_END {
        return Err(MonitorError::Host(format!(
            "{what} landed at {p:p}, within reach of 32-bit code"
        )));
    }
    Ok(p.cast())
}

/// KiB of the monitor region that the host backs with transparent huge
/// pages (`AnonHugePages` of its mapping in /proc/self/smaps), or `None`
/// if no region is mapped, smaps cannot be read or shows no such mapping.
pub fn monitor_region_huge_kb() -> Option<u64> {
    let base = monitor_region()?.base();
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let header = format!("{base:x}-");
    let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&header));
    lines.next()?;
    lines
        // Field lines start with a capitalised name; the next mapping's
        // header starts with a hexadecimal address.
        .take_while(|l| {
            l.split(':')
                .next()
                .is_some_and(|k| k.contains(char::is_uppercase))
        })
        .find_map(|l| l.strip_prefix("AnonHugePages:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Sets the protections of [linear, linear+len); `what` names the call in
/// errors.
///
/// # Safety
/// The range must be a mapping of ours (our reservation, the monitor
/// region) and hold no memory that Rust code references.
pub(super) unsafe fn mprotect(
    linear: u32,
    len: u32,
    prot: Prot,
    what: &str,
) -> Result<(), MonitorError> {
    // SAFETY: the caller guarantees the range is ours and unreferenced.
    let r = unsafe {
        libc::mprotect(
            linear as usize as *mut libc::c_void,
            len as usize,
            prot.bits(),
        )
    };
    if r != 0 {
        return Err(last_os_error(what));
    }
    Ok(())
}

/// Maps [linear, linear+len) PROT_NONE, replacing what is there.
///
/// # Safety
/// The range must not hold memory that Rust code references.
unsafe fn reserve_fixed(linear: u64, len: u64) -> *mut libc::c_void {
    // SAFETY: the caller guarantees nothing live is in the range.
    unsafe {
        libc::mmap(
            linear as usize as *mut libc::c_void,
            len as usize,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
            0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reservation_is_the_low_anonymous_inaccessible_private_ranges() {
        let maps = "\
00001000-00400000 ---p 00000000 00:00 0 
00400000-00800000 rwxs 00400000 00:01 1234                               /memfd:guest-ram (deleted)
00800000-ffc00000 ---p 00000000 00:00 0 
ffc00000-ffc02000 ---s 00000000 00:01 1234                               /memfd:guest-ram (deleted)
ffc02000-100000000 ---p 00000000 00:00 0 
7f0000000000-7f0000001000 ---p 00000000 00:00 0 
55d0c0000000-55d0c0001000 r--p 00000000 08:01 99                         /usr/bin/popek
";
        assert_eq!(
            reservation_ranges(maps),
            [
                (0x1000, 0x40_0000),
                (0x80_0000, 0xffc0_0000),
                (0xffc0_2000, 1 << 32)
            ]
        );
    }

    /// Whether /proc/self/maps shows a mapping holding `addr`.
    fn mapped(addr: u64) -> bool {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines().any(|l| {
            let (a, b) = maps_range(l.split_whitespace().next().unwrap()).unwrap();
            (a..b).contains(&addr)
        })
    }

    #[test]
    fn a_hole_keeps_one_reserved_page_in_each_page_table_span() {
        // A reservation of our own above 4 GiB (the low one belongs to the
        // monitor tests), 8 MiB so that 6 MiB of it are span-aligned.
        let len = 4 * TABLE_SPAN as usize;
        // SAFETY: a fresh mapping at an address of the kernel's choosing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let base = (p as u64).next_multiple_of(TABLE_SPAN);
        let page = u64::from(PAGE_SIZE);
        // SAFETY: inside the mapping just made, which nothing uses.
        unsafe { hole(base + page, base + 3 * TABLE_SPAN).unwrap() };
        assert!(mapped(base), "before the range");
        assert!(!mapped(base + page));
        assert!(!mapped(base + TABLE_SPAN - page));
        assert!(mapped(base + TABLE_SPAN), "an anchor");
        assert!(!mapped(base + TABLE_SPAN + page));
        assert!(mapped(base + 2 * TABLE_SPAN), "an anchor");
        assert!(!mapped(base + 3 * TABLE_SPAN - page));
        assert!(mapped(base + 3 * TABLE_SPAN), "after the range");
        // SAFETY: ours, and nothing uses it.
        unsafe { libc::munmap(p, len) };
    }
}
