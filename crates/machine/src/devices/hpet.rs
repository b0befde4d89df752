//! High Precision Event Timer (IA-PC HPET specification 1.0a), memory-mapped
//! at 0xFED00000: a 64-bit main counter at 100 MHz (a 10 ns period, as
//! QEMU's) and three comparators, each one-shot or periodic, 32- or 64-bit,
//! edge- or level-triggered, routed to an I/O APIC pin (16-23) or, with the
//! legacy replacement route on, timer 0 to ISA IRQ 0 and timer 1 to IRQ 8
//! in place of the PIT and the RTC. No FSB (MSI) delivery.
//!
//! The counter is not ticked: it is derived from the machine's clock and
//! the moment it was started, as the PIT's count is. Each comparator keeps
//! the main-counter value of its next match; `update` (from the vCPU loop,
//! and before every register access) fires the matches that came due, and
//! `ns_until_next_irq` tells the loop when to kick the vCPU for the next
//! one. Missed periods of a periodic timer coalesce into one interrupt and
//! keep the phase, as the PIT's do.
//!
//! Where the specification leaves a choice, popek does what QEMU does: a
//! write to a periodic timer's comparator sets its period, and sets the
//! next match too only with Tn_VAL_SET_CNF (which the write clears). A
//! level-triggered timer sets its status bit at every match even with its
//! interrupt disabled (the specification's rule; QEMU sets it only when
//! the interrupt is enabled).

use std::sync::Arc;

use crate::clock::Clock;
use crate::irq::{HpetLines, HpetRoute};

/// Where the HPET's registers are on a PC.
pub const BASE: u64 = 0xFED0_0000;
/// Size of the register block (what the ACPI tables describe).
pub const SIZE: u64 = 0x400;

/// General capabilities and ID (read-only).
pub const CAPABILITIES: u64 = 0x000;
/// General configuration: enable, legacy replacement route.
pub const CONFIG: u64 = 0x010;
/// General interrupt status: one bit per level-triggered timer, write 1
/// to clear.
pub const STATUS: u64 = 0x020;
/// The main counter.
pub const COUNTER: u64 = 0x0F0;
/// Timer 0's registers; timer n's are [`TIMER_STRIDE`] * n further on.
pub const TIMERS: u64 = 0x100;
/// Distance between two timers' register blocks.
pub const TIMER_STRIDE: u64 = 0x20;
/// In a timer's block: its configuration and capabilities.
pub const TIMER_CONFIG: u64 = 0x00;
/// In a timer's block: its comparator.
pub const TIMER_COMPARATOR: u64 = 0x08;
/// In a timer's block: the FSB interrupt route (no FSB delivery: reads 0).
pub const TIMER_FSB: u64 = 0x10;

/// Comparators.
pub const TIMER_COUNT: usize = 3;
/// The main counter's period in femtoseconds: 10 ns, a 100 MHz counter.
pub const PERIOD_FS: u64 = 10_000_000;
/// The vendor ID the capabilities register shows (Intel's, as QEMU's).
pub const VENDOR_ID: u64 = 0x8086;
/// The revision the capabilities register shows.
pub const REVISION: u64 = 0x01;
/// I/O APIC pins a timer may be routed to (bit n = pin n): 16-23, which
/// no ISA line drives.
pub const ROUTE_CAP: u32 = 0x00FF_0000;

/// General capabilities register bits.
pub mod cap {
    /// Bits 12:8: the number of the last timer.
    pub const LAST_TIMER_SHIFT: u32 = 8;
    /// The main counter is 64 bits wide.
    pub const COUNT_SIZE_64: u64 = 1 << 13;
    /// The legacy replacement route is available.
    pub const LEGACY_ROUTE: u64 = 1 << 15;
    /// Bits 31:16: the vendor ID.
    pub const VENDOR_SHIFT: u32 = 16;
    /// Bits 63:32: the counter's period in femtoseconds.
    pub const PERIOD_SHIFT: u32 = 32;
}

/// The general capabilities register.
pub const CAPABILITIES_VALUE: u64 = (PERIOD_FS << cap::PERIOD_SHIFT)
    | (VENDOR_ID << cap::VENDOR_SHIFT)
    | cap::LEGACY_ROUTE
    | cap::COUNT_SIZE_64
    | ((TIMER_COUNT as u64 - 1) << cap::LAST_TIMER_SHIFT)
    | REVISION;

/// General configuration register bits.
pub mod config {
    /// The main counter runs and timers may interrupt.
    pub const ENABLE: u64 = 1 << 0;
    /// Legacy replacement route: timer 0 on IRQ 0, timer 1 on IRQ 8.
    pub const LEGACY: u64 = 1 << 1;
    /// Bits a write keeps.
    pub const WRITABLE: u64 = ENABLE | LEGACY;
}

/// Timer configuration and capabilities register bits.
pub mod timer {
    /// Level-triggered (else edge).
    pub const LEVEL: u64 = 1 << 1;
    /// The timer's interrupt is enabled.
    pub const INT_ENABLE: u64 = 1 << 2;
    /// Periodic (else one-shot).
    pub const PERIODIC: u64 = 1 << 3;
    /// Capability: periodic mode is available (read-only).
    pub const PERIODIC_CAP: u64 = 1 << 4;
    /// Capability: the comparator is 64 bits wide (read-only).
    pub const SIZE_64_CAP: u64 = 1 << 5;
    /// The next comparator write sets a periodic timer's next match too.
    pub const SET_VALUE: u64 = 1 << 6;
    /// Run a 64-bit timer as a 32-bit one.
    pub const MODE_32: u64 = 1 << 8;
    /// Bits 13:9: the I/O APIC pin.
    pub const ROUTE_SHIFT: u32 = 9;
    /// The route field.
    pub const ROUTE: u64 = 0x1F << ROUTE_SHIFT;
    /// Capability: FSB (MSI) delivery (never set).
    pub const FSB_CAP: u64 = 1 << 15;
    /// Bits 63:32: the pins the route field may name.
    pub const ROUTE_CAP_SHIFT: u32 = 32;
    /// Bits a write keeps.
    pub const WRITABLE: u64 = LEVEL | INT_ENABLE | PERIODIC | SET_VALUE | MODE_32 | ROUTE;
    /// The read-only part every timer shows.
    pub const CAPABILITIES: u64 =
        PERIODIC_CAP | SIZE_64_CAP | ((super::ROUTE_CAP as u64) << ROUTE_CAP_SHIFT);
}

const FS_PER_NS: u128 = 1_000_000;
/// A 32-bit comparator matches again after the counter's low half wraps.
const WRAP_32: u64 = 1 << 32;

/// One comparator.
#[derive(Clone, Debug)]
struct Timer {
    /// The writable configuration bits.
    config: u64,
    comparator: u64,
    /// A periodic timer's period, in counter ticks.
    period: u64,
    /// The main-counter value of the next match, if one is coming.
    next: Option<u64>,
    /// The line this timer holds asserted (level-triggered), if any.
    asserted: Option<HpetRoute>,
}

impl Default for Timer {
    /// After reset: disabled, the comparator all ones (as the
    /// specification and QEMU have it), so nothing matches by accident.
    fn default() -> Self {
        Timer {
            config: 0,
            comparator: u64::MAX,
            period: 0,
            next: None,
            asserted: None,
        }
    }
}

impl Timer {
    fn is_32(&self) -> bool {
        self.config & timer::MODE_32 != 0
    }

    fn mask(&self) -> u64 {
        if self.is_32() {
            u32::MAX.into()
        } else {
            u64::MAX
        }
    }

    fn periodic(&self) -> bool {
        self.config & timer::PERIODIC != 0
    }

    /// The next match at or after counter value `now`: the comparator
    /// itself for a 64-bit timer (never, once the counter passed it), the
    /// next time the counter's low half equals it for a 32-bit one.
    fn next_match(&self, now: u64) -> Option<u64> {
        if self.is_32() {
            let ahead = (self.comparator as u32).wrapping_sub(now as u32);
            Some(now + u64::from(ahead))
        } else {
            (self.comparator >= now).then_some(self.comparator)
        }
    }

    /// After the match at `at` with the counter at `now` (>= `at`): the
    /// next one, the comparator moving on by whole periods.
    fn after_match(&mut self, at: u64, now: u64) -> Option<u64> {
        let step = if self.periodic() && self.period & self.mask() != 0 {
            self.period & self.mask()
        } else if self.is_32() {
            WRAP_32
        } else {
            return None;
        };
        let next = at + ((now - at) / step + 1) * step;
        if self.periodic() {
            self.comparator = next & self.mask();
        }
        Some(next)
    }
}

/// The HPET, timed from a [`Clock`].
pub struct Hpet {
    clock: Arc<dyn Clock>,
    lines: Box<dyn HpetLines>,
    config: u64,
    status: u64,
    /// The counter's value when it last started, stopped or was written.
    base: u64,
    /// When (ns) it started counting from `base`; `None` while halted.
    started: Option<u64>,
    timers: [Timer; TIMER_COUNT],
}

impl Hpet {
    /// An HPET after reset: halted at 0, every timer disabled, routed
    /// nowhere. It drives `lines`.
    pub fn new(clock: Arc<dyn Clock>, lines: Box<dyn HpetLines>) -> Self {
        Hpet {
            clock,
            lines,
            config: 0,
            status: 0,
            base: 0,
            started: None,
            timers: Default::default(),
        }
    }

    fn enabled(&self) -> bool {
        self.config & config::ENABLE != 0
    }

    /// The main counter at `now` ns.
    fn counter(&self, now: u64) -> u64 {
        match self.started {
            Some(start) => {
                let ticks =
                    u128::from(now.saturating_sub(start)) * FS_PER_NS / u128::from(PERIOD_FS);
                self.base.wrapping_add(ticks as u64)
            }
            None => self.base,
        }
    }

    /// The first nanosecond at which the counter reads `value`, if running.
    fn ns_at(&self, value: u64) -> Option<u64> {
        let start = self.started?;
        let ticks = u128::from(value.saturating_sub(self.base));
        let ns = (ticks * u128::from(PERIOD_FS)).div_ceil(FS_PER_NS);
        Some(start.saturating_add(u64::try_from(ns).unwrap_or(u64::MAX)))
    }

    /// Where timer `n` delivers, if anywhere.
    fn route(&self, n: usize) -> Option<HpetRoute> {
        if self.config & config::LEGACY != 0 && n < 2 {
            return Some(HpetRoute::Legacy([0, 8][n]));
        }
        let pin = ((self.timers[n].config & timer::ROUTE) >> timer::ROUTE_SHIFT) as u8;
        (ROUTE_CAP & (1 << pin) != 0).then_some(HpetRoute::Pin(pin))
    }

    /// Drives timer `n`'s level-triggered line to what its status, enable
    /// bit and route say now.
    fn refresh_line(&mut self, n: usize) {
        let t = &self.timers[n];
        let active = self.enabled()
            && t.config & (timer::LEVEL | timer::INT_ENABLE) == timer::LEVEL | timer::INT_ENABLE
            && self.status & (1 << n) != 0;
        let want = if active { self.route(n) } else { None };
        if want == t.asserted {
            return;
        }
        if let Some(old) = t.asserted {
            self.lines.set(old, false);
        }
        if let Some(new) = want {
            self.lines.set(new, true);
        }
        self.timers[n].asserted = want;
    }

    fn refresh_lines(&mut self) {
        for n in 0..TIMER_COUNT {
            self.refresh_line(n);
        }
    }

    /// Timer `n` matched.
    fn fire(&mut self, n: usize) {
        let config = self.timers[n].config;
        if config & timer::LEVEL != 0 {
            self.status |= 1 << n;
            self.refresh_line(n);
        } else if config & timer::INT_ENABLE != 0 {
            if let Some(route) = self.route(n) {
                self.lines.set(route, true);
                self.lines.set(route, false);
            }
        }
    }

    /// Fires the matches that came due by `now` ns.
    /// [`Self::update`] at `now` (ns on the device's clock).
    pub fn update_at(&mut self, now: u64) {
        if !self.enabled() {
            return;
        }
        let count = self.counter(now);
        for n in 0..TIMER_COUNT {
            let Some(at) = self.timers[n].next else {
                continue;
            };
            if at <= count {
                self.timers[n].next = self.timers[n].after_match(at, count);
                self.fire(n);
            }
        }
    }

    /// Fires the matches that came due since the last update.
    pub fn update(&mut self) {
        let now = self.clock.now_ns();
        self.update_at(now);
    }

    /// Whether a match of timer `n` would raise an interrupt now.
    fn wants_wake(&self, n: usize) -> bool {
        let c = self.timers[n].config;
        c & timer::INT_ENABLE != 0
            && self.route(n).is_some()
            && (c & timer::LEVEL == 0 || self.status & (1 << n) == 0)
    }

    /// Nanoseconds until the next match that raises an interrupt, if any.
    pub fn ns_until_next_irq(&self) -> Option<u64> {
        self.ns_until_next_irq_at(self.clock.now_ns())
    }

    /// [`Self::ns_until_next_irq`] from `now`.
    pub fn ns_until_next_irq_at(&self, now: u64) -> Option<u64> {
        if !self.enabled() {
            return None;
        }
        (0..TIMER_COUNT)
            .filter(|&n| self.wants_wake(n))
            .filter_map(|n| self.ns_at(self.timers[n].next?))
            .min()
            .map(|at| at.saturating_sub(now))
    }

    /// Recomputes every timer's next match from its comparator.
    fn rearm_all(&mut self, now: u64) {
        let count = self.counter(now);
        for t in &mut self.timers {
            t.next = t.next_match(count);
        }
    }

    fn read_register(&self, reg: u64, now: u64) -> u64 {
        match reg {
            CAPABILITIES => CAPABILITIES_VALUE,
            CONFIG => self.config,
            STATUS => self.status,
            COUNTER => self.counter(now),
            _ => match timer_register(reg) {
                Some((n, TIMER_CONFIG)) => self.timers[n].config | timer::CAPABILITIES,
                Some((n, TIMER_COMPARATOR)) => self.timers[n].comparator,
                _ => 0,
            },
        }
    }

    /// A write of the bits in `mask` of `value` to the 8-byte register `reg`.
    fn write_register(&mut self, reg: u64, value: u64, mask: u64, now: u64) {
        let merge = |old: u64| (old & !mask) | (value & mask);
        match reg {
            CONFIG => self.write_config(merge(self.config) & config::WRITABLE, now),
            STATUS => {
                self.status &= !(value & mask);
                self.refresh_lines();
            }
            COUNTER => {
                self.base = merge(self.counter(now));
                if self.started.is_some() {
                    self.started = Some(now);
                }
                self.rearm_all(now);
            }
            _ => match timer_register(reg) {
                Some((n, TIMER_CONFIG)) => {
                    self.write_timer_config(n, merge(self.timers[n].config), now)
                }
                Some((n, TIMER_COMPARATOR)) => self.write_comparator(n, value, mask, now),
                _ => {}
            },
        }
    }

    fn write_config(&mut self, new: u64, now: u64) {
        let old = self.config;
        if (old ^ new) & config::ENABLE != 0 {
            if new & config::ENABLE != 0 {
                self.started = Some(now);
            } else {
                self.base = self.counter(now);
                self.started = None;
            }
        }
        self.config = new;
        if (old ^ new) & config::LEGACY != 0 {
            self.lines.set_legacy_replacement(new & config::LEGACY != 0);
        }
        self.refresh_lines();
        // Enabling may find matches already due.
        self.update_at(now);
    }

    fn write_timer_config(&mut self, n: usize, value: u64, now: u64) {
        let t = &mut self.timers[n];
        let mut new = value & timer::WRITABLE;
        let pin = (new & timer::ROUTE) >> timer::ROUTE_SHIFT;
        if ROUTE_CAP & (1 << pin) == 0 {
            // An unsupported pin does not stick (the specification's way
            // of telling software which it may use).
            new = (new & !timer::ROUTE) | (t.config & timer::ROUTE);
        }
        t.config = new;
        if t.is_32() {
            t.comparator &= u64::from(u32::MAX);
            t.period &= u64::from(u32::MAX);
        }
        if new & timer::LEVEL == 0 {
            self.status &= !(1 << n);
        }
        let count = self.counter(now);
        let t = &mut self.timers[n];
        t.next = t.next_match(count);
        self.refresh_line(n);
    }

    fn write_comparator(&mut self, n: usize, value: u64, mask: u64, now: u64) {
        let count = self.counter(now);
        let t = &mut self.timers[n];
        let mask = mask & t.mask();
        if mask == 0 {
            return;
        }
        let merge = |old: u64| (old & !mask) | (value & mask);
        if !t.periodic() || t.config & timer::SET_VALUE != 0 {
            t.comparator = merge(t.comparator);
        }
        t.period = merge(t.period);
        t.config &= !timer::SET_VALUE;
        t.next = t.next_match(count);
    }

    /// A read of `data.len()` bytes at `offset` into the register block.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        let now = self.clock.now_ns();
        self.update_at(now);
        let value = self.read_register(offset & !7, now);
        let bytes = value.to_le_bytes();
        let at = (offset & 7) as usize;
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(at + i).copied().unwrap_or(0);
        }
    }

    /// A write of `data` at `offset` into the register block.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let now = self.clock.now_ns();
        self.update_at(now);
        let at = (offset & 7) as usize;
        let (mut value, mut mask) = ([0u8; 8], [0u8; 8]);
        for (i, &b) in data.iter().enumerate().take(8 - at) {
            value[at + i] = b;
            mask[at + i] = 0xFF;
        }
        let (value, mask) = (u64::from_le_bytes(value), u64::from_le_bytes(mask));
        self.write_register(offset & !7, value, mask, now);
    }
}

impl crate::bus::BusDevice for Hpet {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        Hpet::read(self, offset, data);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        Hpet::write(self, offset, data);
    }
}

/// The timer and the register within its block that `reg` names.
fn timer_register(reg: u64) -> Option<(usize, u64)> {
    let rel = reg.checked_sub(TIMERS)?;
    let n = usize::try_from(rel / TIMER_STRIDE).ok()?;
    (n < TIMER_COUNT).then_some((n, rel % TIMER_STRIDE))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::clock::ManualClock;

    /// What the HPET drove: every change of a line, and the legacy switch.
    #[derive(Clone, Default)]
    struct Lines {
        events: Arc<Mutex<Vec<(HpetRoute, bool)>>>,
        legacy: Arc<Mutex<bool>>,
    }

    impl HpetLines for Lines {
        fn set(&self, route: HpetRoute, level: bool) {
            self.events.lock().unwrap().push((route, level));
        }
        fn set_legacy_replacement(&self, on: bool) {
            *self.legacy.lock().unwrap() = on;
        }
    }

    impl Lines {
        fn take(&self) -> Vec<(HpetRoute, bool)> {
            std::mem::take(&mut self.events.lock().unwrap())
        }
        /// Rising edges on `route` since the last take.
        fn edges(&self, route: HpetRoute) -> usize {
            self.take()
                .iter()
                .filter(|&&(r, level)| r == route && level)
                .count()
        }
    }

    fn hpet() -> (Hpet, Arc<ManualClock>, Lines) {
        let clock = ManualClock::new();
        let lines = Lines::default();
        let h = Hpet::new(clock.clone(), Box::new(lines.clone()));
        (h, clock, lines)
    }

    fn rd64(h: &mut Hpet, reg: u64) -> u64 {
        let mut b = [0u8; 8];
        h.read(reg, &mut b);
        u64::from_le_bytes(b)
    }

    fn rd32(h: &mut Hpet, reg: u64) -> u32 {
        let mut b = [0u8; 4];
        h.read(reg, &mut b);
        u32::from_le_bytes(b)
    }

    fn wr32(h: &mut Hpet, reg: u64, v: u32) {
        h.write(reg, &v.to_le_bytes());
    }

    fn wr64(h: &mut Hpet, reg: u64, v: u64) {
        h.write(reg, &v.to_le_bytes());
    }

    fn tcfg(n: u64) -> u64 {
        TIMERS + n * TIMER_STRIDE + TIMER_CONFIG
    }

    fn tcmp(n: u64) -> u64 {
        TIMERS + n * TIMER_STRIDE + TIMER_COMPARATOR
    }

    fn route(pin: u64) -> u32 {
        (pin << timer::ROUTE_SHIFT) as u32
    }

    const PIN20: HpetRoute = HpetRoute::Pin(20);

    #[test]
    fn capabilities_are_qemus_shape_with_a_10ns_period() {
        let (mut h, _, _) = hpet();
        let cap = rd64(&mut h, CAPABILITIES);
        assert_eq!(cap as u32, 0x8086_A201, "what Linux prints as the HPET id");
        assert_eq!(cap >> 32, 10_000_000);
        assert_eq!(
            rd32(&mut h, CAPABILITIES + 4),
            10_000_000,
            "high half alone"
        );
        for n in 0..3 {
            let c = rd64(&mut h, tcfg(n));
            assert_eq!(c & 0xFFFF, timer::PERIODIC_CAP | timer::SIZE_64_CAP);
            assert_eq!(c >> 32, u64::from(ROUTE_CAP));
        }
        wr64(&mut h, CAPABILITIES, 0);
        assert_eq!(rd64(&mut h, CAPABILITIES), CAPABILITIES_VALUE);
    }

    #[test]
    fn the_counter_runs_at_100mhz_only_while_enabled() {
        let (mut h, clock, _) = hpet();
        clock.advance(1_000);
        assert_eq!(rd64(&mut h, COUNTER), 0, "halted after reset");
        wr32(&mut h, CONFIG, config::ENABLE as u32);
        clock.advance(1_000_000);
        assert_eq!(rd64(&mut h, COUNTER), 100_000);
        wr32(&mut h, CONFIG, 0);
        clock.advance(1_000_000);
        assert_eq!(rd64(&mut h, COUNTER), 100_000);
        // Software sets the counter while it is halted.
        wr32(&mut h, COUNTER, 0xFFFF_FFF0);
        wr32(&mut h, COUNTER + 4, 1);
        assert_eq!(rd64(&mut h, COUNTER), 0x1_FFFF_FFF0);
        wr32(&mut h, CONFIG, config::ENABLE as u32);
        clock.advance(200);
        assert_eq!(
            rd64(&mut h, COUNTER),
            0x2_0000_0004,
            "carries into the high half"
        );
        assert_eq!(rd32(&mut h, COUNTER + 4), 2);
    }

    #[test]
    fn a_one_shot_edge_timer_fires_once_on_its_pin() {
        let (mut h, clock, lines) = hpet();
        wr32(&mut h, tcfg(2), route(20) | timer::INT_ENABLE as u32);
        assert_eq!(rd32(&mut h, tcfg(2)) as u64 & timer::ROUTE, 20 << 9);
        wr64(&mut h, tcmp(2), 1_000);
        wr32(&mut h, CONFIG, config::ENABLE as u32);
        assert_eq!(h.ns_until_next_irq(), Some(10_000));
        clock.advance(9_990);
        h.update();
        assert_eq!(lines.edges(PIN20), 0);
        clock.advance(10);
        h.update();
        assert_eq!(lines.edges(PIN20), 1);
        assert_eq!(h.ns_until_next_irq(), None, "a 64-bit one-shot is done");
        clock.advance(1_000_000);
        h.update();
        assert_eq!(lines.edges(PIN20), 0);
        assert_eq!(rd64(&mut h, STATUS), 0, "edge timers leave no status");
    }

    #[test]
    fn a_32_bit_one_shot_matches_again_after_the_low_half_wraps() {
        let (mut h, clock, lines) = hpet();
        let cfg = timer::MODE_32 as u32 | timer::INT_ENABLE as u32 | route(20);
        wr32(&mut h, tcfg(2), cfg);
        wr32(&mut h, COUNTER, 0xFFFF_FF00);
        wr32(&mut h, tcmp(2), 0x10);
        assert_eq!(rd32(&mut h, tcmp(2) + 4), 0, "32-bit comparator");
        wr32(&mut h, CONFIG, config::ENABLE as u32);
        assert_eq!(h.ns_until_next_irq(), Some(0x110 * 10));
        clock.advance(0x110 * 10);
        h.update();
        assert_eq!(lines.edges(PIN20), 1);
        assert_eq!(h.ns_until_next_irq(), Some((1 << 32) * 10));
    }

    #[test]
    fn a_periodic_timer_set_up_as_linux_does_fires_every_period() {
        let (mut h, clock, lines) = hpet();
        // hpet_clkevt_set_state_periodic: stop, comparator = now + delta
        // with SETVAL, then delta again for the period, start.
        wr32(&mut h, CONFIG, config::LEGACY as u32);
        assert!(*lines.legacy.lock().unwrap());
        let cfg = timer::INT_ENABLE | timer::PERIODIC | timer::SET_VALUE | timer::MODE_32;
        wr32(&mut h, tcfg(0), cfg as u32);
        wr32(&mut h, tcmp(0), 400_000);
        wr32(&mut h, tcmp(0), 400_000);
        assert_eq!(rd32(&mut h, tcfg(0)) as u64 & timer::SET_VALUE, 0);
        wr32(&mut h, CONFIG, (config::LEGACY | config::ENABLE) as u32);
        let irq0 = HpetRoute::Legacy(0);
        for tick in 1..=3u64 {
            assert_eq!(h.ns_until_next_irq(), Some(4_000_000));
            clock.advance(4_000_000);
            h.update();
            assert_eq!(lines.edges(irq0), 1, "tick {tick}");
            assert_eq!(rd32(&mut h, tcmp(0)), (400_000 * (tick + 1)) as u32);
        }
        // Missed periods coalesce and keep the phase.
        clock.advance(3 * 4_000_000 + 1_000_000);
        h.update();
        assert_eq!(lines.edges(irq0), 1);
        assert_eq!(h.ns_until_next_irq(), Some(3_000_000));
    }

    #[test]
    fn a_level_timer_holds_its_line_until_its_status_is_cleared() {
        let (mut h, clock, lines) = hpet();
        let cfg = timer::LEVEL | timer::INT_ENABLE;
        wr32(&mut h, tcfg(2), cfg as u32 | route(20));
        wr64(&mut h, tcmp(2), 100);
        wr32(&mut h, CONFIG, config::ENABLE as u32);
        clock.advance(1_000);
        h.update();
        assert_eq!(lines.take(), vec![(PIN20, true)]);
        assert_eq!(rd32(&mut h, STATUS), 1 << 2);
        assert_eq!(h.ns_until_next_irq(), None);
        wr32(&mut h, STATUS, 1 << 1);
        assert_eq!(rd32(&mut h, STATUS), 1 << 2, "another timer's bit");
        wr32(&mut h, STATUS, 1 << 2);
        assert_eq!(lines.take(), vec![(PIN20, false)]);
        assert_eq!(rd32(&mut h, STATUS), 0);
    }

    #[test]
    fn a_disabled_level_timer_sets_its_status_but_no_line() {
        let (mut h, clock, lines) = hpet();
        wr32(&mut h, tcfg(2), timer::LEVEL as u32 | route(20));
        wr64(&mut h, tcmp(2), 100);
        wr32(&mut h, CONFIG, config::ENABLE as u32);
        clock.advance(1_000);
        assert_eq!(rd32(&mut h, STATUS), 1 << 2);
        assert!(lines.take().is_empty());
        // Enabling the interrupt asserts the line for the pending status.
        wr32(
            &mut h,
            tcfg(2),
            (timer::LEVEL | timer::INT_ENABLE) as u32 | route(20),
        );
        assert_eq!(lines.take(), vec![(PIN20, true)]);
        // Halting the HPET drops it.
        wr32(&mut h, CONFIG, 0);
        assert_eq!(lines.take(), vec![(PIN20, false)]);
    }

    #[test]
    fn routes_outside_the_capability_do_not_stick() {
        let (mut h, _, _) = hpet();
        wr32(&mut h, tcfg(1), route(18));
        wr32(&mut h, tcfg(1), route(2));
        assert_eq!(
            u64::from(rd32(&mut h, tcfg(1))) & timer::ROUTE,
            route(18).into()
        );
        wr32(&mut h, tcfg(1), 0xFFFF_FFFF);
        let writable = timer::LEVEL
            | timer::INT_ENABLE
            | timer::PERIODIC
            | timer::SET_VALUE
            | timer::MODE_32
            | timer::PERIODIC_CAP
            | timer::SIZE_64_CAP;
        assert_eq!(rd32(&mut h, tcfg(1)), writable as u32 | route(18), "no FSB");
    }

    #[test]
    fn legacy_replacement_moves_timers_0_and_1_to_irq_0_and_8() {
        let (mut h, clock, lines) = hpet();
        for n in 0..2 {
            wr32(&mut h, tcfg(n), timer::INT_ENABLE as u32 | route(20));
            wr64(&mut h, tcmp(n), 10 * (n + 1));
        }
        wr32(&mut h, CONFIG, (config::ENABLE | config::LEGACY) as u32);
        clock.advance(1_000);
        h.update();
        let mut seen = lines.take();
        seen.sort_by_key(|(r, l)| (format!("{r:?}"), *l));
        assert_eq!(
            seen,
            vec![
                (HpetRoute::Legacy(0), false),
                (HpetRoute::Legacy(0), true),
                (HpetRoute::Legacy(8), false),
                (HpetRoute::Legacy(8), true),
            ]
        );
        wr32(&mut h, CONFIG, config::ENABLE as u32);
        assert!(!*lines.legacy.lock().unwrap());
    }

    #[test]
    fn a_comparator_written_behind_a_running_counter_waits_for_the_wrap() {
        let (mut h, clock, lines) = hpet();
        wr32(&mut h, tcfg(2), timer::INT_ENABLE as u32 | route(20));
        wr32(&mut h, CONFIG, config::ENABLE as u32);
        clock.advance(10_000);
        wr64(&mut h, tcmp(2), 500);
        assert_eq!(h.ns_until_next_irq(), None, "64-bit: 2^64 ticks away");
        clock.advance(10_000);
        h.update();
        assert_eq!(lines.edges(PIN20), 0);
    }
}
