//! Boot loaders: put a kernel (and initrd, command line) into guest RAM and
//! produce the CPU state its boot protocol defines at entry.

use x86::CpuState;

use crate::memory::GuestMemory;

/// Which boot protocol a kernel image speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// Multiboot version 1 (ELF or a.out kludge).
    Multiboot,
    /// Linux x86 boot protocol (bzImage).
    LinuxBzImage,
}

/// A kernel placed in RAM, ready to enter.
#[derive(Debug)]
pub struct LoadedKernel {
    /// The protocol used.
    pub format: KernelFormat,
    /// CPU state at the kernel's entry point.
    pub entry: CpuState,
}

/// Why an image was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Placeholder until the loaders land.
    #[error("not a multiboot or Linux bzImage kernel")]
    UnknownFormat,
}

/// Detects the image's protocol and loads it.
pub fn load(
    _mem: &mut GuestMemory,
    _kernel: &[u8],
    _initrd: Option<&[u8]>,
    _cmdline: &str,
) -> Result<LoadedKernel, LoadError> {
    Err(LoadError::UnknownFormat)
}
