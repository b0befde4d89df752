//! What this host's KVM can do, found out before a guest runs and said in
//! plain words.

use std::path::Path;

use kvm_ioctls::{Cap, Kvm};

/// The flavour of KVM behind /dev/kvm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// kvm-pvm (pagetable-based virtual machine): no VT-x/AMD-V underneath.
    /// Real mode and non-paged protected mode are emulated one instruction
    /// at a time; a 32-bit guest that turns paging on is shut down.
    Pvm,
    /// Intel VT-x.
    Vmx,
    /// AMD-V.
    Svm,
    /// Something else (we run it and see).
    Other,
}

/// The result of probing the host.
#[derive(Debug)]
pub struct HostKvm {
    /// Flavour of the KVM module.
    pub flavour: Flavour,
    /// KVM API version (12 on every kernel since 2.6.22).
    pub api_version: i32,
    /// KVM_CAP_IMMEDIATE_EXIT: needed to kick the vCPU without races.
    pub immediate_exit: bool,
}

impl HostKvm {
    /// One sentence describing what this host's KVM can run.
    pub fn describe(&self) -> &'static str {
        match self.flavour {
            Flavour::Pvm => "this host's /dev/kvm is kvm-pvm (no hardware virtualization underneath): it runs real mode and non-paged protected mode by emulating each instruction, and cannot run a 32-bit guest that turns paging on",
            Flavour::Vmx => "this host's /dev/kvm uses Intel VT-x",
            Flavour::Svm => "this host's /dev/kvm uses AMD-V",
            Flavour::Other => "this host's /dev/kvm is of an unrecognised flavour",
        }
    }
}

fn flavour() -> Flavour {
    let module = |m: &str| Path::new("/sys/module").join(m).exists();
    if module("kvm_pvm") {
        Flavour::Pvm
    } else if module("kvm_intel") {
        Flavour::Vmx
    } else if module("kvm_amd") {
        Flavour::Svm
    } else {
        Flavour::Other
    }
}

/// Opens /dev/kvm and reports what it offers, or says plainly why not.
pub fn probe() -> Result<(Kvm, HostKvm), String> {
    let kvm = Kvm::new().map_err(|e| {
        let why = match e.errno() {
            libc::ENOENT => {
                "it does not exist (no KVM module loaded, or not exposed to this container)"
                    .to_string()
            }
            libc::EACCES | libc::EPERM => {
                "permission denied (add yourself to the kvm group)".to_string()
            }
            _ => e.to_string(),
        };
        format!("cannot open /dev/kvm: {why}; the KVM engine needs it (the bt engine does not)")
    })?;
    let api_version = kvm.get_api_version();
    if api_version != 12 {
        return Err(format!(
            "/dev/kvm speaks KVM API version {api_version}; popek needs version 12"
        ));
    }
    let host = HostKvm {
        flavour: flavour(),
        api_version,
        immediate_exit: kvm.check_extension(Cap::ImmediateExit),
    };
    Ok((kvm, host))
}
