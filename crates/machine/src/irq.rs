//! Interrupt lines and routing: how a device asserts an IRQ without knowing
//! who listens (in the spirit of vm-superio's `Trigger`), and the PC's
//! interrupt controllers wired behind one lock, as KVM's irqchip is.
//!
//! ```text
//!  ISA IRQ n ──┬── 8259A pair input n ── INTR ──┬── LINT0 (ExtINT) ─┐
//!  (IsaIrq)    │                                └── (APIC disabled) ┤
//!              └── I/O APIC pin n (IRQ 0: pin 2) ── message ── local APIC ── CPU
//! ```
//!
//! Every ISA line drives both the 8259A and the I/O APIC, as on a PC with
//! an I/O APIC; the guest decides which one listens by masking. The 8259A's
//! INTR reaches the CPU through the local APIC's LINT0 in ExtINT mode
//! (virtual wire), or straight when the local APIC is globally disabled,
//! so a guest that never touches an APIC runs as on a PC without one.
//!
//! The HPET's legacy replacement route takes ISA IRQ 0 and 8 over from the
//! PIT and the RTC while the guest has it on (see [`HpetLines`]); its
//! other routes drive I/O APIC pins no ISA line drives (16-23).

use std::sync::{Arc, Mutex};

use crate::bus::{BusDevice, Window};
use crate::clock::Clock;
use crate::devices::ioapic::IoApic;
use crate::devices::lapic::{Lapic, Message};
use crate::devices::pic::PicPair;

/// One interrupt request line into an interrupt controller.
pub trait IrqLine: Send {
    /// Drives the line high (`true`) or low.
    fn set_level(&self, level: bool);

    /// A rising then falling edge: what an edge-triggered ISA device does.
    fn pulse(&self) {
        self.set_level(true);
        self.set_level(false);
    }
}

/// The I/O APIC pin ISA IRQ `irq` drives: its own number, except the PIT's
/// IRQ 0, which PC chipsets wire to pin 2 (firmware tables describe it as
/// an interrupt source override; pin 0 carries the 8259A's INTR there).
pub fn isa_pin(irq: u8) -> usize {
    if irq == 0 {
        2
    } else {
        usize::from(irq)
    }
}

/// The ISA lines the HPET's legacy replacement route takes over: its
/// timer 0 drives IRQ 0 (the PIT's), timer 1 IRQ 8 (the RTC's).
pub const LEGACY_REPLACEMENT_IRQS: [u8; 2] = [0, 8];

/// The 8259A pair, the I/O APIC and the local APIC: everything between an
/// interrupt line and the CPU.
pub struct IrqChip {
    /// The legacy controllers (ports 0x20/0xA0).
    pub pic: PicPair,
    /// The I/O APIC (0xFEC00000).
    pub ioapic: IoApic,
    /// The CPU's local APIC (0xFEE00000, or where its base MSR moves it).
    pub lapic: Lapic,
    /// The HPET's legacy replacement route is on: IRQ 0 and 8 carry its
    /// timers 0 and 1, and the PIT's and the RTC's outputs go nowhere.
    legacy_replacement: bool,
    /// The levels the ISA devices drive, by IRQ (kept while muted, so the
    /// line takes its device's level back when the route is switched off).
    device_levels: u16,
    /// The levels the HPET's timers 0 and 1 drive on IRQ 0 and 8.
    hpet_levels: u16,
}

impl IrqChip {
    /// The controllers as firmware leaves them; the local APIC's timer runs
    /// on `clock` and its registers answer wherever `window` is.
    pub fn new(clock: Arc<dyn Clock>, window: Window) -> Self {
        IrqChip {
            pic: PicPair::new(),
            ioapic: IoApic::new(),
            lapic: Lapic::after_firmware(clock, window),
            legacy_replacement: false,
            device_levels: 0,
            hpet_levels: 0,
        }
    }

    /// The line itself: both controllers hear `level` on ISA IRQ `irq`.
    fn drive_isa(&mut self, irq: u8, level: bool) {
        self.pic.set_irq(irq, level);
        if let Some(msg) = self.ioapic.set_pin(isa_pin(irq), level) {
            self.lapic.deliver(msg);
        }
    }

    /// An ISA device drives its IRQ `irq` (0..=15) to `level`; the PIT's
    /// IRQ 0 and the RTC's IRQ 8 go nowhere while the HPET replaces them.
    pub fn set_isa_irq(&mut self, irq: u8, level: bool) {
        set_bit(&mut self.device_levels, irq, level);
        if !(self.legacy_replacement && LEGACY_REPLACEMENT_IRQS.contains(&irq)) {
            self.drive_isa(irq, level);
        }
    }

    /// The HPET's legacy replacement output for ISA IRQ `irq` (0 or 8).
    pub fn set_hpet_legacy_irq(&mut self, irq: u8, level: bool) {
        debug_assert!(LEGACY_REPLACEMENT_IRQS.contains(&irq));
        set_bit(&mut self.hpet_levels, irq, level);
        if self.legacy_replacement {
            self.drive_isa(irq, level);
        }
    }

    /// Switches IRQ 0 and 8 between their ISA devices and the HPET; each
    /// line takes the level of its new source.
    pub fn set_legacy_replacement(&mut self, on: bool) {
        if on == self.legacy_replacement {
            return;
        }
        self.legacy_replacement = on;
        let levels = if on {
            self.hpet_levels
        } else {
            self.device_levels
        };
        for irq in LEGACY_REPLACEMENT_IRQS {
            self.drive_isa(irq, levels & (1 << irq) != 0);
        }
    }

    /// Drives I/O APIC pin `pin` (one no ISA line drives, 16..24) to `level`.
    pub fn set_gsi(&mut self, pin: usize, level: bool) {
        debug_assert!(pin >= 16, "pins below 16 belong to the ISA lines");
        if let Some(msg) = self.ioapic.set_pin(pin, level) {
            self.lapic.deliver(msg);
        }
    }

    fn deliver_all(&mut self, messages: Vec<Message>) {
        for msg in messages {
            self.lapic.deliver(msg);
        }
    }

    /// The 8259A's INTR reaches the CPU: the local APIC is off, or passes
    /// it on LINT0.
    fn pic_connected(&self) -> bool {
        !self.lapic.enabled() || self.lapic.passes_extint()
    }

    /// The CPU's INTR: an interrupt is waiting that the CPU takes when IF
    /// allows.
    pub fn has_interrupt(&self) -> bool {
        (self.pic_connected() && self.pic.has_interrupt()) || self.lapic.has_interrupt()
    }

    /// The INTA cycle: the vector to deliver now. An ExtINT interrupt goes
    /// first, as it ignores the APIC's priorities (and as QEMU orders them).
    pub fn acknowledge(&mut self) -> u8 {
        if self.pic_connected() && self.pic.has_interrupt() {
            self.pic.acknowledge()
        } else {
            self.lapic.acknowledge()
        }
    }

    /// Delivers the local APIC timer's interrupts that came due by `now`
    /// (ns on the devices' clock).
    pub fn update_at(&mut self, now: u64) {
        self.lapic.update_at(now);
    }

    /// Nanoseconds from `now` until the local APIC timer's next
    /// interrupt, if armed.
    pub fn ns_until_next_irq_at(&self, now: u64) -> Option<u64> {
        self.lapic.ns_until_next_irq_at(now)
    }
}

fn set_bit(bits: &mut u16, irq: u8, on: bool) {
    if on {
        *bits |= 1 << irq;
    } else {
        *bits &= !(1 << irq);
    }
}

/// An IRQ line wired to ISA IRQ `irq` of the machine's [`IrqChip`].
pub struct IsaIrq {
    chip: Arc<Mutex<IrqChip>>,
    irq: u8,
}

impl IsaIrq {
    /// Wires ISA IRQ `irq` (0..=15) of `chip`.
    pub fn new(chip: Arc<Mutex<IrqChip>>, irq: u8) -> Self {
        assert!(irq < 16, "a PC has 16 ISA IRQs");
        IsaIrq { chip, irq }
    }
}

impl IrqLine for IsaIrq {
    fn set_level(&self, level: bool) {
        self.chip.lock().unwrap().set_isa_irq(self.irq, level);
    }
}

/// Where one of the HPET's timers delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HpetRoute {
    /// Through the legacy replacement route: ISA IRQ 0 or 8, which both
    /// the 8259A and the I/O APIC hear.
    Legacy(u8),
    /// Straight to an I/O APIC pin (16..24).
    Pin(u8),
}

/// The HPET's outputs: what its timers drive and whether its legacy
/// replacement route has taken over IRQ 0 and 8.
pub trait HpetLines: Send {
    /// Drives the line `route` names to `level`.
    fn set(&self, route: HpetRoute, level: bool);
    /// Turns the legacy replacement route on or off.
    fn set_legacy_replacement(&self, on: bool);
}

/// The HPET's outputs wired to the machine's [`IrqChip`].
pub struct ChipHpetLines(pub Arc<Mutex<IrqChip>>);

impl HpetLines for ChipHpetLines {
    fn set(&self, route: HpetRoute, level: bool) {
        let mut chip = self.0.lock().unwrap();
        match route {
            HpetRoute::Legacy(irq) => chip.set_hpet_legacy_irq(irq, level),
            HpetRoute::Pin(pin) => chip.set_gsi(usize::from(pin), level),
        }
    }

    fn set_legacy_replacement(&self, on: bool) {
        self.0.lock().unwrap().set_legacy_replacement(on);
    }
}

/// Which of the chip's controllers a bus range reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The 8259A pair's ports.
    Pic,
    /// The I/O APIC's registers.
    IoApic,
    /// The local APIC's registers.
    Lapic,
}

/// One controller of the [`IrqChip`] as a bus device: the bus takes this
/// device's lock, then the chip's, so that an access that ends an
/// interrupt (an EOI, an unmasked entry) reaches the other controllers.
pub struct ChipRegisters {
    chip: Arc<Mutex<IrqChip>>,
    part: Part,
}

impl ChipRegisters {
    /// The registers of `part` of `chip`.
    pub fn new(chip: Arc<Mutex<IrqChip>>, part: Part) -> Self {
        ChipRegisters { chip, part }
    }
}

impl BusDevice for ChipRegisters {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        let mut chip = self.chip.lock().unwrap();
        match self.part {
            Part::Pic => chip.pic.read(base, offset, data),
            Part::IoApic => chip.ioapic.read(offset, data),
            Part::Lapic => chip.lapic.read(offset, data),
        }
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        let mut chip = self.chip.lock().unwrap();
        match self.part {
            Part::Pic => chip.pic.write(base, offset, data),
            Part::IoApic => {
                let sent = chip.ioapic.write(offset, data);
                chip.deliver_all(sent);
            }
            Part::Lapic => {
                if let Some(vector) = chip.lapic.write(offset, data) {
                    let again = chip.ioapic.eoi(vector);
                    chip.deliver_all(again);
                }
            }
        }
    }
}

/// A line that records its level, for device unit tests.
#[derive(Clone, Default)]
pub struct TestLine {
    /// Current level.
    pub level: Arc<Mutex<bool>>,
    /// Number of rising edges seen.
    pub edges: Arc<Mutex<u32>>,
}

impl IrqLine for TestLine {
    fn set_level(&self, level: bool) {
        let mut l = self.level.lock().unwrap();
        if level && !*l {
            *self.edges.lock().unwrap() += 1;
        }
        *l = level;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::devices::{ioapic, lapic, pic};

    fn chip() -> Arc<Mutex<IrqChip>> {
        let window = Window::closed();
        Arc::new(Mutex::new(IrqChip::new(ManualClock::new(), window)))
    }

    fn regs(chip: &Arc<Mutex<IrqChip>>, part: Part) -> ChipRegisters {
        ChipRegisters::new(chip.clone(), part)
    }

    fn out(pic: &mut ChipRegisters, port: u16, v: u8) {
        pic.write(u64::from(port & !1), u64::from(port & 1), &[v]);
    }

    /// The 8259A pair set up as guests do: vectors 0x20-0x2F, IRQ 0 unmasked.
    fn pic_init(pic: &mut ChipRegisters) {
        for (port, v) in [
            (pic::MASTER_CMD, 0x11),
            (pic::MASTER_DATA, 0x20),
            (pic::MASTER_DATA, 4),
            (pic::MASTER_DATA, 1),
            (pic::MASTER_DATA, 0xFE),
        ] {
            out(pic, port, v);
        }
    }

    fn lapic_write(l: &mut ChipRegisters, reg: u64, v: u32) {
        l.write(0, reg, &v.to_le_bytes());
    }

    fn ioapic_write(io: &mut ChipRegisters, reg: u8, v: u32) {
        io.write(0, ioapic::IOREGSEL, &[reg]);
        io.write(0, ioapic::IOWIN, &v.to_le_bytes());
    }

    #[test]
    fn the_pic_reaches_the_cpu_through_lint0_in_virtual_wire_mode() {
        let chip = chip();
        let mut pic = regs(&chip, Part::Pic);
        pic_init(&mut pic);
        IsaIrq::new(chip.clone(), 0).pulse();
        let mut c = chip.lock().unwrap();
        assert!(c.has_interrupt());
        assert_eq!(c.acknowledge(), 0x20);
        assert!(!c.has_interrupt());
    }

    #[test]
    fn a_masked_lint0_cuts_the_pic_off_and_a_disabled_apic_reconnects_it() {
        let chip = chip();
        let mut pic = regs(&chip, Part::Pic);
        let mut l = regs(&chip, Part::Lapic);
        pic_init(&mut pic);
        lapic_write(&mut l, lapic::LVT_LINT0, 0x1_0700);
        IsaIrq::new(chip.clone(), 0).pulse();
        assert!(!chip.lock().unwrap().has_interrupt());
        // Software-disabled, LINT0 unmasked: QEMU still passes the PIC on.
        lapic_write(&mut l, lapic::LVT_LINT0, 0x700);
        lapic_write(&mut l, lapic::SVR, 0xFF);
        assert!(chip.lock().unwrap().has_interrupt());
        lapic_write(&mut l, lapic::LVT_LINT0, 0x1_0700);
        let mut c = chip.lock().unwrap();
        c.lapic.set_base(0xFEE0_0100);
        assert!(c.has_interrupt(), "globally disabled: straight to the CPU");
        assert_eq!(c.acknowledge(), 0x20);
    }

    #[test]
    fn the_pit_irq_reaches_the_lapic_through_ioapic_pin_2() {
        let chip = chip();
        let mut io = regs(&chip, Part::IoApic);
        ioapic_write(&mut io, ioapic::REG_REDIRECTION + 5, 0);
        ioapic_write(&mut io, ioapic::REG_REDIRECTION + 4, 0x48);
        // The PIC stays masked (never initialised): only the I/O APIC hears it.
        IsaIrq::new(chip.clone(), 0).pulse();
        let mut c = chip.lock().unwrap();
        assert!(c.has_interrupt());
        assert_eq!(c.acknowledge(), 0x48);
    }

    #[test]
    fn an_eoi_of_a_level_vector_reaches_the_ioapic() {
        let chip = chip();
        let mut io = regs(&chip, Part::IoApic);
        let mut l = regs(&chip, Part::Lapic);
        ioapic_write(&mut io, ioapic::REG_REDIRECTION + 8, 0x8000 | 0x54);
        let line = IsaIrq::new(chip.clone(), 4);
        line.set_level(true);
        assert_eq!(chip.lock().unwrap().acknowledge(), 0x54);
        // Still asserted when the handler ends it: it comes again.
        lapic_write(&mut l, lapic::EOI, 0);
        assert_eq!(chip.lock().unwrap().acknowledge(), 0x54);
        line.set_level(false);
        lapic_write(&mut l, lapic::EOI, 0);
        assert!(!chip.lock().unwrap().has_interrupt());
    }

    #[test]
    fn legacy_replacement_hands_irq_0_and_8_to_the_hpet_and_back() {
        let chip = chip();
        let mut pic = regs(&chip, Part::Pic);
        pic_init(&mut pic);
        let pit = IsaIrq::new(chip.clone(), 0);
        let hpet = ChipHpetLines(chip.clone());
        hpet.set_legacy_replacement(true);
        pit.pulse();
        assert!(!chip.lock().unwrap().has_interrupt(), "the PIT is cut off");
        hpet.set(HpetRoute::Legacy(0), true);
        assert_eq!(chip.lock().unwrap().acknowledge(), 0x20);
        // Switching back hands the line to the PIT at the PIT's level (low).
        hpet.set_legacy_replacement(false);
        hpet.set(HpetRoute::Legacy(0), false);
        out(&mut pic, pic::MASTER_CMD, 0x20);
        assert!(!chip.lock().unwrap().has_interrupt());
        pit.pulse();
        assert_eq!(chip.lock().unwrap().acknowledge(), 0x20);
    }

    #[test]
    fn the_hpet_drives_pins_above_the_isa_lines() {
        let chip = chip();
        let mut io = regs(&chip, Part::IoApic);
        ioapic_write(&mut io, ioapic::REG_REDIRECTION + 2 * 20, 0x8000 | 0x61);
        let hpet = ChipHpetLines(chip.clone());
        hpet.set(HpetRoute::Pin(20), true);
        let mut c = chip.lock().unwrap();
        assert_eq!(c.acknowledge(), 0x61);
        assert!(!c.pic.has_interrupt(), "the 8259A has no pin 20");
    }

    #[test]
    fn isa_irq_0_is_pin_2() {
        assert_eq!(isa_pin(0), 2);
        assert_eq!(isa_pin(4), 4);
        assert_eq!(isa_pin(8), 8);
    }
}
