//! PCI configuration mechanism #1 (0xCF8 address, 0xCFC-0xCFF data) with no devices.
use crate::bus::BusDevice;

/// CONFIG_ADDRESS port.
pub const CONFIG_ADDRESS: u16 = 0xCF8;
/// CONFIG_DATA port.
pub const CONFIG_DATA: u16 = 0xCFC;

/// CONFIG_ADDRESS bit 31: the next data access is a configuration cycle.
pub const ENABLE: u32 = 1 << 31;
/// CONFIG_ADDRESS bits that hold state; bits 30:24 and 1:0 are reserved and read as zero.
const ADDRESS_MASK: u32 = ENABLE | 0x00FF_FFFC;

/// A host bridge that answers "no device" on every function.
#[derive(Default)]
pub struct PciConfig {
    address: u32,
}

impl PciConfig {
    /// Power-on state.
    pub fn new() -> Self {
        Self::default()
    }

    /// The latched CONFIG_ADDRESS.
    pub fn address(&self) -> u32 {
        self.address
    }
}

impl BusDevice for PciConfig {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        if super::port(base, offset) == CONFIG_ADDRESS && data.len() == 4 {
            data.copy_from_slice(&self.address.to_le_bytes());
        } else {
            // Either a data read (no function answers, so the bus master
            // aborts and returns ones: vendor ID 0xFFFF) or a non-dword access
            // to the address port, which the bridge passes to the ISA bus.
            data.fill(0xFF);
        }
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        // Only dword writes latch: byte writes to 0xCF8/0xCF9 are the old
        // mechanism #2 and 0xCF9 is the reset control register on chipsets.
        if super::port(base, offset) == CONFIG_ADDRESS {
            if let Ok(bytes) = <[u8; 4]>::try_from(data) {
                self.address = u32::from_le_bytes(bytes) & ADDRESS_MASK;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(bus: u32, dev: u32, func: u32, reg: u32) -> u32 {
        ENABLE | bus << 16 | dev << 11 | func << 8 | reg
    }

    fn read(p: &mut PciConfig, port: u16, size: usize) -> u32 {
        let mut b = [0u8; 4];
        p.read(
            CONFIG_ADDRESS.into(),
            u64::from(port - CONFIG_ADDRESS),
            &mut b[..size],
        );
        u32::from_le_bytes(b)
    }

    #[test]
    fn the_address_latch_reads_back() {
        let mut p = PciConfig::new();
        let a = address(0, 3, 1, 0x10);
        p.write(CONFIG_ADDRESS.into(), 0, &a.to_le_bytes());
        assert_eq!(read(&mut p, CONFIG_ADDRESS, 4), a);
        assert_eq!(p.address(), a);
    }

    #[test]
    fn reserved_address_bits_read_as_zero() {
        let mut p = PciConfig::new();
        p.write(CONFIG_ADDRESS.into(), 0, &0xFFFF_FFFFu32.to_le_bytes());
        assert_eq!(read(&mut p, CONFIG_ADDRESS, 4), 0x80FF_FFFC);
    }

    #[test]
    fn narrow_writes_do_not_latch() {
        let mut p = PciConfig::new();
        let a = address(0, 0, 0, 0);
        p.write(CONFIG_ADDRESS.into(), 0, &a.to_le_bytes());
        p.write(CONFIG_ADDRESS.into(), 0, &[0x12]);
        p.write(CONFIG_ADDRESS.into(), 0, &0x3456u16.to_le_bytes());
        assert_eq!(read(&mut p, CONFIG_ADDRESS, 4), a);
    }

    #[test]
    fn every_function_reads_vendor_ffff() {
        let mut p = PciConfig::new();
        for (bus, dev, func) in [(0, 0, 0), (0, 31, 7), (255, 5, 2)] {
            p.write(
                CONFIG_ADDRESS.into(),
                0,
                &address(bus, dev, func, 0).to_le_bytes(),
            );
            assert_eq!(read(&mut p, CONFIG_DATA, 4), 0xFFFF_FFFF);
            assert_eq!(read(&mut p, CONFIG_DATA, 2), 0xFFFF);
        }
    }

    #[test]
    fn byte_and_word_data_reads_are_all_ones() {
        let mut p = PciConfig::new();
        p.write(CONFIG_ADDRESS.into(), 0, &address(0, 0, 0, 0).to_le_bytes());
        for port in CONFIG_DATA..CONFIG_DATA + 4 {
            assert_eq!(read(&mut p, port, 1), 0xFF);
        }
        assert_eq!(read(&mut p, CONFIG_DATA + 2, 2), 0xFFFF);
    }

    #[test]
    fn data_writes_are_ignored() {
        let mut p = PciConfig::new();
        let a = address(0, 1, 0, 4);
        p.write(CONFIG_ADDRESS.into(), 0, &a.to_le_bytes());
        p.write(CONFIG_ADDRESS.into(), 4, &0u32.to_le_bytes());
        assert_eq!(read(&mut p, CONFIG_DATA, 4), 0xFFFF_FFFF);
        assert_eq!(read(&mut p, CONFIG_ADDRESS, 4), a);
    }
}
