//! Local APIC (xAPIC): the CPU's own interrupt controller, memory-mapped at
//! the address its base MSR (IA32_APIC_BASE) names, 0xFEE00000 after reset.
//!
//! A plain state machine, in the register layout of the Intel SDM vol. 3
//! chapter 10: ID, version, TPR/APR/PPR, EOI, LDR/DFR, the spurious vector
//! register, the 256-bit ISR, TMR and IRR, ESR, ICR, the six local vector
//! table entries and the timer. It sits in the machine's interrupt routing
//! (`crate::irq::IrqChip`) with the 8259A pair and the I/O APIC: the I/O
//! APIC sends it [`Message`]s, the PIC reaches it on LINT0, and the vCPU
//! asks it for the next vector. One CPU only: an IPI reaches this APIC or
//! nobody.
//!
//! The timer counts at 1 GHz before its divider (as QEMU's and KVM's do) and
//! is not ticked: it remembers when its count next reaches zero, on the
//! machine's clock, and the count is derived from that on demand, as the
//! PIT does. It has its one-shot and periodic modes; TSC-deadline mode is
//! not offered (CPUID.1:ECX.TSC_DEADLINE is clear), so LVT timer bit 18 is
//! reserved.
//!
//! Where the SDM and QEMU differ, popek does what QEMU does, QEMU being the
//! reference its test guests check against: software-disabling the APIC
//! (SVR bit 8) does not force the LVT mask bits on, so the PIC keeps
//! reaching the CPU through an unmasked LINT0 in ExtINT mode.

use std::sync::Arc;

use x86::msr::apic_base;

use crate::bus::Window;
use crate::clock::Clock;

/// Size of the register page.
pub const SIZE: u64 = 0x1000;

/// Local APIC ID (bits 31:24).
pub const ID: u64 = 0x020;
/// Version and max LVT entry (read-only).
pub const VERSION: u64 = 0x030;
/// Task priority.
pub const TPR: u64 = 0x080;
/// Arbitration priority (read-only).
pub const APR: u64 = 0x090;
/// Processor priority (read-only).
pub const PPR: u64 = 0x0A0;
/// End of interrupt (write-only).
pub const EOI: u64 = 0x0B0;
/// Remote read (obsolete; reads 0).
pub const RRD: u64 = 0x0C0;
/// Logical destination (bits 31:24).
pub const LDR: u64 = 0x0D0;
/// Destination format (model in bits 31:28).
pub const DFR: u64 = 0x0E0;
/// Spurious interrupt vector and software enable.
pub const SVR: u64 = 0x0F0;
/// In-service register, eight 32-bit registers 16 bytes apart.
pub const ISR: u64 = 0x100;
/// Trigger mode register (1 = level), eight registers.
pub const TMR: u64 = 0x180;
/// Interrupt request register, eight registers.
pub const IRR: u64 = 0x200;
/// Error status.
pub const ESR: u64 = 0x280;
/// Interrupt command, low half: writing it sends the IPI.
pub const ICR_LOW: u64 = 0x300;
/// Interrupt command, high half: the destination.
pub const ICR_HIGH: u64 = 0x310;
/// LVT: the timer.
pub const LVT_TIMER: u64 = 0x320;
/// LVT: thermal sensor.
pub const LVT_THERMAL: u64 = 0x330;
/// LVT: performance-monitoring counters.
pub const LVT_PERF: u64 = 0x340;
/// LVT: the LINT0 pin (the 8259A's INTR on a PC).
pub const LVT_LINT0: u64 = 0x350;
/// LVT: the LINT1 pin (NMI on a PC).
pub const LVT_LINT1: u64 = 0x360;
/// LVT: internal errors (an ESR bit newly set).
pub const LVT_ERROR: u64 = 0x370;
/// Timer initial count.
pub const TIMER_INITIAL: u64 = 0x380;
/// Timer current count (read-only).
pub const TIMER_CURRENT: u64 = 0x390;
/// Timer divide configuration.
pub const TIMER_DIVIDE: u64 = 0x3E0;

/// The version register: an integrated APIC (0x14, as QEMU's) whose last
/// LVT entry is number 5 (timer, thermal, performance, LINT0, LINT1, error;
/// no CMCI), without EOI-broadcast suppression.
pub const VERSION_VALUE: u32 = 0x0005_0014;

/// Spurious interrupt vector register bits.
pub mod svr {
    /// The vector INTA returns when nothing is left to deliver.
    pub const VECTOR: u32 = 0xFF;
    /// APIC software enable.
    pub const ENABLE: u32 = 1 << 8;
    /// Bits a write keeps (focus checking and EOI-broadcast suppression
    /// are not offered).
    pub const WRITABLE: u32 = VECTOR | ENABLE;
    /// After reset: software-disabled, spurious vector 0xFF.
    pub const RESET: u32 = 0xFF;
}

/// Local vector table entry bits.
pub mod lvt {
    /// The vector of a fixed-mode interrupt.
    pub const VECTOR: u32 = 0xFF;
    /// Delivery mode (bits 10:8, values in [`super::delivery`]).
    pub const MODE: u32 = 0x700;
    /// Bit position of the delivery mode.
    pub const MODE_SHIFT: u32 = 8;
    /// Delivery status: send pending (read-only; always idle here).
    pub const PENDING: u32 = 1 << 12;
    /// Input pin polarity: active low.
    pub const POLARITY: u32 = 1 << 13;
    /// Remote IRR (read-only; LINT pins in fixed level mode only).
    pub const REMOTE_IRR: u32 = 1 << 14;
    /// Level-triggered (LINT pins).
    pub const LEVEL: u32 = 1 << 15;
    /// Masked.
    pub const MASKED: u32 = 1 << 16;
    /// Timer: periodic (else one-shot).
    pub const PERIODIC: u32 = 1 << 17;
    /// After reset: masked, everything else zero.
    pub const RESET: u32 = MASKED;
}

/// Delivery modes of LVT entries, ICR and I/O APIC redirection entries.
pub mod delivery {
    /// The vector given.
    pub const FIXED: u8 = 0;
    /// The vector given, to the lowest-priority CPU of the destination.
    pub const LOWEST: u8 = 1;
    /// A system-management interrupt.
    pub const SMI: u8 = 2;
    /// A non-maskable interrupt.
    pub const NMI: u8 = 4;
    /// INIT (reset the target CPU, or with level de-assert, nothing).
    pub const INIT: u8 = 5;
    /// Start-up IPI to a CPU waiting for one.
    pub const STARTUP: u8 = 6;
    /// The vector comes from an external 8259A through an INTA cycle.
    pub const EXTINT: u8 = 7;
}

/// Interrupt command register bits.
pub mod icr {
    /// Delivery mode (bits 10:8).
    pub const MODE: u64 = 0x700;
    /// Logical destination mode (else physical).
    pub const LOGICAL: u64 = 1 << 11;
    /// Delivery status (read-only; always idle: an IPI arrives at once).
    pub const PENDING: u64 = 1 << 12;
    /// Level: assert (else de-assert, meaningful for INIT only).
    pub const ASSERT: u64 = 1 << 14;
    /// Trigger mode: level.
    pub const LEVEL: u64 = 1 << 15;
    /// Destination shorthand (bits 19:18).
    pub const SHORTHAND_SHIFT: u32 = 18;
    /// Shorthand: the destination field says who.
    pub const NO_SHORTHAND: u64 = 0;
    /// Shorthand: this APIC.
    pub const SELF: u64 = 1;
    /// Shorthand: every APIC, this one included.
    pub const ALL: u64 = 2;
    /// Shorthand: every APIC but this one.
    pub const ALL_BUT_SELF: u64 = 3;
    /// Destination field (bits 63:56).
    pub const DEST_SHIFT: u32 = 56;
    /// Bits a write keeps.
    pub const WRITABLE: u64 = 0xFF00_0000_000C_CFFF;
}

/// Error status register bits.
pub mod esr {
    /// An IPI with a vector below 16 was sent.
    pub const SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
    /// An interrupt with a vector below 16 was received.
    pub const RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;
    /// A register that does not exist was accessed.
    pub const ILLEGAL_REGISTER: u32 = 1 << 7;
}

/// The LVT entries in register order, as indices into the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lvt {
    Timer = 0,
    Thermal = 1,
    Perf = 2,
    Lint0 = 3,
    Lint1 = 4,
    Error = 5,
}

impl Lvt {
    const ALL: [Lvt; 6] = [
        Lvt::Timer,
        Lvt::Thermal,
        Lvt::Perf,
        Lvt::Lint0,
        Lvt::Lint1,
        Lvt::Error,
    ];

    /// The bits a write keeps: what each entry has (SDM figure 10-8).
    fn writable(self) -> u32 {
        match self {
            Lvt::Timer => lvt::VECTOR | lvt::MASKED | lvt::PERIODIC,
            Lvt::Thermal | Lvt::Perf => lvt::VECTOR | lvt::MODE | lvt::MASKED,
            Lvt::Lint0 | Lvt::Lint1 => {
                lvt::VECTOR | lvt::MODE | lvt::POLARITY | lvt::LEVEL | lvt::MASKED
            }
            Lvt::Error => lvt::VECTOR | lvt::MASKED,
        }
    }
}

/// The lowest vector an APIC delivers; 0-15 are the CPU's exceptions.
const FIRST_VECTOR: u8 = 16;

/// A 256-bit vector register (ISR, TMR, IRR) as the eight 32-bit words the
/// guest reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Vectors([u32; 8]);

impl Vectors {
    fn get(&self, v: u8) -> bool {
        self.0[usize::from(v >> 5)] & (1 << (v & 31)) != 0
    }

    fn set(&mut self, v: u8, on: bool) {
        let word = &mut self.0[usize::from(v >> 5)];
        if on {
            *word |= 1 << (v & 31);
        } else {
            *word &= !(1 << (v & 31));
        }
    }

    /// The highest vector set: the highest priority.
    fn highest(&self) -> Option<u8> {
        let (i, word) = self.0.iter().enumerate().rev().find(|(_, w)| **w != 0)?;
        Some((i * 32 + 31 - word.leading_zeros() as usize) as u8)
    }
}

/// The priority class of a vector or priority register value.
fn class(v: u8) -> u8 {
    v >> 4
}

/// An interrupt message on the APIC bus, as an I/O APIC sends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    /// The vector (fixed and lowest-priority modes).
    pub vector: u8,
    /// Delivery mode (see [`delivery`]).
    pub mode: u8,
    /// Logical destination mode (else physical).
    pub logical: bool,
    /// Destination: an APIC ID, or a logical destination set.
    pub dest: u8,
    /// Level-triggered: the vector's TMR bit is set, and its EOI is
    /// broadcast back to the I/O APIC.
    pub level: bool,
}

/// The timer: its registers and when its count next reaches zero.
#[derive(Clone, Copy, Debug, Default)]
struct Timer {
    initial: u32,
    /// The divide configuration register (bits 0, 1 and 3).
    divide: u32,
    /// Clock time (ns) at which the count next reaches zero; `None` when
    /// the count is zero and stays there.
    next: Option<u64>,
}

impl Timer {
    /// Bits of the divide configuration register.
    const DIVIDE_BITS: u32 = 0b1011;

    /// Nanoseconds per count: the 1 GHz input clock through the divider.
    fn ns_per_count(&self) -> u64 {
        let code = (self.divide & 3) | ((self.divide >> 1) & 4);
        if code == 7 {
            1
        } else {
            2 << code
        }
    }

    fn period_ns(&self) -> u64 {
        u64::from(self.initial) * self.ns_per_count()
    }

    fn load(&mut self, initial: u32, now: u64) {
        self.initial = initial;
        self.next = (initial != 0).then(|| now + self.period_ns());
    }

    /// A new divider counts the remaining counts at the new rate.
    fn set_divide(&mut self, divide: u32, now: u64) {
        let old = self.ns_per_count();
        self.divide = divide & Self::DIVIDE_BITS;
        if let Some(next) = self.next.filter(|&n| n > now) {
            let counts = (next - now) / old;
            self.next = Some(now + counts * self.ns_per_count());
        }
    }

    fn current(&self, now: u64, periodic: bool) -> u32 {
        let Some(next) = self.next else {
            return 0;
        };
        let left = if now < next {
            next - now
        } else if periodic && self.initial != 0 {
            // Expiries not yet taken by `expire`: the count has reloaded.
            self.period_ns() - (now - next) % self.period_ns()
        } else {
            return 0;
        };
        left.div_ceil(self.ns_per_count())
            .min(u64::from(self.initial)) as u32
    }

    /// Whether the count reached zero by `now` since the last call; a
    /// periodic timer that reached it several times fires once (the IRR
    /// holds one request per vector) and keeps its phase.
    fn expire(&mut self, now: u64, periodic: bool) -> bool {
        match self.next {
            Some(next) if next <= now => {
                self.next = if periodic && self.initial != 0 {
                    let period = self.period_ns();
                    Some(next + ((now - next) / period + 1) * period)
                } else {
                    None
                };
                true
            }
            _ => false,
        }
    }
}

/// One CPU's local APIC.
pub struct Lapic {
    clock: Arc<dyn Clock>,
    /// Where the bus finds the registers: moved and closed with the base MSR.
    window: Window,
    /// IA32_APIC_BASE.
    base: u64,
    id: u8,
    tpr: u8,
    ldr: u32,
    dfr: u32,
    svr: u32,
    isr: Vectors,
    tmr: Vectors,
    irr: Vectors,
    /// The ESR as the guest last latched it by writing it.
    esr: u32,
    /// Errors since that write.
    errors: u32,
    icr: u64,
    lvt: [u32; 6],
    timer: Timer,
}

impl Lapic {
    /// A local APIC in its power-on state: enabled at 0xFEE00000 as the
    /// bootstrap processor's, software-disabled, every LVT entry masked.
    /// `window` is where the machine's MMIO bus finds it; it is moved here.
    pub fn new(clock: Arc<dyn Clock>, window: Window) -> Self {
        let mut apic = Lapic {
            clock,
            window,
            base: apic_base::RESET,
            id: 0,
            tpr: 0,
            ldr: 0,
            dfr: 0,
            svr: 0,
            isr: Vectors::default(),
            tmr: Vectors::default(),
            irr: Vectors::default(),
            esr: 0,
            errors: 0,
            icr: 0,
            lvt: [0; 6],
            timer: Timer::default(),
        };
        apic.reset_registers();
        apic.window.move_to(apic_base::DEFAULT_BASE);
        apic
    }

    /// The state firmware leaves for the kernel it starts, as SeaBIOS does
    /// under QEMU (so guests built for QEMU find the same): software-enabled
    /// with spurious vector 0xFF, LINT0 an unmasked ExtINT input (virtual
    /// wire mode: the 8259A's interrupts pass) and LINT1 NMI.
    pub fn after_firmware(clock: Arc<dyn Clock>, window: Window) -> Self {
        let mut apic = Lapic::new(clock, window);
        apic.svr = svr::ENABLE | svr::VECTOR;
        let mode = |m: u8| u32::from(m) << lvt::MODE_SHIFT;
        apic.lvt[Lvt::Lint0 as usize] = lvt::LEVEL | mode(delivery::EXTINT);
        apic.lvt[Lvt::Lint1 as usize] = lvt::LEVEL | mode(delivery::NMI);
        apic
    }

    /// The registers' power-up values (SDM vol. 3 10.4.7.1); the ID stays.
    fn reset_registers(&mut self) {
        self.tpr = 0;
        self.ldr = 0;
        self.dfr = u32::MAX;
        self.svr = svr::RESET;
        self.isr = Vectors::default();
        self.tmr = Vectors::default();
        self.irr = Vectors::default();
        self.esr = 0;
        self.errors = 0;
        self.icr = 0;
        self.lvt = [lvt::RESET; 6];
        self.timer = Timer::default();
    }

    /// IA32_APIC_BASE.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// WRMSR to IA32_APIC_BASE with a value the MSR model accepted: the
    /// registers move to the new base, and disabling the APIC takes them
    /// off the bus and returns them to their power-up state, which is what
    /// a re-enabled APIC then starts from (SDM vol. 3 10.4.3).
    pub fn set_base(&mut self, value: u64) {
        let was = self.enabled();
        self.base = value;
        if was != self.enabled() {
            self.reset_registers();
        }
        if self.enabled() {
            self.window.move_to(value & apic_base::BASE);
        } else {
            self.window.close();
        }
    }

    /// Globally enabled (IA32_APIC_BASE.EN): a disabled APIC is as good as
    /// absent, and the 8259A's output goes straight to the CPU.
    pub fn enabled(&self) -> bool {
        self.base & apic_base::EN != 0
    }

    /// Software-enabled (SVR bit 8): only then are fixed interrupts delivered.
    fn software_enabled(&self) -> bool {
        self.svr & svr::ENABLE != 0
    }

    /// LINT0 lets the 8259A's INTR through (unmasked, ExtINT): virtual
    /// wire mode. The INTA cycle then goes to the 8259A.
    pub fn passes_extint(&self) -> bool {
        let lint0 = self.lvt[Lvt::Lint0 as usize];
        lint0 & lvt::MASKED == 0 && mode_of(lint0) == delivery::EXTINT
    }

    fn ppr(&self) -> u8 {
        let isrv = self.isr.highest().unwrap_or(0);
        if class(self.tpr) >= class(isrv) {
            self.tpr
        } else {
            isrv & 0xF0
        }
    }

    /// The arbitration priority (SDM 10.8.3.1), of little use with one CPU.
    fn apr(&self) -> u8 {
        let isrv = self.isr.highest().unwrap_or(0);
        let irrv = self.irr.highest().unwrap_or(0);
        if class(self.tpr) >= class(irrv) && class(self.tpr) > class(isrv) {
            self.tpr
        } else {
            class(self.tpr).max(class(isrv)).max(class(irrv)) << 4
        }
    }

    /// The vector the CPU would take next: the highest requested one whose
    /// priority class beats the processor priority.
    fn deliverable(&self) -> Option<u8> {
        if !self.enabled() || !self.software_enabled() {
            return None;
        }
        let v = self.irr.highest()?;
        (class(v) > class(self.ppr())).then_some(v)
    }

    /// An interrupt of this APIC's own (IRR) is waiting for the CPU.
    pub fn has_interrupt(&self) -> bool {
        self.deliverable().is_some()
    }

    /// The INTA cycle for this APIC's own interrupts: the vector moves from
    /// IRR to ISR and is returned; the spurious vector if nothing is left.
    pub fn acknowledge(&mut self) -> u8 {
        match self.deliverable() {
            Some(v) => {
                self.irr.set(v, false);
                self.isr.set(v, true);
                v
            }
            None => (self.svr & svr::VECTOR) as u8,
        }
    }

    /// Records `bits` in the ESR, and raises the error interrupt the first
    /// time each is seen since the guest last latched the ESR.
    fn error(&mut self, bits: u32) {
        let new = bits & !self.errors;
        self.errors |= bits;
        let entry = self.lvt[Lvt::Error as usize];
        if new != 0 && entry & lvt::MASKED == 0 {
            let v = (entry & lvt::VECTOR) as u8;
            if v >= FIRST_VECTOR {
                self.request(v, false);
            } else {
                // An error vector below 16 is itself an error, raised once.
                self.errors |= esr::RECEIVE_ILLEGAL_VECTOR;
            }
        }
    }

    /// A fixed interrupt arrives: vectors 0-15 are refused with an error.
    fn accept(&mut self, v: u8, level: bool) {
        if v < FIRST_VECTOR {
            self.error(esr::RECEIVE_ILLEGAL_VECTOR);
            return;
        }
        self.request(v, level);
    }

    fn request(&mut self, v: u8, level: bool) {
        self.irr.set(v, true);
        self.tmr.set(v, level);
    }

    /// An LVT source fires (the timer).
    fn local_interrupt(&mut self, which: Lvt) {
        let entry = self.lvt[which as usize];
        if entry & lvt::MASKED != 0 {
            return;
        }
        match mode_of(entry) {
            delivery::FIXED => self.accept((entry & lvt::VECTOR) as u8, false),
            other => tracing::debug!(mode = other, "lapic: LVT delivery mode not modelled"),
        }
    }

    /// Whether destination `dest` in the given mode names this APIC.
    fn is_destination(&self, dest: u8, logical: bool) -> bool {
        if !logical {
            return dest == 0xFF || dest == self.id;
        }
        let mine = (self.ldr >> 24) as u8;
        match self.dfr >> 28 {
            // Flat model: a bit per APIC.
            0xF => dest & mine != 0,
            // Cluster model: cluster in the high nibble, members below.
            _ => (dest >> 4 == 0xF || dest >> 4 == mine >> 4) && dest & mine & 0xF != 0,
        }
    }

    /// A message from the I/O APIC.
    pub fn deliver(&mut self, msg: Message) {
        if !self.enabled() || !self.is_destination(msg.dest, msg.logical) {
            return;
        }
        match msg.mode {
            delivery::FIXED | delivery::LOWEST => self.accept(msg.vector, msg.level),
            other => tracing::debug!(mode = other, "lapic: message delivery mode not modelled"),
        }
    }

    /// A write of the ICR's low half: the IPI goes out at once.
    fn send_ipi(&mut self) {
        let icr = self.icr;
        let vector = icr as u8;
        let mode = ((icr & icr::MODE) >> 8) as u8;
        let to_self = match (icr >> icr::SHORTHAND_SHIFT) & 3 {
            icr::SELF | icr::ALL => true,
            icr::ALL_BUT_SELF => false,
            _ => self.is_destination((icr >> icr::DEST_SHIFT) as u8, icr & icr::LOGICAL != 0),
        };
        match mode {
            delivery::FIXED | delivery::LOWEST if vector < FIRST_VECTOR => {
                self.error(esr::SEND_ILLEGAL_VECTOR);
            }
            delivery::FIXED | delivery::LOWEST if to_self => self.accept(vector, false),
            // INIT level de-assert only synchronises arbitration IDs.
            delivery::INIT if icr & icr::ASSERT == 0 && icr & icr::LEVEL != 0 => {}
            // There is no other CPU to start, and this one is not waiting
            // for a start-up IPI; resetting itself by INIT is not modelled.
            delivery::INIT | delivery::STARTUP | delivery::NMI | delivery::SMI if to_self => {
                tracing::warn!(
                    mode,
                    "lapic: an IPI of this mode to the CPU itself is ignored"
                );
            }
            _ => {}
        }
    }

    /// Delivers the timer interrupts that came due; call between guest runs.
    pub fn update(&mut self) {
        let now = self.clock.now_ns();
        self.update_at(now);
    }

    /// [`Self::update`] at `now` (ns on the device's clock).
    pub fn update_at(&mut self, now: u64) {
        if self.timer.expire(now, self.periodic()) {
            self.local_interrupt(Lvt::Timer);
        }
    }

    fn periodic(&self) -> bool {
        self.lvt[Lvt::Timer as usize] & lvt::PERIODIC != 0
    }

    /// Nanoseconds until the timer's next interrupt, if it will deliver one.
    pub fn ns_until_next_irq(&self) -> Option<u64> {
        self.ns_until_next_irq_at(self.clock.now_ns())
    }

    /// [`Self::ns_until_next_irq`] from `now`.
    pub fn ns_until_next_irq_at(&self, now: u64) -> Option<u64> {
        if !self.enabled() || self.lvt[Lvt::Timer as usize] & lvt::MASKED != 0 {
            return None;
        }
        let next = self.timer.next?;
        Some(next.saturating_sub(now))
    }

    /// The value of the register at `reg` (16-byte aligned), or `None` if
    /// there is no register there.
    fn read_register(&mut self, reg: u64, now: u64) -> Option<u32> {
        let word = |v: &Vectors| v.0[((reg & 0x70) >> 4) as usize];
        Some(match reg {
            ID => u32::from(self.id) << 24,
            VERSION => VERSION_VALUE,
            TPR => u32::from(self.tpr),
            APR => u32::from(self.apr()),
            PPR => u32::from(self.ppr()),
            EOI | RRD => 0,
            LDR => self.ldr,
            DFR => self.dfr,
            SVR => self.svr,
            0x100..=0x170 => word(&self.isr),
            0x180..=0x1F0 => word(&self.tmr),
            0x200..=0x270 => word(&self.irr),
            ESR => self.esr,
            ICR_LOW => self.icr as u32,
            ICR_HIGH => (self.icr >> 32) as u32,
            LVT_TIMER..=LVT_ERROR => self.lvt[((reg - LVT_TIMER) >> 4) as usize],
            TIMER_INITIAL => self.timer.initial,
            TIMER_CURRENT => self.timer.current(now, self.periodic()),
            TIMER_DIVIDE => self.timer.divide,
            _ => return None,
        })
    }

    /// A write of `value` to the register at `reg`; `Some(vector)` is an
    /// EOI of a level-triggered vector, to broadcast to the I/O APIC.
    fn write_register(&mut self, reg: u64, value: u32, now: u64) -> Result<Option<u8>, ()> {
        match reg {
            ID => self.id = (value >> 24) as u8,
            TPR => self.tpr = value as u8,
            EOI => {
                let Some(v) = self.isr.highest() else {
                    return Ok(None);
                };
                self.isr.set(v, false);
                return Ok(self.tmr.get(v).then_some(v));
            }
            LDR => self.ldr = value & 0xFF00_0000,
            DFR => self.dfr = value | 0x0FFF_FFFF,
            SVR => self.svr = value & svr::WRITABLE,
            ESR => self.esr = std::mem::take(&mut self.errors),
            ICR_LOW => {
                self.icr = (self.icr & !0xFFFF_FFFF) | u64::from(value);
                self.icr &= icr::WRITABLE;
                self.send_ipi();
            }
            ICR_HIGH => {
                self.icr = (self.icr & 0xFFFF_FFFF) | (u64::from(value) << 32);
                self.icr &= icr::WRITABLE;
            }
            LVT_TIMER..=LVT_ERROR => {
                let which = Lvt::ALL[((reg - LVT_TIMER) >> 4) as usize];
                self.lvt[which as usize] = value & which.writable();
            }
            TIMER_INITIAL => self.timer.load(value, now),
            TIMER_DIVIDE => self.timer.set_divide(value, now),
            // Read-only registers ignore writes.
            VERSION | APR | PPR | RRD | 0x100..=0x270 | TIMER_CURRENT => {}
            _ => return Err(()),
        }
        Ok(None)
    }

    /// A read of `data.len()` bytes at `offset` into the register page.
    /// Each register is the first 4 bytes of a 16-byte slot; narrower reads
    /// see its bytes, the slot's other 12 bytes read 0.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        let now = self.clock.now_ns();
        self.update_at(now);
        data.fill(0);
        let reg = offset & 0xFF0;
        let Some(value) = self.read_register(reg, now) else {
            self.error(esr::ILLEGAL_REGISTER);
            return;
        };
        let bytes = value.to_le_bytes();
        let at = (offset & 0xF) as usize;
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(at + i).copied().unwrap_or(0);
        }
    }

    /// A write of `data` at `offset` into the register page. Registers take
    /// aligned 32-bit writes only (the SDM leaves others undefined; QEMU and
    /// KVM drop them, and so does this). Returns the vector of an EOI to
    /// broadcast to the I/O APIC (a level-triggered interrupt ended).
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Option<u8> {
        let now = self.clock.now_ns();
        // Expiries up to now happen under the registers they came due with.
        self.update_at(now);
        if offset & 0xF != 0 || data.len() < 4 {
            return None;
        }
        let value = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        match self.write_register(offset & 0xFF0, value, now) {
            Ok(eoi) => eoi,
            Err(()) => {
                self.error(esr::ILLEGAL_REGISTER);
                None
            }
        }
    }
}

/// The delivery mode of an LVT entry.
fn mode_of(entry: u32) -> u8 {
    ((entry & lvt::MODE) >> lvt::MODE_SHIFT) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn apic() -> (Lapic, Arc<ManualClock>, Window) {
        let clock = ManualClock::new();
        let window = Window::closed();
        let a = Lapic::after_firmware(clock.clone(), window.clone());
        (a, clock, window)
    }

    fn rd(a: &mut Lapic, reg: u64) -> u32 {
        let mut b = [0u8; 4];
        a.read(reg, &mut b);
        u32::from_le_bytes(b)
    }

    fn wr(a: &mut Lapic, reg: u64, v: u32) -> Option<u8> {
        a.write(reg, &v.to_le_bytes())
    }

    /// The eight words of a vector register.
    fn words(a: &mut Lapic, first: u64) -> [u32; 8] {
        std::array::from_fn(|i| rd(a, first + 0x10 * i as u64))
    }

    fn self_ipi(a: &mut Lapic, vector: u8) {
        wr(
            a,
            ICR_LOW,
            (icr::SELF << icr::SHORTHAND_SHIFT) as u32 | u32::from(vector),
        );
    }

    #[test]
    fn registers_after_firmware_are_what_seabios_leaves() {
        let (mut a, _, window) = apic();
        assert_eq!(window.base(), Some(0xFEE0_0000));
        assert_eq!(a.base(), 0xFEE0_0900, "enabled, BSP");
        for (reg, want) in [
            (ID, 0),
            (VERSION, 0x0005_0014),
            (TPR, 0),
            (APR, 0),
            (PPR, 0),
            (LDR, 0),
            (DFR, 0xFFFF_FFFF),
            (SVR, 0x1FF),
            (ESR, 0),
            (ICR_LOW, 0),
            (ICR_HIGH, 0),
            (LVT_TIMER, 0x1_0000),
            (LVT_THERMAL, 0x1_0000),
            (LVT_PERF, 0x1_0000),
            (LVT_LINT0, 0x8700),
            (LVT_LINT1, 0x8400),
            (LVT_ERROR, 0x1_0000),
            (TIMER_INITIAL, 0),
            (TIMER_CURRENT, 0),
            (TIMER_DIVIDE, 0),
        ] {
            assert_eq!(rd(&mut a, reg), want, "register {reg:#x}");
        }
        for first in [ISR, TMR, IRR] {
            assert_eq!(words(&mut a, first), [0; 8]);
        }
        assert!(a.passes_extint());
        let plain = Lapic::new(ManualClock::new(), Window::closed());
        assert_eq!(plain.svr, 0xFF, "power-on: software-disabled");
        assert!(!plain.passes_extint());
    }

    #[test]
    fn read_only_registers_keep_their_values_and_id_is_writable() {
        let (mut a, _, _) = apic();
        wr(&mut a, VERSION, 0);
        wr(&mut a, PPR, 0xF0);
        wr(&mut a, ISR, u32::MAX);
        assert_eq!(rd(&mut a, VERSION), VERSION_VALUE);
        assert_eq!(rd(&mut a, PPR), 0);
        assert_eq!(rd(&mut a, ISR), 0);
        wr(&mut a, ID, 0x0500_0000);
        assert_eq!(rd(&mut a, ID), 0x0500_0000);
        wr(&mut a, DFR, 0);
        assert_eq!(rd(&mut a, DFR), 0x0FFF_FFFF, "cluster model, low bits ones");
        assert_eq!(rd(&mut a, ESR), 0, "no error for any of this");
    }

    #[test]
    fn narrow_reads_see_the_registers_bytes_and_narrow_writes_are_dropped() {
        let (mut a, _, _) = apic();
        let mut b = [0u8; 2];
        a.read(VERSION + 2, &mut b);
        assert_eq!(b, [0x05, 0x00]);
        a.read(VERSION + 4, &mut b);
        assert_eq!(b, [0, 0], "the rest of the slot");
        a.write(TPR, &[0x20]);
        a.write(TPR + 4, &0x30u32.to_le_bytes());
        assert_eq!(rd(&mut a, TPR), 0);
    }

    #[test]
    fn a_missing_register_is_an_illegal_register_error() {
        let (mut a, _, _) = apic();
        assert_eq!(rd(&mut a, 0x400), 0);
        assert_eq!(rd(&mut a, ESR), 0, "latched only by a write");
        wr(&mut a, ESR, 0);
        assert_eq!(rd(&mut a, ESR), esr::ILLEGAL_REGISTER);
        wr(&mut a, ESR, 0);
        assert_eq!(rd(&mut a, ESR), 0);
        wr(&mut a, 0x2F0, 0); // CMCI: beyond the max LVT entry
        wr(&mut a, ESR, 0);
        assert_eq!(rd(&mut a, ESR), esr::ILLEGAL_REGISTER);
    }

    #[test]
    fn a_self_ipi_is_requested_delivered_and_ended_by_eoi() {
        let (mut a, _, _) = apic();
        self_ipi(&mut a, 0x61);
        assert_eq!(words(&mut a, IRR)[3], 1 << 1);
        assert!(a.has_interrupt());
        assert_eq!(a.acknowledge(), 0x61);
        assert_eq!(words(&mut a, IRR), [0; 8]);
        assert_eq!(words(&mut a, ISR)[3], 1 << 1);
        assert_eq!(rd(&mut a, PPR), 0x60);
        assert!(!a.has_interrupt());
        assert_eq!(wr(&mut a, EOI, 0), None, "edge: no broadcast");
        assert_eq!(words(&mut a, ISR), [0; 8]);
        assert_eq!(rd(&mut a, PPR), 0);
        assert_eq!(rd(&mut a, ICR_LOW) & icr::PENDING as u32, 0, "sent at once");
    }

    #[test]
    fn higher_vectors_go_first_and_nest() {
        let (mut a, _, _) = apic();
        self_ipi(&mut a, 0x40);
        self_ipi(&mut a, 0x91);
        assert_eq!(a.acknowledge(), 0x91);
        // 0x40 is of a lower class than the one in service: it waits.
        assert!(!a.has_interrupt());
        self_ipi(&mut a, 0xA0);
        assert_eq!(a.acknowledge(), 0xA0, "a higher class nests");
        wr(&mut a, EOI, 0);
        wr(&mut a, EOI, 0);
        assert_eq!(a.acknowledge(), 0x40);
    }

    #[test]
    fn tpr_masks_classes_at_and_below_it() {
        let (mut a, _, _) = apic();
        wr(&mut a, TPR, 0x50);
        self_ipi(&mut a, 0x45);
        self_ipi(&mut a, 0x5F);
        assert_eq!(rd(&mut a, PPR), 0x50);
        assert!(!a.has_interrupt());
        assert_eq!(a.acknowledge(), 0xFF, "nothing: the spurious vector");
        assert_eq!(rd(&mut a, APR), 0x50);
        wr(&mut a, TPR, 0x40);
        assert_eq!(a.acknowledge(), 0x5F);
        assert_eq!(rd(&mut a, PPR), 0x50, "the class in service");
        wr(&mut a, EOI, 0);
        wr(&mut a, TPR, 0);
        assert_eq!(a.acknowledge(), 0x45);
    }

    #[test]
    fn a_software_disabled_apic_holds_its_requests() {
        let (mut a, _, _) = apic();
        wr(&mut a, SVR, 0xFF);
        self_ipi(&mut a, 0x70);
        assert!(!a.has_interrupt());
        assert!(
            a.passes_extint(),
            "QEMU's rule: the LVT masks are left alone"
        );
        wr(&mut a, SVR, 0x1FF);
        assert_eq!(a.acknowledge(), 0x70);
    }

    #[test]
    fn illegal_vectors_are_refused_with_an_error_interrupt() {
        let (mut a, _, _) = apic();
        wr(&mut a, LVT_ERROR, 0xFE);
        self_ipi(&mut a, 0x0E);
        wr(&mut a, ESR, 0);
        assert_eq!(rd(&mut a, ESR), esr::SEND_ILLEGAL_VECTOR);
        assert_eq!(a.acknowledge(), 0xFE, "the error interrupt");
        wr(&mut a, EOI, 0);
        // A timer with vector 3 fires into an error instead.
        wr(&mut a, LVT_TIMER, 3);
        wr(&mut a, TIMER_DIVIDE, 0xB);
        wr(&mut a, TIMER_INITIAL, 1);
        a.update_at(10);
        wr(&mut a, ESR, 0);
        assert_eq!(rd(&mut a, ESR), esr::RECEIVE_ILLEGAL_VECTOR);
        assert_eq!(a.acknowledge(), 0xFE);
        assert!(!a.has_interrupt());
    }

    #[test]
    fn ipis_reach_this_apic_only_when_they_name_it() {
        let (mut a, _, _) = apic();
        let ipi = |a: &mut Lapic, dest: u8, low: u32| {
            wr(a, ICR_HIGH, u32::from(dest) << 24);
            wr(a, ICR_LOW, low);
            let got = a.has_interrupt();
            if got {
                a.acknowledge();
                wr(a, EOI, 0);
            }
            got
        };
        let logical = icr::LOGICAL as u32;
        assert!(ipi(&mut a, 0, 0x50), "physical, our ID");
        assert!(ipi(&mut a, 0xFF, 0x50), "physical broadcast");
        assert!(!ipi(&mut a, 1, 0x50), "another CPU");
        assert!(!ipi(&mut a, 0, 0x50 | (3 << 18)), "all but self");
        assert!(ipi(&mut a, 7, 0x50 | (2 << 18)), "all, whatever the field");
        assert!(!ipi(&mut a, 0x01, 0x50 | logical), "LDR 0 matches nothing");
        wr(&mut a, LDR, 0x0400_0000);
        assert!(ipi(&mut a, 0x05, 0x50 | logical), "flat: a bit of ours");
        assert!(!ipi(&mut a, 0x02, 0x50 | logical));
        wr(&mut a, DFR, 0x0FFF_FFFF);
        wr(&mut a, LDR, 0x2100_0000);
        assert!(ipi(&mut a, 0x21, 0x50 | logical), "cluster 2, member 1");
        assert!(!ipi(&mut a, 0x31, 0x50 | logical));
    }

    #[test]
    fn init_and_startup_ipis_change_nothing_with_one_cpu() {
        let (mut a, _, _) = apic();
        wr(&mut a, TPR, 0x20);
        // Linux's arbitration-ID sync, then INIT and SIPI to the others.
        wr(&mut a, ICR_LOW, 0x000C_8500);
        wr(&mut a, ICR_LOW, 0x000C_4500);
        wr(&mut a, ICR_LOW, 0x000C_4610);
        // And to itself.
        wr(&mut a, ICR_LOW, 0x0004_4500);
        wr(&mut a, ICR_LOW, 0x0004_4610);
        assert_eq!(rd(&mut a, TPR), 0x20);
        assert!(!a.has_interrupt());
        wr(&mut a, ESR, 0);
        assert_eq!(rd(&mut a, ESR), 0);
    }

    #[test]
    fn one_shot_timer_counts_down_fires_once_and_stays_at_zero() {
        let (mut a, clock, _) = apic();
        wr(&mut a, LVT_TIMER, 0x40);
        wr(&mut a, TIMER_DIVIDE, 0x3); // divide by 16
        wr(&mut a, TIMER_INITIAL, 1000); // 16 µs
        assert_eq!(a.ns_until_next_irq(), Some(16_000));
        clock.advance(8_000);
        assert_eq!(rd(&mut a, TIMER_CURRENT), 500);
        clock.advance(7_999);
        assert_eq!(rd(&mut a, TIMER_CURRENT), 1, "rounds up");
        a.update();
        assert!(!a.has_interrupt());
        clock.advance(1);
        a.update();
        assert_eq!(rd(&mut a, TIMER_CURRENT), 0);
        assert_eq!(a.acknowledge(), 0x40);
        wr(&mut a, EOI, 0);
        clock.advance(100_000);
        a.update();
        assert!(!a.has_interrupt(), "once");
        assert_eq!(a.ns_until_next_irq(), None);
        assert_eq!(rd(&mut a, TIMER_INITIAL), 1000);
    }

    #[test]
    fn periodic_timer_reloads_and_coalesces_missed_periods() {
        let (mut a, clock, _) = apic();
        wr(&mut a, LVT_TIMER, lvt::PERIODIC | 0x41);
        wr(&mut a, TIMER_DIVIDE, 0xB); // divide by 1
        wr(&mut a, TIMER_INITIAL, 1000);
        let mut fired = 0;
        for _ in 0..10 {
            clock.advance(1000);
            a.update();
            if a.has_interrupt() {
                a.acknowledge();
                wr(&mut a, EOI, 0);
                fired += 1;
            }
        }
        assert_eq!(fired, 10);
        clock.advance(250);
        assert_eq!(rd(&mut a, TIMER_CURRENT), 750);
        // Five periods pass unseen: one request, and the phase is kept.
        clock.advance(5000);
        assert_eq!(rd(&mut a, TIMER_CURRENT), 750);
        assert_eq!(a.acknowledge(), 0x41);
        wr(&mut a, EOI, 0);
        assert!(!a.has_interrupt());
        assert_eq!(a.ns_until_next_irq(), Some(750));
        // Initial count 0 stops it.
        wr(&mut a, TIMER_INITIAL, 0);
        assert_eq!(a.ns_until_next_irq(), None);
        assert_eq!(rd(&mut a, TIMER_CURRENT), 0);
    }

    #[test]
    fn a_masked_timer_counts_but_delivers_nothing() {
        let (mut a, clock, _) = apic();
        wr(&mut a, LVT_TIMER, lvt::MASKED | lvt::PERIODIC | 0x42);
        wr(&mut a, TIMER_DIVIDE, 0xB);
        wr(&mut a, TIMER_INITIAL, 1000);
        assert_eq!(a.ns_until_next_irq(), None, "no kick for a masked timer");
        clock.advance(2500);
        assert_eq!(rd(&mut a, TIMER_CURRENT), 500);
        // Unmasking does not deliver the periods that passed masked.
        wr(&mut a, LVT_TIMER, lvt::PERIODIC | 0x42);
        assert!(!a.has_interrupt());
        clock.advance(500);
        a.update();
        assert_eq!(a.acknowledge(), 0x42);
    }

    #[test]
    fn the_divider_rescales_what_is_left() {
        let (mut a, clock, _) = apic();
        wr(&mut a, LVT_TIMER, 0x43);
        for (conf, ns) in [
            (0x0, 2),
            (0x1, 4),
            (0x2, 8),
            (0x3, 16),
            (0x8, 32),
            (0x9, 64),
            (0xA, 128),
            (0xB, 1),
        ] {
            wr(&mut a, TIMER_DIVIDE, conf);
            wr(&mut a, TIMER_INITIAL, 100);
            assert_eq!(
                a.ns_until_next_irq(),
                Some(100 * ns),
                "divide conf {conf:#x}"
            );
        }
        wr(&mut a, TIMER_DIVIDE, 0xFFFF_FFF4);
        assert_eq!(rd(&mut a, TIMER_DIVIDE), 0x0, "only bits 0, 1 and 3");
        wr(&mut a, TIMER_INITIAL, 100); // 200 ns at divide 2
        clock.advance(100);
        wr(&mut a, TIMER_DIVIDE, 0x1); // the other 50 counts at 4 ns each
        assert_eq!(rd(&mut a, TIMER_CURRENT), 50);
        assert_eq!(a.ns_until_next_irq(), Some(200));
    }

    #[test]
    fn level_messages_set_tmr_and_their_eoi_is_broadcast() {
        let (mut a, _, _) = apic();
        let msg = Message {
            vector: 0x30,
            mode: delivery::FIXED,
            logical: false,
            dest: 0,
            level: true,
        };
        a.deliver(msg);
        a.deliver(Message {
            vector: 0x31,
            level: false,
            ..msg
        });
        a.deliver(Message {
            vector: 0x32,
            dest: 3,
            ..msg
        });
        assert_eq!(words(&mut a, TMR)[1], 1 << 16);
        assert_eq!(words(&mut a, IRR)[1], 0b11 << 16, "0x32 was for APIC 3");
        assert_eq!(a.acknowledge(), 0x31);
        assert_eq!(wr(&mut a, EOI, 0), None);
        assert_eq!(a.acknowledge(), 0x30);
        assert_eq!(wr(&mut a, EOI, 0), Some(0x30));
        assert_eq!(wr(&mut a, EOI, 0), None, "nothing in service");
    }

    #[test]
    fn the_base_msr_moves_disables_and_resets_the_apic() {
        let (mut a, _, window) = apic();
        wr(&mut a, TPR, 0x30);
        a.set_base(0xFEF0_0900);
        assert_eq!(window.base(), Some(0xFEF0_0000));
        assert_eq!(rd(&mut a, TPR), 0x30, "moving keeps the registers");
        a.set_base(0xFEF0_0100);
        assert!(!a.enabled());
        assert_eq!(window.base(), None);
        a.deliver(Message {
            vector: 0x30,
            mode: delivery::FIXED,
            logical: false,
            dest: 0,
            level: false,
        });
        assert!(!a.has_interrupt(), "a disabled APIC takes no messages");
        a.set_base(0xFEE0_0900);
        assert_eq!(window.base(), Some(0xFEE0_0000));
        assert_eq!(rd(&mut a, TPR), 0);
        assert_eq!(rd(&mut a, SVR), 0xFF, "back from power-up state");
        assert_eq!(rd(&mut a, LVT_LINT0), lvt::MASKED);
    }
}
