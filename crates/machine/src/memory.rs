//! Guest physical RAM: one memfd, mapped once here for the monitor.
//!
//! A memfd (rather than anonymous memory) lets the BT engine map the same
//! pages a second time at guest linear addresses, and lets KVM use the same
//! host mapping as guest-physical memory.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use memmap2::{MmapMut, MmapOptions};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};

/// Errors from guest memory creation or access.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The requested size is zero, not page aligned, or above 4 GiB.
    #[error("guest RAM size {0:#x} is invalid: it must be a non-zero multiple of 4 KiB and at most 3.5 GiB")]
    BadSize(u64),
    /// Creating or mapping the memfd failed.
    #[error("cannot create guest RAM: {0}")]
    Host(#[from] std::io::Error),
    /// An access fell outside guest RAM.
    #[error("guest physical access {addr:#x}+{len:#x} is outside RAM (size {size:#x})")]
    OutOfRange {
        /// Start of the access.
        addr: u64,
        /// Length of the access.
        len: u64,
        /// Size of RAM.
        size: u64,
    },
}

/// Largest RAM we give a 32-bit guest: below the PCI hole at 3.5 GiB.
pub const MAX_RAM: u64 = 0xE000_0000;

/// Guest physical memory starting at guest physical address 0.
pub struct GuestMemory {
    fd: OwnedFd,
    map: MmapMut,
}

impl GuestMemory {
    /// Creates `size` bytes of zeroed guest RAM.
    pub fn new(size: u64) -> Result<Self, MemoryError> {
        if size == 0 || !size.is_multiple_of(4096) || size > MAX_RAM {
            return Err(MemoryError::BadSize(size));
        }
        let fd = memfd_create(c"popek-guest-ram", MemFdCreateFlag::MFD_CLOEXEC)
            .map_err(std::io::Error::from)?;
        nix::unistd::ftruncate(&fd, size as i64).map_err(std::io::Error::from)?;
        // SAFETY: the memfd is private to this process and is never truncated
        // after this point, so the mapping stays valid for the life of `map`.
        // Aliases (the BT engine's guest-linear mappings, KVM) go through raw
        // pointers that the monitor owns; Rust references into `map` are
        // short-lived and taken only while the guest is not running.
        let map = unsafe { MmapOptions::new().len(size as usize).map_mut(&fd)? };
        Ok(GuestMemory { fd, map })
    }

    /// Size of guest RAM in bytes.
    pub fn size(&self) -> u64 {
        self.map.len() as u64
    }

    /// The memfd behind guest RAM, for engines that map it again.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The host address of guest physical address 0 in the monitor's mapping.
    pub fn host_base(&self) -> *mut u8 {
        self.map.as_ptr() as *mut u8
    }

    fn range(&self, addr: u64, len: usize) -> Result<std::ops::Range<usize>, MemoryError> {
        let end = addr.checked_add(len as u64);
        match end {
            Some(end) if end <= self.size() => Ok(addr as usize..end as usize),
            _ => Err(MemoryError::OutOfRange {
                addr,
                len: len as u64,
                size: self.size(),
            }),
        }
    }

    /// A view of `len` bytes at guest physical `addr`.
    pub fn slice(&self, addr: u64, len: usize) -> Result<&[u8], MemoryError> {
        let r = self.range(addr, len)?;
        Ok(&self.map[r])
    }

    /// A mutable view of `len` bytes at guest physical `addr`.
    pub fn slice_mut(&mut self, addr: u64, len: usize) -> Result<&mut [u8], MemoryError> {
        let r = self.range(addr, len)?;
        Ok(&mut self.map[r])
    }

    /// Copies guest memory at `addr` into `buf`.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        buf.copy_from_slice(self.slice(addr, buf.len())?);
        Ok(())
    }

    /// Copies `data` into guest memory at `addr`.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.slice_mut(addr, data.len())?.copy_from_slice(data);
        Ok(())
    }

    /// Reads a little-endian u32.
    pub fn read_u32(&self, addr: u64) -> Result<u32, MemoryError> {
        let mut b = [0; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Writes a little-endian u32.
    pub fn write_u32(&mut self, addr: u64, value: u32) -> Result<(), MemoryError> {
        self.write(addr, &value.to_le_bytes())
    }

    /// Reads a little-endian u16.
    pub fn read_u16(&self, addr: u64) -> Result<u16, MemoryError> {
        let mut b = [0; 2];
        self.read(addr, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// Writes a little-endian u16.
    pub fn write_u16(&mut self, addr: u64, value: u16) -> Result<(), MemoryError> {
        self.write(addr, &value.to_le_bytes())
    }
}

/// Guest linear memory with paging off: linear addresses are physical.
/// Accesses past RAM read as all ones and drop writes, as on a PC bus.
pub struct PhysicalLinear<'a>(pub &'a mut GuestMemory);

impl x86::interrupt::LinearMemory for PhysicalLinear<'_> {
    fn read(&mut self, at: u32, buf: &mut [u8]) -> Result<(), x86::interrupt::Exception> {
        if self.0.read(u64::from(at), buf).is_err() {
            buf.fill(0xFF);
        }
        Ok(())
    }

    fn write(&mut self, at: u32, data: &[u8]) -> Result<(), x86::interrupt::Exception> {
        let _ = self.0.write(u64::from(at), data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_memory_is_zeroed_and_round_trips() {
        let mut m = GuestMemory::new(1 << 20).unwrap();
        assert_eq!(m.read_u32(0x1000).unwrap(), 0);
        m.write_u32(0x1000, 0xDEADBEEF).unwrap();
        assert_eq!(m.read_u32(0x1000).unwrap(), 0xDEADBEEF);
        assert_eq!(m.read_u16(0x1002).unwrap(), 0xDEAD);
    }

    #[test]
    fn accesses_past_the_end_are_refused() {
        let m = GuestMemory::new(1 << 20).unwrap();
        assert!(matches!(
            m.read_u32((1 << 20) - 2),
            Err(MemoryError::OutOfRange { .. })
        ));
        assert!(matches!(
            m.slice(u64::MAX, 2),
            Err(MemoryError::OutOfRange { .. })
        ));
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(matches!(GuestMemory::new(0), Err(MemoryError::BadSize(0))));
        assert!(matches!(
            GuestMemory::new(4097),
            Err(MemoryError::BadSize(_))
        ));
        assert!(matches!(
            GuestMemory::new(4 << 30),
            Err(MemoryError::BadSize(_))
        ));
    }
}
