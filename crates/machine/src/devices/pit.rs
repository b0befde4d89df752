//! 8254 programmable interval timer (0x40-0x43) and system control port B (0x61).
//!
//! Counters are not ticked: each one remembers when it was loaded (and how
//! many input clocks it had counted before a pause) and derives its count and
//! OUT level from the clock on demand, so no rounding error accumulates.
use std::sync::Arc;

use crate::bus::BusDevice;
use crate::clock::Clock;
use crate::irq::IrqLine;

/// Channel 0 data port.
pub const CHANNEL0: u16 = 0x40;
/// Channel 2 data port.
pub const CHANNEL2: u16 = 0x42;
/// Mode/command port.
pub const COMMAND: u16 = 0x43;
/// System control port B: channel 2 gate (bit 0), speaker (bit 1), OUT2 (bit 5).
pub const PORT_B: u16 = 0x61;

/// The 8254's input clock in Hz.
pub const FREQUENCY_HZ: u64 = 1_193_182;
const NS_PER_SEC: u64 = 1_000_000_000;
/// What a count register of 0 means.
const MAX_COUNT: u32 = 0x1_0000;

/// Command: counter select (bits 7:6); 3 is the read-back command.
const CMD_CHANNEL_SHIFT: u8 = 6;
/// Command counter-select value of the read-back command.
const CMD_READ_BACK: u8 = 3;
/// Command: access mode (bits 5:4); 0 is the counter latch command.
const CMD_ACCESS_SHIFT: u8 = 4;
const CMD_ACCESS_MASK: u8 = 0x3;
/// Command: operating mode (bits 3:1).
const CMD_MODE_SHIFT: u8 = 1;
const CMD_MODE_MASK: u8 = 0x7;
/// Command: BCD counting (recorded and reported; counting is binary).
pub const CMD_BCD: u8 = 0x01;

/// Read-back: do not latch the count.
pub const READ_BACK_NO_COUNT: u8 = 0x20;
/// Read-back: do not latch the status.
pub const READ_BACK_NO_STATUS: u8 = 0x10;
/// Read-back: counter select bits (bit 1 = counter 0 ... bit 3 = counter 2).
const READ_BACK_SELECT_SHIFT: u8 = 1;

/// Status byte: the OUT pin.
pub const STATUS_OUT: u8 = 0x80;
/// Status byte: a count was written but not yet loaded.
pub const STATUS_NULL_COUNT: u8 = 0x40;

/// Port B: channel 2 gate.
pub const PORT_B_GATE2: u8 = 0x01;
/// Port B: speaker data enable.
pub const PORT_B_SPEAKER: u8 = 0x02;
/// Port B: bits the guest may write (gate, speaker, parity and channel check enables).
const PORT_B_WRITABLE: u8 = 0x0F;
/// Port B: the DRAM refresh request toggle.
pub const PORT_B_REFRESH: u8 = 0x10;
/// Port B: channel 2's OUT pin.
pub const PORT_B_OUT2: u8 = 0x20;

/// Operating mode 0: interrupt on terminal count.
pub const MODE_INTERRUPT_ON_TC: u8 = 0;
/// Operating mode 1: hardware-retriggerable one-shot.
pub const MODE_ONE_SHOT: u8 = 1;
/// Operating mode 2: rate generator.
pub const MODE_RATE: u8 = 2;
/// Operating mode 3: square wave.
pub const MODE_SQUARE: u8 = 3;
/// Operating mode 4: software-triggered strobe.
pub const MODE_SW_STROBE: u8 = 4;
/// Operating mode 5: hardware-triggered strobe.
pub const MODE_HW_STROBE: u8 = 5;

/// How the data port reads and writes the 16-bit count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Low = 1,
    High = 2,
    LowHigh = 3,
}

impl Access {
    fn from_bits(bits: u8) -> Self {
        match bits {
            1 => Access::Low,
            2 => Access::High,
            _ => Access::LowHigh,
        }
    }
}

/// Whether a counter is counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Run {
    /// Programmed but no count written yet.
    Idle,
    /// Counting since `start` ns, having counted `base` clocks before that.
    Counting { start: u64, base: u64 },
    /// Stopped by its gate after counting `base` clocks.
    Paused { base: u64 },
}

/// Input clocks in `ns` nanoseconds.
fn ns_to_ticks(ns: u64) -> u64 {
    (u128::from(ns) * u128::from(FREQUENCY_HZ) / u128::from(NS_PER_SEC)) as u64
}

/// The first nanosecond at which `ticks` input clocks have elapsed.
fn ticks_to_ns(ticks: u64) -> u64 {
    (u128::from(ticks) * u128::from(NS_PER_SEC)).div_ceil(u128::from(FREQUENCY_HZ)) as u64
}

/// One counter of the 8254.
#[derive(Debug)]
struct Channel {
    mode: u8,
    access: Access,
    bcd: bool,
    /// The count register: 1..=65536.
    reload: u32,
    run: Run,
    gate: bool,
    null_count: bool,
    /// Low byte of a low/high write in progress.
    write_low: Option<u8>,
    /// The next unlatched low/high read returns the high byte.
    read_high: bool,
    /// A latched count and whether its high byte is next.
    latch: Option<(u16, bool)>,
    status_latch: Option<u8>,
    /// Rising OUT edges since the count was loaded that `update` delivered.
    edges_seen: u64,
}

impl Channel {
    fn new(gate: bool) -> Self {
        Channel {
            mode: MODE_INTERRUPT_ON_TC,
            access: Access::LowHigh,
            bcd: false,
            reload: MAX_COUNT,
            run: Run::Idle,
            gate,
            null_count: true,
            write_low: None,
            read_high: false,
            latch: None,
            status_latch: None,
            edges_seen: 0,
        }
    }

    /// Input clocks counted since the count was loaded, if one was.
    fn ticks(&self, now: u64) -> Option<u64> {
        match self.run {
            Run::Idle => None,
            Run::Counting { start, base } => Some(base + ns_to_ticks(now.saturating_sub(start))),
            Run::Paused { base } => Some(base),
        }
    }

    fn count_at(&self, t: u64) -> u16 {
        let n = u64::from(self.reload);
        let count = match self.mode {
            MODE_RATE => n - t % n,
            // Mode 3 counts down by two per clock in each half period.
            MODE_SQUARE => n - (2 * t) % n,
            // The one-shot modes keep counting (and wrapping) after zero.
            _ => n.wrapping_sub(t),
        };
        count as u16
    }

    fn out_at(&self, t: u64) -> bool {
        let n = u64::from(self.reload);
        match self.mode {
            MODE_RATE => t % n != n - 1,
            MODE_SQUARE => t % n < n.div_ceil(2),
            MODE_SW_STROBE | MODE_HW_STROBE => t != n,
            _ => t >= n,
        }
    }

    fn count(&self, now: u64) -> u16 {
        match self.ticks(now) {
            Some(t) => self.count_at(t),
            None => self.reload as u16,
        }
    }

    fn out(&self, now: u64) -> bool {
        match (self.run, self.mode) {
            // Mode 0 holds OUT low from the control word to terminal count.
            (Run::Idle, MODE_INTERRUPT_ON_TC) => false,
            (Run::Idle, _) => true,
            // A low gate forces the periodic modes' OUT high.
            (Run::Paused { .. }, MODE_RATE | MODE_SQUARE) => true,
            (_, _) => self.out_at(self.ticks(now).unwrap_or(0)),
        }
    }

    /// Rising OUT edges in clocks `1..=t` after the load.
    fn edges_by(&self, t: u64) -> u64 {
        let n = u64::from(self.reload);
        match self.mode {
            MODE_RATE | MODE_SQUARE => t / n,
            MODE_SW_STROBE | MODE_HW_STROBE => u64::from(t > n),
            _ => u64::from(t >= n),
        }
    }

    /// The clock (after the load) of the `i`th rising edge, counting from 1.
    fn edge_tick(&self, i: u64) -> Option<u64> {
        let n = u64::from(self.reload);
        match self.mode {
            MODE_RATE | MODE_SQUARE => Some(i * n),
            MODE_SW_STROBE | MODE_HW_STROBE if i == 1 => Some(n + 1),
            MODE_INTERRUPT_ON_TC | MODE_ONE_SHOT if i == 1 => Some(n),
            _ => None,
        }
    }

    fn status(&self, now: u64) -> u8 {
        let out = if self.out(now) { STATUS_OUT } else { 0 };
        let null = if self.null_count {
            STATUS_NULL_COUNT
        } else {
            0
        };
        out | null
            | (self.access as u8) << CMD_ACCESS_SHIFT
            | self.mode << CMD_MODE_SHIFT
            | u8::from(self.bcd)
    }

    fn program(&mut self, command: u8) {
        self.access = Access::from_bits((command >> CMD_ACCESS_SHIFT) & CMD_ACCESS_MASK);
        let mode = (command >> CMD_MODE_SHIFT) & CMD_MODE_MASK;
        // Modes 6 and 7 are aliases of 2 and 3.
        self.mode = if mode > MODE_HW_STROBE {
            mode - 4
        } else {
            mode
        };
        self.bcd = command & CMD_BCD != 0;
        self.run = Run::Idle;
        self.null_count = true;
        self.write_low = None;
        self.read_high = false;
        self.latch = None;
        self.status_latch = None;
        self.edges_seen = 0;
    }

    fn load(&mut self, count: u16, now: u64) {
        self.reload = if count == 0 {
            MAX_COUNT
        } else {
            u32::from(count)
        };
        self.null_count = false;
        self.edges_seen = 0;
        let waits_for_gate = matches!(
            self.mode,
            MODE_INTERRUPT_ON_TC | MODE_RATE | MODE_SQUARE | MODE_SW_STROBE
        );
        self.run = if self.gate || !waits_for_gate {
            Run::Counting {
                start: now,
                base: 0,
            }
        } else {
            Run::Paused { base: 0 }
        };
    }

    fn write(&mut self, value: u8, now: u64) {
        match self.access {
            Access::Low => self.load(u16::from(value), now),
            Access::High => self.load(u16::from(value) << 8, now),
            Access::LowHigh => match self.write_low.take() {
                Some(low) => self.load(u16::from_le_bytes([low, value]), now),
                None => {
                    self.write_low = Some(value);
                    if self.mode == MODE_INTERRUPT_ON_TC {
                        // Writing the first byte stops a mode-0 count and drops OUT.
                        self.run = Run::Idle;
                    }
                }
            },
        }
    }

    fn latch_count(&mut self, now: u64) {
        // Further latch commands are ignored until the latched count is read.
        if self.latch.is_none() {
            self.latch = Some((self.count(now), false));
        }
    }

    fn latch_status(&mut self, now: u64) {
        if self.status_latch.is_none() {
            self.status_latch = Some(self.status(now));
        }
    }

    fn read(&mut self, now: u64) -> u8 {
        if let Some(status) = self.status_latch.take() {
            return status;
        }
        if let Some((count, high_next)) = self.latch {
            let [low, high] = count.to_le_bytes();
            return match self.access {
                Access::Low => {
                    self.latch = None;
                    low
                }
                Access::High => {
                    self.latch = None;
                    high
                }
                Access::LowHigh if !high_next => {
                    self.latch = Some((count, true));
                    low
                }
                Access::LowHigh => {
                    self.latch = None;
                    high
                }
            };
        }
        let [low, high] = self.count(now).to_le_bytes();
        match self.access {
            Access::Low => low,
            Access::High => high,
            Access::LowHigh => {
                self.read_high = !self.read_high;
                if self.read_high {
                    low
                } else {
                    high
                }
            }
        }
    }

    fn set_gate(&mut self, gate: bool, now: u64) {
        if gate == self.gate {
            return;
        }
        self.gate = gate;
        match (self.run, gate) {
            (Run::Idle, _) => {}
            (Run::Counting { .. }, false) => {
                if matches!(
                    self.mode,
                    MODE_INTERRUPT_ON_TC | MODE_SW_STROBE | MODE_RATE | MODE_SQUARE
                ) {
                    let base = self.ticks(now).unwrap_or(0);
                    self.run = Run::Paused { base };
                }
            }
            (_, true) => {
                // Modes 0 and 4 resume; the others restart from the count register.
                let base = match (self.run, self.mode) {
                    (Run::Paused { base }, MODE_INTERRUPT_ON_TC | MODE_SW_STROBE) => base,
                    _ => {
                        self.edges_seen = 0;
                        0
                    }
                };
                self.run = Run::Counting { start: now, base };
            }
            (Run::Paused { .. }, false) => {}
        }
    }
}

/// The PIT, timed from a [`Clock`].
pub struct Pit {
    clock: Arc<dyn Clock>,
    irq0: Box<dyn IrqLine>,
    channels: [Channel; 3],
    port_b: u8,
    refresh: bool,
}

impl Pit {
    /// A PIT in its power-on state; channel 0 drives `irq0`.
    pub fn new(clock: Arc<dyn Clock>, irq0: Box<dyn IrqLine>) -> Self {
        Pit {
            clock,
            irq0,
            // Channels 0 and 1 have their gates tied high on a PC.
            channels: [Channel::new(true), Channel::new(true), Channel::new(false)],
            port_b: 0,
            refresh: false,
        }
    }

    /// Raises IRQ 0 edges that came due since the last update.
    pub fn update(&mut self) {
        self.update_at(self.clock.now_ns());
    }

    /// [`Self::update`] at `now` (ns on the device's clock), for a caller
    /// updating several devices at one reading of the clock.
    pub fn update_at(&mut self, now: u64) {
        let ch = &mut self.channels[0];
        let Some(t) = ch.ticks(now) else {
            return;
        };
        let edges = ch.edges_by(t);
        if edges > ch.edges_seen {
            // The PIC latches one request however many periods went by; the
            // phase is kept because edges are counted from the load time.
            ch.edges_seen = edges;
            self.irq0.pulse();
        }
    }

    /// Nanoseconds until channel 0's next IRQ edge, if one is scheduled.
    pub fn ns_until_next_irq(&self) -> Option<u64> {
        self.ns_until_next_irq_at(self.clock.now_ns())
    }

    /// [`Self::ns_until_next_irq`] from `now`.
    pub fn ns_until_next_irq_at(&self, now: u64) -> Option<u64> {
        let ch = &self.channels[0];
        let Run::Counting { start, base } = ch.run else {
            return None;
        };
        let tick = ch.edge_tick(ch.edges_seen + 1)?;
        let due = start + ticks_to_ns(tick.saturating_sub(base));
        Some(due.saturating_sub(now))
    }

    /// The OUT pin of `channel` (0..=2) now.
    pub fn out(&self, channel: usize) -> bool {
        self.channels[channel].out(self.clock.now_ns())
    }

    fn command(&mut self, value: u8, now: u64) {
        let select = value >> CMD_CHANNEL_SHIFT;
        if select == CMD_READ_BACK {
            for (i, ch) in self.channels.iter_mut().enumerate() {
                if value & (1 << (READ_BACK_SELECT_SHIFT + i as u8)) == 0 {
                    continue;
                }
                // Status first: a read returns it before the count.
                if value & READ_BACK_NO_STATUS == 0 {
                    ch.latch_status(now);
                }
                if value & READ_BACK_NO_COUNT == 0 {
                    ch.latch_count(now);
                }
            }
            return;
        }
        let ch = &mut self.channels[usize::from(select)];
        if (value >> CMD_ACCESS_SHIFT) & CMD_ACCESS_MASK == 0 {
            ch.latch_count(now);
        } else {
            ch.program(value);
        }
    }

    fn read_port_b(&mut self, now: u64) -> u8 {
        // The refresh bit toggles on every read: old delay loops wait for it to flip.
        self.refresh = !self.refresh;
        let refresh = if self.refresh { PORT_B_REFRESH } else { 0 };
        let out2 = if self.channels[2].out(now) {
            PORT_B_OUT2
        } else {
            0
        };
        self.port_b | refresh | out2
    }

    fn read_port(&mut self, port: u16, now: u64) -> u8 {
        match port {
            CHANNEL0..=CHANNEL2 => self.channels[usize::from(port - CHANNEL0)].read(now),
            PORT_B => self.read_port_b(now),
            // The command register cannot be read.
            _ => 0xFF,
        }
    }

    fn write_port(&mut self, port: u16, value: u8, now: u64) {
        match port {
            CHANNEL0..=CHANNEL2 => self.channels[usize::from(port - CHANNEL0)].write(value, now),
            COMMAND => self.command(value, now),
            PORT_B => {
                self.port_b = value & PORT_B_WRITABLE;
                self.channels[2].set_gate(value & PORT_B_GATE2 != 0, now);
            }
            _ => {}
        }
    }
}

impl BusDevice for Pit {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        let now = self.clock.now_ns();
        // A wide access is a run of byte cycles on consecutive ports.
        for (p, byte) in (super::port(base, offset)..).zip(data.iter_mut()) {
            *byte = self.read_port(p, now);
        }
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        let now = self.clock.now_ns();
        for (p, &byte) in (super::port(base, offset)..).zip(data) {
            self.write_port(p, byte, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::irq::TestLine;

    /// Command byte: channel, access, mode.
    fn cmd(channel: u8, access: u8, mode: u8) -> u8 {
        channel << CMD_CHANNEL_SHIFT | access << CMD_ACCESS_SHIFT | mode << CMD_MODE_SHIFT
    }

    const LOHI: u8 = Access::LowHigh as u8;

    fn pit() -> (Pit, Arc<ManualClock>, TestLine) {
        let clock = ManualClock::new();
        let line = TestLine::default();
        let p = Pit::new(clock.clone(), Box::new(line.clone()));
        (p, clock, line)
    }

    /// `port` as the bus passes it: the base of its range and the offset.
    fn at(port: u16) -> (u64, u64) {
        let base = if port == PORT_B { PORT_B } else { CHANNEL0 };
        (u64::from(base), u64::from(port - base))
    }

    fn out(p: &mut Pit, port: u16, v: u8) {
        let (base, offset) = at(port);
        p.write(base, offset, &[v]);
    }

    fn inb(p: &mut Pit, port: u16) -> u8 {
        let (base, offset) = at(port);
        let mut b = [0u8; 1];
        p.read(base, offset, &mut b);
        b[0]
    }

    fn load(p: &mut Pit, port: u16, count: u16) {
        let [lo, hi] = count.to_le_bytes();
        out(p, port, lo);
        out(p, port, hi);
    }

    fn read16(p: &mut Pit, port: u16) -> u16 {
        let lo = inb(p, port);
        let hi = inb(p, port);
        u16::from_le_bytes([lo, hi])
    }

    fn edges(line: &TestLine) -> u32 {
        *line.edges.lock().unwrap()
    }

    /// Nanoseconds of `ticks` input clocks, rounded up.
    fn ns(ticks: u64) -> u64 {
        ticks_to_ns(ticks)
    }

    #[test]
    fn tick_conversion_round_trips() {
        for t in [0, 1, 11_932, 65_536, 1_193_182, 10_000_000_007] {
            assert_eq!(ns_to_ticks(ticks_to_ns(t)), t);
            assert!(ns_to_ticks(ticks_to_ns(t).saturating_sub(1)) < t.max(1));
        }
    }

    #[test]
    fn unprogrammed_channel0_schedules_nothing() {
        let (mut p, clock, line) = pit();
        assert_eq!(p.ns_until_next_irq(), None);
        clock.advance(1_000_000_000);
        p.update();
        assert_eq!(edges(&line), 0);
    }

    #[test]
    fn mode2_fires_once_per_period() {
        let (mut p, clock, line) = pit();
        out(&mut p, COMMAND, cmd(0, LOHI, MODE_RATE));
        load(&mut p, CHANNEL0, 11_932); // 100 Hz
        for i in 1..=100 {
            let due = p.ns_until_next_irq().unwrap();
            assert_eq!(clock.now_ns() + due, ns(i * 11_932));
            clock.advance(due - 1);
            p.update();
            assert_eq!(u64::from(edges(&line)), i - 1, "1 ns before period {i}");
            clock.advance(1);
            p.update();
            assert_eq!(u64::from(edges(&line)), i, "at period {i}");
        }
        // No drift: 100 periods of 11932 clocks at 1.193182 MHz.
        assert_eq!(clock.now_ns(), 1_000_015_086);
    }

    #[test]
    fn missed_periods_give_one_pulse_and_keep_the_phase() {
        let (mut p, clock, line) = pit();
        out(&mut p, COMMAND, cmd(0, LOHI, MODE_RATE));
        load(&mut p, CHANNEL0, 1000);
        clock.advance(ns(3500));
        p.update();
        assert_eq!(edges(&line), 1);
        assert_eq!(p.ns_until_next_irq(), Some(ns(4000) - ns(3500)));
        clock.advance(ns(4000) - ns(3500));
        p.update();
        assert_eq!(edges(&line), 2);
    }

    #[test]
    fn mode2_count_and_out_within_a_period() {
        let (mut p, clock, _) = pit();
        out(&mut p, COMMAND, cmd(0, LOHI, MODE_RATE));
        load(&mut p, CHANNEL0, 100);
        assert_eq!(read16(&mut p, CHANNEL0), 100);
        clock.advance(ns(30));
        assert_eq!(read16(&mut p, CHANNEL0), 70);
        clock.advance(ns(99) - ns(30));
        assert!(!p.out(0), "low for the last clock of the period");
        clock.advance(ns(100) - ns(99));
        assert!(p.out(0));
        assert_eq!(read16(&mut p, CHANNEL0), 100);
    }

    #[test]
    fn mode3_square_wave() {
        let (mut p, clock, line) = pit();
        out(&mut p, COMMAND, cmd(0, LOHI, MODE_SQUARE));
        load(&mut p, CHANNEL0, 1000);
        assert!(p.out(0));
        clock.advance(ns(499));
        assert!(p.out(0));
        clock.advance(ns(500) - ns(499));
        assert!(!p.out(0));
        clock.advance(ns(1000) - ns(500));
        assert!(p.out(0));
        p.update();
        assert_eq!(edges(&line), 1);
    }

    #[test]
    fn mode0_fires_once() {
        let (mut p, clock, line) = pit();
        out(&mut p, COMMAND, cmd(0, LOHI, MODE_INTERRUPT_ON_TC));
        assert!(!p.out(0));
        load(&mut p, CHANNEL0, 5000);
        assert_eq!(p.ns_until_next_irq(), Some(ns(5000)));
        clock.advance(ns(4999));
        p.update();
        assert_eq!(edges(&line), 0);
        assert!(!p.out(0));
        clock.advance(ns(5000) - ns(4999));
        p.update();
        assert_eq!(edges(&line), 1);
        assert!(p.out(0));
        assert_eq!(p.ns_until_next_irq(), None);
        clock.advance(ns(1_000_000));
        p.update();
        assert_eq!(edges(&line), 1, "one shot only");
        // Rearming with a new count fires again.
        load(&mut p, CHANNEL0, 10);
        clock.advance(ns(10));
        p.update();
        assert_eq!(edges(&line), 2);
    }

    #[test]
    fn mode0_count_wraps_after_terminal_count() {
        let (mut p, clock, _) = pit();
        out(&mut p, COMMAND, cmd(0, LOHI, MODE_INTERRUPT_ON_TC));
        load(&mut p, CHANNEL0, 10);
        clock.advance(ns(12));
        assert_eq!(read16(&mut p, CHANNEL0), 0xFFFE);
    }

    #[test]
    fn count_of_zero_means_65536() {
        let (mut p, clock, line) = pit();
        out(&mut p, COMMAND, cmd(0, LOHI, MODE_RATE));
        load(&mut p, CHANNEL0, 0);
        clock.advance(ns(1));
        assert_eq!(read16(&mut p, CHANNEL0), 0xFFFF);
        clock.advance(ns(65_535) - ns(1));
        p.update();
        assert_eq!(edges(&line), 0);
        clock.advance(ns(65_536) - ns(65_535));
        p.update();
        assert_eq!(edges(&line), 1);
    }

    #[test]
    fn latch_holds_the_count_at_latch_time() {
        let (mut p, clock, _) = pit();
        out(&mut p, COMMAND, cmd(0, LOHI, MODE_RATE));
        load(&mut p, CHANNEL0, 10_000);
        clock.advance(ns(1234));
        out(&mut p, COMMAND, cmd(0, 0, 0));
        clock.advance(ns(5000));
        // A second latch before reading is ignored.
        out(&mut p, COMMAND, cmd(0, 0, 0));
        assert_eq!(read16(&mut p, CHANNEL0), 10_000 - 1234);
        // Unlatched again: the live count.
        let live = 10_000 - ns_to_ticks(ns(1234) + ns(5000));
        assert_eq!(u64::from(read16(&mut p, CHANNEL0)), live);
    }

    #[test]
    fn low_and_high_only_access_modes() {
        let (mut p, clock, _) = pit();
        out(&mut p, COMMAND, cmd(0, Access::Low as u8, MODE_RATE));
        out(&mut p, CHANNEL0, 200);
        clock.advance(ns(50));
        assert_eq!(inb(&mut p, CHANNEL0), 150);
        assert_eq!(inb(&mut p, CHANNEL0), 150);
        out(&mut p, COMMAND, cmd(0, Access::High as u8, MODE_RATE));
        out(&mut p, CHANNEL0, 0x02);
        clock.advance(ns(0x100));
        assert_eq!(inb(&mut p, CHANNEL0), 0x01);
    }

    #[test]
    fn read_back_latches_status_then_count() {
        let (mut p, clock, _) = pit();
        out(&mut p, COMMAND, cmd(0, LOHI, MODE_SQUARE));
        // Status right after the control word: OUT high, null count.
        out(
            &mut p,
            COMMAND,
            0xC0 | READ_BACK_NO_COUNT | 1 << READ_BACK_SELECT_SHIFT,
        );
        assert_eq!(inb(&mut p, CHANNEL0), STATUS_OUT | STATUS_NULL_COUNT | 0x36);
        load(&mut p, CHANNEL0, 1000);
        clock.advance(ns(600));
        out(&mut p, COMMAND, 0xC0 | 1 << READ_BACK_SELECT_SHIFT);
        clock.advance(ns(100));
        assert_eq!(
            inb(&mut p, CHANNEL0),
            0x36,
            "OUT low in the second half, count loaded"
        );
        assert_eq!(read16(&mut p, CHANNEL0), (1000 - 2 * 600 % 1000) as u16);
    }

    #[test]
    fn read_back_of_channel2_mode0_status() {
        let (mut p, _, _) = pit();
        out(
            &mut p,
            COMMAND,
            cmd(2, LOHI, MODE_INTERRUPT_ON_TC) | CMD_BCD,
        );
        out(
            &mut p,
            COMMAND,
            0xC0 | READ_BACK_NO_COUNT | 1 << (READ_BACK_SELECT_SHIFT + 2),
        );
        assert_eq!(inb(&mut p, CHANNEL2), STATUS_NULL_COUNT | 0x31);
    }

    #[test]
    fn channel2_out_through_port_b_as_linux_calibrates() {
        let (mut p, clock, line) = pit();
        // Gate high, speaker off; mode 0 with a 50 ms count.
        let b = inb(&mut p, PORT_B);
        out(&mut p, PORT_B, (b & !PORT_B_SPEAKER) | PORT_B_GATE2);
        out(&mut p, COMMAND, 0xB0);
        load(&mut p, CHANNEL2, 59_659);
        assert_eq!(inb(&mut p, PORT_B) & PORT_B_OUT2, 0);
        let mut polls = 0;
        while inb(&mut p, PORT_B) & PORT_B_OUT2 == 0 {
            clock.advance(1_000_000);
            polls += 1;
        }
        assert_eq!(polls, 50);
        assert_eq!(edges(&line), 0, "channel 2 has no IRQ");
    }

    #[test]
    fn channel2_gate_low_pauses_mode0() {
        let (mut p, clock, _) = pit();
        out(&mut p, COMMAND, cmd(2, LOHI, MODE_INTERRUPT_ON_TC));
        load(&mut p, CHANNEL2, 1000);
        clock.advance(ns(5000));
        assert_eq!(read16(&mut p, CHANNEL2), 1000, "gate low: not counting");
        out(&mut p, PORT_B, PORT_B_GATE2);
        clock.advance(ns(400));
        out(&mut p, PORT_B, 0);
        let held = read16(&mut p, CHANNEL2);
        assert_eq!(held, 600);
        clock.advance(ns(5000));
        assert_eq!(read16(&mut p, CHANNEL2), held);
        assert_eq!(inb(&mut p, PORT_B) & PORT_B_OUT2, 0);
        out(&mut p, PORT_B, PORT_B_GATE2);
        clock.advance(ns(600));
        assert_ne!(inb(&mut p, PORT_B) & PORT_B_OUT2, 0);
    }

    #[test]
    fn channel2_square_wave_restarts_on_gate() {
        let (mut p, clock, _) = pit();
        out(&mut p, PORT_B, PORT_B_GATE2 | PORT_B_SPEAKER);
        out(&mut p, COMMAND, cmd(2, LOHI, MODE_SQUARE));
        load(&mut p, CHANNEL2, 100);
        clock.advance(ns(60));
        assert_eq!(inb(&mut p, PORT_B) & PORT_B_OUT2, 0);
        out(&mut p, PORT_B, PORT_B_SPEAKER);
        assert_ne!(
            inb(&mut p, PORT_B) & PORT_B_OUT2,
            0,
            "gate low forces OUT high"
        );
        out(&mut p, PORT_B, PORT_B_GATE2 | PORT_B_SPEAKER);
        assert_eq!(read16(&mut p, CHANNEL2), 100);
    }

    #[test]
    fn port_b_reads_back_and_toggles_refresh() {
        let (mut p, _, _) = pit();
        out(&mut p, PORT_B, 0xFF);
        let a = inb(&mut p, PORT_B);
        let b = inb(&mut p, PORT_B);
        assert_eq!(a & PORT_B_WRITABLE, PORT_B_WRITABLE);
        assert_eq!((a ^ b) & PORT_B_REFRESH, PORT_B_REFRESH);
    }

    #[test]
    fn first_byte_of_a_mode0_count_stops_counting() {
        let (mut p, clock, line) = pit();
        out(&mut p, COMMAND, cmd(0, LOHI, MODE_INTERRUPT_ON_TC));
        load(&mut p, CHANNEL0, 100);
        clock.advance(ns(50));
        out(&mut p, CHANNEL0, 0x10);
        assert_eq!(p.ns_until_next_irq(), None);
        clock.advance(ns(100));
        p.update();
        assert_eq!(edges(&line), 0);
        out(&mut p, CHANNEL0, 0x00);
        assert_eq!(p.ns_until_next_irq(), Some(ns(0x10)));
    }

    #[test]
    fn reprogramming_disarms_channel0() {
        let (mut p, _, _) = pit();
        out(&mut p, COMMAND, cmd(0, LOHI, MODE_RATE));
        load(&mut p, CHANNEL0, 100);
        assert!(p.ns_until_next_irq().is_some());
        out(&mut p, COMMAND, cmd(0, LOHI, MODE_RATE));
        assert_eq!(p.ns_until_next_irq(), None);
    }
}
