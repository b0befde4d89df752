//! The machine's buses. Port I/O and memory-mapped I/O are two instances of
//! one [`Bus`], in the shape of Firecracker's: a device is registered on a
//! range and sees every access as the base of that range and the offset
//! into it, so one device may sit on several ranges (the PIC's two chips
//! tell themselves apart by base) and an MMIO device can be placed anywhere
//! without knowing its address. A device that moves at run time (the local
//! APIC, which its base MSR relocates or switches off) answers in a
//! [`Window`] instead, which it moves itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A device on a bus. `data.len()` is the access size (1, 2 or 4 for
/// ports; up to 8 for MMIO); `base` is where the range the access fell in
/// starts and `offset` how far into it the access starts. An access may
/// run past the end of the range: the device decides what those bytes are.
pub trait BusDevice: Send {
    /// Handles a read: fills `data` (little-endian).
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]);
    /// Handles a write of `data` (little-endian).
    fn write(&mut self, base: u64, offset: u64, data: &[u8]);
}

/// A shared device handle: the bus holds one clone, the machine another
/// (to tick timers, feed input, query the interrupt controller).
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

struct Range {
    base: u64,
    /// The range's last address (so a range may end at `u64::MAX`).
    last: u64,
    device: SharedDevice,
}

/// Where a device that moves at run time answers: a base address, or
/// nowhere. The device holds one clone and moves it; the bus reads the
/// other on every access, without taking the device's lock.
#[derive(Clone, Debug)]
pub struct Window(Arc<AtomicU64>);

/// A window's base while it is closed (no access can start there and
/// still fit a device).
const CLOSED: u64 = u64::MAX;

impl Window {
    /// A window open at `base`.
    pub fn open_at(base: u64) -> Self {
        Window(Arc::new(AtomicU64::new(base)))
    }

    /// A window that answers nowhere until it is moved.
    pub fn closed() -> Self {
        Window(Arc::new(AtomicU64::new(CLOSED)))
    }

    /// Moves the window to `base`.
    pub fn move_to(&self, base: u64) {
        self.0.store(base, Ordering::Relaxed);
    }

    /// Stops answering.
    pub fn close(&self) {
        self.0.store(CLOSED, Ordering::Relaxed);
    }

    /// Where the window is, if open.
    pub fn base(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|&b| b != CLOSED)
    }
}

struct MovableRange {
    window: Window,
    len: u64,
    device: SharedDevice,
}

/// One address space's dispatch table: port numbers or guest-physical
/// addresses, whichever the machine registers it for.
#[derive(Default)]
pub struct Bus {
    /// Sorted by `base`, never overlapping.
    ranges: Vec<Range>,
    /// Checked before `ranges`, which they may cover: the CPU's own local
    /// APIC answers before anything on the system bus at its address.
    windows: Vec<MovableRange>,
    /// Accesses no device claimed. Atomic so that reads and writes need only
    /// `&self`: guest memory and the emulator's platform borrow the two
    /// buses side by side.
    unclaimed: AtomicU64,
}

/// Why a range could not be registered.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// The range overlaps one already registered.
    #[error("range {base:#x}+{len:#x} overlaps a device already on the bus")]
    Overlap {
        /// Start of the refused range.
        base: u64,
        /// Length of the refused range.
        len: u64,
    },
    /// The range is empty or wraps past the end of the address space.
    #[error("range {base:#x}+{len:#x} is empty or wraps around the address space")]
    BadRange {
        /// Start of the refused range.
        base: u64,
        /// Length of the refused range.
        len: u64,
    },
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `device` on `len` addresses from `base`.
    pub fn insert(&mut self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        let last = len
            .checked_sub(1)
            .and_then(|l| base.checked_add(l))
            .ok_or(BusError::BadRange { base, len })?;
        if self.ranges.iter().any(|r| base <= r.last && r.base <= last) {
            return Err(BusError::Overlap { base, len });
        }
        let at = self.ranges.partition_point(|r| r.base < base);
        self.ranges.insert(at, Range { base, last, device });
        Ok(())
    }

    /// Registers `device` on `len` addresses wherever `window` is.
    pub fn insert_window(&mut self, device: SharedDevice, window: Window, len: u64) {
        self.windows.push(MovableRange {
            window,
            len,
            device,
        });
    }

    /// The device claiming `addr` and the base of its range.
    fn find(&self, addr: u64) -> Option<(&SharedDevice, u64)> {
        let moved = self.windows.iter().find_map(|w| {
            let base = w.window.base()?;
            (addr.wrapping_sub(base) < w.len).then_some((&w.device, base))
        });
        moved.or_else(|| {
            let i = self.ranges.partition_point(|r| r.last < addr);
            let r = self.ranges.get(i).filter(|r| r.base <= addr)?;
            Some((&r.device, r.base))
        })
    }

    /// A read at `addr`. Where no device claims it, `data` reads as all
    /// ones (a floating bus, as on a PC) and `false` is returned.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((device, base)) => {
                device.lock().unwrap().read(base, addr - base, data);
                true
            }
            None => {
                self.unclaimed.fetch_add(1, Ordering::Relaxed);
                data.fill(0xFF);
                false
            }
        }
    }

    /// A write at `addr`. Where no device claims it the write is dropped,
    /// as on a PC, and `false` is returned.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((device, base)) => {
                device.lock().unwrap().write(base, addr - base, data);
                true
            }
            None => {
                self.unclaimed.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// How many accesses no device claimed.
    pub fn unclaimed(&self) -> u64 {
        self.unclaimed.load(Ordering::Relaxed)
    }
}

/// The machine's two buses.
#[derive(Default)]
pub struct Buses {
    /// Port I/O: addresses are port numbers (0..=0xFFFF).
    pub pio: Bus,
    /// Memory-mapped I/O: addresses are guest-physical, outside RAM.
    pub mmio: Bus,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remembers the last write and answers reads with base, offset and
    /// that value, so a test sees exactly what the bus passed.
    #[derive(Default)]
    struct Probe {
        last: u8,
    }
    impl BusDevice for Probe {
        fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
            data[0] = base as u8;
            data[1] = offset as u8;
            data[2] = self.last;
        }
        fn write(&mut self, _base: u64, _offset: u64, data: &[u8]) {
            self.last = data[0];
        }
    }

    fn probe() -> SharedDevice {
        Arc::new(Mutex::new(Probe::default()))
    }

    #[test]
    fn a_device_sees_the_base_of_its_range_and_the_offset_into_it() {
        let mut bus = Bus::new();
        let dev = probe();
        bus.insert(dev.clone(), 0x20, 2).unwrap();
        bus.insert(dev, 0xA0, 2).unwrap();
        assert!(bus.write(0xA1, &[7]));
        let mut b = [0u8; 3];
        assert!(bus.read(0x21, &mut b));
        assert_eq!(b, [0x20, 1, 7]);
        assert!(bus.read(0xA0, &mut b));
        assert_eq!(b, [0xA0, 0, 7]);
        assert_eq!(bus.unclaimed(), 0);
    }

    #[test]
    fn unclaimed_addresses_float_high_and_are_counted() {
        let mut bus = Bus::new();
        bus.insert(probe(), 0xFEB0_0000, 0x1000).unwrap();
        let mut b = [0u8; 4];
        assert!(!bus.read(0xFEB0_1000, &mut b));
        assert_eq!(b, [0xFF; 4]);
        assert!(!bus.read(0xFEAF_FFFF, &mut b));
        assert!(!bus.write(0x1234, &[1]));
        assert_eq!(bus.unclaimed(), 3);
        assert!(bus.read(0xFEB0_0FFF, &mut b[..3]));
        assert_eq!(b[1], 0xFF, "offset 0xFFF seen by the device");
    }

    #[test]
    fn overlapping_and_empty_ranges_are_refused() {
        let mut bus = Bus::new();
        bus.insert(probe(), 0x40, 4).unwrap();
        assert_eq!(
            bus.insert(probe(), 0x43, 2),
            Err(BusError::Overlap { base: 0x43, len: 2 })
        );
        assert_eq!(
            bus.insert(probe(), 0x3F, 2),
            Err(BusError::Overlap { base: 0x3F, len: 2 })
        );
        assert_eq!(
            bus.insert(probe(), 0x50, 0),
            Err(BusError::BadRange { base: 0x50, len: 0 })
        );
        assert!(matches!(
            bus.insert(probe(), u64::MAX, 2),
            Err(BusError::BadRange { .. })
        ));
        bus.insert(probe(), 0x44, 1).unwrap();
        bus.insert(probe(), u64::MAX, 1).unwrap();
        let mut b = [0u8; 3];
        assert!(bus.read(u64::MAX, &mut b));
    }

    #[test]
    fn a_window_answers_where_it_was_moved_and_covers_fixed_ranges() {
        let mut bus = Bus::new();
        bus.insert(probe(), 0xFEE0_0000, 0x10).unwrap();
        let window = Window::closed();
        let moving = Arc::new(Mutex::new(Probe { last: 0xAA }));
        bus.insert_window(moving, window.clone(), 0x1000);
        let mut b = [0u8; 3];
        // Closed: the fixed device is what answers.
        assert!(bus.read(0xFEE0_0004, &mut b));
        assert_eq!(b, [0x00, 0x04, 0]);
        window.move_to(0xFEE0_0000);
        assert_eq!(window.base(), Some(0xFEE0_0000));
        assert!(bus.read(0xFEE0_0004, &mut b));
        assert_eq!(b, [0x00, 0x04, 0xAA], "the window wins");
        window.move_to(0xFEF0_0000);
        assert!(bus.read(0xFEF0_0FFF, &mut b));
        assert_eq!((b[1], b[2]), (0xFF, 0xAA));
        assert!(!bus.read(0xFEF0_1000, &mut b), "past the window");
        window.close();
        assert!(!bus.read(0xFEF0_0000, &mut b));
        assert_eq!(window.base(), None);
    }

    #[test]
    fn ranges_registered_out_of_order_are_all_found() {
        let mut bus = Bus::new();
        for base in [0x330, 0x110, 0x220] {
            bus.insert(probe(), base, 0x10).unwrap();
        }
        let mut b = [0u8; 3];
        for (addr, base, offset) in [(0x115, 0x10, 5), (0x22F, 0x20, 0xF), (0x330, 0x30, 0)] {
            assert!(bus.read(addr, &mut b));
            assert_eq!((b[0], b[1]), (base, offset), "{addr:#x}");
        }
        assert!(!bus.read(0x120, &mut b));
    }
}
