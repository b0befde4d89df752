//! PCI configuration mechanism #1 (0xCF8 address, 0xCFC-0xCFF data) with no devices.
use crate::PortDevice;

/// CONFIG_ADDRESS port.
pub const CONFIG_ADDRESS: u16 = 0xCF8;
/// CONFIG_DATA port.
pub const CONFIG_DATA: u16 = 0xCFC;

/// A host bridge that answers "no device" on every function.
#[derive(Default)]
pub struct PciConfig {}

impl PciConfig {
    /// Power-on state.
    pub fn new() -> Self {
        todo!()
    }
}

impl PortDevice for PciConfig {
    fn read(&mut self, _port: u16, _data: &mut [u8]) {
        todo!()
    }
    fn write(&mut self, _port: u16, _data: &[u8]) {
        todo!()
    }
}
