//! The callout emulator: carries out one privileged or sensitive guest
//! instruction on a [`CpuState`] exactly as the CPU would, and the ordinary
//! data instructions whose memory the engine cannot let the host touch
//! (page 0, device registers: see `data`).
//!
//! The binary translator turns such instructions into callouts that exit to
//! the monitor with EIP at the instruction; the KVM engine lands here when the
//! host's instruction emulator gives up. Either way the caller decodes the
//! instruction (see [`fetch`]) and calls [`execute`], which either completes
//! it (EIP past it, or wherever a far transfer, INT or IRET sends it) or
//! reports the exception it raises with the state as the instruction found it,
//! so that the caller can deliver the exception with
//! [`crate::interrupt::deliver_event`] ([`execute_and_deliver`] does both).
//!
//! Scope: protected mode (CR0.PE set, EFLAGS.VM clear) is modelled in full;
//! real mode works for everything but INT/IRET; task switches between
//! 32-bit TSSes are modelled ([`crate::task`]); virtual-8086 mode, 16-bit
//! TSSes, call gates and SYSCALL/SYSRET are reported as
//! [`Unsupported::Feature`].
//!
//! What the engine must do afterwards is reported in [`Effects`]. Most of it
//! is found by comparing the state before and after, so no handler can
//! forget to report a segment, table or paging change.

mod control;
mod data;
mod descriptors;
mod far;
mod flags;
mod interrupts;
mod io;
mod misc;
mod operand;
mod segments;
mod tables;
#[cfg(test)]
mod task_tests;
#[cfg(test)]
mod testing;

use iced_x86::{Decoder, DecoderOptions, Instruction};

use crate::classify::{kind_of, Kind};
use crate::cpuid::CpuidModel;
use crate::interrupt::{self, vector, Event, Exception, LinearMemory};
use crate::msr::MsrFile;
use crate::state::{cr0, cr4, flags as fl, CpuState};

pub use crate::interrupt::{Failure, Unsupported};
pub use control::cr4_writable;
pub use data::alu;
pub use misc::{fast_system_call, read_msr, write_msr};
pub use operand::linear_address;

/// What the emulator needs from the machine around the CPU.
pub trait Platform {
    /// IN: reads `size` (1, 2 or 4) bytes from I/O port `port`.
    fn io_in(&mut self, port: u16, size: u8) -> u32;
    /// OUT: writes the low `size` (1, 2 or 4) bytes of `value` to port `port`.
    fn io_out(&mut self, port: u16, size: u8, value: u32);
    /// The guest's current time-stamp counter.
    fn tsc(&mut self) -> u64;
    /// WRMSR to IA32_TIME_STAMP_COUNTER: the guest's TSC now reads `value`.
    fn set_tsc(&mut self, value: u64);
    /// The CPU model the guest sees (decides which instructions exist).
    fn cpuid(&self) -> &CpuidModel;
    /// The MSRs that do not live in [`CpuState`].
    fn msrs(&mut self) -> &mut MsrFile;
    /// IA32_APIC_BASE, which the local APIC holds.
    fn apic_base(&mut self) -> u64;
    /// WRMSR to IA32_APIC_BASE of a value the MSR model accepted: the local
    /// APIC moves, or is enabled or disabled (and CPUID.APIC with it).
    fn set_apic_base(&mut self, value: u64);
}

/// What the engine must do after an emulated instruction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// HLT: wait for an interrupt before running the next instruction.
    pub halted: bool,
    /// Interrupts stay blocked until the next instruction has completed (STI
    /// that set IF, MOV SS, POP SS).
    pub interrupt_shadow: bool,
    /// A segment register (CS, SS, DS, ES, FS or GS) changed: reload shadows.
    pub segments_changed: bool,
    /// CS, the CPL or the paging mode changed: translations made for the old
    /// context do not apply (look up in a new translation context).
    pub context_changed: bool,
    /// EIP is not the next instruction (far transfer, INT, IRET, SYSENTER).
    pub branched: bool,
    /// CR0.PE/PG/WP, CR4.PSE/PAE/PGE or EFER.NXE changed: drop every shadow
    /// mapping, global ones included.
    pub paging_changed: bool,
    /// CR3 was written (even with its old value): drop non-global shadows.
    pub cr3_written: bool,
    /// INVLPG: drop the shadow mapping of this linear address.
    pub tlb_flush_page: Option<u32>,
    /// A control register or EFER was written (MOV CRn, CLTS, LMSW, WRMSR).
    pub cr_written: bool,
    /// GDTR, IDTR, LDTR or TR changed.
    pub tables_changed: bool,
    /// Set by [`execute_and_deliver`]: the instruction raised this exception,
    /// which was delivered through the guest IDT.
    pub delivered: Option<Exception>,
}

/// Reads and decodes the instruction at CS:EIP with the code size of CS.
/// A fetch that faults part-way is reported only if the decoder needed the
/// bytes it could not read. CS limit checks are the engine's business.
pub fn fetch(cpu: &CpuState, mem: &mut impl LinearMemory) -> Result<Instruction, Exception> {
    let mut bytes = [0u8; 15];
    let mut len = 0;
    let mut fault = None;
    // One read per page where it can (every read is a guest page walk; a
    // callout's fetch used to make fifteen), byte by byte where a read
    // fails, so an instruction that ends just before unreadable memory
    // still decodes.
    let ip = cpu.linear_ip();
    let first = ((0x1000 - (ip & 0xFFF)) as usize).min(bytes.len());
    'chunks: for (start, end) in [(0, first), (first, bytes.len())] {
        if start == end {
            continue;
        }
        if mem
            .read(ip.wrapping_add(start as u32), &mut bytes[start..end])
            .is_ok()
        {
            len = end;
            continue;
        }
        for i in start..end {
            match mem.read(ip.wrapping_add(i as u32), &mut bytes[i..i + 1]) {
                Ok(()) => len = i + 1,
                Err(e) => {
                    fault = Some(e);
                    break 'chunks;
                }
            }
        }
    }
    let bitness = if cpu.cs.db { 32 } else { 16 };
    let insn = Decoder::with_ip(
        bitness,
        &bytes[..len],
        u64::from(cpu.eip),
        DecoderOptions::NONE,
    )
    .decode();
    match fault {
        Some(e) if insn.is_invalid() || insn.len() > len => Err(e),
        _ => Ok(insn),
    }
}

/// Carries out `insn`, decoded at `cpu.eip` with the code size of CS. On
/// success EIP is past the instruction or at the transfer's target; on
/// `Err(Failure::Fault)` the state is as the instruction found it (REP
/// INS/OUTS excepted: their completed iterations stay done, as on hardware).
pub fn execute(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    plat: &mut impl Platform,
    insn: &Instruction,
) -> Result<Effects, Failure> {
    if cpu.eflags & fl::VM != 0 {
        return Err(unsupported("virtual-8086 mode"));
    }
    let kind = kind_of(insn);
    // LOCK is for read-modify-writes of memory (data instructions only).
    if insn.has_lock_prefix() && kind != Kind::Invalid && kind != Kind::Ident {
        return Err(ud());
    }
    let mut eff = Effects::default();
    if kind == Kind::InsOuts {
        // String I/O keeps completed iterations on a fault, so it works on
        // the committed state itself.
        io::string(cpu, mem, plat, insn)?;
        return Ok(eff);
    }
    if kind == Kind::Ident && data::is_string(insn) {
        // So do string moves.
        data::string(cpu, mem, insn)?;
        cpu.eip = next_eip(cpu, insn);
        cpu.eflags &= !fl::RF;
        return Ok(eff);
    }
    // The instruction works on the committed state itself, and a fault
    // puts back what it found: one copy of the state where working on a
    // copy and committing it made two (~300 bytes each, at every callout).
    let old = cpu.clone();
    let next = next_eip(&old, insn);
    cpu.eip = next;
    if let Err(f) = execute_in_place(cpu, mem, plat, insn, kind, &mut eff) {
        *cpu = old;
        return Err(f);
    }
    // The CPU clears RF after every instruction it completes, IRET and
    // task switches (which load it from the new TSS) aside.
    if kind != Kind::Iret && cpu.tr.selector == old.tr.selector {
        cpu.eflags &= !fl::RF;
    }
    diff(&old, cpu, next, &mut eff);
    Ok(eff)
}

/// [`execute`]'s dispatch by kind, on a state whose EIP is already past
/// the instruction.
fn execute_in_place(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    plat: &mut impl Platform,
    insn: &Instruction,
    kind: Kind,
    eff: &mut Effects,
) -> Result<(), Failure> {
    match kind {
        Kind::InOut => io::in_out(cpu, mem, plat, insn)?,
        Kind::MovCr
        | Kind::MovDr
        | Kind::Clts
        | Kind::Lmsw
        | Kind::Invlpg
        | Kind::Invd
        | Kind::Wbinvd => control::execute(cpu, mem, plat, insn, eff)?,
        Kind::Lgdt
        | Kind::Lidt
        | Kind::Lldt
        | Kind::Ltr
        | Kind::Sgdt
        | Kind::Sidt
        | Kind::Sldt
        | Kind::Str
        | Kind::Smsw => tables::execute(cpu, mem, insn, kind)?,
        Kind::Cli | Kind::Sti | Kind::Pushf | Kind::Popf => {
            flags::execute(cpu, mem, insn, kind, eff)?
        }
        Kind::MovToSreg
        | Kind::MovFromSreg
        | Kind::PushSreg
        | Kind::PopSreg
        | Kind::LoadFarPointer => segments::execute(cpu, mem, insn, kind, eff)?,
        Kind::FarCall | Kind::FarJmp | Kind::FarRet => far::execute(cpu, mem, insn, kind, eff)?,
        Kind::Int | Kind::Int3 | Kind::Into | Kind::Int1 | Kind::Iret => {
            interrupts::execute(cpu, mem, insn, kind)?
        }
        Kind::Lar | Kind::Lsl | Kind::Verr | Kind::Verw => {
            descriptors::execute(cpu, mem, insn, kind)?
        }
        Kind::Ud | Kind::Invalid => return Err(ud()),
        Kind::Ident => data::execute(cpu, mem, insn)?,
        _ => misc::execute(cpu, plat, insn, kind, eff)?,
    }
    Ok(())
}

/// Like [`execute`], but delivers an exception the instruction raises
/// through the guest IDT (with the double-fault rules), as the CPU would.
/// `Err` means the CPU shut down (triple fault) or something unsupported was
/// needed; `Effects::delivered` names a delivered exception.
pub fn execute_and_deliver(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    plat: &mut impl Platform,
    insn: &Instruction,
) -> Result<Effects, Unsupported> {
    match execute(cpu, mem, plat, insn) {
        Ok(eff) => Ok(eff),
        Err(Failure::Unsupported(u)) => Err(u),
        Err(Failure::Fault(e)) => deliver_fault(cpu, mem, e),
    }
}

/// The segment a load of `sel` into data register DS, ES, FS or GS
/// (`index` 0 to 3) produces at the current CPL, with the checks MOV Sreg
/// makes and the descriptor's accessed bit set.
pub fn data_segment(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    index: usize,
    sel: u16,
) -> Result<crate::Segment, Exception> {
    use iced_x86::Register;
    let reg = [Register::DS, Register::ES, Register::FS, Register::GS][index];
    segments::load_data_segment(cpu, mem, reg, sel)
}

/// Delivers exception `e` raised at the current instruction and reports
/// what the delivery changed.
pub fn deliver_fault(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    e: Exception,
) -> Result<Effects, Unsupported> {
    let old = cpu.clone();
    let at = cpu.eip;
    interrupt::deliver_event(cpu, mem, e.vector, Event::Exception(e.error_code))?;
    let mut eff = Effects {
        delivered: Some(e),
        ..Effects::default()
    };
    diff(&old, cpu, at, &mut eff);
    Ok(eff)
}

/// Fills in the effects that follow from comparing the states.
fn diff(old: &CpuState, new: &CpuState, next: u32, eff: &mut Effects) {
    let cs_changed = old.cs != new.cs;
    eff.segments_changed |= cs_changed
        || old.ss != new.ss
        || old.ds != new.ds
        || old.es != new.es
        || old.fs != new.fs
        || old.gs != new.gs;
    eff.branched |= cs_changed || new.eip != next;
    let paging_cr0 = cr0::PE | cr0::PG | cr0::WP;
    let paging_cr4 = cr4::PSE | cr4::PAE | cr4::PGE;
    eff.paging_changed |= (old.cr0 ^ new.cr0) & paging_cr0 != 0
        || (old.cr4 ^ new.cr4) & paging_cr4 != 0
        || (old.efer ^ new.efer) & crate::msr::efer::NXE != 0;
    eff.context_changed |= cs_changed || eff.paging_changed;
    // A task switch loads CR3, and flushes the TLB only if that changed it
    // (SDM vol. 3, 4.10.4.1); MOV to CR3 reports itself.
    eff.cr3_written |= old.cr3 != new.cr3;
    eff.tables_changed |=
        old.gdtr != new.gdtr || old.idtr != new.idtr || old.ldtr != new.ldtr || old.tr != new.tr;
}

/// EIP of the next instruction, wrapping at 64 KiB in 16-bit code.
fn next_eip(cpu: &CpuState, insn: &Instruction) -> u32 {
    let next = cpu.eip.wrapping_add(insn.len() as u32);
    if cpu.cs.db {
        next
    } else {
        next & 0xFFFF
    }
}

/// True in protected mode (the emulator never runs in virtual-8086 mode).
fn protected(cpu: &CpuState) -> bool {
    cpu.cr0 & cr0::PE != 0
}

/// #UD.
fn ud() -> Failure {
    Failure::Fault(Exception::plain(vector::UD))
}

/// #GP(0).
fn gp0() -> Exception {
    Exception::gp(0)
}

/// A feature popek does not model, by name.
fn unsupported(what: &'static str) -> Failure {
    Failure::Unsupported(Unsupported::Feature(what))
}

/// #GP(0) unless CPL is 0: the rule for every privileged instruction.
fn require_cpl0(cpu: &CpuState) -> Result<(), Exception> {
    if cpu.cpl() == 0 {
        Ok(())
    } else {
        Err(gp0())
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::interrupt::testing::Flat;

    #[test]
    fn execute_and_deliver_delivers_a_fault_through_the_idt() {
        let (mut cpu, mut m) = user_machine();
        cpu.esp = 0xB000;
        m.write(CODE, &[0xFA]).unwrap(); // cli at CPL 3
        let insn = fetch(&cpu, &mut m).unwrap();
        let eff =
            execute_and_deliver(&mut cpu, &mut m, &mut TestPlatform::default(), &insn).unwrap();
        assert_eq!(eff.delivered, Some(Exception::gp(0)));
        assert!(eff.branched && eff.context_changed && eff.segments_changed);
        assert_eq!(cpu.eip, HANDLERS + 13 * 16);
        assert_eq!(cpu.cpl(), 0);
        assert_eq!(read32(&mut m, cpu.esp), 0, "error code");
        assert_eq!(read32(&mut m, cpu.esp + 4), CODE, "EIP of the CLI");
    }

    #[test]
    fn execute_and_deliver_reports_a_triple_fault() {
        let (mut cpu, mut m) = user_machine();
        cpu.idtr.limit = 0;
        m.write(CODE, &[0xF4]).unwrap(); // hlt at CPL 3
        let insn = fetch(&cpu, &mut m).unwrap();
        let r = execute_and_deliver(&mut cpu, &mut m, &mut TestPlatform::default(), &insn);
        assert_eq!(r, Err(Unsupported::TripleFault));
    }

    #[test]
    fn fetch_stops_at_unreadable_memory_only_when_the_bytes_are_needed() {
        let (mut cpu, _) = machine();
        let mut m = Flat(vec![0; 0x6002]);
        m.0[0x6000] = 0xFA; // cli, then the end of memory
        assert_eq!(fetch(&cpu, &mut m).unwrap().len(), 1);
        m.0[0x6000] = 0x0F;
        m.0[0x6001] = 0x22; // mov cr0, ... with its ModRM missing
        assert_eq!(
            fetch(&cpu, &mut m),
            Err(Exception::with_code(vector::PF, 0))
        );
        cpu.eip = 0x6001;
        m.0[0x6001] = 0xF4;
        assert_eq!(fetch(&cpu, &mut m).unwrap().len(), 1);
    }

    #[test]
    fn rf_is_cleared_and_vm86_is_unsupported() {
        let (mut cpu, mut m) = machine();
        cpu.eflags |= fl::RF;
        ok(&mut cpu, &mut m, &[0xFA]);
        assert_eq!(cpu.eflags & fl::RF, 0);
        cpu.eflags |= fl::VM;
        assert_eq!(
            run1(&mut cpu, &mut m, &[0xFA]),
            Err(Failure::Unsupported(Unsupported::Feature(
                "virtual-8086 mode"
            )))
        );
    }

    #[test]
    fn sixteen_bit_code_wraps_eip_at_64k() {
        let (mut cpu, mut m) = machine();
        cpu.cs = crate::descriptor::Descriptor {
            base: 0x10000,
            limit: 0xFFFF,
            db: false,
            g: false,
            ..flat(0xB, 0)
        }
        .to_segment(CODE16);
        cpu.eip = 0xFFFF;
        ok(&mut cpu, &mut m, &[0xFA]);
        assert_eq!(cpu.eip, 0);
    }
}
