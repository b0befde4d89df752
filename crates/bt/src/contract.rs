//! The contract between emitted code and the monitor: everything both sides
//! must agree on byte for byte. The translator embeds these offsets and
//! codes in the host code it emits; the monitor maps the region, fills the
//! vCPU area before every entry and reads it back after every exit; the
//! engine decodes the exit reasons and recreates guest state from the
//! scratch slots. Both sides import this module, and it imports nothing of
//! the crate, so no import cycle can run through it.
//!
//! The monitor region ([`Layout`]) holds, from its base: the vCPU area
//! ([`VcpuArea`]), the stub page (the TC exit stub, then the shared
//! indirect-branch miss handler), the indirect-branch lookup table and the
//! translation cache's code buffer. Translated code reaches all of it
//! through GS, a segment based at the region's base, so emitted code embeds
//! only offsets ([`gs`]): the base itself is a value chosen at run time,
//! which only the set-up, the shadow MMU's checks, the segment truncation
//! and the engine's decoding of guest accesses to the region need.

use std::mem::offset_of;

use x86::state::flags;

/// Size of the monitor region: 4 MiB, two 2 MiB huge pages.
pub const REGION_SIZE: u32 = 0x40_0000;
/// The region's base unless the monitor is told otherwise: the top 4 MiB of
/// the 32-bit space, as design.md section 4 places it.
pub const DEFAULT_BASE: u32 = 0xFFC0_0000;
/// The vCPU fields translated code uses ([`VcpuArea`]).
pub const AREA_OFFSET: u32 = 0;
/// Room for the vCPU area.
pub const AREA_SIZE: u32 = 0x1000;
/// The 64-bit TC exit stub, copied here because a far pointer from 32-bit
/// code holds only a 32-bit offset; the miss handler follows it.
pub const STUB_OFFSET: u32 = 0x1000;
/// Size of the stub page.
pub const STUB_SIZE: u32 = 0x1000;
/// The segment-descriptor cache that inline data-segment loads read
/// ([`SegCacheEntry`]).
pub const SEG_CACHE_OFFSET: u32 = 0x2000;
/// Entries of that cache: one per low byte of a selector.
pub const SEG_CACHE_ENTRIES: u32 = 256;
/// The indirect-branch lookup table.
pub const TABLE_OFFSET: u32 = 0x1_0000;
/// The translation cache's code buffer.
pub const TC_OFFSET: u32 = 0x10_0000;
/// Largest code buffer the region can hold (`--tc-size` upper bound).
pub const TC_MAX: u32 = REGION_SIZE - TC_OFFSET;

/// log2 of the lookup table's entries: the probe indexes it with
/// `movzx r32, r16`.
pub const TABLE_BITS: u32 = 16;
/// Entries of the lookup table.
pub const TABLE_ENTRIES: u32 = 1 << TABLE_BITS;
/// Bytes per entry: the negated guest EIP, then the host address (the
/// probe reads `gs:[TABLE + slot*8]` and `gs:[TABLE + slot*8 + 4]`).
pub const TABLE_ENTRY_SIZE: u32 = 8;
/// Bytes of the whole table (512 KiB and three entries: the rest of the
/// last slot's window, see `cache::lookup`).
pub const TABLE_SIZE: u32 = (TABLE_ENTRIES + TABLE_WAYS - 1) * TABLE_ENTRY_SIZE;
/// Entries a target may sit in: its slot's and the next ones
/// (`cache::lookup`).
pub const TABLE_WAYS: u32 = 4;

/// The vector gate: the page translated code stores to before its first
/// instruction that touches x87, MMX, SSE or AVX state in a block. Runs
/// that do not load the guest's vector state reach GS through a segment
/// whose limit stops below it, so that store faults and the monitor loads
/// the state (docs/bt.md, *Vector state only where it is used*). Nothing
/// else translated code reaches through GS lies at or above it.
pub const VECTOR_GATE_OFFSET: u32 = 0xF_F000;
const _: () = assert!(TABLE_OFFSET + TABLE_SIZE <= VECTOR_GATE_OFFSET);
const _: () = assert!(VECTOR_GATE_OFFSET + 0x1000 <= TC_OFFSET);
const _: () = assert!(TABLE_OFFSET + TABLE_SIZE <= TC_OFFSET);
const _: () = assert!(STUB_OFFSET + STUB_SIZE <= SEG_CACHE_OFFSET);
const _: () = assert!(
    SEG_CACHE_OFFSET + SEG_CACHE_ENTRIES * std::mem::size_of::<SegCacheEntry>() as u32
        <= TABLE_OFFSET
);
const _: () = assert!(std::mem::size_of::<SegCacheEntry>() == 32);

/// One entry of the segment-descriptor cache, at
/// `SEG_CACHE_OFFSET + 32 * (selector & 0xFF)`: what an inline MOV or POP
/// of DS, ES, FS or GS at CPL 0 checks and loads. The negated values let the
/// flag-free check add and test for zero (`lea`, `jecxz`), as the
/// indirect-branch table does.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegCacheEntry {
    /// The selector, negated; [`SegCacheEntry::EMPTY`] matches none.
    pub neg_sel: u32,
    /// Linear address of the guest's descriptor (in its GDT).
    pub desc_at: u32,
    /// The descriptor's low and high dwords when cached, negated: the
    /// load is inline only while the guest's table still holds them.
    pub neg_desc: [u32; 2],
    /// The host selector of the LDT entry holding the kernel-view shadow
    /// of that descriptor.
    pub host_sel: u32,
    /// The selector.
    pub sel: u32,
    _pad: [u32; 2],
}

impl SegCacheEntry {
    /// An empty entry: -0x10000 plus a zero-extended selector is never 0.
    pub const EMPTY: SegCacheEntry = SegCacheEntry {
        neg_sel: 0xFFFF_0000,
        desc_at: 0,
        neg_desc: [0; 2],
        host_sel: 0,
        sel: 0,
        _pad: [0; 2],
    };

    /// The entry of null selector `sel` (0 to 3), at host address `at`:
    /// loads host null, and its "descriptor" is its own zero padding, so
    /// the check always passes.
    pub fn null(sel: u16, at: u32) -> SegCacheEntry {
        SegCacheEntry {
            neg_sel: u32::from(sel).wrapping_neg(),
            desc_at: at + std::mem::offset_of!(SegCacheEntry, _pad) as u32,
            sel: u32::from(sel),
            ..SegCacheEntry::EMPTY
        }
    }

    /// An entry for `sel`, whose descriptor `desc` sits at linear
    /// `desc_at`, shadowed by host selector `host_sel`.
    pub fn new(sel: u16, desc_at: u32, desc: u64, host_sel: u16) -> SegCacheEntry {
        SegCacheEntry {
            neg_sel: u32::from(sel).wrapping_neg(),
            desc_at,
            neg_desc: [
                (desc as u32).wrapping_neg(),
                ((desc >> 32) as u32).wrapping_neg(),
            ],
            host_sel: u32::from(host_sel),
            sel: u32::from(sel),
            _pad: [0; 2],
        }
    }
}
const _: () = assert!(AREA_OFFSET + AREA_SIZE <= STUB_OFFSET);
const _: () = assert!(std::mem::size_of::<VcpuArea>() as u32 <= AREA_SIZE);

/// Where the monitor region lies in the 32-bit space: a runtime value, so
/// that the region can move away from linear addresses a guest uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    base: u32,
}

impl Layout {
    /// The region at [`DEFAULT_BASE`].
    pub const DEFAULT: Layout = Layout { base: DEFAULT_BASE };

    /// The region at `base`, if it can lie there: aligned to its size (so
    /// huge pages can back it) and below 4 GiB, which 32-bit code and a
    /// segment base must be able to reach.
    pub const fn at(base: u32) -> Option<Layout> {
        if base == 0 || !base.is_multiple_of(REGION_SIZE) {
            return None;
        }
        Some(Layout { base })
    }

    /// First address of the region (GS's base in translated code).
    pub const fn base(self) -> u32 {
        self.base
    }

    /// One past the region's last byte.
    pub const fn end(self) -> u64 {
        self.base as u64 + REGION_SIZE as u64
    }

    /// Whether `addr` lies in the region.
    pub const fn contains(self, addr: u32) -> bool {
        addr >= self.base && (addr as u64) < self.end()
    }

    /// Host address of the vCPU area.
    pub const fn vcpu_area(self) -> u32 {
        self.base + AREA_OFFSET
    }

    /// Host address of the TC exit stub (the start of the stub page).
    pub const fn stub(self) -> u32 {
        self.base + STUB_OFFSET
    }

    /// Host address of the segment-descriptor cache.
    pub const fn seg_cache(self) -> u32 {
        self.base + SEG_CACHE_OFFSET
    }

    /// Host address of the indirect-branch lookup table.
    pub const fn table(self) -> u32 {
        self.base + TABLE_OFFSET
    }

    /// Host address of the code buffer.
    pub const fn tc(self) -> u32 {
        self.base + TC_OFFSET
    }
}

impl Default for Layout {
    fn default() -> Self {
        Layout::DEFAULT
    }
}

/// EFLAGS bits translated guest kernel code keeps in the host EFLAGS: the
/// arithmetic flags and DF. IF, IOPL, AC, TF and the rest are virtual.
pub const TRANSLATED_FLAGS: u32 =
    flags::CF | flags::PF | flags::AF | flags::ZF | flags::SF | flags::DF | flags::OF;

/// EFLAGS system bits that translated code keeps in the vCPU area's
/// `vsys` (IF has a field of its own, `vif`): what inline PUSHF shows and
/// inline POPF may change. None of them ever reaches the host EFLAGS: host
/// AC would make misaligned accesses fault (Linux sets CR0.AM), host TF
/// would single-step the translation, host NT would change IRET.
pub const VIRTUAL_SYSTEM_FLAGS: u32 =
    flags::TF | flags::IOPL | flags::NT | flags::AC | flags::VIF | flags::VIP | flags::ID;

/// The vCPU fields translated code uses, at the start of the monitor
/// region (translated code addresses them as `gs:offset`, see [`gs`]).
/// Only translated code and the monitor between runs touch them; the
/// region is closed while guest user code runs.
#[repr(C)]
#[derive(Debug, Default)]
pub struct VcpuArea {
    /// Unused. Keeps every field at a `gs:` displacement of 16 or more:
    /// iced's Intel formatter prints displacements below 10 in decimal, and
    /// the translator's tests name the fields in their listings by the hex
    /// displacement.
    _head: [u32; 4],
    /// Far pointer (offset, then selector) that translated code jumps
    /// through to leave: the 64-bit TC exit stub below 4 GiB.
    pub exit_far: [u32; 2],
    /// Why translated code left ([`ExitReason`] code); written by
    /// translated code just before it jumps through `exit_far`.
    pub tc_reason: u32,
    /// The reason's argument (usually a guest EIP).
    pub tc_arg: u32,
    /// Scratch slots for inline sequences in translated code, named by
    /// [`scratch`]: saved guest registers, a computed jump target, the
    /// source of a chainable exit.
    pub scratch: [u32; 4],
    /// Host selector of the guest's FS shadow (translated code reloads FS
    /// from it after borrowing FS for a GS-override instruction).
    pub guest_fs: u16,
    /// Host selector of the guest's GS shadow.
    pub guest_gs: u16,
    /// Indirect branches translated code resolved through the inline
    /// table probe (wraps at 2^32).
    pub inline_hits: u32,
    /// The guest's EFLAGS system bits other than IF
    /// ([`VIRTUAL_SYSTEM_FLAGS`]: TF, IOPL, NT, AC, VIF, VIP, ID) while
    /// translated code runs: inline PUSHF reads them, inline POPF writes
    /// them. They never reach the host EFLAGS.
    pub vsys: u32,
    /// The guest's virtual IF while translated code runs, as the EFLAGS
    /// bit (0 or 0x200): inline CLI, STI and POPF write it.
    pub vif: u16,
    /// 0x200 when an external interrupt waits for IF, else 0 (set by the
    /// monitor at entry). Right after `vif`, so that one 32-bit load reads
    /// both: inline STI and POPF leave translated code when IF turns on
    /// with an interrupt waiting.
    pub irq_pending: u16,
    /// How often translated code ran each inline rewrite ([`Inline`]
    /// order; each wraps at 2^32).
    pub inlined: [u32; Inline::ALL.len()],
    /// Host address of the instruction after the last inline STI (0 at
    /// entry): a signal there stopped the guest inside STI's interrupt
    /// shadow.
    pub sti_shadow_at: u32,
    /// The guest's CS, SS, DS, ES, FS and GS selectors, zero-extended,
    /// while translated code runs: inline PUSH Sreg and MOV r, Sreg read
    /// them (the host's segment registers hold shadows, never these).
    pub guest_sel: [u32; 6],
    /// The guest's CR0, CR1 (always 0), CR2, CR3 and CR4 while translated
    /// code runs: inline MOV r32, CRn reads them.
    pub guest_cr: [u32; 5],
    /// Non-zero at index `i` (the `guest_sel` order) once translated code
    /// loaded that segment register inline since the monitor entered it:
    /// the monitor then takes the segment over from its descriptor cache,
    /// even when the selector is the one the register held before (a
    /// process switch reloads Linux's user TLS selector with another
    /// process's descriptor behind it).
    pub sel_loaded: [u8; 8],
}

impl VcpuArea {
    /// A fresh area whose `exit_far` leads to the TC exit stub at `stub`
    /// on the host's 64-bit code segment `host_cs`.
    pub fn new(stub: u32, host_cs: u16) -> VcpuArea {
        VcpuArea {
            exit_far: [stub, u32::from(host_cs)],
            ..VcpuArea::default()
        }
    }
}

// Inline STI and POPF read `vif` and `irq_pending` as one aligned dword.
const _: () = assert!(offset_of!(VcpuArea, irq_pending) == offset_of!(VcpuArea, vif) + 2);
const _: () = assert!(offset_of!(VcpuArea, vif).is_multiple_of(4));
const _: () = assert!(offset_of!(VcpuArea, exit_far) >= 16);

/// What each slot of [`VcpuArea::scratch`] holds. The rewrites that borrow
/// guest registers save them here; the engine's state recreation after a
/// signal and its chaining read them back.
pub mod scratch {
    /// Guest EAX, saved by the rewrites that borrow it (RET and indirect
    /// branches, inline PUSHF and POPF).
    pub const SAVED_EAX: usize = 0;
    /// Guest ECX, saved likewise (and around every inline counter).
    pub const SAVED_ECX: usize = 1;
    /// The host address an indirect-branch probe jumps to on a hit; the
    /// value inline POPF popped.
    pub const TARGET: usize = 2;
    /// Host address of the `jmp rel32` that reached a chainable exit's
    /// stub, for the dispatcher to chain.
    pub const FROM: usize = 3;
    /// Guest EDX and EBX, saved by an inline data-segment load (in the
    /// slots of `TARGET` and `FROM`, which it does not use).
    pub const SAVED_EDX: usize = TARGET;
    /// See [`SAVED_EDX`].
    pub const SAVED_EBX: usize = FROM;
}

/// The `gs:` displacements emitted code uses: the [`VcpuArea`] fields and
/// the lookup table, as offsets from the region's base.
pub mod gs {
    use super::{scratch, VcpuArea, SEG_CACHE_OFFSET, TABLE_OFFSET};
    use std::mem::offset_of;

    /// The exit reason.
    pub const TC_REASON: i32 = offset_of!(VcpuArea, tc_reason) as i32;
    /// The exit argument.
    pub const TC_ARG: i32 = offset_of!(VcpuArea, tc_arg) as i32;
    /// The far pointer to the TC exit stub.
    pub const EXIT_FAR: i32 = offset_of!(VcpuArea, exit_far) as i32;
    const SCRATCH: i32 = offset_of!(VcpuArea, scratch) as i32;
    /// Scratch slot [`scratch::SAVED_EAX`].
    pub const SAVED_EAX: i32 = SCRATCH + 4 * scratch::SAVED_EAX as i32;
    /// Scratch slot [`scratch::SAVED_ECX`].
    pub const SAVED_ECX: i32 = SCRATCH + 4 * scratch::SAVED_ECX as i32;
    /// Scratch slot [`scratch::TARGET`].
    pub const TARGET: i32 = SCRATCH + 4 * scratch::TARGET as i32;
    /// Scratch slot [`scratch::FROM`].
    pub const FROM: i32 = SCRATCH + 4 * scratch::FROM as i32;
    /// Scratch slot [`scratch::SAVED_EDX`].
    pub const SAVED_EDX: i32 = SCRATCH + 4 * scratch::SAVED_EDX as i32;
    /// Scratch slot [`scratch::SAVED_EBX`].
    pub const SAVED_EBX: i32 = SCRATCH + 4 * scratch::SAVED_EBX as i32;
    /// The segment-descriptor cache.
    pub const SEG_CACHE: i32 = SEG_CACHE_OFFSET as i32;
    /// Host selector of the guest's FS shadow.
    pub const GUEST_FS: i32 = offset_of!(VcpuArea, guest_fs) as i32;
    /// Host selector of the guest's GS shadow.
    pub const GUEST_GS: i32 = offset_of!(VcpuArea, guest_gs) as i32;
    /// The inline-hit counter.
    pub const INLINE_HITS: i32 = offset_of!(VcpuArea, inline_hits) as i32;
    /// The indirect-branch lookup table.
    pub const TABLE: i32 = TABLE_OFFSET as i32;
    /// The guest's EFLAGS system bits other than IF.
    pub const VSYS: i32 = offset_of!(VcpuArea, vsys) as i32;
    /// The guest's IF (a word: 0 or 0x200); the word after it is
    /// `irq_pending`, so a dword load here reads IF | pending << 16.
    pub const VIF: i32 = offset_of!(VcpuArea, vif) as i32;
    /// `irq_pending` (a word: 0x200 when an interrupt waits).
    pub const IRQ_PENDING: i32 = offset_of!(VcpuArea, irq_pending) as i32;
    /// The per-kind counters of inline rewrites.
    pub const INLINED: i32 = offset_of!(VcpuArea, inlined) as i32;
    /// Where inline STI leaves the host address of the instruction in its
    /// interrupt shadow.
    pub const STI_SHADOW_AT: i32 = offset_of!(VcpuArea, sti_shadow_at) as i32;
    /// The guest's selectors (CS, SS, DS, ES, FS, GS, dwords).
    pub const GUEST_SEL: i32 = offset_of!(VcpuArea, guest_sel) as i32;
    /// The guest's control registers (CR0 to CR4, dwords).
    pub const GUEST_CR: i32 = offset_of!(VcpuArea, guest_cr) as i32;
    /// Which segment registers translated code loaded inline (bytes).
    pub const SEL_LOADED: i32 = offset_of!(VcpuArea, sel_loaded) as i32;
}

/// Why translated code left, as stored in the vCPU area's `tc_reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ExitReason {
    /// An unchained direct exit; the argument is the linear target.
    Branch = 1,
    /// An indirect branch whose target was not in the lookup table; the
    /// argument is the linear target.
    IndirectMiss = 2,
    /// An instruction for the monitor to carry out; the argument is its
    /// linear address.
    Callout = 3,
    /// An inline POPF set IF while an external interrupt was waiting, or
    /// set TF: the monitor takes over at the next instruction, whose linear
    /// address is the argument, and delivers the interrupt (or single-steps)
    /// before it runs.
    IrqWindow = 4,
    /// An inline STI set IF while an external interrupt was waiting: the
    /// interrupt comes after the next instruction (STI's interrupt shadow),
    /// whose linear address is the argument.
    StiShadow = 5,
    /// A SYSEXIT, which the monitor carries out without fetching it; the
    /// argument is its linear address.
    Sysexit = 6,
    /// An IRET with a 32-bit operand, which the monitor carries out
    /// without fetching it; the argument is its linear address.
    Iret = 7,
}

impl ExitReason {
    /// The reason stored as `code`, if it is one.
    pub fn from_code(code: u32) -> Option<ExitReason> {
        Some(match code {
            1 => ExitReason::Branch,
            2 => ExitReason::IndirectMiss,
            3 => ExitReason::Callout,
            4 => ExitReason::IrqWindow,
            5 => ExitReason::StiShadow,
            6 => ExitReason::Sysexit,
            7 => ExitReason::Iret,
            _ => return None,
        })
    }
}

/// The instructions that run as inline code on the virtual CPU instead of
/// callouts; the discriminant indexes the vCPU area's `inlined` counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Inline {
    /// CLI at CPL 0.
    Cli = 0,
    /// STI at CPL 0.
    Sti = 1,
    /// PUSHFD (32-bit operand size), at any CPL translated code runs at.
    Pushf = 2,
    /// POPFD (32-bit operand size) at CPL 0.
    Popf = 3,
    /// PUSH CS/SS/DS/ES/FS/GS, either operand size.
    PushSreg = 4,
    /// MOV r16/r32, Sreg (a register destination; a memory one stays a
    /// callout, since the store would need a scratch register).
    MovFromSreg = 5,
    /// MOV r32, CR0/CR2/CR3/CR4 at CPL 0.
    MovFromCr = 6,
}

impl Inline {
    /// Every inline kind, in counter order.
    pub const ALL: [Inline; 7] = [
        Inline::Cli,
        Inline::Sti,
        Inline::Pushf,
        Inline::Popf,
        Inline::PushSreg,
        Inline::MovFromSreg,
        Inline::MovFromCr,
    ];

    /// The kind's name, as the callout statistics spell it.
    pub fn name(self) -> &'static str {
        match self {
            Inline::Cli => "cli",
            Inline::Sti => "sti",
            Inline::Pushf => "pushf",
            Inline::Popf => "popf",
            Inline::PushSreg => "push-sreg",
            Inline::MovFromSreg => "mov-from-sreg",
            Inline::MovFromCr => "mov-from-cr",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_region_is_the_top_4_mib() {
        let l = Layout::DEFAULT;
        assert_eq!(l.end(), 1 << 32);
        assert_eq!(
            (l.stub(), l.table(), l.tc()),
            (0xFFC0_1000, 0xFFC1_0000, 0xFFD0_0000)
        );
        assert!(l.contains(0xFFC0_0000) && l.contains(0xFFFF_FFFF) && !l.contains(0xFFBF_FFFF));
        assert_eq!(Layout::at(0xFFC0_0000), Some(l));
        assert_eq!(Layout::at(0xFFC0_1000), None);
        assert_eq!(Layout::at(0), None);
    }
}
