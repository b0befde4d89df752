//! Architecture knowledge for 32-bit x86 guests. No I/O, no host calls:
//! everything here is a pure function of the architecture manuals, so both
//! engines (binary translation and KVM) and the loaders share one model.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod classify;
pub mod cpuid;
pub mod descriptor;
pub mod emulate;
pub mod interrupt;
pub mod msr;
pub mod paging;
pub mod protection;
pub mod state;
pub mod task;

pub use state::{CpuState, Segment, TableRegister};
