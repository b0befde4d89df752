//! How setting up or entering guest code fails: the monitor's one error
//! type, apart so that every part of the monitor can name it without
//! importing the monitor itself.

/// Errors setting up or entering direct execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MonitorError {
    /// A Monitor already exists in this process.
    AlreadyCreated,
    /// Something already occupies the low 4 GiB of the process.
    LowSpaceTaken(String),
    /// A host call failed.
    Host(String),
    /// A guest linear range is unaligned or outside the guest's part.
    BadRange {
        /// Start of the range.
        linear: u32,
        /// Length of the range.
        len: u32,
    },
    /// A guest segment cannot be shadowed.
    Segment(String),
    /// The state given to `run_user` is not CPL-3 protected-mode code.
    NotUserMode(String),
    /// The host refused to enter the guest (the `iretq` faulted): the
    /// shadow state was not loadable. The guest state is unchanged.
    EntryFault {
        /// Host signal.
        signal: i32,
        /// Host trap number.
        trapno: u32,
        /// Host error code.
        error_code: u32,
    },
}

impl std::fmt::Display for MonitorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MonitorError::AlreadyCreated => {
                write!(f, "a BT monitor already exists in this process")
            }
            MonitorError::LowSpaceTaken(maps) => write!(
                f,
                "the host process already has mappings below 4 GiB, which the guest needs:\n{maps}"
            ),
            // Engines wrap this in their own "host error:".
            MonitorError::Host(s) => write!(f, "{s}"),
            MonitorError::BadRange { linear, len } => {
                write!(f, "bad guest linear range {linear:#x}+{len:#x}")
            }
            MonitorError::Segment(s) => write!(f, "cannot shadow segment: {s}"),
            MonitorError::NotUserMode(s) => write!(f, "not guest user mode: {s}"),
            MonitorError::EntryFault {
                signal,
                trapno,
                error_code,
            } => write!(
                f,
                "entering the guest faulted: signal {signal}, trap {trapno}, error {error_code:#x}"
            ),
        }
    }
}

impl std::error::Error for MonitorError {}
