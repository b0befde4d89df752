//! The hardware-assisted engine: the same [`Machine`] (RAM, devices,
//! loaders) run under KVM, so binary translation can be compared with it.
//!
//! popek keeps its own PIC and PIT in user space (no in-kernel irqchip), so
//! this engine injects interrupts itself with KVM_INTERRUPT and kicks the
//! vCPU out of KVM_RUN when the virtual timer comes due. The loop around
//! KVM_RUN is the machine's ([`machine::vcpu`]); vcpu.rs is what KVM puts
//! into it.

#![warn(missing_docs)]

mod confine;
mod fallback;
mod kick;
mod msr;
pub mod probe;
pub mod regs;
mod stats;
mod vcpu;

use std::os::fd::AsRawFd;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::Kvm;
use machine::{Engine, EngineError, Exit, Machine};

pub use probe::{Flavour, HostKvm};
pub use stats::KvmStats;
use vcpu::KvmVcpu;

/// KVM_INTERRUPT: `_IOW(KVMIO, 0x86, struct kvm_interrupt)`. kvm-ioctls does
/// not wrap it because it assumes an in-kernel irqchip. The vCPU issues it,
/// the sandbox allows it.
const KVM_INTERRUPT: libc::c_ulong = 0x4004_AE86;

/// The KVM engine.
pub struct KvmEngine {
    kvm: Kvm,
    host: HostKvm,
    /// Confine the process once the vCPU runs (see [`KvmEngine::new`]).
    sandboxed: bool,
    /// Exit counts of the last run.
    pub stats: KvmStats,
}

fn host_err(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Host(format!("{what}: {e}"))
}

impl KvmEngine {
    /// Opens /dev/kvm, or says plainly why the KVM engine cannot run here.
    ///
    /// Its run confines the whole process (every thread) to the engine's
    /// allowlist once the vCPU and the kicker exist (`confine.rs`): from
    /// then on the process makes no other system call, so it runs one
    /// guest, and every thread it has must be running before the run.
    pub fn new() -> Result<Self, EngineError> {
        let (kvm, host) = probe::probe().map_err(EngineError::HostUnsupported)?;
        Ok(KvmEngine {
            kvm,
            host,
            sandboxed: true,
            stats: KvmStats::default(),
        })
    }

    /// The engine without the sandbox, for a process that runs several
    /// guests, or goes on after the run (tests that run engines on the
    /// test harness's threads).
    pub fn without_sandbox(self) -> Self {
        KvmEngine {
            sandboxed: false,
            ..self
        }
    }

    /// What the probe found about this host's KVM.
    pub fn host(&self) -> &HostKvm {
        &self.host
    }
}

impl Engine for KvmEngine {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn stats_table(&self) -> String {
        self.stats.to_string()
    }

    fn run(&mut self, machine: &mut Machine) -> Result<Exit, EngineError> {
        let vm = self
            .kvm
            .create_vm()
            .map_err(|e| host_err("KVM_CREATE_VM", e))?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: machine.memory.size(),
            userspace_addr: machine.memory.host_base() as u64,
        };
        // SAFETY: the region is the machine's RAM mapping, which lives as long
        // as `machine`, and `machine` outlives `vm` (dropped at the end of run).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| host_err("KVM_SET_USER_MEMORY_REGION", e))?;
        // Before the vCPU exists: KVM applies the filter when it enters it.
        let msrs_taken = msr::take_msrs(&self.kvm, &vm).map_err(|e| host_err("MSR filter", e))?;
        if !msrs_taken {
            tracing::info!(
                "this host's KVM answers every MSR itself (no user-space MSR exits): \
                 the local APIC cannot be moved or disabled through its base MSR"
            );
        }
        // Intel needs a TSS area for real mode; other flavours may refuse it.
        if let Err(e) = vm.set_tss_address(0xFFFB_D000) {
            tracing::debug!("KVM_SET_TSS_ADDR refused ({e}); fine outside VT-x");
        }
        let mut vcpu = vm
            .create_vcpu(0)
            .map_err(|e| host_err("KVM_CREATE_VCPU", e))?;
        let cpuid = cpuid::kvm_cpuid(&x86::cpuid::CpuidModel::default());
        if let Err(e) = vcpu.set_cpuid2(&cpuid) {
            return Err(host_err("KVM_SET_CPUID2 (popek's CPU model)", e));
        }
        let mut regs = vcpu.get_regs().map_err(|e| host_err("KVM_GET_REGS", e))?;
        let mut sregs = vcpu.get_sregs().map_err(|e| host_err("KVM_GET_SREGS", e))?;
        regs::to_kvm(&machine.entry, &mut regs, &mut sregs);
        vcpu.set_sregs(&sregs)
            .map_err(|e| host_err("KVM_SET_SREGS", e))?;
        vcpu.set_regs(&regs)
            .map_err(|e| host_err("KVM_SET_REGS", e))?;

        let kicker = Kicker::start(&mut vcpu.get_kvm_run().immediate_exit)
            .map_err(|e| host_err("starting the vCPU kicker", e))?;
        // Every thread runs now (the kicker waited for its own start):
        // from here on the process cannot open, map code, signal others or
        // make another VM, whatever the guest does to KVM or the devices.
        if self.sandboxed {
            confine::confine(vcpu.as_raw_fd()).map_err(|e| host_err("confining the process", e))?;
        }
        self.stats = KvmStats::default();
        let mut cpu = KvmVcpu {
            fd: &mut vcpu,
            kicker: &kicker,
            host: &self.host,
            stats: &mut self.stats,
            msrs: msr::UserMsrs::new(&machine.entry),
            fallback_if: None,
            window_wanted: false,
        };
        let result = machine::vcpu::run(&mut cpu, machine);
        drop(kicker);
        machine.flush_console();
        result
    }
}

use kick::Kicker;

mod cpuid;
