//! What the KVM engine counted during a run.

use std::collections::BTreeMap;
use std::fmt;

/// Exit counts by reason.
#[derive(Clone, Debug, Default)]
pub struct KvmStats {
    /// Port I/O exits.
    pub io: u64,
    /// HLT exits.
    pub hlt: u64,
    /// Interrupt-window exits.
    pub irq_window: u64,
    /// Runs interrupted by the timer kick (EINTR).
    pub kicks: u64,
    /// Accesses to guest-physical addresses with no RAM, handed to the
    /// MMIO bus.
    pub mmio: u64,
    /// RDMSR and WRMSR that KVM handed to popek's MSR model.
    pub msr: u64,
    /// Interrupts injected with KVM_INTERRUPT.
    pub interrupts_injected: u64,
    /// Instructions KVM could not emulate that popek carried out, by name.
    pub emulated: BTreeMap<&'static str, u64>,
}

impl fmt::Display for KvmStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kvm exits by reason")?;
        for (name, n) in [
            ("port I/O", self.io),
            ("hlt", self.hlt),
            ("interrupt window", self.irq_window),
            ("timer kick", self.kicks),
            ("mmio", self.mmio),
            ("msr", self.msr),
        ] {
            writeln!(f, "  {name:<18}{n:>12}")?;
        }
        write!(f, "interrupts injected {:>11}", self.interrupts_injected)?;
        for (name, n) in &self.emulated {
            write!(f, "\nemulated by popek: {name:<8}{n:>8}")?;
        }
        Ok(())
    }
}
