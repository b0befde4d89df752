//! The BT engine: the run loop that joins translated guest kernel code
//! (CPL 0) and directly executed guest user code (CPL 3), dispatching every
//! exit to the translation cache, the callout emulator or the devices.
//!
//! One iteration: deliver a pending interrupt if the virtual IF allows it,
//! then run the guest until it exits, either directly (CPL 3) or from the
//! translation of the block at CS:EIP (CPL 0), translating it first on a
//! miss; then handle the exit.
//!
//! The rooms, in DynamoRIO's shape (docs/architecture.md draws the map):
//! - `dispatch`: the run loop, entering the guest, block lookup,
//!   chaining (linking) and the single-step trap;
//! - `fetch`: guest code bytes for the translator, and translating a
//!   block on a lookup miss;
//! - `exits`: what each exit of user code, of translated code and of a
//!   signal means, and every rule that recreates guest state after a
//!   signal in translated code;
//! - `faults`: host page faults (shadow fills, self-modifying code,
//!   memory popek cannot map) and guest accesses to the monitor region;
//! - `callouts`: instructions the monitor carries out for the guest;
//! - `interrupts`: delivering interrupts and exceptions through the
//!   guest's IDT;
//! - `code_pages`: the one owner of guest pages holding translations
//!   (protect, invalidate, unprotect);
//! - `halt`: HLT and the machine's stop requests; [`platform`]: the
//!   emulator's view of the machine (both to move onto a skeleton shared
//!   with the KVM engine).

pub mod alarm;
mod callouts;
mod code_pages;
mod dispatch;
mod exits;
mod faults;
mod fetch;
mod halt;
mod interrupts;
pub mod platform;
pub mod stats;

use std::time::Instant;

use machine::engine::GuestFault;
use machine::{Engine, EngineError, Exit, Machine};
use x86::paging::PagingRegs;
use x86::CpuState;

use crate::cache::code::DEFAULT_TC_SIZE;
use crate::cache::{CodeBuffer, IndirectTable, TranslationCache};
use crate::mmu::Shadow;
use crate::monitor::Monitor;
use crate::translate::{self, Translator};
use alarm::Alarm;
use code_pages::CodePages;
use platform::CpuExtras;
pub use stats::BtStats;

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

    /// The door to the pages holding translations: every protect,
    /// invalidate and unprotect goes through it.
    fn code_pages(&mut self) -> CodePages<'_> {
        CodePages::new(&mut self.cache, &mut self.mmu, &mut self.monitor)
    }

    /// The guest instruction at CS:EIP, if it can be fetched.
    fn insn_at_eip(&self, machine: &mut Machine) -> Option<iced_x86::Instruction> {
        x86::emulate::fetch(
            &self.cpu,
            &mut machine::memory::GuestLinear::new(&mut machine.memory, &self.cpu),
        )
        .ok()
    }

    /// The cache's counters with the inline probe's hits added.
    fn cache_stats(&self) -> crate::cache::Stats {
        crate::cache::Stats {
            inline_hits: u64::from(self.monitor.inline_hits()),
            ..*self.cache.stats()
        }
    }
}
