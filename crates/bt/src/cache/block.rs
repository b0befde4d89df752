//! A block (fragment) record: one translated guest basic block, the map from
//! its host bytes back to guest instructions, and its chainable exits.

use std::fmt;

/// Guest page size; a block never crosses a guest page boundary, so a write
/// to one physical page invalidates exactly the blocks recorded on it.
pub const GUEST_PAGE_SIZE: u32 = 4096;

/// The opcode of the patchable exit jump (`jmp rel32`): chaining rewrites
/// only its 4-byte displacement, which is a single aligned-enough store.
pub const JMP_REL32: u8 = 0xE9;

/// Length of a `jmp rel32`.
pub const JMP_REL32_LEN: u32 = 5;

/// Names a block for as long as it lives; ids are never reused, so a stale id
/// held after an invalidation cannot reach a newer block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(pub u64);

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A guest physical page frame number (physical address >> 12; 32 bits of
/// frame cover PAE's 36-bit physical space too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GuestPage(pub u32);

impl GuestPage {
    /// The frame holding guest physical address `phys`.
    pub fn containing(phys: u64) -> GuestPage {
        GuestPage((phys / u64::from(GUEST_PAGE_SIZE)) as u32)
    }
}

/// The assumptions a translation was made under. Two lookups for the same
/// linear EIP under different contexts must never share a translation: CS
/// base changes what code the EIP names, CPL and code size change what the
/// translator emitted, and paging changes how EIPs map to physical pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Context {
    /// Base of the guest CS at translation time.
    pub cs_base: u32,
    /// Guest CPL the code was translated for.
    pub cpl: u8,
    /// Default operand/address size is 32 bits (CS.D).
    pub code32: bool,
    /// CR0.PG was set.
    pub paging: bool,
    /// One guest instruction per block and no chaining: for single-step
    /// (guest TF) and for the write that hit a page holding translations.
    pub step: bool,
}

/// Where a block is found: guest linear EIP plus the context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockKey {
    /// Guest linear address (CS base + EIP) of the first instruction.
    pub eip: u32,
    /// Translation assumptions.
    pub ctx: Context,
}

/// One guest instruction's place in the translation (precise state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InsnMap {
    /// Guest linear EIP of the instruction.
    pub guest_eip: u32,
    /// Offset of its first translated byte from the block's start.
    pub host_offset: u32,
}

/// A direct exit out of the block that can be chained to another block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// Guest linear EIP the exit continues at.
    pub target_eip: u32,
    /// Offset of the `jmp rel32` from the block's start.
    pub jump_offset: u32,
    /// Displacement the jump has when unchained (aimed at its exit stub),
    /// captured at insertion so unchaining can restore it.
    pub(crate) stub_rel32: i32,
    /// The block the jump currently goes to, if chained.
    pub(crate) chained_to: Option<BlockId>,
}

impl Exit {
    /// The block this exit is chained to, if any.
    pub fn chained_to(&self) -> Option<BlockId> {
        self.chained_to
    }
}

/// A translation as the translator hands it over, before it has a place in
/// the code buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewBlock {
    /// Lookup key.
    pub key: BlockKey,
    /// Guest physical page the block's guest code lies on.
    pub page: GuestPage,
    /// The next guest physical page, when the block's last instruction
    /// straddles the page end (a write there must invalidate it too).
    pub spill: Option<GuestPage>,
    /// Guest bytes the block covers, from `key.eip`.
    pub guest_len: u32,
    /// One entry per guest instruction, in guest order.
    pub insns: Vec<InsnMap>,
    /// Direct exits: (guest target EIP, offset of the `jmp rel32`).
    pub exits: Vec<(u32, u32)>,
}

/// Why a [`NewBlock`] was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockError {
    /// No guest instructions.
    Empty,
    /// The first instruction is not at the key's EIP or host offset 0.
    BadStart,
    /// Guest EIPs or host offsets do not strictly increase.
    NotMonotonic(usize),
    /// An instruction or the guest range leaves the block's guest page.
    CrossesPage,
    /// An offset lies past the end of the translated code.
    OutOfRange,
    /// An exit's offset does not hold a `jmp rel32`.
    NotAJump(usize),
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockError::Empty => write!(f, "block has no instructions"),
            BlockError::BadStart => write!(f, "first instruction is not the block's start"),
            BlockError::NotMonotonic(i) => write!(f, "instruction {i} is out of order"),
            BlockError::CrossesPage => write!(f, "block crosses a guest page boundary"),
            BlockError::OutOfRange => write!(f, "offset past the translated code"),
            BlockError::NotAJump(i) => write!(f, "exit {i} is not a jmp rel32"),
        }
    }
}

impl std::error::Error for BlockError {}

impl NewBlock {
    /// Checks the record against its translated `code`, returning the exits
    /// with their unchained displacements read out of it.
    pub(crate) fn validate(&self, code: &[u8]) -> Result<Vec<Exit>, BlockError> {
        let first = self.insns.first().ok_or(BlockError::Empty)?;
        if first.guest_eip != self.key.eip || first.host_offset != 0 {
            return Err(BlockError::BadStart);
        }
        for (i, w) in self.insns.windows(2).enumerate() {
            if w[1].guest_eip <= w[0].guest_eip || w[1].host_offset <= w[0].host_offset {
                return Err(BlockError::NotMonotonic(i + 1));
            }
        }
        let page_start = self.key.eip & !(GUEST_PAGE_SIZE - 1);
        let end = u64::from(self.key.eip) + u64::from(self.guest_len);
        // Only a straddling last instruction (at most 15 bytes) may spill
        // into the next page, and then the record must name that page.
        let slack = if self.spill.is_some() { 15 } else { 0 };
        if self.guest_len == 0 || end > u64::from(page_start) + u64::from(GUEST_PAGE_SIZE) + slack {
            return Err(BlockError::CrossesPage);
        }
        let last = self.insns.last().expect("checked non-empty");
        if u64::from(last.guest_eip) >= end {
            return Err(BlockError::CrossesPage);
        }
        if last.host_offset as usize >= code.len() {
            return Err(BlockError::OutOfRange);
        }
        self.exits
            .iter()
            .enumerate()
            .map(|(i, &(target_eip, jump_offset))| {
                let at = jump_offset as usize;
                let jmp = code
                    .get(at..at + JMP_REL32_LEN as usize)
                    .ok_or(BlockError::OutOfRange)?;
                if jmp[0] != JMP_REL32 {
                    return Err(BlockError::NotAJump(i));
                }
                Ok(Exit {
                    target_eip,
                    jump_offset,
                    stub_rel32: i32::from_le_bytes(jmp[1..5].try_into().expect("4 bytes")),
                    chained_to: None,
                })
            })
            .collect()
    }
}

/// A translated block living in the code buffer.
#[derive(Clone, Debug)]
pub struct Block {
    /// Lookup key (guest linear start and context).
    pub key: BlockKey,
    /// Guest physical page the guest code lies on.
    pub page: GuestPage,
    /// The page a straddling last instruction spills into.
    pub spill: Option<GuestPage>,
    /// Guest bytes covered.
    pub guest_len: u32,
    /// Offset of the first translated byte in the code buffer.
    pub host_offset: u32,
    /// Translated bytes.
    pub host_len: u32,
    pub(crate) insns: Vec<InsnMap>,
    pub(crate) exits: Vec<Exit>,
    /// Exits of other blocks chained into this one: (from, exit index).
    pub(crate) incoming: Vec<(BlockId, usize)>,
}

impl Block {
    /// Builds the record for `nb` placed at `host_offset`.
    pub(crate) fn place(nb: NewBlock, exits: Vec<Exit>, host_offset: u32, host_len: u32) -> Block {
        Block {
            key: nb.key,
            page: nb.page,
            spill: nb.spill,
            guest_len: nb.guest_len,
            host_offset,
            host_len,
            insns: nb.insns,
            exits,
            incoming: Vec::new(),
        }
    }

    /// Number of guest instructions translated.
    pub fn insn_count(&self) -> usize {
        self.insns.len()
    }

    /// The precise-state table, in guest order.
    pub fn insns(&self) -> &[InsnMap] {
        &self.insns
    }

    /// The chainable exits.
    pub fn exits(&self) -> &[Exit] {
        &self.exits
    }

    /// Exits of other blocks that jump straight into this one.
    pub fn incoming(&self) -> &[(BlockId, usize)] {
        &self.incoming
    }

    /// Whether code-buffer offset `off` lies inside this block.
    pub fn contains_host(&self, off: u32) -> bool {
        off >= self.host_offset && off - self.host_offset < self.host_len
    }

    /// The guest instruction whose translation holds code-buffer offset
    /// `off`, and whether `off` is that translation's first byte (a clean
    /// instruction boundary, where guest state is exactly the guest's).
    pub fn guest_at(&self, off: u32) -> Option<(u32, bool)> {
        if !self.contains_host(off) {
            return None;
        }
        let rel = off - self.host_offset;
        // Entries are sorted by host offset and the first is 0, so the
        // instruction owning `rel` is the last one starting at or before it.
        let i = self.insns.partition_point(|m| m.host_offset <= rel) - 1;
        let m = self.insns[i];
        Some((m.guest_eip, m.host_offset == rel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(eip: u32) -> BlockKey {
        BlockKey {
            eip,
            ctx: Context {
                cpl: 0,
                code32: true,
                ..Context::default()
            },
        }
    }

    /// Three guest instructions at 0x1000, 0x1001, 0x1003 translated to
    /// 1, 6 and 5 bytes, the last being an exit jump.
    fn sample() -> (NewBlock, Vec<u8>) {
        let code = vec![
            0x90, 0x9C, 0x90, 0x90, 0x90, 0x90, 0x9D, 0xE9, 0x10, 0, 0, 0,
        ];
        let nb = NewBlock {
            key: key(0x1000),
            page: GuestPage(0x1),
            spill: None,
            guest_len: 8,
            insns: vec![
                InsnMap {
                    guest_eip: 0x1000,
                    host_offset: 0,
                },
                InsnMap {
                    guest_eip: 0x1001,
                    host_offset: 1,
                },
                InsnMap {
                    guest_eip: 0x1003,
                    host_offset: 7,
                },
            ],
            exits: vec![(0x2000, 7)],
        };
        (nb, code)
    }

    #[test]
    fn validate_reads_the_stub_displacement() {
        let (nb, code) = sample();
        let exits = nb.validate(&code).unwrap();
        assert_eq!(exits.len(), 1);
        assert_eq!(exits[0].target_eip, 0x2000);
        assert_eq!(exits[0].stub_rel32, 0x10);
        assert_eq!(exits[0].chained_to(), None);
    }

    #[test]
    fn validate_rejects_bad_records() {
        let (nb, code) = sample();
        let mut b = nb.clone();
        b.insns.clear();
        assert_eq!(b.validate(&code), Err(BlockError::Empty));
        let mut b = nb.clone();
        b.insns[0].host_offset = 1;
        assert_eq!(b.validate(&code), Err(BlockError::BadStart));
        let mut b = nb.clone();
        b.insns[2].host_offset = 1;
        assert_eq!(b.validate(&code), Err(BlockError::NotMonotonic(2)));
        let mut b = nb.clone();
        b.exits[0].1 = 6;
        assert_eq!(b.validate(&code), Err(BlockError::NotAJump(0)));
        let mut b = nb.clone();
        b.exits[0].1 = 8;
        assert_eq!(b.validate(&code), Err(BlockError::OutOfRange));
        assert_eq!(nb.validate(&code[..7]), Err(BlockError::OutOfRange));
    }

    #[test]
    fn validate_rejects_page_crossing() {
        let (mut nb, code) = sample();
        nb.key.eip = 0x1FFC;
        for (i, m) in nb.insns.iter_mut().enumerate() {
            m.guest_eip = 0x1FFC + i as u32;
        }
        nb.guest_len = 4;
        assert!(nb.validate(&code).is_ok());
        nb.guest_len = 5;
        assert_eq!(nb.validate(&code), Err(BlockError::CrossesPage));
        nb.guest_len = 2;
        assert_eq!(nb.validate(&code), Err(BlockError::CrossesPage));
    }

    #[test]
    fn guest_at_maps_every_host_byte() {
        let (nb, code) = sample();
        let exits = nb.validate(&code).unwrap();
        let b = Block::place(nb, exits, 0x100, code.len() as u32);
        assert_eq!(b.insn_count(), 3);
        assert_eq!(b.guest_at(0xFF), None);
        assert_eq!(b.guest_at(0x100), Some((0x1000, true)));
        assert_eq!(b.guest_at(0x101), Some((0x1001, true)));
        for off in 0x102..0x107 {
            assert_eq!(b.guest_at(off), Some((0x1001, false)));
        }
        assert_eq!(b.guest_at(0x107), Some((0x1003, true)));
        assert_eq!(b.guest_at(0x10B), Some((0x1003, false)));
        assert_eq!(b.guest_at(0x10C), None);
    }

    #[test]
    fn guest_page_of_physical_address() {
        assert_eq!(GuestPage::containing(0x0012_3456), GuestPage(0x123));
        assert_eq!(GuestPage::containing(0xF_FFFF_F000), GuestPage(0xFF_FFFF));
    }
}
