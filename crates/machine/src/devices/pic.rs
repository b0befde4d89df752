//! 8259A programmable interrupt controller pair (master at 0x20, slave at 0xA0).
//!
//! Each chip is a plain state machine (IRR, ISR, IMR, the initialisation
//! sequence, priority rotation); the pair wires the slave's INT output to the
//! master's input 2 and runs the INTA cycle through the cascade.
use crate::bus::BusDevice;

/// Master PIC command port.
pub const MASTER_CMD: u16 = 0x20;
/// Master PIC data port.
pub const MASTER_DATA: u16 = 0x21;
/// Slave PIC command port.
pub const SLAVE_CMD: u16 = 0xA0;
/// Slave PIC data port.
pub const SLAVE_DATA: u16 = 0xA1;

/// The master input the slave's INT output drives.
pub const CASCADE_IRQ: u8 = 2;
/// The input whose vector a chip returns when INTA finds nothing pending.
pub const SPURIOUS_IRQ: u8 = 7;

/// Command port: bit 4 marks ICW1.
pub const ICW1: u8 = 0x10;
/// ICW1: an ICW4 follows.
pub const ICW1_IC4: u8 = 0x01;
/// ICW1: single chip, no ICW3.
pub const ICW1_SNGL: u8 = 0x02;
/// ICW1: level-triggered inputs.
pub const ICW1_LTIM: u8 = 0x08;
/// ICW2: the vector base bits (the low three are the input number).
pub const ICW2_BASE_MASK: u8 = 0xF8;
/// ICW4: automatic end of interrupt.
pub const ICW4_AEOI: u8 = 0x02;
/// ICW4: special fully nested mode (the slave may interrupt itself).
pub const ICW4_SFNM: u8 = 0x10;

/// Command port: bit 3 (with bit 4 clear) marks OCW3.
pub const OCW3: u8 = 0x08;
/// OCW3: act on the read-register bit.
pub const OCW3_RR: u8 = 0x02;
/// OCW3: the command port reads ISR (else IRR).
pub const OCW3_RIS: u8 = 0x01;
/// OCW3: the next command-port read is a poll.
pub const OCW3_POLL: u8 = 0x04;
/// OCW3: act on the special-mask bit.
pub const OCW3_ESMM: u8 = 0x40;
/// OCW3: special mask mode on.
pub const OCW3_SMM: u8 = 0x20;

/// OCW2 command field (bits 7:5).
const OCW2_CMD_MASK: u8 = 0xE0;
/// OCW2 level field (bits 2:0).
const OCW2_LEVEL_MASK: u8 = 0x07;
/// OCW2: clear rotate in automatic-EOI mode.
pub const OCW2_CLEAR_ROTATE_AEOI: u8 = 0x00;
/// OCW2: non-specific EOI.
pub const OCW2_EOI: u8 = 0x20;
/// OCW2: no operation.
pub const OCW2_NOP: u8 = 0x40;
/// OCW2: specific EOI of the level in bits 2:0.
pub const OCW2_SPECIFIC_EOI: u8 = 0x60;
/// OCW2: set rotate in automatic-EOI mode.
pub const OCW2_SET_ROTATE_AEOI: u8 = 0x80;
/// OCW2: rotate on non-specific EOI.
pub const OCW2_ROTATE_EOI: u8 = 0xA0;
/// OCW2: set priority: the level in bits 2:0 becomes the lowest.
pub const OCW2_SET_PRIORITY: u8 = 0xC0;
/// OCW2: rotate on specific EOI.
pub const OCW2_ROTATE_SPECIFIC_EOI: u8 = 0xE0;

/// Poll answer: bit 7 set when an interrupt was pending.
const POLL_PENDING: u8 = 0x80;
/// Vector bases a PC BIOS leaves behind, until the guest initialises the chips.
const MASTER_BIOS_BASE: u8 = 0x08;
const SLAVE_BIOS_BASE: u8 = 0x70;

/// Where a chip is in its initialisation sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Init {
    Ready,
    Icw2,
    Icw3,
    Icw4,
}

/// One 8259A.
#[derive(Debug)]
struct Pic {
    irr: u8,
    isr: u8,
    imr: u8,
    /// Input levels, to turn edges into requests.
    levels: u8,
    base: u8,
    init: Init,
    needs_icw4: bool,
    single: bool,
    level_triggered: bool,
    auto_eoi: bool,
    rotate_on_auto_eoi: bool,
    special_fully_nested: bool,
    special_mask: bool,
    read_isr: bool,
    poll: bool,
    /// The input with the highest priority (0 unless rotated).
    priority_base: u8,
}

impl Pic {
    fn new(base: u8) -> Self {
        Pic {
            irr: 0,
            isr: 0,
            // Nothing is delivered before the guest initialises the chip;
            // ICW1 clears the mask.
            imr: 0xFF,
            levels: 0,
            base,
            init: Init::Ready,
            needs_icw4: false,
            single: false,
            level_triggered: false,
            auto_eoi: false,
            rotate_on_auto_eoi: false,
            special_fully_nested: false,
            special_mask: false,
            read_isr: false,
            poll: false,
            priority_base: 0,
        }
    }

    fn set_input(&mut self, line: u8, level: bool) {
        let bit = 1 << line;
        if self.level_triggered {
            if level {
                self.irr |= bit;
            } else {
                self.irr &= !bit;
            }
        } else if level && self.levels & bit == 0 {
            self.irr |= bit;
        }
        if level {
            self.levels |= bit;
        } else {
            self.levels &= !bit;
        }
    }

    /// The rank (0 = highest) of the best input in `mask`, under rotation.
    fn best_rank(&self, mask: u8) -> Option<u8> {
        (0..8).find(|rank| mask & (1 << ((rank + self.priority_base) & 7)) != 0)
    }

    fn line_of(&self, rank: u8) -> u8 {
        (rank + self.priority_base) & 7
    }

    /// The input INTA would pick, given the extra request bits in `extra_irr`
    /// (the cascade), if it beats everything in service.
    fn pending(&self, extra_irr: u8) -> Option<u8> {
        let rank = self.best_rank((self.irr | extra_irr) & !self.imr)?;
        let mut in_service = self.isr;
        if self.special_mask {
            // Masked in-service levels no longer block lower priorities.
            in_service &= !self.imr;
        }
        if self.special_fully_nested {
            // The slave may interrupt its own in-service request.
            in_service &= !(1 << CASCADE_IRQ);
        }
        match self.best_rank(in_service) {
            Some(busy) if busy <= rank => None,
            _ => Some(self.line_of(rank)),
        }
    }

    /// The chip's side of an INTA cycle for `line`.
    fn acknowledge(&mut self, line: u8) {
        let bit = 1 << line;
        if !self.level_triggered {
            self.irr &= !bit;
        }
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.priority_base = (line + 1) & 7;
            }
        } else {
            self.isr |= bit;
        }
    }

    fn eoi(&mut self, line: u8, rotate: bool) {
        self.isr &= !(1 << line);
        if rotate {
            self.priority_base = (line + 1) & 7;
        }
    }

    fn non_specific_eoi(&mut self, rotate: bool) {
        let mut in_service = self.isr;
        if self.special_mask {
            in_service &= !self.imr;
        }
        if let Some(rank) = self.best_rank(in_service) {
            self.eoi(self.line_of(rank), rotate);
        }
    }

    fn write_command(&mut self, value: u8) {
        if value & ICW1 != 0 {
            // ICW1 restarts the chip: mask, requests and modes are cleared,
            // input levels stay what the devices drive.
            self.irr = 0;
            self.isr = 0;
            self.imr = 0;
            self.priority_base = 0;
            self.auto_eoi = false;
            self.rotate_on_auto_eoi = false;
            self.special_fully_nested = false;
            self.special_mask = false;
            self.read_isr = false;
            self.poll = false;
            self.needs_icw4 = value & ICW1_IC4 != 0;
            self.single = value & ICW1_SNGL != 0;
            self.level_triggered = value & ICW1_LTIM != 0;
            self.init = Init::Icw2;
        } else if value & OCW3 != 0 {
            if value & OCW3_RR != 0 {
                self.read_isr = value & OCW3_RIS != 0;
            }
            if value & OCW3_POLL != 0 {
                self.poll = true;
            }
            if value & OCW3_ESMM != 0 {
                self.special_mask = value & OCW3_SMM != 0;
            }
        } else {
            let level = value & OCW2_LEVEL_MASK;
            match value & OCW2_CMD_MASK {
                OCW2_CLEAR_ROTATE_AEOI => self.rotate_on_auto_eoi = false,
                OCW2_SET_ROTATE_AEOI => self.rotate_on_auto_eoi = true,
                OCW2_EOI => self.non_specific_eoi(false),
                OCW2_ROTATE_EOI => self.non_specific_eoi(true),
                OCW2_SPECIFIC_EOI => self.eoi(level, false),
                OCW2_ROTATE_SPECIFIC_EOI => self.eoi(level, true),
                OCW2_SET_PRIORITY => self.priority_base = (level + 1) & 7,
                _ => {} // OCW2_NOP
            }
        }
    }

    fn write_data(&mut self, value: u8) {
        self.init = match self.init {
            Init::Ready => {
                self.imr = value;
                Init::Ready
            }
            Init::Icw2 => {
                self.base = value & ICW2_BASE_MASK;
                match (self.single, self.needs_icw4) {
                    (false, _) => Init::Icw3,
                    (true, true) => Init::Icw4,
                    (true, false) => Init::Ready,
                }
            }
            // The cascade wiring is fixed on a PC; ICW3 only advances the sequence.
            Init::Icw3 if self.needs_icw4 => Init::Icw4,
            Init::Icw3 => Init::Ready,
            Init::Icw4 => {
                self.auto_eoi = value & ICW4_AEOI != 0;
                self.special_fully_nested = value & ICW4_SFNM != 0;
                Init::Ready
            }
        };
    }

    fn read_command(&self, extra_irr: u8) -> u8 {
        if self.read_isr {
            self.isr
        } else {
            self.irr | extra_irr
        }
    }
}

/// The cascaded master/slave pair of a PC.
pub struct PicPair {
    master: Pic,
    slave: Pic,
}

impl Default for PicPair {
    fn default() -> Self {
        Self::new()
    }
}

impl PicPair {
    /// A pair in its power-on state.
    pub fn new() -> Self {
        PicPair {
            master: Pic::new(MASTER_BIOS_BASE),
            slave: Pic::new(SLAVE_BIOS_BASE),
        }
    }

    /// Sets the level of input `irq` (0..=15).
    pub fn set_irq(&mut self, irq: u8, level: bool) {
        match irq {
            0..=7 => self.master.set_input(irq, level),
            8..=15 => self.slave.set_input(irq - 8, level),
            _ => tracing::warn!(irq, "pic: no such input"),
        }
    }

    /// The master's request bits from the slave's INT output: the cascade is
    /// a wire, so it requests for exactly as long as the slave does.
    fn cascade(&self) -> u8 {
        if self.slave.pending(0).is_some() {
            1 << CASCADE_IRQ
        } else {
            0
        }
    }

    /// The INTR output: an unmasked request beats everything in service.
    pub fn has_interrupt(&self) -> bool {
        self.master.pending(self.cascade()).is_some()
    }

    /// The INTA cycle: returns the vector to deliver (spurious 7/15 if none).
    pub fn acknowledge(&mut self) -> u8 {
        let Some(line) = self.master.pending(self.cascade()) else {
            return self.master.base + SPURIOUS_IRQ;
        };
        self.master.acknowledge(line);
        if line != CASCADE_IRQ || self.cascade() == 0 {
            return self.master.base + line;
        }
        match self.slave.pending(0) {
            Some(slave_line) => {
                self.slave.acknowledge(slave_line);
                self.slave.base + slave_line
            }
            None => self.slave.base + SPURIOUS_IRQ,
        }
    }

    /// A poll-mode read of `pic`: acknowledges like INTA, answers the level.
    fn poll(&mut self, slave: bool) -> u8 {
        let extra = if slave { 0 } else { self.cascade() };
        let chip = if slave {
            &mut self.slave
        } else {
            &mut self.master
        };
        chip.poll = false;
        match chip.pending(extra) {
            Some(line) => {
                chip.acknowledge(line);
                POLL_PENDING | line
            }
            None => 0,
        }
    }

    fn read_port(&mut self, port: u16) -> u8 {
        match port {
            MASTER_CMD | MASTER_DATA if self.master.poll => self.poll(false),
            SLAVE_CMD | SLAVE_DATA if self.slave.poll => self.poll(true),
            MASTER_CMD => self.master.read_command(self.cascade()),
            SLAVE_CMD => self.slave.read_command(0),
            MASTER_DATA => self.master.imr,
            SLAVE_DATA => self.slave.imr,
            _ => 0xFF,
        }
    }

    fn write_port(&mut self, port: u16, value: u8) {
        match port {
            MASTER_CMD => self.master.write_command(value),
            SLAVE_CMD => self.slave.write_command(value),
            MASTER_DATA => self.master.write_data(value),
            SLAVE_DATA => self.slave.write_data(value),
            _ => {}
        }
    }
}

impl BusDevice for PicPair {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        // A wide access is a run of byte cycles on consecutive ports.
        for (p, byte) in (super::port(base, offset)..).zip(data.iter_mut()) {
            *byte = self.read_port(p);
        }
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        for (p, &byte) in (super::port(base, offset)..).zip(data) {
            self.write_port(p, byte);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `port` as the bus passes it: the chip's base and the offset into it.
    fn at(port: u16) -> (u64, u64) {
        (u64::from(port & !1), u64::from(port & 1))
    }

    fn out(p: &mut PicPair, port: u16, v: u8) {
        let (base, offset) = at(port);
        p.write(base, offset, &[v]);
    }

    fn inb(p: &mut PicPair, port: u16) -> u8 {
        let (base, offset) = at(port);
        let mut b = [0u8; 1];
        p.read(base, offset, &mut b);
        b[0]
    }

    /// The sequence Linux's init_8259A() writes, with all inputs unmasked.
    fn initialised(master_base: u8, slave_base: u8, icw4: u8) -> PicPair {
        let mut p = PicPair::new();
        out(&mut p, MASTER_CMD, ICW1 | ICW1_IC4);
        out(&mut p, MASTER_DATA, master_base);
        out(&mut p, MASTER_DATA, 1 << CASCADE_IRQ);
        out(&mut p, MASTER_DATA, 0x01 | icw4);
        out(&mut p, SLAVE_CMD, ICW1 | ICW1_IC4);
        out(&mut p, SLAVE_DATA, slave_base);
        out(&mut p, SLAVE_DATA, CASCADE_IRQ);
        out(&mut p, SLAVE_DATA, 0x01 | icw4);
        out(&mut p, MASTER_DATA, 0);
        out(&mut p, SLAVE_DATA, 0);
        p
    }

    fn pulse(p: &mut PicPair, irq: u8) {
        p.set_irq(irq, true);
        p.set_irq(irq, false);
    }

    #[test]
    fn nothing_is_delivered_before_initialisation() {
        let mut p = PicPair::new();
        pulse(&mut p, 0);
        assert!(!p.has_interrupt());
        assert_eq!(inb(&mut p, MASTER_DATA), 0xFF);
    }

    #[test]
    fn init_sequence_sets_vector_bases() {
        let mut p = initialised(0x30, 0x38, 0);
        pulse(&mut p, 0);
        assert_eq!(p.acknowledge(), 0x30);
        out(&mut p, MASTER_CMD, OCW2_EOI);
        pulse(&mut p, 14);
        assert_eq!(p.acknowledge(), 0x3E);

        let mut p = initialised(0x20, 0x28, 0);
        pulse(&mut p, 1);
        assert_eq!(p.acknowledge(), 0x21);
    }

    #[test]
    fn icw2_low_bits_are_ignored() {
        let mut p = initialised(0x27, 0x2F, 0);
        pulse(&mut p, 3);
        assert_eq!(p.acknowledge(), 0x23);
    }

    #[test]
    fn icw1_clears_the_mask_and_requests() {
        let mut p = initialised(0x20, 0x28, 0);
        out(&mut p, MASTER_DATA, 0xAA);
        pulse(&mut p, 0);
        out(&mut p, MASTER_CMD, ICW1 | ICW1_IC4);
        assert_eq!(inb(&mut p, MASTER_DATA), 0);
        assert!(!p.has_interrupt());
    }

    #[test]
    fn masked_inputs_wait_until_unmasked() {
        let mut p = initialised(0x20, 0x28, 0);
        out(&mut p, MASTER_DATA, 0x01);
        assert_eq!(inb(&mut p, MASTER_DATA), 0x01);
        pulse(&mut p, 0);
        assert!(!p.has_interrupt());
        out(&mut p, MASTER_DATA, 0x00);
        assert!(p.has_interrupt());
        assert_eq!(p.acknowledge(), 0x20);
    }

    #[test]
    fn a_request_is_latched_on_the_rising_edge_only() {
        let mut p = initialised(0x20, 0x28, 0);
        p.set_irq(4, true);
        assert_eq!(p.acknowledge(), 0x24);
        out(&mut p, MASTER_CMD, OCW2_EOI);
        // Still high: no new edge, no new request.
        p.set_irq(4, true);
        assert!(!p.has_interrupt());
        p.set_irq(4, false);
        p.set_irq(4, true);
        assert!(p.has_interrupt());
    }

    #[test]
    fn in_service_blocks_equal_and_lower_priority_until_eoi() {
        let mut p = initialised(0x20, 0x28, 0);
        pulse(&mut p, 3);
        assert_eq!(p.acknowledge(), 0x23);
        pulse(&mut p, 3);
        pulse(&mut p, 5);
        assert!(!p.has_interrupt());
        // A higher priority nests.
        pulse(&mut p, 1);
        assert_eq!(p.acknowledge(), 0x21);
        out(&mut p, MASTER_CMD, OCW2_EOI); // ends IRQ 1
        assert!(!p.has_interrupt());
        out(&mut p, MASTER_CMD, OCW2_EOI); // ends IRQ 3
        assert_eq!(p.acknowledge(), 0x23);
        out(&mut p, MASTER_CMD, OCW2_SPECIFIC_EOI | 3);
        assert_eq!(p.acknowledge(), 0x25);
    }

    #[test]
    fn lowest_numbered_input_wins() {
        let mut p = initialised(0x20, 0x28, 0);
        pulse(&mut p, 6);
        pulse(&mut p, 4);
        pulse(&mut p, 0);
        assert_eq!(p.acknowledge(), 0x20);
        out(&mut p, MASTER_CMD, OCW2_EOI);
        assert_eq!(p.acknowledge(), 0x24);
        out(&mut p, MASTER_CMD, OCW2_EOI);
        assert_eq!(p.acknowledge(), 0x26);
    }

    #[test]
    fn irr_and_isr_read_through_ocw3() {
        let mut p = initialised(0x20, 0x28, 0);
        pulse(&mut p, 5);
        pulse(&mut p, 1);
        assert_eq!(inb(&mut p, MASTER_CMD), 0x22, "IRR is the default");
        p.acknowledge();
        out(&mut p, MASTER_CMD, OCW3 | OCW3_RR | OCW3_RIS);
        assert_eq!(inb(&mut p, MASTER_CMD), 0x02);
        out(&mut p, MASTER_CMD, OCW3 | OCW3_RR);
        assert_eq!(inb(&mut p, MASTER_CMD), 0x20);
    }

    #[test]
    fn slave_inputs_are_delivered_through_the_cascade() {
        let mut p = initialised(0x20, 0x28, 0);
        for irq in 8..16 {
            pulse(&mut p, irq);
            assert!(p.has_interrupt());
            assert_eq!(p.acknowledge(), 0x28 + irq - 8);
            out(&mut p, MASTER_CMD, OCW3 | OCW3_RR | OCW3_RIS);
            assert_eq!(inb(&mut p, MASTER_CMD), 1 << CASCADE_IRQ);
            out(&mut p, SLAVE_CMD, OCW2_EOI);
            out(&mut p, MASTER_CMD, OCW2_EOI);
            assert_eq!(inb(&mut p, MASTER_CMD), 0);
            assert!(!p.has_interrupt());
        }
    }

    #[test]
    fn the_slave_ranks_between_irq_1_and_irq_3() {
        let mut p = initialised(0x20, 0x28, 0);
        pulse(&mut p, 3);
        pulse(&mut p, 12);
        pulse(&mut p, 1);
        assert_eq!(p.acknowledge(), 0x21);
        out(&mut p, MASTER_CMD, OCW2_EOI);
        assert_eq!(p.acknowledge(), 0x2C);
        out(&mut p, SLAVE_CMD, OCW2_EOI);
        out(&mut p, MASTER_CMD, OCW2_EOI);
        assert_eq!(p.acknowledge(), 0x23);
    }

    #[test]
    fn masking_the_cascade_masks_the_slave() {
        let mut p = initialised(0x20, 0x28, 0);
        out(&mut p, MASTER_DATA, 1 << CASCADE_IRQ);
        pulse(&mut p, 8);
        assert!(!p.has_interrupt());
        out(&mut p, SLAVE_DATA, 0x01);
        out(&mut p, MASTER_DATA, 0);
        assert!(!p.has_interrupt());
        out(&mut p, SLAVE_DATA, 0);
        assert_eq!(p.acknowledge(), 0x28);
    }

    #[test]
    fn spurious_vectors_when_nothing_is_pending() {
        let mut p = initialised(0x20, 0x28, 0);
        assert!(!p.has_interrupt());
        assert_eq!(p.acknowledge(), 0x27);
        out(&mut p, MASTER_CMD, OCW3 | OCW3_RR | OCW3_RIS);
        assert_eq!(
            inb(&mut p, MASTER_CMD),
            0,
            "a spurious INTA sets no ISR bit"
        );
    }

    #[test]
    fn auto_eoi_leaves_nothing_in_service() {
        let mut p = initialised(0x20, 0x28, ICW4_AEOI);
        pulse(&mut p, 0);
        assert_eq!(p.acknowledge(), 0x20);
        pulse(&mut p, 0);
        assert_eq!(p.acknowledge(), 0x20);
        out(&mut p, MASTER_CMD, OCW3 | OCW3_RR | OCW3_RIS);
        assert_eq!(inb(&mut p, MASTER_CMD), 0);
    }

    #[test]
    fn rotate_on_eoi_makes_the_served_input_lowest() {
        let mut p = initialised(0x20, 0x28, 0);
        pulse(&mut p, 0);
        assert_eq!(p.acknowledge(), 0x20);
        out(&mut p, MASTER_CMD, OCW2_ROTATE_EOI);
        pulse(&mut p, 0);
        pulse(&mut p, 5);
        assert_eq!(p.acknowledge(), 0x25);
    }

    #[test]
    fn set_priority_rotates_explicitly() {
        let mut p = initialised(0x20, 0x28, 0);
        out(&mut p, MASTER_CMD, OCW2_SET_PRIORITY | 4);
        pulse(&mut p, 1);
        pulse(&mut p, 6);
        assert_eq!(p.acknowledge(), 0x26);
    }

    #[test]
    fn poll_mode_acknowledges_through_a_read() {
        let mut p = initialised(0x20, 0x28, 0);
        pulse(&mut p, 6);
        out(&mut p, MASTER_CMD, OCW3 | OCW3_POLL);
        assert_eq!(inb(&mut p, MASTER_CMD), POLL_PENDING | 6);
        assert!(!p.has_interrupt());
        out(&mut p, MASTER_CMD, OCW3 | OCW3_POLL);
        assert_eq!(inb(&mut p, MASTER_CMD), 0);
        out(&mut p, MASTER_CMD, OCW3 | OCW3_RR | OCW3_RIS);
        assert_eq!(inb(&mut p, MASTER_CMD), 1 << 6);
    }

    #[test]
    fn level_triggered_mode_follows_the_input() {
        let mut p = PicPair::new();
        out(&mut p, MASTER_CMD, ICW1 | ICW1_LTIM | ICW1_SNGL);
        out(&mut p, MASTER_DATA, 0x40);
        p.set_irq(3, true);
        assert_eq!(p.acknowledge(), 0x43);
        out(&mut p, MASTER_CMD, OCW2_EOI);
        assert!(p.has_interrupt(), "still high: requests again");
        p.set_irq(3, false);
        assert!(!p.has_interrupt());
    }
}
