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

use super::{halt, host_err, Next, Vm};
use crate::cache::{BlockId, Context};

/// A block to run, or the outcome of the fault its fetch raised.
pub(super) enum Fetched {
    Block(BlockId),
    Delivered(Next),
}

impl Vm {
    /// The run loop: until the guest stops, the user quits or an error.
    pub(super) fn run(&mut self, machine: &mut Machine) -> Result<Exit, EngineError> {
        loop {
            if machine.poll() == Poll::Quit {
                return Ok(Exit::UserQuit);
            }
            if let Next::End(exit) = self.interrupt(machine)? {
                return Ok(exit);
            }
            self.alarm.arm(machine.next_timer_event());
            let next = if self.cpu.cr0 & cr0::PE == 0 {
                return Err(self.unsupported(
                    machine,
                    "the guest is in real mode, which the BT engine does not run".into(),
                ));
            } else if self.cpu.cpl() == 3 {
                self.mmu
                    .set_view(&mut self.monitor, true)
                    .map_err(host_err)?;
                self.run_user(machine)?
            } else {
                self.mmu
                    .set_view(&mut self.monitor, false)
                    .map_err(host_err)?;
                self.run_kernel(machine)?
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
    pub(super) fn run_user(&mut self, machine: &mut Machine) -> Result<Next, EngineError> {
        let t = Instant::now();
        let exit = self.monitor.run_user(&mut self.cpu).map_err(host_err)?;
        self.stats.direct += t.elapsed();
        self.user_exit(machine, exit)
    }

    /// Runs translated guest kernel code and handles its exit.
    pub(super) fn run_kernel(&mut self, machine: &mut Machine) -> Result<Next, EngineError> {
        let resumed = self.resume.take();
        let ctx = self.context();
        let (host, block) = match resumed {
            Some((h, _)) => (h, None),
            None => match self.block_at_eip(machine)? {
                Fetched::Block(id) => (self.cache.host_addr(id).expect("live block"), Some(id)),
                Fetched::Delivered(next) => return Ok(next),
            },
        };
        // Guest TF: the instruction about to run traps (#DB) when it is done.
        let trap_after = resumed.is_none() && self.cpu.eflags & flags::TF != 0;
        self.smc_step = false;
        // Inline STI and POPF leave when they let a waiting interrupt in.
        self.monitor.set_irq_pending(machine.interrupt_pending());
        let t = Instant::now();
        let exit = self
            .monitor
            .run_translated(&mut self.cpu, host, resumed.map(|(_, sels)| sels))
            .map_err(host_err)?;
        self.stats.translated += t.elapsed();
        let next = self.kernel_exit(machine, host, exit, resumed, ctx.step);
        if ctx.step {
            if let Some(id) = block {
                self.cache.discard(id);
            }
        }
        let (next, completed) = next?;
        if trap_after && completed {
            self.cpu.dr[6] |= 1 << 14; // DR6.BS: single step
            return self.exception(
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
    pub(super) fn block_at_eip(&mut self, machine: &mut Machine) -> Result<Fetched, EngineError> {
        let ctx = self.context();
        let linear = self.cpu.linear_ip();
        if let Some(id) = self.cache.lookup(linear, ctx) {
            return Ok(Fetched::Block(id));
        }
        self.translate_at(machine, linear, ctx)
    }

    /// Chains the direct exit whose `jmp rel32` sits at host address
    /// `from` to the block at CS:EIP (translating it now).
    pub(super) fn chain(&mut self, machine: &mut Machine, from: u32) -> Result<Next, EngineError> {
        let to = match self.block_at_eip(machine)? {
            Fetched::Block(id) => id,
            Fetched::Delivered(next) => return Ok(next),
        };
        // None: the source block was dropped meanwhile (an eviction made
        // room for the target).
        if let Some((block, exit)) = self.cache.exit_at(from) {
            // Refusals (context mismatch) just leave the exit unchained.
            let _ = self.cache.chain(block, exit, to);
        }
        Ok(Next::Continue)
    }

    /// The context the block at CS:EIP is translated and looked up under.
    fn context(&self) -> Context {
        Context {
            cs_base: self.cpu.cs.base,
            cpl: self.cpu.cpl(),
            code32: self.cpu.cs.db,
            paging: self.cpu.cr0 & cr0::PG != 0,
            step: self.smc_step || self.cpu.eflags & flags::TF != 0,
        }
    }
}
