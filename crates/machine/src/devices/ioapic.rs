//! I/O APIC (82093AA-style, version 0x20 as QEMU's): 24 interrupt pins, each
//! turned by its redirection table entry into a [`Message`] for the local
//! APIC. Memory-mapped at 0xFEC00000 through an index register (IOREGSEL)
//! and a data window (IOWIN), plus the EOI register of version 0x20.
//!
//! A plain state machine: the machine's interrupt routing
//! (`crate::irq::IrqChip`) drives the pins from the ISA IRQ lines (ISA IRQ 0,
//! the PIT, on pin 2 as on a PC; the others on their own number) and hands
//! the messages this returns to the local APIC, whose EOIs of
//! level-triggered vectors come back here.
//!
//! Edge-triggered pins deliver on a rising edge; an edge on a masked pin is
//! lost (the 82093AA datasheet's rule; QEMU keeps it and delivers it on
//! unmasking). Level-triggered pins deliver while asserted, once per EOI:
//! delivery sets the entry's remote IRR, and an EOI for its vector clears
//! it, delivering again if the pin is still asserted. Polarity is recorded
//! but not applied: the lines are modelled as "asserted", as QEMU does.

use super::lapic::Message;

/// Where the I/O APIC's registers are on a PC.
pub const BASE: u64 = 0xFEC0_0000;
/// Size of the register page.
pub const SIZE: u64 = 0x1000;

/// Index register: which register IOWIN shows.
pub const IOREGSEL: u64 = 0x00;
/// Data window onto the register IOREGSEL selects.
pub const IOWIN: u64 = 0x10;
/// EOI register (version 0x20): ends level-triggered interrupts of the
/// vector written, as the local APIC's broadcast does.
pub const EOI: u64 = 0x40;

/// Indirect register: I/O APIC ID (bits 27:24).
pub const REG_ID: u8 = 0x00;
/// Indirect register: version and last redirection entry (read-only).
pub const REG_VERSION: u8 = 0x01;
/// Indirect register: arbitration ID (read-only).
pub const REG_ARBITRATION: u8 = 0x02;
/// Indirect register: the low half of redirection entry 0; entry n is at
/// 0x10 + 2n (low) and 0x11 + 2n (high).
pub const REG_REDIRECTION: u8 = 0x10;

/// Interrupt pins.
pub const PINS: usize = 24;
/// The version register: version 0x20, last entry 23.
pub const VERSION_VALUE: u32 = ((PINS as u32 - 1) << 16) | 0x20;

/// Redirection table entry bits.
pub mod entry {
    /// The vector.
    pub const VECTOR: u64 = 0xFF;
    /// Delivery mode (bits 10:8, values in `lapic::delivery`).
    pub const MODE: u64 = 0x700;
    /// Logical destination mode (else physical).
    pub const LOGICAL: u64 = 1 << 11;
    /// Delivery status (read-only; always idle: delivery is immediate).
    pub const PENDING: u64 = 1 << 12;
    /// Input pin polarity: active low.
    pub const POLARITY: u64 = 1 << 13;
    /// Remote IRR (read-only): a level-triggered interrupt awaits its EOI.
    pub const REMOTE_IRR: u64 = 1 << 14;
    /// Level-triggered (else edge).
    pub const LEVEL: u64 = 1 << 15;
    /// Masked.
    pub const MASKED: u64 = 1 << 16;
    /// Destination field (bits 63:56).
    pub const DEST_SHIFT: u32 = 56;
    /// Bits a write keeps.
    pub const WRITABLE: u64 = 0xFF00_0000_0001_AFFF;
    /// After reset: masked, everything else zero.
    pub const RESET: u64 = MASKED;
}

/// The I/O APIC.
#[derive(Debug)]
pub struct IoApic {
    id: u8,
    select: u8,
    entries: [u64; PINS],
    /// Which pins are asserted.
    levels: u32,
}

impl Default for IoApic {
    fn default() -> Self {
        Self::new()
    }
}

impl IoApic {
    /// An I/O APIC after reset: ID 0, every entry masked.
    pub fn new() -> Self {
        IoApic {
            id: 0,
            select: 0,
            entries: [entry::RESET; PINS],
            levels: 0,
        }
    }

    /// The message entry `pin` sends.
    fn message(&self, pin: usize) -> Message {
        let e = self.entries[pin];
        Message {
            vector: (e & entry::VECTOR) as u8,
            mode: ((e & entry::MODE) >> 8) as u8,
            logical: e & entry::LOGICAL != 0,
            dest: (e >> entry::DEST_SHIFT) as u8,
            level: e & entry::LEVEL != 0,
        }
    }

    /// Delivers a level-triggered pin if it is asserted, unmasked and not
    /// awaiting an EOI.
    fn service_level(&mut self, pin: usize) -> Option<Message> {
        let e = self.entries[pin];
        let asserted = self.levels & (1 << pin) != 0;
        if e & entry::LEVEL == 0 || e & (entry::MASKED | entry::REMOTE_IRR) != 0 || !asserted {
            return None;
        }
        self.entries[pin] |= entry::REMOTE_IRR;
        Some(self.message(pin))
    }

    /// Drives input `pin` (0..24) to `level`; returns the message it sends.
    pub fn set_pin(&mut self, pin: usize, level: bool) -> Option<Message> {
        let bit = 1 << pin;
        let rising = level && self.levels & bit == 0;
        if level {
            self.levels |= bit;
        } else {
            self.levels &= !bit;
        }
        let e = self.entries[pin];
        if e & entry::LEVEL != 0 {
            return self.service_level(pin);
        }
        (rising && e & entry::MASKED == 0).then(|| self.message(pin))
    }

    /// An EOI for `vector` (the local APIC's broadcast, or the EOI
    /// register): clears the remote IRR of the entries with that vector,
    /// and returns the messages of those whose pin is still asserted.
    pub fn eoi(&mut self, vector: u8) -> Vec<Message> {
        let mut again = Vec::new();
        for pin in 0..PINS {
            let e = self.entries[pin];
            if e & entry::REMOTE_IRR != 0 && (e & entry::VECTOR) as u8 == vector {
                self.entries[pin] &= !entry::REMOTE_IRR;
                again.extend(self.service_level(pin));
            }
        }
        again
    }

    fn read_register(&self) -> u32 {
        match self.select {
            REG_ID | REG_ARBITRATION => u32::from(self.id) << 24,
            REG_VERSION => VERSION_VALUE,
            r if r >= REG_REDIRECTION && usize::from(r - REG_REDIRECTION) < 2 * PINS => {
                let i = usize::from(r - REG_REDIRECTION);
                (self.entries[i / 2] >> (32 * (i % 2))) as u32
            }
            _ => 0,
        }
    }

    /// A write to the selected register; returns a message if it unmasked
    /// an asserted level-triggered pin.
    fn write_register(&mut self, value: u32) -> Option<Message> {
        match self.select {
            REG_ID => self.id = ((value >> 24) & 0xF) as u8,
            r if r >= REG_REDIRECTION && usize::from(r - REG_REDIRECTION) < 2 * PINS => {
                let i = usize::from(r - REG_REDIRECTION);
                let (pin, shift) = (i / 2, 32 * (i % 2));
                let old = self.entries[pin];
                let half = 0xFFFF_FFFFu64 << shift;
                let new = (old & !half) | (u64::from(value) << shift);
                let kept = entry::PENDING | entry::REMOTE_IRR;
                let mut e = (new & entry::WRITABLE) | (old & kept);
                if e & entry::LEVEL == 0 {
                    // An edge-triggered entry awaits no EOI.
                    e &= !entry::REMOTE_IRR;
                }
                self.entries[pin] = e;
                return self.service_level(pin);
            }
            // Version and arbitration ID are read-only.
            _ => {}
        }
        None
    }

    /// A read of `data.len()` bytes at `offset` into the register page.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset & !3 {
            IOREGSEL => u32::from(self.select),
            IOWIN => self.read_register(),
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        let at = (offset & 3) as usize;
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(at + i).copied().unwrap_or(0);
        }
    }

    /// A write of `data` at `offset` into the register page; returns the
    /// messages it caused.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Vec<Message> {
        let mut b = [0u8; 4];
        let n = data.len().min(4);
        b[..n].copy_from_slice(&data[..n]);
        let value = u32::from_le_bytes(b);
        match offset {
            IOREGSEL => self.select = value as u8,
            IOWIN if data.len() >= 4 => return self.write_register(value).into_iter().collect(),
            EOI => return self.eoi(value as u8),
            _ => {}
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::lapic::delivery;

    fn sel_write(io: &mut IoApic, reg: u8, v: u32) -> Vec<Message> {
        io.write(IOREGSEL, &u32::from(reg).to_le_bytes());
        io.write(IOWIN, &v.to_le_bytes())
    }

    fn sel_read(io: &mut IoApic, reg: u8) -> u32 {
        io.write(IOREGSEL, &[reg]);
        let mut b = [0u8; 4];
        io.read(IOWIN, &mut b);
        u32::from_le_bytes(b)
    }

    /// Programs `pin` with a low half and destination APIC `dest`.
    fn route(io: &mut IoApic, pin: u8, low: u32, dest: u8) -> Vec<Message> {
        sel_write(io, REG_REDIRECTION + 2 * pin + 1, u32::from(dest) << 24);
        sel_write(io, REG_REDIRECTION + 2 * pin, low)
    }

    fn fixed(vector: u8, dest: u8, level: bool) -> Message {
        Message {
            vector,
            mode: delivery::FIXED,
            logical: false,
            dest,
            level,
        }
    }

    #[test]
    fn identification_registers() {
        let mut io = IoApic::new();
        assert_eq!(sel_read(&mut io, REG_VERSION), 0x0017_0020);
        sel_write(&mut io, REG_ID, 0x0F00_0000);
        assert_eq!(sel_read(&mut io, REG_ID), 0x0F00_0000);
        assert_eq!(sel_read(&mut io, REG_ARBITRATION), 0x0F00_0000);
        sel_write(&mut io, REG_VERSION, 0);
        assert_eq!(sel_read(&mut io, REG_VERSION), VERSION_VALUE);
        let mut b = [0u8; 1];
        io.read(IOREGSEL, &mut b);
        assert_eq!(b[0], REG_VERSION, "IOREGSEL reads back");
    }

    #[test]
    fn entries_reset_masked_and_keep_what_is_written() {
        let mut io = IoApic::new();
        for pin in 0..PINS as u8 {
            assert_eq!(sel_read(&mut io, REG_REDIRECTION + 2 * pin), 0x1_0000);
            assert_eq!(sel_read(&mut io, REG_REDIRECTION + 2 * pin + 1), 0);
        }
        route(&mut io, 5, 0x0001_FFFF, 0xAB);
        // Delivery status and remote IRR are read-only.
        assert_eq!(sel_read(&mut io, REG_REDIRECTION + 10), 0x0001_AFFF);
        assert_eq!(sel_read(&mut io, REG_REDIRECTION + 11), 0xAB00_0000);
        assert_eq!(
            sel_read(&mut io, REG_REDIRECTION + 2 * PINS as u8),
            0,
            "past the table"
        );
    }

    #[test]
    fn edge_pins_deliver_on_rising_edges_and_lose_masked_ones() {
        let mut io = IoApic::new();
        assert_eq!(io.set_pin(2, true), None, "masked after reset");
        io.set_pin(2, false);
        assert!(
            route(&mut io, 2, 0x30, 0).is_empty(),
            "the lost edge stays lost"
        );
        assert_eq!(io.set_pin(2, true), Some(fixed(0x30, 0, false)));
        assert_eq!(io.set_pin(2, true), None, "no edge");
        io.set_pin(2, false);
        assert_eq!(io.set_pin(2, true), Some(fixed(0x30, 0, false)));
        io.set_pin(2, false);
        route(&mut io, 2, 0x1_0030, 0);
        assert_eq!(io.set_pin(2, true), None);
    }

    #[test]
    fn level_pins_wait_for_the_eoi_of_their_vector() {
        let mut io = IoApic::new();
        route(&mut io, 9, entry::LEVEL as u32 | 0x39, 0);
        assert_eq!(io.set_pin(9, true), Some(fixed(0x39, 0, true)));
        assert_ne!(
            sel_read(&mut io, REG_REDIRECTION + 18) & entry::REMOTE_IRR as u32,
            0
        );
        assert_eq!(io.set_pin(9, true), None, "remote IRR set");
        assert!(io.eoi(0x38).is_empty(), "another vector");
        // Still asserted at the EOI: delivered again.
        assert_eq!(io.eoi(0x39), vec![fixed(0x39, 0, true)]);
        io.set_pin(9, false);
        assert!(io.eoi(0x39).is_empty());
        assert_eq!(
            sel_read(&mut io, REG_REDIRECTION + 18) & entry::REMOTE_IRR as u32,
            0
        );
        // The EOI register does what the broadcast does.
        io.set_pin(9, true);
        assert_eq!(
            io.write(EOI, &0x39u32.to_le_bytes()),
            vec![fixed(0x39, 0, true)]
        );
    }

    #[test]
    fn unmasking_an_asserted_level_pin_delivers_it() {
        let mut io = IoApic::new();
        route(&mut io, 10, (entry::LEVEL | entry::MASKED) as u32 | 0x3A, 1);
        assert_eq!(io.set_pin(10, true), None);
        let sent = route(&mut io, 10, entry::LEVEL as u32 | 0x3A, 1);
        assert_eq!(sent, vec![fixed(0x3A, 1, true)]);
        // Switching to edge drops the remote IRR.
        route(&mut io, 10, 0x3A, 1);
        assert_eq!(
            sel_read(&mut io, REG_REDIRECTION + 20) & entry::REMOTE_IRR as u32,
            0
        );
    }

    #[test]
    fn messages_carry_mode_and_destination() {
        let mut io = IoApic::new();
        let low = entry::LOGICAL as u32 | (u32::from(delivery::LOWEST) << 8) | 0x44;
        route(&mut io, 4, low, 0x0F);
        let m = io.set_pin(4, true).unwrap();
        assert_eq!(
            m,
            Message {
                vector: 0x44,
                mode: delivery::LOWEST,
                logical: true,
                dest: 0x0F,
                level: false,
            }
        );
    }
}
