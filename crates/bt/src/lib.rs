//! The binary-translation engine: guest kernel code is translated, guest
//! user code runs directly on the host CPU (see design.md section 4).

#![warn(missing_docs)]

pub mod cache;
pub mod contract;
pub mod engine;
pub mod mmu;
pub mod monitor;
pub mod translate;
