//! isa-debug-exit at port 0xF4: a write of v ends the VM with status (v << 1) | 1.
use crate::{PortDevice, StopHandle};

/// The exit port.
pub const PORT: u16 = 0xF4;

/// The debug-exit device.
pub struct DebugExit {}

impl DebugExit {
    /// A device that stops the VM through `stop`.
    pub fn new(_stop: StopHandle) -> Self {
        todo!()
    }
}

impl PortDevice for DebugExit {
    fn read(&mut self, _port: u16, _data: &mut [u8]) {
        todo!()
    }
    fn write(&mut self, _port: u16, _data: &[u8]) {
        todo!()
    }
}
