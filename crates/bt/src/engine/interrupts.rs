//! Delivery of interrupts and exceptions to the guest, through its IDT
//! (x86::interrupt and x86::emulate do the architectural work; this says
//! when, and what a failed delivery does to the run).

use machine::memory::GuestLinear;
use machine::{EngineError, Machine};
use x86::emulate;
use x86::interrupt::{self, Event, Exception, Unsupported};
use x86::state::flags;

use super::code_pages;
use super::vm::{Next, Vm};

/// Delivers the CPU's pending interrupt (the 8259A's through LINT0, or
/// the local APIC's) if the guest can take it now.
pub(super) fn interrupt(vm: &mut Vm, machine: &mut Machine) -> Result<Next, EngineError> {
    if std::mem::take(&mut vm.shadow) {
        // The instruction after STI or MOV SS runs alone (a step
        // block), so that the interrupt comes right after it.
        if vm.cpu.cpl() != 3 && vm.cpu.eflags & flags::IF != 0 && machine.interrupt_pending() {
            vm.smc_step = true;
        }
        return Ok(Next::Continue);
    }
    if vm.resume.is_some() || vm.cpu.eflags & flags::IF == 0 || !machine.interrupt_pending() {
        return Ok(Next::Continue);
    }
    let vector = machine.acknowledge_interrupt();
    vm.stats.interrupts += 1;
    deliver(vm, machine, vector, Event::External)
}

/// Delivers an external interrupt or a software interrupt (INT3, INTO)
/// through the guest's IDT.
pub(super) fn deliver(
    vm: &mut Vm,
    machine: &mut Machine,
    vector: u8,
    event: Event,
) -> Result<Next, EngineError> {
    let cr3 = vm.cpu.cr3;
    let mut mem = GuestLinear::new(&mut machine.memory, &vm.cpu).with_walks(&mut vm.walks);
    let r = interrupt::deliver_event(&mut vm.cpu, &mut mem, vector, event);
    let written = std::mem::take(&mut mem.written);
    code_pages::after_writes(vm, &written)?;
    task_switched(vm, machine, cr3)?;
    settle(vm, machine, r)
}

/// After a delivery through a task gate, which loads the new task's CR3:
/// the shadow MMU follows it, as it follows MOV to CR3 (a switch that
/// keeps CR3 flushes nothing).
fn task_switched(vm: &mut Vm, machine: &mut Machine, cr3: u32) -> Result<(), EngineError> {
    if vm.cpu.cr3 != cr3 {
        code_pages::paging_update(vm, machine, true, None)?;
    }
    Ok(())
}

/// The end of a delivery or emulated operation: run on, or the machine's
/// report of what the x86 model could not complete (a triple fault ends
/// the run, an unsupported feature ends it with an error).
pub(super) fn settle<T>(
    vm: &mut Vm,
    machine: &Machine,
    r: Result<T, Unsupported>,
) -> Result<Next, EngineError> {
    match r {
        Ok(_) => Ok(Next::Continue),
        Err(failure) => machine
            .model_failure(failure, None, vm.cpu.clone())
            .map(Next::End),
    }
}

/// Delivers exception `e` at the current guest instruction.
pub(super) fn exception(
    vm: &mut Vm,
    machine: &mut Machine,
    e: Exception,
) -> Result<Next, EngineError> {
    let cr3 = vm.cpu.cr3;
    if e.vector == interrupt::vector::PF {
        // A fault the shadow found (no view's walk): the CPU drops the
        // TLB entries for its address all the same.
        vm.walks.flush();
    }
    let mut mem = GuestLinear::new(&mut machine.memory, &vm.cpu).with_walks(&mut vm.walks);
    let r = emulate::deliver_fault(&mut vm.cpu, &mut mem, e);
    let written = std::mem::take(&mut mem.written);
    code_pages::after_writes(vm, &written)?;
    task_switched(vm, machine, cr3)?;
    settle(vm, machine, r)
}

/// Delivers #PF with error `code` and CR2 = `addr` at the current
/// instruction, counted as an exit of `reason`.
pub(super) fn page_fault(
    vm: &mut Vm,
    machine: &mut Machine,
    addr: u32,
    code: u32,
    reason: &'static str,
) -> Result<Next, EngineError> {
    vm.stats.exit(reason);
    vm.mmu.count_guest_fault();
    vm.cpu.cr2 = addr;
    let e = Exception {
        vector: interrupt::vector::PF,
        error_code: Some(code),
    };
    exception(vm, machine, e)
}
