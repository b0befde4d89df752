//! Code fetch for the translator: the guest bytes of a block as an
//! instruction fetch sees them (through the guest's page tables when paging
//! is on), and the translation of a block the dispatcher did not find,
//! stored through the code-page owner so its pages get write-protected.

use machine::{EngineError, Machine};
use x86::paging::{Access, PagingRegs};

use super::code_pages::CodePages;
use super::vm::{host_err, Next, Vm};
use super::{faults, interrupts};
use crate::cache::block::GUEST_PAGE_SIZE;
use crate::cache::{BlockId, BlockKey, Context, GuestPage};
use crate::monitor::PAGE_SIZE;
use crate::translate;

/// A block to run, or the outcome of the fault its fetch raised.
pub(super) enum Fetched {
    Block(BlockId),
    Delivered(Next),
}

/// Guest code bytes for the translator, or the fault fetching them.
enum Code {
    /// The bytes, the physical page of the first and of the next page.
    Bytes {
        bytes: Vec<u8>,
        page: u32,
        next_page: Option<u32>,
    },
    /// Fetching raised #PF with `code` at `addr`.
    Fault { addr: u32, code: u32 },
}

/// The bytes at linear `linear` for translation: the rest of its page
/// and up to 15 bytes of the next (an instruction may straddle), with
/// the physical pages they come from. With paging on the pages are
/// found by walking the guest's tables as an instruction fetch does.
fn code_bytes(vm: &mut Vm, machine: &mut Machine, linear: u32) -> Result<Code, EngineError> {
    let rest = GUEST_PAGE_SIZE - (linear & (GUEST_PAGE_SIZE - 1));
    let (phys, next) = if vm.mmu.paging() {
        let regs = PagingRegs::of(&vm.cpu);
        let mem = &mut machine.memory;
        let t = match x86::paging::walk(mem, &regs, linear, Access::FETCH, true) {
            Ok(t) => t,
            Err(code) => return Ok(Code::Fault { addr: linear, code }),
        };
        let next_linear = linear.wrapping_add(rest);
        let next = x86::paging::walk(mem, &regs, next_linear, Access::FETCH, false)
            .ok()
            .map(|t| t.phys);
        (t.phys, next)
    } else {
        let next = u64::from(linear) + u64::from(rest);
        (u64::from(linear), Some(next))
    };
    if phys >= vm.ram_size {
        let what = if phys == u64::from(linear) {
            faults::no_memory(vm, "jumped to", linear)
        } else {
            format!(
                "the guest jumped to {linear:#010x}, which its page tables map to physical \
                 {phys:#x}, where there is no memory ({} MiB of RAM)",
                vm.ram_size >> 20
            )
        };
        return Err(machine.unsupported(what, vm.cpu.clone()));
    }
    let mut bytes = machine
        .memory
        .slice(phys, rest as usize)
        .map_err(host_err)?
        .to_vec();
    let next = next.filter(|&n| n < vm.ram_size);
    if let Some(n) = next {
        let avail = (vm.ram_size - n).min(15) as usize;
        bytes.extend_from_slice(machine.memory.slice(n, avail).map_err(host_err)?);
    }
    Ok(Code::Bytes {
        bytes,
        page: (phys / u64::from(PAGE_SIZE)) as u32,
        next_page: next.map(|n| (n / u64::from(PAGE_SIZE)) as u32),
    })
}

/// Translates the block at guest linear `linear` (CS:EIP) under
/// `ctx` and stores it, or delivers the #PF that fetching its first
/// instruction raised.
pub(super) fn translate_at(
    vm: &mut Vm,
    machine: &mut Machine,
    linear: u32,
    ctx: Context,
) -> Result<Fetched, EngineError> {
    let (bytes, page, next_page) = match code_bytes(vm, machine, linear)? {
        Code::Bytes {
            bytes,
            page,
            next_page,
        } => (bytes, page, next_page),
        Code::Fault { addr, code } => return fetch_fault(vm, machine, addr, code),
    };
    let key = BlockKey { eip: linear, ctx };
    for attempt in 0..2 {
        let t =
            match vm
                .translator
                .translate(key, &bytes, GuestPage(page), vm.cache.next_host_addr())
            {
                Ok(t) => t,
                Err(translate::TranslateError::Truncated { .. })
                    if vm.mmu.paging() && next_page.is_none() =>
                {
                    // The first instruction runs into a page the guest's
                    // tables do not let us fetch from.
                    let next = linear.wrapping_add(bytes.len() as u32);
                    let regs = PagingRegs::of(&vm.cpu);
                    let code =
                        x86::paging::walk(&mut machine.memory, &regs, next, Access::FETCH, true)
                            .err()
                            .unwrap_or(0);
                    return fetch_fault(vm, machine, next, code);
                }
                Err(e) => return Err(machine.unsupported(e.to_string(), vm.cpu.clone())),
            };
        if CodePages::of(vm).make_room(t.code.len() as u32)? && attempt == 0 {
            // The block goes to another chunk (maybe an evicted one):
            // the code was emitted for the old address.
            continue;
        }
        let mut block = t.block;
        // The translator numbers the spill page linearly; SMC works on
        // the physical page behind it.
        if block.spill.is_some() {
            block.spill = next_page.map(GuestPage);
        }
        let cpl = block.key.ctx.cpl;
        let id = CodePages::of(vm).insert(block, &t.code, linear)?;
        if let Some(map) = &mut vm.perf_map {
            let at = vm.cache.host_addr(id).expect("the block just inserted");
            map.record(at, t.code.len() as u32, linear, cpl);
        }
        return Ok(Fetched::Block(id));
    }
    Err(host_err(
        "a block does not fit in an empty translation cache",
    ))
}

/// Delivers the #PF of an instruction fetch at `addr`.
fn fetch_fault(
    vm: &mut Vm,
    machine: &mut Machine,
    addr: u32,
    code: u32,
) -> Result<Fetched, EngineError> {
    interrupts::page_fault(vm, machine, addr, code, "guest page fault (fetch)")
        .map(Fetched::Delivered)
}
