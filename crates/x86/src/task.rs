//! Hardware task switching (SDM vol. 3, "Task Management", and the JMP,
//! CALL, INT n and IRET pseudocode of vol. 2): the switch itself, shared by
//! far JMP and CALL to a TSS or through a task gate, IRET with NT set, and
//! interrupts and exceptions through a task gate in the IDT.
//!
//! A switch has a commit point. Everything that can fail before it (the new
//! TSS's descriptor and limit, reading the new TSS, writing the old one)
//! fails with the CPU as the instruction found it, although stores to the
//! old TSS already made stay made, as on hardware. After it (TR loaded),
//! the new task's LDT and segments are loaded and checked, and the first
//! failure is an exception raised in the new task's context, before its
//! first instruction: [`switch`] returns it for the caller to deliver, as
//! it does the #DB a TSS's T bit asks for.
//!
//! Only 32-bit TSSes are modelled; a switch from or to a 16-bit TSS, or to
//! a virtual-8086 task, is reported as unsupported before anything changes.
//! Where QEMU and the SDM differ, popek follows the SDM: a not-present
//! stack segment raises #SS (QEMU: #NP), error codes carry the EXT bit of
//! an external event (QEMU: never), descriptors are marked accessed (QEMU:
//! not), the T bit raises #DB (QEMU: ignored), and TR caches the busy type.

use crate::descriptor::{tss32, types, Descriptor, Selector, Tss32, TSS32_SIZE};
use crate::interrupt::Unsupported;
use crate::interrupt::{mark_accessed, read_descriptor, vector, Exception, Failure, LinearMemory};
use crate::state::{cr0, flags, CpuState, Segment};

/// The smallest limit of a 32-bit TSS: its last defined byte.
pub const TSS32_MIN_LIMIT: u32 = TSS32_SIZE as u32 - 1;

/// DR6.BT: the #DB came from a task switch into a task with the T bit.
pub const DR6_BT: u32 = 1 << 15;

/// DR7's local breakpoint enables (L0-L3) and LE, which a switch clears.
pub const DR7_LOCAL_ENABLES: u32 = 0x155;

/// The type bit that tells a 32-bit TSS (9, 11) from a 16-bit one (1, 3).
const TSS_32BIT: u8 = 0x8;

/// The EFLAGS bits a switch loads from the new TSS.
const LOADED_FLAGS: u32 = flags::UNPRIVILEGED | flags::IF | flags::IOPL | flags::RF | flags::VM;

/// What started the switch: it decides the busy bits, the back link, NT,
/// and the EXT bit of error codes raised on the way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// JMP: the old task is no longer busy; no link.
    Jmp,
    /// CALL: the new task is nested (back link, NT); the old stays busy.
    Call,
    /// IRET with NT set: back to the task the link names; the old task is
    /// no longer busy and its saved NT is clear.
    Iret,
    /// An interrupt or exception through a task gate: nested as by CALL.
    /// `ext` is 1 for an external event (hardware interrupt, exception),
    /// which sets the EXT bit of error codes, 0 for INT n.
    Event {
        /// The EXT bit.
        ext: u32,
    },
}

impl Source {
    fn ext(self) -> u32 {
        match self {
            Source::Event { ext } => ext,
            _ => 0,
        }
    }

    fn nests(self) -> bool {
        matches!(self, Source::Call | Source::Event { .. })
    }
}

/// True for a TSS descriptor, available or busy, 16- or 32-bit.
pub fn is_tss(d: &Descriptor) -> bool {
    !d.s && matches!(
        d.typ,
        types::TSS16_AVAILABLE | types::TSS16_BUSY | types::TSS32_AVAILABLE | types::TSS32_BUSY
    )
}

/// True for a busy TSS descriptor.
pub fn is_busy(d: &Descriptor) -> bool {
    is_tss(d) && d.typ & types::TSS_BUSY_BIT != 0
}

/// The error code of a fault about selector `sel`.
fn code(sel: u16, ext: u32) -> u32 {
    u32::from(sel & !3) | ext
}

fn ts(sel: u16, ext: u32) -> Exception {
    Exception::with_code(vector::TS, code(sel, ext))
}

fn unsupported(what: &'static str) -> Failure {
    Failure::Unsupported(Unsupported::Feature(what))
}

/// Switches from the current task to the one whose TSS descriptor `desc`
/// (selector `sel`, read from the GDT at `at`) describes. The caller has
/// made the checks its instruction or gate makes (privilege, busy or not,
/// present); `next_eip` is what the old task resumes at.
///
/// `Err` is a fault before the commit point, with the CPU unchanged. `Ok`
/// means the new task is loaded; `Ok(Some(e))` is an exception the new
/// task raises before its first instruction (a bad segment, EIP past CS's
/// limit, or the T bit's #DB, with DR6.BT set), which the caller delivers.
pub fn switch(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    sel: Selector,
    desc: &Descriptor,
    at: u32,
    source: Source,
    next_eip: u32,
) -> Result<Option<Exception>, Failure> {
    let ext = source.ext();
    if sel.ti() {
        return Err(ts(sel.0, ext).into());
    }
    if desc.typ & TSS_32BIT == 0 {
        return Err(unsupported("task switch to a 16-bit TSS"));
    }
    if cpu.tr.typ & TSS_32BIT == 0 {
        return Err(unsupported("task switch from a 16-bit TSS"));
    }
    let new_base = desc.base;
    let new_limit = desc.effective_limit();
    if new_limit < TSS32_MIN_LIMIT {
        return Err(ts(sel.0, ext).into());
    }
    let mut raw = [0u8; TSS32_SIZE];
    mem.read_supervisor(new_base, &mut raw)?;
    let new = Tss32::from_bytes(&raw).expect("a whole TSS was read");
    if new.eflags & flags::VM != 0 {
        return Err(unsupported("task switch to a virtual-8086 task"));
    }

    // Stores to the old TSS and the descriptors: a fault here leaves the
    // registers as they were.
    // A null TR (no LTR since the loader) has no descriptor to update.
    let old_desc_at = cpu.gdtr.base.wrapping_add(u32::from(cpu.tr.selector & !7));
    if matches!(source, Source::Jmp | Source::Iret) && !Selector(cpu.tr.selector).is_null() {
        set_busy(mem, old_desc_at, false)?;
    }
    let mut old_flags = cpu.eflags;
    if source == Source::Iret {
        old_flags &= !flags::NT;
    }
    save(cpu, mem, next_eip, old_flags)?;
    let mut new_flags = new.eflags;
    if source.nests() {
        mem.write_supervisor(
            new_base.wrapping_add(tss32::LINK as u32),
            &cpu.tr.selector.to_le_bytes(),
        )?;
        new_flags |= flags::NT;
    }
    if source != Source::Iret {
        set_busy(mem, at, true)?;
    }

    // The commit point: from here on, faults belong to the new task.
    let mut busy = *desc;
    busy.typ |= types::TSS_BUSY_BIT;
    cpu.tr = busy.to_segment(sel.0);
    cpu.cr0 |= cr0::TS;
    if cpu.cr0 & cr0::PG != 0 {
        cpu.cr3 = new.cr3;
    }
    cpu.eip = new.eip;
    cpu.eflags = (new_flags & LOADED_FLAGS) | flags::FIXED1;
    cpu.eax = new.eax;
    cpu.ecx = new.ecx;
    cpu.edx = new.edx;
    cpu.ebx = new.ebx;
    cpu.esp = new.esp;
    cpu.ebp = new.ebp;
    cpu.esi = new.esi;
    cpu.edi = new.edi;
    cpu.dr[7] &= !DR7_LOCAL_ENABLES;
    // Selectors first, with caches that cannot be used: whatever fails to
    // load below stays that way for the exception handler to see.
    let sels = [new.es, new.cs, new.ss, new.ds, new.fs, new.gs];
    for (seg, s) in segments(cpu).into_iter().zip(sels) {
        *seg = Segment {
            selector: s,
            ..Segment::unusable()
        };
    }
    cpu.ldtr = Segment {
        selector: new.ldt,
        ..Segment::unusable()
    };
    if let Err(e) = load_new_segments(cpu, mem, &new, ext) {
        return Ok(Some(e));
    }
    if cpu.eip > cpu.cs.limit {
        return Ok(Some(Exception::gp(ext)));
    }
    if new.trap {
        cpu.dr[6] |= DR6_BT;
        return Ok(Some(Exception::plain(vector::DB)));
    }
    Ok(None)
}

/// ES, CS, SS, DS, FS and GS, in the TSS's order.
fn segments(cpu: &mut CpuState) -> [&mut Segment; 6] {
    [
        &mut cpu.es,
        &mut cpu.cs,
        &mut cpu.ss,
        &mut cpu.ds,
        &mut cpu.fs,
        &mut cpu.gs,
    ]
}

/// Sets or clears the busy bit of the TSS descriptor at `at`.
fn set_busy(mem: &mut impl LinearMemory, at: u32, busy: bool) -> Result<(), Exception> {
    let mut b = [0u8];
    mem.read_supervisor(at.wrapping_add(5), &mut b)?;
    let bit = types::TSS_BUSY_BIT;
    b[0] = if busy { b[0] | bit } else { b[0] & !bit };
    mem.write_supervisor(at.wrapping_add(5), &b)
}

/// Stores the old task's registers, selectors, EIP and EFLAGS in its TSS
/// (CR3, the LDT selector and the stacks of inner levels are not stored).
fn save(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    eip: u32,
    eflags: u32,
) -> Result<(), Exception> {
    let base = cpu.tr.base;
    let mut put32 =
        |off: usize, v: u32| mem.write_supervisor(base.wrapping_add(off as u32), &v.to_le_bytes());
    put32(tss32::EIP, eip)?;
    put32(tss32::EFLAGS, eflags)?;
    put32(tss32::EAX, cpu.eax)?;
    put32(tss32::ECX, cpu.ecx)?;
    put32(tss32::EDX, cpu.edx)?;
    put32(tss32::EBX, cpu.ebx)?;
    put32(tss32::ESP, cpu.esp)?;
    put32(tss32::EBP, cpu.ebp)?;
    put32(tss32::ESI, cpu.esi)?;
    put32(tss32::EDI, cpu.edi)?;
    let sels = [
        (tss32::ES, cpu.es.selector),
        (tss32::CS, cpu.cs.selector),
        (tss32::SS, cpu.ss.selector),
        (tss32::DS, cpu.ds.selector),
        (tss32::FS, cpu.fs.selector),
        (tss32::GS, cpu.gs.selector),
    ];
    for (off, s) in sels {
        mem.write_supervisor(base.wrapping_add(off as u32), &s.to_le_bytes())?;
    }
    Ok(())
}

/// Loads the new task's LDT, then CS, SS, ES, DS, FS and GS (QEMU's order),
/// at the CPL CS's selector gives; the first check that fails is the
/// exception.
fn load_new_segments(
    cpu: &mut CpuState,
    mem: &mut impl LinearMemory,
    new: &Tss32,
    ext: u32,
) -> Result<(), Exception> {
    cpu.ldtr = load_ldt(cpu, mem, Selector(new.ldt), ext)?;
    let cpl = Selector(new.cs).rpl();
    cpu.cs = load_code(cpu, mem, Selector(new.cs), cpl, ext)?;
    cpu.ss = load_stack(cpu, mem, Selector(new.ss), cpl, ext)?;
    cpu.es = load_data(cpu, mem, Selector(new.es), cpl, ext)?;
    cpu.ds = load_data(cpu, mem, Selector(new.ds), cpl, ext)?;
    cpu.fs = load_data(cpu, mem, Selector(new.fs), cpl, ext)?;
    cpu.gs = load_data(cpu, mem, Selector(new.gs), cpl, ext)?;
    Ok(())
}

/// A descriptor a task switch loads: #TS past its table's limit.
fn descriptor(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    sel: Selector,
    ext: u32,
) -> Result<(Descriptor, u32), Exception> {
    read_descriptor(cpu, mem, sel, ext).map_err(|e| {
        if e.vector == vector::GP {
            ts(sel.0, ext)
        } else {
            e
        }
    })
}

/// The new LDTR: null leaves it unusable; otherwise a present LDT
/// descriptor in the GDT, or #TS.
fn load_ldt(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    sel: Selector,
    ext: u32,
) -> Result<Segment, Exception> {
    if sel.ti() {
        return Err(ts(sel.0, ext));
    }
    if sel.is_null() {
        return Ok(Segment {
            selector: sel.0,
            ..Segment::unusable()
        });
    }
    let (d, _) = descriptor(cpu, mem, sel, ext)?;
    if !d.is_ldt() || !d.present {
        return Err(ts(sel.0, ext));
    }
    Ok(d.to_segment(sel.0))
}

/// The new CS: a present code segment whose DPL the CPL (its own RPL)
/// allows.
fn load_code(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    sel: Selector,
    cpl: u8,
    ext: u32,
) -> Result<Segment, Exception> {
    if sel.is_null() {
        return Err(ts(0, ext));
    }
    let (d, at) = descriptor(cpu, mem, sel, ext)?;
    let allowed = d.is_code()
        && if d.is_conforming() {
            d.dpl <= cpl
        } else {
            d.dpl == cpl
        };
    if !allowed {
        return Err(ts(sel.0, ext));
    }
    load_present(mem, &d, at, sel, vector::NP, ext)
}

/// The new SS: a present writable data segment at the CPL.
fn load_stack(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    sel: Selector,
    cpl: u8,
    ext: u32,
) -> Result<Segment, Exception> {
    if sel.is_null() {
        return Err(ts(0, ext));
    }
    let (d, at) = descriptor(cpu, mem, sel, ext)?;
    if sel.rpl() != cpl || !d.is_writable() || d.dpl != cpl {
        return Err(ts(sel.0, ext));
    }
    load_present(mem, &d, at, sel, vector::SS, ext)
}

/// A new data segment register: null, or a present readable segment the
/// CPL and RPL may use.
fn load_data(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    sel: Selector,
    cpl: u8,
    ext: u32,
) -> Result<Segment, Exception> {
    if sel.is_null() {
        return Ok(Segment {
            selector: sel.0,
            ..Segment::unusable()
        });
    }
    let (d, at) = descriptor(cpu, mem, sel, ext)?;
    if !d.is_readable() || (!d.is_conforming() && (d.dpl < cpl || d.dpl < sel.rpl())) {
        return Err(ts(sel.0, ext));
    }
    load_present(mem, &d, at, sel, vector::NP, ext)
}

/// The last step of loading a segment register whose descriptor `d` (at
/// linear `at`) passed its type and privilege checks: `absent` (#NP, or
/// #SS for SS) if it is not present, else the segment, with its accessed
/// bit set in the table.
fn load_present(
    mem: &mut impl LinearMemory,
    d: &Descriptor,
    at: u32,
    sel: Selector,
    absent: u8,
    ext: u32,
) -> Result<Segment, Exception> {
    if !d.present {
        return Err(Exception::with_code(absent, code(sel.0, ext)));
    }
    mark_accessed(mem, d, at)?;
    Ok(d.with_accessed().to_segment(sel.0))
}
