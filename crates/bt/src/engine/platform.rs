//! What the callout emulator sees of the machine beyond guest memory
//! ([`machine::memory::PhysicalLinear`] while paging is off): the port bus,
//! the MSRs, the CPU model and the TSC.

use std::time::Instant;

use machine::Buses;
use x86::cpuid::CpuidModel;
use x86::emulate::Platform;
use x86::msr::MsrFile;

/// The virtual CPU's surroundings that live outside [`x86::CpuState`].
pub struct CpuExtras {
    /// The CPU model the guest sees.
    pub cpuid: CpuidModel,
    /// MSRs not held in CpuState.
    pub msrs: MsrFile,
    /// When the TSC read 0 (host time), minus what WRMSR set.
    pub tsc_epoch: Instant,
    /// Value added to the elapsed nanoseconds.
    pub tsc_offset: u64,
}

impl CpuExtras {
    /// A CPU fresh from firmware.
    pub fn new() -> CpuExtras {
        CpuExtras {
            cpuid: CpuidModel::default(),
            msrs: MsrFile::after_firmware(),
            tsc_epoch: Instant::now(),
            tsc_offset: 0,
        }
    }
}

impl Default for CpuExtras {
    fn default() -> Self {
        Self::new()
    }
}

/// The emulator's [`Platform`] for one callout.
pub struct Surroundings<'a> {
    /// The machine's buses (the emulator reaches only the port bus).
    pub bus: &'a Buses,
    /// CPU model, MSRs, TSC.
    pub extras: &'a mut CpuExtras,
    /// Port I/O happened (a device may have asked to stop).
    pub did_io: bool,
}

/// The TSC ticks at 1 GHz of host time: a round number the guest can
/// calibrate against, and monotonic.
fn elapsed_ns(e: &CpuExtras) -> u64 {
    e.tsc_epoch.elapsed().as_nanos() as u64
}

impl Platform for Surroundings<'_> {
    fn io_in(&mut self, port: u16, size: u8) -> u32 {
        self.did_io = true;
        let mut b = [0u8; 4];
        self.bus
            .pio
            .read(u64::from(port), &mut b[..usize::from(size)]);
        u32::from_le_bytes(b)
    }

    fn io_out(&mut self, port: u16, size: u8, value: u32) {
        self.did_io = true;
        self.bus
            .pio
            .write(u64::from(port), &value.to_le_bytes()[..usize::from(size)]);
    }

    fn tsc(&mut self) -> u64 {
        elapsed_ns(self.extras).wrapping_add(self.extras.tsc_offset)
    }

    fn set_tsc(&mut self, value: u64) {
        self.extras.tsc_offset = value.wrapping_sub(elapsed_ns(self.extras));
    }

    fn cpuid(&self) -> &CpuidModel {
        &self.extras.cpuid
    }

    fn msrs(&mut self) -> &mut MsrFile {
        &mut self.extras.msrs
    }
}
