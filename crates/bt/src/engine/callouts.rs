//! Callouts: the guest instructions translated code and direct execution
//! hand to the monitor, carried out one at a time by the emulator
//! (`x86::emulate`) on the virtual CPU, with port I/O going to the
//! machine's bus, and what they change around the vCPU afterwards (paging,
//! translations of pages the emulator wrote, HLT, phase markers).

use machine::memory::GuestLinear;
use machine::{EngineError, Machine};
use x86::classify::kind_of;
use x86::emulate;
use x86::interrupt::Unsupported;
use x86::paging::PagingRegs;

use super::platform::Surroundings;
use super::{host_err, Next, Vm};

impl Vm {
    /// Carries out the instruction at CS:EIP with the emulator.
    pub(super) fn callout(&mut self, machine: &mut Machine) -> Result<Next, EngineError> {
        let mut mem = GuestLinear::new(&mut machine.memory, &self.cpu);
        let insn = match emulate::fetch(&self.cpu, &mut mem) {
            Ok(i) => i,
            Err(e) => {
                // Same view: a #PF's CR2 travels with it.
                let r = emulate::deliver_fault(&mut self.cpu, &mut mem, e);
                return self.settle(machine, r);
            }
        };
        let kind = kind_of(&insn);
        self.stats.callout(kind.name());
        let mut plat = Surroundings {
            bus: &mut machine.bus,
            extras: &mut self.extras,
            did_io: false,
        };
        let r = emulate::execute_and_deliver(&mut self.cpu, &mut mem, &mut plat, &insn);
        self.after_writes(&mem.written)?;
        if let Ok(eff) = &r {
            if eff.cr_written
                || eff.paging_changed
                || eff.cr3_written
                || eff.tlb_flush_page.is_some()
            {
                self.paging_update(machine, eff.cr3_written, eff.tlb_flush_page)?;
            }
        }
        let eff = match r {
            Ok(eff) => eff,
            Err(Unsupported::Feature(what)) => {
                return Err(self.unsupported(
                    machine,
                    format!(
                        "the guest needs {what} ({}), which popek does not model",
                        kind.name()
                    ),
                ))
            }
            Err(u) => return self.settle(machine, Err::<(), _>(u)),
        };
        self.take_markers();
        self.last_callout_faulted = eff.delivered.is_some();
        self.shadow = eff.interrupt_shadow;
        if eff.halted {
            return self.halt(machine);
        }
        Ok(Next::Continue)
    }

    /// Records cache counters for each new port-0x80 phase marker.
    fn take_markers(&mut self) {
        while self.markers_seen < self.extras.port80.len() {
            let marker = self.extras.port80[self.markers_seen];
            self.markers_seen += 1;
            let now = self.cache_stats();
            self.stats
                .phases
                .push((marker, now.since(&self.phase_start)));
            self.phase_start = now;
        }
    }

    /// Takes the guest's paging registers after an instruction that may
    /// have changed them, and drops what they invalidate.
    fn paging_update(
        &mut self,
        machine: &mut Machine,
        cr3_written: bool,
        flush_page: Option<u32>,
    ) -> Result<(), EngineError> {
        let regs = PagingRegs::of(&self.cpu);
        let changed = regs != self.mmu.regs() || cr3_written;
        if changed {
            self.mmu
                .set_regs(&mut self.monitor, regs, cr3_written)
                .map_err(host_err)?;
        }
        if let Some(linear) = flush_page {
            self.mmu
                .invlpg(&mut self.monitor, linear)
                .map_err(host_err)?;
        }
        if changed || flush_page.is_some() {
            self.code_pages()
                .drop_stale(&mut machine.memory)
                .map_err(host_err)?;
        }
        Ok(())
    }
}
