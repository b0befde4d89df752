//! Instructions the host's KVM could not emulate, carried out in user space.
//!
//! On a kvm-pvm host, non-paged protected mode runs in KVM's instruction
//! emulator, which implements IRET and INT n only for real mode, has no
//! LAR, LSL, VERR or VERW, and gives up on a far JMP or CALL to a system
//! descriptor (a TSS or task gate: a hardware task switch, which popek's
//! emulator carries out, as it does IRET with NT and INT n through a task
//! gate). When it gives up (KVM_EXIT_INTERNAL_ERROR,
//! "emulation failed") at one of those instructions, popek performs it with
//! the callout emulator the BT engine uses (`x86::emulate`), delivers any
//! exception it raises through the guest IDT, and resumes the guest.

use machine::platform::CpuExtras;
use machine::Machine;
use x86::classify::{kind_of, Kind};
use x86::emulate::{self, Unsupported};
use x86::state::cr0;
use x86::CpuState;

/// What the fallback did.
pub enum Emulated {
    /// The instruction completed (or raised an exception that was delivered);
    /// `name` is counted in the statistics.
    Done(&'static str),
    /// Not an instruction the fallback knows.
    NotMine,
    /// The x86 model could not complete it: a triple fault, or something
    /// popek does not model.
    Failed(Unsupported),
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
        Kind::FarJmp => "far jmp",
        Kind::FarCall => "far call",
        _ => return None,
    })
}

/// Carries out the instruction at CS:EIP if it is one kvm-pvm cannot emulate.
pub fn emulate(cpu: &mut CpuState, machine: &mut Machine) -> Emulated {
    if cpu.cr0 & cr0::PG != 0 || cpu.cr0 & cr0::PE == 0 {
        return Emulated::NotMine;
    }
    // The CPU model, MSRs and TSC stay KVM's: none of the instructions
    // [`name`] accepts reads them, so fresh extras stand in. Ports and
    // memory are the machine's own, so that widening the set cannot
    // silently lose a device access.
    let mut extras = CpuExtras::new();
    let (mut mem, mut plat) = machine.emulation(cpu, &mut extras);
    // iced applies CS.D and any prefixes, so IRET's operand size and every
    // instruction length come from one decode.
    let Ok(insn) = emulate::fetch(cpu, &mut mem) else {
        return Emulated::NotMine;
    };
    let Some(name) = name(kind_of(&insn)) else {
        return Emulated::NotMine;
    };
    match emulate::execute_and_deliver(cpu, &mut mem, &mut plat, &insn) {
        Ok(_) => Emulated::Done(name),
        Err(failure) => Emulated::Failed(failure),
    }
}
