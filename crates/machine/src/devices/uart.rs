//! 16550A UART (COM1 at 0x3F8, IRQ 4).
//!
//! Transmission is instantaneous (THR is always empty again after a write)
//! and the receive FIFO is unbounded, so console input is never overrun. The
//! interrupt line is a level: high while an enabled condition holds.
use std::collections::VecDeque;
use std::io::Write;

use crate::irq::IrqLine;
use crate::BusDevice;

/// COM1 base port.
pub const COM1: u16 = 0x3F8;

/// Receive buffer (read) / transmit holding (write); divisor low byte with DLAB.
pub const RBR_THR: u16 = 0;
/// Interrupt enable; divisor high byte with DLAB.
pub const IER: u16 = 1;
/// Interrupt identification (read) / FIFO control (write).
pub const IIR_FCR: u16 = 2;
/// Line control.
pub const LCR: u16 = 3;
/// Modem control.
pub const MCR: u16 = 4;
/// Line status.
pub const LSR: u16 = 5;
/// Modem status.
pub const MSR: u16 = 6;
/// Scratch.
pub const SCR: u16 = 7;

/// IER: received data available.
pub const IER_RDA: u8 = 0x01;
/// IER: transmit holding register empty.
pub const IER_THRE: u8 = 0x02;
/// IER: receiver line status.
pub const IER_RLS: u8 = 0x04;
/// IER: modem status.
pub const IER_MS: u8 = 0x08;
/// IER bits that exist on a 16550A.
const IER_MASK: u8 = 0x0F;

/// IIR: no interrupt pending.
pub const IIR_NONE: u8 = 0x01;
/// IIR: modem status changed.
pub const IIR_MODEM_STATUS: u8 = 0x00;
/// IIR: transmit holding register empty.
pub const IIR_THRE: u8 = 0x02;
/// IIR: received data reached the trigger level.
pub const IIR_RDA: u8 = 0x04;
/// IIR: receiver line status.
pub const IIR_RLS: u8 = 0x06;
/// IIR: data below the trigger level is waiting (character timeout).
pub const IIR_TIMEOUT: u8 = 0x0C;
/// IIR: FIFOs enabled.
pub const IIR_FIFO_ENABLED: u8 = 0xC0;
/// IIR: the interrupt-identification bits.
pub const IIR_ID_MASK: u8 = 0x0F;

/// FCR: enable the FIFOs.
pub const FCR_ENABLE: u8 = 0x01;
/// FCR: clear the receive FIFO.
pub const FCR_CLEAR_RX: u8 = 0x02;
/// FCR: clear the transmit FIFO.
pub const FCR_CLEAR_TX: u8 = 0x04;
/// FCR: receive trigger level field.
const FCR_TRIGGER_MASK: u8 = 0xC0;
const FCR_TRIGGER_SHIFT: u8 = 6;
/// Receive trigger levels selected by FCR bits 7:6.
const RX_TRIGGER: [usize; 4] = [1, 4, 8, 14];

/// LCR: divisor latch access.
pub const LCR_DLAB: u8 = 0x80;

/// MCR: data terminal ready.
pub const MCR_DTR: u8 = 0x01;
/// MCR: request to send.
pub const MCR_RTS: u8 = 0x02;
/// MCR: OUT1.
pub const MCR_OUT1: u8 = 0x04;
/// MCR: OUT2 (gates the IRQ on a PC card; not modelled, as in QEMU).
pub const MCR_OUT2: u8 = 0x08;
/// MCR: loopback.
pub const MCR_LOOP: u8 = 0x10;
/// MCR bits that exist on a 16550A.
const MCR_MASK: u8 = 0x1F;

/// LSR: data ready.
pub const LSR_DR: u8 = 0x01;
/// LSR: transmit holding register empty.
pub const LSR_THRE: u8 = 0x20;
/// LSR: transmitter empty.
pub const LSR_TEMT: u8 = 0x40;

/// MSR: clear-to-send changed.
pub const MSR_DCTS: u8 = 0x01;
/// MSR: data-set-ready changed.
pub const MSR_DDSR: u8 = 0x02;
/// MSR: ring indicator went inactive.
pub const MSR_TERI: u8 = 0x04;
/// MSR: carrier detect changed.
pub const MSR_DDCD: u8 = 0x08;
/// MSR: clear to send.
pub const MSR_CTS: u8 = 0x10;
/// MSR: data set ready.
pub const MSR_DSR: u8 = 0x20;
/// MSR: ring indicator.
pub const MSR_RI: u8 = 0x40;
/// MSR: data carrier detect.
pub const MSR_DCD: u8 = 0x80;
/// MSR: the change bits.
pub const MSR_DELTA_MASK: u8 = 0x0F;

/// The modem lines a connected console presents: carrier, ready, clear to send.
const MSR_CONNECTED: u8 = MSR_DCD | MSR_DSR | MSR_CTS;
/// Divisor at power-on: 9600 baud from the 1.8432 MHz crystal.
const DEFAULT_DIVISOR: u16 = 12;

/// A 16550A.
pub struct Uart {
    out: Box<dyn Write + Send>,
    irq: Box<dyn IrqLine>,
    irq_level: bool,
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    divisor: u16,
    fifo_enabled: bool,
    rx_trigger: usize,
    rx: VecDeque<u8>,
    last_rx: u8,
    /// The THRE interrupt condition: set when THR empties or THRE interrupts
    /// are enabled while it is empty, cleared by an IIR read that reports it
    /// or by writing THR.
    thr_ipending: bool,
    /// When the oldest byte still in `out`'s buffer was transmitted.
    unflushed_since: Option<std::time::Instant>,
    msr_delta: u8,
}

impl Uart {
    /// A UART writing transmitted bytes to `out` and raising `irq`.
    pub fn new(out: Box<dyn Write + Send>, irq: Box<dyn IrqLine>) -> Self {
        Uart {
            out,
            irq,
            irq_level: false,
            ier: 0,
            lcr: 0,
            mcr: 0,
            scr: 0,
            divisor: DEFAULT_DIVISOR,
            fifo_enabled: false,
            rx_trigger: RX_TRIGGER[0],
            rx: VecDeque::new(),
            last_rx: 0,
            thr_ipending: false,
            unflushed_since: None,
            msr_delta: 0,
        }
    }

    /// Bytes arriving on the receive line (from the console's stdin).
    pub fn enqueue_input(&mut self, bytes: &[u8]) {
        // In loopback the receiver hears only the transmitter.
        if self.mcr & MCR_LOOP == 0 {
            self.rx.extend(bytes);
            self.update_irq();
        }
    }

    /// Flushes the console backend.
    pub fn flush(&mut self) {
        self.unflushed_since = None;
        if let Err(e) = self.out.flush() {
            tracing::debug!(%e, "uart: console flush failed");
        }
    }

    /// Flushes the console if a byte has waited in its buffer for `age` or
    /// longer: a prompt ends without a newline, and must still be seen.
    pub fn flush_if_older(&mut self, age: std::time::Duration) {
        if self.unflushed_since.is_some_and(|t| t.elapsed() >= age) {
            self.flush();
        }
    }

    /// The baud-rate divisor the guest programmed.
    pub fn divisor(&self) -> u16 {
        self.divisor
    }

    fn dlab(&self) -> bool {
        self.lcr & LCR_DLAB != 0
    }

    fn transmit(&mut self, byte: u8) {
        if self.mcr & MCR_LOOP != 0 {
            self.rx.push_back(byte);
        } else {
            // A console that went away must not stop the guest.
            let result = self.out.write_all(&[byte]).and_then(|()| {
                if byte == b'\n' {
                    self.unflushed_since = None;
                    self.out.flush()
                } else {
                    self.unflushed_since
                        .get_or_insert_with(std::time::Instant::now);
                    Ok(())
                }
            });
            if let Err(e) = result {
                tracing::debug!(%e, "uart: console write failed");
            }
        }
        // The byte is gone at once, so THR is empty again.
        self.thr_ipending = true;
    }

    fn lsr(&self) -> u8 {
        let dr = if self.rx.is_empty() { 0 } else { LSR_DR };
        dr | LSR_THRE | LSR_TEMT
    }

    /// The modem status lines, without the change bits.
    fn modem_lines(&self) -> u8 {
        if self.mcr & MCR_LOOP == 0 {
            return MSR_CONNECTED;
        }
        // Loopback wires the modem outputs back to the inputs.
        let wire = |out: u8, input: u8| if self.mcr & out != 0 { input } else { 0 };
        wire(MCR_RTS, MSR_CTS)
            | wire(MCR_DTR, MSR_DSR)
            | wire(MCR_OUT1, MSR_RI)
            | wire(MCR_OUT2, MSR_DCD)
    }

    fn set_mcr(&mut self, value: u8) {
        let before = self.modem_lines();
        self.mcr = value & MCR_MASK;
        let after = self.modem_lines();
        let changed = before ^ after;
        let delta = |line: u8, bit: u8| if changed & line != 0 { bit } else { 0 };
        self.msr_delta |=
            delta(MSR_CTS, MSR_DCTS) | delta(MSR_DSR, MSR_DDSR) | delta(MSR_DCD, MSR_DDCD);
        if before & MSR_RI != 0 && after & MSR_RI == 0 {
            self.msr_delta |= MSR_TERI;
        }
    }

    /// The highest-priority pending interrupt, as IIR bits 3:0.
    fn interrupt_id(&self) -> u8 {
        if self.ier & IER_RDA != 0 && !self.rx.is_empty() {
            if self.fifo_enabled && self.rx.len() < self.rx_trigger {
                IIR_TIMEOUT
            } else {
                IIR_RDA
            }
        } else if self.ier & IER_THRE != 0 && self.thr_ipending {
            IIR_THRE
        } else if self.ier & IER_MS != 0 && self.msr_delta != 0 {
            IIR_MODEM_STATUS
        } else {
            IIR_NONE
        }
    }

    fn update_irq(&mut self) {
        let level = self.interrupt_id() != IIR_NONE;
        if level != self.irq_level {
            self.irq_level = level;
            self.irq.set_level(level);
        }
    }

    fn read_reg(&mut self, offset: u16) -> u8 {
        match offset {
            RBR_THR if self.dlab() => self.divisor.to_le_bytes()[0],
            RBR_THR => {
                if let Some(byte) = self.rx.pop_front() {
                    self.last_rx = byte;
                }
                self.last_rx
            }
            IER if self.dlab() => self.divisor.to_le_bytes()[1],
            IER => self.ier,
            IIR_FCR => {
                let id = self.interrupt_id();
                if id == IIR_THRE {
                    self.thr_ipending = false;
                }
                let fifo = if self.fifo_enabled {
                    IIR_FIFO_ENABLED
                } else {
                    0
                };
                fifo | id
            }
            LCR => self.lcr,
            MCR => self.mcr,
            LSR => self.lsr(),
            MSR => self.modem_lines() | std::mem::take(&mut self.msr_delta),
            SCR => self.scr,
            _ => 0xFF,
        }
    }

    fn write_reg(&mut self, offset: u16, value: u8) {
        match offset {
            RBR_THR if self.dlab() => {
                self.divisor = u16::from_le_bytes([value, self.divisor.to_le_bytes()[1]]);
            }
            RBR_THR => {
                self.thr_ipending = false;
                self.transmit(value);
            }
            IER if self.dlab() => {
                self.divisor = u16::from_le_bytes([self.divisor.to_le_bytes()[0], value]);
            }
            IER => {
                let enabled = value & !self.ier;
                self.ier = value & IER_MASK;
                // Enabling THRE interrupts with THR empty interrupts at once.
                if enabled & IER_THRE != 0 && self.lsr() & LSR_THRE != 0 {
                    self.thr_ipending = true;
                }
            }
            IIR_FCR => {
                let enable = value & FCR_ENABLE != 0;
                // Switching the FIFOs on or off empties them.
                if value & FCR_CLEAR_RX != 0 || enable != self.fifo_enabled {
                    self.rx.clear();
                }
                self.fifo_enabled = enable;
                let level = (value & FCR_TRIGGER_MASK) >> FCR_TRIGGER_SHIFT;
                self.rx_trigger = RX_TRIGGER[usize::from(level)];
                // FCR_CLEAR_TX: the transmit FIFO is always empty.
            }
            LCR => self.lcr = value,
            MCR => self.set_mcr(value),
            SCR => self.scr = value,
            // LSR and MSR are read-only (writes are factory test modes).
            _ => {}
        }
    }
}

/// The register at `offset` into the UART's eight ports, if there is one.
fn register(offset: u64) -> Option<u16> {
    u16::try_from(offset).ok().filter(|&r| r <= SCR)
}

impl BusDevice for Uart {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        // A wide access is a run of byte cycles on consecutive registers.
        for (o, byte) in (offset..).zip(data.iter_mut()) {
            *byte = register(o).map_or(0xFF, |r| self.read_reg(r));
        }
        self.update_irq();
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        for (o, &byte) in (offset..).zip(data) {
            if let Some(r) = register(o) {
                self.write_reg(r, byte);
            }
        }
        self.update_irq();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::irq::TestLine;

    /// A console backend the test can inspect.
    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        flushes: Arc<Mutex<u32>>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            *self.flushes.lock().unwrap() += 1;
            Ok(())
        }
    }

    fn uart() -> (Uart, Sink, TestLine) {
        let sink = Sink::default();
        let line = TestLine::default();
        let u = Uart::new(Box::new(sink.clone()), Box::new(line.clone()));
        (u, sink, line)
    }

    fn out(u: &mut Uart, offset: u16, v: u8) {
        u.write(u64::from(COM1), u64::from(offset), &[v]);
    }

    fn inb(u: &mut Uart, offset: u16) -> u8 {
        let mut b = [0u8; 1];
        u.read(u64::from(COM1), u64::from(offset), &mut b);
        b[0]
    }

    fn level(line: &TestLine) -> bool {
        *line.level.lock().unwrap()
    }

    #[test]
    fn transmitted_bytes_reach_the_backend() {
        let (mut u, sink, _) = uart();
        for &b in b"hi\n" {
            out(&mut u, RBR_THR, b);
        }
        assert_eq!(sink.bytes.lock().unwrap().as_slice(), b"hi\n");
        assert_eq!(*sink.flushes.lock().unwrap(), 1, "flushed at the newline");
        u.flush();
        assert_eq!(*sink.flushes.lock().unwrap(), 2);
    }

    #[test]
    fn a_prompt_without_a_newline_is_flushed_once_it_is_old_enough() {
        let (mut u, sink, _) = uart();
        for &b in b"/ # " {
            out(&mut u, RBR_THR, b);
        }
        u.flush_if_older(std::time::Duration::from_secs(60));
        assert_eq!(*sink.flushes.lock().unwrap(), 0, "too young");
        std::thread::sleep(std::time::Duration::from_millis(2));
        u.flush_if_older(std::time::Duration::from_millis(1));
        assert_eq!(*sink.flushes.lock().unwrap(), 1);
        u.flush_if_older(std::time::Duration::ZERO);
        assert_eq!(*sink.flushes.lock().unwrap(), 1, "nothing left to flush");
    }

    #[test]
    fn dlab_switches_to_the_divisor_latch() {
        let (mut u, sink, _) = uart();
        out(&mut u, IER, IER_RDA);
        out(&mut u, LCR, LCR_DLAB | 0x03);
        out(&mut u, RBR_THR, 0x01);
        out(&mut u, IER, 0x00);
        assert_eq!(inb(&mut u, RBR_THR), 0x01);
        assert_eq!(inb(&mut u, IER), 0x00);
        assert_eq!(u.divisor(), 1);
        out(&mut u, LCR, 0x03);
        assert_eq!(inb(&mut u, LCR), 0x03);
        assert_eq!(inb(&mut u, IER), IER_RDA, "IER untouched by divisor writes");
        assert!(sink.bytes.lock().unwrap().is_empty());
    }

    #[test]
    fn line_status_bits() {
        let (mut u, _, _) = uart();
        assert_eq!(inb(&mut u, LSR), LSR_THRE | LSR_TEMT);
        u.enqueue_input(b"x");
        assert_eq!(inb(&mut u, LSR), LSR_DR | LSR_THRE | LSR_TEMT);
        out(&mut u, RBR_THR, b'y');
        assert_eq!(
            inb(&mut u, LSR) & (LSR_THRE | LSR_TEMT),
            LSR_THRE | LSR_TEMT
        );
    }

    #[test]
    fn received_bytes_are_read_in_order() {
        let (mut u, _, _) = uart();
        u.enqueue_input(b"ab");
        assert_eq!(inb(&mut u, RBR_THR), b'a');
        assert_eq!(inb(&mut u, LSR) & LSR_DR, LSR_DR);
        assert_eq!(inb(&mut u, RBR_THR), b'b');
        assert_eq!(inb(&mut u, LSR) & LSR_DR, 0);
    }

    #[test]
    fn received_data_interrupt_holds_until_the_fifo_is_drained() {
        let (mut u, _, line) = uart();
        u.enqueue_input(b"a");
        assert!(!level(&line), "not enabled yet");
        out(&mut u, IER, IER_RDA);
        assert!(level(&line));
        assert_eq!(inb(&mut u, IIR_FCR), IIR_RDA);
        assert!(level(&line), "reading IIR does not clear RDA");
        assert_eq!(inb(&mut u, RBR_THR), b'a');
        assert!(!level(&line));
        assert_eq!(inb(&mut u, IIR_FCR), IIR_NONE);
        u.enqueue_input(b"b");
        assert!(level(&line));
        assert_eq!(*line.edges.lock().unwrap(), 2);
    }

    #[test]
    fn fifo_mode_reports_timeout_below_the_trigger_level() {
        let (mut u, _, _) = uart();
        out(&mut u, IIR_FCR, FCR_ENABLE | 0x40); // trigger at 4
        out(&mut u, IER, IER_RDA);
        u.enqueue_input(b"abc");
        assert_eq!(inb(&mut u, IIR_FCR), IIR_FIFO_ENABLED | IIR_TIMEOUT);
        u.enqueue_input(b"d");
        assert_eq!(inb(&mut u, IIR_FCR), IIR_FIFO_ENABLED | IIR_RDA);
        out(&mut u, IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX);
        assert_eq!(inb(&mut u, LSR) & LSR_DR, 0);
        assert_eq!(inb(&mut u, IIR_FCR), IIR_FIFO_ENABLED | IIR_NONE);
    }

    #[test]
    fn thre_interrupt_raised_on_enable_and_cleared_by_reading_iir() {
        let (mut u, _, line) = uart();
        assert_eq!(inb(&mut u, IIR_FCR), IIR_NONE);
        out(&mut u, IER, IER_THRE);
        assert!(level(&line));
        assert_eq!(inb(&mut u, IIR_FCR), IIR_THRE);
        assert!(!level(&line));
        assert_eq!(inb(&mut u, IIR_FCR), IIR_NONE);
        // Each transmitted byte empties THR again.
        out(&mut u, RBR_THR, b'x');
        assert!(level(&line));
        out(&mut u, IER, 0);
        assert!(!level(&line));
    }

    #[test]
    fn received_data_outranks_thre() {
        let (mut u, _, _) = uart();
        out(&mut u, IER, IER_RDA | IER_THRE);
        u.enqueue_input(b"z");
        assert_eq!(inb(&mut u, IIR_FCR), IIR_RDA);
        inb(&mut u, RBR_THR);
        assert_eq!(inb(&mut u, IIR_FCR), IIR_THRE);
        assert_eq!(inb(&mut u, IIR_FCR), IIR_NONE);
    }

    #[test]
    fn scratch_register_round_trips() {
        let (mut u, _, _) = uart();
        out(&mut u, SCR, 0x5A);
        assert_eq!(inb(&mut u, SCR), 0x5A);
    }

    #[test]
    fn loopback_echoes_transmit_and_modem_lines() {
        let (mut u, sink, _) = uart();
        assert_eq!(inb(&mut u, MSR), MSR_CONNECTED);
        out(&mut u, MCR, MCR_LOOP);
        // Leaving the connected state shows up as change bits, once.
        assert_eq!(inb(&mut u, MSR), MSR_DCTS | MSR_DDSR | MSR_DDCD);
        assert_eq!(inb(&mut u, MSR), 0);
        out(&mut u, MCR, MCR_LOOP | MCR_RTS | MCR_OUT2);
        assert_eq!(inb(&mut u, MSR) & !MSR_DELTA_MASK, MSR_CTS | MSR_DCD);
        out(&mut u, RBR_THR, 0xA5);
        assert_eq!(inb(&mut u, RBR_THR), 0xA5);
        u.enqueue_input(b"lost");
        assert_eq!(inb(&mut u, LSR) & LSR_DR, 0);
        assert!(sink.bytes.lock().unwrap().is_empty());
    }

    #[test]
    fn modem_status_interrupt_until_msr_is_read() {
        let (mut u, _, line) = uart();
        out(&mut u, MCR, MCR_LOOP);
        out(&mut u, IER, IER_MS);
        assert!(level(&line));
        assert_eq!(inb(&mut u, IIR_FCR), IIR_MODEM_STATUS);
        inb(&mut u, MSR);
        assert!(!level(&line));
    }

    #[test]
    fn iir_id_bits_are_within_the_mask() {
        let (mut u, _, _) = uart();
        out(&mut u, IIR_FCR, FCR_ENABLE);
        assert_eq!(inb(&mut u, IIR_FCR) & !IIR_ID_MASK, IIR_FIFO_ENABLED);
        out(&mut u, IIR_FCR, 0);
        assert_eq!(inb(&mut u, IIR_FCR) & !IIR_ID_MASK, 0);
    }
}
