//! Dispatch: the BT engine's side of the machine's vCPU loop
//! ([`machine::vcpu`], which polls devices, arms the kick and waits in HLT)
//! and the way into guest code. Each step runs the guest: directly at
//! CPL 3, or at CPL 0 from the translation of the block at CS:EIP, which it
//! looks up in the translation cache (translating it on a miss). Direct
//! exits are chained (linked) block to block here, and indirect-branch
//! misses published in the inline lookup table. What an exit means is
//! [`super::exits`]' business.

use std::time::Duration;

use x86::paging::Access;

use machine::vcpu::Vcpu;
use machine::{EngineError, Exit, Machine};
use x86::interrupt::Exception;
use x86::state::{cr0, flags};
use x86::CpuState;

use super::exits::{self, Link};
use super::fetch::{self, Fetched};
use super::interrupts;
use super::stats::Stopwatch;
use super::vm::{host_err, Next, Vm};
use crate::cache::Context;

impl Vcpu for Vm {
    /// Delivers the pending interrupt (8259A or local APIC) if the virtual
    /// IF allows it now.
    fn inject(&mut self, machine: &mut Machine) -> Result<Option<Exit>, EngineError> {
        Ok(match interrupts::interrupt(self, machine)? {
            Next::End(exit) => Some(exit),
            // A delivery never halts.
            Next::Continue | Next::Halt { .. } => None,
        })
    }

    fn arm_kick(&mut self, after: Option<Duration>) {
        self.alarm.arm(after);
    }

    /// Runs the guest to its next exit, through the monitor's view of
    /// guest memory for the current privilege level, and handles the exit.
    fn step(&mut self, machine: &mut Machine) -> Result<Next, EngineError> {
        if self.cpu.cr0 & cr0::PE == 0 {
            return Err(machine.unsupported(
                "the guest is in real mode, which the BT engine does not run".into(),
                self.cpu.clone(),
            ));
        }
        loop {
            let user = self.cpu.cpl() == 3;
            self.mmu
                .set_view(&mut self.monitor, user)
                .map_err(host_err)?;
            let next = if user {
                run_user(self, machine)?
            } else {
                run_kernel(self, machine)?
            };
            // After a callout that touched no device (`go_on`), the next
            // run follows without a turn of the vCPU loop, unless an
            // interrupt waits to be delivered.
            if !(self.go_on && matches!(next, Next::Continue)) || machine.interrupt_pending() {
                return Ok(next);
            }
        }
    }

    fn state(&mut self) -> Result<CpuState, EngineError> {
        Ok(self.cpu.clone())
    }
}

/// A read by guest user code, as which the pages it will touch are mapped
/// ahead of it.
pub(super) const USER_READ: Access = Access {
    write: false,
    user: true,
    fetch: false,
};

/// A fetch by guest user code.
const USER_FETCH: Access = Access {
    fetch: true,
    ..USER_READ
};

/// Runs guest user code directly and handles its exit.
fn run_user(vm: &mut Vm, machine: &mut Machine) -> Result<Next, EngineError> {
    vm.go_on = false;
    let refill = vm.refill.take();
    if vm.mmu.paging() {
        vm.mmu
            .sync_user(&mut vm.monitor, &mut machine.memory)
            .map_err(host_err)?;
        // The page a guest #PF was about (the guest kernel has mapped it
        // by now, or the retry faults and the guest sees that), then the
        // pages user code touches first.
        let code = vm.cpu.cs.base.wrapping_add(vm.cpu.eip);
        let stack = vm.cpu.ss.base.wrapping_add(vm.cpu.esp);
        let pages = refill.map(|a| (a, USER_READ)).into_iter();
        for (linear, access) in pages.chain([(code, USER_FETCH), (stack, USER_READ)]) {
            vm.mmu
                .prefill(&mut vm.monitor, &mut machine.memory, linear, access)
                .map_err(host_err)?;
        }
    }
    let t = Stopwatch::ticks();
    let exit = vm.monitor.run_user(&mut vm.cpu).map_err(host_err)?;
    vm.direct_ticks += Stopwatch::ticks() - t;
    exits::user_exit(vm, machine, exit)
}

/// Runs translated guest kernel code and handles its exit.
fn run_kernel(vm: &mut Vm, machine: &mut Machine) -> Result<Next, EngineError> {
    vm.go_on = false;
    let resumed = vm.resume.take();
    let ctx = context(vm);
    vm.cache.enter(ctx);
    let (host, block) = match resumed {
        Some((h, _)) => (h, None),
        None => match block_at_eip(vm, machine)? {
            Fetched::Block(id) => (vm.cache.host_addr(id).expect("live block"), Some(id)),
            Fetched::Delivered(next) => return Ok(next),
        },
    };
    vm.monitor.set_vector_lazy(vm.vector_runs == 0);
    vm.vector_runs = vm.vector_runs.saturating_sub(1);
    // Guest TF: the instruction about to run traps (#DB) when it is done.
    let trap_after = resumed.is_none() && vm.cpu.eflags & flags::TF != 0;
    vm.smc_step = false;
    // Inline STI and POPF leave when they let a waiting interrupt in.
    vm.monitor.set_irq_pending(machine.interrupt_pending());
    let t = Stopwatch::ticks();
    let exit = vm
        .monitor
        .run_translated(&mut vm.cpu, host, resumed.map(|(_, sels)| sels))
        .map_err(host_err)?;
    vm.translated_ticks += Stopwatch::ticks() - t;
    let next = exits::kernel_exit(vm, machine, host, exit, resumed, ctx.step);
    if ctx.step {
        if let Some(id) = block {
            vm.cache.discard(id);
        }
    }
    let (mut next, completed, link) = next?;
    if ctx.step || trap_after {
        vm.go_on = false;
    }
    match link {
        Some(Link::Chain(from)) => next = chain(vm, machine, from)?,
        Some(Link::Publish) => next = publish(vm, machine)?,
        None => {}
    }
    if trap_after && completed {
        vm.cpu.dr[6] |= 1 << 14; // DR6.BS: single step
        let delivered = interrupts::exception(
            vm,
            machine,
            Exception {
                vector: 1,
                error_code: None,
            },
        )?;
        // A single-stepped HLT still halts, with its trap delivered: the
        // #DB handler runs once an interrupt wakes the loop, as it did
        // when the engine waited inside the callout and trapped on waking.
        return Ok(match delivered {
            Next::Continue => next,
            ended => ended,
        });
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
