//! Guest physical RAM: one memfd, mapped once here for the monitor.
//!
//! A memfd (rather than anonymous memory) lets the BT engine map the same
//! pages a second time at guest linear addresses, and lets KVM use the same
//! host mapping as guest-physical memory.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use memmap2::{MmapMut, MmapOptions};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use x86::interrupt::{vector, Exception};
use x86::paging::{self, Access, PagingRegs, PAGE_4K};

use crate::bus::Bus;

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

impl x86::paging::PhysMemory for GuestMemory {
    fn read_u32(&mut self, addr: u64) -> u32 {
        GuestMemory::read_u32(self, addr).unwrap_or(u32::MAX)
    }

    fn write_u32(&mut self, addr: u64, value: u32) {
        let _ = GuestMemory::write_u32(self, addr, value);
    }
}

/// Guest linear memory as the guest's CPU sees it: through the guest's page
/// tables when paging is on (setting accessed and dirty bits, raising #PF
/// with the CPU's error code), identity otherwise. Physical addresses past
/// RAM go to the MMIO bus if the view has one ([`GuestLinear::with_mmio`]);
/// without one they read as all ones and drop writes.
pub struct GuestLinear<'a> {
    mem: &'a mut GuestMemory,
    mmio: Option<&'a Bus>,
    regs: PagingRegs,
    /// Explicit accesses are user accesses (the CPU is at CPL 3).
    user: bool,
    /// CR2 of the last page fault raised.
    fault: Option<u32>,
    /// Physical page numbers written through this view, in order (an
    /// engine checks them for translated code).
    pub written: Vec<u32>,
    /// The page walks this view made, or those of a cache it was lent
    /// ([`Self::with_walks`]), as a TLB holds them.
    walks: Walks<'a>,
}

/// A view's walk cache: its own (made at its first walk: a view is moved
/// by value as it is built, and one lent the engine's never needs it), or
/// one an engine keeps across views.
enum Walks<'a> {
    Own(Option<Box<WalkCache>>),
    Kept(&'a mut WalkCache),
}

impl Walks<'_> {
    fn cache(&mut self) -> &mut WalkCache {
        match self {
            Walks::Own(c) => c.get_or_insert_with(Box::default),
            Walks::Kept(c) => c,
        }
    }
}

/// Slots of a [`WalkCache`], direct-mapped by linear page.
const WALK_SLOTS: usize = 32;

/// A slot's bits below the linear page: the access it was walked for.
const SLOT_VALID: u64 = 1;
const SLOT_WRITE: u64 = 2;
const SLOT_USER: u64 = 4;
const SLOT_FETCH: u64 = 8;

/// Translations of guest linear pages, kept as a TLB keeps them: until
/// the paging registers change, or the owner flushes them where a CPU's
/// TLB would lose them (a CR3 write, INVLPG, a page fault). One view's
/// emulated instruction or event delivery hits the same few pages again
/// and again (an interrupt delivery walked the guest's tables ~10 times);
/// an engine that lends its cache to each view ([`GuestLinear::with_walks`])
/// skips the walks of the IDT, GDT, TSS and kernel stack pages at every
/// system call and IRET. Only walks that succeeded are kept, with the
/// accessed (and, for a write, dirty) bit they set, so a hit is what the
/// CPU may do with a cached translation; a walk that raises a page fault
/// empties the cache, as the fault drops the CPU's entries for its
/// address and its handler may change the mapping without an INVLPG.
#[derive(Clone, Copy, Debug, Default)]
pub struct WalkCache {
    /// The paging registers the entries were walked under.
    regs: Option<PagingRegs>,
    /// Per slot: the physical page number (high half), the linear page
    /// address and the access (low half, `SLOT_*`); 0 when empty.
    entries: [u64; WALK_SLOTS],
}

impl WalkCache {
    fn slot(page: u32) -> usize {
        (page >> 12) as usize % WALK_SLOTS
    }

    fn bits(access: Access) -> u64 {
        SLOT_VALID
            | if access.write { SLOT_WRITE } else { 0 }
            | if access.user { SLOT_USER } else { 0 }
            | if access.fetch { SLOT_FETCH } else { 0 }
    }

    /// The physical page address of `page` for `access`, if a walk of the
    /// same page for the same access, or for a write where this is a read
    /// by the same privilege, is held.
    fn get(&self, page: u32, access: Access) -> Option<u64> {
        let e = self.entries[Self::slot(page)];
        if e & SLOT_VALID == 0 || e as u32 & !0xFFF != page {
            return None;
        }
        let (held, want) = (e & 0xF, Self::bits(access));
        let covers = held == want
            || (held & SLOT_WRITE != 0
                && !access.write
                && !access.fetch
                && held & SLOT_USER == want & SLOT_USER);
        covers.then_some((e >> 32) << 12)
    }

    fn put(&mut self, page: u32, access: Access, phys: u64) {
        self.entries[Self::slot(page)] =
            ((phys >> 12) << 32) | u64::from(page) | Self::bits(access);
    }

    /// Forgets every translation.
    pub fn flush(&mut self) {
        self.entries = [0; WALK_SLOTS];
    }
}

/// One page's piece of a linear access.
#[derive(Clone, Copy)]
struct Piece {
    phys: u64,
    offset: usize,
    len: usize,
}

impl<'a> GuestLinear<'a> {
    /// The view of `cpu`'s current mode (its paging registers and CPL).
    pub fn new(mem: &'a mut GuestMemory, cpu: &x86::CpuState) -> GuestLinear<'a> {
        GuestLinear {
            mem,
            mmio: None,
            regs: PagingRegs::of(cpu),
            user: cpu.cpl() == 3,
            fault: None,
            written: Vec::new(),
            walks: Walks::Own(None),
        }
    }

    /// Guest memory with paging off: linear addresses are physical.
    pub fn physical(mem: &'a mut GuestMemory) -> GuestLinear<'a> {
        GuestLinear {
            mem,
            mmio: None,
            regs: PagingRegs {
                cr0: 0,
                cr3: 0,
                cr4: 0,
                nxe: false,
            },
            user: false,
            fault: None,
            written: Vec::new(),
            walks: Walks::Own(None),
        }
    }

    /// The same view using (and adding to) the translations `walks`
    /// holds, which it empties first if they were walked under other
    /// paging registers.
    pub fn with_walks(self, walks: &'a mut WalkCache) -> GuestLinear<'a> {
        if walks.regs != Some(self.regs) {
            walks.flush();
            walks.regs = Some(self.regs);
        }
        GuestLinear {
            walks: Walks::Kept(walks),
            ..self
        }
    }

    /// The same view with physical addresses outside RAM routed to `mmio`.
    pub fn with_mmio(self, mmio: &'a Bus) -> GuestLinear<'a> {
        GuestLinear {
            mmio: Some(mmio),
            ..self
        }
    }

    /// The physical address of `at` for `access`: the walk cache's, or a
    /// walk's (setting accessed and dirty bits; a #PF records CR2).
    fn translate(&mut self, at: u32, access: Access) -> Result<u64, Exception> {
        if !self.regs.enabled() {
            return Ok(u64::from(at));
        }
        let page = at & !(PAGE_4K - 1);
        let in_page = u64::from(at & (PAGE_4K - 1));
        if let Some(base) = self.walks.cache().get(page, access) {
            return Ok(base + in_page);
        }
        match paging::walk(self.mem, &self.regs, at, access, true) {
            Ok(t) => {
                self.walks.cache().put(page, access, t.phys - in_page);
                Ok(t.phys)
            }
            Err(code) => {
                self.fault = Some(at);
                self.walks.cache().flush();
                Err(Exception::with_code(vector::PF, code))
            }
        }
    }

    /// Splits an access at page boundaries and translates every piece
    /// before any byte moves, so a fault on the second page leaves the
    /// first unwritten. (Accesses within a page, nearly all, never get
    /// here: see [`Self::within_a_page`].)
    fn pieces(&mut self, linear: u32, len: usize, access: Access) -> Result<Vec<Piece>, Exception> {
        let mut out = Vec::with_capacity(2);
        let mut offset = 0;
        while offset < len {
            let at = linear.wrapping_add(offset as u32);
            let room = (PAGE_4K - (at & (PAGE_4K - 1))) as usize;
            let n = room.min(len - offset);
            let phys = self.translate(at, access)?;
            out.push(Piece {
                phys,
                offset,
                len: n,
            });
            offset += n;
        }
        Ok(out)
    }

    /// Whether `len` bytes from `linear` stay within one page: then an
    /// access is one translation and one copy, without the pieces (most
    /// emulated accesses are a descriptor, a stack frame or a word).
    /// (An empty access translates nothing: it goes the general way.)
    fn within_a_page(linear: u32, len: usize) -> bool {
        len != 0 && len <= (PAGE_4K - (linear & (PAGE_4K - 1))) as usize
    }

    /// Reads what one page's physical piece holds: RAM, else the MMIO
    /// bus, else all ones. RAM is whole pages and a piece never crosses a
    /// page, so a piece is either all RAM or all outside it.
    fn read_piece(&mut self, phys: u64, dst: &mut [u8]) {
        if self.mem.read(phys, dst).is_err() {
            match self.mmio {
                Some(bus) => {
                    bus.read(phys, dst);
                }
                None => dst.fill(0xFF),
            }
        }
    }

    /// Writes one page's physical piece (RAM, noting the page, else the
    /// MMIO bus, else nowhere).
    fn write_piece(&mut self, phys: u64, src: &[u8]) {
        if self.mem.write(phys, src).is_ok() {
            let page = (phys >> 12) as u32;
            if self.written.last() != Some(&page) {
                self.written.push(page);
            }
        } else if let Some(bus) = self.mmio {
            bus.write(phys, src);
        }
    }

    fn read_as(&mut self, linear: u32, buf: &mut [u8], user: bool) -> Result<(), Exception> {
        let access = Access {
            write: false,
            user,
            fetch: false,
        };
        if Self::within_a_page(linear, buf.len()) {
            let phys = self.translate(linear, access)?;
            self.read_piece(phys, buf);
            return Ok(());
        }
        for p in self.pieces(linear, buf.len(), access)? {
            self.read_piece(p.phys, &mut buf[p.offset..p.offset + p.len]);
        }
        Ok(())
    }

    fn write_as(&mut self, linear: u32, data: &[u8], user: bool) -> Result<(), Exception> {
        let access = Access {
            write: true,
            user,
            fetch: false,
        };
        if Self::within_a_page(linear, data.len()) {
            let phys = self.translate(linear, access)?;
            self.write_piece(phys, data);
            return Ok(());
        }
        for p in self.pieces(linear, data.len(), access)? {
            self.write_piece(p.phys, &data[p.offset..p.offset + p.len]);
        }
        Ok(())
    }
}

impl x86::interrupt::LinearMemory for GuestLinear<'_> {
    fn read(&mut self, at: u32, buf: &mut [u8]) -> Result<(), Exception> {
        self.read_as(at, buf, self.user)
    }

    fn write(&mut self, at: u32, data: &[u8]) -> Result<(), Exception> {
        self.write_as(at, data, self.user)
    }

    fn read_supervisor(&mut self, at: u32, buf: &mut [u8]) -> Result<(), Exception> {
        self.read_as(at, buf, false)
    }

    fn write_supervisor(&mut self, at: u32, data: &[u8]) -> Result<(), Exception> {
        self.write_as(at, data, false)
    }

    fn take_fault_address(&mut self) -> Option<u32> {
        self.fault.take()
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

    #[test]
    fn a_view_with_mmio_sends_what_is_past_ram_to_the_bus() {
        use crate::devices::scratch;
        use std::sync::{Arc, Mutex};
        use x86::interrupt::LinearMemory;

        let mut mem = GuestMemory::new(1 << 20).unwrap();
        let mut bus = Bus::new();
        let dev = Arc::new(Mutex::new(scratch::Scratch::new()));
        bus.insert(dev, scratch::BASE, scratch::SIZE).unwrap();
        let id = (scratch::BASE + scratch::ID) as u32;
        let reg = (scratch::BASE + scratch::SCRATCH) as u32;
        let mut b = [0u8; 4];

        let mut plain = GuestLinear::physical(&mut mem);
        plain.read(id, &mut b).unwrap();
        assert_eq!(b, [0xFF; 4], "no bus: past RAM floats");

        let mut view = GuestLinear::physical(&mut mem).with_mmio(&bus);
        view.read(id, &mut b).unwrap();
        assert_eq!(&b, b"popk");
        view.write(reg, &[1, 2, 3, 4]).unwrap();
        assert!(view.written.is_empty(), "MMIO writes are not RAM pages");
        view.read(reg, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        // RAM is still RAM.
        view.write(0x2000, &[9]).unwrap();
        assert_eq!(view.written, vec![2]);
        assert_eq!(bus.unclaimed(), 0);
    }

    #[test]
    fn a_write_after_a_read_of_one_page_still_walks_and_sets_dirty() {
        use x86::interrupt::LinearMemory;
        use x86::paging::pte;

        // Non-PAE: directory at 0x1000, table at 0x2000, linear page 0 ->
        // frame 0x5000, writable, supervisor; linear page 1 not present.
        let mut mem = GuestMemory::new(1 << 20).unwrap();
        let dir = (0x2000 | pte::P | pte::RW) as u32;
        mem.write(0x1000, &dir.to_le_bytes()).unwrap();
        let entry = (0x5000 | pte::P | pte::RW) as u32;
        mem.write(0x2000, &entry.to_le_bytes()).unwrap();
        let cpu = x86::CpuState {
            cr0: x86::state::cr0::PE | x86::state::cr0::PG,
            cr3: 0x1000,
            ..Default::default()
        };
        let pte_now = |mem: &mut GuestMemory| {
            let mut b = [0u8; 4];
            mem.read(0x2000, &mut b).unwrap();
            u64::from(u32::from_le_bytes(b))
        };

        let mut view = GuestLinear::new(&mut mem, &cpu);
        let mut b = [0u8; 4];
        view.read(0x10, &mut b).unwrap();
        view.read(0x20, &mut b).unwrap();
        view.write(0x30, &[7]).unwrap();
        assert_eq!(view.written, vec![5]);
        // A write spilling into the absent page faults there, and writes
        // nothing on the first page either.
        assert!(view.write(0xFFE, &[1, 2, 3, 4]).is_err());
        drop(view);
        let e = pte_now(&mut mem);
        assert_eq!(e & (pte::A | pte::D), pte::A | pte::D);
        let mut byte = [0u8; 1];
        mem.read(0x5030, &mut byte).unwrap();
        assert_eq!(byte, [7]);
        mem.read(0x5FFE, &mut byte).unwrap();
        assert_eq!(byte, [0]);
    }

    #[test]
    fn walks_carry_from_view_to_view_as_a_tlb_until_a_fault_or_new_registers() {
        use x86::interrupt::LinearMemory;
        use x86::paging::pte;

        // Non-PAE: directory at 0x1000, table at 0x2000, linear page 0 ->
        // frame 0x5000 (byte 0x11 there), page 1 not present; frame 0x6000
        // holds 0x22.
        let mut mem = GuestMemory::new(1 << 20).unwrap();
        let set_pte = |mem: &mut GuestMemory, frame: u64| {
            mem.write(0x2000, &((frame | pte::P | pte::RW) as u32).to_le_bytes())
                .unwrap()
        };
        mem.write(0x1000, &((0x2000 | pte::P | pte::RW) as u32).to_le_bytes())
            .unwrap();
        set_pte(&mut mem, 0x5000);
        mem.write(0x5000, &[0x11]).unwrap();
        mem.write(0x6000, &[0x22]).unwrap();
        let mut cpu = x86::CpuState {
            cr0: x86::state::cr0::PE | x86::state::cr0::PG,
            cr3: 0x1000,
            ..Default::default()
        };
        let mut walks = WalkCache::default();
        let mut b = [0u8; 1];
        let mut read_0 = |mem: &mut GuestMemory, cpu: &x86::CpuState, walks: &mut WalkCache| {
            GuestLinear::new(mem, cpu)
                .with_walks(walks)
                .read(0, &mut b)
                .unwrap();
            b[0]
        };
        assert_eq!(read_0(&mut mem, &cpu, &mut walks), 0x11);
        // The guest moves page 0 to frame 0x6000 without an INVLPG: a view
        // lent the walks still reads the old frame, as a CPU with the entry
        // in its TLB may; a view of its own walks.
        set_pte(&mut mem, 0x6000);
        assert_eq!(read_0(&mut mem, &cpu, &mut walks), 0x11);
        let mut own = [0u8; 1];
        GuestLinear::new(&mut mem, &cpu).read(0, &mut own).unwrap();
        assert_eq!(own, [0x22]);
        // A flush forgets them.
        walks.flush();
        assert_eq!(read_0(&mut mem, &cpu, &mut walks), 0x22);
        // A view that raises a page fault empties the cache it was lent.
        set_pte(&mut mem, 0x5000);
        assert_eq!(read_0(&mut mem, &cpu, &mut walks), 0x22, "still cached");
        let mut view = GuestLinear::new(&mut mem, &cpu).with_walks(&mut walks);
        assert!(view.read(0x1000, &mut own).is_err());
        drop(view);
        assert_eq!(read_0(&mut mem, &cpu, &mut walks), 0x11);
        // Walks made under other paging registers are not used.
        set_pte(&mut mem, 0x6000);
        cpu.cr3 = 0x3000;
        mem.write(0x3000, &((0x2000 | pte::P | pte::RW) as u32).to_le_bytes())
            .unwrap();
        assert_eq!(read_0(&mut mem, &cpu, &mut walks), 0x22);
    }
}
