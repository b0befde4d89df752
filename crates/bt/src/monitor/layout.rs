//! Where things live in the monitor region, the top 4 MiB of the 32-bit
//! space. Translated code reaches all of it through GS (a segment based at
//! [`MONITOR_BASE`]), so offsets from the base are what emitted code embeds.

use super::address_space::MONITOR_BASE;

/// The vCPU area (guest registers, exit information, host state, FXSAVE).
pub const AREA_OFFSET: u32 = 0;
/// Size of the vCPU area mapping.
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
pub const TC_MAX: u32 = 0x40_0000 - TC_OFFSET;

/// Host address of the TC exit stub.
pub const STUB_ADDR: u32 = MONITOR_BASE + STUB_OFFSET;
/// Host address of the indirect-branch table.
pub const TABLE_ADDR: u32 = MONITOR_BASE + TABLE_OFFSET;
/// Host address of the code buffer.
pub const TC_ADDR: u32 = MONITOR_BASE + TC_OFFSET;

const _: () = assert!(TABLE_OFFSET + crate::cache::lookup::TABLE_SIZE <= TC_OFFSET);
const _: () = assert!(STUB_OFFSET + STUB_SIZE <= TABLE_OFFSET);
