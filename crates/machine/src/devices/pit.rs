//! 8254 programmable interval timer (0x40-0x43) and system control port B (0x61).
use std::sync::Arc;

use crate::clock::Clock;
use crate::irq::IrqLine;
use crate::PortDevice;

/// Channel 0 data port.
pub const CHANNEL0: u16 = 0x40;
/// Mode/command port.
pub const COMMAND: u16 = 0x43;
/// System control port B: channel 2 gate (bit 0), speaker (bit 1), OUT2 (bit 5).
pub const PORT_B: u16 = 0x61;

/// The PIT, timed from a [`Clock`].
pub struct Pit {}

impl Pit {
    /// A PIT in its power-on state; channel 0 drives `irq0`.
    pub fn new(_clock: Arc<dyn Clock>, _irq0: Box<dyn IrqLine>) -> Self {
        todo!()
    }
    /// Raises IRQ 0 edges that came due since the last update.
    pub fn update(&mut self) {
        todo!()
    }
    /// Nanoseconds until channel 0's next IRQ edge, if one is scheduled.
    pub fn ns_until_next_irq(&self) -> Option<u64> {
        todo!()
    }
}

impl PortDevice for Pit {
    fn read(&mut self, _port: u16, _data: &mut [u8]) {
        todo!()
    }
    fn write(&mut self, _port: u16, _data: &[u8]) {
        todo!()
    }
}
