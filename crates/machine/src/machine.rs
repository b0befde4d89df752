//! The assembled PC: RAM, bus and devices wired together, plus the entry
//! state the loader produced. Engines drive it through the methods here.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use x86::CpuState;

use crate::bus::{Bus, Buses, SharedDevice, Window};
use crate::clock::{Clock, HostClock};
use crate::devices::{
    acpi_pm, cmos, debug_exit, fw_cfg, hpet, i8042, ioapic, lapic, pci, pic, pit, port80, scratch,
    uart,
};
use crate::irq::{ChipHpetLines, ChipRegisters, IrqChip, IsaIrq, Part};
use crate::loader::{self, KernelFormat, LoadError};
use crate::marks::{MarkLog, MarkingWriter};
use crate::memory::{GuestMemory, MemoryError};
use crate::stop::{StopHandle, StopReason};

/// Default guest RAM: enough for Debian's i386 kernel and an initrd.
pub const DEFAULT_MEMORY_MIB: u64 = 256;

/// Input arriving from the console.
#[derive(Debug)]
pub enum ConsoleInput {
    /// Bytes typed by the user, for the UART's receive line.
    Bytes(Vec<u8>),
    /// The user pressed the quit sequence.
    Quit,
}

/// Errors assembling a machine.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// Guest RAM could not be created.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The kernel image was refused.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// No kernel was given.
    #[error("no kernel image given")]
    NoKernel,
}

/// Builds a [`Machine`] from a kernel image and options.
pub struct MachineBuilder {
    memory_mib: u64,
    kernel: Option<Vec<u8>>,
    raw: Option<(u64, Vec<u8>, CpuState)>,
    initrd: Option<Vec<u8>>,
    cmdline: String,
    console: Box<dyn Write + Send>,
    input: Option<Receiver<ConsoleInput>>,
    clock: Arc<dyn Clock>,
    mark_prefix: Option<String>,
}

impl Default for MachineBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl MachineBuilder {
    /// A builder with default RAM, stdout as the console and no input.
    pub fn new() -> Self {
        MachineBuilder {
            memory_mib: DEFAULT_MEMORY_MIB,
            kernel: None,
            raw: None,
            initrd: None,
            cmdline: String::new(),
            console: Box::new(std::io::stdout()),
            input: None,
            clock: HostClock::new(),
            mark_prefix: None,
        }
    }

    /// Guest RAM size in MiB.
    pub fn memory_mib(mut self, mib: u64) -> Self {
        self.memory_mib = mib;
        self
    }

    /// The kernel image (multiboot or bzImage).
    pub fn kernel(mut self, image: Vec<u8>) -> Self {
        self.kernel = Some(image);
        self
    }

    /// Bypasses the loaders: `bytes` are copied to guest physical `load_at`
    /// and the CPU starts in `entry`. For engine tests of short code snippets.
    pub fn raw_image(mut self, load_at: u64, bytes: Vec<u8>, entry: CpuState) -> Self {
        self.raw = Some((load_at, bytes, entry));
        self
    }

    /// An initial RAM disk (a multiboot module or the Linux initrd).
    pub fn initrd(mut self, image: Vec<u8>) -> Self {
        self.initrd = Some(image);
        self
    }

    /// The kernel command line.
    pub fn cmdline(mut self, cmdline: impl Into<String>) -> Self {
        self.cmdline = cmdline.into();
        self
    }

    /// Where the UART's transmitted bytes go.
    pub fn console(mut self, out: Box<dyn Write + Send>) -> Self {
        self.console = out;
        self
    }

    /// Where console input comes from.
    pub fn input(mut self, rx: Receiver<ConsoleInput>) -> Self {
        self.input = Some(rx);
        self
    }

    /// Console lines starting with `prefix` become marks that end a
    /// statistics phase (see [`crate::marks`]).
    pub fn mark_lines(mut self, prefix: impl Into<String>) -> Self {
        self.mark_prefix = Some(prefix.into());
        self
    }

    /// Assembles RAM, devices and bus, and loads the kernel.
    pub fn build(self) -> Result<Machine, MachineError> {
        let mut memory = GuestMemory::new(self.memory_mib.saturating_mul(1 << 20))?;
        let (format, entry, boot_summary, cmdline_addr) = match (self.raw, self.kernel) {
            (Some((at, bytes, entry)), _) => {
                memory.write(at, &bytes)?;
                let summary = vec![format!("raw image: {:#x} bytes at {at:#x}", bytes.len())];
                (None, entry, summary, 0)
            }
            (None, Some(kernel)) => {
                let loaded =
                    loader::load(&mut memory, &kernel, self.initrd.as_deref(), &self.cmdline)?;
                let at = loaded.cmdline_addr as u32;
                (Some(loaded.format), loaded.entry, loaded.summary, at)
            }
            (None, None) => return Err(MachineError::NoKernel),
        };
        let ram_bytes = memory.size();

        let stop = StopHandle::new();
        let lapic_window = Window::closed();
        let irq = Arc::new(Mutex::new(IrqChip::new(
            self.clock.clone(),
            lapic_window.clone(),
        )));
        let pit = Arc::new(Mutex::new(pit::Pit::new(
            self.clock.clone(),
            Box::new(IsaIrq::new(irq.clone(), 0)),
        )));
        let hpet = Arc::new(Mutex::new(hpet::Hpet::new(
            self.clock.clone(),
            Box::new(ChipHpetLines(irq.clone())),
        )));
        // Bumped by every POST code and console mark: an engine checks it
        // after each port I/O exit before it takes either log's lock.
        let markers = Arc::new(AtomicU64::new(0));
        let marks = Arc::new(Mutex::new(MarkLog::counting_into(markers.clone())));
        let console = match &self.mark_prefix {
            Some(prefix) => Box::new(MarkingWriter::new(self.console, prefix, marks.clone())),
            None => self.console,
        };
        let uart = Arc::new(Mutex::new(uart::Uart::new(
            console,
            Box::new(IsaIrq::new(irq.clone(), 4)),
        )));
        let part = |p| Arc::new(Mutex::new(ChipRegisters::new(irq.clone(), p)));
        let pic = part(Part::Pic);

        let mut bus = Buses::default();
        let attach = |bus: &mut Bus, first: u16, last: u16, dev: SharedDevice| {
            let len = u64::from(last - first) + 1;
            bus.insert(dev, u64::from(first), len)
                .expect("the PC's fixed port map has no overlaps");
        };
        attach(&mut bus.pio, pic::MASTER_CMD, pic::MASTER_DATA, pic.clone());
        attach(&mut bus.pio, pic::SLAVE_CMD, pic::SLAVE_DATA, pic.clone());
        attach(&mut bus.pio, pit::CHANNEL0, pit::COMMAND, pit.clone());
        attach(&mut bus.pio, pit::PORT_B, pit::PORT_B, pit.clone());
        attach(&mut bus.pio, uart::COM1, uart::COM1 + 7, uart.clone());
        let i8042 = Arc::new(Mutex::new(i8042::I8042::new(stop.clone())));
        attach(&mut bus.pio, i8042::DATA, i8042::DATA, i8042.clone());
        attach(&mut bus.pio, i8042::COMMAND, i8042::COMMAND, i8042);
        let rtc = cmos::Cmos::new(ram_bytes, Box::new(cmos::Cmos::host_time));
        attach(
            &mut bus.pio,
            cmos::INDEX,
            cmos::DATA,
            Arc::new(Mutex::new(rtc)),
        );
        let pm = Arc::new(Mutex::new(acpi_pm::AcpiPm::new(
            self.clock.clone(),
            Box::new(IsaIrq::new(irq.clone(), acpi_pm::SCI_IRQ)),
            stop.clone(),
        )));
        attach(
            &mut bus.pio,
            acpi_pm::BASE,
            acpi_pm::BASE + acpi_pm::SIZE - 1,
            pm.clone(),
        );
        let post = Arc::new(Mutex::new(
            port80::PostCode::new().counting_into(markers.clone()),
        ));
        attach(&mut bus.pio, port80::PORT, port80::PORT, post.clone());
        attach(
            &mut bus.pio,
            pci::CONFIG_ADDRESS,
            pci::CONFIG_DATA + 3,
            Arc::new(Mutex::new(pci::PciConfig::new())),
        );
        let fw_cfg = fw_cfg::FwCfg::new(&fw_cfg::Config {
            ram_bytes,
            cpus: 1,
            cmdline: self.cmdline.clone(),
            cmdline_addr,
            memory_map: loader::pc_memory_map(ram_bytes),
        });
        attach(
            &mut bus.pio,
            fw_cfg::SELECTOR,
            fw_cfg::DATA,
            Arc::new(Mutex::new(fw_cfg)),
        );
        let exit = debug_exit::DebugExit::new(stop.clone());
        attach(
            &mut bus.pio,
            debug_exit::PORT,
            debug_exit::PORT + 3,
            Arc::new(Mutex::new(exit)),
        );
        bus.mmio
            .insert(
                Arc::new(Mutex::new(scratch::Scratch::new())),
                scratch::BASE,
                scratch::SIZE,
            )
            .expect("the MMIO map's fixed devices do not overlap");
        bus.mmio
            .insert(part(Part::IoApic), ioapic::BASE, ioapic::SIZE)
            .expect("the MMIO map's fixed devices do not overlap");
        bus.mmio
            .insert(hpet.clone(), hpet::BASE, hpet::SIZE)
            .expect("the MMIO map's fixed devices do not overlap");
        bus.mmio
            .insert_window(part(Part::Lapic), lapic_window, lapic::SIZE);

        Ok(Machine {
            memory,
            bus,
            irq,
            pit,
            hpet,
            pm,
            uart,
            post,
            marks,
            markers,
            clock: self.clock,
            polled_deadline: None,
            marking: self.mark_prefix.is_some(),
            stop,
            input: self.input,
            format,
            entry,
            boot_summary,
            cmdline: self.cmdline,
        })
    }
}

/// A PC ready to run: what every engine drives.
pub struct Machine {
    /// Guest physical RAM.
    pub memory: GuestMemory,
    /// The port-I/O and MMIO buses.
    pub bus: Buses,
    /// The interrupt controllers (PIC, I/O APIC, local APIC).
    pub(crate) irq: Arc<Mutex<IrqChip>>,
    pit: Arc<Mutex<pit::Pit>>,
    hpet: Arc<Mutex<hpet::Hpet>>,
    pm: Arc<Mutex<acpi_pm::AcpiPm>>,
    uart: Arc<Mutex<uart::Uart>>,
    post: Arc<Mutex<port80::PostCode>>,
    marks: Arc<Mutex<MarkLog>>,
    /// POST codes and console marks since power-on, read without a lock.
    markers: Arc<AtomicU64>,
    /// The timed devices' clock.
    clock: Arc<dyn Clock>,
    /// The next timer event as of the last [`Machine::poll`], in ns.
    polled_deadline: Option<u64>,
    /// Console line marks were asked for (`--mark-lines`).
    marking: bool,
    stop: StopHandle,
    input: Option<Receiver<ConsoleInput>>,
    /// The boot protocol the kernel was loaded with (None for a raw image).
    pub format: Option<KernelFormat>,
    /// CPU state at the kernel's entry point.
    pub entry: CpuState,
    /// What the loader placed where, one line each.
    pub boot_summary: Vec<String>,
    /// The kernel command line.
    pub cmdline: String,
}

/// The ns from `now` to the next interrupt of the timed device `d`, with
/// `update` after bringing it up to `now`, under one lock.
fn next_irq<T>(
    d: &Mutex<T>,
    now: u64,
    update: bool,
    update_at: fn(&mut T, u64),
    next: fn(&T, u64) -> Option<u64>,
) -> Option<u64> {
    let mut d = d.lock().unwrap();
    if update {
        update_at(&mut d, now);
    }
    next(&d, now)
}

/// What [`Machine::poll`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Poll {
    /// Keep running.
    Continue,
    /// The user asked to quit.
    Quit,
}

/// The longest a byte the guest wrote to the console may wait in the
/// output buffer (a prompt has no newline to flush it).
const CONSOLE_LATENCY: Duration = Duration::from_millis(20);

impl Machine {
    /// An IN from the guest.
    pub fn io_in(&self, port: u16, data: &mut [u8]) {
        self.bus.pio.read(u64::from(port), data);
    }

    /// An OUT from the guest.
    pub fn io_out(&self, port: u16, data: &[u8]) {
        self.bus.pio.write(u64::from(port), data);
    }

    /// A guest read of guest-physical `addr`, which is not RAM.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        self.bus.mmio.read(addr, data);
    }

    /// A guest write to guest-physical `addr`, which is not RAM.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) {
        self.bus.mmio.write(addr, data);
    }

    /// The POST codes (phase markers) the guest wrote to port 0x80 after
    /// the first `seen`, oldest first, and how many it wrote in all (the
    /// next call's `seen`). See [`port80::PostCode::since`].
    pub fn post_codes_since(&self, seen: u64) -> (Vec<u8>, u64) {
        let post = self.post.lock().unwrap();
        (post.since(seen), post.writes())
    }

    /// POST codes written and console marks logged since power-on: when
    /// it has not moved, [`Self::post_codes_since`] and
    /// [`Self::line_marks_since`] have nothing new (and need not lock).
    pub fn markers_written(&self) -> u64 {
        self.markers.load(Ordering::Acquire)
    }

    /// Whether console lines mark phases (then POST codes do not: Linux
    /// writes port 0x80 as an I/O delay thousands of times).
    pub fn marks_lines(&self) -> bool {
        self.marking
    }

    /// The console line marks after the first `seen`, oldest first, and
    /// how many there were in all. See [`MarkLog::since`].
    pub fn line_marks_since(&self, seen: u64) -> (Vec<String>, u64) {
        self.marks.lock().unwrap().since(seen)
    }

    /// A device's stop request, if one is pending (checked after I/O exits).
    pub fn take_stop(&self) -> Option<StopReason> {
        self.stop.take()
    }

    /// Advances timers and drains console input; call between guest runs.
    pub fn poll(&mut self) -> Poll {
        // One clock reading for all (each device reading the clock itself
        // made ~10 readings an exit, ~35 ns each here), and each timed
        // device brought up to date and asked for its next interrupt under
        // one lock: the vCPU loop asks for the deadline right after
        // (`next_timer_event_since_poll`).
        let now = self.clock.now_ns();
        self.polled_deadline = self.timer_deadline(now, true);
        self.uart.lock().unwrap().flush_if_older(CONSOLE_LATENCY);
        let Some(rx) = &self.input else {
            return Poll::Continue;
        };
        while let Ok(msg) = rx.try_recv() {
            match msg {
                ConsoleInput::Bytes(b) => self.uart.lock().unwrap().enqueue_input(&b),
                ConsoleInput::Quit => return Poll::Quit,
            }
        }
        Poll::Continue
    }

    /// Blocks a halted vCPU until the next timer edge, console input, or
    /// `max`, whichever comes first; then polls.
    pub fn wait(&mut self, max: Duration) -> Poll {
        // The guest is idle: whatever it wrote is all there is for now.
        self.flush_console();
        let wait = self.next_timer_event().map_or(max, |t| max.min(t));
        if let Some(rx) = &self.input {
            match rx.recv_timeout(wait) {
                Ok(ConsoleInput::Bytes(b)) => self.uart.lock().unwrap().enqueue_input(&b),
                Ok(ConsoleInput::Quit) => return Poll::Quit,
                Err(RecvTimeoutError::Timeout) => {}
                // stdin closed: keep running without input.
                Err(RecvTimeoutError::Disconnected) => {
                    self.input = None;
                    std::thread::sleep(wait);
                }
            }
        } else {
            std::thread::sleep(wait);
        }
        self.poll()
    }

    /// Time until the next interrupt of a virtual timer (the PIT, the
    /// HPET, the PM timer's SCI or the local APIC timer), if one is armed.
    pub fn next_timer_event(&self) -> Option<Duration> {
        self.timer_deadline(self.clock.now_ns(), false)
            .map(Duration::from_nanos)
    }

    /// [`Machine::next_timer_event`] as of the last [`Machine::poll`]:
    /// the vCPU loop asks right after polling, and a clock reading (~35
    /// ns here) and four locks are a good part of a loop turn.
    pub fn next_timer_event_since_poll(&self) -> Option<Duration> {
        self.polled_deadline.map(Duration::from_nanos)
    }

    /// Nanoseconds from `now` to the next interrupt of a virtual timer,
    /// if one is armed; with `update`, each timed device is brought up to
    /// `now` first, under the same lock.
    fn timer_deadline(&self, now: u64, update: bool) -> Option<u64> {
        [
            next_irq(
                &self.pit,
                now,
                update,
                pit::Pit::update_at,
                pit::Pit::ns_until_next_irq_at,
            ),
            next_irq(
                &self.hpet,
                now,
                update,
                hpet::Hpet::update_at,
                hpet::Hpet::ns_until_next_irq_at,
            ),
            next_irq(
                &self.pm,
                now,
                update,
                acpi_pm::AcpiPm::update_at,
                acpi_pm::AcpiPm::ns_until_next_irq_at,
            ),
            next_irq(
                &self.irq,
                now,
                update,
                IrqChip::update_at,
                IrqChip::ns_until_next_irq_at,
            ),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// True when a halted vCPU could still be woken: a timer is armed or
    /// console input may arrive.
    pub fn can_wake(&self) -> bool {
        self.input.is_some() || self.next_timer_event().is_some()
    }

    /// The CPU's INTR input: the local APIC has a vector for it, or the
    /// 8259A has one and reaches the CPU (see [`IrqChip`]).
    pub fn interrupt_pending(&self) -> bool {
        self.irq.lock().unwrap().has_interrupt()
    }

    /// The INTA cycle: the vector to deliver now.
    pub fn acknowledge_interrupt(&self) -> u8 {
        self.irq.lock().unwrap().acknowledge()
    }

    /// IA32_APIC_BASE, which the local APIC holds.
    pub fn apic_base(&self) -> u64 {
        self.irq.lock().unwrap().lapic.base()
    }

    /// WRMSR to IA32_APIC_BASE of a value the MSR model accepted.
    pub fn set_apic_base(&self, value: u64) {
        self.irq.lock().unwrap().lapic.set_base(value);
    }

    /// Flushes the console; call on every exit path.
    pub fn flush_console(&self) {
        self.uart.lock().unwrap().flush();
    }
}

/// A 1 MiB machine whose image is one HLT, with its console discarded:
/// what unit tests around the machine start from.
#[cfg(test)]
pub(crate) fn test_machine() -> Machine {
    MachineBuilder::new()
        .memory_mib(1)
        .raw_image(0x1000, vec![0xF4], CpuState::default())
        .console(Box::new(std::io::sink()))
        .build()
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        test_machine()
    }

    #[test]
    fn the_scratch_device_answers_on_the_mmio_bus() {
        let m = machine();
        let mut b = [0u8; 4];
        m.mmio_read(scratch::BASE + scratch::ID, &mut b);
        assert_eq!(&b, b"popk");
        m.mmio_write(scratch::BASE + scratch::SCRATCH, &0xC0FFEEu32.to_le_bytes());
        m.mmio_read(scratch::BASE + scratch::SCRATCH, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0xC0FFEE);
        m.mmio_read(scratch::BASE + scratch::SIZE, &mut b);
        assert_eq!(b, [0xFF; 4], "past the device the bus floats");
        assert_eq!(m.bus.mmio.unclaimed(), 1);
    }

    #[test]
    fn post_codes_are_read_back_through_the_machine() {
        let m = machine();
        m.io_out(port80::PORT, &[1]);
        m.io_out(port80::PORT, &[2]);
        let (codes, seen) = m.post_codes_since(0);
        assert_eq!((codes, seen), (vec![1, 2], 2));
        m.io_out(port80::PORT, &[3]);
        assert_eq!(m.post_codes_since(seen), (vec![3], 3));
    }

    #[test]
    fn the_hpet_and_the_pm_block_answer_where_the_firmware_tables_say() {
        let m = machine();
        let mut b = [0u8; 4];
        m.mmio_read(hpet::BASE + hpet::CAPABILITIES, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x8086_A201);
        // PM1_CNT reads SCI_EN: always in ACPI mode.
        let mut w = [0u8; 2];
        m.io_in(acpi_pm::PM1A_CNT, &mut w);
        assert_eq!(u16::from_le_bytes(w), acpi_pm::control::SCI_EN);
        assert_eq!(m.bus.pio.unclaimed() + m.bus.mmio.unclaimed(), 0);
    }

    #[test]
    fn an_armed_hpet_timer_is_a_timer_event() {
        let m = machine();
        assert_eq!(m.next_timer_event(), None);
        let cfg = hpet::TIMERS + 2 * hpet::TIMER_STRIDE + hpet::TIMER_CONFIG;
        let route = 20 << hpet::timer::ROUTE_SHIFT;
        let on = (hpet::timer::INT_ENABLE | route) as u32;
        m.mmio_write(hpet::BASE + cfg, &on.to_le_bytes());
        let cmp = hpet::TIMERS + 2 * hpet::TIMER_STRIDE + hpet::TIMER_COMPARATOR;
        m.mmio_write(hpet::BASE + cmp, &1_000_000u64.to_le_bytes());
        m.mmio_write(hpet::BASE + hpet::CONFIG, &[hpet::config::ENABLE as u8]);
        let next = m
            .next_timer_event()
            .expect("the HPET's match is a deadline");
        assert!(next <= Duration::from_millis(10), "{next:?}");
    }

    #[test]
    fn an_s5_write_asks_for_a_power_off() {
        let m = machine();
        let s5 = acpi_pm::S5_SLEEP_TYPE << acpi_pm::control::SLP_TYP_SHIFT;
        m.io_out(
            acpi_pm::PM1A_CNT,
            &(s5 | acpi_pm::control::SLP_EN).to_le_bytes(),
        );
        assert_eq!(m.take_stop(), Some(StopReason::PowerOff));
    }

    #[test]
    fn ports_and_mmio_are_separate_address_spaces() {
        let m = machine();
        let mut b = [0u8; 1];
        // COM1's scratch register on the port bus, nothing at 0x3FF on MMIO.
        m.io_out(uart::COM1 + 7, &[0x5A]);
        m.io_in(uart::COM1 + 7, &mut b);
        assert_eq!(b[0], 0x5A);
        m.mmio_read(u64::from(uart::COM1 + 7), &mut b);
        assert_eq!(b[0], 0xFF);
        assert_eq!(m.bus.pio.unclaimed(), 0);
    }
}
