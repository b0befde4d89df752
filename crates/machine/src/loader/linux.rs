//! The Linux x86 boot protocol (Documentation/arch/x86/boot.rst) for
//! bzImages, entered at the 32-bit entry point.
//!
//! The real-mode setup code is never run: the loader does its job instead,
//! building boot_params (the "zero page") from the image's setup header and
//! the PC memory map, and jumps straight to the protected-mode kernel at
//! 1 MiB with ESI pointing at boot_params.

use super::{
    boot_cpu_state, check_placement, check_ram, layout, le_u16, le_u32, pc_memory_map,
    write_boot_gdt, write_cmdline, BootArea, KernelFormat, LoadError, LoadedKernel,
    HIGH_MEMORY_START,
};
use crate::memory::GuestMemory;

/// The boot sector signature at [`hdr::BOOT_FLAG`].
pub const BOOT_FLAG_MAGIC: u16 = 0xAA55;
/// "HdrS" read as a little-endian u32, at [`hdr::HEADER`].
pub const HEADER_MAGIC: u32 = u32::from_le_bytes(*b"HdrS");
/// Oldest protocol supported: 2.02 introduced cmd_line_ptr.
pub const MIN_VERSION: u16 = 0x0202;
/// Where a bzImage's protected-mode kernel is loaded (code32_start).
pub const KERNEL_LOAD_ADDR: u64 = HIGH_MEMORY_START;
/// type_of_loader value for a loader without an assigned ID.
const LOADER_TYPE_UNDEFINED: u8 = 0xFF;
/// Size of one setup sector.
const SECTOR_SIZE: usize = 512;
/// setup_sects value old kernels leave 0, meaning this many.
const DEFAULT_SETUP_SECTS: usize = 4;
/// initrd_addr_max for protocols before 2.03, which lack the field.
const DEFAULT_INITRD_ADDR_MAX: u32 = 0x37FF_FFFF;
/// Command line limit for protocols before 2.06, which lack cmdline_size.
const DEFAULT_CMDLINE_SIZE: usize = 255;
/// The initrd is placed on a page boundary.
const INITRD_ALIGN: u64 = 4096;

/// Offsets of setup header fields, from the start of the image (and of boot_params).
pub mod hdr {
    /// u8: number of 512-byte setup sectors after the boot sector.
    pub const SETUP_SECTS: usize = 0x1F1;
    /// u16: 0xAA55.
    pub const BOOT_FLAG: usize = 0x1FE;
    /// u8: second byte of the jump at 0x200, i.e. the header's length past 0x202.
    pub const JUMP_OFFSET: usize = 0x201;
    /// u32: "HdrS"; the header's variable part starts here.
    pub const HEADER: usize = 0x202;
    /// u16: protocol version.
    pub const VERSION: usize = 0x206;
    /// u8: boot loader ID.
    pub const TYPE_OF_LOADER: usize = 0x210;
    /// u8: LOADED_HIGH, CAN_USE_HEAP and friends.
    pub const LOADFLAGS: usize = 0x211;
    /// u32: where the protected-mode kernel is loaded.
    pub const CODE32_START: usize = 0x214;
    /// u32: initrd address.
    pub const RAMDISK_IMAGE: usize = 0x218;
    /// u32: initrd size.
    pub const RAMDISK_SIZE: usize = 0x21C;
    /// u32: command line address (2.02+).
    pub const CMD_LINE_PTR: usize = 0x228;
    /// u32: highest address the initrd may occupy (2.03+).
    pub const INITRD_ADDR_MAX: usize = 0x22C;
    /// u32: longest command line without its NUL (2.06+).
    pub const CMDLINE_SIZE: usize = 0x238;
    /// u64: physical address of the first setup_data entry (2.09+).
    pub const SETUP_DATA: usize = 0x250;
    /// u64: where the kernel prefers to run (2.10+).
    pub const PREF_ADDRESS: usize = 0x258;
    /// u32: bytes the kernel needs from its runtime start address while booting (2.10+).
    pub const INIT_SIZE: usize = 0x260;
}

/// loadflags bits.
pub mod loadflags {
    /// The protected-mode kernel is loaded at 1 MiB (a bzImage).
    pub const LOADED_HIGH: u8 = 1 << 0;
    /// heap_end_ptr is valid; meaningless without the real-mode setup code.
    pub const CAN_USE_HEAP: u8 = 1 << 7;
}

/// Offsets of boot_params fields outside the setup header.
pub mod zero_page {
    /// u32: extended memory in KiB.
    pub const ALT_MEM_K: usize = 0x1E0;
    /// u8: number of e820 entries.
    pub const E820_ENTRIES: usize = 0x1E8;
    /// The e820 table: 20-byte entries (addr u64, size u64, type u32).
    pub const E820_TABLE: usize = 0x2D0;
    /// Size of one e820 entry.
    pub const E820_ENTRY_SIZE: usize = 20;
    /// Capacity of the e820 table.
    pub const E820_MAX_ENTRIES: usize = 128;
}

/// setup_data type of a random seed for the kernel's RNG (SETUP_RNG_SEED).
const SETUP_RNG_SEED: u32 = 9;
/// Bytes of seed: what the kernel's own boot loaders pass (a ChaCha key).
const RNG_SEED_LEN: usize = 32;

/// Protocol versions that introduced the fields this loader reads.
mod since {
    pub const INITRD_ADDR_MAX: u16 = 0x0203;
    pub const SETUP_DATA: u16 = 0x0209;
    pub const CMDLINE_SIZE: u16 = 0x0206;
    pub const INIT_SIZE: u16 = 0x020A;
    pub const PREF_ADDRESS: u16 = 0x020A;
}

/// True if the image carries the boot flag or the "HdrS" signature, i.e.
/// looks like it means to be a Linux image (so errors should say why not).
pub fn looks_like_linux(image: &[u8]) -> bool {
    le_u16(image, hdr::BOOT_FLAG) == Some(BOOT_FLAG_MAGIC)
        || le_u32(image, hdr::HEADER) == Some(HEADER_MAGIC)
}

/// The setup header fields the loader acts on.
struct SetupHeader {
    version: u16,
    /// Offset just past the setup header in the image.
    header_end: usize,
    /// Offset of the protected-mode kernel in the image.
    kernel_offset: usize,
    initrd_addr_max: u32,
    cmdline_max: usize,
    init_size: u32,
    pref_address: u64,
}

/// Validates the image's setup header.
fn parse_header(image: &[u8]) -> Result<SetupHeader, LoadError> {
    let file_len = image.len() as u64;
    let truncated = |what, needed: usize| LoadError::Truncated {
        what,
        needed: needed as u64,
        actual: file_len,
    };
    let magic_end = hdr::HEADER + 4;
    if image.len() < magic_end {
        return Err(truncated("Linux setup header", magic_end));
    }
    let boot_flag = le_u16(image, hdr::BOOT_FLAG).unwrap_or(0);
    if boot_flag != BOOT_FLAG_MAGIC {
        return Err(LoadError::WrongMagic {
            what: "boot sector flag at offset 0x1FE",
            expected: BOOT_FLAG_MAGIC.into(),
            found: boot_flag.into(),
        });
    }
    let magic = le_u32(image, hdr::HEADER).unwrap_or(0);
    if magic != HEADER_MAGIC {
        return Err(LoadError::WrongMagic {
            what: "Linux setup header signature (\"HdrS\") at offset 0x202",
            expected: HEADER_MAGIC,
            found: magic,
        });
    }
    let header_end = hdr::HEADER + usize::from(image[hdr::JUMP_OFFSET]);
    // A 2.02 header reaches at least past cmd_line_ptr; anything shorter is
    // either cut off or not a header worth trusting.
    let min_end = (hdr::CMD_LINE_PTR + 4).max(header_end);
    if image.len() < min_end {
        return Err(truncated("Linux setup header", min_end));
    }

    let field_u32 = |off: usize| le_u32(image, off).unwrap_or(0);
    let version = le_u16(image, hdr::VERSION).unwrap_or(0);
    if version < MIN_VERSION {
        return Err(LoadError::UnsupportedProtocol { version });
    }
    if image[hdr::LOADFLAGS] & loadflags::LOADED_HIGH == 0 {
        return Err(LoadError::NotBzImage);
    }
    let setup_sects = match usize::from(image[hdr::SETUP_SECTS]) {
        0 => DEFAULT_SETUP_SECTS,
        n => n,
    };
    let kernel_offset = (setup_sects + 1) * SECTOR_SIZE;
    if image.len() <= kernel_offset {
        return Err(truncated(
            "bzImage (setup sectors plus protected-mode kernel)",
            kernel_offset + 1,
        ));
    }
    let initrd_addr_max = if version >= since::INITRD_ADDR_MAX {
        field_u32(hdr::INITRD_ADDR_MAX)
    } else {
        DEFAULT_INITRD_ADDR_MAX
    };
    let cmdline_max = if version >= since::CMDLINE_SIZE {
        field_u32(hdr::CMDLINE_SIZE) as usize
    } else {
        DEFAULT_CMDLINE_SIZE
    };
    let init_size = if version >= since::INIT_SIZE {
        field_u32(hdr::INIT_SIZE)
    } else {
        0
    };
    let pref_address = if version >= since::PREF_ADDRESS {
        let half = |off| u64::from(field_u32(off));
        half(hdr::PREF_ADDRESS) | half(hdr::PREF_ADDRESS + 4) << 32
    } else {
        0
    };
    Ok(SetupHeader {
        version,
        header_end,
        kernel_offset,
        initrd_addr_max,
        cmdline_max,
        init_size,
        pref_address,
    })
}

/// Loads a bzImage, its initrd and command line, and builds boot_params.
pub fn load(
    mem: &mut GuestMemory,
    image: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
) -> Result<LoadedKernel, LoadError> {
    check_ram(mem)?;
    let header = parse_header(image)?;
    let ram = mem.size();
    let kernel = &image[header.kernel_offset..];

    // The decompressor moves the kernel up to pref_address (the kernel's
    // LOAD_PHYSICAL_ADDR, 16 MiB for distribution kernels) when loaded below
    // it and needs init_size bytes from there, so everything up to that end
    // belongs to the kernel, not just the file's bytes at 1 MiB.
    let runtime_start = KERNEL_LOAD_ADDR.max(header.pref_address);
    let kernel_end = (KERNEL_LOAD_ADDR + kernel.len() as u64)
        .max(runtime_start.saturating_add(header.init_size.into()));
    let kernel_need = kernel_end - KERNEL_LOAD_ADDR;
    if kernel_end > ram {
        return Err(LoadError::KernelTooLarge {
            load_addr: KERNEL_LOAD_ADDR,
            needed: kernel_need,
            ram,
        });
    }
    check_placement("protected-mode kernel", KERNEL_LOAD_ADDR, kernel_need, ram)?;

    if cmdline.len() > header.cmdline_max {
        return Err(LoadError::CommandLineTooLong {
            len: cmdline.len(),
            max: header.cmdline_max,
        });
    }

    let initrd = initrd.filter(|bytes| !bytes.is_empty());
    let initrd_addr = initrd
        .map(|bytes| place_initrd(bytes.len() as u64, &header, kernel_end, ram))
        .transpose()?;

    write_cmdline(mem, BootArea::DEFAULT, cmdline)?;
    write_boot_gdt(mem, BootArea::DEFAULT)?;
    mem.write(KERNEL_LOAD_ADDR, kernel)?;
    let mut summary = vec![
        format!(
            "Linux bzImage, boot protocol {}.{:02}, {} setup bytes skipped",
            header.version >> 8,
            header.version & 0xFF,
            header.kernel_offset
        ),
        format!(
            "protected-mode kernel {KERNEL_LOAD_ADDR:#x}..{:#x} ({:#x} bytes); \
             {KERNEL_LOAD_ADDR:#x}..{kernel_end:#x} kept free for its decompression",
            KERNEL_LOAD_ADDR + kernel.len() as u64,
            kernel.len()
        ),
    ];
    if let (Some(addr), Some(bytes)) = (initrd_addr, initrd) {
        mem.write(addr, bytes)?;
        summary.push(format!(
            "initrd {addr:#x}..{:#x} ({} bytes)",
            addr + bytes.len() as u64,
            bytes.len()
        ));
    }
    let initrd_span = initrd_addr.zip(initrd.map(|b| b.len() as u64));
    write_boot_params(mem, image, &header, initrd_span)?;
    summary.push(format!(
        "boot_params at {:#x}, command line at {:#x} ({} bytes)",
        layout::BOOT_PARAMS,
        layout::CMDLINE,
        cmdline.len()
    ));

    let mut entry = boot_cpu_state(BootArea::DEFAULT);
    entry.esi = layout::BOOT_PARAMS as u32;
    entry.eip = KERNEL_LOAD_ADDR as u32;
    entry.ebp = 0;
    entry.edi = 0;
    entry.ebx = 0;
    summary.push(format!("entry EIP={:#x} ESI={:#x}", entry.eip, entry.esi));
    Ok(LoadedKernel {
        format: KernelFormat::LinuxBzImage,
        entry,
        summary,
        cmdline_addr: layout::CMDLINE,
    })
}

/// Chooses the initrd's address: as high as the kernel allows, page aligned.
fn place_initrd(
    len: u64,
    header: &SetupHeader,
    kernel_end: u64,
    ram: u64,
) -> Result<u64, LoadError> {
    let top = (u64::from(header.initrd_addr_max) + 1).min(ram);
    let Some(addr) = top.checked_sub(len).map(|a| a & !(INITRD_ALIGN - 1)) else {
        return Err(LoadError::InitrdDoesNotFit {
            size: len,
            reason: format!(
                "it must end below {top:#x} (the kernel's initrd_addr_max or the top of RAM)"
            ),
        });
    };
    if addr < kernel_end {
        return Err(LoadError::InitrdDoesNotFit {
            size: len,
            reason: format!(
                "below {top:#x} it would overlap the kernel at {KERNEL_LOAD_ADDR:#x}..{kernel_end:#x}; \
                 give the guest more memory"
            ),
        });
    }
    Ok(addr)
}

/// Builds boot_params from the image's setup header and the memory map.
fn write_boot_params(
    mem: &mut GuestMemory,
    image: &[u8],
    header: &SetupHeader,
    initrd: Option<(u64, u64)>,
) -> Result<(), LoadError> {
    let mut bp = vec![0u8; layout::BOOT_PARAMS_SIZE as usize];
    bp[hdr::SETUP_SECTS..header.header_end]
        .copy_from_slice(&image[hdr::SETUP_SECTS..header.header_end]);
    let put_u32 = |bp: &mut [u8], off: usize, value: u32| {
        bp[off..off + 4].copy_from_slice(&value.to_le_bytes());
    };

    bp[hdr::TYPE_OF_LOADER] = LOADER_TYPE_UNDEFINED;
    bp[hdr::LOADFLAGS] &= !loadflags::CAN_USE_HEAP;
    put_u32(&mut bp, hdr::CODE32_START, KERNEL_LOAD_ADDR as u32);
    put_u32(&mut bp, hdr::CMD_LINE_PTR, layout::CMDLINE as u32);
    let (initrd_addr, initrd_len) = initrd.unwrap_or((0, 0));
    put_u32(&mut bp, hdr::RAMDISK_IMAGE, initrd_addr as u32);
    put_u32(&mut bp, hdr::RAMDISK_SIZE, initrd_len as u32);
    if header.version >= since::SETUP_DATA {
        // A seed from the host, as QEMU and UEFI loaders pass: without it
        // the kernel's RNG waits for entropy from a machine with none to
        // give (no RDRAND in our CPU, few interrupts), and the first
        // getrandom() of user space blocks for a minute.
        write_rng_seed(mem)?;
        bp[hdr::SETUP_DATA..hdr::SETUP_DATA + 8].copy_from_slice(&layout::SETUP_DATA.to_le_bytes());
    }

    let ram = mem.size();
    put_u32(
        &mut bp,
        zero_page::ALT_MEM_K,
        ((ram - HIGH_MEMORY_START) / 1024) as u32,
    );
    let map = pc_memory_map(ram);
    debug_assert!(map.len() <= zero_page::E820_MAX_ENTRIES);
    bp[zero_page::E820_ENTRIES] = map.len() as u8;
    for (i, region) in map.iter().enumerate() {
        let off = zero_page::E820_TABLE + i * zero_page::E820_ENTRY_SIZE;
        bp[off..off + 8].copy_from_slice(&region.start.to_le_bytes());
        bp[off + 8..off + 16].copy_from_slice(&region.len.to_le_bytes());
        put_u32(&mut bp, off + 16, region.kind.e820_type());
    }
    mem.write(layout::BOOT_PARAMS, &bp)?;
    Ok(())
}

/// Writes one setup_data entry, a SETUP_RNG_SEED of host randomness, at
/// [`layout::SETUP_DATA`]: `next` (u64, 0), `type` (u32), `len` (u32), data.
fn write_rng_seed(mem: &mut GuestMemory) -> Result<(), LoadError> {
    let mut seed = [0u8; RNG_SEED_LEN];
    // SAFETY: getrandom writes at most `seed.len()` bytes into `seed`.
    let got = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    if got != seed.len() as isize {
        // No seed is better than a predictable one: the kernel then
        // gathers entropy itself, only slowly.
        return Ok(());
    }
    let mut entry = Vec::with_capacity(16 + RNG_SEED_LEN);
    entry.extend_from_slice(&0u64.to_le_bytes());
    entry.extend_from_slice(&SETUP_RNG_SEED.to_le_bytes());
    entry.extend_from_slice(&(RNG_SEED_LEN as u32).to_le_bytes());
    entry.extend_from_slice(&seed);
    debug_assert!(entry.len() as u64 <= layout::SETUP_DATA_SIZE);
    mem.write(layout::SETUP_DATA, &entry)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: u64 = 32 << 20;
    const SETUP_SECTS: u8 = 2;
    /// Header length past 0x202 (what a 2.15 kernel has: up to 0x26C).
    const HEADER_LEN: u8 = 0x6A;

    /// A fake bzImage: boot sector + `SETUP_SECTS` setup sectors with the
    /// header filled in, then `payload` as the protected-mode kernel.
    fn bzimage(version: u16, payload: &[u8]) -> Vec<u8> {
        let setup = (usize::from(SETUP_SECTS) + 1) * SECTOR_SIZE;
        let mut f = vec![0u8; setup];
        f[hdr::SETUP_SECTS] = SETUP_SECTS;
        f[hdr::BOOT_FLAG..hdr::BOOT_FLAG + 2].copy_from_slice(&BOOT_FLAG_MAGIC.to_le_bytes());
        f[0x200] = 0xEB;
        f[hdr::JUMP_OFFSET] = HEADER_LEN;
        f[hdr::HEADER..hdr::HEADER + 4].copy_from_slice(b"HdrS");
        f[hdr::VERSION..hdr::VERSION + 2].copy_from_slice(&version.to_le_bytes());
        f[hdr::LOADFLAGS] = loadflags::LOADED_HIGH | loadflags::CAN_USE_HEAP;
        set_u32(&mut f, hdr::CODE32_START, 0x10_0000);
        set_u32(&mut f, hdr::INITRD_ADDR_MAX, 0x7FFF_FFFF);
        set_u32(&mut f, hdr::CMDLINE_SIZE, 2047);
        f.extend_from_slice(payload);
        f
    }

    fn set_u32(f: &mut [u8], off: usize, value: u32) {
        f[off..off + 4].copy_from_slice(&value.to_le_bytes());
    }

    fn payload() -> Vec<u8> {
        (0..0x3000u32).map(|i| (i ^ (i >> 8)) as u8).collect()
    }

    fn ram() -> GuestMemory {
        GuestMemory::new(RAM).unwrap()
    }

    fn bp_u32(mem: &GuestMemory, off: usize) -> u32 {
        mem.read_u32(layout::BOOT_PARAMS + off as u64).unwrap()
    }

    #[test]
    fn a_random_seed_is_handed_over_in_setup_data() {
        let image = bzimage(0x020F, &payload());
        let mut mem = ram();
        super::super::load(&mut mem, &image, None, "").unwrap();
        let bp = mem.slice(layout::BOOT_PARAMS, 0x1000).unwrap();
        let at = u64::from_le_bytes(bp[hdr::SETUP_DATA..][..8].try_into().unwrap());
        assert_eq!(at, layout::SETUP_DATA);
        let e = mem.slice(at, 16 + RNG_SEED_LEN).unwrap();
        assert_eq!(&e[0..8], &[0; 8], "the only entry");
        assert_eq!(u32::from_le_bytes(e[8..12].try_into().unwrap()), 9);
        assert_eq!(u32::from_le_bytes(e[12..16].try_into().unwrap()), 32);
        assert_ne!(&e[16..], &[0; RNG_SEED_LEN][..]);
        // Protocols before 2.09 have no setup_data field.
        let mut mem = ram();
        super::super::load(&mut mem, &bzimage(0x0208, &payload()), None, "").unwrap();
        let bp = mem.slice(layout::BOOT_PARAMS, 0x1000).unwrap();
        assert_eq!(&bp[hdr::SETUP_DATA..][..8], &[0; 8]);
    }

    #[test]
    fn bzimage_is_loaded_with_boot_params() {
        let kernel = payload();
        let image = bzimage(0x020F, &kernel);
        let initrd: Vec<u8> = (0..10_000u32).map(|i| (i * 13) as u8).collect();
        let mut mem = ram();
        let loaded =
            super::super::load(&mut mem, &image, Some(&initrd), "console=ttyS0 quiet").unwrap();
        assert_eq!(loaded.format, KernelFormat::LinuxBzImage);
        assert!(!loaded.summary.is_empty());

        let s = &loaded.entry;
        assert_eq!(s.eip, 0x10_0000);
        assert_eq!(s.esi, layout::BOOT_PARAMS as u32);
        assert_eq!((s.ebp, s.edi, s.ebx), (0, 0, 0));
        assert_eq!(s.cs.selector, 0x10);
        assert_eq!(s.ds.selector, 0x18);
        assert_eq!(s.eflags & x86::state::flags::IF, 0);

        assert_eq!(mem.slice(0x10_0000, kernel.len()).unwrap(), &kernel[..]);

        // The setup header is copied, then patched.
        let bp = mem.slice(layout::BOOT_PARAMS, 0x1000).unwrap();
        assert_eq!(&bp[hdr::HEADER..hdr::HEADER + 4], b"HdrS");
        assert_eq!(bp[hdr::SETUP_SECTS], SETUP_SECTS);
        assert_eq!(bp[hdr::TYPE_OF_LOADER], 0xFF);
        assert_eq!(bp[hdr::LOADFLAGS], loadflags::LOADED_HIGH);
        assert_eq!(bp_u32(&mem, hdr::CMDLINE_SIZE), 2047);

        let cmd = u64::from(bp_u32(&mem, hdr::CMD_LINE_PTR));
        let expected = b"console=ttyS0 quiet\0";
        assert_eq!(mem.slice(cmd, expected.len()).unwrap(), expected);

        let rd = bp_u32(&mem, hdr::RAMDISK_IMAGE);
        assert_eq!(bp_u32(&mem, hdr::RAMDISK_SIZE), initrd.len() as u32);
        assert_eq!(rd % 4096, 0);
        assert!(u64::from(rd) + initrd.len() as u64 <= RAM);
        assert!(
            RAM - u64::from(rd) < initrd.len() as u64 + 4096,
            "placed high"
        );
        assert_eq!(mem.slice(u64::from(rd), initrd.len()).unwrap(), &initrd[..]);

        assert_eq!(
            bp_u32(&mem, zero_page::ALT_MEM_K),
            ((RAM - 0x10_0000) / 1024) as u32
        );
        let n = usize::from(bp[zero_page::E820_ENTRIES]);
        let e820: Vec<(u64, u64, u32)> = (0..n)
            .map(|i| {
                let e = &bp[zero_page::E820_TABLE + 20 * i..][..20];
                (
                    u64::from_le_bytes(e[0..8].try_into().unwrap()),
                    u64::from_le_bytes(e[8..16].try_into().unwrap()),
                    u32::from_le_bytes(e[16..20].try_into().unwrap()),
                )
            })
            .collect();
        assert_eq!(
            e820,
            [
                (0, 0x9_FC00, 1),
                (0x9_FC00, 0x400, 2),
                (0xF_0000, 0x1_0000, 2),
                (0x10_0000, RAM - 0x10_0000, 1),
            ]
        );
    }

    #[test]
    fn initrd_respects_initrd_addr_max() {
        let mut image = bzimage(0x020F, &payload());
        set_u32(&mut image, hdr::INITRD_ADDR_MAX, 0x00FF_FFFF);
        let mut mem = ram();
        load(&mut mem, &image, Some(&[1; 100]), "").unwrap();
        assert_eq!(bp_u32(&mem, hdr::RAMDISK_IMAGE), 0x00FF_F000);
    }

    #[test]
    fn no_initrd_leaves_ramdisk_fields_zero() {
        let mut mem = ram();
        load(&mut mem, &bzimage(0x020F, &payload()), None, "").unwrap();
        assert_eq!(bp_u32(&mem, hdr::RAMDISK_IMAGE), 0);
        assert_eq!(bp_u32(&mem, hdr::RAMDISK_SIZE), 0);
    }

    #[test]
    fn setup_sects_zero_means_four() {
        let mut image = bzimage(0x020F, &[]);
        image.resize(5 * SECTOR_SIZE, 0);
        image.extend_from_slice(b"KERNEL");
        image[hdr::SETUP_SECTS] = 0;
        let mut mem = ram();
        load(&mut mem, &image, None, "").unwrap();
        assert_eq!(mem.slice(0x10_0000, 6).unwrap(), b"KERNEL");
    }

    #[test]
    fn missing_hdrs_is_wrong_magic() {
        let mut image = bzimage(0x020F, &payload());
        image[hdr::HEADER..hdr::HEADER + 4].copy_from_slice(b"HdrX");
        assert!(matches!(
            super::super::load(&mut ram(), &image, None, ""),
            Err(LoadError::WrongMagic {
                expected: HEADER_MAGIC,
                ..
            })
        ));
    }

    #[test]
    fn missing_boot_flag_is_wrong_magic() {
        let mut image = bzimage(0x020F, &payload());
        image[hdr::BOOT_FLAG] = 0;
        assert!(matches!(
            super::super::load(&mut ram(), &image, None, ""),
            Err(LoadError::WrongMagic {
                expected: 0xAA55,
                found: 0xAA00,
                ..
            })
        ));
    }

    #[test]
    fn file_shorter_than_the_header_is_truncated() {
        let image = bzimage(0x020F, &payload());
        assert!(matches!(
            super::super::load(&mut ram(), &image[..0x220], None, ""),
            Err(LoadError::Truncated { actual: 0x220, .. })
        ));
    }

    #[test]
    fn file_without_kernel_is_truncated() {
        let image = bzimage(0x020F, &[]);
        assert!(matches!(
            load(&mut ram(), &image, None, ""),
            Err(LoadError::Truncated { needed: 0x601, .. })
        ));
    }

    #[test]
    fn old_protocol_is_refused() {
        let image = bzimage(0x0201, &payload());
        let err = load(&mut ram(), &image, None, "").unwrap_err();
        assert!(matches!(
            err,
            LoadError::UnsupportedProtocol { version: 0x0201 }
        ));
        assert!(err.to_string().contains("2.01"), "{err}");
    }

    #[test]
    fn zimage_is_refused() {
        let mut image = bzimage(0x020F, &payload());
        image[hdr::LOADFLAGS] &= !loadflags::LOADED_HIGH;
        assert!(matches!(
            load(&mut ram(), &image, None, ""),
            Err(LoadError::NotBzImage)
        ));
    }

    #[test]
    fn kernel_larger_than_ram_is_refused() {
        let image = bzimage(0x020F, &vec![0; (RAM - 0x10_0000) as usize + 1]);
        assert!(matches!(
            load(&mut ram(), &image, None, ""),
            Err(LoadError::KernelTooLarge { .. })
        ));
    }

    #[test]
    fn init_size_larger_than_ram_is_refused() {
        let mut image = bzimage(0x020F, &payload());
        set_u32(&mut image, hdr::INIT_SIZE, RAM as u32);
        assert!(matches!(
            load(&mut ram(), &image, None, ""),
            Err(LoadError::KernelTooLarge { needed, .. }) if needed == RAM
        ));
    }

    #[test]
    fn initrd_stays_clear_of_the_kernel_at_pref_address() {
        let mut image = bzimage(0x020F, &payload());
        set_u32(&mut image, hdr::PREF_ADDRESS, 0x100_0000);
        set_u32(&mut image, hdr::INIT_SIZE, 0x80_0000);
        let mut mem = ram();
        load(&mut mem, &image, Some(&vec![0; 8 << 20]), "").unwrap();
        assert_eq!(bp_u32(&mem, hdr::RAMDISK_IMAGE), 0x180_0000);
        assert!(matches!(
            load(&mut ram(), &image, Some(&vec![0; (8 << 20) + 1]), ""),
            Err(LoadError::InitrdDoesNotFit { .. })
        ));
    }

    #[test]
    fn init_size_at_pref_address_beyond_ram_is_refused() {
        let mut image = bzimage(0x020F, &payload());
        set_u32(&mut image, hdr::PREF_ADDRESS, 0x100_0000);
        set_u32(&mut image, hdr::INIT_SIZE, 0x100_0001);
        assert!(matches!(
            load(&mut ram(), &image, None, ""),
            Err(LoadError::KernelTooLarge {
                needed: 0x1F0_0001,
                ..
            })
        ));
    }

    #[test]
    fn initrd_larger_than_ram_is_refused() {
        let image = bzimage(0x020F, &payload());
        let initrd = vec![0u8; RAM as usize + 1];
        assert!(matches!(
            load(&mut ram(), &image, Some(&initrd), ""),
            Err(LoadError::InitrdDoesNotFit { .. })
        ));
    }

    #[test]
    fn initrd_overlapping_the_kernel_is_refused() {
        let mut image = bzimage(0x020F, &payload());
        set_u32(&mut image, hdr::INIT_SIZE, 24 << 20);
        let initrd = vec![0u8; 8 << 20];
        let err = load(&mut ram(), &image, Some(&initrd), "").unwrap_err();
        assert!(matches!(err, LoadError::InitrdDoesNotFit { .. }));
        assert!(err.to_string().contains("overlap"), "{err}");
    }

    #[test]
    fn command_line_longer_than_cmdline_size_is_refused() {
        let image = bzimage(0x020F, &payload());
        let ok = "a".repeat(2047);
        assert!(load(&mut ram(), &image, None, &ok).is_ok());
        assert!(matches!(
            load(&mut ram(), &image, None, &"a".repeat(2048)),
            Err(LoadError::CommandLineTooLong {
                len: 2048,
                max: 2047
            })
        ));
    }

    #[test]
    fn old_protocols_limit_the_command_line_to_255() {
        let mut image = bzimage(0x0205, &payload());
        // 2.05 has no cmdline_size, whatever the bytes there say.
        set_u32(&mut image, hdr::CMDLINE_SIZE, 4096);
        assert!(matches!(
            load(&mut ram(), &image, None, &"a".repeat(256)),
            Err(LoadError::CommandLineTooLong { len: 256, max: 255 })
        ));
    }

    #[test]
    fn old_protocols_keep_the_initrd_below_0x38000000() {
        let image = bzimage(0x0202, &payload());
        let mut mem = GuestMemory::new(0x4000_0000).unwrap();
        load(&mut mem, &image, Some(&[7; 10]), "").unwrap();
        assert_eq!(bp_u32(&mem, hdr::RAMDISK_IMAGE), 0x37FF_F000);
    }
}
