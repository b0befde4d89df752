//! The PC's devices, one file each. Every device is a plain state machine
//! behind [`crate::BusDevice`], testable without a VM.

pub mod acpi_pm;
pub mod cmos;
pub mod debug_exit;
pub mod fw_cfg;
pub mod hpet;
pub mod i8042;
pub mod ioapic;
pub mod lapic;
pub mod pci;
pub mod pic;
pub mod pit;
pub mod port80;
pub mod scratch;
pub mod uart;

/// The port an access at `offset` into a port range at `base` addresses,
/// for devices whose registers are named by port number (the PIC, the PIT,
/// the CMOS, PCI configuration, the i8042).
pub(crate) fn port(base: u64, offset: u64) -> u16 {
    base.wrapping_add(offset) as u16
}
