//! The KVM engine's sandbox: once the vCPU exists and the kicker thread
//! runs, the process is confined to [`sandbox::Allowlist::common`] plus
//! the vCPU ioctls of the run loop, on the vCPU's descriptor only. No new
//! VM, vCPU or memory slot can be made, and no executable memory at all
//! (this engine maps none: the guest runs inside KVM). A refused call is
//! reported by the sandbox's SIGSYS handler (this engine has none of its
//! own) and the process exits 10.

use std::os::fd::RawFd;

use kvm_bindings::{kvm_debugregs, kvm_msrs, kvm_regs, kvm_sregs};

/// KVMIO, the ioctl type of every KVM request.
const KVMIO: u32 = 0xAE;

/// `_IOC(dir, KVMIO, nr, size)` from linux/ioctl.h.
const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (KVMIO << 8) | nr
}

const READ: u32 = 2;
const WRITE: u32 = 1;

/// The vCPU requests the run loop makes: run, read and write the
/// registers (exits, the emulation fallback, register dumps), inject an
/// interrupt, tell KVM the local APIC's base (msr.rs: KVM shows its
/// enable bit in CPUID), and update DR6 and DR7 after a task switch the
/// fallback carried out (vcpu.rs).
pub const VCPU_REQUESTS: [u32; 9] = [
    ioc(0, 0x80, 0),                                    // KVM_RUN
    ioc(READ, 0x81, std::mem::size_of::<kvm_regs>()),   // KVM_GET_REGS
    ioc(WRITE, 0x82, std::mem::size_of::<kvm_regs>()),  // KVM_SET_REGS
    ioc(READ, 0x83, std::mem::size_of::<kvm_sregs>()),  // KVM_GET_SREGS
    ioc(WRITE, 0x84, std::mem::size_of::<kvm_sregs>()), // KVM_SET_SREGS
    crate::KVM_INTERRUPT as u32,
    ioc(WRITE, 0x89, std::mem::size_of::<kvm_msrs>()), // KVM_SET_MSRS
    ioc(READ, 0xA1, std::mem::size_of::<kvm_debugregs>()), // KVM_GET_DEBUGREGS
    ioc(WRITE, 0xA2, std::mem::size_of::<kvm_debugregs>()), // KVM_SET_DEBUGREGS
];

/// The KVM engine's allowlist for process `pid` with its vCPU at
/// `vcpu_fd`, writing to stdout, stderr and `outputs`.
pub fn allowlist(pid: u32, vcpu_fd: RawFd, outputs: &[RawFd]) -> sandbox::Allowlist {
    let mut l = sandbox::Allowlist::common_for(pid, outputs);
    // ioctl(fd, request, arg)
    for req in VCPU_REQUESTS {
        l.allow_if(
            libc::SYS_ioctl,
            [sandbox::arg_is(0, vcpu_fd as u32), sandbox::arg_is(1, req)],
        );
    }
    l
}

/// Installs the report of refused calls and confines every thread of the
/// process (each must be running already).
pub fn confine(vcpu_fd: RawFd) -> Result<(), String> {
    sandbox::install_reporter().map_err(|e| format!("sigaction(SIGSYS): {e}"))?;
    allowlist(std::process::id(), vcpu_fd, &sandbox::outputs())
        .confine()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandbox::bpf::{run, SeccompData};

    #[test]
    fn requests_match_the_kernel_headers() {
        // The values strace decodes as these names.
        assert_eq!(VCPU_REQUESTS[0], 0xAE80);
        assert_eq!(VCPU_REQUESTS[1], 0x8090_AE81);
        assert_eq!(VCPU_REQUESTS[2], 0x4090_AE82);
        assert_eq!(VCPU_REQUESTS[3], 0x8138_AE83);
        assert_eq!(VCPU_REQUESTS[4], 0x4138_AE84);
        assert_eq!(VCPU_REQUESTS[5], 0x4004_AE86);
        assert_eq!(VCPU_REQUESTS[6], 0x4008_AE89);
        assert_eq!(VCPU_REQUESTS[7], 0x8080_AEA1);
        assert_eq!(VCPU_REQUESTS[8], 0x4080_AEA2);
    }

    #[test]
    fn only_the_vcpu_ioctls_on_the_vcpu() {
        let (vcpu, vm, kvm) = (9, 8, 7);
        let p = allowlist(1234, vcpu, &[]).program().unwrap();
        let ioctl =
            |fd: RawFd, req: u32| SeccompData::x86_64(libc::SYS_ioctl, &[fd as u64, req.into()]);
        for req in VCPU_REQUESTS {
            assert_eq!(
                run(&p, &ioctl(vcpu, req)),
                libc::SECCOMP_RET_ALLOW,
                "{req:#x}"
            );
            assert_eq!(run(&p, &ioctl(vm, req)), libc::SECCOMP_RET_TRAP, "{req:#x}");
        }
        // KVM_CREATE_VM on /dev/kvm, KVM_CREATE_VCPU and
        // KVM_SET_USER_MEMORY_REGION on the VM.
        for (fd, req) in [(kvm, 0xAE01), (vm, 0xAE41), (vm, 0x4020_AE46)] {
            assert_eq!(run(&p, &ioctl(fd, req)), libc::SECCOMP_RET_TRAP, "{req:#x}");
        }
        // No executable memory, even where the BT engine may have it.
        let rx = (libc::PROT_READ | libc::PROT_EXEC) as u64;
        let mprotect = SeccompData::x86_64(libc::SYS_mprotect, &[0x10_0000, 0x1000, rx]);
        assert_eq!(run(&p, &mprotect), libc::SECCOMP_RET_TRAP);
        assert_eq!(
            run(&p, &SeccompData::x86_64(libc::SYS_modify_ldt, &[1])),
            libc::SECCOMP_RET_TRAP
        );
    }
}
