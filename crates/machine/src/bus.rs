//! The port-I/O bus: routes an IN or OUT from any engine to the device that
//! claims the port, the way Firecracker's `Bus` routes MMIO and PIO exits.

use std::sync::{Arc, Mutex};

/// A device on the port-I/O bus. `data.len()` is the access size (1, 2 or 4);
/// `port` is the absolute port number, so one device may claim several ranges.
pub trait PortDevice: Send {
    /// Handles an IN: fills `data` (little-endian) with the value read.
    fn read(&mut self, port: u16, data: &mut [u8]);
    /// Handles an OUT of `data` (little-endian).
    fn write(&mut self, port: u16, data: &[u8]);
}

/// A shared device handle: the bus holds one clone, the machine another
/// (to tick timers, feed input, query the interrupt controller).
pub type SharedDevice = Arc<Mutex<dyn PortDevice>>;

struct Range {
    first: u16,
    last: u16,
    device: SharedDevice,
}

/// Port-I/O dispatch table.
#[derive(Default)]
pub struct IoBus {
    ranges: Vec<Range>,
    /// Ports read or written that no device claims, counted for `--stats`.
    pub unclaimed: u64,
}

/// Error when two devices claim overlapping ports.
#[derive(Debug, thiserror::Error)]
#[error("port range {first:#x}..={last:#x} overlaps a device already on the bus")]
pub struct Overlap {
    /// First port of the refused range.
    pub first: u16,
    /// Last port of the refused range.
    pub last: u16,
}

impl IoBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attaches `device` to ports `first..=last`.
    pub fn insert(&mut self, first: u16, last: u16, device: SharedDevice) -> Result<(), Overlap> {
        if self
            .ranges
            .iter()
            .any(|r| first <= r.last && r.first <= last)
        {
            return Err(Overlap { first, last });
        }
        self.ranges.push(Range {
            first,
            last,
            device,
        });
        self.ranges.sort_by_key(|r| r.first);
        Ok(())
    }

    fn find(&self, port: u16) -> Option<&SharedDevice> {
        let i = self.ranges.partition_point(|r| r.last < port);
        self.ranges
            .get(i)
            .filter(|r| r.first <= port)
            .map(|r| &r.device)
    }

    /// An IN from `port`; an unclaimed port reads as all ones, as on a PC.
    pub fn read(&mut self, port: u16, data: &mut [u8]) {
        match self.find(port) {
            Some(d) => d.lock().unwrap().read(port, data),
            None => {
                self.unclaimed += 1;
                data.fill(0xFF);
            }
        }
    }

    /// An OUT to `port`; writes to unclaimed ports are dropped, as on a PC.
    pub fn write(&mut self, port: u16, data: &[u8]) {
        match self.find(port) {
            Some(d) => d.lock().unwrap().write(port, data),
            None => self.unclaimed += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Latch(u8);
    impl PortDevice for Latch {
        fn read(&mut self, port: u16, data: &mut [u8]) {
            data.fill(self.0.wrapping_add(port as u8));
        }
        fn write(&mut self, _port: u16, data: &[u8]) {
            self.0 = data[0];
        }
    }

    #[test]
    fn routes_to_the_claiming_device_and_floats_elsewhere() {
        let mut bus = IoBus::new();
        let dev: SharedDevice = Arc::new(Mutex::new(Latch(0)));
        bus.insert(0x60, 0x64, dev).unwrap();
        bus.write(0x60, &[7]);
        let mut b = [0u8; 1];
        bus.read(0x61, &mut b);
        assert_eq!(b[0], 7 + 0x61);
        bus.read(0x65, &mut b);
        assert_eq!(b[0], 0xFF);
        assert_eq!(bus.unclaimed, 1);
    }

    #[test]
    fn overlapping_ranges_are_refused() {
        let mut bus = IoBus::new();
        bus.insert(0x40, 0x43, Arc::new(Mutex::new(Latch(0))))
            .unwrap();
        assert!(bus
            .insert(0x43, 0x44, Arc::new(Mutex::new(Latch(0))))
            .is_err());
        assert!(bus
            .insert(0x3F, 0x40, Arc::new(Mutex::new(Latch(0))))
            .is_err());
        bus.insert(0x44, 0x44, Arc::new(Mutex::new(Latch(0))))
            .unwrap();
    }
}
