//! What a PC's BIOS leaves in low memory for the OS to read: the BIOS data
//! area (BDA) and the extended BIOS data area (EBDA). popek has no BIOS; the
//! loaders write this state before the kernel starts, as a BIOS would have.
//!
//! Linux reads it at boot: the decompressor's ACPI RSDP search and
//! `reserve_bios_regions` take the EBDA segment from 0x40E and the size of
//! base memory from 0x413, and the MP-table scan covers the EBDA's first
//! KiB (linux-i386.md beside design.md). It also scans the BIOS area at
//! 0xF0000 for an SMBIOS entry point, which names the machine in its log
//! and in /sys/class/dmi (without one: "DMI not present or invalid").
//!
//! The BIOS area (0xF0000-0xFFFFF, reserved in the e820 map) also holds
//! the tables that describe the machine's devices, each in its own module:
//!
//! | range           | contents                                        |
//! |-----------------|-------------------------------------------------|
//! | 0xF0000..       | SMBIOS entry point and structures               |
//! | 0xF0800..0xF1000| MP floating pointer and configuration table ([`mptable`]) |
//! | 0xF1000..0xF2000| ACPI: RSDP, RSDT, FADT, FACS, DSDT, MADT, HPET ([`acpi`]) |

pub mod acpi;
pub mod mptable;

const _: () = assert!(mptable::AREA_END <= acpi::RSDP_ADDR);

use crate::loader::{HIGH_MEMORY_START, LOW_MEMORY_END};
use crate::memory::{GuestMemory, MemoryError};

/// BDA: I/O base of COM1..COM4 (words); 0 where there is no port.
pub const BDA_COM_PORTS: u64 = 0x400;
/// BDA: segment of the EBDA (word).
pub const BDA_EBDA_SEGMENT: u64 = 0x40E;
/// BDA: equipment list (word).
pub const BDA_EQUIPMENT: u64 = 0x410;
/// BDA: KiB of conventional memory below the EBDA (word).
pub const BDA_BASE_MEMORY_KIB: u64 = 0x413;
/// Size of the BDA.
pub const BDA_SIZE: u64 = 0x100;
/// Where the EBDA starts: right below 640 KiB, where the memory map
/// reserves it.
pub const EBDA_START: u64 = LOW_MEMORY_END;
/// EBDA size in KiB, which its first byte holds.
pub const EBDA_KIB: u8 = 1;

/// The serial ports the machine has (COM1 only).
const COM_PORTS: [u16; 4] = [0x3F8, 0, 0, 0];
/// Equipment list: an x87 FPU (bit 1), 80x25 colour video mode (bits 4-5 =
/// 10b), one serial port (bits 9-11 = 1).
const EQUIPMENT: u16 = (1 << 1) | (0b10 << 4) | (1 << 9);

/// Where the SMBIOS entry point lives: the first paragraph of the BIOS
/// area, which the e820 map reserves and Linux scans.
pub const SMBIOS_ENTRY: u64 = 0xF_0000;
/// Where the SMBIOS structure table follows it.
const SMBIOS_TABLE: u64 = SMBIOS_ENTRY + 0x20;

/// One SMBIOS structure: its formatted part (after the 4-byte header) and
/// its strings.
struct Structure {
    kind: u8,
    formatted: Vec<u8>,
    strings: Vec<String>,
}

impl Structure {
    fn bytes(&self, handle: u16) -> Vec<u8> {
        let mut b = vec![self.kind, 4 + self.formatted.len() as u8];
        b.extend(handle.to_le_bytes());
        b.extend(&self.formatted);
        for s in &self.strings {
            b.extend(s.as_bytes());
            b.push(0);
        }
        if self.strings.is_empty() {
            b.push(0);
        }
        b.push(0);
        b
    }
}

/// The structures popek's firmware describes: BIOS (type 0), system
/// (type 1) and the end marker (type 127), as SMBIOS 2.8 defines them.
fn smbios_structures() -> Vec<Structure> {
    let version = env!("CARGO_PKG_VERSION");
    let strings = |s: &[&str]| s.iter().map(|s| s.to_string()).collect();
    // BIOS: vendor 1, version 2, starting segment 0xF000, release date 3,
    // ROM size 64 KiB ((n+1) * 64K, n = 0), characteristics "not
    // supported" (bit 3), no extension bytes' features, release 0.1, no
    // embedded controller.
    let mut bios = vec![1, 2];
    bios.extend(0xF000u16.to_le_bytes());
    bios.extend([3, 0]);
    bios.extend((1u64 << 3).to_le_bytes());
    bios.extend([0, 0, 0, 1, 0xFF, 0xFF]);
    // System: manufacturer 1, product 2, version 3, serial 4, no UUID,
    // wake-up by power switch (6), SKU 5, family 6.
    let mut system = vec![1, 2, 3, 4];
    system.extend([0u8; 16]);
    system.extend([6, 5, 6]);
    vec![
        Structure {
            kind: 0,
            formatted: bios,
            strings: strings(&["popek", version, "12/06/2026"]),
        },
        Structure {
            kind: 1,
            formatted: system,
            strings: strings(&[
                "popek",
                "popek virtual machine",
                version,
                "0",
                "popek",
                "popek",
            ]),
        },
        Structure {
            kind: 127,
            formatted: Vec::new(),
            strings: Vec::new(),
        },
    ]
}

/// The byte that makes `bytes` sum to 0 (mod 256).
fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// Writes an SMBIOS 2.8 entry point at [`SMBIOS_ENTRY`] and its table.
fn install_smbios(mem: &mut GuestMemory) -> Result<(), MemoryError> {
    let structures = smbios_structures();
    let mut table = Vec::new();
    let mut largest = 0;
    for (handle, s) in structures.iter().enumerate() {
        let b = s.bytes(handle as u16);
        largest = largest.max(b.len());
        table.extend(b);
    }
    let mut e = vec![0u8; 0x1F];
    e[0..4].copy_from_slice(b"_SM_");
    e[5] = 0x1F; // entry point length
    e[6] = 2; // SMBIOS 2.8
    e[7] = 8;
    e[8..10].copy_from_slice(&(largest as u16).to_le_bytes());
    e[0x10..0x15].copy_from_slice(b"_DMI_");
    e[0x16..0x18].copy_from_slice(&(table.len() as u16).to_le_bytes());
    e[0x18..0x1C].copy_from_slice(&(SMBIOS_TABLE as u32).to_le_bytes());
    e[0x1C..0x1E].copy_from_slice(&(structures.len() as u16).to_le_bytes());
    e[0x1E] = 0x28; // BCD revision 2.8
    e[0x15] = checksum(&e[0x10..0x1F]);
    e[4] = checksum(&e);
    mem.write(SMBIOS_ENTRY, &e)?;
    mem.write(SMBIOS_TABLE, &table)
}

/// Writes the BDA, the EBDA, the SMBIOS, MP and ACPI tables for `mem`,
/// which must hold at least 1 MiB.
pub fn install(mem: &mut GuestMemory) -> Result<(), MemoryError> {
    debug_assert!(mem.size() >= HIGH_MEMORY_START);
    mem.write(BDA_COM_PORTS, &[0; BDA_SIZE as usize])?;
    for (i, port) in COM_PORTS.iter().enumerate() {
        mem.write_u16(BDA_COM_PORTS + 2 * i as u64, *port)?;
    }
    mem.write_u16(BDA_EBDA_SEGMENT, (EBDA_START >> 4) as u16)?;
    mem.write_u16(BDA_EQUIPMENT, EQUIPMENT)?;
    mem.write_u16(BDA_BASE_MEMORY_KIB, (EBDA_START >> 10) as u16)?;
    mem.write(EBDA_START, &[0; 1024])?;
    mem.write(EBDA_START, &[EBDA_KIB])?;
    install_smbios(mem)?;
    mptable::install(mem)?;
    acpi::install(mem)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bda_points_at_the_ebda_and_counts_639_kib() {
        let mut mem = GuestMemory::new(2 << 20).unwrap();
        install(&mut mem).unwrap();
        // What Linux's get_bios_ebda() and reserve_bios_regions() compute.
        let ebda = u64::from(mem.read_u16(BDA_EBDA_SEGMENT).unwrap()) << 4;
        assert_eq!(ebda, 0x9_FC00);
        assert_eq!(mem.read_u16(BDA_BASE_MEMORY_KIB).unwrap(), 639);
        assert_eq!(mem.slice(ebda, 1).unwrap()[0], 1, "EBDA size in KiB");
        assert_eq!(mem.read_u16(BDA_COM_PORTS).unwrap(), 0x3F8);
        assert_eq!(mem.read_u16(BDA_COM_PORTS + 2).unwrap(), 0);
    }

    #[test]
    fn the_tables_do_not_overlap() {
        let mut mem = GuestMemory::new(2 << 20).unwrap();
        install(&mut mem).unwrap();
        let e = mem.slice(SMBIOS_ENTRY, 0x1F).unwrap().to_vec();
        let len = u64::from(u16::from_le_bytes([e[0x16], e[0x17]]));
        assert!(SMBIOS_TABLE + len <= mptable::FLOATING_POINTER);
    }

    #[test]
    fn smbios_entry_point_checks_out_as_linux_reads_it() {
        let mut mem = GuestMemory::new(2 << 20).unwrap();
        install(&mut mem).unwrap();
        let e = mem.slice(SMBIOS_ENTRY, 0x1F).unwrap().to_vec();
        assert_eq!(&e[0..4], b"_SM_");
        assert_eq!(e.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!(&e[0x10..0x15], b"_DMI_");
        assert_eq!(e[0x10..0x1F].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let len = u16::from_le_bytes([e[0x16], e[0x17]]) as usize;
        let at = u32::from_le_bytes(e[0x18..0x1C].try_into().unwrap());
        let table = mem.slice(u64::from(at), len).unwrap();
        // Walk it as dmi_decode does: header, formatted part, strings to a
        // double NUL.
        let (mut i, mut kinds) = (0, Vec::new());
        while i < table.len() {
            kinds.push(table[i]);
            let mut j = i + usize::from(table[i + 1]);
            while table[j] != 0 || table[j + 1] != 0 {
                j += 1;
            }
            i = j + 2;
        }
        assert_eq!(i, len);
        assert_eq!(kinds, [0, 1, 127]);
        assert_eq!(usize::from(u16::from_le_bytes([e[0x1C], e[0x1D]])), 3);
        let text = String::from_utf8_lossy(table);
        assert!(text.contains("popek virtual machine"), "{text}");
    }
}
