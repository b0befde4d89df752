//! The guest page-table walker: 32-bit 2-level paging (4 KiB and, with
//! CR4.PSE, 4 MiB pages) and PAE paging (3 levels, 4 KiB and 2 MiB pages,
//! NX with EFER.NXE), as Intel SDM volume 3 chapter 4 defines them.
//!
//! The walker is the one place that knows the entry formats. The BT engine
//! uses it to fill its shadow mappings and to find the physical page of
//! code it translates; the callout emulator uses it (through a
//! [`crate::interrupt::LinearMemory`] adapter) for every memory access it
//! makes while paging is on. It sets accessed and dirty bits as the CPU does
//! when it caches a translation, and reports a failed walk as the #PF error
//! code the CPU would push.
//!
//! Not modelled: SMEP/SMAP (not offered by our CPUID), PCIDs, protection
//! keys, and the PDPTE registers of PAE paging (the four PDPTEs are read at
//! each walk instead of being loaded at MOV CR3: a guest that edits its
//! PDPT without reloading CR3 sees the edit sooner than hardware shows it).

use crate::state::{cr0, cr4};
use crate::CpuState;

/// Bits of a page-table entry shared by every format.
pub mod pte {
    /// Present.
    pub const P: u64 = 1 << 0;
    /// Writable.
    pub const RW: u64 = 1 << 1;
    /// User-accessible.
    pub const US: u64 = 1 << 2;
    /// Accessed.
    pub const A: u64 = 1 << 5;
    /// Dirty (final entries only).
    pub const D: u64 = 1 << 6;
    /// Page size: this directory entry maps a large page.
    pub const PS: u64 = 1 << 7;
    /// Global (final entries only, with CR4.PGE).
    pub const G: u64 = 1 << 8;
    /// Execute-disable (PAE entries, with EFER.NXE).
    pub const XD: u64 = 1 << 63;
}

/// Bits of the page-fault error code.
pub mod pf {
    /// The page was present (a protection violation), not absent.
    pub const P: u32 = 1 << 0;
    /// The access was a write.
    pub const W: u32 = 1 << 1;
    /// The access was made at CPL 3.
    pub const U: u32 = 1 << 2;
    /// A reserved bit was set in a paging-structure entry.
    pub const RSVD: u32 = 1 << 3;
    /// The access was an instruction fetch (reported only with NX).
    pub const ID: u32 = 1 << 4;
}

/// The physical address width we report (no CPUID leaf 0x80000008: 36 bits).
pub const MAX_PHYS_BITS: u32 = 36;

/// Size of a small page.
pub const PAGE_4K: u32 = 1 << 12;
/// Size of a PAE large page.
pub const PAGE_2M: u32 = 1 << 21;
/// Size of a 2-level large page.
pub const PAGE_4M: u32 = 1 << 22;

/// Guest physical memory as the walker sees it. Addresses past RAM read as
/// all ones (so their entries look present with every reserved bit set)
/// and drop writes, as on a PC bus.
pub trait PhysMemory {
    /// Reads the 32-bit word at physical `addr`.
    fn read_u32(&mut self, addr: u64) -> u32;
    /// Writes the 32-bit word at physical `addr`.
    fn write_u32(&mut self, addr: u64, value: u32);
    /// Reads the 64-bit word at physical `addr`.
    fn read_u64(&mut self, addr: u64) -> u64 {
        u64::from(self.read_u32(addr)) | (u64::from(self.read_u32(addr + 4)) << 32)
    }
}

/// The control-register state that decides how linear addresses translate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagingRegs {
    /// CR0 (PG and WP matter).
    pub cr0: u32,
    /// CR3 (the root of the tables).
    pub cr3: u32,
    /// CR4 (PSE, PAE and PGE matter).
    pub cr4: u32,
    /// EFER.NXE.
    pub nxe: bool,
}

impl PagingRegs {
    /// The paging registers of `cpu`.
    pub fn of(cpu: &CpuState) -> PagingRegs {
        PagingRegs {
            cr0: cpu.cr0,
            cr3: cpu.cr3,
            cr4: cpu.cr4,
            nxe: cpu.efer & crate::msr::efer::NXE != 0,
        }
    }

    /// Whether paging is on.
    pub fn enabled(&self) -> bool {
        self.cr0 & cr0::PG != 0
    }

    /// Whether PAE paging (rather than 2-level paging) is in use.
    pub fn pae(&self) -> bool {
        self.cr4 & cr4::PAE != 0
    }

    /// Whether a change from `self` to `new` invalidates every cached
    /// translation, global ones included (SDM 4.10.4.1: a change of CR0.PG,
    /// CR0.WP, CR4.PSE, CR4.PAE or CR4.PGE flushes the whole TLB).
    pub fn flushes_all(&self, new: &PagingRegs) -> bool {
        let c0 = cr0::PG | cr0::WP;
        let c4 = cr4::PSE | cr4::PAE | cr4::PGE;
        (self.cr0 ^ new.cr0) & c0 != 0 || (self.cr4 ^ new.cr4) & c4 != 0 || self.nxe != new.nxe
    }
}

/// The kind of access being translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Access {
    /// A write (else a read or fetch).
    pub write: bool,
    /// Made at CPL 3 (implicit supervisor accesses, such as descriptor
    /// table reads, are not user accesses even at CPL 3).
    pub user: bool,
    /// An instruction fetch.
    pub fetch: bool,
}

impl Access {
    /// A supervisor data read.
    pub const READ: Access = Access {
        write: false,
        user: false,
        fetch: false,
    };
    /// A supervisor write.
    pub const WRITE: Access = Access {
        write: true,
        user: false,
        fetch: false,
    };
    /// A supervisor instruction fetch.
    pub const FETCH: Access = Access {
        write: false,
        user: false,
        fetch: true,
    };
}

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The physical address of the translated linear address.
    pub phys: u64,
    /// Size of the page that maps it (4 KiB, 2 MiB or 4 MiB).
    pub size: u32,
    /// Physical address of the first byte of that page.
    pub frame: u64,
    /// Writable at every level.
    pub writable: bool,
    /// User-accessible at every level.
    pub user: bool,
    /// Executable (no XD at any level, or NX off).
    pub executable: bool,
    /// The final entry's accessed bit, after this walk.
    pub accessed: bool,
    /// The final entry's dirty bit, after this walk.
    pub dirty: bool,
    /// Global (G set and CR4.PGE on): survives CR3 writes.
    pub global: bool,
}

impl Translation {
    /// Linear address of the first byte of the page holding `linear`.
    pub fn page_base(&self, linear: u32) -> u32 {
        linear & !(self.size - 1)
    }

    /// Whether this mapping permits `access` under CR0.WP = `wp`.
    pub fn allows(&self, access: Access, wp: bool) -> bool {
        if access.user && !self.user {
            return false;
        }
        if access.write && !self.writable && (access.user || wp) {
            return false;
        }
        !access.fetch || self.executable
    }
}

/// One entry read during a walk.
#[derive(Clone, Copy)]
struct Level {
    /// Physical address of the entry.
    addr: u64,
    /// The entry as the walk interprets it.
    value: u64,
    /// The low word as read, for setting A/D without touching other bits.
    raw: u32,
}

/// Translates `linear` for `access`. With `update`, sets accessed bits on
/// every entry used and the dirty bit on the final entry for a write, as the
/// CPU does when it caches the translation; without it, nothing is written
/// (a probe). A failure is the #PF error code the CPU would push.
pub fn walk(
    mem: &mut impl PhysMemory,
    regs: &PagingRegs,
    linear: u32,
    access: Access,
    update: bool,
) -> Result<Translation, u32> {
    let mut code = 0;
    if access.write {
        code |= pf::W;
    }
    if access.user {
        code |= pf::U;
    }
    if access.fetch && regs.nxe && regs.pae() {
        code |= pf::ID;
    }
    let (levels, n, size) = if regs.pae() {
        walk_pae(mem, regs, linear).map_err(|e| e | code)?
    } else {
        walk_2level(mem, regs, linear).map_err(|e| e | code)?
    };
    let levels = &levels[..n];
    let last = levels[n - 1];
    let writable = levels.iter().all(|l| l.value & pte::RW != 0);
    let user = levels.iter().all(|l| l.value & pte::US != 0);
    let executable = !regs.nxe || levels.iter().all(|l| l.value & pte::XD == 0);
    let frame_mask = (1u64 << MAX_PHYS_BITS) - 1;
    let frame = last.value & frame_mask & !u64::from(size - 1);
    let mut t = Translation {
        phys: frame | u64::from(linear & (size - 1)),
        size,
        frame,
        writable,
        user,
        executable,
        accessed: last.value & pte::A != 0,
        dirty: last.value & pte::D != 0,
        global: regs.cr4 & cr4::PGE != 0 && last.value & pte::G != 0,
    };
    if !t.allows(access, regs.cr0 & cr0::WP != 0) {
        return Err(code | pf::P);
    }
    if update {
        for (i, l) in levels.iter().enumerate() {
            let mut bits = pte::A;
            if i == n - 1 && access.write {
                bits |= pte::D;
            }
            // PAE's PDPTEs have no accessed bit in 32-bit mode.
            let is_pdpte = regs.pae() && i == 0;
            if !is_pdpte && l.value & bits != bits {
                set_bits(mem, l, bits);
            }
        }
        t.dirty |= access.write;
        t.accessed = true;
    }
    Ok(t)
}

fn set_bits(mem: &mut impl PhysMemory, l: &Level, bits: u64) {
    // A/D live in the low word of a 64-bit entry: one 32-bit write.
    mem.write_u32(l.addr, l.raw | bits as u32);
}

type Walked = ([Level; 3], usize, u32);

fn walk_2level(mem: &mut impl PhysMemory, regs: &PagingRegs, linear: u32) -> Result<Walked, u32> {
    let narrow = |addr: u64, value: u32| Level {
        addr,
        value: u64::from(value),
        raw: value,
    };
    let pde_addr = u64::from(regs.cr3 & !0xFFF) + u64::from(linear >> 22) * 4;
    let pde = mem.read_u32(pde_addr);
    if pde & pte::P as u32 == 0 {
        return Err(0);
    }
    let pde_level = narrow(pde_addr, pde);
    if pde & pte::PS as u32 != 0 && regs.cr4 & cr4::PSE != 0 {
        // PSE-36 puts physical bits 35:32 in bits 16:13; bits 21:17 are
        // reserved.
        if pde & 0x003E_0000 != 0 {
            return Err(pf::RSVD | pf::P);
        }
        let high = u64::from((pde >> 13) & 0xF) << 32;
        let value = (u64::from(pde) & !0x003F_E000) | high;
        let level = Level { value, ..pde_level };
        return Ok(([level, level, level], 1, PAGE_4M));
    }
    let pte_addr = u64::from(pde & !0xFFF) + u64::from((linear >> 12) & 0x3FF) * 4;
    let entry = mem.read_u32(pte_addr);
    if entry & pte::P as u32 == 0 {
        return Err(0);
    }
    Ok(([pde_level, narrow(pte_addr, entry), pde_level], 2, PAGE_4K))
}

/// Bits 62:36 of a PAE entry (above our physical width, below XD).
const PAE_HIGH_RSVD: u64 = !((1u64 << MAX_PHYS_BITS) - 1) & !pte::XD;

fn walk_pae(mem: &mut impl PhysMemory, regs: &PagingRegs, linear: u32) -> Result<Walked, u32> {
    let wide = |addr: u64, value: u64| Level {
        addr,
        value,
        raw: value as u32,
    };
    let rsvd = |value: u64, extra: u64| -> bool {
        value & (PAE_HIGH_RSVD | extra) != 0 || (!regs.nxe && value & pte::XD != 0)
    };
    let pdpte_addr = u64::from(regs.cr3 & !0x1F) + u64::from(linear >> 30) * 8;
    let pdpte = mem.read_u64(pdpte_addr);
    if pdpte & pte::P == 0 {
        return Err(0);
    }
    // PDPTEs carry no RW/US/XD in 32-bit PAE mode: count them as allowing
    // everything (bits 1, 2, 5-8 and 63 are reserved there).
    if pdpte & (PAE_HIGH_RSVD | pte::XD | 0x1E6) != 0 {
        return Err(pf::RSVD | pf::P);
    }
    let pdpte_level = wide(pdpte_addr, pdpte | pte::RW | pte::US);
    let pde_addr = (pdpte & 0x000F_FFFF_FFFF_F000) + u64::from((linear >> 21) & 0x1FF) * 8;
    let pde = mem.read_u64(pde_addr);
    if pde & pte::P == 0 {
        return Err(0);
    }
    if pde & pte::PS != 0 {
        // Bits 20:13 of a 2 MiB entry are reserved.
        if rsvd(pde, 0x001F_E000) {
            return Err(pf::RSVD | pf::P);
        }
        return Ok(([pdpte_level, wide(pde_addr, pde), pdpte_level], 2, PAGE_2M));
    }
    if rsvd(pde, 0) {
        return Err(pf::RSVD | pf::P);
    }
    let pte_addr = (pde & 0x000F_FFFF_FFFF_F000) + u64::from((linear >> 12) & 0x1FF) * 8;
    let entry = mem.read_u64(pte_addr);
    if entry & pte::P == 0 {
        return Err(0);
    }
    if rsvd(entry, 0) {
        return Err(pf::RSVD | pf::P);
    }
    Ok((
        [pdpte_level, wide(pde_addr, pde), wide(pte_addr, entry)],
        3,
        PAGE_4K,
    ))
}

#[cfg(test)]
mod tests;
