//! POST diagnostic port 0x80: kernels write progress codes and use it as an I/O delay.
use crate::PortDevice;

/// The POST code port.
pub const PORT: u16 = 0x80;

/// Records the last POST code.
#[derive(Default)]
pub struct PostCode {}

impl PostCode {
    /// A port that has seen no code.
    pub fn new() -> Self {
        todo!()
    }
    /// The last code written, if any.
    pub fn last(&self) -> Option<u8> {
        todo!()
    }
}

impl PortDevice for PostCode {
    fn read(&mut self, _port: u16, _data: &mut [u8]) {
        todo!()
    }
    fn write(&mut self, _port: u16, _data: &[u8]) {
        todo!()
    }
}
