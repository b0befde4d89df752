//! What a PC's BIOS leaves in low memory for the OS to read: the BIOS data
//! area (BDA) and the extended BIOS data area (EBDA). popek has no BIOS; the
//! loaders write this state before the kernel starts, as a BIOS would have.
//!
//! Linux reads it at boot: the decompressor's ACPI RSDP search and
//! `reserve_bios_regions` take the EBDA segment from 0x40E and the size of
//! base memory from 0x413, and the MP-table scan covers the EBDA's first
//! KiB (linux-i386.md beside design.md).

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

/// Writes the BDA and the EBDA for `mem`, which must hold at least 1 MiB.
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
}
