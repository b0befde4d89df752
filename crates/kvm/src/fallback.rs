//! Instructions the host's KVM could not emulate, carried out in user space.
//!
//! On a kvm-pvm host, non-paged protected mode runs in KVM's instruction
//! emulator, which implements IRET and INT n only for real mode and has no
//! LAR, LSL, VERR or VERW. When it gives up (KVM_EXIT_INTERNAL_ERROR,
//! "emulation failed") at one of those instructions, popek performs it with
//! the callout emulator the BT engine uses (`x86::emulate`), delivers any
//! exception it raises through the guest IDT, and resumes the guest.

use machine::{Bus, Machine};
use x86::classify::{kind_of, Kind};
use x86::cpuid::CpuidModel;
use x86::emulate::{self, Platform, Unsupported};
use x86::msr::MsrFile;
use x86::state::cr0;
use x86::CpuState;

use machine::memory::GuestLinear;

/// The machine as the emulator sees it. Only the instructions [`name`]
/// accepts reach the emulator, and none of them touches ports, the TSC or
/// MSRs; the port I/O is still the machine's bus so that widening the set
/// cannot silently lose a device access.
struct FallbackPlatform<'a> {
    bus: &'a Bus,
    model: CpuidModel,
    msrs: MsrFile,
}

impl Platform for FallbackPlatform<'_> {
    fn io_in(&mut self, port: u16, size: u8) -> u32 {
        let mut b = [0u8; 4];
        self.bus.read(u64::from(port), &mut b[..usize::from(size)]);
        u32::from_le_bytes(b)
    }

    fn io_out(&mut self, port: u16, size: u8, value: u32) {
        self.bus
            .write(u64::from(port), &value.to_le_bytes()[..usize::from(size)]);
    }

    /// Not consulted (see the type's comment): KVM owns the guest TSC.
    fn tsc(&mut self) -> u64 {
        0
    }

    /// Not consulted (see the type's comment): KVM owns the guest TSC.
    fn set_tsc(&mut self, _value: u64) {}

    fn cpuid(&self) -> &CpuidModel {
        &self.model
    }

    fn msrs(&mut self) -> &mut MsrFile {
        &mut self.msrs
    }
}

/// What the fallback did.
pub enum Emulated {
    /// The instruction completed (or raised an exception that was delivered);
    /// `name` is counted in the statistics.
    Done(&'static str),
    /// Not an instruction the fallback knows.
    NotMine,
    /// The instruction shut the CPU down (a fault while delivering #DF).
    TripleFault,
    /// The guest needs something popek does not model.
    Unsupported(&'static str),
}

/// The statistics name of an instruction kvm-pvm cannot emulate, or `None`
/// for one the fallback leaves alone.
fn name(kind: Kind) -> Option<&'static str> {
    Some(match kind {
        Kind::Iret => "iret",
        Kind::Int => "int n",
        Kind::Int3 => "int3",
        Kind::Into => "into",
        Kind::Lar => "lar",
        Kind::Lsl => "lsl",
        Kind::Verr => "verr",
        Kind::Verw => "verw",
        _ => return None,
    })
}

/// Carries out the instruction at CS:EIP if it is one kvm-pvm cannot emulate.
pub fn emulate(cpu: &mut CpuState, machine: &mut Machine) -> Emulated {
    if cpu.cr0 & cr0::PG != 0 || cpu.cr0 & cr0::PE == 0 {
        return Emulated::NotMine;
    }
    let mut mem = GuestLinear::physical(&mut machine.memory);
    // iced applies CS.D and any prefixes, so IRET's operand size and every
    // instruction length come from one decode.
    let Ok(insn) = emulate::fetch(cpu, &mut mem) else {
        return Emulated::NotMine;
    };
    let Some(name) = name(kind_of(&insn)) else {
        return Emulated::NotMine;
    };
    let mut plat = FallbackPlatform {
        bus: &machine.bus.pio,
        model: CpuidModel::default(),
        msrs: MsrFile::default(),
    };
    match emulate::execute_and_deliver(cpu, &mut mem, &mut plat, &insn) {
        Ok(_) => Emulated::Done(name),
        Err(Unsupported::TripleFault) => Emulated::TripleFault,
        Err(Unsupported::Feature(f)) => Emulated::Unsupported(f),
    }
}
