//! The Intel MultiProcessor Specification 1.4 table: what a kernel booted
//! with `acpi=off` (or one that predates ACPI) reads to find the local
//! APIC, the I/O APIC and how the ISA IRQs reach its pins.
//!
//! The floating pointer sits in the BIOS area, which the e820 map reserves
//! and Linux's MP scan covers; the configuration table follows it. It
//! lists one processor (APIC ID 0, the bootstrap processor), the ISA bus,
//! the I/O APIC (ID 0 at 0xFEC00000), an interrupt entry for each ISA IRQ
//! but the cascade (IRQ 0 on pin 2, IRQ n on pin n; the SCI, IRQ 9,
//! level-triggered active high as in the MADT), and the local interrupts:
//! the 8259A's INTR on every LINT0 as ExtINT, NMI on every LINT1. The
//! feature bytes say virtual wire mode (no IMCR), which is how the local
//! APIC starts (LINT0 ExtINT).

use x86::cpuid::CpuidModel;

use crate::devices::{acpi_pm, ioapic, lapic};
use crate::irq::isa_pin;
use crate::memory::{GuestMemory, MemoryError};

use super::checksum;

/// Where the floating pointer structure is (16-byte aligned).
pub const FLOATING_POINTER: u64 = 0xF_0800;
/// Where the configuration table follows it.
pub const CONFIG_TABLE: u64 = FLOATING_POINTER + 16;
/// The end (exclusive) of the area the table may fill.
pub const AREA_END: u64 = 0xF_1000;

/// The specification revision both structures give: 1.4.
const SPEC_REV: u8 = 4;

/// Entry types.
mod entry {
    pub const PROCESSOR: u8 = 0;
    pub const BUS: u8 = 1;
    pub const IO_APIC: u8 = 2;
    pub const IO_INTERRUPT: u8 = 3;
    pub const LOCAL_INTERRUPT: u8 = 4;
}

/// Interrupt types of I/O and local interrupt entries.
mod int_type {
    pub const INT: u8 = 0;
    pub const NMI: u8 = 1;
    pub const EXTINT: u8 = 3;
}

/// INTI flags: active high, level-triggered (what the MADT says of the SCI).
const LEVEL_ACTIVE_HIGH: u16 = 0b11 << 2 | 0b01;
/// "Every local APIC" as a destination.
const ALL_LOCAL_APICS: u8 = 0xFF;
/// The ISA bus's ID.
const ISA_BUS: u8 = 0;
/// The I/O APIC's ID.
const IOAPIC_ID: u8 = 0;

fn interrupt(kind: u8, typ: u8, flags: u16, irq: u8, dest: u8, pin: u8) -> [u8; 8] {
    let [f0, f1] = flags.to_le_bytes();
    [kind, typ, f0, f1, ISA_BUS, irq, dest, pin]
}

/// The configuration table's entries and how many there are.
fn entries() -> (Vec<u8>, u16) {
    let cpu = CpuidModel::default();
    let mut e = Vec::new();
    let mut count = 0u16;
    // Processor: APIC ID 0, its version, enabled and the bootstrap
    // processor, CPUID's signature and feature flags.
    let lapic_version = lapic::VERSION_VALUE as u8;
    e.extend([entry::PROCESSOR, 0, lapic_version, 0b11]);
    e.extend(cpu.signature.to_le_bytes());
    e.extend(cpu.leaf1_edx().to_le_bytes());
    e.extend([0; 8]);
    count += 1;
    e.extend([entry::BUS, ISA_BUS]);
    e.extend(b"ISA   ");
    count += 1;
    let ioapic_version = ioapic::VERSION_VALUE as u8;
    e.extend([entry::IO_APIC, IOAPIC_ID, ioapic_version, 1]);
    e.extend((ioapic::BASE as u32).to_le_bytes());
    count += 1;
    // IRQ 2 is the cascade: nothing arrives on it.
    for irq in (0..16u8).filter(|&i| i != 2) {
        let flags = if irq == acpi_pm::SCI_IRQ {
            LEVEL_ACTIVE_HIGH
        } else {
            0 // as the ISA bus says: edge, active high
        };
        let pin = isa_pin(irq) as u8;
        e.extend(interrupt(
            entry::IO_INTERRUPT,
            int_type::INT,
            flags,
            irq,
            IOAPIC_ID,
            pin,
        ));
        count += 1;
    }
    e.extend(interrupt(
        entry::LOCAL_INTERRUPT,
        int_type::EXTINT,
        0,
        0,
        ALL_LOCAL_APICS,
        0,
    ));
    e.extend(interrupt(
        entry::LOCAL_INTERRUPT,
        int_type::NMI,
        0,
        0,
        ALL_LOCAL_APICS,
        1,
    ));
    count += 2;
    (e, count)
}

/// The configuration table.
fn config_table() -> Vec<u8> {
    let (entries, count) = entries();
    let mut t = Vec::with_capacity(44 + entries.len());
    t.extend(b"PCMP");
    t.extend(((44 + entries.len()) as u16).to_le_bytes());
    t.push(SPEC_REV);
    t.push(0); // checksum
    t.extend(b"POPEK   ");
    t.extend(b"POPEK PC    ");
    t.extend(0u32.to_le_bytes()); // no OEM table
    t.extend(0u16.to_le_bytes());
    t.extend(count.to_le_bytes());
    t.extend(super::acpi::LAPIC_ADDR.to_le_bytes());
    t.extend(0u16.to_le_bytes()); // no extended entries
    t.extend([0, 0]); // their checksum, reserved
    t.extend(entries);
    t[7] = checksum(&t);
    t
}

/// The floating pointer structure.
fn floating_pointer() -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..4].copy_from_slice(b"_MP_");
    p[4..8].copy_from_slice(&(CONFIG_TABLE as u32).to_le_bytes());
    p[8] = 1; // length in paragraphs
    p[9] = SPEC_REV;
    // Feature bytes: 1 = 0, a configuration table is present; 2 bit 7
    // (IMCRP) clear, virtual wire mode.
    p[10] = checksum(&p);
    p
}

/// Writes the floating pointer and the configuration table into `mem`.
pub fn install(mem: &mut GuestMemory) -> Result<(), MemoryError> {
    let table = config_table();
    assert!(
        CONFIG_TABLE + table.len() as u64 <= AREA_END,
        "the MP table outgrew its area"
    );
    mem.write(FLOATING_POINTER, &floating_pointer())?;
    mem.write(CONFIG_TABLE, &table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn the_floating_pointer_is_found_as_linux_scans_and_checks_out() {
        let mut mem = GuestMemory::new(2 << 20).unwrap();
        install(&mut mem).unwrap();
        // smp_scan_config: 16-byte steps over 0xF0000-0xFFFFF.
        let at = (0xF_0000..0x10_0000)
            .step_by(16)
            .find(|&a| mem.slice(a, 4).unwrap() == b"_MP_")
            .unwrap();
        let p = mem.slice(at, 16).unwrap();
        assert_eq!(sum(p), 0);
        assert_eq!((p[8], p[9], p[11], p[12]), (1, 4, 0, 0));
        let table = u64::from(u32::from_le_bytes(p[4..8].try_into().unwrap()));
        let head = mem.slice(table, 44).unwrap();
        assert_eq!(&head[..4], b"PCMP");
        let len = usize::from(u16::from_le_bytes([head[4], head[5]]));
        assert_eq!(sum(mem.slice(table, len).unwrap()), 0);
        assert_eq!(
            u32::from_le_bytes(head[36..40].try_into().unwrap()),
            0xFEE0_0000
        );
    }

    #[test]
    fn entries_walk_to_the_end_with_the_pit_on_pin_2() {
        let t = config_table();
        let count = u16::from_le_bytes([t[34], t[35]]);
        let (mut i, mut n, mut routes, mut local) = (44, 0, Vec::new(), Vec::new());
        while i < t.len() {
            let len = if t[i] == entry::PROCESSOR { 20 } else { 8 };
            let e = &t[i..i + len];
            match e[0] {
                entry::PROCESSOR => assert_eq!((e[1], e[3]), (0, 3), "enabled BSP"),
                entry::BUS => assert_eq!(&e[2..8], b"ISA   "),
                entry::IO_APIC => {
                    assert_eq!((e[1], e[2], e[3]), (0, 0x20, 1));
                    assert_eq!(u32::from_le_bytes(e[4..8].try_into().unwrap()), 0xFEC0_0000);
                }
                entry::IO_INTERRUPT => routes.push((e[5], e[7], u16::from_le_bytes([e[2], e[3]]))),
                entry::LOCAL_INTERRUPT => local.push((e[1], e[6], e[7])),
                other => panic!("entry type {other}"),
            }
            i += len;
            n += 1;
        }
        assert_eq!((i, n), (t.len(), count));
        assert_eq!(routes.len(), 15);
        assert!(routes.contains(&(0, 2, 0)));
        assert!(routes.contains(&(9, 9, 0x0D)));
        assert!(routes.iter().all(|&(irq, pin, _)| irq == 0 || irq == pin));
        assert!(!routes.iter().any(|&(irq, _, _)| irq == 2));
        assert_eq!(local, [(3, 0xFF, 0), (1, 0xFF, 1)]);
    }
}
