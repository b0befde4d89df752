//! Dispatch: the run loop and the way into guest code. Each iteration
//! delivers what interrupt it can, arms the alarm, and runs the guest:
//! directly at CPL 3, or at CPL 0 from the translation of the block at
//! CS:EIP, which it looks up in the translation cache (translating it on a
//! miss). Direct exits are chained (linked) block to block here, and
//! indirect-branch misses published in the inline lookup table. What an
//! exit means is [`super::exits`]' business.

use std::time::Instant;

use machine::machine::Poll;
use machine::{EngineError, Exit, Machine};
use x86::interrupt::Exception;
use x86::state::{cr0, flags};

use super::exits::{self, Link};
use super::fetch::{self, Fetched};
use super::vm::{host_err, Next, Vm};
use super::{halt, interrupts};
use crate::cache::Context;

/// The run loop: until the guest stops, the user quits or an error.
pub(super) fn run(vm: &mut Vm, machine: &mut Machine) -> Result<Exit, EngineError> {
    loop {
        if machine.poll() == Poll::Quit {
            return Ok(Exit::UserQuit);
        }
        if let Next::End(exit) = interrupts::interrupt(vm, machine)? {
            return Ok(exit);
        }
        vm.alarm.arm(machine.next_timer_event());
        let next = if vm.cpu.cr0 & cr0::PE == 0 {
            return Err(vm.unsupported(
                machine,
                "the guest is in real mode, which the BT engine does not run".into(),
            ));
        } else if vm.cpu.cpl() == 3 {
            vm.mmu.set_view(&mut vm.monitor, true).map_err(host_err)?;
            run_user(vm, machine)?
        } else {
            vm.mmu.set_view(&mut vm.monitor, false).map_err(host_err)?;
            run_kernel(vm, machine)?
        };
        if let Next::End(exit) = next {
            return Ok(exit);
        }
        if let Some(exit) = halt::requested_stop(machine) {
            return Ok(exit);
        }
    }
}

/// Runs guest user code directly and handles its exit.
fn run_user(vm: &mut Vm, machine: &mut Machine) -> Result<Next, EngineError> {
    let t = Instant::now();
    let exit = vm.monitor.run_user(&mut vm.cpu).map_err(host_err)?;
    vm.stats.direct += t.elapsed();
    exits::user_exit(vm, machine, exit)
}

/// Runs translated guest kernel code and handles its exit.
fn run_kernel(vm: &mut Vm, machine: &mut Machine) -> Result<Next, EngineError> {
    let resumed = vm.resume.take();
    let ctx = context(vm);
    let (host, block) = match resumed {
        Some((h, _)) => (h, None),
        None => match block_at_eip(vm, machine)? {
            Fetched::Block(id) => (vm.cache.host_addr(id).expect("live block"), Some(id)),
            Fetched::Delivered(next) => return Ok(next),
        },
    };
    // Guest TF: the instruction about to run traps (#DB) when it is done.
    let trap_after = resumed.is_none() && vm.cpu.eflags & flags::TF != 0;
    vm.smc_step = false;
    // Inline STI and POPF leave when they let a waiting interrupt in.
    vm.monitor.set_irq_pending(machine.interrupt_pending());
    let t = Instant::now();
    let exit = vm
        .monitor
        .run_translated(&mut vm.cpu, host, resumed.map(|(_, sels)| sels))
        .map_err(host_err)?;
    vm.stats.translated += t.elapsed();
    let next = exits::kernel_exit(vm, machine, host, exit, resumed, ctx.step);
    if ctx.step {
        if let Some(id) = block {
            vm.cache.discard(id);
        }
    }
    let (mut next, completed, link) = next?;
    match link {
        Some(Link::Chain(from)) => next = chain(vm, machine, from)?,
        Some(Link::Publish) => next = publish(vm, machine)?,
        None => {}
    }
    if trap_after && completed {
        vm.cpu.dr[6] |= 1 << 14; // DR6.BS: single step
        return interrupts::exception(
            vm,
            machine,
            Exception {
                vector: 1,
                error_code: None,
            },
        );
    }
    Ok(next)
}

/// The translation of the block at CS:EIP, translating it on a miss,
/// or what happened when fetching its first instruction faulted.
fn block_at_eip(vm: &mut Vm, machine: &mut Machine) -> Result<Fetched, EngineError> {
    let ctx = context(vm);
    let linear = vm.cpu.linear_ip();
    if let Some(id) = vm.cache.lookup(linear, ctx) {
        return Ok(Fetched::Block(id));
    }
    fetch::translate_at(vm, machine, linear, ctx)
}

/// Publishes the block at CS:EIP (translating it now) in the inline
/// indirect-branch table, after a probe for it missed.
fn publish(vm: &mut Vm, machine: &mut Machine) -> Result<Next, EngineError> {
    match block_at_eip(vm, machine)? {
        Fetched::Block(id) => {
            vm.cache.publish_indirect(id);
            Ok(Next::Continue)
        }
        Fetched::Delivered(next) => Ok(next),
    }
}

/// Chains the direct exit whose `jmp rel32` sits at host address
/// `from` to the block at CS:EIP (translating it now).
fn chain(vm: &mut Vm, machine: &mut Machine, from: u32) -> Result<Next, EngineError> {
    let to = match block_at_eip(vm, machine)? {
        Fetched::Block(id) => id,
        Fetched::Delivered(next) => return Ok(next),
    };
    // None: the source block was dropped meanwhile (an eviction made
    // room for the target).
    if let Some((block, exit)) = vm.cache.exit_at(from) {
        // Refusals (context mismatch) just leave the exit unchained.
        let _ = vm.cache.chain(block, exit, to);
    }
    Ok(Next::Continue)
}

/// The context the block at CS:EIP is translated and looked up under.
fn context(vm: &Vm) -> Context {
    Context {
        cs_base: vm.cpu.cs.base,
        cpl: vm.cpu.cpl(),
        code32: vm.cpu.cs.db,
        paging: vm.cpu.cr0 & cr0::PG != 0,
        step: vm.smc_step || vm.cpu.eflags & flags::TF != 0,
    }
}
