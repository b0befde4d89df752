//! The 8-byte descriptor formats of protected mode (SDM vol. 3, 3.4-3.5,
//! 5.8-5.12, 7.2): segment descriptors, gates, selectors and the 32-bit TSS.
//!
//! Decoding keeps every architecturally defined bit so that `decode` then
//! `encode` reproduces the input; semantic helpers (effective limit, gate
//! target) sit on top instead of being baked into the stored fields.

use crate::state::{Segment, TableRegister};

/// Descriptor type values (the 4-bit type field) and their bits.
pub mod types {
    /// Code/data: the segment has been accessed.
    pub const ACCESSED: u8 = 0x1;
    /// Data: writable. Code: readable.
    pub const WRITABLE_OR_READABLE: u8 = 0x2;
    /// Data: expand-down. Code: conforming.
    pub const EXPAND_DOWN_OR_CONFORMING: u8 = 0x4;
    /// Code (set) or data (clear) segment.
    pub const CODE: u8 = 0x8;

    /// System: available 16-bit TSS.
    pub const TSS16_AVAILABLE: u8 = 0x1;
    /// System: local descriptor table.
    pub const LDT: u8 = 0x2;
    /// System: busy 16-bit TSS.
    pub const TSS16_BUSY: u8 = 0x3;
    /// System: 16-bit call gate.
    pub const CALL_GATE16: u8 = 0x4;
    /// System: task gate.
    pub const TASK_GATE: u8 = 0x5;
    /// System: 16-bit interrupt gate.
    pub const INTERRUPT_GATE16: u8 = 0x6;
    /// System: 16-bit trap gate.
    pub const TRAP_GATE16: u8 = 0x7;
    /// System: available 32-bit TSS.
    pub const TSS32_AVAILABLE: u8 = 0x9;
    /// System: busy 32-bit TSS.
    pub const TSS32_BUSY: u8 = 0xB;
    /// System: 32-bit call gate.
    pub const CALL_GATE32: u8 = 0xC;
    /// System: 32-bit interrupt gate.
    pub const INTERRUPT_GATE32: u8 = 0xE;
    /// System: 32-bit trap gate.
    pub const TRAP_GATE32: u8 = 0xF;

    /// The bit that distinguishes a busy TSS from an available one.
    pub const TSS_BUSY_BIT: u8 = 0x2;
}

/// Which descriptor table a selector indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// The global descriptor table (TI = 0).
    Gdt,
    /// The current local descriptor table (TI = 1).
    Ldt,
}

/// A segment selector: 13-bit index, table indicator, requested privilege level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct Selector(pub u16);

impl Selector {
    /// Builds a selector from its three fields (index is truncated to 13 bits).
    pub const fn new(index: u16, table: Table, rpl: u8) -> Self {
        let ti = match table {
            Table::Gdt => 0,
            Table::Ldt => 4,
        };
        Selector((index << 3) | ti | (rpl as u16 & 3))
    }

    /// The descriptor index within its table.
    pub const fn index(self) -> u16 {
        self.0 >> 3
    }

    /// The table indicator bit (TI).
    pub const fn ti(self) -> bool {
        self.0 & 4 != 0
    }

    /// The table the selector indexes.
    pub const fn table(self) -> Table {
        if self.ti() {
            Table::Ldt
        } else {
            Table::Gdt
        }
    }

    /// The requested privilege level.
    pub const fn rpl(self) -> u8 {
        (self.0 & 3) as u8
    }

    /// The same selector with a different RPL, as ARPL and far returns make.
    pub const fn with_rpl(self, rpl: u8) -> Self {
        Selector((self.0 & !3) | (rpl as u16 & 3))
    }

    /// True for the null selector: GDT index 0 with any RPL (LDT index 0 is a
    /// real entry, which is why TI is part of the test).
    pub const fn is_null(self) -> bool {
        self.0 & !3 == 0
    }

    /// Byte offset of the descriptor within its table.
    pub const fn table_offset(self) -> u32 {
        (self.0 & !7) as u32
    }

    /// Linear address of the 8-byte descriptor, or `None` when it lies past
    /// the table limit (the CPU raises #GP(selector) then). `ldtr` is the LDT
    /// cache; an unusable LDT (not present) rejects every LDT selector.
    pub fn descriptor_address(self, gdtr: &TableRegister, ldtr: &Segment) -> Option<u32> {
        let (base, limit) = match self.table() {
            Table::Gdt => (gdtr.base, u32::from(gdtr.limit)),
            Table::Ldt if ldtr.present => (ldtr.base, ldtr.limit),
            Table::Ldt => return None,
        };
        let offset = self.table_offset();
        // All eight bytes must be inside the limit, not just the first.
        (offset.checked_add(7)? <= limit).then(|| base.wrapping_add(offset))
    }
}

impl From<u16> for Selector {
    fn from(raw: u16) -> Self {
        Selector(raw)
    }
}

impl From<Selector> for u16 {
    fn from(sel: Selector) -> Self {
        sel.0
    }
}

/// Linear address of the IDT entry for `vector`, or `None` when it lies past
/// the IDT limit (the CPU raises #GP(vector * 8 + 2) then).
pub fn idt_entry_address(idtr: &TableRegister, vector: u8) -> Option<u32> {
    let offset = u32::from(vector) * 8;
    (offset + 7 <= u32::from(idtr.limit)).then(|| idtr.base.wrapping_add(offset))
}

/// A segment descriptor (code, data, or system segment such as a TSS or LDT),
/// with every field as stored in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Descriptor {
    /// Linear base address.
    pub base: u32,
    /// The raw 20-bit limit field, before granularity scaling.
    pub limit: u32,
    /// Type field (4 bits).
    pub typ: u8,
    /// S bit: code/data (true) or system (false).
    pub s: bool,
    /// Descriptor privilege level.
    pub dpl: u8,
    /// Present bit.
    pub present: bool,
    /// Available-for-software bit.
    pub avl: bool,
    /// L bit (64-bit code); meaningless to a 32-bit CPU but kept for round trips.
    pub l: bool,
    /// D/B bit: 32-bit default operand size / stack size / upper bound.
    pub db: bool,
    /// Granularity: limit counts 4 KiB pages.
    pub g: bool,
}

impl Descriptor {
    /// Decodes a descriptor from its 64-bit little-endian table value.
    pub const fn from_u64(raw: u64) -> Self {
        let lo = raw as u32;
        let hi = (raw >> 32) as u32;
        Descriptor {
            base: (lo >> 16) | ((hi & 0xFF) << 16) | (hi & 0xFF00_0000),
            limit: (lo & 0xFFFF) | (hi & 0x000F_0000),
            typ: ((hi >> 8) & 0xF) as u8,
            s: hi & (1 << 12) != 0,
            dpl: ((hi >> 13) & 3) as u8,
            present: hi & (1 << 15) != 0,
            avl: hi & (1 << 20) != 0,
            l: hi & (1 << 21) != 0,
            db: hi & (1 << 22) != 0,
            g: hi & (1 << 23) != 0,
        }
    }

    /// Encodes the descriptor into its 64-bit table value.
    pub const fn to_u64(&self) -> u64 {
        let lo = (self.limit & 0xFFFF) | (self.base << 16);
        let hi = ((self.base >> 16) & 0xFF)
            | ((self.typ as u32 & 0xF) << 8)
            | ((self.s as u32) << 12)
            | ((self.dpl as u32 & 3) << 13)
            | ((self.present as u32) << 15)
            | (self.limit & 0x000F_0000)
            | ((self.avl as u32) << 20)
            | ((self.l as u32) << 21)
            | ((self.db as u32) << 22)
            | ((self.g as u32) << 23)
            | (self.base & 0xFF00_0000);
        ((hi as u64) << 32) | lo as u64
    }

    /// Decodes the eight bytes as they sit in guest memory.
    pub const fn from_bytes(bytes: [u8; 8]) -> Self {
        Self::from_u64(u64::from_le_bytes(bytes))
    }

    /// Encodes into the eight bytes as they sit in guest memory.
    pub const fn to_bytes(&self) -> [u8; 8] {
        self.to_u64().to_le_bytes()
    }

    /// The limit in bytes with granularity applied, as the CPU caches it.
    pub const fn effective_limit(&self) -> u32 {
        if self.g {
            (self.limit << 12) | 0xFFF
        } else {
            self.limit
        }
    }

    /// True for a code segment.
    pub const fn is_code(&self) -> bool {
        self.s && self.typ & types::CODE != 0
    }

    /// True for a data segment.
    pub const fn is_data(&self) -> bool {
        self.s && self.typ & types::CODE == 0
    }

    /// True for a system descriptor (TSS, LDT or gate).
    pub const fn is_system(&self) -> bool {
        !self.s
    }

    /// True for a conforming code segment.
    pub const fn is_conforming(&self) -> bool {
        self.is_code() && self.typ & types::EXPAND_DOWN_OR_CONFORMING != 0
    }

    /// True for an expand-down data segment.
    pub const fn is_expand_down(&self) -> bool {
        self.is_data() && self.typ & types::EXPAND_DOWN_OR_CONFORMING != 0
    }

    /// True when the segment may be read (all data, readable code).
    pub const fn is_readable(&self) -> bool {
        self.is_data() || (self.is_code() && self.typ & types::WRITABLE_OR_READABLE != 0)
    }

    /// True for a writable data segment (code is never writable).
    pub const fn is_writable(&self) -> bool {
        self.is_data() && self.typ & types::WRITABLE_OR_READABLE != 0
    }

    /// True for an available or busy 32-bit TSS.
    pub const fn is_tss32(&self) -> bool {
        !self.s && self.typ & !types::TSS_BUSY_BIT == types::TSS32_AVAILABLE
    }

    /// True for an LDT descriptor.
    pub const fn is_ldt(&self) -> bool {
        !self.s && self.typ == types::LDT
    }

    /// True when the entry is a gate rather than a segment.
    pub const fn is_gate(&self) -> bool {
        !self.s && GateKind::from_type(self.typ).is_some()
    }

    /// The same descriptor with the accessed bit set, which the CPU writes
    /// back on every segment load of a code/data descriptor.
    pub const fn with_accessed(mut self) -> Self {
        if self.s {
            self.typ |= types::ACCESSED;
        }
        self
    }

    /// The hidden-cache contents a segment load of this descriptor produces.
    pub fn to_segment(&self, selector: u16) -> Segment {
        Segment {
            selector,
            base: self.base,
            limit: self.effective_limit(),
            typ: self.typ,
            s: self.s,
            dpl: self.dpl,
            present: self.present,
            db: self.db,
            g: self.g,
            avl: self.avl,
        }
    }

    /// The descriptor that would load as `seg`; the low 12 limit bits are
    /// dropped when `seg.g` is set, since the table cannot store them.
    pub fn from_segment(seg: &Segment) -> Self {
        Descriptor {
            base: seg.base,
            limit: if seg.g {
                seg.limit >> 12
            } else {
                seg.limit & 0xF_FFFF
            },
            typ: seg.typ,
            s: seg.s,
            dpl: seg.dpl,
            present: seg.present,
            avl: seg.avl,
            l: false,
            db: seg.db,
            g: seg.g,
        }
    }
}

impl Segment {
    /// The hidden-cache contents a segment load of `desc` with `selector` produces.
    pub fn from_descriptor(selector: u16, desc: &Descriptor) -> Self {
        desc.to_segment(selector)
    }

    /// The descriptor that would load as this segment.
    pub fn to_descriptor(&self) -> Descriptor {
        Descriptor::from_segment(self)
    }
}

/// The four kinds of gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateKind {
    /// Interrupt gate: clears IF on entry.
    Interrupt,
    /// Trap gate: leaves IF alone.
    Trap,
    /// Call gate: far CALL/JMP target with optional parameter copy.
    Call,
    /// Task gate: switches tasks through the TSS it names.
    Task,
}

impl GateKind {
    /// The kind and 32-bitness a system type value encodes, if it is a gate.
    pub const fn from_type(typ: u8) -> Option<(GateKind, bool)> {
        match typ {
            types::INTERRUPT_GATE32 => Some((GateKind::Interrupt, true)),
            types::INTERRUPT_GATE16 => Some((GateKind::Interrupt, false)),
            types::TRAP_GATE32 => Some((GateKind::Trap, true)),
            types::TRAP_GATE16 => Some((GateKind::Trap, false)),
            types::CALL_GATE32 => Some((GateKind::Call, true)),
            types::CALL_GATE16 => Some((GateKind::Call, false)),
            // A task gate has no size; report it as 32-bit so encode is stable.
            types::TASK_GATE => Some((GateKind::Task, true)),
            _ => None,
        }
    }

    /// The type field value for this kind and size.
    pub const fn to_type(self, size32: bool) -> u8 {
        match (self, size32) {
            (GateKind::Interrupt, true) => types::INTERRUPT_GATE32,
            (GateKind::Interrupt, false) => types::INTERRUPT_GATE16,
            (GateKind::Trap, true) => types::TRAP_GATE32,
            (GateKind::Trap, false) => types::TRAP_GATE16,
            (GateKind::Call, true) => types::CALL_GATE32,
            (GateKind::Call, false) => types::CALL_GATE16,
            (GateKind::Task, _) => types::TASK_GATE,
        }
    }
}

/// A gate descriptor (IDT entry, or call/task gate in the GDT/LDT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gate {
    /// Interrupt, trap, call or task gate.
    pub kind: GateKind,
    /// 32-bit gate (true) or 16-bit gate (false); always true for task gates.
    pub size32: bool,
    /// Target code segment selector, or the TSS selector of a task gate.
    pub selector: u16,
    /// The raw 32-bit offset field (reserved in task gates, kept for round trips).
    pub offset: u32,
    /// Gate privilege level: the highest CPL allowed to use it via INT n/CALL.
    pub dpl: u8,
    /// Present bit.
    pub present: bool,
    /// Call gates: doublewords (or words) copied to the new stack; 5 bits.
    pub param_count: u8,
}

impl Gate {
    /// Decodes a gate, or `None` when the entry is a segment or a non-gate
    /// system type (the CPU raises #GP on such IDT entries).
    pub const fn from_u64(raw: u64) -> Option<Self> {
        let hi = (raw >> 32) as u32;
        if hi & (1 << 12) != 0 {
            return None;
        }
        let Some((kind, size32)) = GateKind::from_type(((hi >> 8) & 0xF) as u8) else {
            return None;
        };
        Some(Gate {
            kind,
            size32,
            selector: (raw >> 16) as u16,
            offset: (raw as u32 & 0xFFFF) | (hi & 0xFFFF_0000),
            dpl: ((hi >> 13) & 3) as u8,
            present: hi & (1 << 15) != 0,
            param_count: (hi & 0x1F) as u8,
        })
    }

    /// Encodes the gate into its 64-bit table value (reserved bits 5-7 of
    /// the high word, which decode drops, are written as zero).
    pub const fn to_u64(&self) -> u64 {
        let lo = (self.offset & 0xFFFF) | ((self.selector as u32) << 16);
        let hi = (self.param_count as u32 & 0x1F)
            | ((self.kind.to_type(self.size32) as u32) << 8)
            | ((self.dpl as u32 & 3) << 13)
            | ((self.present as u32) << 15)
            | (self.offset & 0xFFFF_0000);
        ((hi as u64) << 32) | lo as u64
    }

    /// Decodes the eight bytes as they sit in guest memory.
    pub const fn from_bytes(bytes: [u8; 8]) -> Option<Self> {
        Self::from_u64(u64::from_le_bytes(bytes))
    }

    /// Encodes into the eight bytes as they sit in guest memory.
    pub const fn to_bytes(&self) -> [u8; 8] {
        self.to_u64().to_le_bytes()
    }

    /// A present 32-bit interrupt gate, the kind Linux fills its IDT with.
    pub const fn interrupt32(selector: u16, offset: u32, dpl: u8) -> Self {
        Gate {
            kind: GateKind::Interrupt,
            size32: true,
            selector,
            offset,
            dpl,
            present: true,
            param_count: 0,
        }
    }

    /// The entry point offset the CPU actually uses: 16-bit gates ignore
    /// the high half, task gates have none.
    pub const fn target_offset(&self) -> u32 {
        match (self.kind, self.size32) {
            (GateKind::Task, _) => 0,
            (_, true) => self.offset,
            (_, false) => self.offset & 0xFFFF,
        }
    }

    /// True when entry through this gate clears EFLAGS.IF.
    pub const fn clears_if(&self) -> bool {
        matches!(self.kind, GateKind::Interrupt)
    }
}

/// Size in bytes of the 32-bit TSS up to and including the I/O map base.
pub const TSS32_SIZE: usize = 104;

/// Byte offsets of the 32-bit TSS fields (SDM vol. 3, figure 7-2), for
/// engines that update single fields in guest memory.
pub mod tss32 {
    /// Previous task link (selector).
    pub const LINK: usize = 0x00;
    /// Ring-0 stack pointer.
    pub const ESP0: usize = 0x04;
    /// Ring-0 stack segment.
    pub const SS0: usize = 0x08;
    /// Ring-1 stack pointer.
    pub const ESP1: usize = 0x0C;
    /// Ring-1 stack segment.
    pub const SS1: usize = 0x10;
    /// Ring-2 stack pointer.
    pub const ESP2: usize = 0x14;
    /// Ring-2 stack segment.
    pub const SS2: usize = 0x18;
    /// Page-directory base.
    pub const CR3: usize = 0x1C;
    /// Instruction pointer.
    pub const EIP: usize = 0x20;
    /// Flags.
    pub const EFLAGS: usize = 0x24;
    /// EAX.
    pub const EAX: usize = 0x28;
    /// ECX.
    pub const ECX: usize = 0x2C;
    /// EDX.
    pub const EDX: usize = 0x30;
    /// EBX.
    pub const EBX: usize = 0x34;
    /// ESP.
    pub const ESP: usize = 0x38;
    /// EBP.
    pub const EBP: usize = 0x3C;
    /// ESI.
    pub const ESI: usize = 0x40;
    /// EDI.
    pub const EDI: usize = 0x44;
    /// ES selector.
    pub const ES: usize = 0x48;
    /// CS selector.
    pub const CS: usize = 0x4C;
    /// SS selector.
    pub const SS: usize = 0x50;
    /// DS selector.
    pub const DS: usize = 0x54;
    /// FS selector.
    pub const FS: usize = 0x58;
    /// GS selector.
    pub const GS: usize = 0x5C;
    /// LDT selector.
    pub const LDT: usize = 0x60;
    /// Debug trap flag (bit 0 of the word).
    pub const TRAP: usize = 0x64;
    /// I/O permission bitmap offset from the TSS base.
    pub const IOMAP_BASE: usize = 0x66;
}

/// The 32-bit task-state segment, every defined field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Tss32 {
    /// Previous task link.
    pub link: u16,
    /// Ring-0 stack pointer.
    pub esp0: u32,
    /// Ring-0 stack segment.
    pub ss0: u16,
    /// Ring-1 stack pointer.
    pub esp1: u32,
    /// Ring-1 stack segment.
    pub ss1: u16,
    /// Ring-2 stack pointer.
    pub esp2: u32,
    /// Ring-2 stack segment.
    pub ss2: u16,
    /// Page-directory base.
    pub cr3: u32,
    /// Instruction pointer.
    pub eip: u32,
    /// Flags.
    pub eflags: u32,
    /// EAX.
    pub eax: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
    /// EBX.
    pub ebx: u32,
    /// ESP.
    pub esp: u32,
    /// EBP.
    pub ebp: u32,
    /// ESI.
    pub esi: u32,
    /// EDI.
    pub edi: u32,
    /// ES selector.
    pub es: u16,
    /// CS selector.
    pub cs: u16,
    /// SS selector.
    pub ss: u16,
    /// DS selector.
    pub ds: u16,
    /// FS selector.
    pub fs: u16,
    /// GS selector.
    pub gs: u16,
    /// LDT selector.
    pub ldt: u16,
    /// Debug trap bit: raise #DB on a task switch into this task.
    pub trap: bool,
    /// I/O permission bitmap offset from the TSS base.
    pub iomap_base: u16,
}

fn rd16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn rd32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn wr16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn wr32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

impl Tss32 {
    /// Decodes the first [`TSS32_SIZE`] bytes of `bytes` (a TSS in guest
    /// memory is usually followed by an I/O bitmap); `None` if too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        use tss32::*;
        let b = bytes.get(..TSS32_SIZE)?;
        Some(Tss32 {
            link: rd16(b, LINK),
            esp0: rd32(b, ESP0),
            ss0: rd16(b, SS0),
            esp1: rd32(b, ESP1),
            ss1: rd16(b, SS1),
            esp2: rd32(b, ESP2),
            ss2: rd16(b, SS2),
            cr3: rd32(b, CR3),
            eip: rd32(b, EIP),
            eflags: rd32(b, EFLAGS),
            eax: rd32(b, EAX),
            ecx: rd32(b, ECX),
            edx: rd32(b, EDX),
            ebx: rd32(b, EBX),
            esp: rd32(b, ESP),
            ebp: rd32(b, EBP),
            esi: rd32(b, ESI),
            edi: rd32(b, EDI),
            es: rd16(b, ES),
            cs: rd16(b, CS),
            ss: rd16(b, SS),
            ds: rd16(b, DS),
            fs: rd16(b, FS),
            gs: rd16(b, GS),
            ldt: rd16(b, LDT),
            trap: b[TRAP] & 1 != 0,
            iomap_base: rd16(b, IOMAP_BASE),
        })
    }

    /// Encodes the TSS; reserved bits are written as zero.
    pub fn to_bytes(&self) -> [u8; TSS32_SIZE] {
        use tss32::*;
        let mut b = [0u8; TSS32_SIZE];
        wr16(&mut b, LINK, self.link);
        wr32(&mut b, ESP0, self.esp0);
        wr16(&mut b, SS0, self.ss0);
        wr32(&mut b, ESP1, self.esp1);
        wr16(&mut b, SS1, self.ss1);
        wr32(&mut b, ESP2, self.esp2);
        wr16(&mut b, SS2, self.ss2);
        wr32(&mut b, CR3, self.cr3);
        wr32(&mut b, EIP, self.eip);
        wr32(&mut b, EFLAGS, self.eflags);
        wr32(&mut b, EAX, self.eax);
        wr32(&mut b, ECX, self.ecx);
        wr32(&mut b, EDX, self.edx);
        wr32(&mut b, EBX, self.ebx);
        wr32(&mut b, ESP, self.esp);
        wr32(&mut b, EBP, self.ebp);
        wr32(&mut b, ESI, self.esi);
        wr32(&mut b, EDI, self.edi);
        wr16(&mut b, ES, self.es);
        wr16(&mut b, CS, self.cs);
        wr16(&mut b, SS, self.ss);
        wr16(&mut b, DS, self.ds);
        wr16(&mut b, FS, self.fs);
        wr16(&mut b, GS, self.gs);
        wr16(&mut b, LDT, self.ldt);
        b[TRAP] = self.trap as u8;
        wr16(&mut b, IOMAP_BASE, self.iomap_base);
        b
    }

    /// The (SS, ESP) pair the CPU loads when an interrupt or call gate raises
    /// CPL to `ring` (0-2); `None` for ring 3, which has no TSS stack.
    pub const fn stack_for_ring(&self, ring: u8) -> Option<(u16, u32)> {
        match ring {
            0 => Some((self.ss0, self.esp0)),
            1 => Some((self.ss1, self.esp1)),
            2 => Some((self.ss2, self.esp2)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAT_CODE0: u64 = 0x00CF_9A00_0000_FFFF;
    const FLAT_DATA0: u64 = 0x00CF_9200_0000_FFFF;

    #[test]
    fn flat_ring0_code_decodes() {
        let d = Descriptor::from_u64(FLAT_CODE0);
        assert_eq!(d.base, 0);
        assert_eq!(d.limit, 0xF_FFFF);
        assert_eq!(d.effective_limit(), 0xFFFF_FFFF);
        assert_eq!(d.typ, 0xA);
        assert!(d.s && d.present && d.db && d.g);
        assert!(!d.avl && !d.l);
        assert_eq!(d.dpl, 0);
        assert!(d.is_code() && d.is_readable() && !d.is_writable() && !d.is_conforming());
        assert_eq!(d.to_u64(), FLAT_CODE0);
    }

    #[test]
    fn flat_ring0_data_decodes_and_loads_like_state_helper() {
        let d = Descriptor::from_u64(FLAT_DATA0);
        assert!(d.is_data() && d.is_writable() && !d.is_expand_down());
        let seg = d.with_accessed().to_segment(0x18);
        assert_eq!(seg, Segment::flat_data32(0x18));
        let code = Descriptor::from_u64(FLAT_CODE0).with_accessed();
        assert_eq!(
            Segment::from_descriptor(0x10, &code),
            Segment::flat_code32(0x10)
        );
    }

    #[test]
    fn scattered_base_and_limit_fields_round_trip() {
        // Base 0xC1234567, limit 0x5ABCD byte-granular, DPL 3 data, AVL set.
        let raw = 0xC115_F223_4567_ABCD_u64;
        let d = Descriptor::from_u64(raw);
        assert_eq!(d.base, 0xC123_4567);
        assert_eq!(d.limit, 0x5_ABCD);
        assert_eq!(d.dpl, 3);
        assert!(d.avl && !d.g);
        assert_eq!(d.effective_limit(), 0x5_ABCD);
        assert_eq!(d.to_u64(), raw);
        assert_eq!(Descriptor::from_bytes(raw.to_le_bytes()), d);
        assert_eq!(d.to_bytes(), raw.to_le_bytes());
    }

    #[test]
    fn every_bit_pattern_round_trips() {
        // A cheap xorshift walk over the full 64-bit space.
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            assert_eq!(Descriptor::from_u64(x).to_u64(), x);
        }
    }

    #[test]
    fn segment_to_descriptor_round_trips() {
        let seg = Segment::flat_code32(0x60);
        assert_eq!(seg.to_descriptor().to_u64(), FLAT_CODE0 | (1 << 40));
        assert_eq!(seg.to_descriptor().to_segment(0x60), seg);
        let real = Segment::real_mode(0x1234);
        assert_eq!(Descriptor::from_segment(&real).to_segment(0x1234), real);
    }

    #[test]
    fn linux_tss_descriptor_is_a_system_segment() {
        // An available 32-bit TSS at 0xC1A0B000, limit 0x206B (with I/O bitmap).
        let d = Descriptor {
            base: 0xC1A0_B000,
            limit: 0x206B,
            typ: types::TSS32_AVAILABLE,
            present: true,
            ..Descriptor::default()
        };
        let raw = d.to_u64();
        assert_eq!(raw, 0xC100_89A0_B000_206B);
        let back = Descriptor::from_u64(raw);
        assert!(back.is_tss32() && back.is_system() && !back.is_gate() && !back.is_ldt());
        let busy = Descriptor {
            typ: types::TSS32_BUSY,
            ..back
        };
        assert!(busy.is_tss32());
        let tr = busy.to_segment(0x80);
        assert_eq!(tr.typ, Segment::TYPE_TSS32_BUSY);
        assert!(!tr.s);
        assert_eq!(tr.limit, 0x206B);
        // The accessed bit is a code/data notion: a TSS must not change.
        assert_eq!(back.with_accessed(), back);
    }

    #[test]
    fn ldt_descriptor_matches_state_constant() {
        let d = Descriptor {
            typ: types::LDT,
            present: true,
            ..Descriptor::default()
        };
        assert!(d.is_ldt());
        assert_eq!(types::LDT, Segment::TYPE_LDT);
        assert_eq!(d.to_u64(), 0x0000_8200_0000_0000);
    }

    #[test]
    fn interrupt_gate_known_encoding() {
        // Linux-style: selector 0x60, handler 0xC15A1234, DPL 0, 32-bit interrupt gate.
        let g = Gate::interrupt32(0x60, 0xC15A_1234, 0);
        assert_eq!(g.to_u64(), 0xC15A_8E00_0060_1234);
        assert_eq!(Gate::from_u64(0xC15A_8E00_0060_1234), Some(g));
        assert!(g.clears_if());
        assert_eq!(g.target_offset(), 0xC15A_1234);
        assert!(Descriptor::from_u64(g.to_u64()).is_gate());
    }

    #[test]
    fn trap_gate_dpl3_known_encoding() {
        // The int 0x80 system-call gate: 32-bit trap gate, DPL 3.
        let raw = 0xC100_EF00_0060_5678_u64;
        let g = Gate::from_u64(raw).unwrap();
        assert_eq!(g.kind, GateKind::Trap);
        assert!(g.size32 && g.present && !g.clears_if());
        assert_eq!(g.dpl, 3);
        assert_eq!(g.selector, 0x60);
        assert_eq!(g.offset, 0xC100_5678);
        assert_eq!(g.to_u64(), raw);
        assert_eq!(
            Gate::from_bytes(raw.to_le_bytes()).unwrap().to_bytes(),
            raw.to_le_bytes()
        );
    }

    #[test]
    fn sixteen_bit_gates_use_low_offset_only() {
        for (kind, typ) in [
            (GateKind::Interrupt, types::INTERRUPT_GATE16),
            (GateKind::Trap, types::TRAP_GATE16),
            (GateKind::Call, types::CALL_GATE16),
        ] {
            let raw = 0xABCD_8000_0008_1234_u64 | (u64::from(typ) << 40);
            let g = Gate::from_u64(raw).unwrap();
            assert_eq!((g.kind, g.size32), (kind, false));
            assert_eq!(g.target_offset(), 0x1234);
            assert_eq!(g.to_u64(), raw);
        }
    }

    #[test]
    fn call_gate_keeps_parameter_count() {
        let g = Gate {
            kind: GateKind::Call,
            size32: true,
            selector: 0x08,
            offset: 0x0010_2000,
            dpl: 3,
            present: true,
            param_count: 5,
        };
        let raw = g.to_u64();
        assert_eq!(raw, 0x0010_EC05_0008_2000);
        assert_eq!(Gate::from_u64(raw), Some(g));
    }

    #[test]
    fn task_gate_round_trips_and_has_no_target() {
        let raw = 0x0000_8500_0028_0000_u64;
        let g = Gate::from_u64(raw).unwrap();
        assert_eq!(g.kind, GateKind::Task);
        assert_eq!(g.selector, 0x28);
        assert_eq!(g.target_offset(), 0);
        assert_eq!(g.to_u64(), raw);
    }

    #[test]
    fn non_gates_are_rejected() {
        assert_eq!(Gate::from_u64(FLAT_CODE0), None);
        // A TSS descriptor in the IDT is not a gate.
        assert_eq!(Gate::from_u64(0x0000_8900_0000_0067), None);
        // Reserved system type 0.
        assert_eq!(Gate::from_u64(0x0000_8000_0000_0000), None);
    }

    #[test]
    fn every_gate_type_round_trips_through_type_field() {
        for typ in 0..16u8 {
            if let Some((kind, size32)) = GateKind::from_type(typ) {
                assert_eq!(kind.to_type(size32), typ);
            }
        }
    }

    #[test]
    fn selector_fields() {
        let s = Selector(0x007B); // Linux __USER_DS: GDT index 15, RPL 3.
        assert_eq!(s.index(), 15);
        assert_eq!(s.table(), Table::Gdt);
        assert!(!s.ti());
        assert_eq!(s.rpl(), 3);
        assert_eq!(s.table_offset(), 0x78);
        assert_eq!(Selector::new(15, Table::Gdt, 3), s);
        assert_eq!(s.with_rpl(0), Selector(0x78));
        let l = Selector::new(2, Table::Ldt, 3);
        assert_eq!(l.0, 0x17);
        assert!(l.ti() && !l.is_null());
        assert!(Selector(3).is_null() && Selector(0).is_null());
        assert!(!Selector(4).is_null());
        assert_eq!(u16::from(Selector::from(0x60)), 0x60);
    }

    #[test]
    fn descriptor_address_honours_limits() {
        let gdtr = TableRegister {
            base: 0x1000,
            limit: 0x7F, // 16 entries
        };
        let mut ldtr = Segment::unusable();
        assert_eq!(
            Selector(0x78).descriptor_address(&gdtr, &ldtr),
            Some(0x1078)
        );
        assert_eq!(Selector(0x80).descriptor_address(&gdtr, &ldtr), None);
        assert_eq!(Selector(0x0C).descriptor_address(&gdtr, &ldtr), None);
        ldtr.present = true;
        ldtr.base = 0x5000;
        ldtr.limit = 0x0F;
        assert_eq!(
            Selector(0x0C).descriptor_address(&gdtr, &ldtr),
            Some(0x5008)
        );
        assert_eq!(Selector(0x14).descriptor_address(&gdtr, &ldtr), None);
        // A limit that covers only part of an entry rejects it.
        let short = TableRegister {
            base: 0x1000,
            limit: 0x0C,
        };
        assert_eq!(Selector(0x08).descriptor_address(&short, &ldtr), None);
    }

    #[test]
    fn idt_entry_address_honours_limit() {
        let idtr = TableRegister {
            base: 0xC000_0000,
            limit: 0x7FF,
        };
        assert_eq!(idt_entry_address(&idtr, 0x80), Some(0xC000_0400));
        assert_eq!(idt_entry_address(&idtr, 0xFF), Some(0xC000_07F8));
        let small = TableRegister {
            limit: 0xFF,
            ..idtr
        };
        assert_eq!(idt_entry_address(&small, 0x20), None);
        assert_eq!(idt_entry_address(&small, 0x1F), Some(0xC000_00F8));
    }

    fn sample_tss() -> Tss32 {
        Tss32 {
            link: 0x28,
            esp0: 0xC180_0000,
            ss0: 0x68,
            esp1: 0x1111_1111,
            ss1: 0x69,
            esp2: 0x2222_2222,
            ss2: 0x6A,
            cr3: 0x0100_0000,
            eip: 0x0804_8000,
            eflags: 0x202,
            eax: 1,
            ecx: 2,
            edx: 3,
            ebx: 4,
            esp: 5,
            ebp: 6,
            esi: 7,
            edi: 8,
            es: 0x7B,
            cs: 0x73,
            ss: 0x7B,
            ds: 0x7B,
            fs: 0xD8,
            gs: 0x33,
            ldt: 0x88,
            trap: true,
            iomap_base: 0x68,
        }
    }

    #[test]
    fn tss_round_trips_and_fields_sit_at_their_offsets() {
        let t = sample_tss();
        let b = t.to_bytes();
        assert_eq!(Tss32::from_bytes(&b), Some(t));
        assert_eq!(
            &b[tss32::ESP0..tss32::ESP0 + 4],
            &0xC180_0000u32.to_le_bytes()
        );
        assert_eq!(&b[tss32::SS0..tss32::SS0 + 2], &0x68u16.to_le_bytes());
        assert_eq!(
            &b[tss32::CR3..tss32::CR3 + 4],
            &0x0100_0000u32.to_le_bytes()
        );
        assert_eq!(
            &b[tss32::EIP..tss32::EIP + 4],
            &0x0804_8000u32.to_le_bytes()
        );
        assert_eq!(&b[tss32::EDI..tss32::EDI + 4], &8u32.to_le_bytes());
        assert_eq!(&b[tss32::GS..tss32::GS + 2], &0x33u16.to_le_bytes());
        assert_eq!(&b[tss32::LDT..tss32::LDT + 2], &0x88u16.to_le_bytes());
        assert_eq!(b[tss32::TRAP], 1);
        assert_eq!(&b[tss32::IOMAP_BASE..], &0x68u16.to_le_bytes());
        // Reserved upper halves of selector slots stay zero.
        assert_eq!(&b[tss32::SS0 + 2..tss32::ESP1], &[0, 0]);
    }

    #[test]
    fn tss_decode_ignores_reserved_bits_and_trailing_bitmap() {
        let mut buf = vec![0xFFu8; TSS32_SIZE + 8192];
        buf[..TSS32_SIZE].copy_from_slice(&sample_tss().to_bytes());
        buf[tss32::SS0 + 2] = 0xAA; // reserved
        buf[tss32::TRAP] |= 0xFE; // reserved bits above T
        assert_eq!(Tss32::from_bytes(&buf), Some(sample_tss()));
        assert_eq!(Tss32::from_bytes(&buf[..TSS32_SIZE - 1]), None);
    }

    #[test]
    fn tss_stack_for_ring() {
        let t = sample_tss();
        assert_eq!(t.stack_for_ring(0), Some((0x68, 0xC180_0000)));
        assert_eq!(t.stack_for_ring(2), Some((0x6A, 0x2222_2222)));
        assert_eq!(t.stack_for_ring(3), None);
    }
}
