//! The vCPU loop both engines run, and the reports they end runs with.
//!
//! One turn of the loop: poll the devices (timers, console input), let the
//! engine inject a pending interrupt, arm the engine's kick for the next
//! timer event, let the engine run the guest to its next exit and handle
//! it, then end the run if a device asked to (debug exit, reset). HLT
//! waits here until an interrupt can wake the guest. An engine supplies
//! only what differs between binary translation and KVM: the [`Vcpu`]
//! trait.

use std::time::Duration;

use x86::interrupt::Unsupported;
use x86::state::cr0;
use x86::CpuState;

use crate::engine::{EngineError, Exit, GuestFault};
use crate::machine::{Machine, Poll};

/// How long a halted vCPU sleeps at most before polling devices again.
pub const HALT_POLL: Duration = Duration::from_millis(50);

/// How an engine's [`Vcpu::step`] ended.
#[derive(Debug)]
pub enum Step {
    /// Run on.
    Continue,
    /// The guest executed HLT with IF as `interrupts` says: wait for an
    /// interrupt before the next step.
    Halt {
        /// EFLAGS.IF when the guest halted.
        interrupts: bool,
    },
    /// The run is over.
    End(Exit),
}

/// An engine's virtual CPU as the loop drives it.
pub trait Vcpu {
    /// Before each step: delivers the pending interrupt
    /// ([`Machine::interrupt_pending`]) if the guest can take it now, or
    /// arranges to exit as soon as it can. `Some(exit)`
    /// ends the run (a delivery that triple-faulted).
    fn inject(&mut self, machine: &mut Machine) -> Result<Option<Exit>, EngineError>;

    /// Makes guest code give control back `after` from now (the virtual
    /// timer's next interrupt), or not at all for `None`.
    fn arm_kick(&mut self, after: Option<Duration>);

    /// Runs the guest to its next exit and handles that exit.
    fn step(&mut self, machine: &mut Machine) -> Result<Step, EngineError>;

    /// The guest CPU state, for the report of a run that ends halted.
    fn state(&mut self) -> Result<CpuState, EngineError>;
}

/// Runs `vcpu` until the guest, a device or the user ends the run.
pub fn run(vcpu: &mut impl Vcpu, machine: &mut Machine) -> Result<Exit, EngineError> {
    loop {
        if machine.poll() == Poll::Quit {
            return Ok(Exit::UserQuit);
        }
        if let Some(exit) = vcpu.inject(machine)? {
            return Ok(exit);
        }
        vcpu.arm_kick(machine.next_timer_event_since_poll());
        let step = vcpu.step(machine)?;
        if let Step::End(exit) = step {
            return Ok(exit);
        }
        // Devices ask only from within a guest access, so a request is
        // always the step's own and comes before the guest's next move.
        if let Some(stop) = machine.take_stop() {
            return Ok(stop.into());
        }
        if let Step::Halt { interrupts } = step {
            match halt(machine, interrupts) {
                Wake::Interrupt => {}
                Wake::Never => return Ok(Exit::Halted(Box::new(vcpu.state()?))),
                Wake::Quit => return Ok(Exit::UserQuit),
            }
        }
    }
}

/// How a halted vCPU's wait ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    /// An interrupt can be delivered: run on.
    Interrupt,
    /// Nothing can ever wake the guest (IF clear, or no timer armed and no
    /// console to type on): the PC's nearest thing to power-off.
    Never,
    /// The user asked to quit while the guest slept.
    Quit,
}

/// HLT with IF as `interrupts`: sleeps until an interrupt controller has
/// an interrupt for the guest, polling timers and console input at most [`HALT_POLL`] apart.
pub fn halt(machine: &mut Machine, interrupts: bool) -> Wake {
    loop {
        if interrupts && machine.interrupt_pending() {
            return Wake::Interrupt;
        }
        if !interrupts || !machine.can_wake() {
            return Wake::Never;
        }
        if machine.wait(HALT_POLL) == Poll::Quit {
            return Wake::Quit;
        }
    }
}

/// Fault reports: how every engine words the runs it cannot continue, with
/// the CPU state and the bytes at CS:EIP.
impl Machine {
    /// A guest fault report: `what`, the CPU state, and the instruction
    /// bytes at CS:EIP when they can be read (paging off: CS:EIP is
    /// physical; with paging a dump without bytes is still useful).
    pub fn fault(&self, what: String, state: CpuState) -> Box<GuestFault> {
        let bytes = if state.cr0 & cr0::PG == 0 {
            let at = u64::from(state.linear_ip());
            let len = self.memory.size().saturating_sub(at).min(16) as usize;
            self.memory
                .slice(at, len)
                .map(<[u8]>::to_vec)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        Box::new(GuestFault { what, state, bytes })
    }

    /// The end of a run whose CPU shut down; `how` says what the engine saw.
    pub fn triple_fault(&self, how: &str, state: CpuState) -> Exit {
        Exit::Shutdown(self.fault(format!("the guest triple-faulted: {how}"), state))
    }

    /// The error for a guest that needs what this engine cannot give it
    /// (on this host).
    pub fn unsupported(&self, what: String, state: CpuState) -> EngineError {
        EngineError::GuestUnsupported(self.fault(what, state))
    }

    /// The end of a run at an instruction or event delivery the x86 model
    /// could not complete: a triple fault ends it as the guest's doing, a
    /// feature popek does not model as an error (`during` names the
    /// instruction, when there was one).
    pub fn model_failure(
        &self,
        failure: Unsupported,
        during: Option<&str>,
        state: CpuState,
    ) -> Result<Exit, EngineError> {
        match failure {
            Unsupported::TripleFault => {
                Ok(self.triple_fault("a fault while delivering a double fault", state))
            }
            Unsupported::Feature(what) => {
                let what = match during {
                    Some(insn) => format!("{what} ({insn})"),
                    None => what.to_string(),
                };
                Err(self.unsupported(
                    format!("the guest needs {what}, which popek does not model"),
                    state,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::machine::{ConsoleInput, MachineBuilder};
    use crate::StopReason;

    /// Something done to the machine at a step (by index) of a script.
    type Hook = (usize, fn(&mut Machine));

    /// A vCPU that plays a script of steps and records what the loop did.
    struct Scripted {
        steps: Vec<Step>,
        injected: usize,
        kicks: Vec<Option<Duration>>,
        /// Run this at the given step (index), before returning it.
        at: Option<Hook>,
        done: usize,
    }

    impl Scripted {
        fn new(steps: Vec<Step>) -> Self {
            Scripted {
                steps,
                injected: 0,
                kicks: Vec::new(),
                at: None,
                done: 0,
            }
        }
    }

    impl Vcpu for Scripted {
        fn inject(&mut self, _machine: &mut Machine) -> Result<Option<Exit>, EngineError> {
            self.injected += 1;
            Ok(None)
        }
        fn arm_kick(&mut self, after: Option<Duration>) {
            self.kicks.push(after);
        }
        fn step(&mut self, machine: &mut Machine) -> Result<Step, EngineError> {
            if let Some((i, f)) = self.at {
                if i == self.done {
                    f(machine);
                }
            }
            self.done += 1;
            assert!(!self.steps.is_empty(), "the loop ran past the script");
            Ok(self.steps.remove(0))
        }
        fn state(&mut self) -> Result<CpuState, EngineError> {
            Ok(CpuState {
                eip: 0x1234,
                ..CpuState::default()
            })
        }
    }

    fn machine() -> Machine {
        crate::machine::test_machine()
    }

    #[test]
    fn a_device_stop_ends_the_run_after_the_step_that_asked() {
        let mut m = machine();
        let mut v = Scripted::new(vec![Step::Continue, Step::Continue, Step::Continue]);
        v.at = Some((1, |m| m.io_out(crate::devices::debug_exit::PORT, &[7])));
        let exit = run(&mut v, &mut m).unwrap();
        assert!(matches!(exit, Exit::DebugExit(7)), "{exit:?}");
        assert_eq!(v.done, 2);
        assert_eq!(v.injected, 2, "inject before every step");
        assert_eq!(v.kicks, vec![None, None], "no timer armed: no kick");
    }

    #[test]
    fn an_acpi_power_off_ends_the_run_with_status_0() {
        let mut m = machine();
        let mut v = Scripted::new(vec![Step::Continue, Step::Continue]);
        v.at = Some((0, |m| {
            use crate::devices::acpi_pm::{control, PM1A_CNT};
            m.io_out(PM1A_CNT, &control::SLP_EN.to_le_bytes());
        }));
        let exit = run(&mut v, &mut m).unwrap();
        assert!(matches!(exit, Exit::PowerOff), "{exit:?}");
        assert_eq!(exit.exit_status(), 0);
    }

    #[test]
    fn a_stop_wins_over_a_halt_in_the_same_step() {
        let mut m = machine();
        let mut v = Scripted::new(vec![Step::Halt { interrupts: false }]);
        v.at = Some((0, |m| m.io_out(crate::devices::i8042::COMMAND, &[0xFE])));
        assert!(matches!(run(&mut v, &mut m).unwrap(), Exit::Reset));
    }

    #[test]
    fn an_engine_end_is_returned_as_is() {
        let mut m = machine();
        let mut v = Scripted::new(vec![Step::Continue, Step::End(Exit::UserQuit)]);
        assert!(matches!(run(&mut v, &mut m).unwrap(), Exit::UserQuit));
        assert_eq!(v.done, 2);
    }

    #[test]
    fn hlt_with_interrupts_off_ends_halted_with_the_engines_state() {
        let mut m = machine();
        let mut v = Scripted::new(vec![Step::Halt { interrupts: false }]);
        match run(&mut v, &mut m).unwrap() {
            Exit::Halted(state) => assert_eq!(state.eip, 0x1234),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hlt_with_nothing_to_wake_it_ends_halted() {
        let mut m = machine();
        assert_eq!(halt(&mut m, true), Wake::Never, "no timer, no console");
    }

    #[test]
    fn hlt_wakes_for_a_pending_interrupt_and_the_loop_runs_on() {
        let mut m = machine();
        // Unmask IRQ 0 on a PIC set up the way guests do it, and raise it
        // by programming the PIT for its shortest period.
        for (port, v) in [
            (0x20, 0x11),
            (0x21, 0x20),
            (0x21, 4),
            (0x21, 1),
            (0x21, 0xFE),
        ] {
            m.io_out(port, &[v]);
        }
        for (port, v) in [(0x43, 0x34), (0x40, 2), (0x40, 0)] {
            m.io_out(port, &[v]);
        }
        let mut v = Scripted::new(vec![
            Step::Halt { interrupts: true },
            Step::End(Exit::Reset),
        ]);
        assert!(matches!(run(&mut v, &mut m).unwrap(), Exit::Reset));
        assert_eq!(v.done, 2, "woke up and stepped again");
        assert!(v.kicks.iter().all(Option::is_some), "{:?}", v.kicks);
    }

    #[test]
    fn quitting_while_halted_ends_the_run() {
        let (tx, rx) = mpsc::channel();
        let mut m = MachineBuilder::new()
            .memory_mib(1)
            .raw_image(0x1000, vec![0xF4], CpuState::default())
            .console(Box::new(std::io::sink()))
            .input(rx)
            .build()
            .unwrap();
        let mut v = Scripted::new(vec![Step::Halt { interrupts: true }]);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(ConsoleInput::Quit).unwrap();
        });
        assert!(matches!(run(&mut v, &mut m).unwrap(), Exit::UserQuit));
        t.join().unwrap();
    }

    #[test]
    fn reports_word_the_same_events_the_same_way() {
        let m = machine();
        let state = CpuState::default();
        match m.model_failure(Unsupported::TripleFault, None, state.clone()) {
            Ok(Exit::Shutdown(f)) => assert_eq!(
                f.what,
                "the guest triple-faulted: a fault while delivering a double fault"
            ),
            other => panic!("{other:?}"),
        }
        match m.model_failure(
            Unsupported::Feature("task switch to a 16-bit TSS"),
            Some("far-jmp"),
            state,
        ) {
            Err(EngineError::GuestUnsupported(f)) => assert_eq!(
                f.what,
                "the guest needs task switch to a 16-bit TSS (far-jmp), which popek does not model"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            Exit::from(StopReason::DebugExit(3)).exit_status(),
            StopReason::DebugExit(3).exit_status()
        );
    }
}
