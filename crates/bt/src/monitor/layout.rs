//! Where things live in the monitor region, the top 4 MiB of the 32-bit
//! space. Translated code reaches all of it through GS (a segment based at
//! [`MONITOR_BASE`]), so offsets from the base are what emitted code embeds.
//!
//! The region is one read-write-execute mapping, backed by huge pages
//! where the host has them, and inaccessible while guest user code runs
//! (see [`super::gate`]). What the world switch and the signal handler need
//! while guest user code runs is not here but in the host area
//! ([`super::switch::HostArea`]), above 4 GiB.

use super::address_space::MONITOR_BASE;

/// Size of the monitor region: from [`MONITOR_BASE`] to 4 GiB.
pub const REGION_SIZE: u32 = 0u32.wrapping_sub(MONITOR_BASE);
/// The vCPU fields translated code uses ([`super::switch::VcpuArea`]).
pub const AREA_OFFSET: u32 = 0;
/// Room for the vCPU area.
pub const AREA_SIZE: u32 = 0x1000;
/// The 64-bit TC exit stub, copied here because a far pointer from 32-bit
/// code holds only a 32-bit offset.
pub const STUB_OFFSET: u32 = 0x1000;
/// Size of the stub page.
pub const STUB_SIZE: u32 = 0x1000;
/// The indirect-branch lookup table (512 KiB).
pub const TABLE_OFFSET: u32 = 0x1_0000;
/// The translation cache's code buffer.
pub const TC_OFFSET: u32 = 0x10_0000;
/// Largest code buffer the region can hold (`--tc-size` upper bound).
pub const TC_MAX: u32 = REGION_SIZE - TC_OFFSET;

/// Host address of the TC exit stub.
pub const STUB_ADDR: u32 = MONITOR_BASE + STUB_OFFSET;
/// Host address of the indirect-branch table.
pub const TABLE_ADDR: u32 = MONITOR_BASE + TABLE_OFFSET;
/// Host address of the code buffer.
pub const TC_ADDR: u32 = MONITOR_BASE + TC_OFFSET;

const _: () = assert!(TABLE_OFFSET + crate::cache::lookup::TABLE_SIZE <= TC_OFFSET);
const _: () = assert!(STUB_OFFSET + STUB_SIZE <= TABLE_OFFSET);
const _: () = assert!(AREA_OFFSET + AREA_SIZE <= STUB_OFFSET);
const _: () = assert!(REGION_SIZE == 0x40_0000);
const _: () = assert!(std::mem::size_of::<super::switch::VcpuArea>() as u32 <= AREA_SIZE);
