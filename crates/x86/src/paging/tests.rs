use super::*;
use crate::state::cr0;

/// 8 MiB of sparse physical memory.
struct Ram(std::collections::HashMap<u64, u32>);

impl PhysMemory for Ram {
    fn read_u32(&mut self, addr: u64) -> u32 {
        *self.0.get(&addr).unwrap_or(&0)
    }
    fn write_u32(&mut self, addr: u64, value: u32) {
        self.0.insert(addr, value);
    }
}

const PD: u32 = 0x1000;
const PT: u32 = 0x2000;

fn regs(cr4: u32) -> PagingRegs {
    PagingRegs {
        cr0: cr0::PG | cr0::PE,
        cr3: PD,
        cr4,
        nxe: false,
    }
}

fn ram() -> Ram {
    Ram(Default::default())
}

const P: u32 = pte::P as u32;
const RW: u32 = pte::RW as u32;
const US: u32 = pte::US as u32;
const A: u32 = pte::A as u32;
const D: u32 = pte::D as u32;

/// Maps linear 0x00400000 + 0x5000 to physical 0x77000 with `bits`,
/// through a PDE with `pde_bits`.
fn small(m: &mut Ram, pde_bits: u32, bits: u32) -> u32 {
    m.write_u32(u64::from(PD) + 4, PT | pde_bits);
    m.write_u32(u64::from(PT) + 5 * 4, 0x77000 | bits);
    0x0040_5123
}

#[test]
fn a_4k_page_translates_and_sets_accessed_then_dirty() {
    let mut m = ram();
    let lin = small(&mut m, P | RW | US, P | RW | US);
    let t = walk(&mut m, &regs(0), lin, Access::READ, true).unwrap();
    assert_eq!(t.phys, 0x77123);
    assert_eq!(t.size, PAGE_4K);
    assert!(!t.dirty);
    assert_eq!(m.read_u32(u64::from(PD) + 4) & A, A);
    assert_eq!(m.read_u32(u64::from(PT) + 20) & (A | D), A);
    let t = walk(&mut m, &regs(0), lin, Access::WRITE, true).unwrap();
    assert!(t.dirty);
    assert_eq!(m.read_u32(u64::from(PT) + 20) & (A | D), A | D);
}

#[test]
fn a_probe_writes_nothing() {
    let mut m = ram();
    let lin = small(&mut m, P | RW, P | RW);
    walk(&mut m, &regs(0), lin, Access::WRITE, false).unwrap();
    assert_eq!(m.read_u32(u64::from(PT) + 20) & (A | D), 0);
    assert_eq!(m.read_u32(u64::from(PD) + 4) & A, 0);
}

#[test]
fn not_present_codes_carry_w_and_u() {
    let mut m = ram();
    // No PDE at all.
    let r = walk(&mut m, &regs(0), 0x0040_0000, Access::READ, true);
    assert_eq!(r, Err(0));
    let user_write = Access {
        write: true,
        user: true,
        fetch: false,
    };
    assert_eq!(
        walk(&mut m, &regs(0), 0x0040_0000, user_write, true),
        Err(pf::W | pf::U)
    );
    // A PDE but no PTE.
    let lin = small(&mut m, P | RW | US, 0);
    assert_eq!(walk(&mut m, &regs(0), lin, Access::WRITE, true), Err(pf::W));
}

#[test]
fn protection_faults_follow_wp_and_us() {
    let mut m = ram();
    let lin = small(&mut m, P | RW | US, P | US); // read-only user page
    let wp = PagingRegs {
        cr0: regs(0).cr0 | crate::state::cr0::WP,
        ..regs(0)
    };
    // Supervisor write: allowed without WP, a fault with it.
    assert!(walk(&mut m, &regs(0), lin, Access::WRITE, true).is_ok());
    assert_eq!(
        walk(&mut m, &wp, lin, Access::WRITE, true),
        Err(pf::P | pf::W)
    );
    let user_write = Access {
        write: true,
        user: true,
        fetch: false,
    };
    assert_eq!(
        walk(&mut m, &regs(0), lin, user_write, true),
        Err(pf::P | pf::W | pf::U)
    );
    // A supervisor PDE makes the whole range supervisor.
    let mut m = ram();
    let lin = small(&mut m, P | RW, P | RW | US);
    let user_read = Access {
        write: false,
        user: true,
        fetch: false,
    };
    assert_eq!(
        walk(&mut m, &regs(0), lin, user_read, true),
        Err(pf::P | pf::U)
    );
    // Failed walks leave the accessed bits alone.
    assert_eq!(m.read_u32(u64::from(PT) + 20) & A, 0);
}

#[test]
fn pse_maps_4m_pages_only_with_cr4_pse() {
    let mut m = ram();
    m.write_u32(u64::from(PD) + 3 * 4, 0x0080_0000 | P | RW | pte::PS as u32);
    let t = walk(
        &mut m,
        &regs(crate::state::cr4::PSE),
        0x00C1_2345,
        Access::READ,
        true,
    )
    .unwrap();
    assert_eq!(
        (t.phys, t.size, t.frame),
        (0x0081_2345, PAGE_4M, 0x0080_0000)
    );
    assert_eq!(t.page_base(0x00C1_2345), 0x00C0_0000);
    // Without PSE the same PDE points at a page table at 0x800000.
    m.write_u32(0x0080_0000 + 0x12 * 4, 0x0055_5000 | P);
    let t = walk(&mut m, &regs(0), 0x00C1_2345, Access::READ, true).unwrap();
    assert_eq!(t.phys, 0x0055_5345);
}

#[test]
fn global_needs_cr4_pge() {
    let mut m = ram();
    let lin = small(&mut m, P | RW, P | RW | pte::G as u32);
    assert!(
        !walk(&mut m, &regs(0), lin, Access::READ, false)
            .unwrap()
            .global
    );
    let pge = regs(crate::state::cr4::PGE);
    assert!(walk(&mut m, &pge, lin, Access::READ, false).unwrap().global);
}

fn pae_regs(nxe: bool) -> PagingRegs {
    PagingRegs {
        cr0: regs(0).cr0,
        cr3: 0x3000,
        cr4: crate::state::cr4::PAE,
        nxe,
    }
}

/// PDPT at 0x3000, PD at 0x4000 (for the first GiB), PT at 0x5000.
fn pae_small(m: &mut Ram, pte_lo: u32, pte_hi: u32) -> u32 {
    m.write_u32(0x3000, 0x4000 | P);
    m.write_u32(0x4000 + 2 * 8, 0x5000 | P | RW | US);
    m.write_u32(0x5000 + 3 * 8, 0x9000 | pte_lo);
    m.write_u32(0x5000 + 3 * 8 + 4, pte_hi);
    0x0040_3abc
}

#[test]
fn pae_4k_and_2m_pages() {
    let mut m = ram();
    let lin = pae_small(&mut m, P | RW, 0);
    let t = walk(&mut m, &pae_regs(false), lin, Access::WRITE, true).unwrap();
    assert_eq!((t.phys, t.size), (0x9abc, PAGE_4K));
    assert_eq!(m.read_u32(0x5000 + 24) & (A | D), A | D);
    // The PDPTE has no accessed bit to set.
    assert_eq!(m.read_u32(0x3000), 0x4000 | P);
    // A 2 MiB page with physical bits above 4 GiB.
    m.write_u32(0x4000 + 5 * 8, 0x0060_0000 | P | pte::PS as u32);
    m.write_u32(0x4000 + 5 * 8 + 4, 0x1);
    let t = walk(&mut m, &pae_regs(false), 0x00A1_2345, Access::READ, true).unwrap();
    assert_eq!((t.phys, t.size), (0x1_0061_2345, PAGE_2M));
}

#[test]
fn pae_nx_and_reserved_bits() {
    let mut m = ram();
    let lin = pae_small(&mut m, P | RW, 0x8000_0000);
    // XD without NXE is a reserved bit.
    assert_eq!(
        walk(&mut m, &pae_regs(false), lin, Access::READ, true),
        Err(pf::P | pf::RSVD)
    );
    // With NXE: reads work, fetches fault with I/D.
    assert!(walk(&mut m, &pae_regs(true), lin, Access::READ, true).is_ok());
    assert_eq!(
        walk(&mut m, &pae_regs(true), lin, Access::FETCH, true),
        Err(pf::P | pf::ID)
    );
    // Bits above the 36-bit physical width are reserved too.
    let mut m = ram();
    let lin = pae_small(&mut m, P, 0x10);
    assert_eq!(
        walk(&mut m, &pae_regs(false), lin, Access::READ, true),
        Err(pf::P | pf::RSVD)
    );
}

#[test]
fn paging_changes_that_flush_everything() {
    let r = regs(0);
    assert!(!r.flushes_all(&PagingRegs { cr3: 0x9000, ..r }));
    assert!(r.flushes_all(&PagingRegs {
        cr4: crate::state::cr4::PGE,
        ..r
    }));
    assert!(r.flushes_all(&PagingRegs {
        cr0: r.cr0 | crate::state::cr0::WP,
        ..r
    }));
}
