//! The BT engine: the run loop that joins translated guest kernel code
//! (CPL 0) and directly executed guest user code (CPL 3), dispatching every
//! exit to the translation cache, the callout emulator or the devices.
//!
//! One iteration: deliver a pending interrupt if the virtual IF allows it,
//! then run the guest until it exits, either directly (CPL 3) or from the
//! translation of the block at CS:EIP (CPL 0), translating it first on a
//! miss; then handle the exit.

pub mod alarm;
pub mod platform;
pub mod stats;

use std::time::{Duration, Instant};

use machine::engine::GuestFault;
use machine::machine::Poll;
use machine::{Engine, EngineError, Exit, Machine, StopReason};
use x86::classify::{kind_of, Class, Kind};
use x86::emulate;
use x86::interrupt::{self, Event, Exception, Unsupported};
use x86::state::{cr0, flags};
use x86::CpuState;

use crate::cache::block::GUEST_PAGE_SIZE;
use crate::cache::code::DEFAULT_TC_SIZE;
use crate::cache::{
    BlockId, BlockKey, CodeBuffer, Context, GuestPage, IndirectTable, TranslationCache,
};
use crate::contract::ExitReason;
use crate::monitor::{DirectExit, Monitor, TcExit, PAGE_SIZE};
use crate::translate::{self, Translator};
use alarm::Alarm;
use machine::memory::GuestLinear;
use x86::paging::{Access, PagingRegs};

use crate::mmu::{Fill, Shadow};
use platform::{CpuExtras, Surroundings};
pub use stats::BtStats;

/// How long a halted vCPU sleeps between checks for input.
const HALT_POLL: Duration = Duration::from_millis(50);

/// Options of the BT engine.
#[derive(Clone, Copy, Debug)]
pub struct BtOptions {
    /// Size of the translation cache's code buffer in bytes.
    pub tc_size: u32,
}

/// Smallest `tc_size`: one chunk that holds the largest block.
pub const TC_MIN: u32 = crate::cache::code::MIN_CHUNK;
/// Largest `tc_size`: what the monitor region has room for.
pub const TC_MAX: u32 = crate::contract::TC_MAX;

impl BtOptions {
    /// Why `tc_size` cannot be a translation-cache size, if it cannot.
    pub fn check_tc_size(tc_size: u32) -> Result<(), String> {
        if !(TC_MIN..=TC_MAX).contains(&tc_size) || !tc_size.is_multiple_of(4096) {
            return Err(format!(
                "the translation cache must be a multiple of 4K from {}K to {}K",
                TC_MIN >> 10,
                TC_MAX >> 10
            ));
        }
        Ok(())
    }
}

impl Default for BtOptions {
    fn default() -> Self {
        BtOptions {
            tc_size: DEFAULT_TC_SIZE,
        }
    }
}

/// The binary-translation engine.
#[derive(Debug, Default)]
pub struct BtEngine {
    opts: BtOptions,
    stats: BtStats,
}

impl BtEngine {
    /// An engine with `opts`.
    pub fn new(opts: BtOptions) -> BtEngine {
        BtEngine {
            opts,
            stats: BtStats::default(),
        }
    }

    /// The counters of the last run.
    pub fn stats(&self) -> &BtStats {
        &self.stats
    }
}

impl Engine for BtEngine {
    fn name(&self) -> &'static str {
        "bt"
    }

    fn stats_table(&self) -> String {
        self.stats.to_string()
    }

    fn stats_json(&self) -> Option<String> {
        Some(self.stats.to_json())
    }

    fn run(&mut self, machine: &mut Machine) -> Result<Exit, EngineError> {
        let start = Instant::now();
        let mut vm = Vm::new(machine, self.opts)?;
        let result = vm.run(machine);
        machine.flush_console();
        vm.stats.cache = vm.cache_stats();
        vm.stats.mmu = *vm.mmu.stats();
        vm.stats.set_inlined(vm.monitor.inlined());
        vm.stats.region = vm.monitor.region_stats();
        vm.stats.total = start.elapsed();
        self.stats = vm.stats;
        result
    }
}

fn host_err(what: impl std::fmt::Display) -> EngineError {
    EngineError::Host(what.to_string())
}

/// Guest code bytes for the translator, or the fault fetching them.
enum Code {
    /// The bytes, the physical page of the first and of the next page.
    Bytes {
        bytes: Vec<u8>,
        page: u32,
        next_page: Option<u32>,
    },
    /// Fetching raised #PF with `code` at `addr`.
    Fault { addr: u32, code: u32 },
}

/// A block to run, or the outcome of the fault its fetch raised.
enum Fetched {
    Block(BlockId),
    Delivered(Next),
}

/// What the loop does after handling an exit.
enum Next {
    /// Run on.
    Continue,
    /// The run is over.
    End(Exit),
}

/// One run's state: the monitor, the cache and the virtual CPU.
struct Vm {
    monitor: Monitor,
    cache: TranslationCache,
    translator: Translator,
    cpu: CpuState,
    extras: CpuExtras,
    alarm: Alarm,
    /// The shadow MMU: guest linear memory as host mappings, and the
    /// physical pages holding translations (mapped without write access).
    mmu: Shadow,
    /// Where to resume translated code, with the host selectors it had: a
    /// kick landed inside a rewrite sequence, where the registers do not
    /// hold a guest state.
    resume: Option<(u32, [u16; 6])>,
    /// Run the next guest instruction alone, from a page left writable:
    /// it wrote to a page holding translations (or it is the instruction in
    /// an interrupt shadow, after which an interrupt waits).
    smc_step: bool,
    /// Interrupts are blocked for one instruction (after STI, MOV SS).
    shadow: bool,
    /// The last callout raised an exception (delivered to the guest).
    last_callout_faulted: bool,
    /// Index into `extras.port80` of the next marker to take a snapshot for.
    markers_seen: usize,
    /// Cache counters at the last marker.
    phase_start: crate::cache::Stats,
    ram_size: u64,
    stats: BtStats,
}

impl Vm {
    fn new(machine: &mut Machine, opts: BtOptions) -> Result<Vm, EngineError> {
        let mut monitor = Monitor::new(&machine.memory).map_err(host_err)?;
        let (table, code) = monitor
            .translation_regions(opts.tc_size)
            .map_err(host_err)?;
        let miss = monitor
            .install_stub_code(&translate::miss_handler(0))
            .map_err(host_err)?;
        let cache = TranslationCache::new(CodeBuffer::new(code), IndirectTable::new(table, miss));
        let alarm = Alarm::start(monitor.kicker()).map_err(host_err)?;
        // Every thread exists now: from here on neither the guest nor host
        // code it might subvert can open, signal or connect anything.
        monitor.confine().map_err(host_err)?;
        Ok(Vm {
            monitor,
            cache,
            translator: Translator::new(miss),
            cpu: machine.entry.clone(),
            extras: CpuExtras::new(),
            alarm,
            mmu: Shadow::new(machine.memory.size(), PagingRegs::of(&machine.entry)),
            resume: None,
            smc_step: false,
            last_callout_faulted: false,
            shadow: false,
            markers_seen: 0,
            phase_start: crate::cache::Stats::default(),
            ram_size: machine.memory.size(),
            stats: BtStats::default(),
        })
    }

    fn fault(&self, machine: &Machine, what: String) -> Box<GuestFault> {
        machine.fault(what, self.cpu.clone())
    }

    fn unsupported(&self, machine: &Machine, what: String) -> EngineError {
        EngineError::GuestUnsupported(self.fault(machine, what))
    }

    fn run(&mut self, machine: &mut Machine) -> Result<Exit, EngineError> {
        loop {
            if machine.poll() == Poll::Quit {
                return Ok(Exit::UserQuit);
            }
            if let Next::End(exit) = self.interrupt(machine)? {
                return Ok(exit);
            }
            self.alarm.arm(machine.next_timer_event());
            let next = if self.cpu.cr0 & cr0::PE == 0 {
                return Err(self.unsupported(
                    machine,
                    "the guest is in real mode, which the BT engine does not run".into(),
                ));
            } else if self.cpu.cpl() == 3 {
                self.mmu
                    .set_view(&mut self.monitor, true)
                    .map_err(host_err)?;
                self.run_user(machine)?
            } else {
                self.mmu
                    .set_view(&mut self.monitor, false)
                    .map_err(host_err)?;
                self.run_kernel(machine)?
            };
            if let Next::End(exit) = next {
                return Ok(exit);
            }
            if let Some(stop) = machine.take_stop() {
                return Ok(match stop {
                    StopReason::DebugExit(v) => Exit::DebugExit(v),
                    StopReason::Reset => Exit::Reset,
                });
            }
        }
    }

    /// Delivers the PIC's interrupt if the guest can take it now.
    fn interrupt(&mut self, machine: &mut Machine) -> Result<Next, EngineError> {
        if std::mem::take(&mut self.shadow) {
            // The instruction after STI or MOV SS runs alone (a step
            // block), so that the interrupt comes right after it.
            if self.cpu.cpl() != 3
                && self.cpu.eflags & flags::IF != 0
                && machine.interrupt_pending()
            {
                self.smc_step = true;
            }
            return Ok(Next::Continue);
        }
        if self.resume.is_some() || self.cpu.eflags & flags::IF == 0 || !machine.interrupt_pending()
        {
            return Ok(Next::Continue);
        }
        let vector = machine.acknowledge_interrupt();
        self.stats.interrupts += 1;
        self.deliver(machine, vector, Event::External)
    }

    /// Delivers an external interrupt or a software interrupt (INT3, INTO)
    /// through the guest's IDT.
    fn deliver(
        &mut self,
        machine: &mut Machine,
        vector: u8,
        event: Event,
    ) -> Result<Next, EngineError> {
        let mut mem = GuestLinear::new(&mut machine.memory, &self.cpu);
        let r = interrupt::deliver_event(&mut self.cpu, &mut mem, vector, event);
        self.after_writes(&mem.written)?;
        self.settle(machine, r)
    }

    /// The end of a delivery or emulated operation: triple faults end the
    /// run, unsupported features end it with an error.
    fn settle<T>(
        &mut self,
        machine: &Machine,
        r: Result<T, Unsupported>,
    ) -> Result<Next, EngineError> {
        match r {
            Ok(_) => Ok(Next::Continue),
            Err(Unsupported::TripleFault) => Ok(Next::End(Exit::Shutdown(self.fault(
                machine,
                "the guest triple-faulted: a fault while delivering a double fault".into(),
            )))),
            Err(Unsupported::Feature(what)) => Err(self.unsupported(
                machine,
                format!("the guest needs {what}, which popek does not model"),
            )),
        }
    }

    /// Delivers exception `e` at the current guest instruction.
    fn exception(&mut self, machine: &mut Machine, e: Exception) -> Result<Next, EngineError> {
        let mut mem = GuestLinear::new(&mut machine.memory, &self.cpu);
        let r = emulate::deliver_fault(&mut self.cpu, &mut mem, e);
        self.after_writes(&mem.written)?;
        self.settle(machine, r)
    }

    /// Drops translations of physical pages the monitor wrote on the
    /// guest's behalf (an emulated instruction or a delivery).
    fn after_writes(&mut self, pages: &[u32]) -> Result<(), EngineError> {
        for &p in pages {
            if self.mmu.is_code(p) {
                self.stats.exit("smc by the monitor");
                self.cache.invalidate_page(GuestPage(p));
                self.mmu
                    .unprotect_code(&mut self.monitor, p)
                    .map_err(host_err)?;
            }
        }
        Ok(())
    }

    /// Takes the guest's paging registers after an instruction that may
    /// have changed them, and drops what they invalidate.
    fn paging_update(
        &mut self,
        machine: &mut Machine,
        cr3_written: bool,
        flush_page: Option<u32>,
    ) -> Result<(), EngineError> {
        let regs = PagingRegs::of(&self.cpu);
        let changed = regs != self.mmu.regs() || cr3_written;
        if changed {
            self.mmu
                .set_regs(&mut self.monitor, regs, cr3_written)
                .map_err(host_err)?;
        }
        if let Some(linear) = flush_page {
            self.mmu
                .invlpg(&mut self.monitor, linear)
                .map_err(host_err)?;
        }
        if changed || flush_page.is_some() {
            for p in self.mmu.stale_code(&mut machine.memory) {
                self.cache.invalidate_page(GuestPage(p));
                self.mmu
                    .unprotect_code(&mut self.monitor, p)
                    .map_err(host_err)?;
            }
        }
        Ok(())
    }

    /// Carries out the instruction at CS:EIP with the emulator.
    fn callout(&mut self, machine: &mut Machine) -> Result<Next, EngineError> {
        let mut mem = GuestLinear::new(&mut machine.memory, &self.cpu);
        let insn = match emulate::fetch(&self.cpu, &mut mem) {
            Ok(i) => i,
            Err(e) => {
                // Same view: a #PF's CR2 travels with it.
                let r = emulate::deliver_fault(&mut self.cpu, &mut mem, e);
                return self.settle(machine, r);
            }
        };
        let kind = kind_of(&insn);
        self.stats.callout(kind.name());
        let mut plat = Surroundings {
            bus: &mut machine.bus,
            extras: &mut self.extras,
            did_io: false,
        };
        let r = emulate::execute_and_deliver(&mut self.cpu, &mut mem, &mut plat, &insn);
        self.after_writes(&mem.written)?;
        if let Ok(eff) = &r {
            if eff.cr_written
                || eff.paging_changed
                || eff.cr3_written
                || eff.tlb_flush_page.is_some()
            {
                self.paging_update(machine, eff.cr3_written, eff.tlb_flush_page)?;
            }
        }
        let eff = match r {
            Ok(eff) => eff,
            Err(Unsupported::Feature(what)) => {
                return Err(self.unsupported(
                    machine,
                    format!(
                        "the guest needs {what} ({}), which popek does not model",
                        kind.name()
                    ),
                ))
            }
            Err(u) => return self.settle(machine, Err::<(), _>(u)),
        };
        self.take_markers();
        self.last_callout_faulted = eff.delivered.is_some();
        self.shadow = eff.interrupt_shadow;
        if eff.halted {
            return self.halt(machine);
        }
        Ok(Next::Continue)
    }

    /// Records cache counters for each new port-0x80 phase marker.
    fn take_markers(&mut self) {
        while self.markers_seen < self.extras.port80.len() {
            let marker = self.extras.port80[self.markers_seen];
            self.markers_seen += 1;
            let now = self.cache_stats();
            self.stats
                .phases
                .push((marker, now.since(&self.phase_start)));
            self.phase_start = now;
        }
    }

    /// The cache's counters with the inline probe's hits added.
    fn cache_stats(&self) -> crate::cache::Stats {
        crate::cache::Stats {
            inline_hits: u64::from(self.monitor.inline_hits()),
            ..*self.cache.stats()
        }
    }

    /// HLT: sleep until an interrupt can be delivered.
    fn halt(&mut self, machine: &mut Machine) -> Result<Next, EngineError> {
        let if_set = self.cpu.eflags & flags::IF != 0;
        loop {
            if if_set && machine.interrupt_pending() {
                return Ok(Next::Continue);
            }
            if !if_set || !machine.can_wake() {
                return Ok(Next::End(Exit::Halted(Box::new(self.cpu.clone()))));
            }
            if machine.wait(HALT_POLL) == Poll::Quit {
                return Ok(Next::End(Exit::UserQuit));
            }
        }
    }

    /// Runs guest user code directly and handles its exit.
    fn run_user(&mut self, machine: &mut Machine) -> Result<Next, EngineError> {
        let t = Instant::now();
        let exit = self.monitor.run_user(&mut self.cpu).map_err(host_err)?;
        self.stats.direct += t.elapsed();
        self.user_exit(machine, exit)
    }

    /// Redoes guest user code's loads of `sels` (DS, ES, FS, GS), which the
    /// host's GDT answered, against the guest's tables (design.md's lazy
    /// fix-up). Only a load the guest's CPU would also have accepted, of a
    /// segment based at 0 like the host's, is fixed up: then every access
    /// made through the host's segment meant what it would have meant. A
    /// load the guest's CPU would have refused is an escape attempt and
    /// stops the VM; a segment of the guest's with another base cannot be
    /// repaired yet and ends the run as unsupported.
    fn fix_up_selectors(
        &mut self,
        machine: &mut Machine,
        sels: [Option<u16>; 4],
    ) -> Result<Next, EngineError> {
        self.stats.exit("user: selector fix-up");
        for (i, sel) in sels.iter().enumerate() {
            let Some(sel) = *sel else { continue };
            let mut mem = GuestLinear::new(&mut machine.memory, &self.cpu);
            match emulate::data_segment(&self.cpu, &mut mem, i, sel) {
                Ok(seg) if seg.base == 0 => {
                    *[
                        &mut self.cpu.ds,
                        &mut self.cpu.es,
                        &mut self.cpu.fs,
                        &mut self.cpu.gs,
                    ][i] = seg;
                }
                Ok(seg) => {
                    return Err(self.unsupported(
                        machine,
                        format!(
                            "guest user code loaded selector {sel:#06x}, a segment of its own \
                             based at {:#x}; the host answered the load with its own flat \
                             segment, and popek can only repair such loads for segments based \
                             at 0",
                            seg.base
                        ),
                    ))
                }
                Err(_) => {
                    return Ok(Next::End(Exit::Escape(self.fault(
                        machine,
                        format!(
                            "guest user code loaded the host's selector {sel:#06x} into a segment \
                             register, where its own CPU would have refused the load; the VM was \
                             stopped"
                        ),
                    ))))
                }
            }
        }
        match self.monitor.take_deferred_exit() {
            // A memory fault may have come from the host's segment (a write
            // through the host's 0x23, a code segment; the limit of 0x7b):
            // the instruction runs again with the guest's.
            Some(DirectExit::Fault {
                vector: 11..=14 | 17,
                ..
            })
            | None => Ok(Next::Continue),
            Some(exit) => self.user_exit(machine, exit),
        }
    }

    /// Handles an exit of directly executed guest user code.
    fn user_exit(&mut self, machine: &mut Machine, exit: DirectExit) -> Result<Next, EngineError> {
        match exit {
            DirectExit::Interrupted => {
                self.stats.exit("user: interrupted");
                Ok(Next::Continue)
            }
            DirectExit::Syscall => {
                // int 0x80 trapped after the instruction: carry it out with
                // the guest's IDT and its DPL check.
                self.stats.exit("user: int 0x80");
                self.cpu.eip = self.cpu.eip.wrapping_sub(2);
                self.callout(machine)
            }
            DirectExit::SoftwareInterrupt { .. } => {
                self.stats.exit("user: int n");
                self.callout(machine)
            }
            DirectExit::Fault { vector, error_code, cr2 } => {
                self.stats.exit("user: fault");
                self.user_fault(machine, vector, error_code, cr2)
            }
            DirectExit::HostBus { addr } => Err(self.unsupported(
                machine,
                format!("guest RAM behind {addr:#x} is missing (host SIGBUS)"),
            )),
            DirectExit::ForeignCode { selector, signal } => Ok(Next::End(Exit::Escape(self.fault(
                machine,
                format!(
                    "guest user code left its code segment for the host's selector {selector:#06x} \
                     (host signal {signal}); the VM was stopped"
                ),
            )))),
            DirectExit::ForeignSelectors { sels } => self.fix_up_selectors(machine, sels),
            DirectExit::Unknown { signal, trapno, error_code } => Err(self.unsupported(
                machine,
                format!("unexpected host signal {signal} (trap {trapno}, error {error_code:#x}) in guest user code"),
            )),
        }
    }

    /// A fault of directly executed user code, as the guest must see it.
    fn user_fault(
        &mut self,
        machine: &mut Machine,
        vector: u8,
        error_code: Option<u32>,
        cr2: Option<u32>,
    ) -> Result<Next, EngineError> {
        if let Some(at) = self.monitor_region_access(machine, vector, error_code) {
            return self.monitor_region(machine, at);
        }
        match vector {
            // A privileged or IOPL-sensitive instruction (the emulator
            // applies the guest's own CPL and IOPL rules: IN/OUT may be
            // allowed by IOPL 3, otherwise it raises the same #GP), or a
            // segment load or far transfer the host checked against its own
            // tables (our shadows sit at LDT indices guests do not use),
            // which the emulator redoes against the guest's.
            11..=13 if self.sensitive_at_eip(machine) => self.callout(machine),
            14 => self.host_page_fault(machine, cr2.unwrap_or(0), error_code.unwrap_or(0)),
            // INT3 and INTO trap after the instruction and go through the
            // IDT as software interrupts (gate DPL checked).
            3 | 4 => self.deliver(machine, vector, Event::Software),
            _ => self.exception(machine, Exception { vector, error_code }),
        }
    }

    /// A host page fault at `addr`: a page the shadow MMU has not mapped
    /// (yet, or for this view), a write to a page holding translations
    /// (self-modifying code), or an access to memory the guest does not
    /// have. The host's error code says only whether the access was a
    /// write or a fetch; everything else comes from the guest's tables.
    fn host_page_fault(
        &mut self,
        machine: &mut Machine,
        addr: u32,
        err: u32,
    ) -> Result<Next, EngineError> {
        let write = err & 2 != 0;
        let fill = if self.mmu.paging() {
            let user = self.cpu.cpl() == 3;
            let access = Access {
                write,
                user,
                fetch: user && err & 0x10 != 0,
            };
            self.mmu
                .fill(&mut self.monitor, &mut machine.memory, addr, access)
                .map_err(host_err)?
        } else if u64::from(addr) >= self.ram_size {
            Fill::NoRam(u64::from(addr))
        } else if addr < PAGE_SIZE {
            Fill::Unmappable
        } else if write && self.mmu.is_code(addr / PAGE_SIZE) {
            Fill::CodeWrite(addr / PAGE_SIZE)
        } else {
            Fill::Stuck
        };
        let what = match fill {
            Fill::Mapped => {
                self.stats.exit("shadow fill");
                return Ok(Next::Continue);
            }
            Fill::GuestFault(code) => {
                return self.page_fault(machine, addr, code, "guest page fault");
            }
            Fill::CodeWrite(phys) => {
                self.stats.exit("smc write");
                self.cache.invalidate_page(GuestPage(phys));
                self.mmu
                    .unprotect_code(&mut self.monitor, phys)
                    .map_err(host_err)?;
                // The writer runs alone with the page writable; translations
                // made after it protect the page again.
                self.smc_step = self.cpu.cpl() != 3;
                return Ok(Next::Continue);
            }
            Fill::NoRam(phys) if phys == u64::from(addr) => self.no_memory(
                if err & 0x10 != 0 {
                    "jumped to"
                } else {
                    "accessed"
                },
                addr,
            ),
            Fill::NoRam(phys) => format!(
                "the guest's page tables map linear {addr:#010x} to physical {phys:#x}, where \
                 there is no memory ({} MiB of RAM; popek models no memory-mapped devices)",
                self.ram_size >> 20
            ),
            Fill::Unmappable if addr < PAGE_SIZE => format!(
                "the guest accessed {addr:#010x} in page 0, which this host cannot map (vm.mmap_min_addr)"
            ),
            Fill::Unmappable => return Err(self.monitor_region_error(machine)),
            Fill::Stuck => {
                format!("unexpected host page fault at {addr:#010x} (error {err:#x})")
            }
        };
        Err(self.unsupported(machine, what))
    }

    fn context(&self) -> Context {
        Context {
            cs_base: self.cpu.cs.base,
            cpl: self.cpu.cpl(),
            code32: self.cpu.cs.db,
            paging: self.cpu.cr0 & cr0::PG != 0,
            step: self.smc_step || self.cpu.eflags & flags::TF != 0,
        }
    }

    /// "the guest `did` `addr`, where there is no memory".
    fn no_memory(&self, did: &str, addr: u32) -> String {
        format!(
            "the guest {did} {addr:#010x}, where there is no memory ({} MiB of RAM)",
            self.ram_size >> 20
        )
    }

    /// The bytes at linear `linear` for translation: the rest of its page
    /// and up to 15 bytes of the next (an instruction may straddle), with
    /// the physical pages they come from. With paging on the pages are
    /// found by walking the guest's tables as an instruction fetch does.
    fn code_bytes(&mut self, machine: &mut Machine, linear: u32) -> Result<Code, EngineError> {
        let rest = GUEST_PAGE_SIZE - (linear & (GUEST_PAGE_SIZE - 1));
        let (phys, next) = if self.mmu.paging() {
            let regs = PagingRegs::of(&self.cpu);
            let mem = &mut machine.memory;
            let t = match x86::paging::walk(mem, &regs, linear, Access::FETCH, true) {
                Ok(t) => t,
                Err(code) => return Ok(Code::Fault { addr: linear, code }),
            };
            let next_linear = linear.wrapping_add(rest);
            let next = x86::paging::walk(mem, &regs, next_linear, Access::FETCH, false)
                .ok()
                .map(|t| t.phys);
            (t.phys, next)
        } else {
            let next = u64::from(linear) + u64::from(rest);
            (u64::from(linear), Some(next))
        };
        if phys >= self.ram_size {
            let what = if phys == u64::from(linear) {
                self.no_memory("jumped to", linear)
            } else {
                format!(
                    "the guest jumped to {linear:#010x}, which its page tables map to physical \
                     {phys:#x}, where there is no memory ({} MiB of RAM)",
                    self.ram_size >> 20
                )
            };
            return Err(self.unsupported(machine, what));
        }
        let mut bytes = machine
            .memory
            .slice(phys, rest as usize)
            .map_err(host_err)?
            .to_vec();
        let next = next.filter(|&n| n < self.ram_size);
        if let Some(n) = next {
            let avail = (self.ram_size - n).min(15) as usize;
            bytes.extend_from_slice(machine.memory.slice(n, avail).map_err(host_err)?);
        }
        Ok(Code::Bytes {
            bytes,
            page: (phys / u64::from(PAGE_SIZE)) as u32,
            next_page: next.map(|n| (n / u64::from(PAGE_SIZE)) as u32),
        })
    }

    /// The translation of the block at CS:EIP, translating it on a miss,
    /// or what happened when fetching its first instruction faulted.
    fn block_at_eip(&mut self, machine: &mut Machine) -> Result<Fetched, EngineError> {
        let ctx = self.context();
        let linear = self.cpu.linear_ip();
        if let Some(id) = self.cache.lookup(linear, ctx) {
            return Ok(Fetched::Block(id));
        }
        let (bytes, page, next_page) = match self.code_bytes(machine, linear)? {
            Code::Bytes {
                bytes,
                page,
                next_page,
            } => (bytes, page, next_page),
            Code::Fault { addr, code } => return self.fetch_fault(machine, addr, code),
        };
        let key = BlockKey { eip: linear, ctx };
        for attempt in 0..2 {
            let t = match self.translator.translate(
                key,
                &bytes,
                GuestPage(page),
                self.cache.next_host_addr(),
            ) {
                Ok(t) => t,
                Err(translate::TranslateError::Truncated { .. })
                    if self.mmu.paging() && next_page.is_none() =>
                {
                    // The first instruction runs into a page the guest's
                    // tables do not let us fetch from.
                    let next = linear.wrapping_add(bytes.len() as u32);
                    let regs = PagingRegs::of(&self.cpu);
                    let code =
                        x86::paging::walk(&mut machine.memory, &regs, next, Access::FETCH, true)
                            .err()
                            .unwrap_or(0);
                    return self.fetch_fault(machine, next, code);
                }
                Err(e) => return Err(self.unsupported(machine, e.to_string())),
            };
            if self.cache.make_room(t.code.len() as u32) && attempt == 0 {
                // The block goes to another chunk (maybe an evicted one):
                // the code was emitted for the old address.
                self.unprotect_orphans()?;
                continue;
            }
            let mut block = t.block;
            // The translator numbers the spill page linearly; SMC works on
            // the physical page behind it.
            if block.spill.is_some() {
                block.spill = next_page.map(GuestPage);
            }
            let spill = block.spill;
            let id = self.cache.insert(block, &t.code).map_err(host_err)?;
            // A step block is discarded after one run, and the write that
            // caused an SMC step must find its page writable.
            if !ctx.step {
                let lp = linear / PAGE_SIZE;
                self.mmu
                    .protect_code(&mut self.monitor, page, lp)
                    .map_err(host_err)?;
                if let Some(s) = spill {
                    self.mmu
                        .protect_code(&mut self.monitor, s.0, lp + 1)
                        .map_err(host_err)?;
                }
            }
            return Ok(Fetched::Block(id));
        }
        Err(host_err(
            "a block does not fit in an empty translation cache",
        ))
    }

    /// Delivers the #PF of an instruction fetch at `addr`.
    fn fetch_fault(
        &mut self,
        machine: &mut Machine,
        addr: u32,
        code: u32,
    ) -> Result<Fetched, EngineError> {
        self.page_fault(machine, addr, code, "guest page fault (fetch)")
            .map(Fetched::Delivered)
    }

    /// Delivers #PF with error `code` and CR2 = `addr` at the current
    /// instruction, counted as an exit of `reason`.
    fn page_fault(
        &mut self,
        machine: &mut Machine,
        addr: u32,
        code: u32,
        reason: &'static str,
    ) -> Result<Next, EngineError> {
        self.stats.exit(reason);
        self.mmu.count_guest_fault();
        self.cpu.cr2 = addr;
        let e = Exception {
            vector: interrupt::vector::PF,
            error_code: Some(code),
        };
        self.exception(machine, e)
    }

    /// Physical pages whose last translation was evicted need no write
    /// protection.
    fn unprotect_orphans(&mut self) -> Result<(), EngineError> {
        for GuestPage(page) in self.cache.take_orphaned_pages() {
            self.mmu
                .unprotect_code(&mut self.monitor, page)
                .map_err(host_err)?;
        }
        Ok(())
    }

    /// Runs translated guest kernel code and handles its exit.
    fn run_kernel(&mut self, machine: &mut Machine) -> Result<Next, EngineError> {
        let resumed = self.resume.take();
        let ctx = self.context();
        let (host, block) = match resumed {
            Some((h, _)) => (h, None),
            None => match self.block_at_eip(machine)? {
                Fetched::Block(id) => (self.cache.host_addr(id).expect("live block"), Some(id)),
                Fetched::Delivered(next) => return Ok(next),
            },
        };
        // Guest TF: the instruction about to run traps (#DB) when it is done.
        let trap_after = resumed.is_none() && self.cpu.eflags & flags::TF != 0;
        self.smc_step = false;
        // Inline STI and POPF leave when they let a waiting interrupt in.
        self.monitor.set_irq_pending(machine.interrupt_pending());
        let t = Instant::now();
        let exit = self
            .monitor
            .run_translated(&mut self.cpu, host, resumed.map(|(_, sels)| sels))
            .map_err(host_err)?;
        self.stats.translated += t.elapsed();
        let next = self.kernel_exit(machine, host, exit, resumed, ctx.step);
        if ctx.step {
            if let Some(id) = block {
                self.cache.discard(id);
            }
        }
        let (next, completed) = next?;
        if trap_after && completed {
            self.cpu.dr[6] |= 1 << 14; // DR6.BS: single step
            return self.exception(
                machine,
                Exception {
                    vector: 1,
                    error_code: None,
                },
            );
        }
        Ok(next)
    }

    /// Handles an exit of translated code; also says whether the guest
    /// instruction that ran completed without an exception.
    fn kernel_exit(
        &mut self,
        machine: &mut Machine,
        host: u32,
        exit: TcExit,
        resumed: Option<(u32, [u16; 6])>,
        step: bool,
    ) -> Result<(Next, bool), EngineError> {
        let cs_base = self.cpu.cs.base;
        match exit {
            TcExit::Interrupted => {
                // Nothing ran; a mid-sequence resume point stays one.
                self.stats.exit("kick before entry");
                self.resume = resumed;
                Ok((Next::Continue, false))
            }
            TcExit::Exit { reason, arg } => {
                self.cpu.eip = arg.wrapping_sub(cs_base);
                match ExitReason::from_code(reason) {
                    Some(ExitReason::Branch) => {
                        self.stats.exit("branch");
                        let mut next = Next::Continue;
                        if !step {
                            let from = self.monitor.scratch()[3];
                            next = self.chain(machine, from)?;
                        }
                        Ok((next, true))
                    }
                    Some(ExitReason::IndirectMiss) => {
                        self.stats.exit("indirect miss");
                        if !step {
                            match self.block_at_eip(machine)? {
                                Fetched::Block(id) => {
                                    self.cache.publish_indirect(id);
                                }
                                Fetched::Delivered(next) => return Ok((next, true)),
                            }
                        }
                        Ok((Next::Continue, true))
                    }
                    Some(ExitReason::Callout) => {
                        self.stats.exit("callout");
                        let n = self.callout(machine)?;
                        Ok((n, !self.last_callout_faulted))
                    }
                    // An inline POPF or STI completed and opened the window
                    // for a waiting interrupt (or set TF): the top of the
                    // loop delivers it, after one more instruction for STI.
                    Some(ExitReason::IrqWindow) => {
                        self.stats.exit("irq window");
                        Ok((Next::Continue, true))
                    }
                    Some(ExitReason::StiShadow) => {
                        self.stats.exit("sti shadow");
                        self.shadow = true;
                        Ok((Next::Continue, true))
                    }
                    None => Err(host_err(format!(
                        "translated code left with unknown reason {reason}"
                    ))),
                }
            }
            TcExit::Signal {
                host_eip,
                exit,
                sels,
            } => self
                .translated_signal(machine, host, host_eip, exit, sels)
                .map(|n| (n, false)),
        }
    }

    /// Chains the direct exit whose `jmp rel32` sits at host address
    /// `from` to the block at CS:EIP (translating it now).
    fn chain(&mut self, machine: &mut Machine, from: u32) -> Result<Next, EngineError> {
        let to = match self.block_at_eip(machine)? {
            Fetched::Block(id) => id,
            Fetched::Delivered(next) => return Ok(next),
        };
        let Some(rec) = self.cache.recreate(from) else {
            return Ok(Next::Continue); // the source block was dropped meanwhile
        };
        let block = self
            .cache
            .block(rec.block)
            .expect("recreated block is live");
        let base = self.cache.host_addr(rec.block).expect("live");
        let off = from - base;
        if let Some(i) = block.exits().iter().position(|e| e.jump_offset == off) {
            // Refusals (context mismatch) just leave the exit unchained.
            let _ = self.cache.chain(rec.block, i, to);
        }
        Ok(Next::Continue)
    }

    /// The guest instruction at CS:EIP, if it can be fetched.
    fn insn_at_eip(&self, machine: &mut Machine) -> Option<iced_x86::Instruction> {
        emulate::fetch(
            &self.cpu,
            &mut GuestLinear::new(&mut machine.memory, &self.cpu),
        )
        .ok()
    }

    /// Whether the instruction at CS:EIP is one the callout emulator
    /// carries out (privileged, sensitive or a far transfer).
    fn sensitive_at_eip(&self, machine: &mut Machine) -> bool {
        self.insn_at_eip(machine)
            .is_some_and(|i| !matches!(kind_of(&i).class(), Class::Innocuous | Class::ControlFlow))
    }

    /// Whether exception `vector` with `error_code`, a #GP(0) at CS:EIP,
    /// came from the shadow segments' limits,
    /// which stop below the monitor region, rather than from the guest's
    /// own limits: the instruction is innocuous (nothing else raises #GP(0)
    /// for it) and one of its memory accesses lands in the monitor region.
    /// Gives the first address in the region it touches and whether it
    /// writes there.
    fn monitor_region_access(
        &self,
        machine: &mut Machine,
        vector: u8,
        error_code: Option<u32>,
    ) -> Option<(u32, bool)> {
        if (vector, error_code) != (interrupt::vector::GP, Some(0)) {
            return None;
        }
        let insn = self.insn_at_eip(machine)?;
        if kind_of(&insn).class() != Class::Innocuous {
            return None;
        }
        let region = self.monitor.layout();
        let mut info = iced_x86::InstructionInfoFactory::new();
        let info = info.info(&insn);
        (0..insn.op_count()).find_map(|op| {
            let is_mem = matches!(
                insn.op_kind(op),
                iced_x86::OpKind::Memory
                    | iced_x86::OpKind::MemorySegSI
                    | iced_x86::OpKind::MemorySegESI
                    | iced_x86::OpKind::MemoryESDI
                    | iced_x86::OpKind::MemoryESEDI
            );
            let at = emulate::linear_address(&self.cpu, &insn, op);
            // An access is at most 16 bytes long.
            let clear =
                u64::from(at) + 16 <= u64::from(region.base()) || u64::from(at) >= region.end();
            if !is_mem || clear {
                return None;
            }
            let write = matches!(
                info.op_access(op),
                iced_x86::OpAccess::Write
                    | iced_x86::OpAccess::ReadWrite
                    | iced_x86::OpAccess::CondWrite
                    | iced_x86::OpAccess::ReadCondWrite
            );
            Some((at.max(region.base()), write))
        })
    }

    /// A guest access to the monitor region: with paging on, a page the
    /// guest's own tables do not map there gets the #PF they call for;
    /// anything else ends the run (popek does not emulate such accesses).
    fn monitor_region(
        &mut self,
        machine: &mut Machine,
        (linear, write): (u32, bool),
    ) -> Result<Next, EngineError> {
        if self.mmu.paging() {
            let access = Access {
                write,
                user: self.cpu.cpl() == 3,
                fetch: false,
            };
            let regs = PagingRegs::of(&self.cpu);
            if let Err(code) = x86::paging::walk(&mut machine.memory, &regs, linear, access, true) {
                return self.page_fault(machine, linear, code, "guest page fault");
            }
        }
        Err(self.monitor_region_error(machine))
    }

    fn monitor_region_error(&self, machine: &Machine) -> EngineError {
        self.unsupported(
            machine,
            format!(
                "the guest accessed linear memory at or above {:#010x}, which the monitor \
                 reserves for itself (there is no RAM there); popek does not emulate such accesses",
                self.monitor.layout().base()
            ),
        )
    }

    /// Whether the guest instruction at CS:EIP is RET or an indirect JMP
    /// or CALL (the rewrites that borrow EAX and ECX).
    fn indirect_branch_at_eip(&self, machine: &mut Machine) -> bool {
        self.insn_at_eip(machine).is_some_and(|i| {
            matches!(
                kind_of(&i),
                Kind::Ret | Kind::JmpIndirect | Kind::CallIndirect
            )
        })
    }

    /// A host signal inside translated code.
    fn translated_signal(
        &mut self,
        machine: &mut Machine,
        entered: u32,
        host_eip: u32,
        exit: DirectExit,
        sels: [u16; 6],
    ) -> Result<Next, EngineError> {
        let cs_base = self.cpu.cs.base;
        let rec = self.cache.recreate(host_eip);
        // Stopped right before the instruction after an inline STI: it is
        // in STI's interrupt shadow and must run before an interrupt.
        if rec.is_some_and(|r| r.at_boundary) && host_eip == self.monitor.sti_shadow_at() {
            self.shadow = true;
        }
        match exit {
            DirectExit::Interrupted => {
                self.stats.exit("kick");
                match rec {
                    Some(r) if r.at_boundary => self.cpu.eip = r.guest_eip.wrapping_sub(cs_base),
                    // Inside a rewrite, a stub or the miss handler: the
                    // registers are mid-sequence. Finish the sequence first;
                    // the next exit will see the interrupt.
                    _ => self.resume = Some((host_eip, sels)),
                }
                Ok(Next::Continue)
            }
            DirectExit::Fault {
                vector,
                error_code,
                cr2,
            } => {
                self.stats.exit("fault in translated code");
                let Some(r) = rec else {
                    return Err(host_err(format!(
                        "fault {vector} at host {host_eip:#x} outside any translation (entered at {entered:#x})"
                    )));
                };
                self.cpu.eip = r.guest_eip.wrapping_sub(cs_base);
                if !r.at_boundary && self.indirect_branch_at_eip(machine) {
                    // An indirect branch's operand load or push faulted
                    // after its rewrite borrowed EAX and ECX; the scratch
                    // slots hold the guest's values.
                    let s = self.monitor.scratch();
                    self.cpu.eax = s[0];
                    self.cpu.ecx = s[1];
                }
                if let Some(at) = self.monitor_region_access(machine, vector, error_code) {
                    return self.monitor_region(machine, at);
                }
                match vector {
                    14 => self.host_page_fault(machine, cr2.unwrap_or(0), error_code.unwrap_or(0)),
                    _ => self.exception(machine, Exception { vector, error_code }),
                }
            }
            DirectExit::HostBus { addr } => Err(self.unsupported(
                machine,
                format!("guest RAM behind {addr:#x} is missing (host SIGBUS)"),
            )),
            other => Err(host_err(format!(
                "unexpected exit {other:?} from translated code at host {host_eip:#x}"
            ))),
        }
    }
}
