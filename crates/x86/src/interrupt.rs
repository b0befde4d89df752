//! Protected-mode interrupt and exception delivery, and IRET, as the SDM
//! (vol. 3 ch. 6, and the IRET pseudocode in vol. 2) defines them: pure
//! functions over a [`CpuState`] and the guest's linear memory.
//!
//! Both engines need them. The BT engine delivers every guest event itself;
//! the KVM engine falls back to them where the host's KVM cannot emulate an
//! instruction (kvm-pvm emulates non-paged protected mode, and Linux's
//! instruction emulator has no protected-mode IRET or INT n).
//!
//! Each function works on a copy of the state and commits it only when the
//! whole operation succeeded, so a fault leaves the CPU as the instruction
//! found it, as the hardware does.

use crate::descriptor::{self, Descriptor, Gate, GateKind, Selector};
use crate::paging::PAGE_4K;
use crate::state::{flags, CpuState, Segment};
use crate::task::{self, Source};

/// An exception raised while carrying out an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    /// The vector.
    pub vector: u8,
    /// The error code, for vectors that push one.
    pub error_code: Option<u32>,
}

/// Exception vectors by name.
pub mod vector {
    /// Divide error.
    pub const DE: u8 = 0;
    /// Debug.
    pub const DB: u8 = 1;
    /// Breakpoint (INT3).
    pub const BP: u8 = 3;
    /// Overflow (INTO).
    pub const OF: u8 = 4;
    /// Invalid opcode.
    pub const UD: u8 = 6;
    /// Device not available.
    pub const NM: u8 = 7;
    /// Double fault.
    pub const DF: u8 = 8;
    /// Invalid TSS.
    pub const TS: u8 = 10;
    /// Segment not present.
    pub const NP: u8 = 11;
    /// Stack-segment fault.
    pub const SS: u8 = 12;
    /// General protection.
    pub const GP: u8 = 13;
    /// Page fault.
    pub const PF: u8 = 14;
}

impl Exception {
    /// An exception with an error code.
    pub const fn with_code(vector: u8, code: u32) -> Self {
        Exception {
            vector,
            error_code: Some(code),
        }
    }

    /// An exception without an error code.
    pub const fn plain(vector: u8) -> Self {
        Exception {
            vector,
            error_code: None,
        }
    }

    /// #GP(code).
    pub const fn gp(code: u32) -> Self {
        Self::with_code(vector::GP, code)
    }

    /// True for vectors that push an error code (8, 10-14, 17, 21).
    pub const fn vector_has_error_code(v: u8) -> bool {
        matches!(v, 8 | 10..=14 | 17 | 21)
    }
}

/// The guest's linear address space, as seen by the CPU during delivery.
/// An implementation with paging returns #PF for unmapped pages.
pub trait LinearMemory {
    /// Reads `buf.len()` bytes at `linear`.
    fn read(&mut self, linear: u32, buf: &mut [u8]) -> Result<(), Exception>;
    /// Writes `data` at `linear`.
    fn write(&mut self, linear: u32, data: &[u8]) -> Result<(), Exception>;
    /// Reads as an implicit supervisor access (descriptor tables, the TSS,
    /// an inner stack), which paging checks as CPL 0 even at CPL 3.
    fn read_supervisor(&mut self, linear: u32, buf: &mut [u8]) -> Result<(), Exception> {
        self.read(linear, buf)
    }
    /// Writes as an implicit supervisor access.
    fn write_supervisor(&mut self, linear: u32, data: &[u8]) -> Result<(), Exception> {
        self.write(linear, data)
    }
    /// The linear address of the last page fault an access raised (the
    /// value for CR2), taken once.
    fn take_fault_address(&mut self) -> Option<u32> {
        None
    }
}

/// What kind of event is being delivered: it decides the EXT bit of error
/// codes, whether the gate's DPL is checked, and whether an error code is pushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A processor exception; `error_code` is pushed when present.
    Exception(Option<u32>),
    /// A hardware interrupt from the PIC.
    External,
    /// INT n, INT3 or INTO: EIP already points past the instruction.
    Software,
}

/// Why an operation could not be carried out at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// A feature popek does not model (16-bit TSSes, virtual-8086 mode, ...).
    Feature(&'static str),
    /// Delivering a double fault faulted: the CPU shuts down.
    TripleFault,
}

/// Result of one delivery or IRET attempt.
pub type Outcome = Result<(), Failure>;

/// A delivery or IRET that did not complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The operation raised this exception; the state is unchanged.
    Fault(Exception),
    /// The operation is outside what popek models, or shut the CPU down.
    Unsupported(Unsupported),
}

impl From<Exception> for Failure {
    fn from(e: Exception) -> Self {
        Failure::Fault(e)
    }
}

const FLAGS_IRET_ANY_CPL: u32 = flags::UNPRIVILEGED | flags::RF;

/// Reads a TSS field (an implicit supervisor access).
fn read_tss_u32(mem: &mut impl LinearMemory, at: u32) -> Result<u32, Exception> {
    let mut b = [0; 4];
    mem.read_supervisor(at, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_tss_u16(mem: &mut impl LinearMemory, at: u32) -> Result<u16, Exception> {
    let mut b = [0; 2];
    mem.read_supervisor(at, &mut b)?;
    Ok(u16::from_le_bytes(b))
}

fn read_u32(mem: &mut impl LinearMemory, at: u32) -> Result<u32, Exception> {
    let mut b = [0; 4];
    mem.read(at, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u16(mem: &mut impl LinearMemory, at: u32) -> Result<u16, Exception> {
    let mut b = [0; 2];
    mem.read(at, &mut b)?;
    Ok(u16::from_le_bytes(b))
}

/// Reads the descriptor `sel` names from the GDT or LDT; #GP(sel) past the
/// table's limit. Sets the descriptor's accessed bit for code/data, as a
/// selector load does.
pub fn read_descriptor(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    sel: Selector,
    ext: u32,
) -> Result<(Descriptor, u32), Exception> {
    let at = sel
        .descriptor_address(&cpu.gdtr, &cpu.ldtr)
        .ok_or(Exception::gp(u32::from(sel.0 & !3) | ext))?;
    let mut b = [0; 8];
    mem.read_supervisor(at, &mut b)?;
    Ok((Descriptor::from_bytes(b), at))
}

/// Sets the accessed bit of the code/data descriptor at `at` in memory, as
/// every segment load does.
pub(crate) fn mark_accessed(
    mem: &mut impl LinearMemory,
    desc: &Descriptor,
    at: u32,
) -> Result<(), Exception> {
    if desc.s && desc.typ & descriptor::types::ACCESSED == 0 {
        let bytes = desc.with_accessed().to_bytes();
        mem.write_supervisor(at + 5, &bytes[5..6])?;
    }
    Ok(())
}

/// A stack being pushed onto: SS cache and ESP, with the gate's operand size.
struct Stack {
    ss: Segment,
    esp: u32,
    size: u32,
    fault_sel: u32,
    /// Pushes are supervisor accesses (the new CPL is below 3).
    supervisor: bool,
}

impl Stack {
    /// Pushes `values` in order, as that many pushes would. When the frame
    /// fits the segment and one page it is one write (a delivery pushed
    /// five or six values, each a page walk and a copy); otherwise, or if
    /// that write faults, push by push, so that the fault and CR2 are the
    /// first push's that fails, as on the CPU.
    fn push_all(&mut self, mem: &mut impl LinearMemory, values: &[u32]) -> Result<(), Exception> {
        let len = values.len() as u32 * self.size;
        let fits = if self.ss.typ & descriptor::types::EXPAND_DOWN_OR_CONFORMING != 0 {
            self.esp >= len && self.esp - len > self.ss.limit
        } else {
            self.esp >= len && self.esp - 1 <= self.ss.limit
        };
        let low = self.ss.base.wrapping_add(self.esp.wrapping_sub(len));
        let one_page = low & !(PAGE_4K - 1) == low.wrapping_add(len - 1) & !(PAGE_4K - 1);
        if fits && one_page && len as usize <= 6 * 4 {
            // The frame as memory holds it: the last value pushed lowest.
            let mut frame = [0u8; 6 * 4];
            for (i, v) in values.iter().rev().enumerate() {
                let at = i * self.size as usize;
                frame[at..at + self.size as usize]
                    .copy_from_slice(&v.to_le_bytes()[..self.size as usize]);
            }
            let data = &frame[..len as usize];
            let wrote = if self.supervisor {
                mem.write_supervisor(low, data)
            } else {
                mem.write(low, data)
            };
            if wrote.is_ok() {
                self.esp -= len;
                return Ok(());
            }
        }
        for &v in values {
            self.push(mem, v)?;
        }
        Ok(())
    }

    fn push(&mut self, mem: &mut impl LinearMemory, value: u32) -> Result<(), Exception> {
        let esp = self.esp.wrapping_sub(self.size);
        let fits = if self.ss.typ & descriptor::types::EXPAND_DOWN_OR_CONFORMING != 0 {
            esp > self.ss.limit
        } else {
            esp.checked_add(self.size - 1)
                .is_some_and(|end| end <= self.ss.limit)
        };
        if !fits {
            return Err(Exception::with_code(vector::SS, self.fault_sel));
        }
        let at = self.ss.base.wrapping_add(esp);
        let bytes = value.to_le_bytes();
        let data = &bytes[..self.size as usize];
        if self.supervisor {
            mem.write_supervisor(at, data)?;
        } else {
            mem.write(at, data)?;
        }
        self.esp = esp;
        Ok(())
    }
}

/// Delivers one event through the IDT in protected mode. On a fault the
/// state is unchanged and the caller decides what happens next (see
/// [`deliver_event`], which applies the double-fault rules). Through a
/// task gate, a fault past the switch's commit point belongs to the new
/// task and is delivered here, as a new event.
pub fn deliver(cpu: &mut CpuState, mem: &mut impl LinearMemory, vec: u8, event: Event) -> Outcome {
    if cpu.eflags & flags::VM != 0 {
        return Err(Failure::Unsupported(Unsupported::Feature(
            "interrupts in virtual-8086 mode",
        )));
    }
    let ext = u32::from(event != Event::Software);
    let idt_code = u32::from(vec) * 8 + 2 + ext;
    let at = descriptor::idt_entry_address(&cpu.idtr, vec).ok_or(Exception::gp(idt_code))?;
    let mut raw = [0; 8];
    mem.read_supervisor(at, &mut raw)?;
    let gate = match Gate::from_bytes(raw) {
        Some(g)
            if matches!(
                g.kind,
                GateKind::Interrupt | GateKind::Trap | GateKind::Task
            ) =>
        {
            g
        }
        _ => return Err(Exception::gp(idt_code).into()),
    };
    let cpl = cpu.cpl();
    if event == Event::Software && gate.dpl < cpl {
        return Err(Exception::gp(idt_code).into());
    }
    if !gate.present {
        return Err(Exception::with_code(vector::NP, idt_code).into());
    }
    if gate.kind == GateKind::Task {
        return task_gate(cpu, mem, &gate, event, ext);
    }

    let cs_sel = Selector(gate.selector);
    if cs_sel.is_null() {
        return Err(Exception::gp(ext).into());
    }
    let cs_code = u32::from(cs_sel.0 & !3) | ext;
    let (cs_desc, cs_at) = read_descriptor(cpu, mem, cs_sel, ext)?;
    if !cs_desc.is_code() || cs_desc.dpl > cpl {
        return Err(Exception::gp(cs_code).into());
    }
    if !cs_desc.present {
        return Err(Exception::with_code(vector::NP, cs_code).into());
    }

    let size = if gate.size32 { 4 } else { 2 };
    let to_inner = !cs_desc.is_conforming() && cs_desc.dpl < cpl;
    let new_cpl = if to_inner { cs_desc.dpl } else { cpl };
    let mut stack = if to_inner {
        let (ss, esp) = inner_stack(cpu, mem, new_cpl, ext)?;
        let fault_sel = u32::from(ss.selector & !3) | ext;
        Stack {
            ss,
            esp,
            size,
            fault_sel,
            supervisor: new_cpl < 3,
        }
    } else {
        Stack {
            ss: cpu.ss,
            esp: cpu.esp,
            size,
            fault_sel: ext,
            supervisor: new_cpl < 3,
        }
    };
    let mut frame = [0u32; 6];
    let mut n = 0;
    let mut add = |v: u32| {
        frame[n] = v;
        n += 1;
    };
    if to_inner {
        add(u32::from(cpu.ss.selector));
        add(cpu.esp);
    }
    add(cpu.eflags);
    add(u32::from(cpu.cs.selector));
    add(cpu.eip);
    if let Event::Exception(Some(code)) = event {
        add(code);
    }
    stack.push_all(mem, &frame[..n])?;
    mark_accessed(mem, &cs_desc, cs_at)?;

    // Nothing can fault past this point: the state changes only now.
    cpu.cs = cs_desc
        .with_accessed()
        .to_segment(cs_sel.with_rpl(new_cpl).0);
    cpu.eip = gate.target_offset();
    cpu.ss = stack.ss;
    cpu.esp = stack.esp;
    cpu.eflags &= !(flags::TF | flags::NT | flags::RF | flags::VM);
    if gate.clears_if() {
        cpu.eflags &= !flags::IF;
    }
    Ok(())
}

/// Delivery through a task gate: a nested switch to the task its TSS
/// selector names (SDM vol. 2, INT n, TASK-GATE), then the error code, if
/// the event has one, pushed on the new task's stack. The old task resumes
/// at the EIP the CPU state holds (the faulting instruction, or the one
/// after INT n or the interrupted one). An exception the new task raises
/// before its first instruction is delivered at once, in its context.
fn task_gate(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    gate: &Gate,
    event: Event,
    ext: u32,
) -> Outcome {
    let sel = Selector(gate.selector);
    let gp = Exception::gp(u32::from(sel.0 & !3) | ext);
    if sel.ti() {
        return Err(gp.into());
    }
    let (desc, at) = read_descriptor(cpu, mem, sel, ext)?;
    if !task::is_tss(&desc) || task::is_busy(&desc) {
        return Err(gp.into());
    }
    if !desc.present {
        return Err(Exception::with_code(vector::NP, u32::from(sel.0 & !3) | ext).into());
    }
    let resume = cpu.eip;
    let pending = task::switch(cpu, mem, sel, &desc, at, Source::Event { ext }, resume)?;
    let pending = match (pending, event) {
        (None, Event::Exception(Some(code))) => push_error_code(cpu, mem, code, ext).err(),
        (pending, _) => pending,
    };
    deliver_pending(cpu, mem, pending)
}

/// Pushes an exception's error code on the new task's stack (a 32-bit
/// TSS's task pushes a doubleword).
fn push_error_code(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    code: u32,
    ext: u32,
) -> Result<(), Exception> {
    let mut stack = Stack {
        ss: cpu.ss,
        esp: cpu.esp,
        size: 4,
        fault_sel: ext,
        supervisor: cpu.cpl() < 3,
    };
    stack.push(mem, code)?;
    cpu.esp = stack.esp;
    Ok(())
}

/// Delivers the exception a new task raised before its first instruction
/// (the task switch is done: this is a new event, not a double fault).
fn deliver_pending(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    pending: Option<Exception>,
) -> Outcome {
    match pending {
        Some(e) => deliver_event(cpu, mem, e.vector, Event::Exception(e.error_code))
            .map_err(Failure::Unsupported),
        None => Ok(()),
    }
}

/// IRET with NT set: back to the task the current TSS's link names,
/// which must be a busy TSS in the GDT (SDM vol. 2, IRET, TASK-RETURN).
fn task_return(cpu: &mut CpuState, mem: &mut impl LinearMemory) -> Outcome {
    let link = Selector(read_tss_u16(
        mem,
        cpu.tr.base.wrapping_add(descriptor::tss32::LINK as u32),
    )?);
    let ts = Exception::with_code(vector::TS, u32::from(link.0 & !3));
    if link.ti() || link.is_null() {
        return Err(ts.into());
    }
    let (desc, at) =
        read_descriptor(cpu, mem, link, 0)
            .map_err(|e| if e.vector == vector::GP { ts } else { e })?;
    if !task::is_busy(&desc) {
        return Err(ts.into());
    }
    if !desc.present {
        return Err(Exception::with_code(vector::NP, u32::from(link.0 & !3)).into());
    }
    let resume = cpu.eip;
    let pending = task::switch(cpu, mem, link, &desc, at, Source::Iret, resume)?;
    deliver_pending(cpu, mem, pending)
}

/// The stack for privilege level `dpl` from the current 32-bit TSS, checked
/// as an interrupt to an inner level checks it.
fn inner_stack(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    dpl: u8,
    ext: u32,
) -> Result<(Segment, u32), Exception> {
    let ts = |code: u32| Exception::with_code(vector::TS, code);
    let tr_code = u32::from(cpu.tr.selector & !3) | ext;
    if cpu.tr.typ & 0x8 == 0 {
        // A 16-bit TSS: SP and SS for level n sit at 2 + 4n and 4 + 4n.
        let off = 2 + 4 * u32::from(dpl);
        if off + 3 > cpu.tr.limit {
            return Err(ts(tr_code));
        }
        let esp = u32::from(read_tss_u16(mem, cpu.tr.base + off)?);
        let ss = read_tss_u16(mem, cpu.tr.base + off + 2)?;
        return check_inner_ss(cpu, mem, Selector(ss), dpl, ext).map(|s| (s, esp));
    }
    let off = 4 + 8 * u32::from(dpl);
    if off + 5 > cpu.tr.limit {
        return Err(ts(tr_code));
    }
    let esp = read_tss_u32(mem, cpu.tr.base.wrapping_add(off))?;
    let ss = read_tss_u16(mem, cpu.tr.base.wrapping_add(off + 4))?;
    check_inner_ss(cpu, mem, Selector(ss), dpl, ext).map(|s| (s, esp))
}

fn check_inner_ss(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    sel: Selector,
    dpl: u8,
    ext: u32,
) -> Result<Segment, Exception> {
    let code = u32::from(sel.0 & !3) | ext;
    let ts = Exception::with_code(vector::TS, code);
    if sel.is_null() {
        return Err(Exception::with_code(vector::TS, ext));
    }
    let (desc, at) = read_descriptor(cpu, mem, sel, ext).map_err(|_| ts)?;
    if sel.rpl() != dpl || desc.dpl != dpl || !desc.is_writable() {
        return Err(ts);
    }
    if !desc.present {
        return Err(Exception::with_code(vector::SS, code));
    }
    mark_accessed(mem, &desc, at)?;
    Ok(desc.with_accessed().to_segment(sel.0))
}

/// Exception classes for the double-fault rules (SDM table 6-5).
#[derive(PartialEq, Eq)]
enum Class {
    Benign,
    Contributory,
    PageFault,
    DoubleFault,
}

fn class(v: u8) -> Class {
    match v {
        vector::DE | 10..=13 => Class::Contributory,
        vector::PF => Class::PageFault,
        vector::DF => Class::DoubleFault,
        _ => Class::Benign,
    }
}

/// Delivers an event, applying the double-fault rules when delivery itself
/// faults: a contributory fault while delivering a contributory fault or a
/// page fault becomes #DF(0); a fault while delivering #DF shuts down.
pub fn deliver_event(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    vec: u8,
    event: Event,
) -> Result<(), Unsupported> {
    let (mut vec, mut event) = (vec, event);
    loop {
        if vec == vector::PF && matches!(event, Event::Exception(_)) {
            if let Some(addr) = mem.take_fault_address() {
                cpu.cr2 = addr;
            }
        }
        let first = if matches!(event, Event::Exception(_)) {
            class(vec)
        } else {
            Class::Benign
        };
        match deliver(cpu, mem, vec, event) {
            Ok(()) => return Ok(()),
            Err(Failure::Unsupported(u)) => return Err(u),
            Err(Failure::Fault(second)) => {
                let second_class = class(second.vector);
                let double = match first {
                    Class::DoubleFault => return Err(Unsupported::TripleFault),
                    Class::Contributory => second_class == Class::Contributory,
                    Class::PageFault => {
                        matches!(second_class, Class::Contributory | Class::PageFault)
                    }
                    Class::Benign => false,
                };
                (vec, event) = if double {
                    (vector::DF, Event::Exception(Some(0)))
                } else {
                    (second.vector, Event::Exception(second.error_code))
                };
            }
        }
    }
}

/// Pops a value of `size` bytes at SS:ESP+`off`.
fn stack_read(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    off: u32,
    size: u32,
) -> Result<u32, Exception> {
    let esp = cpu.esp.wrapping_add(off);
    if cpu.ss.typ & descriptor::types::EXPAND_DOWN_OR_CONFORMING == 0
        && esp
            .checked_add(size - 1)
            .is_none_or(|end| end > cpu.ss.limit)
    {
        return Err(Exception::with_code(vector::SS, 0));
    }
    let at = cpu.ss.base.wrapping_add(esp);
    if size == 4 {
        read_u32(mem, at)
    } else {
        read_u16(mem, at).map(u32::from)
    }
}

/// Pops `out.len()` values of `size` bytes from SS:ESP+`off` on, as that
/// many [`stack_read`]s would: one read when they fit the segment and one
/// page, else (or if it faults) one by one, so that the fault is the
/// CPU's.
fn stack_read_all(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    off: u32,
    size: u32,
    out: &mut [u32],
) -> Result<(), Exception> {
    let len = out.len() as u32 * size;
    let esp = cpu.esp.wrapping_add(off);
    let fits = cpu.ss.typ & descriptor::types::EXPAND_DOWN_OR_CONFORMING == 0
        && esp
            .checked_add(len - 1)
            .is_some_and(|end| end <= cpu.ss.limit);
    let at = cpu.ss.base.wrapping_add(esp);
    let one_page = at & !(PAGE_4K - 1) == at.wrapping_add(len - 1) & !(PAGE_4K - 1);
    if fits && one_page && len as usize <= 5 * 4 {
        let mut buf = [0u8; 5 * 4];
        if mem.read(at, &mut buf[..len as usize]).is_ok() {
            for (i, v) in out.iter_mut().enumerate() {
                let b = &buf[i * size as usize..];
                *v = if size == 4 {
                    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
                } else {
                    u32::from(u16::from_le_bytes([b[0], b[1]]))
                };
            }
            return Ok(());
        }
    }
    for (i, v) in out.iter_mut().enumerate() {
        *v = stack_read(cpu, mem, off + i as u32 * size, size)?;
    }
    Ok(())
}

/// On a return to the outer level `cpl`, the data segment registers that
/// level may not use become null, so the kernel's selectors do not leak
/// into user mode (IRET and far RET).
pub(crate) fn null_outer_data_segments(cpu: &mut CpuState, cpl: u8) {
    for seg in [&mut cpu.ds, &mut cpu.es, &mut cpu.fs, &mut cpu.gs] {
        let data_or_nonconforming = !seg.is_code() || seg.typ & 0x4 == 0;
        if seg.present && data_or_nonconforming && seg.dpl < cpl {
            *seg = Segment::unusable();
        }
    }
}

/// Protected-mode IRET with the given operand size (4 for IRETD, 2 for the
/// 16-bit form), to the same or an outer privilege level, or with NT set
/// back to the previous task. `cpu.eip` is past the IRET: where the task
/// an IRET with NT leaves resumes when it is switched to again.
pub fn iret(cpu: &mut CpuState, mem: &mut impl LinearMemory, size: u32) -> Outcome {
    if cpu.eflags & flags::NT != 0 {
        return task_return(cpu, mem);
    }
    let mut top = [0u32; 3];
    stack_read_all(cpu, mem, 0, size, &mut top)?;
    let [eip, cs, popped_flags] = top;
    let cs_sel = Selector(cs as u16);
    let popped_flags = if size == 2 {
        (cpu.eflags & 0xFFFF_0000) | popped_flags
    } else {
        popped_flags
    };
    if popped_flags & flags::VM != 0 && cpu.cpl() == 0 {
        return Err(Failure::Unsupported(Unsupported::Feature(
            "IRET to virtual-8086 mode",
        )));
    }
    if cs_sel.is_null() {
        return Err(Exception::gp(0).into());
    }
    let cs_code = u32::from(cs_sel.0 & !3);
    let (cs_desc, cs_at) = read_descriptor(cpu, mem, cs_sel, 0)?;
    let cpl = cpu.cpl();
    let rpl = cs_sel.rpl();
    if !cs_desc.is_code() || rpl < cpl {
        return Err(Exception::gp(cs_code).into());
    }
    let dpl_ok = if cs_desc.is_conforming() {
        cs_desc.dpl <= rpl
    } else {
        cs_desc.dpl == rpl
    };
    if !dpl_ok {
        return Err(Exception::gp(cs_code).into());
    }
    if !cs_desc.present {
        return Err(Exception::with_code(vector::NP, cs_code).into());
    }
    let cs = cs_desc.with_accessed().to_segment(cs_sel.0);
    if eip > cs.limit {
        return Err(Exception::gp(0).into());
    }

    // The new SS and ESP, and whether the return is to an outer level;
    // the state changes only once nothing can fault any more.
    let (new_ss, new_esp) = if rpl > cpl {
        let mut outer = [0u32; 2];
        stack_read_all(cpu, mem, 3 * size, size, &mut outer)?;
        let [esp, ss] = outer;
        let ss_sel = Selector(ss as u16);
        if ss_sel.is_null() {
            return Err(Exception::gp(0).into());
        }
        let ss_code = u32::from(ss_sel.0 & !3);
        let (ss_desc, ss_at) = read_descriptor(cpu, mem, ss_sel, 0)?;
        if ss_sel.rpl() != rpl || ss_desc.dpl != rpl || !ss_desc.is_writable() {
            return Err(Exception::gp(ss_code).into());
        }
        if !ss_desc.present {
            return Err(Exception::with_code(vector::SS, ss_code).into());
        }
        mark_accessed(mem, &ss_desc, ss_at)?;
        let esp = if size == 4 {
            esp
        } else {
            (cpu.esp & 0xFFFF_0000) | esp
        };
        (Some(ss_desc.with_accessed().to_segment(ss_sel.0)), esp)
    } else {
        (None, cpu.esp.wrapping_add(3 * size))
    };
    mark_accessed(mem, &cs_desc, cs_at)?;

    let mut mask = FLAGS_IRET_ANY_CPL;
    let iopl = (cpu.eflags & flags::IOPL) >> 12;
    if u32::from(cpl) <= iopl {
        mask |= flags::IF;
    }
    if cpl == 0 {
        mask |= flags::IOPL;
    }
    if size == 2 {
        mask &= 0xFFFF;
    }
    cpu.eflags = (cpu.eflags & !mask) | (popped_flags & mask) | flags::FIXED1;
    if let Some(ss) = new_ss {
        cpu.ss = ss;
        null_outer_data_segments(cpu, rpl);
    }
    cpu.esp = new_esp;
    cpu.cs = cs;
    cpu.eip = eip;
    Ok(())
}

/// Linear memory for unit tests of this and other architecture modules.
#[cfg(test)]
pub(crate) mod testing {
    use super::{vector, Exception, LinearMemory};
    use crate::descriptor::Descriptor;

    /// A flat 4 GiB, 32-bit, not-yet-accessed descriptor.
    pub fn flat(typ: u8, dpl: u8) -> Descriptor {
        Descriptor {
            base: 0,
            limit: 0xFFFFF,
            typ,
            s: true,
            dpl,
            present: true,
            avl: false,
            l: false,
            db: true,
            g: true,
        }
    }

    /// Flat memory from linear 0; accesses past the end raise #PF.
    pub struct Flat(pub Vec<u8>);

    impl LinearMemory for Flat {
        fn read(&mut self, at: u32, buf: &mut [u8]) -> Result<(), Exception> {
            let at = at as usize;
            let s = self
                .0
                .get(at..at + buf.len())
                .ok_or(Exception::with_code(vector::PF, 0))?;
            buf.copy_from_slice(s);
            Ok(())
        }

        fn write(&mut self, at: u32, data: &[u8]) -> Result<(), Exception> {
            let at = at as usize;
            let s = self
                .0
                .get_mut(at..at + data.len())
                .ok_or(Exception::with_code(vector::PF, 0))?;
            s.copy_from_slice(data);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{flat, Flat};
    use super::*;
    use crate::descriptor::tss32;
    use crate::state::cr0;
    use crate::TableRegister;

    const GDT: u32 = 0x1000;
    const IDT: u32 = 0x2000;
    const TSS: u32 = 0x3000;
    const KCODE: u16 = 0x08;
    const KDATA: u16 = 0x10;
    const UCODE: u16 = 0x1B;
    const UDATA: u16 = 0x23;

    /// A machine with kernel and user segments, an IDT whose vector 0x80 is
    /// a DPL-3 trap gate and whose other vectors are DPL-0 interrupt gates.
    fn setup() -> (CpuState, Flat) {
        let mut m = Flat(vec![0; 0x10000]);
        let descs = [
            0u64,
            flat(0xA, 0).to_u64(),
            flat(0x2, 0).to_u64(),
            flat(0xA, 3).to_u64(),
            flat(0x2, 3).to_u64(),
        ];
        for (i, d) in descs.iter().enumerate() {
            m.write(GDT + 8 * i as u32, &d.to_le_bytes()).unwrap();
        }
        for v in 0..=255u32 {
            let mut g = Gate::interrupt32(KCODE, 0x5000 + v * 16, 0);
            if v == 0x80 {
                g.kind = GateKind::Trap;
                g.dpl = 3;
            }
            m.write(IDT + 8 * v, &g.to_bytes()).unwrap();
        }
        m.write(TSS + tss32::ESP0 as u32, &0x9000u32.to_le_bytes())
            .unwrap();
        m.write(TSS + tss32::SS0 as u32, &u32::from(KDATA).to_le_bytes())
            .unwrap();
        let mut cpu = CpuState::reset();
        cpu.cr0 = cr0::PE | cr0::ET;
        cpu.gdtr = TableRegister {
            base: GDT,
            limit: 5 * 8 - 1,
        };
        cpu.idtr = TableRegister {
            base: IDT,
            limit: 256 * 8 - 1,
        };
        cpu.tr = Segment {
            selector: 0x28,
            base: TSS,
            limit: 0x67,
            typ: 0xB,
            present: true,
            ..Segment::default()
        };
        cpu.cs = Segment::flat_code32(KCODE);
        cpu.ss = Segment::flat_data32(KDATA);
        cpu.ds = Segment::flat_data32(KDATA);
        cpu.es = cpu.ds;
        cpu.esp = 0x8000;
        cpu.eip = 0x4000;
        cpu.eflags = flags::FIXED1 | flags::IF;
        (cpu, m)
    }

    fn to_user(cpu: &mut CpuState) {
        cpu.cs = flat(0xB, 3).to_segment(UCODE);
        cpu.ss = flat(0x3, 3).to_segment(UDATA);
        cpu.ds = cpu.ss;
        cpu.es = cpu.ss;
        cpu.esp = 0xC000;
        cpu.eip = 0x0800_0000;
    }

    fn word(m: &mut Flat, at: u32) -> u32 {
        read_u32(m, at).unwrap()
    }

    #[test]
    fn same_privilege_exception_pushes_frame_and_error_code() {
        let (mut cpu, mut m) = setup();
        deliver(&mut cpu, &mut m, vector::GP, Event::Exception(Some(0x18))).unwrap();
        assert_eq!(cpu.eip, 0x5000 + 13 * 16);
        assert_eq!(cpu.esp, 0x8000 - 16);
        assert_eq!(word(&mut m, cpu.esp), 0x18, "error code");
        assert_eq!(word(&mut m, cpu.esp + 4), 0x4000, "EIP");
        assert_eq!(word(&mut m, cpu.esp + 8), u32::from(KCODE), "CS");
        assert_eq!(
            word(&mut m, cpu.esp + 12),
            flags::FIXED1 | flags::IF,
            "EFLAGS"
        );
        assert!(!cpu.interrupts_enabled(), "interrupt gate clears IF");
    }

    #[test]
    fn user_int80_switches_to_the_tss_stack_and_iret_returns() {
        let (mut cpu, mut m) = setup();
        to_user(&mut cpu);
        let before = cpu.clone();
        deliver(&mut cpu, &mut m, 0x80, Event::Software).unwrap();
        assert_eq!(cpu.cpl(), 0);
        assert_eq!(cpu.ss.selector, KDATA);
        assert_eq!(cpu.esp, 0x9000 - 20);
        assert_eq!(word(&mut m, cpu.esp), before.eip);
        assert_eq!(word(&mut m, cpu.esp + 4), u32::from(UCODE));
        assert_eq!(word(&mut m, cpu.esp + 12), 0xC000, "user ESP");
        assert_eq!(word(&mut m, cpu.esp + 16), u32::from(UDATA), "user SS");
        assert!(cpu.interrupts_enabled(), "trap gate keeps IF");
        iret(&mut cpu, &mut m, 4).unwrap();
        assert_eq!(cpu.cpl(), 3);
        assert_eq!(cpu.eip, before.eip);
        assert_eq!(cpu.esp, before.esp);
        assert_eq!(cpu.ss.selector, UDATA);
        assert_eq!(cpu.ds.selector, UDATA, "user DS survives (DPL 3)");
    }

    /// Flat memory with absent pages: an access touching one raises #PF
    /// and records the first absent byte, as a page walk of each page in
    /// turn would.
    struct Holed {
        flat: Flat,
        absent: Vec<u32>,
        fault: Option<u32>,
    }

    impl Holed {
        fn check(&mut self, at: u32, len: usize) -> Result<(), Exception> {
            for a in at..at + len as u32 {
                if self.absent.contains(&(a >> 12)) {
                    self.fault = Some(a);
                    return Err(Exception::with_code(vector::PF, 2));
                }
            }
            Ok(())
        }
    }

    impl LinearMemory for Holed {
        fn read(&mut self, at: u32, buf: &mut [u8]) -> Result<(), Exception> {
            self.check(at, buf.len())?;
            self.flat.read(at, buf)
        }

        fn write(&mut self, at: u32, data: &[u8]) -> Result<(), Exception> {
            self.check(at, data.len())?;
            self.flat.write(at, data)
        }

        fn take_fault_address(&mut self) -> Option<u32> {
            self.fault.take()
        }
    }

    /// A user-mode INT 0x80 whose kernel stack (ESP0) is `esp0`, with the
    /// page `absent` missing: the fault delivery raises and its CR2.
    fn int80_onto(esp0: u32, absent: u32) -> (Outcome, Option<u32>, Holed) {
        let (mut cpu, mut m) = setup();
        to_user(&mut cpu);
        m.write(TSS + tss32::ESP0 as u32, &esp0.to_le_bytes())
            .unwrap();
        let mut h = Holed {
            flat: m,
            absent: vec![absent >> 12],
            fault: None,
        };
        let r = deliver(&mut cpu, &mut h, 0x80, Event::Software);
        let cr2 = h.take_fault_address();
        (r, cr2, h)
    }

    #[test]
    fn a_frame_in_one_missing_page_faults_at_its_first_push() {
        // The frame is written at once where it can be; the CPU pushes
        // SS first, at the top, and that push is where it faults.
        let (r, cr2, _) = int80_onto(0x9000, 0x8000);
        assert!(matches!(r, Err(Failure::Fault(e)) if e.vector == vector::PF));
        assert_eq!(cr2, Some(0x8FFC));
    }

    #[test]
    fn a_frame_across_pages_faults_at_the_first_push_into_the_missing_one() {
        // SS and ESP fit the page above; EFLAGS is the first push below.
        let (r, cr2, mut h) = int80_onto(0x9008, 0x8000);
        assert!(matches!(r, Err(Failure::Fault(e)) if e.vector == vector::PF));
        assert_eq!(cr2, Some(0x8FFC));
        assert_eq!(
            word(&mut h.flat, 0x9004),
            u32::from(UDATA),
            "user SS pushed"
        );
        assert_eq!(word(&mut h.flat, 0x9000), 0xC000, "user ESP pushed");
    }

    #[test]
    fn iret_with_its_frame_across_pages_faults_at_the_first_missing_pop() {
        let (mut cpu, m) = setup();
        // EIP and CS below the boundary, EFLAGS on the missing page.
        cpu.esp = 0x8FF8;
        let mut h = Holed {
            flat: m,
            absent: vec![0x9],
            fault: None,
        };
        let before = cpu.clone();
        let r = iret(&mut cpu, &mut h, 4);
        assert!(matches!(r, Err(Failure::Fault(e)) if e.vector == vector::PF));
        assert_eq!(h.take_fault_address(), Some(0x9000));
        assert_eq!(cpu, before, "a faulting IRET changes nothing");
    }

    #[test]
    fn int_n_through_a_dpl0_gate_from_user_mode_is_gp() {
        let (mut cpu, mut m) = setup();
        to_user(&mut cpu);
        let before = cpu.clone();
        let r = deliver(&mut cpu, &mut m, 0x30, Event::Software);
        assert_eq!(r, Err(Failure::Fault(Exception::gp(0x30 * 8 + 2))));
        assert_eq!(cpu, before, "state unchanged on a fault");
    }

    #[test]
    fn vector_past_idt_limit_is_gp_with_idt_and_ext_bits() {
        let (mut cpu, mut m) = setup();
        cpu.idtr.limit = 0x20 * 8 - 1;
        let r = deliver(&mut cpu, &mut m, 0x20, Event::External);
        assert_eq!(r, Err(Failure::Fault(Exception::gp(0x20 * 8 + 3))));
    }

    #[test]
    fn not_present_gate_is_np() {
        let (mut cpu, mut m) = setup();
        let mut g = Gate::interrupt32(KCODE, 0x1234, 0);
        g.present = false;
        m.write(IDT + 8 * 0x40, &g.to_bytes()).unwrap();
        let r = deliver(&mut cpu, &mut m, 0x40, Event::External);
        assert_eq!(
            r,
            Err(Failure::Fault(Exception::with_code(
                vector::NP,
                0x40 * 8 + 3
            )))
        );
    }

    #[test]
    fn iret_to_user_nulls_kernel_data_segments() {
        let (mut cpu, mut m) = setup();
        // Build an outer-return frame by hand on the kernel stack.
        let frame = [
            0x0800_0000u32,
            u32::from(UCODE),
            flags::FIXED1 | flags::IF,
            0xC000,
            u32::from(UDATA),
        ];
        cpu.esp = 0x7000;
        for (i, v) in frame.iter().enumerate() {
            m.write(0x7000 + 4 * i as u32, &v.to_le_bytes()).unwrap();
        }
        cpu.eflags = flags::FIXED1;
        iret(&mut cpu, &mut m, 4).unwrap();
        assert_eq!(cpu.cpl(), 3);
        assert_eq!(
            cpu.ds,
            Segment::unusable(),
            "kernel DS must not reach user mode"
        );
        assert!(cpu.interrupts_enabled());
    }

    #[test]
    fn iret_at_cpl3_cannot_change_if_or_iopl() {
        let (mut cpu, mut m) = setup();
        to_user(&mut cpu);
        cpu.eflags = flags::FIXED1 | flags::IF;
        let frame = [
            0x0800_0010u32,
            u32::from(UCODE),
            flags::FIXED1 | flags::IOPL | flags::CF,
        ];
        for (i, v) in frame.iter().enumerate() {
            m.write(cpu.esp + 4 * i as u32, &v.to_le_bytes()).unwrap();
        }
        iret(&mut cpu, &mut m, 4).unwrap();
        assert_eq!(cpu.eflags, flags::FIXED1 | flags::IF | flags::CF);
    }

    #[test]
    fn iret_to_inner_privilege_is_gp() {
        let (mut cpu, mut m) = setup();
        to_user(&mut cpu);
        let frame = [0x4000u32, u32::from(KCODE), flags::FIXED1];
        for (i, v) in frame.iter().enumerate() {
            m.write(cpu.esp + 4 * i as u32, &v.to_le_bytes()).unwrap();
        }
        let r = iret(&mut cpu, &mut m, 4);
        assert_eq!(r, Err(Failure::Fault(Exception::gp(u32::from(KCODE)))));
    }

    #[test]
    fn fault_delivering_gp_becomes_double_fault_then_triple() {
        let (mut cpu, mut m) = setup();
        // #GP's gate is not present -> #NP while delivering #GP -> #DF.
        let mut g = Gate::interrupt32(KCODE, 0x1234, 0);
        g.present = false;
        m.write(IDT + 8 * u32::from(vector::GP), &g.to_bytes())
            .unwrap();
        deliver_event(&mut cpu, &mut m, vector::GP, Event::Exception(Some(0))).unwrap();
        assert_eq!(cpu.eip, 0x5000 + 8 * 16, "in the #DF handler");
        assert_eq!(word(&mut m, cpu.esp), 0, "#DF error code is 0");
        // Now break #DF too: delivering it faults -> shutdown.
        m.write(IDT + 8 * u32::from(vector::DF), &g.to_bytes())
            .unwrap();
        let (mut cpu, _) = setup();
        let r = deliver_event(&mut cpu, &mut m, vector::GP, Event::Exception(Some(0)));
        assert_eq!(r, Err(Unsupported::TripleFault));
    }

    #[test]
    fn benign_fault_during_delivery_is_delivered_serially() {
        let (mut cpu, mut m) = setup();
        let mut g = Gate::interrupt32(KCODE, 0x1234, 0);
        g.present = false;
        m.write(IDT + 8 * 0x21, &g.to_bytes()).unwrap();
        // External interrupt 0x21 faults with #NP, which is delivered normally.
        deliver_event(&mut cpu, &mut m, 0x21, Event::External).unwrap();
        assert_eq!(cpu.eip, 0x5000 + 11 * 16);
        assert_eq!(word(&mut m, cpu.esp), 0x21 * 8 + 3);
    }
}
