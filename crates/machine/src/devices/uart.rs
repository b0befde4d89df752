//! 16550A UART (COM1 at 0x3F8, IRQ 4).
use std::io::Write;

use crate::irq::IrqLine;
use crate::PortDevice;

/// COM1 base port.
pub const COM1: u16 = 0x3F8;

/// A 16550A.
pub struct Uart {}

impl Uart {
    /// A UART writing transmitted bytes to `out` and raising `irq`.
    pub fn new(_out: Box<dyn Write + Send>, _irq: Box<dyn IrqLine>) -> Self {
        todo!()
    }
    /// Bytes arriving on the receive line (from the console's stdin).
    pub fn enqueue_input(&mut self, _bytes: &[u8]) {
        todo!()
    }
    /// Flushes the console backend.
    pub fn flush(&mut self) {
        todo!()
    }
}

impl PortDevice for Uart {
    fn read(&mut self, _port: u16, _data: &mut [u8]) {
        todo!()
    }
    fn write(&mut self, _port: u16, _data: &[u8]) {
        todo!()
    }
}
