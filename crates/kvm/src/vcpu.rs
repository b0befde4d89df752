//! The KVM vCPU as the machine's vCPU loop drives it ([`machine::vcpu`]): one
//! KVM_RUN per step, its exit handed to the machine's buses, interrupts
//! injected with KVM_INTERRUPT, and what KVM's emulator gives up on carried
//! out by popek's.

use std::os::fd::AsRawFd;
use std::time::Duration;

use kvm_bindings::kvm_interrupt;
use kvm_ioctls::{VcpuExit, VcpuFd};
use machine::vcpu::{Step, Vcpu};
use machine::{EngineError, Exit, Machine};
use x86::state::cr0;
use x86::CpuState;

use crate::kick::Kicker;
use crate::probe::{Flavour, HostKvm};
use crate::stats::KvmStats;
use crate::{fallback, host_err, msr, regs, KVM_INTERRUPT};

/// One run's vCPU: the KVM descriptor and what its exits need.
pub(crate) struct KvmVcpu<'a> {
    /// The vCPU.
    pub fd: &'a mut VcpuFd,
    /// Kicks the vCPU out of KVM_RUN at the virtual timer's deadline.
    pub kicker: &'a Kicker,
    /// What this host's KVM is (for the paging message on kvm-pvm).
    pub host: &'a HostKvm,
    /// The run's counters.
    pub stats: &'a mut KvmStats,
    /// The MSRs KVM hands to user space.
    pub msrs: msr::UserMsrs,
    /// EFLAGS.IF after popek carried out an instruction for KVM (the
    /// emulation fallback): kvm_run's interrupt flags still describe the
    /// state before it, and an IRET there may just have opened the window.
    pub fallback_if: Option<bool>,
    /// An interrupt waits for the guest to open its interrupt window.
    pub window_wanted: bool,
}

/// How soon a vCPU with an interrupt waiting for its window is kicked out
/// of KVM_RUN to look again. KVM reports the window opening with an exit
/// of its own (KVM_EXIT_IRQ_WINDOW_OPEN), but kvm-pvm's instruction
/// emulator only looks for it at the next exit it takes anyway, which a
/// guest computing with interrupts on may not take for long.
const WINDOW_POLL: Duration = Duration::from_millis(1);

/// One KVM_RUN's outcome, owned, so the vCPU is free to be queried again.
enum Ran {
    Io,
    Hlt,
    IrqWindow,
    Kicked,
    Mmio,
    /// An RDMSR or WRMSR answered from popek's model; `apic_switched`: it
    /// turned the local APIC on or off.
    Msr {
        apic_switched: bool,
    },
    Shutdown,
    Internal,
    Fail(String),
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

impl Vcpu for KvmVcpu<'_> {
    /// Injects the pending interrupt (8259A or local APIC) if the guest can
    /// take it now, or asks KVM to exit as soon as it can.
    fn inject(&mut self, machine: &mut Machine) -> Result<Option<Exit>, EngineError> {
        let pending = machine.interrupt_pending();
        let fallback_if = self.fallback_if.take();
        let run = self.fd.get_kvm_run();
        self.window_wanted = false;
        if !pending {
            run.request_interrupt_window = 0;
            return Ok(None);
        }
        // Instructions popek carries out never leave an interrupt shadow.
        let ready =
            fallback_if.unwrap_or(run.ready_for_interrupt_injection != 0 && run.if_flag != 0);
        if ready {
            let vector = machine.acknowledge_interrupt();
            run.request_interrupt_window = 0;
            let irq = kvm_interrupt {
                irq: u32::from(vector),
            };
            // SAFETY: KVM_INTERRUPT reads one kvm_interrupt from the pointer,
            // which is valid for the duration of the call.
            let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), KVM_INTERRUPT, &irq) };
            if r == 0 {
                self.stats.interrupts_injected += 1;
            } else {
                tracing::warn!(
                    vector,
                    "KVM_INTERRUPT failed: {}",
                    std::io::Error::last_os_error()
                );
            }
        } else {
            run.request_interrupt_window = 1;
            self.window_wanted = true;
        }
        Ok(None)
    }

    fn arm_kick(&mut self, after: Option<Duration>) {
        let after = match (self.window_wanted, after) {
            (true, Some(t)) => Some(t.min(WINDOW_POLL)),
            (true, None) => Some(WINDOW_POLL),
            (false, t) => t,
        };
        self.kicker.arm(after);
    }

    fn step(&mut self, machine: &mut Machine) -> Result<Step, EngineError> {
        let ran = match self.fd.run() {
            // The exit's data slice does not say the element size of a
            // string I/O (REP OUTSB of 4 bytes looks like one OUTSD), so
            // port I/O is handled from kvm_run once this borrow ends.
            Ok(VcpuExit::IoOut(..) | VcpuExit::IoIn(..)) => Ran::Io,
            Ok(VcpuExit::Hlt) => Ran::Hlt,
            Ok(VcpuExit::IrqWindowOpen) => Ran::IrqWindow,
            Ok(VcpuExit::Intr) => Ran::Kicked,
            Ok(VcpuExit::Shutdown) => Ran::Shutdown,
            // KVM_RUN completes a read with what `data` holds when it next
            // enters the guest.
            Ok(VcpuExit::MmioRead(addr, data)) => {
                machine.mmio_read(addr, data);
                Ran::Mmio
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                machine.mmio_write(addr, data);
                Ran::Mmio
            }
            // A refusal of the model's is #GP(0), which KVM raises.
            Ok(VcpuExit::X86Rdmsr(exit)) => {
                match self.msrs.read(machine, exit.index) {
                    Ok(v) => *exit.data = v,
                    Err(_) => *exit.error = 1,
                }
                Ran::Msr {
                    apic_switched: false,
                }
            }
            Ok(VcpuExit::X86Wrmsr(exit)) => {
                let r = self.msrs.write(machine, exit.index, exit.data);
                *exit.error = u8::from(r.is_err());
                Ran::Msr {
                    apic_switched: r.unwrap_or(false),
                }
            }
            Ok(VcpuExit::FailEntry(reason, _)) => Ran::Fail(format!(
                "KVM refused to enter the guest (hardware entry failure reason {reason:#x})"
            )),
            Ok(VcpuExit::InternalError) => Ran::Internal,
            Ok(other) => Ran::Fail(format!("unexpected KVM exit {other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Ran::Kicked,
            Err(e) => return Err(host_err("KVM_RUN", e)),
        };
        self.fd.set_kvm_immediate_exit(0);
        Ok(match ran {
            Ran::Io => {
                self.stats.io += 1;
                self.port_io(machine);
                Step::Continue
            }
            Ran::Hlt => {
                self.stats.hlt += 1;
                Step::Halt {
                    interrupts: self.fd.get_kvm_run().if_flag != 0,
                }
            }
            Ran::IrqWindow => {
                self.stats.irq_window += 1;
                Step::Continue
            }
            Ran::Kicked => {
                self.stats.kicks += 1;
                Step::Continue
            }
            Ran::Mmio => {
                self.stats.mmio += 1;
                Step::Continue
            }
            Ran::Msr { apic_switched } => {
                self.stats.msr += 1;
                if apic_switched {
                    msr::sync_apic_base(self.fd, machine.apic_base())
                        .map_err(|e| host_err("updating KVM's APIC base", e))?;
                }
                Step::Continue
            }
            Ran::Shutdown => Step::End(self.shutdown(machine)?),
            Ran::Internal => match self.try_fallback(machine)? {
                Fallback::Resumed => Step::Continue,
                Fallback::Ended(exit) => Step::End(exit),
                Fallback::NotMine => return Err(self.internal_error(machine)?),
            },
            Ran::Fail(what) => return Err(machine.unsupported(what, self.state()?)),
        })
    }

    fn state(&mut self) -> Result<CpuState, EngineError> {
        let regs = self
            .fd
            .get_regs()
            .map_err(|e| host_err("KVM_GET_REGS", e))?;
        let sregs = self
            .fd
            .get_sregs()
            .map_err(|e| host_err("KVM_GET_SREGS", e))?;
        Ok(regs::from_kvm(&regs, &sregs))
    }
}

impl KvmVcpu<'_> {
    /// Carries out the port I/O that KVM exited for, one element at a time.
    fn port_io(&mut self, machine: &Machine) {
        let run = self.fd.get_kvm_run();
        // SAFETY: called only after a KVM_EXIT_IO, so `io` is the union
        // member KVM filled.
        let io = unsafe { run.__bindgen_anon_1.io };
        let size = usize::from(io.size);
        let len = size * io.count as usize;
        let base = run as *mut kvm_bindings::kvm_run as *mut u8;
        // SAFETY: KVM places the I/O data at data_offset inside the kvm_run
        // mapping (which spans the whole mmap'd area, not just the struct)
        // and guarantees count * size bytes there.
        let data =
            unsafe { std::slice::from_raw_parts_mut(base.add(io.data_offset as usize), len) };
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

    /// KVM_EXIT_SHUTDOWN: a triple fault, or on kvm-pvm the guest turning
    /// paging on, which this host cannot run.
    fn shutdown(&mut self, machine: &Machine) -> Result<Exit, EngineError> {
        let state = self.state()?;
        if self.host.flavour == Flavour::Pvm && enabling_paging(machine, &state) {
            let what = format!(
                "the guest turned paging on at EIP={:08x}; {}. Run it with --engine bt, or on a host with VT-x or AMD-V.",
                state.eip,
                self.host.describe()
            );
            return Err(machine.unsupported(what, state));
        }
        Ok(machine.triple_fault(
            "the CPU could not deliver a double fault (KVM_EXIT_SHUTDOWN)",
            state,
        ))
    }

    /// The error for an internal error popek could not handle.
    fn internal_error(&mut self, machine: &Machine) -> Result<EngineError, EngineError> {
        let what = format!(
            "KVM could not run the guest (internal error {}: {})",
            self.suberror(),
            internal_error_name(self.suberror())
        );
        Ok(machine.unsupported(what, self.state()?))
    }

    /// The suberror of the KVM_EXIT_INTERNAL_ERROR just taken.
    fn suberror(&mut self) -> u32 {
        // SAFETY: only called after KVM_EXIT_INTERNAL_ERROR, whose union
        // member is `internal`.
        unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal.suberror }
    }

    /// Carries out an instruction KVM's emulator gave up on, if popek knows it.
    fn try_fallback(&mut self, machine: &mut Machine) -> Result<Fallback, EngineError> {
        if self.suberror() != kvm_bindings::KVM_INTERNAL_ERROR_EMULATION {
            return Ok(Fallback::NotMine);
        }
        let regs = self
            .fd
            .get_regs()
            .map_err(|e| host_err("KVM_GET_REGS", e))?;
        let mut sregs = self
            .fd
            .get_sregs()
            .map_err(|e| host_err("KVM_GET_SREGS", e))?;
        let mut state = regs::from_kvm(&regs, &sregs);
        let tr = state.tr;
        match fallback::emulate(&mut state, machine) {
            fallback::Emulated::Done(name) => {
                *self.stats.emulated.entry(name).or_default() += 1;
                if state.tr != tr {
                    self.task_switched(&state)?;
                }
                let mut regs = regs;
                regs::to_kvm(&state, &mut regs, &mut sregs);
                self.fd
                    .set_sregs(&sregs)
                    .map_err(|e| host_err("KVM_SET_SREGS", e))?;
                self.fd
                    .set_regs(&regs)
                    .map_err(|e| host_err("KVM_SET_REGS", e))?;
                self.fallback_if = Some(state.eflags & x86::state::flags::IF != 0);
                Ok(Fallback::Resumed)
            }
            fallback::Emulated::NotMine => Ok(Fallback::NotMine),
            fallback::Emulated::Failed(failure) => machine
                .model_failure(failure, None, state)
                .map(Fallback::Ended),
        }
    }
}

impl KvmVcpu<'_> {
    /// After a task switch the fallback carried out: the debug registers
    /// live outside the registers KVM_SET_SREGS writes, so the switch's
    /// changes to them (DR7's local enables cleared, DR6.BT set for a T
    /// bit's #DB) are made to KVM's copies here.
    fn task_switched(&mut self, state: &CpuState) -> Result<(), EngineError> {
        let mut d = self
            .fd
            .get_debug_regs()
            .map_err(|e| host_err("KVM_GET_DEBUGREGS", e))?;
        d.dr6 |= u64::from(state.dr[6] & x86::task::DR6_BT);
        d.dr7 &= !u64::from(x86::task::DR7_LOCAL_ENABLES);
        self.fd
            .set_debug_regs(&d)
            .map_err(|e| host_err("KVM_SET_DEBUGREGS", e))
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

fn internal_error_name(suberror: u32) -> &'static str {
    match suberror {
        1 => "instruction emulation failed",
        2 => "simultaneous exceptions",
        3 => "delivery event failed",
        4 => "unexpected exit reason",
        _ => "unknown",
    }
}
