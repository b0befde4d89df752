//! Instructions the host's KVM could not emulate, carried out in user space.
//!
//! On a kvm-pvm host, non-paged protected mode runs in KVM's instruction
//! emulator, which implements IRET and INT n only for real mode and has no
//! LAR, LSL, VERR or VERW. When it gives up (KVM_EXIT_INTERNAL_ERROR,
//! "emulation failed") at one of those instructions, popek performs it with
//! the architecture's own rules (`x86::interrupt`, `x86::protection`) and
//! resumes the guest.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

use machine::{GuestMemory, Machine};
use x86::interrupt::{self, vector, Event, Exception, Failure, LinearMemory, Unsupported};
use x86::state::{cr0, flags};
use x86::CpuState;

/// Linear memory of a guest with paging off: linear addresses are physical.
/// Accesses past RAM read as all ones and drop writes, as on a PC bus.
pub struct PhysicalLinear<'a>(pub &'a mut GuestMemory);

impl LinearMemory for PhysicalLinear<'_> {
    fn read(&mut self, at: u32, buf: &mut [u8]) -> Result<(), Exception> {
        if self.0.read(u64::from(at), buf).is_err() {
            buf.fill(0xFF);
        }
        Ok(())
    }

    fn write(&mut self, at: u32, data: &[u8]) -> Result<(), Exception> {
        let _ = self.0.write(u64::from(at), data);
        Ok(())
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

/// Carries out the instruction at CS:EIP if it is one kvm-pvm cannot emulate.
pub fn emulate(cpu: &mut CpuState, machine: &mut Machine) -> Emulated {
    if cpu.cr0 & cr0::PG != 0 || cpu.cr0 & cr0::PE == 0 {
        return Emulated::NotMine;
    }
    let mut mem = PhysicalLinear(&mut machine.memory);
    let mut bytes = [0u8; 15];
    if mem.read(cpu.linear_ip(), &mut bytes).is_err() {
        return Emulated::NotMine;
    }
    // iced applies CS.D and any prefixes, so IRET's operand size and every
    // instruction length come from one decode.
    let bitness = if cpu.cs.db { 32 } else { 16 };
    let insn = Decoder::with_ip(bitness, &bytes, u64::from(cpu.eip), DecoderOptions::NONE).decode();
    let len = insn.len() as u32;
    match insn.mnemonic() {
        Mnemonic::Iretd => {
            let r = interrupt::iret(cpu, &mut mem, 4);
            finish(cpu, &mut mem, r, "iret")
        }
        Mnemonic::Iret => {
            let r = interrupt::iret(cpu, &mut mem, 2);
            finish(cpu, &mut mem, r, "iret")
        }
        Mnemonic::Int => software_int(cpu, &mut mem, insn.immediate8(), len, "int n"),
        Mnemonic::Int3 => software_int(cpu, &mut mem, vector::BP, len, "int3"),
        Mnemonic::Into if cpu.eflags & flags::OF != 0 => {
            software_int(cpu, &mut mem, vector::OF, len, "into")
        }
        Mnemonic::Into => {
            cpu.eip = cpu.eip.wrapping_add(len);
            Emulated::Done("into")
        }
        Mnemonic::Lar | Mnemonic::Lsl | Mnemonic::Verr | Mnemonic::Verw => {
            descriptor_check(cpu, &mut mem, &insn)
        }
        _ => Emulated::NotMine,
    }
}

/// Index of a 32-bit GPR in CpuState order, for iced's register names.
fn gpr(cpu: &mut CpuState, reg: Register) -> Option<&mut u32> {
    Some(match reg.full_register32() {
        Register::EAX => &mut cpu.eax,
        Register::ECX => &mut cpu.ecx,
        Register::EDX => &mut cpu.edx,
        Register::EBX => &mut cpu.ebx,
        Register::ESP => &mut cpu.esp,
        Register::EBP => &mut cpu.ebp,
        Register::ESI => &mut cpu.esi,
        Register::EDI => &mut cpu.edi,
        _ => return None,
    })
}

/// The 16-bit selector operand of LAR/LSL/VERR/VERW: a register or memory.
fn selector_operand(
    cpu: &mut CpuState,
    mem: &mut PhysicalLinear<'_>,
    insn: &Instruction,
    op: u32,
) -> Option<u16> {
    match insn.op_kind(op) {
        OpKind::Register => gpr(cpu, insn.op_register(op)).map(|r| *r as u16),
        OpKind::Memory => {
            let seg_base = match insn.memory_segment() {
                Register::ES => cpu.es.base,
                Register::CS => cpu.cs.base,
                Register::SS => cpu.ss.base,
                Register::FS => cpu.fs.base,
                Register::GS => cpu.gs.base,
                _ => cpu.ds.base,
            };
            let offset =
                insn.virtual_address(op, 0, |reg, _, _| gpr(cpu, reg).map(|r| u64::from(*r)))?;
            let mut b = [0u8; 2];
            mem.read(seg_base.wrapping_add(offset as u32), &mut b)
                .ok()?;
            Some(u16::from_le_bytes(b))
        }
        _ => None,
    }
}

/// LAR, LSL, VERR and VERW against the guest's descriptor tables.
fn descriptor_check(
    cpu: &mut CpuState,
    mem: &mut PhysicalLinear<'_>,
    insn: &Instruction,
) -> Emulated {
    let (name, src) = match insn.mnemonic() {
        Mnemonic::Lar => ("lar", 1),
        Mnemonic::Lsl => ("lsl", 1),
        Mnemonic::Verr => ("verr", 0),
        _ => ("verw", 0),
    };
    let Some(sel) = selector_operand(cpu, mem, insn, src) else {
        return Emulated::NotMine;
    };
    let result = match insn.mnemonic() {
        Mnemonic::Lar => x86::protection::lar(cpu, mem, sel),
        Mnemonic::Lsl => x86::protection::lsl(cpu, mem, sel),
        Mnemonic::Verr => x86::protection::verr(cpu, mem, sel).map(|ok| ok.then_some(0)),
        _ => x86::protection::verw(cpu, mem, sel).map(|ok| ok.then_some(0)),
    };
    let value = match result {
        Ok(v) => v,
        Err(e) => return finish(cpu, mem, Err(Failure::Fault(e)), name),
    };
    match value {
        Some(v) => {
            if src == 1 {
                let reg = insn.op0_register();
                let is16 = reg.size() == 2;
                let Some(dest) = gpr(cpu, reg) else {
                    return Emulated::NotMine;
                };
                *dest = if is16 {
                    (*dest & 0xFFFF_0000) | (v & 0xFFFF)
                } else {
                    v
                };
            }
            cpu.eflags |= flags::ZF;
        }
        None => cpu.eflags &= !flags::ZF,
    }
    cpu.eip = cpu.eip.wrapping_add(insn.len() as u32);
    Emulated::Done(name)
}

fn software_int(
    cpu: &mut CpuState,
    mem: &mut PhysicalLinear<'_>,
    vec: u8,
    len: u32,
    name: &'static str,
) -> Emulated {
    let at_instruction = cpu.eip;
    cpu.eip = cpu.eip.wrapping_add(len);
    let r = interrupt::deliver(cpu, mem, vec, Event::Software);
    if r.is_err() {
        // A fault in delivery is reported at the INT instruction itself.
        cpu.eip = at_instruction;
    }
    finish(cpu, mem, r, name)
}

/// Delivers the exception an emulated instruction raised, as the CPU would.
fn finish(
    cpu: &mut CpuState,
    mem: &mut PhysicalLinear<'_>,
    r: interrupt::Outcome,
    name: &'static str,
) -> Emulated {
    match r {
        Ok(()) => Emulated::Done(name),
        Err(Failure::Fault(e)) => {
            match interrupt::deliver_event(cpu, mem, e.vector, Event::Exception(e.error_code)) {
                Ok(()) => Emulated::Done(name),
                Err(Unsupported::TripleFault) => Emulated::TripleFault,
                Err(Unsupported::Feature(f)) => Emulated::Unsupported(f),
            }
        }
        Err(Failure::Unsupported(Unsupported::TripleFault)) => Emulated::TripleFault,
        Err(Failure::Unsupported(Unsupported::Feature(f))) => Emulated::Unsupported(f),
    }
}
