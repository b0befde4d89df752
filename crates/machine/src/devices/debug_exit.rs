//! isa-debug-exit at port 0xF4: a write of v ends the VM with status (v << 1) | 1.
use crate::bus::BusDevice;
use crate::{StopHandle, StopReason};

/// The exit port.
pub const PORT: u16 = 0xF4;

/// What a read returns: the device has no readable register.
const READ_VALUE: u8 = 0xFF;

/// The debug-exit device.
pub struct DebugExit {
    stop: StopHandle,
}

impl DebugExit {
    /// A device that stops the VM through `stop`.
    pub fn new(stop: StopHandle) -> Self {
        DebugExit { stop }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(READ_VALUE);
    }

    fn write(&mut self, _base: u64, _offset: u64, data: &[u8]) {
        // The value is as wide as the access, zero-extended, as in QEMU.
        let mut bytes = [0u8; 4];
        let n = data.len().min(4);
        bytes[..n].copy_from_slice(&data[..n]);
        self.stop
            .request(StopReason::DebugExit(u32::from_le_bytes(bytes)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_write_requests_debug_exit() {
        let stop = StopHandle::new();
        let mut d = DebugExit::new(stop.clone());
        assert!(!stop.is_requested());
        d.write(PORT.into(), 0, &[0x10]);
        let reason = stop.take().unwrap();
        assert_eq!(reason, StopReason::DebugExit(0x10));
        assert_eq!(reason.exit_status(), 0x21);
    }

    #[test]
    fn the_value_has_the_access_size() {
        let stop = StopHandle::new();
        let mut d = DebugExit::new(stop.clone());
        d.write(PORT.into(), 0, &0x0102u16.to_le_bytes());
        assert_eq!(stop.take(), Some(StopReason::DebugExit(0x0102)));
        d.write(PORT.into(), 0, &0x8000_0001u32.to_le_bytes());
        assert_eq!(stop.take(), Some(StopReason::DebugExit(0x8000_0001)));
    }

    #[test]
    fn zero_exits_with_status_one() {
        let stop = StopHandle::new();
        DebugExit::new(stop.clone()).write(PORT.into(), 0, &[0]);
        assert_eq!(stop.take().map(StopReason::exit_status), Some(1));
    }

    #[test]
    fn reads_return_ones_and_do_not_stop() {
        let stop = StopHandle::new();
        let mut d = DebugExit::new(stop.clone());
        let mut b = [0u8; 2];
        d.read(PORT.into(), 0, &mut b);
        assert_eq!(b, [0xFF, 0xFF]);
        assert!(!stop.is_requested());
    }
}
