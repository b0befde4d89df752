//! How a device asks the engine to stop the VM (the debug-exit port, the
//! i8042 reset line, ACPI power-off): it records a reason that the run loop checks after
//! every I/O exit.

use std::sync::{Arc, Mutex};

/// Why a device asked the VM to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The guest wrote `value` to the isa-debug-exit port: the process exits
    /// with status `(value << 1) | 1`.
    DebugExit(u32),
    /// The guest pulsed the reset line (i8042 command 0xFE).
    Reset,
    /// The guest entered ACPI S5 (soft off) through PM1a_CNT.
    PowerOff,
}

impl StopReason {
    /// The process exit status this stop maps to.
    pub fn exit_status(self) -> i32 {
        match self {
            StopReason::DebugExit(v) => ((v << 1) | 1) as i32 & 0xFF,
            StopReason::Reset | StopReason::PowerOff => 0,
        }
    }
}

/// A cloneable handle through which devices request a stop.
#[derive(Clone, Default)]
pub struct StopHandle(Arc<Mutex<Option<StopReason>>>);

impl StopHandle {
    /// A handle with no stop requested.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a stop request; the first request wins.
    pub fn request(&self, reason: StopReason) {
        let mut s = self.0.lock().unwrap();
        if s.is_none() {
            *s = Some(reason);
        }
    }

    /// Takes the pending request, if any.
    pub fn take(&self) -> Option<StopReason> {
        self.0.lock().unwrap().take()
    }

    /// True if a stop was requested and not yet taken.
    pub fn is_requested(&self) -> bool {
        self.0.lock().unwrap().is_some()
    }
}
