//! Guest `int $0x80` sites that trap often run as `int3` (docs/bt.md,
//! *Callouts*). On the VM hosts of this machine kind
//! the host's own `int 0x80` path reads the local APIC before its seccomp
//! filter traps the call (an exit to the VM host: ~20 k cycles to the
//! monitor's signal handler), while a breakpoint costs a quarter of that.
//! The shadow MMU gives the user-code process a copy of the frame with
//! 0xCC over the site's 0xCD ([`Shadow::patch_int80`]); the `int3` trap
//! that comes back is carried out as the `int $0x80` the guest's frame
//! still holds.
//!
//! [`Shadow::patch_int80`]: crate::mmu::Shadow::patch_int80

use machine::{EngineError, Machine};
use rustc_hash::FxHashMap;

use super::vm::{host_err, Vm};

/// Traps at one site before it is patched: a site run once or twice (a
/// program's start-up) does not take one of the few frame copies.
const PATCH_AFTER: u32 = 8;

/// Sites counted at most; past it the counts start over.
const SEEN_MAX: usize = 4096;

/// Trap counts of `int $0x80` sites not patched yet.
#[derive(Debug)]
pub(super) struct Int80Sites {
    /// Patch at all (`BtOptions::patch_int80`).
    on: bool,
    /// Traps per guest linear address of an `int $0x80`.
    seen: FxHashMap<u32, u32>,
}

impl Int80Sites {
    /// Counts that patch hot sites if `on`.
    pub(super) fn new(on: bool) -> Int80Sites {
        Int80Sites {
            on,
            seen: FxHashMap::default(),
        }
    }
}

/// Guest user code's `int $0x80` trapped (the host's path, seccomp): EIP is
/// after it. Counts the site, and patches it once it is hot.
pub(super) fn trapped(vm: &mut Vm, machine: &Machine) -> Result<(), EngineError> {
    if !vm.int80.on {
        return Ok(());
    }
    let site = vm.cpu.cs.base.wrapping_add(vm.cpu.eip).wrapping_sub(2);
    if vm.int80.seen.len() >= SEEN_MAX {
        vm.int80.seen.clear();
    }
    let n = vm.int80.seen.entry(site).or_default();
    *n += 1;
    if *n < PATCH_AFTER {
        return Ok(());
    }
    vm.int80.seen.remove(&site);
    vm.mmu
        .patch_int80(&mut vm.monitor, &machine.memory, site)
        .map_err(host_err)?;
    Ok(())
}

/// Guest user code trapped on `int3` (EIP after it): if it is a patched
/// site, sets EIP back to the site, where the guest's `int $0x80` is, and
/// says so.
pub(super) fn was_int80(vm: &mut Vm) -> bool {
    let at = vm.cpu.cs.base.wrapping_add(vm.cpu.eip).wrapping_sub(1);
    if !vm.mmu.is_patched_int80(at) {
        return false;
    }
    vm.cpu.eip = vm.cpu.eip.wrapping_sub(1);
    true
}
