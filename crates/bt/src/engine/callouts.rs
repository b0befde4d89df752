//! Callouts: the guest instructions translated code and direct execution
//! hand to the monitor, carried out one at a time by the emulator
//! (`x86::emulate`) on the virtual CPU through the machine's emulator
//! adapter (`Machine::emulation`: port I/O to the port bus, memory past
//! RAM to the MMIO bus), and what they change around the vCPU afterwards
//! (paging, translations of pages the emulator wrote, HLT, phase markers).

use machine::{EngineError, Machine};
use x86::classify::{kind_of, Kind};
use x86::emulate;
use x86::interrupt::Unsupported;
use x86::state::flags;

use super::code_pages;
use super::interrupts;
use super::stats::{Marker, PhaseStart};
use super::vm::{Next, Vm};

/// Elements of a REP string instruction past which [`try_callout`]
/// declines.
const REP_MAX: u32 = 16;

/// Carries out the instruction at CS:EIP with the emulator.
pub(super) fn callout(vm: &mut Vm, machine: &mut Machine) -> Result<Next, EngineError> {
    // Never declined: `None` only comes with `may_decline`.
    carry_out(vm, machine, false, None).map(|next| next.unwrap_or(Next::Continue))
}

/// Carries out a SYSENTER or SYSCALL of guest user code whose address the
/// host's fast system-call path lost
/// ([`crate::monitor::DirectExit::FastSystemCall`]): the instruction is
/// decoded from its own bytes, not fetched.
pub(super) fn fast_system_call(
    vm: &mut Vm,
    machine: &mut Machine,
    sysenter: bool,
) -> Result<Next, EngineError> {
    if sysenter {
        if let Some(next) = known_fast_call(vm, false) {
            return Ok(next);
        }
    }
    known(vm, machine, if sysenter { &SYSENTER } else { &SYSCALL })
}

/// `int $0x80`.
pub(super) const INT80: [u8; 2] = [0xCD, 0x80];
/// IRET with a 32-bit operand.
pub(super) const IRETD: [u8; 1] = [0xCF];
const SYSENTER: [u8; 2] = [0x0F, 0x34];
const SYSCALL: [u8; 2] = [0x0F, 0x05];

/// Carries out the instruction at CS:EIP, known to be `bytes` (the exit
/// said which), without fetching it from guest memory: the general path
/// otherwise, effects and faults included.
pub(super) fn known(vm: &mut Vm, machine: &mut Machine, bytes: &[u8]) -> Result<Next, EngineError> {
    let insn = iced_x86::Decoder::with_ip(32, bytes, u64::from(vm.cpu.eip), 0).decode();
    carry_out(vm, machine, false, Some(insn)).map(|next| next.unwrap_or(Next::Continue))
}

/// Carries out the SYSEXIT at CS:EIP that translated code left at
/// ([`crate::contract::ExitReason::Sysexit`]).
pub(super) fn sysexit(vm: &mut Vm, machine: &mut Machine) -> Result<Next, EngineError> {
    match known_fast_call(vm, true) {
        Some(next) => Ok(next),
        None => callout(vm, machine),
    }
}

/// SYSENTER, or SYSEXIT with `exit`, without the general path's fetch,
/// decode and effects (one of each per system call through Linux's
/// vDSO): the emulator's own rule on the CPU state, and what the general
/// path would then do for it. None where it faults, with nothing changed:
/// the general path then carries the instruction out again and delivers
/// the exception.
fn known_fast_call(vm: &mut Vm, exit: bool) -> Option<Next> {
    emulate::fast_system_call(&mut vm.cpu, &vm.extras.cpuid, exit).ok()?;
    let kind = if exit { Kind::Sysexit } else { Kind::Sysenter };
    vm.stats.callout(kind.name());
    vm.last_callout_faulted = false;
    vm.shadow = false;
    // As `carry_out` decides for SYSENTER and SYSEXIT: no device touched.
    vm.go_on = true;
    Some(Next::Continue)
}

/// [`callout`] for a memory access the host CPU could also make once the
/// page is mapped: `None`, with nothing changed, where the emulator does
/// not model the instruction.
pub(super) fn try_callout(vm: &mut Vm, machine: &mut Machine) -> Result<Option<Next>, EngineError> {
    carry_out(vm, machine, true, None)
}

/// Carries out `given`, or the instruction fetched at CS:EIP.
fn carry_out(
    vm: &mut Vm,
    machine: &mut Machine,
    may_decline: bool,
    given: Option<iced_x86::Instruction>,
) -> Result<Option<Next>, EngineError> {
    let (mem, mut plat) = machine.emulation(&vm.cpu, &mut vm.extras);
    let mut mem = mem.with_walks(&mut vm.walks);
    let fetched = match given {
        Some(i) => Ok(i),
        None => emulate::fetch(&vm.cpu, &mut mem),
    };
    let insn = match fetched {
        Ok(i) => i,
        Err(e) => {
            // Same view: a #PF's CR2 travels with it.
            let r = emulate::deliver_fault(&mut vm.cpu, &mut mem, e);
            let written = std::mem::take(&mut mem.written);
            code_pages::after_writes(vm, &written)?;
            if matches!(&r, Ok(eff) if eff.cr3_written) {
                // Through a task gate, into another address space.
                code_pages::paging_update(vm, machine, true, None)?;
            }
            return interrupts::settle(vm, machine, r).map(Some);
        }
    };
    let kind = kind_of(&insn);
    // The emulator moves a string an element at a time, each through the
    // guest's tables: a long one is cheaper on a mapped page.
    if may_decline && (insn.has_rep_prefix() || insn.has_repne_prefix()) && vm.cpu.ecx > REP_MAX {
        return Ok(None);
    }
    let r = emulate::execute_and_deliver(&mut vm.cpu, &mut mem, &mut plat, &insn);
    if may_decline && kind == Kind::Ident && matches!(r, Err(Unsupported::Feature(_))) {
        // A data instruction left unchanged what it would have touched.
        return Ok(None);
    }
    vm.stats.callout(kind.name());
    // The view borrows the CPU's extras too (one lifetime for both
    // halves of the adapter): take what it wrote and let it go.
    let written = std::mem::take(&mut mem.written);
    code_pages::after_writes(vm, &written)?;
    if let Ok(eff) = &r {
        if eff.cr_written || eff.paging_changed || eff.cr3_written || eff.tlb_flush_page.is_some() {
            code_pages::paging_update(vm, machine, eff.cr3_written, eff.tlb_flush_page)?;
        }
    }
    let eff = match r {
        Ok(eff) => eff,
        Err(failure) => {
            return machine
                .model_failure(failure, Some(kind.name()), vm.cpu.clone())
                .map(|end| Some(Next::End(end)))
        }
    };
    if matches!(kind, Kind::InOut | Kind::InsOuts) {
        take_markers(vm, machine);
    }
    if kind == Kind::Wrmsr {
        // A WRMSR to IA32_TSC moves the guest's TSC off the host's:
        // translated RDTSC must become a callout, and every block made
        // with a native one goes (and the other way round).
        let native = vm.extras.tsc_offset() == 0;
        if native != vm.translator.native_tsc() {
            vm.translator.set_native_tsc(native);
            vm.cache.flush();
        }
    }
    vm.last_callout_faulted = eff.delivered.is_some();
    vm.shadow = eff.interrupt_shadow;
    // A data segment load, an IRET, an INT n, a SYSENTER or SYSEXIT, a CR3
    // write or an INVLPG touches no device or timer: nothing a turn of the
    // vCPU loop (device poll, alarm) would act on; the dispatcher goes on
    // unless an interrupt waits. Linux loads three data segments at each
    // kernel entry and three at each exit, every system call is an INT and
    // an IRET or a SYSENTER and a SYSEXIT, and a fork+wait round writes CR3
    // four times.
    let segment_load = matches!(kind, Kind::MovToSreg | Kind::PopSreg);
    let tlb_only =
        kind == Kind::Invlpg || (kind == Kind::MovCr && eff.cr3_written && !eff.paging_changed);
    vm.go_on = (segment_load
        || tlb_only
        || matches!(
            kind,
            Kind::Iret | Kind::Int | Kind::Sysenter | Kind::Sysexit
        ))
        && !vm.last_callout_faulted
        && !vm.shadow;
    if segment_load && vm.go_on && vm.cpu.cpl() == 0 {
        cache_segment(vm, machine, &insn)?;
    }
    if eff.halted {
        // The machine's vCPU loop waits for the interrupt that wakes it.
        return Ok(Some(Next::Halt {
            interrupts: vm.cpu.eflags & flags::IF != 0,
        }));
    }
    Ok(Some(Next::Continue))
}

/// Ends a phase at each new marker: a POST code the guest wrote to port
/// 0x80 (which the machine's port-0x80 device keeps), or, when asked for
/// instead, a console line mark. Both come from port output, so looking
/// after each port I/O callout is enough. Each look takes two locks and
/// may allocate (~6% of a port read's exit in `perf` of nano/in): only a
/// change of [`Machine::markers_written`] makes one.
fn take_markers(vm: &mut Vm, machine: &Machine) {
    let written = machine.markers_written();
    if written == vm.markers_written {
        return;
    }
    vm.markers_written = written;
    let (mut codes, seen) = machine.post_codes_since(vm.markers_seen);
    vm.markers_seen = seen;
    if machine.marks_lines() {
        // Console lines replace POST codes as markers.
        codes.clear();
    }
    let (lines, seen) = machine.line_marks_since(vm.marks_seen);
    vm.marks_seen = seen;
    let markers = codes
        .into_iter()
        .map(Marker::Post)
        .chain(lines.into_iter().map(Marker::Line));
    for marker in markers {
        end_phase(vm, marker);
    }
}

/// Ends the current phase at `marker` and starts the next.
pub(super) fn end_phase(vm: &mut Vm, marker: Marker) {
    vm.settle_times();
    let now = PhaseStart::now(&vm.stats, vm.cache_stats(), *vm.mmu.stats());
    let phase = vm.phase_start.until(&now, marker);
    vm.stats.phases.push(phase);
    vm.phase_start = now;
}

/// After a load of DS, ES, FS or GS from the GDT at CPL 0: lets translated
/// code do the next load of that selector by itself (monitor/seg_cache.rs),
/// while the guest's descriptor keeps its bytes.
fn cache_segment(
    vm: &mut Vm,
    machine: &mut Machine,
    insn: &iced_x86::Instruction,
) -> Result<(), EngineError> {
    use iced_x86::Register;
    use x86::descriptor::{Selector, Table};
    use x86::interrupt::LinearMemory;
    let seg = match insn.op0_register() {
        Register::DS => vm.cpu.ds,
        Register::ES => vm.cpu.es,
        Register::FS => vm.cpu.fs,
        Register::GS => vm.cpu.gs,
        _ => return Ok(()),
    };
    let (sel, gdtr) = (Selector(seg.selector), vm.cpu.gdtr);
    if sel.is_null() || sel.table() != Table::Gdt {
        return Ok(());
    }
    let Some(desc_at) = sel.descriptor_address(&gdtr, &vm.cpu.ldtr) else {
        return Ok(());
    };
    let mut desc = [0u8; 8];
    let (mut mem, _) = machine.emulation(&vm.cpu, &mut vm.extras);
    if mem.read_supervisor(desc_at, &mut desc).is_err() {
        return Ok(());
    }
    // A shadow the monitor cannot make (expand-down, say) stays a callout.
    let _ = vm
        .monitor
        .cache_segment(gdtr, &seg, desc_at, u64::from_le_bytes(desc));
    Ok(())
}
