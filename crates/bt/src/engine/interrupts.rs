//! Delivery of interrupts and exceptions to the guest, through its IDT
//! (x86::interrupt and x86::emulate do the architectural work; this says
//! when, and what a failed delivery does to the run).

use machine::memory::GuestLinear;
use machine::{EngineError, Exit, Machine};
use x86::emulate;
use x86::interrupt::{self, Event, Exception, Unsupported};
use x86::state::flags;

use super::{Next, Vm};

impl Vm {
    /// Delivers the PIC's interrupt if the guest can take it now.
    pub(super) fn interrupt(&mut self, machine: &mut Machine) -> Result<Next, EngineError> {
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
    pub(super) fn deliver(
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
    pub(super) fn settle<T>(
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
    pub(super) fn exception(
        &mut self,
        machine: &mut Machine,
        e: Exception,
    ) -> Result<Next, EngineError> {
        let mut mem = GuestLinear::new(&mut machine.memory, &self.cpu);
        let r = emulate::deliver_fault(&mut self.cpu, &mut mem, e);
        self.after_writes(&mem.written)?;
        self.settle(machine, r)
    }

    /// Delivers #PF with error `code` and CR2 = `addr` at the current
    /// instruction, counted as an exit of `reason`.
    pub(super) fn page_fault(
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
}
