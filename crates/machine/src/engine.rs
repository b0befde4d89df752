//! The contract between the machine and an execution engine (binary
//! translation or KVM): an engine runs the vCPU of a [`Machine`] until the
//! guest stops, and says why in an [`Exit`].

use std::fmt;

use x86::CpuState;

use crate::machine::Machine;

/// Exit status of a run whose guest triple-faulted.
pub const STATUS_SHUTDOWN: i32 = 6;
/// Exit status of a run stopped because guest code tried to get out of
/// the VM ([`Exit::Escape`]).
pub const STATUS_ESCAPE: i32 = 8;

/// Why a run ended normally (the guest, a device or the user stopped it).
#[derive(Debug)]
pub enum Exit {
    /// The guest wrote `value` to the debug-exit port.
    DebugExit(u32),
    /// The guest reset the machine through the i8042.
    Reset,
    /// The guest powered the machine off (ACPI S5).
    PowerOff,
    /// The guest halted with interrupts disabled and nothing can wake it:
    /// how a kernel that does not use ACPI "powers off".
    Halted(Box<CpuState>),
    /// The guest triple-faulted (or the CPU shut down for another reason).
    Shutdown(Box<GuestFault>),
    /// Guest code stepped outside what the monitor virtualizes (it ran on,
    /// or loaded, a segment of the host's instead of its own) and the VM
    /// was stopped before that could reach the host.
    Escape(Box<GuestFault>),
    /// The user asked to quit (Ctrl-A x on the console).
    UserQuit,
}

impl Exit {
    /// The process exit status for this end of the run.
    pub fn exit_status(&self) -> i32 {
        match self {
            Exit::DebugExit(v) => crate::StopReason::DebugExit(*v).exit_status(),
            Exit::Reset | Exit::PowerOff | Exit::Halted(_) | Exit::UserQuit => 0,
            // Even, so they can never be mistaken for a debug-port exit.
            Exit::Shutdown(_) => STATUS_SHUTDOWN,
            Exit::Escape(_) => STATUS_ESCAPE,
        }
    }
}

/// A device's stop request ends the run as that request's exit.
impl From<crate::StopReason> for Exit {
    fn from(stop: crate::StopReason) -> Exit {
        match stop {
            crate::StopReason::DebugExit(v) => Exit::DebugExit(v),
            crate::StopReason::Reset => Exit::Reset,
            crate::StopReason::PowerOff => Exit::PowerOff,
        }
    }
}

/// A guest-caused failure with the state needed to debug it.
#[derive(Debug)]
pub struct GuestFault {
    /// What happened, in one plain sentence.
    pub what: String,
    /// The guest CPU state at the fault.
    pub state: CpuState,
    /// Instruction bytes at CS:EIP, when readable.
    pub bytes: Vec<u8>,
}

impl fmt::Display for GuestFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.what)?;
        if !self.bytes.is_empty() {
            write!(f, "bytes at CS:EIP:")?;
            for b in &self.bytes {
                write!(f, " {b:02x}")?;
            }
            writeln!(f)?;
        }
        write!(f, "{}", self.state)
    }
}

/// A run that could not continue for a reason outside the guest's control,
/// or a guest the engine cannot run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The host lacks something the engine needs (no /dev/kvm, ...).
    #[error("{0}")]
    HostUnsupported(String),
    /// The guest did something this engine cannot run on this host.
    #[error("{0}")]
    GuestUnsupported(Box<GuestFault>),
    /// A host call failed unexpectedly.
    #[error("host error: {0}")]
    Host(String),
}

/// An execution engine: runs the machine's vCPU until the guest stops.
pub trait Engine {
    /// Short name, as given to `--engine`.
    fn name(&self) -> &'static str;

    /// Runs the guest from the machine's entry state until it stops.
    fn run(&mut self, machine: &mut Machine) -> Result<Exit, EngineError>;

    /// The engine's counters from the last run as a readable table.
    fn stats_table(&self) -> String {
        String::new()
    }

    /// The same counters as one JSON object, for scripts (`--stats-json`);
    /// `None` if the engine has none to offer.
    fn stats_json(&self) -> Option<String> {
        None
    }
}
