//! The hardware-assisted engine: the same [`Machine`] (RAM, devices,
//! loaders) run under KVM, so binary translation can be compared with it.
//!
//! popek keeps its own PIC and PIT in user space (no in-kernel irqchip), so
//! this engine injects interrupts itself with KVM_INTERRUPT and kicks the
//! vCPU out of KVM_RUN when the virtual timer comes due.

mod confine;
mod fallback;
mod kick;
pub mod probe;
pub mod regs;
mod stats;

use std::os::fd::AsRawFd;
use std::time::Duration;

use kvm_bindings::{kvm_interrupt, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use machine::machine::Poll;
use machine::{Engine, EngineError, Exit, Machine, StopReason};
use x86::state::cr0;
use x86::CpuState;

pub use probe::{Flavour, HostKvm};
pub use stats::KvmStats;

/// KVM_INTERRUPT: `_IOW(KVMIO, 0x86, struct kvm_interrupt)`. kvm-ioctls does
/// not wrap it because it assumes an in-kernel irqchip.
const KVM_INTERRUPT: libc::c_ulong = 0x4004_AE86;

/// How long a halted vCPU sleeps at most before polling devices again.
const HALT_POLL: Duration = Duration::from_millis(50);

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

    fn guest_state(vcpu: &VcpuFd) -> Result<CpuState, EngineError> {
        let regs = vcpu.get_regs().map_err(|e| host_err("KVM_GET_REGS", e))?;
        let sregs = vcpu.get_sregs().map_err(|e| host_err("KVM_GET_SREGS", e))?;
        Ok(regs::from_kvm(&regs, &sregs))
    }

    /// Injects the PIC's pending interrupt if the guest can take it now, or
    /// asks KVM to exit as soon as it can.
    fn inject(vcpu: &mut VcpuFd, machine: &Machine, stats: &mut KvmStats) {
        let pending = machine.interrupt_pending();
        let run = vcpu.get_kvm_run();
        if !pending {
            run.request_interrupt_window = 0;
            return;
        }
        if run.ready_for_interrupt_injection != 0 && run.if_flag != 0 {
            let vector = machine.acknowledge_interrupt();
            run.request_interrupt_window = 0;
            let irq = kvm_interrupt {
                irq: u32::from(vector),
            };
            // SAFETY: KVM_INTERRUPT reads one kvm_interrupt from the pointer,
            // which is valid for the duration of the call.
            let r = unsafe { libc::ioctl(vcpu.as_raw_fd(), KVM_INTERRUPT, &irq) };
            if r == 0 {
                stats.interrupts_injected += 1;
            } else {
                tracing::warn!(
                    vector,
                    "KVM_INTERRUPT failed: {}",
                    std::io::Error::last_os_error()
                );
            }
        } else {
            run.request_interrupt_window = 1;
        }
    }

    /// Waits while the guest is halted. Returns an exit if the guest can never
    /// wake up again or the user quit.
    fn halt(vcpu: &mut VcpuFd, machine: &mut Machine) -> Result<Option<Exit>, EngineError> {
        let if_set = vcpu.get_kvm_run().if_flag != 0;
        loop {
            if if_set && machine.interrupt_pending() {
                return Ok(None);
            }
            if !if_set || !machine.can_wake() {
                let state = Self::guest_state(vcpu)?;
                return Ok(Some(Exit::Halted(Box::new(state))));
            }
            if machine.wait(HALT_POLL) == Poll::Quit {
                return Ok(Some(Exit::UserQuit));
            }
        }
    }

    fn shutdown(&self, vcpu: &VcpuFd, machine: &Machine) -> Result<Exit, EngineError> {
        let state = Self::guest_state(vcpu)?;
        if self.host.flavour == Flavour::Pvm && Self::enabling_paging(machine, &state) {
            let what = format!(
                "the guest turned paging on at EIP={:08x}; {}. Run it with --engine bt, or on a host with VT-x or AMD-V.",
                state.eip,
                self.host.describe()
            );
            return Err(EngineError::GuestUnsupported(machine.fault(what, state)));
        }
        let what = "the guest triple-faulted (KVM_EXIT_SHUTDOWN): the CPU could not deliver a double fault".to_string();
        Ok(Exit::Shutdown(machine.fault(what, state)))
    }

    /// The error for an internal error popek could not handle.
    fn internal_error(vcpu: &mut VcpuFd, machine: &Machine) -> Result<EngineError, EngineError> {
        // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so the `internal`
        // member of the union is the one KVM filled.
        let suberror = unsafe { vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
        let what = format!(
            "KVM could not run the guest (internal error {suberror}: {})",
            internal_error_name(suberror)
        );
        let state = Self::guest_state(vcpu)?;
        Ok(EngineError::GuestUnsupported(machine.fault(what, state)))
    }

    /// Carries out an instruction KVM's emulator gave up on, if popek knows it.
    fn try_fallback(
        &mut self,
        vcpu: &mut VcpuFd,
        machine: &mut Machine,
    ) -> Result<Fallback, EngineError> {
        // SAFETY: only called for KVM_EXIT_INTERNAL_ERROR, whose union member is `internal`.
        let suberror = unsafe { vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
        if suberror != kvm_bindings::KVM_INTERNAL_ERROR_EMULATION {
            return Ok(Fallback::NotMine);
        }
        let regs = vcpu.get_regs().map_err(|e| host_err("KVM_GET_REGS", e))?;
        let mut sregs = vcpu.get_sregs().map_err(|e| host_err("KVM_GET_SREGS", e))?;
        let mut state = regs::from_kvm(&regs, &sregs);
        match fallback::emulate(&mut state, machine) {
            fallback::Emulated::Done(name) => {
                *self.stats.emulated.entry(name).or_default() += 1;
                let mut regs = regs;
                regs::to_kvm(&state, &mut regs, &mut sregs);
                vcpu.set_sregs(&sregs)
                    .map_err(|e| host_err("KVM_SET_SREGS", e))?;
                vcpu.set_regs(&regs)
                    .map_err(|e| host_err("KVM_SET_REGS", e))?;
                Ok(Fallback::Resumed)
            }
            fallback::Emulated::NotMine => Ok(Fallback::NotMine),
            fallback::Emulated::TripleFault => Ok(Fallback::Ended(Exit::Shutdown(machine.fault(
                "the guest triple-faulted: a fault while delivering a double fault".into(),
                state,
            )))),
            fallback::Emulated::Unsupported(what) => {
                Err(EngineError::GuestUnsupported(machine.fault(
                    format!("the guest needs {what}, which popek does not model"),
                    state,
                )))
            }
        }
    }

    /// kvm-pvm shuts the vCPU down at the MOV to CR0 that sets PG: either CR0
    /// already shows PG, or the instruction at EIP is `mov cr0, r32`.
    fn enabling_paging(machine: &Machine, state: &CpuState) -> bool {
        if state.cr0 & cr0::PG != 0 {
            return true;
        }
        let at = u64::from(state.linear_ip());
        let is_mov_to_cr0 =
            |b: &[u8]| b.len() == 3 && b[0] == 0x0F && b[1] == 0x22 && (b[2] >> 3) & 7 == 0;
        machine.memory.slice(at, 3).is_ok_and(is_mov_to_cr0)
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
        let result = self.run_loop(&mut vcpu, machine, &kicker);
        drop(kicker);
        machine.flush_console();
        result
    }
}

use kick::Kicker;

mod cpuid;

impl KvmEngine {
    fn run_loop(
        &mut self,
        vcpu: &mut VcpuFd,
        machine: &mut Machine,
        kicker: &Kicker,
    ) -> Result<Exit, EngineError> {
        loop {
            if machine.poll() == Poll::Quit {
                return Ok(Exit::UserQuit);
            }
            Self::inject(vcpu, machine, &mut self.stats);
            kicker.arm(machine.next_timer_event());
            let step = match vcpu.run() {
                // The exit's data slice does not say the element size of a
                // string I/O (REP OUTSB of 4 bytes looks like one OUTSD), so
                // port I/O is handled from kvm_run once this borrow ends.
                Ok(VcpuExit::IoOut(..) | VcpuExit::IoIn(..)) => Step::Io,
                Ok(VcpuExit::Hlt) => Step::Hlt,
                Ok(VcpuExit::IrqWindowOpen) => Step::IrqWindow,
                Ok(VcpuExit::Intr) => Step::Kicked,
                Ok(VcpuExit::Shutdown) => Step::Shutdown,
                Ok(VcpuExit::MmioRead(addr, data)) => {
                    // No MMIO devices yet: reads float high, as on a PC bus.
                    tracing::debug!(addr, "MMIO read of unbacked memory");
                    data.fill(0xFF);
                    Step::Mmio
                }
                Ok(VcpuExit::MmioWrite(addr, _)) => {
                    tracing::debug!(addr, "MMIO write to unbacked memory dropped");
                    Step::Mmio
                }
                Ok(VcpuExit::FailEntry(reason, _)) => Step::Fail(format!(
                    "KVM refused to enter the guest (hardware entry failure reason {reason:#x})"
                )),
                Ok(VcpuExit::InternalError) => Step::Internal,
                Ok(other) => Step::Fail(format!("unexpected KVM exit {other:?}")),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Step::Kicked,
                Err(e) => return Err(host_err("KVM_RUN", e)),
            };
            vcpu.set_kvm_immediate_exit(0);
            match step {
                Step::Io => {
                    self.stats.io += 1;
                    port_io(vcpu, machine);
                }
                Step::Hlt => {
                    self.stats.hlt += 1;
                    if let Some(exit) = Self::halt(vcpu, machine)? {
                        return Ok(exit);
                    }
                }
                Step::IrqWindow => self.stats.irq_window += 1,
                Step::Kicked => self.stats.kicks += 1,
                Step::Mmio => self.stats.mmio += 1,
                Step::Shutdown => return self.shutdown(vcpu, machine),
                Step::Internal => match self.try_fallback(vcpu, machine)? {
                    Fallback::Resumed => {}
                    Fallback::Ended(exit) => return Ok(exit),
                    Fallback::NotMine => return Err(Self::internal_error(vcpu, machine)?),
                },
                Step::Fail(what) => {
                    let state = Self::guest_state(vcpu)?;
                    return Err(EngineError::GuestUnsupported(machine.fault(what, state)));
                }
            }
            if let Some(stop) = machine.take_stop() {
                return Ok(match stop {
                    StopReason::DebugExit(v) => Exit::DebugExit(v),
                    StopReason::Reset => Exit::Reset,
                });
            }
        }
    }
}

/// What the user-space fallback made of an emulation failure.
enum Fallback {
    /// The instruction was carried out; run on.
    Resumed,
    /// The instruction ended the run (triple fault).
    Ended(Exit),
    /// Not an instruction popek emulates: report KVM's failure.
    NotMine,
}

/// One KVM_RUN's outcome, owned, so the vCPU is free to be queried again.
enum Step {
    Io,
    Hlt,
    IrqWindow,
    Kicked,
    Mmio,
    Shutdown,
    Internal,
    Fail(String),
}

fn internal_error_name(suberror: u32) -> &'static str {
    match suberror {
        1 => "instruction emulation failed",
        2 => "simultaneous exceptions",
        3 => "delivery event failed",
        4 => "unexpected exit reason",
        _ => "unknown",
    }
}

/// Carries out the port I/O that KVM exited for, one element at a time.
fn port_io(vcpu: &mut VcpuFd, machine: &mut Machine) {
    let run = vcpu.get_kvm_run();
    // SAFETY: called only after a KVM_EXIT_IO, so `io` is the union member
    // KVM filled.
    let io = unsafe { run.__bindgen_anon_1.io };
    let size = usize::from(io.size);
    let len = size * io.count as usize;
    let base = run as *mut kvm_bindings::kvm_run as *mut u8;
    // SAFETY: KVM places the I/O data at data_offset inside the kvm_run
    // mapping (which spans the whole mmap'd area, not just the struct) and
    // guarantees count * size bytes there.
    let data = unsafe { std::slice::from_raw_parts_mut(base.add(io.data_offset as usize), len) };
    if u32::from(io.direction) == kvm_bindings::KVM_EXIT_IO_OUT {
        for chunk in data.chunks(size) {
            machine.io_out(io.port, chunk);
        }
    } else {
        for chunk in data.chunks_mut(size) {
            machine.io_in(io.port, chunk);
        }
    }
}
