//! 8259A programmable interrupt controller pair (master at 0x20, slave at 0xA0).
use crate::PortDevice;

/// Master PIC command port.
pub const MASTER_CMD: u16 = 0x20;
/// Master PIC data port.
pub const MASTER_DATA: u16 = 0x21;
/// Slave PIC command port.
pub const SLAVE_CMD: u16 = 0xA0;
/// Slave PIC data port.
pub const SLAVE_DATA: u16 = 0xA1;

/// The cascaded master/slave pair of a PC.
pub struct PicPair {}

impl Default for PicPair {
    fn default() -> Self {
        Self::new()
    }
}

impl PicPair {
    /// A pair in its power-on state.
    pub fn new() -> Self {
        todo!()
    }
    /// Sets the level of input `irq` (0..=15).
    pub fn set_irq(&mut self, _irq: u8, _level: bool) {
        todo!()
    }
    /// The INTR output: an unmasked request beats everything in service.
    pub fn has_interrupt(&self) -> bool {
        todo!()
    }
    /// The INTA cycle: returns the vector to deliver (spurious 7/15 if none).
    pub fn acknowledge(&mut self) -> u8 {
        todo!()
    }
}

impl PortDevice for PicPair {
    fn read(&mut self, _port: u16, _data: &mut [u8]) {
        todo!()
    }
    fn write(&mut self, _port: u16, _data: &[u8]) {
        todo!()
    }
}
