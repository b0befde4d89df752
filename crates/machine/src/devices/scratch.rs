//! A memory-mapped test device: one 4 KiB page outside RAM with an ID
//! register, a read-write scratch register and two access counters, so a
//! guest can prove that its loads and stores reach the MMIO bus (and how
//! many of them did) under either engine. No real PC has it; it sits in
//! the PCI hole, where nothing else of popek's machine is.
//!
//! Registers are 32 bits wide, little-endian, and may be accessed in any
//! width at any byte offset: each byte of an access is the byte of the
//! register it falls in. Offsets past the registers read as zero and
//! ignore writes.

use crate::BusDevice;

/// Guest-physical base of the device.
pub const BASE: u64 = 0xFEB0_0000;
/// Size of the device's window.
pub const SIZE: u64 = 0x1000;

/// ID (read-only): [`ID_VALUE`].
pub const ID: u64 = 0x00;
/// SCRATCH (read-write): whatever the guest last wrote, 0 at power-on.
pub const SCRATCH: u64 = 0x04;
/// READS (read-only): how many reads the device answered before this one.
pub const READS: u64 = 0x08;
/// WRITES (read-only): how many writes the device has seen, ignored ones
/// included.
pub const WRITES: u64 = 0x0C;

/// What ID reads as: the bytes "popk" in address order.
pub const ID_VALUE: u32 = u32::from_le_bytes(*b"popk");

/// Width of every register in bytes.
const REG_BYTES: u64 = 4;

/// The scratch/ID device.
#[derive(Debug, Default)]
pub struct Scratch {
    scratch: u32,
    reads: u32,
    writes: u32,
}

impl Scratch {
    /// The device at power-on.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of the register at `reg` (a multiple of 4), as a read now
    /// would see it.
    fn register(&self, reg: u64) -> u32 {
        match reg {
            ID => ID_VALUE,
            SCRATCH => self.scratch,
            READS => self.reads,
            WRITES => self.writes,
            _ => 0,
        }
    }
}

/// The register a byte offset falls in, and the byte's place in it.
fn split(offset: u64) -> (u64, u32) {
    (offset & !(REG_BYTES - 1), (offset % REG_BYTES) as u32 * 8)
}

impl BusDevice for Scratch {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        for (at, byte) in (offset..).zip(data.iter_mut()) {
            let (reg, shift) = split(at);
            *byte = (self.register(reg) >> shift) as u8;
        }
        self.reads = self.reads.wrapping_add(1);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        for (at, &byte) in (offset..).zip(data) {
            let (reg, shift) = split(at);
            if reg == SCRATCH {
                self.scratch = self.scratch & !(0xFF << shift) | u32::from(byte) << shift;
            }
        }
        self.writes = self.writes.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(d: &mut Scratch, offset: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        d.read(BASE, offset, &mut b[..len]);
        u64::from_le_bytes(b)
    }

    fn write(d: &mut Scratch, offset: u64, value: u64, len: usize) {
        d.write(BASE, offset, &value.to_le_bytes()[..len]);
    }

    #[test]
    fn id_reads_as_popk_in_every_width() {
        let mut d = Scratch::new();
        assert_eq!(read(&mut d, ID, 4), 0x6B70_6F70);
        let bytes: Vec<u8> = (0..4).map(|i| read(&mut d, ID + i, 1) as u8).collect();
        assert_eq!(bytes, b"popk");
        assert_eq!(
            read(&mut d, ID + 2, 2),
            u64::from(u16::from_le_bytes(*b"pk"))
        );
        write(&mut d, ID, 0, 4);
        assert_eq!(read(&mut d, ID, 4), u64::from(ID_VALUE), "ID is read-only");
    }

    #[test]
    fn scratch_keeps_what_was_written_byte_by_byte() {
        let mut d = Scratch::new();
        assert_eq!(read(&mut d, SCRATCH, 4), 0);
        write(&mut d, SCRATCH, 0x1234_5678, 4);
        assert_eq!(read(&mut d, SCRATCH, 4), 0x1234_5678);
        write(&mut d, SCRATCH + 1, 0xAB, 1);
        assert_eq!(read(&mut d, SCRATCH, 4), 0x1234_AB78);
        write(&mut d, SCRATCH + 2, 0xCDEF, 2);
        assert_eq!(read(&mut d, SCRATCH + 2, 2), 0xCDEF);
        assert_eq!(read(&mut d, SCRATCH, 4), 0xCDEF_AB78);
    }

    #[test]
    fn a_wide_access_spans_registers() {
        let mut d = Scratch::new();
        write(&mut d, SCRATCH, 0x0BAD_F00D, 4);
        assert_eq!(read(&mut d, ID, 8), 0x0BAD_F00D_6B70_6F70);
        // An 8-byte write from ID reaches SCRATCH only with its high half.
        write(&mut d, ID, 0x1122_3344_5566_7788, 8);
        assert_eq!(read(&mut d, SCRATCH, 4), 0x1122_3344);
    }

    #[test]
    fn counters_count_accesses_not_bytes() {
        let mut d = Scratch::new();
        assert_eq!(read(&mut d, READS, 4), 0, "no read before the first");
        assert_eq!(read(&mut d, READS, 4), 1);
        read(&mut d, ID, 1);
        read(&mut d, ID, 8);
        assert_eq!(read(&mut d, READS, 4), 4);
        assert_eq!(read(&mut d, WRITES, 4), 0);
        write(&mut d, SCRATCH, 1, 4);
        write(&mut d, ID, 1, 1);
        write(&mut d, 0x800, 1, 2);
        assert_eq!(read(&mut d, WRITES, 4), 3, "ignored writes count too");
        write(&mut d, READS, 0, 4);
        assert_eq!(read(&mut d, READS, 4), 7, "the counters are read-only");
    }

    #[test]
    fn the_rest_of_the_page_reads_as_zero() {
        let mut d = Scratch::new();
        write(&mut d, 0x10, 0xFFFF_FFFF, 4);
        assert_eq!(read(&mut d, 0x10, 4), 0);
        assert_eq!(read(&mut d, SIZE - 4, 4), 0);
    }
}
