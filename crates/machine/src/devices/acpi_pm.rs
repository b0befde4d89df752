//! ACPI fixed-hardware power management registers (ACPI 6.5 section 4.8),
//! at the ports QEMU's PIIX4 power management function uses (SeaBIOS sets
//! its base to 0x600): the PM1a event block (PM1 status and enable) at
//! 0x600, the PM1a control block at 0x604 and the 24-bit PM timer at 0x608.
//! There is no PM1b block, no GPE block and no SMI command port: popek has
//! no SMM, so the machine is always in ACPI mode (SCI_EN reads 1).
//!
//! The PM timer counts at 3.579545 MHz, derived from the machine's clock
//! (not ticked); its status bit TMR_STS is set whenever bit 23 of the
//! count changes. The SCI is ISA IRQ 9, level-triggered, asserted while an
//! enabled status bit is set. Writing SLP_EN with the sleep type the DSDT
//! gives for S5 ([`S5_SLEEP_TYPE`]) powers the machine off: the run ends
//! as for a debug-port exit, with status 0. The other sleep states are not
//! offered (the DSDT names only S5), so their writes change nothing.

use std::sync::Arc;

use crate::bus::BusDevice;
use crate::clock::Clock;
use crate::irq::IrqLine;
use crate::stop::{StopHandle, StopReason};

/// First port of the block.
pub const BASE: u16 = 0x600;
/// PM1a event block: PM1 status (2 bytes), then PM1 enable (2 bytes).
pub const PM1A_EVT: u16 = BASE;
/// PM1 status register.
pub const PM1_STS: u16 = PM1A_EVT;
/// PM1 enable register.
pub const PM1_EN: u16 = PM1A_EVT + 2;
/// PM1a control block: the PM1 control register.
pub const PM1A_CNT: u16 = BASE + 4;
/// The PM timer.
pub const PM_TMR: u16 = BASE + 8;
/// Length of the PM1a event block in bytes (FADT PM1_EVT_LEN).
pub const PM1_EVT_LEN: u8 = 4;
/// Length of the PM1a control block in bytes (FADT PM1_CNT_LEN).
pub const PM1_CNT_LEN: u8 = 2;
/// Length of the PM timer block in bytes (FADT PM_TMR_LEN).
pub const PM_TMR_LEN: u8 = 4;
/// Ports the block occupies, from [`BASE`].
pub const SIZE: u16 = 12;

/// The PM timer's rate.
pub const TIMER_HZ: u64 = 3_579_545;
/// The PM timer's width: 24 bits (FADT flag TMR_VAL_EXT clear).
pub const TIMER_MASK: u32 = 0x00FF_FFFF;
/// The ISA IRQ the SCI is wired to (FADT SCI_INT), as on QEMU's PC.
pub const SCI_IRQ: u8 = 9;
/// The SLP_TYP value \_S5 names: 0, the PIIX4's soft-off, as QEMU's DSDT.
pub const S5_SLEEP_TYPE: u16 = 0;

/// PM1 status bits (write 1 to clear).
pub mod status {
    /// The PM timer's bit 23 changed.
    pub const TMR: u16 = 1 << 0;
    /// Bus master activity (never: there are no bus masters).
    pub const BM: u16 = 1 << 4;
    /// The firmware released the global lock (never: it never takes it).
    pub const GBL: u16 = 1 << 5;
    /// The power button was pressed (never: the FADT says there is none).
    pub const PWRBTN: u16 = 1 << 8;
    /// The sleep button was pressed (never, likewise).
    pub const SLPBTN: u16 = 1 << 9;
    /// The RTC alarm fired (never: FIX_RTC says it has no status here).
    pub const RTC: u16 = 1 << 10;
    /// The machine woke from a sleep state (never: it does not sleep).
    pub const WAK: u16 = 1 << 15;
}

/// PM1 enable bits.
pub mod enable {
    /// An SCI when TMR_STS is set.
    pub const TMR: u16 = 1 << 0;
    /// An SCI when GBL_STS is set.
    pub const GBL: u16 = 1 << 5;
    /// An SCI when RTC_STS is set.
    pub const RTC: u16 = 1 << 10;
    /// Bits that stick. ACPICA writes an enable bit and reads it back to
    /// learn whether the event exists, and reports an error if it does
    /// not: the timer and the global lock exist; the RTC alarm does not
    /// (the FADT's FIX_RTC says so), but Linux's rtc-cmos enables its
    /// event whatever the FADT says, so RTC_EN sticks and never fires.
    pub const WRITABLE: u16 = TMR | GBL | RTC;
}

/// PM1 control bits.
pub mod control {
    /// SCI (else SMI) for power management events: always set here.
    pub const SCI_EN: u16 = 1 << 0;
    /// Bus master requests take the CPU out of C3.
    pub const BM_RLD: u16 = 1 << 1;
    /// Release the global lock to the firmware (write-only; no firmware
    /// listens).
    pub const GBL_RLS: u16 = 1 << 2;
    /// Bits 12:10: the sleep type.
    pub const SLP_TYP_SHIFT: u32 = 10;
    /// The sleep type field.
    pub const SLP_TYP: u16 = 0x7 << SLP_TYP_SHIFT;
    /// Enter the sleep state SLP_TYP names (write-only).
    pub const SLP_EN: u16 = 1 << 13;
    /// Bits that read back as written.
    pub const WRITABLE: u16 = BM_RLD | SLP_TYP;
}

/// PM timer ticks in `ns` nanoseconds.
fn ticks(ns: u64) -> u64 {
    (u128::from(ns) * u128::from(TIMER_HZ) / 1_000_000_000) as u64
}

/// The first nanosecond by which `ticks` PM timer ticks have passed.
fn ticks_to_ns(ticks: u64) -> u64 {
    (u128::from(ticks) * 1_000_000_000).div_ceil(u128::from(TIMER_HZ)) as u64
}

/// The PM1 registers and the PM timer.
pub struct AcpiPm {
    clock: Arc<dyn Clock>,
    sci: Box<dyn IrqLine>,
    stop: StopHandle,
    /// Status bits other than TMR_STS, which the clock decides.
    status: u16,
    enable: u16,
    control: u16,
    /// Bit-23 changes of the timer up to the last clear of TMR_STS.
    timer_epoch: u64,
    sci_level: bool,
}

impl AcpiPm {
    /// The block after reset; the SCI drives `sci`, S5 requests a stop
    /// through `stop`.
    pub fn new(clock: Arc<dyn Clock>, sci: Box<dyn IrqLine>, stop: StopHandle) -> Self {
        AcpiPm {
            clock,
            sci,
            stop,
            status: 0,
            enable: 0,
            control: 0,
            timer_epoch: 0,
            sci_level: false,
        }
    }

    /// The PM timer at `now` ns (24 bits).
    fn timer(now: u64) -> u32 {
        ticks(now) as u32 & TIMER_MASK
    }

    fn epoch(now: u64) -> u64 {
        ticks(now) >> 23
    }

    fn read_status(&self, now: u64) -> u16 {
        let tmr = if Self::epoch(now) != self.timer_epoch {
            status::TMR
        } else {
            0
        };
        self.status | tmr
    }

    /// Drives the SCI to what the enabled status bits say at `now`.
    fn refresh_sci(&mut self, now: u64) {
        let level = self.read_status(now) & self.enable != 0;
        if level != self.sci_level {
            self.sci_level = level;
            self.sci.set_level(level);
        }
    }

    /// Raises the SCI if the timer's status bit came on since the last
    /// look; call between guest runs.
    pub fn update(&mut self) {
        self.update_at(self.clock.now_ns());
    }

    /// [`Self::update`] at `now` (ns on the device's clock).
    pub fn update_at(&mut self, now: u64) {
        self.refresh_sci(now);
    }

    /// Nanoseconds until the timer's status bit raises the SCI, if it will.
    pub fn ns_until_next_irq(&self) -> Option<u64> {
        self.ns_until_next_irq_at(self.clock.now_ns())
    }

    /// [`Self::ns_until_next_irq`] from `now`.
    pub fn ns_until_next_irq_at(&self, now: u64) -> Option<u64> {
        if self.enable & enable::TMR == 0 || self.read_status(now) & status::TMR != 0 {
            return None;
        }
        let at = ticks_to_ns((self.timer_epoch + 1) << 23);
        Some(at.saturating_sub(now))
    }

    fn read_register(&self, reg: u16, now: u64) -> u32 {
        match reg {
            PM1_STS => self.read_status(now).into(),
            PM1_EN => self.enable.into(),
            PM1A_CNT => (self.control | control::SCI_EN).into(),
            PM_TMR => Self::timer(now),
            _ => 0,
        }
    }

    /// A write of the bytes `mask` selects of `value` to register `reg`.
    fn write_register(&mut self, reg: u16, value: u32, mask: u32, now: u64) {
        let written = (value & mask) as u16;
        match reg {
            PM1_STS => {
                if written & status::TMR != 0 {
                    self.timer_epoch = Self::epoch(now);
                }
                self.status &= !written;
            }
            PM1_EN => {
                let mask = mask as u16;
                self.enable = (self.enable & !mask) | (written & enable::WRITABLE);
            }
            PM1A_CNT => {
                let mask = mask as u16 & control::WRITABLE;
                self.control = (self.control & !mask) | (written & mask);
                let sleep = (self.control & control::SLP_TYP) >> control::SLP_TYP_SHIFT;
                if written & control::SLP_EN != 0 {
                    if sleep == S5_SLEEP_TYPE {
                        self.stop.request(StopReason::PowerOff);
                    } else {
                        tracing::debug!("acpi: sleep type {sleep} requested; only S5 exists");
                    }
                }
            }
            // The PM timer is read-only.
            _ => {}
        }
        self.refresh_sci(now);
    }
}

/// The register an offset into the block falls in, and its width.
fn register_at(offset: u16) -> Option<(u16, u16)> {
    let port = BASE + offset;
    [(PM1_STS, 2), (PM1_EN, 2), (PM1A_CNT, 2), (PM_TMR, 4)]
        .into_iter()
        .find(|&(reg, len)| (reg..reg + len).contains(&port))
}

impl BusDevice for AcpiPm {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        let now = self.clock.now_ns();
        let first = super::port(base, offset) - BASE;
        for (i, b) in data.iter_mut().enumerate() {
            let at = first + i as u16;
            *b = match register_at(at) {
                Some((reg, _)) => {
                    let shift = 8 * u32::from(BASE + at - reg);
                    (self.read_register(reg, now) >> shift) as u8
                }
                None => 0xFF,
            };
        }
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        let now = self.clock.now_ns();
        let first = super::port(base, offset) - BASE;
        // Gather the bytes of each register the access covers, so a
        // 16-bit write of PM1_CNT is one write (SLP_TYP with SLP_EN).
        let mut at = 0;
        while at < data.len() {
            let Some((reg, len)) = register_at(first + at as u16) else {
                at += 1;
                continue;
            };
            let (mut value, mut mask) = (0u32, 0u32);
            while at < data.len() && BASE + first + (at as u16) < reg + len {
                let shift = 8 * u32::from(BASE + first + at as u16 - reg);
                value |= u32::from(data[at]) << shift;
                mask |= 0xFF << shift;
                at += 1;
            }
            self.write_register(reg, value, mask, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::irq::TestLine;

    fn pm() -> (AcpiPm, Arc<ManualClock>, TestLine, StopHandle) {
        let clock = ManualClock::new();
        let line = TestLine::default();
        let stop = StopHandle::new();
        let pm = AcpiPm::new(clock.clone(), Box::new(line.clone()), stop.clone());
        (pm, clock, line, stop)
    }

    fn at(port: u16) -> (u64, u64) {
        (u64::from(BASE), u64::from(port - BASE))
    }

    fn inw(pm: &mut AcpiPm, port: u16) -> u16 {
        let (b, o) = at(port);
        let mut d = [0u8; 2];
        pm.read(b, o, &mut d);
        u16::from_le_bytes(d)
    }

    fn inl(pm: &mut AcpiPm, port: u16) -> u32 {
        let (b, o) = at(port);
        let mut d = [0u8; 4];
        pm.read(b, o, &mut d);
        u32::from_le_bytes(d)
    }

    fn outw(pm: &mut AcpiPm, port: u16, v: u16) {
        let (b, o) = at(port);
        pm.write(b, o, &v.to_le_bytes());
    }

    #[test]
    fn the_pm_timer_counts_at_3_579545_mhz_in_24_bits() {
        let (mut pm, clock, _, _) = pm();
        assert_eq!(inl(&mut pm, PM_TMR), 0);
        clock.advance(1_000_000_000);
        assert_eq!(inl(&mut pm, PM_TMR), 3_579_545);
        // 2^24 ticks is 4.687 s: the count wraps.
        clock.advance(4_000_000_000);
        assert_eq!(
            inl(&mut pm, PM_TMR),
            (ticks(5_000_000_000) & 0xFF_FFFF) as u32
        );
        assert!(inl(&mut pm, PM_TMR) <= TIMER_MASK);
        // Byte reads see the same count.
        let (b, o) = at(PM_TMR + 2);
        let mut hi = [0u8; 1];
        pm.read(b, o, &mut hi);
        assert_eq!(hi[0], (inl(&mut pm, PM_TMR) >> 16) as u8);
    }

    #[test]
    fn tmr_sts_follows_bit_23_and_raises_the_sci_when_enabled() {
        let (mut pm, clock, line, _) = pm();
        let half = ticks_to_ns(1 << 23);
        assert_eq!(pm.ns_until_next_irq(), None, "TMR_EN clear");
        outw(&mut pm, PM1_EN, enable::TMR);
        assert_eq!(inw(&mut pm, PM1_EN), enable::TMR);
        assert_eq!(pm.ns_until_next_irq(), Some(half));
        clock.advance(half - 1);
        pm.update();
        assert_eq!(inw(&mut pm, PM1_STS) & status::TMR, 0);
        assert!(!*line.level.lock().unwrap());
        clock.advance(1);
        pm.update();
        assert_eq!(inw(&mut pm, PM1_STS) & status::TMR, status::TMR);
        assert!(*line.level.lock().unwrap(), "the SCI is level-triggered");
        assert_eq!(pm.ns_until_next_irq(), None, "already pending");
        outw(&mut pm, PM1_STS, status::TMR);
        assert_eq!(inw(&mut pm, PM1_STS), 0);
        assert!(!*line.level.lock().unwrap());
        assert_eq!(pm.ns_until_next_irq(), Some(ticks_to_ns(2 << 23) - half));
    }

    #[test]
    fn only_the_events_this_machine_has_can_be_enabled() {
        let (mut pm, _, _, _) = pm();
        outw(&mut pm, PM1_EN, 0xFFFF);
        assert_eq!(
            inw(&mut pm, PM1_EN),
            enable::TMR | enable::GBL | enable::RTC
        );
    }

    #[test]
    fn sci_en_is_always_set_and_slp_typ_reads_back() {
        let (mut pm, _, _, stop) = pm();
        assert_eq!(inw(&mut pm, PM1A_CNT), control::SCI_EN);
        outw(&mut pm, PM1A_CNT, 5 << control::SLP_TYP_SHIFT);
        assert_eq!(inw(&mut pm, PM1A_CNT), control::SCI_EN | 5 << 10);
        // Another sleep state with SLP_EN: not offered, nothing happens.
        outw(
            &mut pm,
            PM1A_CNT,
            control::SLP_EN | 1 << control::SLP_TYP_SHIFT,
        );
        assert_eq!(stop.take(), None);
        assert_eq!(inw(&mut pm, PM1A_CNT) & control::SLP_EN, 0, "write-only");
    }

    #[test]
    fn slp_en_with_the_s5_type_powers_off() {
        let (mut pm, _, _, stop) = pm();
        // ACPICA writes SLP_TYP first, then SLP_TYP | SLP_EN.
        let typ = S5_SLEEP_TYPE << control::SLP_TYP_SHIFT;
        outw(&mut pm, PM1A_CNT, typ);
        assert_eq!(stop.take(), None);
        outw(&mut pm, PM1A_CNT, typ | control::SLP_EN);
        assert_eq!(stop.take(), Some(StopReason::PowerOff));
        assert_eq!(StopReason::PowerOff.exit_status(), 0);
    }

    #[test]
    fn a_byte_write_of_the_high_half_carries_slp_en() {
        let (mut pm, _, _, stop) = pm();
        let (b, o) = at(PM1A_CNT + 1);
        pm.write(b, o, &[(control::SLP_EN >> 8) as u8]);
        assert_eq!(stop.take(), Some(StopReason::PowerOff));
    }
}
