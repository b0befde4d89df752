//! The guest PC that every engine runs: RAM, the port-I/O and MMIO buses,
//! one file per device, the boot loaders, and the [`Engine`] trait with the exits every
//! engine returns.

#![warn(missing_docs)]

pub mod alarm;
pub mod bus;
pub mod clock;
pub mod devices;
pub mod engine;
pub mod firmware;
pub mod irq;
pub mod loader;
pub mod machine;
pub mod marks;
pub mod memory;
pub mod platform;
pub mod stop;
pub mod vcpu;

pub use bus::{Bus, BusDevice, Buses};
pub use engine::{Engine, EngineError, Exit};
pub use machine::{Machine, MachineBuilder, MachineError};
pub use memory::{GuestMemory, MemoryError};
pub use stop::{StopHandle, StopReason};
