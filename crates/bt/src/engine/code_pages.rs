//! The one owner of guest code pages: physical pages that hold
//! translations are write-protected in every shadow alias, so that a guest
//! write to them (self-modifying code) faults; dropping a page's last
//! translations lifts the protection. The translation cache knows which
//! blocks came from a page, the shadow MMU which host mappings show it:
//! each change here updates both in one call, so the two never disagree.

use machine::{EngineError, GuestMemory, Machine};
use x86::paging::PagingRegs;

use super::vm::{host_err, Vm};
use crate::cache::{BlockId, GuestPage, NewBlock, TranslationCache};
use crate::mmu::Shadow;
use crate::monitor::{Monitor, MonitorError, PAGE_SIZE};

/// The translation cache and the shadow MMU, borrowed together for a
/// change of the pages holding translations ([`CodePages::of`]).
pub(super) struct CodePages<'a> {
    cache: &'a mut TranslationCache,
    mmu: &'a mut Shadow,
    monitor: &'a mut Monitor,
}

impl<'a> CodePages<'a> {
    /// The door over `vm`'s cache, shadow MMU and monitor: every protect,
    /// invalidate and unprotect of a page holding translations goes
    /// through it.
    pub(super) fn of(vm: &'a mut Vm) -> CodePages<'a> {
        CodePages {
            cache: &mut vm.cache,
            mmu: &mut vm.mmu,
            monitor: &mut vm.monitor,
        }
    }

    /// Stores a translated block of guest linear `linear`, emitted for
    /// [`TranslationCache::next_host_addr`], and write-protects the
    /// physical pages it was translated from. A step block is not
    /// protected: it is discarded after one run, and the write that caused
    /// an SMC step must find its page writable.
    pub(super) fn insert(
        &mut self,
        block: NewBlock,
        code: &[u8],
        linear: u32,
    ) -> Result<BlockId, EngineError> {
        let (page, spill, step) = (block.page, block.spill, block.key.ctx.step);
        let id = self.cache.insert(block, code).map_err(host_err)?;
        if !step {
            let lp = linear / PAGE_SIZE;
            self.mmu
                .protect_code(self.monitor, page.0, lp)
                .map_err(host_err)?;
            if let Some(s) = spill {
                self.mmu
                    .protect_code(self.monitor, s.0, lp + 1)
                    .map_err(host_err)?;
            }
        }
        Ok(id)
    }

    /// Makes room in the code buffer for a block of `len` bytes; returns
    /// whether the next block's host address changed (emit it again). The
    /// pages whose last translations an eviction dropped are writable
    /// again.
    pub(super) fn make_room(&mut self, len: u32) -> Result<bool, EngineError> {
        if !self.cache.make_room(len) {
            return Ok(false);
        }
        for GuestPage(page) in self.cache.take_orphaned_pages() {
            self.mmu
                .unprotect_code(self.monitor, page)
                .map_err(host_err)?;
        }
        Ok(true)
    }

    /// Physical page `phys` is being written: drops every translation made
    /// from it and lets the guest write it again.
    /// A frame copy of it goes too (engine/int80.rs).
    pub(super) fn invalidate(&mut self, phys: u32) -> Result<(), MonitorError> {
        self.cache.invalidate_page(GuestPage(phys));
        self.mmu.drop_copy(self.monitor, phys)?;
        self.mmu.unprotect_code(self.monitor, phys)
    }

    /// Whether physical page `phys` holds translations or has a frame
    /// copy (and so is write-protected).
    pub(super) fn holds(&self, phys: u32) -> bool {
        self.mmu.is_write_protected(phys)
    }

    /// [`Self::invalidate`] if `phys` holds translations; says whether it
    /// did.
    pub(super) fn invalidate_if_code(&mut self, phys: u32) -> Result<bool, MonitorError> {
        if !self.holds(phys) {
            return Ok(false);
        }
        self.invalidate(phys)?;
        Ok(true)
    }

    /// After a change of the guest's paging: drops the translations whose
    /// linear page no longer maps to the physical page they came from.
    pub(super) fn drop_stale(&mut self, mem: &mut GuestMemory) -> Result<(), MonitorError> {
        for p in self.mmu.stale_code(mem) {
            self.invalidate(p)?;
        }
        Ok(())
    }
}

/// Drops translations of physical pages the monitor wrote on the
/// guest's behalf (an emulated instruction or a delivery).
pub(super) fn after_writes(vm: &mut Vm, pages: &[u32]) -> Result<(), EngineError> {
    for &p in pages {
        if CodePages::of(vm).invalidate_if_code(p).map_err(host_err)? {
            vm.stats.exit("smc by the monitor");
        }
    }
    Ok(())
}

/// Takes the guest's paging registers after an instruction or event that
/// may have changed them (MOV to CRn, INVLPG, a task switch), and drops
/// the shadows and translations they invalidate.
pub(super) fn paging_update(
    vm: &mut Vm,
    machine: &mut Machine,
    cr3_written: bool,
    flush_page: Option<u32>,
) -> Result<(), EngineError> {
    let regs = PagingRegs::of(&vm.cpu);
    let changed = regs != vm.mmu.regs() || cr3_written;
    if changed || flush_page.is_some() {
        // As the CPU's TLB goes (all of it for an INVLPG of a large page).
        vm.walks.flush();
    }
    if changed {
        vm.mmu
            .set_regs(&mut vm.monitor, &mut machine.memory, regs, cr3_written)
            .map_err(host_err)?;
    }
    if let Some(linear) = flush_page {
        vm.mmu.invlpg(&mut vm.monitor, linear).map_err(host_err)?;
    }
    if changed || flush_page.is_some() {
        CodePages::of(vm)
            .drop_stale(&mut machine.memory)
            .map_err(host_err)?;
    }
    Ok(())
}
