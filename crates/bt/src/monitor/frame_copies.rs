//! Copies of guest frames that the user-code process maps in place of the
//! frames themselves: a few pages of a memfd of their own, shared by both
//! processes, so that a byte the monitor writes into a copy is what guest
//! user code runs next, with no host call. The engine uses them to turn a
//! guest `int $0x80` into `int3` where it is trapped often
//! (engine/int80.rs, docs/bt.md).

use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{MonitorError, PAGE_SIZE};

/// Frames that can have a copy at once.
pub const SLOTS: u32 = 64;

/// The copies' memfd and the monitor's read-write mapping of it.
#[derive(Debug)]
pub(super) struct FrameCopies {
    fd: OwnedFd,
    at: *mut u8,
}

impl FrameCopies {
    /// A memfd of [`SLOTS`] zeroed pages, mapped read-write above 4 GiB
    /// (the low 4 GiB are the guest's).
    pub(super) fn new() -> Result<FrameCopies, MonitorError> {
        let host =
            |what: &str| MonitorError::Host(format!("{what}: {}", std::io::Error::last_os_error()));
        // SAFETY: memfd_create takes a NUL-terminated name and returns a
        // new descriptor (or -1), which nothing else owns.
        let fd = unsafe { libc::memfd_create(c"popek-frame-copies".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(host("memfd_create for frame copies"));
        }
        // SAFETY: fd is ours alone (just created, checked above).
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let len = (SLOTS * PAGE_SIZE) as usize;
        // SAFETY: ftruncate of our own memfd touches no memory of ours.
        if unsafe { libc::ftruncate(std::os::fd::AsRawFd::as_raw_fd(&fd), len as i64) } != 0 {
            return Err(host("ftruncate of frame copies"));
        }
        let at = super::address_space::map_fd_above_4g(fd.as_fd(), len, "frame copies")?;
        Ok(FrameCopies { fd, at })
    }

    /// The memfd and its size, for [`super::AddressSpace::map_ram`].
    pub(super) fn backing(&self) -> (BorrowedFd<'_>, u64) {
        (self.fd.as_fd(), u64::from(SLOTS * PAGE_SIZE))
    }

    /// The memfd, for the user-code process's seccomp filter.
    pub(super) fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.fd)
    }

    /// The page of `slot`.
    pub(super) fn page(&mut self, slot: u32) -> &mut [u8] {
        assert!(slot < SLOTS, "frame copy slot {slot} of {SLOTS}");
        // SAFETY: the mapping holds SLOTS pages for the life of the
        // process and only this &mut self hands it out; the user-code
        // process maps the same pages but only reads and runs them.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.at.add((slot * PAGE_SIZE) as usize),
                PAGE_SIZE as usize,
            )
        }
    }
}
