//! The BT engine: translated guest kernel code (CPL 0) and directly
//! executed guest user code (CPL 3) as one vCPU of the machine's shared
//! loop ([`machine::vcpu`]), dispatching every exit to the translation
//! cache, the callout emulator or the devices.
//!
//! One step of the loop: deliver a pending interrupt if the virtual IF
//! allows it, then run the guest until it exits, either directly (CPL 3)
//! or from the translation of the block at CS:EIP (CPL 0), translating it
//! first on a miss; then handle the exit. Polling the devices, HLT and
//! the devices' stop requests are the shared loop's.
//!
//! The rooms, in DynamoRIO's shape (docs/architecture.md draws the map),
//! are files of free functions over one run's state, `vm::Vm`, which they
//! all import and which imports none of them; a room calls only rooms
//! below it, so no import cycle runs through the engine:
//! - `dispatch`: `Vm` as the loop's `Vcpu`, entering the guest, block
//!   lookup, chaining (linking) and the single-step trap;
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
//!   (protect, invalidate, unprotect).
//!
//! The emulator sees the machine through the adapter the KVM engine uses
//! too (`Machine::emulation`, `machine::platform::CpuExtras`).

pub mod alarm;
mod callouts;
mod code_pages;
mod dispatch;
mod exits;
mod faults;
mod fetch;
mod int80;
mod interrupts;
pub mod perf_map;
pub mod stats;
mod vm;

use std::time::Instant;

use machine::{Engine, EngineError, Exit, Machine};

use crate::cache::code::DEFAULT_TC_SIZE;
pub use perf_map::{GuestSymbols, PerfMap};
pub use stats::BtStats;
use vm::Vm;

/// Options of the BT engine.
#[derive(Clone, Copy, Debug)]
pub struct BtOptions {
    /// Size of the translation cache's code buffer in bytes.
    pub tc_size: u32,
    /// Run guest user code in a process of its own (the default), so that
    /// user/kernel switches need no page re-protection; else in the
    /// monitor's process, as before (docs/perf.md).
    pub user_process: bool,
    /// Advertise SYSENTER (CPUID SEP), so that Linux's vDSO makes its
    /// system calls with it; `None` where the host takes SYSENTER from
    /// 32-bit code through its own fast path (Intel hosts: ~2.5 k cycles to
    /// the monitor's signal handler against ~22 k for `int 0x80` on the VM
    /// host measured in docs/perf.md). AMD hosts raise #UD for it, which
    /// costs at least as much as `int 0x80`'s trap there, and far more
    /// than the `int3` a hot `int $0x80` becomes (`patch_int80`).
    pub sep: Option<bool>,
    /// Run guest `int $0x80` sites that trap often as `int3` from a copy
    /// of their frame (with a user-code process only): the host traps a
    /// breakpoint for a fraction of its `int 0x80` path's cost. Guest user
    /// code that reads such a site sees 0xCC (docs/bt.md).
    pub patch_int80: bool,
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
            user_process: true,
            sep: None,
            patch_int80: true,
        }
    }
}

/// The binary-translation engine.
#[derive(Debug, Default)]
pub struct BtEngine {
    opts: BtOptions,
    perf_map: Option<PerfMap>,
    stats: BtStats,
}

impl BtEngine {
    /// An engine with `opts`.
    pub fn new(opts: BtOptions) -> BtEngine {
        BtEngine {
            opts,
            perf_map: None,
            stats: BtStats::default(),
        }
    }

    /// The same engine, recording every block it translates in `map`.
    pub fn with_perf_map(mut self, map: PerfMap) -> BtEngine {
        self.perf_map = Some(map);
        self
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
        let mut vm = Vm::new(machine, self.opts, self.perf_map.take())?;
        let result = machine::vcpu::run(&mut vm, machine);
        machine.flush_console();
        vm.settle_times();
        if !vm.stats.phases.is_empty() {
            callouts::end_phase(&mut vm, stats::Marker::Exit);
        }
        vm.stats.cache = vm.cache_stats();
        vm.stats.mmu = *vm.mmu.stats();
        vm.stats.set_inlined(vm.monitor.inlined());
        vm.stats.region = vm.monitor.region_stats();
        vm.stats.handoffs = vm.monitor.handoffs();
        vm.stats.total = start.elapsed();
        self.stats = vm.stats;
        result
    }
}
