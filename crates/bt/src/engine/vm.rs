//! One run's state (the [`Vm`]) and what every room of the engine shares:
//! the loop's [`Next`] and the engine's host errors. It imports no room,
//! so every room can import it.

use machine::engine::GuestFault;
use machine::memory::WalkCache;
use machine::platform::CpuExtras;
use machine::{EngineError, Machine};
use x86::paging::PagingRegs;
use x86::CpuState;

use super::alarm::Alarm;
use super::stats::BtStats;
use crate::cache::{CodeBuffer, IndirectTable, TranslationCache};
use crate::mmu::Shadow;
use crate::monitor::Monitor;
use crate::translate::{self, Translator};

/// A host failure as the engine reports it.
pub(super) fn host_err(what: impl std::fmt::Display) -> EngineError {
    EngineError::Host(what.to_string())
}

/// What the loop does after handling an exit: the machine's shared vCPU
/// loop's own step outcome, under the name the rooms use.
pub(super) use machine::vcpu::Step as Next;

/// One run's state: the monitor, the cache and the virtual CPU. Every
/// room of the engine works on it; its fields are the engine's own.
pub(super) struct Vm {
    pub(super) monitor: Monitor,
    pub(super) cache: TranslationCache,
    pub(super) translator: Translator,
    pub(super) cpu: CpuState,
    pub(super) extras: CpuExtras,
    pub(super) alarm: Alarm,
    /// The shadow MMU: guest linear memory as host mappings, and the
    /// physical pages holding translations (mapped without write access).
    pub(super) mmu: Shadow,
    /// Where to resume translated code, with the host selectors it had: a
    /// kick landed inside a rewrite sequence, where the registers do not
    /// hold a guest state.
    pub(super) resume: Option<(u32, [u16; 6])>,
    /// Run the next guest instruction alone, from a page left writable:
    /// it wrote to a page holding translations (or it is the instruction in
    /// an interrupt shadow, after which an interrupt waits).
    pub(super) smc_step: bool,
    /// Interrupts are blocked for one instruction (after STI, MOV SS).
    pub(super) shadow: bool,
    /// The last callout raised an exception (delivered to the guest).
    pub(super) last_callout_faulted: bool,
    /// The last exit touched no device or timer (a callout for a data
    /// segment load, IRET, INT n, SYSENTER, SYSEXIT, a CR3 write or
    /// INVLPG; a shadow fill; a guest #PF delivered): the next run follows
    /// without a turn of the vCPU loop, unless an interrupt waits
    /// (`Vcpu::step`).
    pub(super) go_on: bool,
    /// A page guest user code faulted on and the guest kernel is handling:
    /// at the kernel's callouts (its IRET back, `exits::early_refill`) and
    /// at the next return to user code, the shadow maps it if the guest's
    /// tables now allow a read, saving the host fault of the retry (an
    /// exit from the user-code process and back).
    pub(super) refill: Option<u32>,
    /// The emulator's guest page walks, lent to every callout's and
    /// delivery's view and kept between them as a TLB keeps them: flushed
    /// at CR3 writes, paging changes and INVLPG (`code_pages::paging_update`)
    /// and at every page fault (a view's failed walk, `interrupts::exception`).
    pub(super) walks: WalkCache,
    /// The block whose copied instruction faulted, while that fault is
    /// handled (`exits::translated_signal`): an access to a device
    /// retranslates it with the instruction as a callout
    /// (`faults::emulate_access`).
    pub(super) faulting_block: Option<crate::cache::BlockId>,
    /// Runs of translated code still to enter with the guest's vector
    /// state loaded: a vector gate faulted (translated code wanted it), and
    /// a guest kernel that uses vector instructions uses them again soon.
    /// At 0 the runs go without it ([`Monitor::set_vector_lazy`]).
    pub(super) vector_runs: u32,
    /// Phase markers (POST codes) already taken a snapshot for: the
    /// `seen` of [`Machine::post_codes_since`].
    pub(super) markers_seen: u64,
    /// The same for console line marks ([`Machine::line_marks_since`]).
    pub(super) marks_seen: u64,
    /// [`Machine::markers_written`] when they were last looked at.
    pub(super) markers_written: u64,
    /// The counters at the last marker.
    pub(super) phase_start: super::stats::PhaseStart,
    pub(super) ram_size: u64,
    /// Where translated blocks are logged for perf (`--perf-map`).
    pub(super) perf_map: Option<super::PerfMap>,
    pub(super) stats: BtStats,
    /// Times `stats.direct` and `stats.translated` from these TSC ticks
    /// ([`Vm::settle_times`]).
    pub(super) watch: super::stats::Stopwatch,
    pub(super) direct_ticks: u64,
    pub(super) translated_ticks: u64,
    /// Hot `int $0x80` sites of guest user code (engine/int80.rs).
    pub(super) int80: super::int80::Int80Sites,
}

impl Vm {
    /// Brings `stats.direct` and `stats.translated` up to date with the
    /// ticks counted since: before the counters are read.
    pub(super) fn settle_times(&mut self) {
        self.stats.direct = self.watch.duration(self.direct_ticks);
        self.stats.translated = self.watch.duration(self.translated_ticks);
    }

    /// Sets up a run: the monitor (with a user-code process if `opts`
    /// say so), a translation cache of `opts.tc_size` bytes, the alarm, and the virtual CPU at the machine's entry state.
    pub(super) fn new(
        machine: &mut Machine,
        opts: super::BtOptions,
        perf_map: Option<super::PerfMap>,
    ) -> Result<Vm, EngineError> {
        let mut monitor = if opts.user_process {
            Monitor::with_user_process(&machine.memory)
        } else {
            Monitor::new(&machine.memory)
        }
        .map_err(host_err)?;
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
        let mut extras = CpuExtras::new();
        extras.cpuid.sep = opts
            .sep
            .unwrap_or_else(crate::monitor::host_fast_call_is_sysenter);
        Ok(Vm {
            monitor,
            cache,
            translator: Translator::new(miss),
            cpu: machine.entry.clone(),
            extras,
            alarm,
            mmu: Shadow::new(machine.memory.size(), PagingRegs::of(&machine.entry))
                .split_views(opts.user_process),
            resume: None,
            smc_step: false,
            last_callout_faulted: false,
            go_on: false,
            refill: None,
            walks: WalkCache::default(),
            faulting_block: None,
            int80: super::int80::Int80Sites::new(opts.patch_int80),
            vector_runs: 0,
            shadow: false,
            markers_seen: 0,
            marks_seen: 0,
            markers_written: 0,
            phase_start: super::stats::PhaseStart::now(
                &BtStats::default(),
                Default::default(),
                Default::default(),
            ),
            ram_size: machine.memory.size(),
            perf_map,
            stats: BtStats::default(),
            watch: super::stats::Stopwatch::start(),
            direct_ticks: 0,
            translated_ticks: 0,
        })
    }

    /// The machine's guest fault report ([`Machine::fault`]) at this CPU,
    /// for exits.rs and faults.rs (the other rooms call the machine's).
    pub(super) fn fault(&self, machine: &Machine, what: String) -> Box<GuestFault> {
        machine.fault(what, self.cpu.clone())
    }

    /// The machine's unsupported-guest error ([`Machine::unsupported`]) at
    /// this CPU.
    pub(super) fn unsupported(&self, machine: &Machine, what: String) -> EngineError {
        machine.unsupported(what, self.cpu.clone())
    }

    /// The guest instruction at CS:EIP, if it can be fetched.
    pub(super) fn insn_at_eip(&self, machine: &mut Machine) -> Option<iced_x86::Instruction> {
        x86::emulate::fetch(
            &self.cpu,
            &mut machine::memory::GuestLinear::new(&mut machine.memory, &self.cpu),
        )
        .ok()
    }

    /// The cache's counters with the inline probe's hits added.
    pub(super) fn cache_stats(&self) -> crate::cache::Stats {
        crate::cache::Stats {
            inline_hits: u64::from(self.monitor.inline_hits()),
            ..*self.cache.stats()
        }
    }
}
