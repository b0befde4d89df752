//! Where the host's fast system-call path returns when it fails: its vDSO
//! moved so that the return address, cut to 32 bits, falls in the monitor
//! region.
//!
//! Guest user code's SYSENTER (Intel hosts) or SYSCALL (AMD) enters the
//! host's 32-bit fast system-call path, which first loads EBP from the
//! word at the guest's EBP (the vDSO's convention). When that word is
//! unreadable in the host (a page not in the shadow yet, the monitor
//! region, page 0), the host never reaches its seccomp filter: it returns
//! -EFAULT to its landing pad, the 32-bit vDSO's `int80_landing_pad`
//! placed at this process's vDSO base, on its own 32-bit code segment.
//! The base lies above 4 GiB, so compatibility mode runs the address cut
//! to 32 bits: an alias anywhere in the guest's 4 GiB, random with the
//! host's vDSO placement (about 6% of runs put it in a 256 MiB guest's
//! RAM). Where guest code was mapped there, it ran on the host's code
//! segment until it trapped, and the VM stopped as after a far jump to a
//! host segment, instead of carrying out the guest's SYSENTER.
//!
//! [`park_landing_pad`] moves the vDSO (`mremap`, which the host kernel
//! follows for its landing pad) to an address whose low 32 bits are the
//! monitor region's base, so the alias lies inside the region, which is
//! inaccessible whenever guest user code runs: the fetch there faults, and
//! the monitor knows the exit for the failed call it is. The moved vDSO is
//! made inaccessible (its address is less random now). glibc keeps
//! pointers into the vDSO's old place (`clock_gettime` and friends), so an
//! exact copy of its code goes there: vDSO code is position-independent and
//! reaches its data pages (`[vvar]`, which stay) relative to itself.
//!
//! The move leaves the old range empty between two system calls. Another
//! thread that runs vDSO code then (a clock read) faults there; a SIGSEGV
//! handler installed for the move holds it until the copy is in place and
//! lets it run on, and hands any other fault to the handler before it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

/// What [`park_landing_pad`] did, once per process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parked {
    /// The vDSO now lies at this address, its low 32 bits the region's
    /// base.
    At(u64),
    /// The vDSO stayed where the host put it, for this reason.
    Left(String),
}

static PARKED: OnceLock<Parked> = OnceLock::new();

/// Moves the host's vDSO so its fast system-call landing pad aliases into
/// the monitor region at `region_base` (once per process; later calls
/// return the first answer).
pub fn park_landing_pad(region_base: u32) -> &'static Parked {
    PARKED.get_or_init(|| match park(region_base) {
        Ok(at) => Parked::At(at),
        Err(why) => Parked::Left(why),
    })
}

/// Where the host's failed fast system call returns to, cut to 32 bits:
/// within the 4 MiB from the parked vDSO's low 32 bits (its landing pad
/// lies a few hundred bytes in), or None if the vDSO was not moved.
pub fn landing_alias() -> Option<std::ops::Range<u32>> {
    match PARKED.get()? {
        Parked::At(at) => {
            let low = *at as u32;
            Some(low..low.saturating_add(crate::contract::REGION_SIZE))
        }
        Parked::Left(_) => None,
    }
}

/// What the first [`park_landing_pad`] did, if it ran.
pub fn parked() -> Option<&'static Parked> {
    PARKED.get()
}

/// The `[vdso]` mapping's range in /proc/self/maps.
fn vdso_range(maps: &str) -> Option<(u64, u64)> {
    let line = maps.lines().find(|l| l.ends_with("[vdso]"))?;
    super::address_space::maps_range(line.split_whitespace().next()?)
}

/// How many faults of other threads in the vDSO's old range the move
/// held until the copy was in place.
pub fn faults_held() -> u64 {
    HELD.load(Ordering::Relaxed)
}

/// The vDSO's old range while it is empty ([start, end)), and whether
/// the copy is in place.
static EMPTY_START: AtomicU64 = AtomicU64::new(0);
static EMPTY_END: AtomicU64 = AtomicU64::new(0);
static COPY_PLACED: AtomicBool = AtomicBool::new(false);
/// Faults [`hold_in_empty_range`] held until the copy was in place.
static HELD: AtomicU64 = AtomicU64::new(0);
/// The SIGSEGV action before [`hold_in_empty_range`].
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// SIGSEGV during the move: a fault on nothing mapped in the vDSO's old
/// range waits for the copy and returns, so that the instruction runs
/// again on the copy (a fault taken while the range was empty may arrive
/// after the copy went in); any other fault, such as a write to the copy,
/// gets the previous action back and returns, so it happens again and
/// reaches that action.
extern "C" fn hold_in_empty_range(
    _sig: libc::c_int,
    info: *mut libc::siginfo_t,
    _ctx: *mut libc::c_void,
) {
    const SEGV_MAPERR: libc::c_int = 1;
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let (addr, code) = unsafe { ((*info).si_addr() as u64, (*info).si_code) };
    let range = EMPTY_START.load(Ordering::Acquire)..EMPTY_END.load(Ordering::Acquire);
    if range.contains(&addr) && code == SEGV_MAPERR {
        HELD.fetch_add(1, Ordering::Relaxed);
        while !COPY_PLACED.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        return;
    }
    if let Some(prev) = PREVIOUS.get() {
        // SAFETY: sigaction is async-signal-safe; `prev` is the action the
        // kernel gave us back, valid to install again.
        unsafe { libc::sigaction(libc::SIGSEGV, prev, std::ptr::null_mut()) };
    }
}

/// Installs [`hold_in_empty_range`] for SIGSEGV, keeping the action before.
fn install_hold() -> Result<(), String> {
    // SAFETY: zeroed is a valid sigaction; sigaction fills `prev` and
    // installs a handler that only reads atomics and calls sigaction.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = hold_in_empty_range as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut act.sa_mask);
        let mut prev: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGSEGV, &act, &mut prev) != 0 {
            return Err(os_error("sigaction(SIGSEGV)"));
        }
        let _ = PREVIOUS.set(prev);
    }
    Ok(())
}

fn os_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn park(region_base: u32) -> Result<u64, String> {
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map_err(|e| format!("reading /proc/self/maps: {e}"))?;
    let Some((from, end)) = vdso_range(&maps) else {
        return Err("the process has no vDSO".into());
    };
    if from >> 32 == 0 {
        return Err(format!("the vDSO lies below 4 GiB ({from:#x})"));
    }
    let len = (end - from) as usize;
    // A copy of the vDSO's code, made first so that the old range is empty
    // only between the two moves below.
    let copy = super::address_space::map_above_4g(len, false, "the vDSO copy")
        .map_err(|e| e.to_string())?
        .cast::<libc::c_void>();
    // SAFETY: the vDSO is mapped readable for `len` bytes (maps says so)
    // and the copy is fresh, writable and as long.
    unsafe {
        std::ptr::copy_nonoverlapping(from as *const u8, copy.cast::<u8>(), len);
        libc::mprotect(copy, len, libc::PROT_READ | libc::PROT_EXEC);
    }
    EMPTY_START.store(from, Ordering::Release);
    EMPTY_END.store(end, Ordering::Release);
    install_hold()?;
    let moved = move_to_window(from, len, region_base);
    if moved.is_ok() {
        // SAFETY: `from` is the vDSO's old range, empty since the move;
        // MREMAP_FIXED puts the copy exactly there.
        let r = unsafe {
            libc::mremap(
                copy,
                len,
                len,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                from as *mut libc::c_void,
            )
        };
        if r == libc::MAP_FAILED {
            // Nothing can run glibc's vDSO calls any more: better to stop.
            eprintln!(
                "popek: {}",
                os_error("mremap of the vDSO copy into its place")
            );
            std::process::abort();
        }
    } else {
        // SAFETY: the copy is ours and nothing refers to it.
        unsafe { libc::munmap(copy, len) };
    }
    COPY_PLACED.store(true, Ordering::Release);
    // The holding handler stays: a thread whose fault in the empty range
    // is being delivered now must still find it (it returns at once). The
    // monitor's own handlers replace it.
    moved
}

/// Moves the vDSO at `from` (`len` bytes) to a free range in a 4 GiB
/// window near its own whose low 32 bits are `low`.
fn move_to_window(from: u64, len: usize, low: u32) -> Result<u64, String> {
    const TOP: u64 = 1 << 47;
    let window = from >> 32;
    for step in [1i64, -1, 2, -2, 3, -3, 4, -4] {
        let Some(w) = window.checked_add_signed(step).filter(|&w| w != 0) else {
            continue;
        };
        let to = (w << 32) | u64::from(low);
        if to + len as u64 > TOP {
            continue;
        }
        // A placeholder first: MAP_FIXED_NOREPLACE fails where anything is
        // mapped, and MREMAP_FIXED then replaces only the placeholder.
        // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping.
        let p = unsafe {
            libc::mmap(
                to as *mut libc::c_void,
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            continue;
        }
        if p as u64 != to {
            // A kernel that takes the flag as a hint.
            // SAFETY: the placeholder is ours.
            unsafe { libc::munmap(p, len) };
            return Err("MAP_FIXED_NOREPLACE unsupported".into());
        }
        // SAFETY: the vDSO's code is not running (one thread, which is
        // here) and its copy goes to the old place before any vDSO call;
        // the target is our placeholder.
        let r = unsafe {
            libc::mremap(
                from as *mut libc::c_void,
                len,
                len,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                p,
            )
        };
        if r == libc::MAP_FAILED {
            let e = os_error("mremap of the vDSO");
            // SAFETY: the placeholder is ours.
            unsafe { libc::munmap(p, len) };
            return Err(e);
        }
        // Nothing runs the moved vDSO (the host only takes its address
        // for the landing pad, and the copy serves glibc), and its low 32
        // bits are now known: no code of the host's at a less random
        // address for 64-bit guest code to aim at.
        // (Should the host refuse, the copy must still go in: the move is
        // done. The direct_exec test checks the protection.)
        // SAFETY: the moved vDSO is ours and nothing uses its pages.
        unsafe { libc::mprotect(r, len, libc::PROT_NONE) };
        return Ok(to);
    }
    Err("no free range for the vDSO near its place".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vdso_range_is_read_from_its_maps_line() {
        let maps = "7f00-8000 r--p 00000000 00:00 0    [vvar]\n\
                    7fbb9b6ab000-7fbb9b6ad000 r-xp 00000000 00:00 0                          [vdso]\n";
        assert_eq!(vdso_range(maps), Some((0x7fbb9b6ab000, 0x7fbb9b6ad000)));
        assert_eq!(vdso_range("7f00-8000 r--p 0 00:00 0 [vvar]\n"), None);
    }
}
