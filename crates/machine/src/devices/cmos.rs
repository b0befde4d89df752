//! CMOS RAM and MC146818 real-time clock (0x70 index, 0x71 data).
use crate::PortDevice;

/// Index port (bit 7 is the NMI mask).
pub const INDEX: u16 = 0x70;
/// Data port.
pub const DATA: u16 = 0x71;

/// CMOS RAM with the RTC.
pub struct Cmos {}

impl Cmos {
    /// CMOS reporting `ram_bytes` of RAM, the RTC reading `now()` (Unix seconds, UTC).
    pub fn new(_ram_bytes: u64, _now: Box<dyn Fn() -> i64 + Send>) -> Self {
        todo!()
    }
    /// The host's wall clock in Unix seconds.
    pub fn host_time() -> i64 {
        todo!()
    }
}

impl PortDevice for Cmos {
    fn read(&mut self, _port: u16, _data: &mut [u8]) {
        todo!()
    }
    fn write(&mut self, _port: u16, _data: &[u8]) {
        todo!()
    }
}
