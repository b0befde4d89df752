//! The PC's devices, one file each. Every device is a plain state machine
//! behind [`crate::PortDevice`], testable without a VM.

pub mod cmos;
pub mod debug_exit;
pub mod i8042;
pub mod pci;
pub mod pic;
pub mod pit;
pub mod port80;
pub mod uart;
