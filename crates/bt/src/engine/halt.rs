//! HLT and the machine's stop requests: the part of the run loop that is
//! about the machine rather than about binary translation (the KVM engine
//! has its own copy, to be shared one day).

use std::time::Duration;

use machine::machine::Poll;
use machine::{EngineError, Exit, Machine, StopReason};
use x86::state::flags;

use super::vm::{Next, Vm};

/// How long a halted vCPU sleeps between checks for input.
const HALT_POLL: Duration = Duration::from_millis(50);

/// HLT: sleep until an interrupt can be delivered.
pub(super) fn halt(vm: &mut Vm, machine: &mut Machine) -> Result<Next, EngineError> {
    let if_set = vm.cpu.eflags & flags::IF != 0;
    loop {
        if if_set && machine.interrupt_pending() {
            return Ok(Next::Continue);
        }
        if !if_set || !machine.can_wake() {
            return Ok(Next::End(Exit::Halted(Box::new(vm.cpu.clone()))));
        }
        if machine.wait(HALT_POLL) == Poll::Quit {
            return Ok(Next::End(Exit::UserQuit));
        }
    }
}

/// The exit for a stop a device asked for (debug exit, reset), if any.
pub(super) fn requested_stop(machine: &mut Machine) -> Option<Exit> {
    machine.take_stop().map(|stop| match stop {
        StopReason::DebugExit(v) => Exit::DebugExit(v),
        StopReason::Reset => Exit::Reset,
    })
}
