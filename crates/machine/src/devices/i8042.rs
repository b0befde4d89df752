//! i8042 keyboard controller: enough for the reset line (command 0xFE).
use crate::{PortDevice, StopHandle};

/// Data port.
pub const DATA: u16 = 0x60;
/// Status (read) / command (write) port.
pub const COMMAND: u16 = 0x64;

/// The keyboard controller.
pub struct I8042 {}

impl I8042 {
    /// A controller whose reset line stops the VM through `stop`.
    pub fn new(_stop: StopHandle) -> Self {
        todo!()
    }
}

impl PortDevice for I8042 {
    fn read(&mut self, _port: u16, _data: &mut [u8]) {
        todo!()
    }
    fn write(&mut self, _port: u16, _data: &[u8]) {
        todo!()
    }
}
