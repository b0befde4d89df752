//! Host page faults and the memory behind them: a page the shadow MMU has
//! not mapped yet (a shadow fill), a write to a page holding translations
//! (self-modifying code), a #PF the guest's own tables call for, memory
//! popek cannot map (page 0, the monitor region, physical addresses without
//! RAM), and guest accesses that the shadow segments' truncation stopped
//! below the monitor region.

use machine::{EngineError, Machine};
use x86::classify::{kind_of, Class};
use x86::emulate;
use x86::interrupt;
use x86::paging::{Access, PagingRegs};

use super::callouts;
use super::code_pages::CodePages;
use super::interrupts;
use super::vm::{host_err, Next, Vm};
use crate::mmu::Fill;
use crate::monitor::PAGE_SIZE;

/// A host page fault at `addr`: a page the shadow MMU has not mapped
/// (yet, or for this view), a write to a page holding translations
/// (self-modifying code), or an access to memory the guest does not
/// have. The host's error code says only whether the access was a
/// write or a fetch; everything else comes from the guest's tables.
pub(super) fn host_page_fault(
    vm: &mut Vm,
    machine: &mut Machine,
    addr: u32,
    err: u32,
) -> Result<Next, EngineError> {
    let write = err & 2 != 0;
    let fill = if vm.mmu.paging() {
        let user = vm.cpu.cpl() == 3;
        let access = Access {
            write,
            user,
            fetch: user && err & 0x10 != 0,
        };
        vm.mmu
            .fill(&mut vm.monitor, &mut machine.memory, addr, access)
            .map_err(host_err)?
    } else if u64::from(addr) >= vm.ram_size {
        Fill::NoRam(u64::from(addr))
    } else if addr < PAGE_SIZE {
        Fill::Unmappable
    } else if write && CodePages::of(vm).holds(addr / PAGE_SIZE) {
        Fill::CodeWrite(addr / PAGE_SIZE)
    } else {
        Fill::Stuck
    };
    let what = match fill {
        Fill::Mapped => {
            vm.stats.exit("shadow fill");
            // A fill touches no device or timer: no turn of the vCPU loop
            // (see `Vm::go_on`).
            vm.go_on = true;
            return Ok(Next::Continue);
        }
        Fill::GuestFault(code) => {
            if vm.cpu.cpl() == 3 {
                // The guest kernel is about to map it: see `Vm::refill`.
                vm.refill = Some(addr);
            }
            let next = interrupts::page_fault(vm, machine, addr, code, "guest page fault")?;
            // Nor does the delivery, as after an INT n callout.
            vm.go_on = matches!(next, Next::Continue);
            return Ok(next);
        }
        Fill::Emulate => {
            if let Some(next) = callouts::try_callout(vm, machine)? {
                vm.stats.exit("churning user page");
                return Ok(next);
            }
            // An instruction the emulator does not model: map the page.
            vm.mmu.stop_emulating(addr);
            return host_page_fault(vm, machine, addr, err);
        }
        Fill::CodeWrite(phys) => {
            vm.stats.exit("smc write");
            CodePages::of(vm).invalidate(phys).map_err(host_err)?;
            // The writer runs alone with the page writable; translations
            // made after it protect the page again.
            vm.smc_step = vm.cpu.cpl() != 3;
            return Ok(Next::Continue);
        }
        // A data access to memory the host cannot map at its linear
        // address: a device's registers (past RAM), page 0 (the BIOS data
        // area; mmap_min_addr), or the monitor's own region. The
        // instruction is carried out by the emulator, which reaches guest
        // RAM through the monitor's own mapping and devices through the bus.
        Fill::NoRam(_) | Fill::Unmappable if err & 0x10 == 0 => return emulate_access(vm, machine),
        Fill::NoRam(phys) if phys == u64::from(addr) => no_memory(vm, "jumped to", addr),
        Fill::NoRam(phys) => format!(
            "the guest's page tables map linear {addr:#010x} to physical {phys:#x}, where \
             there is no memory ({} MiB of RAM), and it jumped there",
            vm.ram_size >> 20
        ),
        Fill::Unmappable => format!(
            "the guest jumped to {addr:#010x}, where the host cannot map its memory \
             (page 0, or the monitor's region)"
        ),
        Fill::Stuck => {
            format!("unexpected host page fault at {addr:#010x} (error {err:#x})")
        }
    };
    Err(vm.unsupported(machine, what))
}

/// "the guest `did` `addr`, where there is no memory".
pub(super) fn no_memory(vm: &Vm, did: &str, addr: u32) -> String {
    format!(
        "the guest {did} {addr:#010x}, where there is no memory ({} MiB of RAM)",
        vm.ram_size >> 20
    )
}

/// Whether exception `vector` with `error_code`, a #GP(0) at CS:EIP,
/// came from the shadow segments' limits,
/// which stop below the monitor region, rather than from the guest's
/// own limits: the instruction is innocuous (nothing else raises #GP(0)
/// for it) and one of its memory accesses lands in the monitor region.
/// Gives the first address in the region it touches and whether it
/// writes there.
pub(super) fn monitor_region_access(
    vm: &Vm,
    machine: &mut Machine,
    vector: u8,
    error_code: Option<u32>,
) -> Option<(u32, bool)> {
    if (vector, error_code) != (interrupt::vector::GP, Some(0)) {
        return None;
    }
    let insn = vm.insn_at_eip(machine)?;
    if kind_of(&insn).class() != Class::Innocuous {
        return None;
    }
    let region = vm.monitor.layout();
    let mut info = iced_x86::InstructionInfoFactory::new();
    let info = info.info(&insn);
    (0..insn.op_count()).find_map(|op| {
        let is_mem = matches!(
            insn.op_kind(op),
            iced_x86::OpKind::Memory
                | iced_x86::OpKind::MemorySegSI
                | iced_x86::OpKind::MemorySegESI
                | iced_x86::OpKind::MemoryESDI
                | iced_x86::OpKind::MemoryESEDI
        );
        let at = emulate::linear_address(&vm.cpu, &insn, op);
        // An access is at most 16 bytes long.
        let clear = u64::from(at) + 16 <= u64::from(region.base()) || u64::from(at) >= region.end();
        if !is_mem || clear {
            return None;
        }
        let write = matches!(
            info.op_access(op),
            iced_x86::OpAccess::Write
                | iced_x86::OpAccess::ReadWrite
                | iced_x86::OpAccess::CondWrite
                | iced_x86::OpAccess::ReadCondWrite
        );
        Some((at.max(region.base()), write))
    })
}

/// Carries out the instruction at CS:EIP in the emulator: its memory is
/// somewhere the host CPU cannot be let at (see [`host_page_fault`]).
fn emulate_access(vm: &mut Vm, machine: &mut Machine) -> Result<Next, EngineError> {
    vm.stats.exit("emulated access");
    // From translated code at CPL 0, the instruction becomes a callout in
    // its block's next translation: a driver's register access comes back
    // (an EOI at every interrupt, a TPR write at every spin lock of some
    // kernels), and a host fault costs several callouts. Not a REP string
    // instruction, which may move RAM as well and which the emulator moves
    // an element at a time.
    let site = vm
        .faulting_block
        .take()
        .filter(|_| vm.cpu.cpl() == 0)
        .and_then(|block| {
            let insn = vm.insn_at_eip(machine)?;
            let string = insn.has_rep_prefix() || insn.has_repne_prefix();
            (!string).then(|| (block, vm.cpu.cs.base.wrapping_add(vm.cpu.eip)))
        });
    let next = callouts::callout(vm, machine)?;
    if let Some((block, eip)) = site {
        // Only an access the emulator carried out: it will again.
        let done = matches!(next, Next::Continue) && !vm.last_callout_faulted;
        if done && vm.translator.callout_at(eip) {
            tracing::debug!("device access at {eip:#x}: a callout from now on");
            vm.cache.discard(block);
        }
    }
    Ok(next)
}

/// A guest access to the monitor region: with paging on, a page the
/// guest's own tables do not map there gets the #PF they call for;
/// anything else is carried out by the emulator.
pub(super) fn monitor_region(
    vm: &mut Vm,
    machine: &mut Machine,
    (linear, write): (u32, bool),
) -> Result<Next, EngineError> {
    if vm.mmu.paging() {
        let access = Access {
            write,
            user: vm.cpu.cpl() == 3,
            fetch: false,
        };
        let regs = PagingRegs::of(&vm.cpu);
        if let Err(code) = x86::paging::walk(&mut machine.memory, &regs, linear, access, true) {
            return interrupts::page_fault(vm, machine, linear, code, "guest page fault");
        }
    }
    emulate_access(vm, machine)
}
