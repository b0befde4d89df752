//! The hardware-assisted engine: the same machine, run under KVM.
