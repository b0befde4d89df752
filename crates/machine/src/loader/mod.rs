//! Boot loaders: put a kernel (and initrd, command line) into guest RAM and
//! produce the CPU state its boot protocol defines at entry.
//!
//! Two protocols are understood: Multiboot version 1 ([`multiboot`]) and the
//! Linux x86 boot protocol for bzImages, entered at the 32-bit entry point
//! ([`linux`]). Both start the kernel in flat 32-bit protected mode with
//! paging off, using one boot GDT that the loader writes into low memory.
//!
//! # Low-memory layout
//!
//! Everything the loader builds for the kernel sits in one block, the boot
//! area. Its default place is conventional memory,
//! [`layout::AREA_START`]..[`layout::AREA_END`], well below the EBDA at
//! 0x9FC00, so a kernel that keeps its early allocations above 1 MiB never
//! lands on it:
//!
//! | range             | contents                                          |
//! |-------------------|---------------------------------------------------|
//! | 0x00000..0x00400  | real-mode IVT, left zero                          |
//! | 0x00400..0x00500  | BIOS data area ([`crate::firmware`])              |
//! | 0x01000..0x01020  | boot GDT (null, null, 0x10 code, 0x18 data)        |
//! | 0x02000..0x02080  | multiboot information structure                   |
//! | 0x02080..0x02090  | multiboot module list (the initrd)                |
//! | 0x02100..0x02200  | multiboot strings (boot loader name, module name) |
//! | 0x02200..0x02400  | multiboot memory map                              |
//! | 0x07000..0x08000  | Linux boot_params ("zero page")                    |
//! | 0x08000..0x08100  | Linux setup_data (a random seed)                  |
//! | 0x10000..0x20000  | boot stack (ESP = 0x20000 at entry)               |
//! | 0x20000..0x30000  | kernel command line (NUL-terminated)              |
//! | 0x9FC00..0xA0000  | extended BIOS data area ([`crate::firmware`])     |
//! | 0xF0000..0xF2000  | SMBIOS, MP and ACPI tables ([`crate::firmware`])   |
//!
//! Only one of the multiboot block and boot_params is used for a given
//! kernel, but they are kept apart so the layout needs no per-protocol cases.
//!
//! A multiboot kernel may be linked anywhere in free RAM, below 1 MiB too
//! (test kernels at 0x8000 are common). When its segments cover part of
//! the default area, the whole area moves, with the same inner layout, to
//! the lowest page of usable RAM where it fits clear of the kernel and its
//! module ([`BootArea`]); the firmware's areas (IVT and BDA, EBDA, BIOS
//! ROM) are never usable RAM, so neither the kernel nor the area can land
//! on them. A Linux bzImage always loads at 1 MiB and keeps the default
//! area.

pub mod linux;
pub mod multiboot;

use x86::state::{cr0, flags};
use x86::{CpuState, Segment, TableRegister};

use crate::memory::{GuestMemory, MemoryError};

/// Guest physical addresses of everything the loaders place in low memory.
pub mod layout {
    /// The boot GDT.
    pub const GDT: u64 = 0x1000;
    /// Multiboot information structure.
    pub const MULTIBOOT_INFO: u64 = 0x2000;
    /// Multiboot module list (one 16-byte entry for the initrd).
    pub const MULTIBOOT_MODULES: u64 = 0x2080;
    /// Multiboot strings: boot loader name, module string.
    pub const MULTIBOOT_STRINGS: u64 = 0x2100;
    /// Multiboot memory map entries.
    pub const MULTIBOOT_MMAP: u64 = 0x2200;
    /// End of the multiboot block.
    pub const MULTIBOOT_END: u64 = 0x2400;
    /// Linux boot_params (the "zero page").
    pub const BOOT_PARAMS: u64 = 0x7000;
    /// Size of boot_params.
    pub const BOOT_PARAMS_SIZE: u64 = 0x1000;
    /// Linux setup_data: the random seed handed to the kernel.
    pub const SETUP_DATA: u64 = 0x8000;
    /// Room for setup_data.
    pub const SETUP_DATA_SIZE: u64 = 0x100;
    /// Lowest address of the boot stack.
    pub const STACK_BOTTOM: u64 = 0x10000;
    /// Initial ESP: the boot stack grows down from here.
    pub const STACK_TOP: u64 = 0x20000;
    /// The kernel command line.
    pub const CMDLINE: u64 = 0x20000;
    /// Bytes reserved for the command line, its NUL included.
    pub const CMDLINE_CAPACITY: u64 = 0x10000;
    /// First byte of the loader's low-memory area.
    pub const AREA_START: u64 = GDT;
    /// End (exclusive) of the loader's low-memory area.
    pub const AREA_END: u64 = CMDLINE + CMDLINE_CAPACITY;
}

// The whole area must stay in conventional memory, clear of the EBDA.
const _: () = assert!(layout::AREA_END <= 0x9_F000);

/// Where a kernel's boot area went: the block [`layout`] describes, at
/// `base` instead of [`layout::AREA_START`], every part at the same offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootArea {
    base: u64,
}

impl BootArea {
    /// The area at its default place.
    pub const DEFAULT: BootArea = BootArea {
        base: layout::AREA_START,
    };

    /// The area at `base` (page aligned).
    pub const fn at(base: u64) -> Self {
        BootArea { base }
    }

    /// Where the area starts.
    pub const fn base(self) -> u64 {
        self.base
    }

    /// Where the part the default layout puts at `default` is.
    pub const fn of(self, default: u64) -> u64 {
        default - layout::AREA_START + self.base
    }

    /// Bytes of the area up to the end of a command line of `cmdline_len`
    /// bytes and its NUL.
    pub const fn len_with_cmdline(cmdline_len: u64) -> u64 {
        layout::CMDLINE - layout::AREA_START + cmdline_len + 1
    }
}

/// Selector of the flat 32-bit ring-0 code segment (Linux's `__BOOT_CS`).
pub const BOOT_CS: u16 = 0x10;
/// Selector of the flat ring-0 data segment (Linux's `__BOOT_DS`).
pub const BOOT_DS: u16 = 0x18;

/// The boot GDT: two null entries (Linux leaves entry 1 unused), then flat
/// 4 GiB code (access 0x9B) and data (access 0x93) with G=1, D=1, accessed
/// bits already set so the CPU never writes back into the table.
const BOOT_GDT: [u64; 4] = [0, 0, 0x00CF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF];

/// Limit of a 32-bit TSS with no I/O bitmap.
const TSS_LIMIT: u32 = 0x67;

/// The end of what the firmware keeps at the bottom of RAM: the real-mode
/// IVT and the BIOS data area.
pub const FIRMWARE_LOW_END: u64 = 0x500;
/// Where conventional memory ends and the EBDA starts.
pub const LOW_MEMORY_END: u64 = 0x9_FC00;
/// Start of the reserved BIOS ROM area below 1 MiB.
pub const BIOS_ROM_START: u64 = 0xF_0000;
/// Start of extended memory (1 MiB).
pub const HIGH_MEMORY_START: u64 = 0x10_0000;
/// The smallest RAM the loaders accept: low memory plus something at 1 MiB.
pub const MIN_RAM: u64 = HIGH_MEMORY_START + 0x1000;

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
    /// Human-readable lines saying what was placed where (for `-v`).
    pub summary: Vec<String>,
    /// Guest-physical address of the NUL-terminated command line.
    pub cmdline_addr: u64,
}

/// Why an image was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Neither protocol's header was found.
    #[error(
        "the kernel image is neither a multiboot kernel (no multiboot header in its first 8 KiB) \
         nor a Linux bzImage (no boot flag 0xAA55 at 0x1FE or \"HdrS\" at 0x202)"
    )]
    UnknownFormat,
    /// The file ends before something it declares.
    #[error("the kernel image is truncated: its {what} needs {needed} bytes but the file has only {actual}")]
    Truncated {
        /// The part that is cut off.
        what: &'static str,
        /// Bytes the file would need.
        needed: u64,
        /// Bytes the file has.
        actual: u64,
    },
    /// A magic number or signature does not match.
    #[error("wrong magic number in the {what}: expected {expected:#x}, found {found:#x}")]
    WrongMagic {
        /// The field checked.
        what: &'static str,
        /// The value the protocol requires.
        expected: u32,
        /// The value in the image.
        found: u32,
    },
    /// A multiboot magic was found but magic + flags + checksum is not zero.
    #[error("the multiboot header at file offset {offset:#x} has a bad checksum (magic + flags + checksum = {sum:#x}, not 0)")]
    BadMultibootChecksum {
        /// File offset of the header.
        offset: usize,
        /// The wrong sum.
        sum: u32,
    },
    /// The multiboot header requires features this loader cannot provide.
    #[error("the multiboot header requires what popek cannot provide (flags {flags:#x}): {}", multiboot::describe_required_flags(*.flags))]
    UnsupportedMultibootFlags {
        /// The refused required bits.
        flags: u32,
    },
    /// A multiboot kernel without the a.out kludge is not a loadable ELF32 i386 executable.
    #[error("the multiboot kernel is not a 32-bit x86 ELF executable ({0}), and its header does not use the a.out kludge (flag bit 16)")]
    NotElf32X86(String),
    /// The a.out kludge addresses in a multiboot header contradict each other or the file.
    #[error("the multiboot header's a.out kludge addresses are inconsistent: {0}")]
    BadAoutKludge(String),
    /// Something would be placed beyond the end of guest RAM.
    #[error("{what} at {start:#x}..{end:#x} lies outside guest RAM ({ram:#x} bytes); give the guest more memory")]
    OutsideRam {
        /// What was being placed.
        what: String,
        /// First byte.
        start: u64,
        /// End (exclusive).
        end: u64,
        /// RAM size.
        ram: u64,
    },
    /// Something would be placed where the PC has no usable RAM.
    #[error(
        "{what} at {start:#x}..{end:#x} is not in usable RAM: it overlaps what the PC's memory \
         map keeps for the firmware (the IVT and BIOS data area below {:#x}, the EBDA, the VGA \
         window, the BIOS ROM) or a hole",
        FIRMWARE_LOW_END
    )]
    NotUsableRam {
        /// What was being placed.
        what: String,
        /// First byte.
        start: u64,
        /// End (exclusive).
        end: u64,
    },
    /// The loader found no free RAM for its own boot data.
    #[error(
        "no free RAM for the loader's boot data ({len:#x} bytes: GDT, multiboot information, \
         stack, command line) clear of the kernel and its module; give the guest more memory"
    )]
    NoRoomForBootData {
        /// Bytes needed.
        len: u64,
    },
    /// Something would be placed over the loader's boot data in low memory.
    #[error(
        "{what} at {start:#x}..{end:#x} overlaps the loader's boot data at {:#x}..{:#x}",
        layout::AREA_START,
        layout::AREA_END
    )]
    OverlapsLoaderArea {
        /// What was being placed.
        what: String,
        /// First byte.
        start: u64,
        /// End (exclusive).
        end: u64,
    },
    /// The bzImage speaks a boot protocol older than 2.02.
    #[error("the bzImage uses Linux boot protocol {}.{:02}, older than 2.02, which popek does not support", .version >> 8, .version & 0xFF)]
    UnsupportedProtocol {
        /// The header's version field (major << 8 | minor).
        version: u16,
    },
    /// The Linux image does not set LOADED_HIGH: a zImage, loaded at 0x10000.
    #[error("not a bzImage: the setup header's LOADED_HIGH flag is clear (a zImage, which loads at 0x10000); popek only boots bzImages")]
    NotBzImage,
    /// The kernel does not fit in guest RAM.
    #[error("the kernel needs {needed:#x} bytes at {load_addr:#x} but guest RAM is only {ram:#x} bytes; give the guest more memory")]
    KernelTooLarge {
        /// Where it would be loaded.
        load_addr: u64,
        /// Bytes it needs there (image or init_size, whichever is larger).
        needed: u64,
        /// RAM size.
        ram: u64,
    },
    /// The initrd cannot be placed.
    #[error("the initrd ({size} bytes) does not fit: {reason}")]
    InitrdDoesNotFit {
        /// Initrd size.
        size: u64,
        /// Why.
        reason: String,
    },
    /// The command line exceeds what the kernel (or the loader) accepts.
    #[error("the command line is {len} bytes long, more than the limit of {max}")]
    CommandLineTooLong {
        /// Its length (without the NUL).
        len: usize,
        /// The limit (without the NUL).
        max: usize,
    },
    /// Guest RAM is too small for the PC memory map the loaders describe.
    #[error("guest RAM of {ram:#x} bytes is too small to boot a kernel: at least {min:#x} needed")]
    RamTooSmall {
        /// RAM size.
        ram: u64,
        /// Minimum.
        min: u64,
    },
    /// A guest memory access failed (a loader bug: placements are checked first).
    #[error(transparent)]
    Memory(#[from] MemoryError),
}

/// What a range of the physical memory map holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// RAM the OS may use.
    Usable,
    /// Reserved (EBDA, BIOS ROM).
    Reserved,
}

impl RegionKind {
    /// The type code shared by E820 and multiboot memory maps (1 usable, 2 reserved).
    pub fn e820_type(self) -> u32 {
        match self {
            RegionKind::Usable => 1,
            RegionKind::Reserved => 2,
        }
    }
}

/// One range of the physical memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// What it holds.
    pub kind: RegionKind,
}

/// The standard PC memory map for `ram_size` bytes of RAM at address 0.
///
/// The VGA window 0xA0000..0xF0000 is left out, as a BIOS leaves it, so the
/// kernel treats it as a hole.
pub fn pc_memory_map(ram_size: u64) -> Vec<MemoryRegion> {
    let mut map = vec![
        MemoryRegion {
            start: 0,
            len: LOW_MEMORY_END.min(ram_size),
            kind: RegionKind::Usable,
        },
        MemoryRegion {
            start: LOW_MEMORY_END,
            len: 0xA_0000 - LOW_MEMORY_END,
            kind: RegionKind::Reserved,
        },
        MemoryRegion {
            start: BIOS_ROM_START,
            len: HIGH_MEMORY_START - BIOS_ROM_START,
            kind: RegionKind::Reserved,
        },
    ];
    if ram_size > HIGH_MEMORY_START {
        map.push(MemoryRegion {
            start: HIGH_MEMORY_START,
            len: ram_size - HIGH_MEMORY_START,
            kind: RegionKind::Usable,
        });
    }
    map
}

/// Detects the image's protocol and loads it.
pub fn load(
    mem: &mut GuestMemory,
    kernel: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
) -> Result<LoadedKernel, LoadError> {
    let loaded = match multiboot::probe(kernel) {
        multiboot::Probe::Found(_) => multiboot::load(mem, kernel, initrd, cmdline)?,
        probe if linux::looks_like_linux(kernel) => {
            if let multiboot::Probe::BadChecksum { offset, .. } = probe {
                tracing::debug!("ignoring a multiboot magic with a bad checksum at {offset:#x}");
            }
            linux::load(mem, kernel, initrd, cmdline)?
        }
        multiboot::Probe::BadChecksum { offset, sum } => {
            return Err(LoadError::BadMultibootChecksum { offset, sum })
        }
        multiboot::Probe::Absent => return Err(LoadError::UnknownFormat),
    };
    crate::firmware::install(mem)?;
    for line in &loaded.summary {
        tracing::debug!("loader: {line}");
    }
    Ok(loaded)
}

/// Refuses RAM too small for the low-memory layout and the PC memory map.
fn check_ram(mem: &GuestMemory) -> Result<(), LoadError> {
    if mem.size() < MIN_RAM {
        return Err(LoadError::RamTooSmall {
            ram: mem.size(),
            min: MIN_RAM,
        });
    }
    Ok(())
}

/// The end of `len` bytes at `start` if they lie in RAM (`None` if there
/// are none), the start of both placement checks.
fn end_in_ram(what: &str, start: u64, len: u64, ram: u64) -> Result<Option<u64>, LoadError> {
    if len == 0 {
        return Ok(None);
    }
    let end = start.saturating_add(len);
    if end > ram {
        return Err(LoadError::OutsideRam {
            what: what.to_owned(),
            start,
            end,
            ram,
        });
    }
    Ok(Some(end))
}

/// Checks that `len` bytes at `start` lie in RAM and clear of the loader's area.
fn check_placement(what: &str, start: u64, len: u64, ram: u64) -> Result<(), LoadError> {
    let Some(end) = end_in_ram(what, start, len, ram)? else {
        return Ok(());
    };
    if start < layout::AREA_END && end > layout::AREA_START {
        return Err(LoadError::OverlapsLoaderArea {
            what: what.to_owned(),
            start,
            end,
        });
    }
    Ok(())
}

/// Writes the command line and its NUL at [`layout::CMDLINE`] in `area`.
fn write_cmdline(mem: &mut GuestMemory, area: BootArea, cmdline: &str) -> Result<(), LoadError> {
    let max = layout::CMDLINE_CAPACITY as usize - 1;
    if cmdline.len() > max {
        return Err(LoadError::CommandLineTooLong {
            len: cmdline.len(),
            max,
        });
    }
    let at = area.of(layout::CMDLINE);
    mem.write(at, cmdline.as_bytes())?;
    mem.write(at + cmdline.len() as u64, &[0])?;
    Ok(())
}

/// Writes the boot GDT at [`layout::GDT`] in `area`.
fn write_boot_gdt(mem: &mut GuestMemory, area: BootArea) -> Result<(), LoadError> {
    let bytes: Vec<u8> = BOOT_GDT.iter().flat_map(|d| d.to_le_bytes()).collect();
    mem.write(area.of(layout::GDT), &bytes)?;
    Ok(())
}

/// The CPU state both protocols enter with: flat 32-bit protected mode,
/// paging and interrupts off, GDTR on the boot GDT and ESP on the boot
/// stack of `area`. Callers set the protocol's registers (EIP, EAX/EBX or
/// ESI) on top.
fn boot_cpu_state(area: BootArea) -> CpuState {
    let data = Segment::flat_data32(BOOT_DS);
    CpuState {
        eflags: flags::FIXED1,
        esp: area.of(layout::STACK_TOP) as u32,
        cs: Segment::flat_code32(BOOT_CS),
        ds: data,
        es: data,
        ss: data,
        fs: data,
        gs: data,
        gdtr: TableRegister {
            base: area.of(layout::GDT) as u32,
            limit: (BOOT_GDT.len() * 8 - 1) as u16,
        },
        // An empty IDT: any exception before the kernel loads its own
        // triple-faults, which is what a real boot loader leaves too.
        idtr: TableRegister { base: 0, limit: 0 },
        // VMX refuses an unusable TR, so give it a busy 32-bit TSS cache;
        // nothing uses it until the kernel loads its own with LTR.
        tr: Segment {
            selector: 0,
            base: 0,
            limit: TSS_LIMIT,
            typ: Segment::TYPE_TSS32_BUSY,
            s: false,
            present: true,
            ..Segment::default()
        },
        ldtr: Segment::unusable(),
        cr0: cr0::PE | cr0::ET,
        ..CpuState::reset()
    }
}

/// Refuses a kernel range that is not inside one usable region of the PC
/// memory map, or reaches into the IVT and BIOS data area.
fn check_usable(what: &str, start: u64, len: u64, ram: u64) -> Result<(), LoadError> {
    let Some(end) = end_in_ram(what, start, len, ram)? else {
        return Ok(());
    };
    let usable = pc_memory_map(ram).iter().any(|r| {
        r.kind == RegionKind::Usable
            && start >= r.start.max(FIRMWARE_LOW_END)
            && end <= r.start + r.len
    });
    if !usable {
        return Err(LoadError::NotUsableRam {
            what: what.to_owned(),
            start,
            end,
        });
    }
    Ok(())
}

/// Where a boot area of `len` bytes goes: at its default place if that is
/// free, otherwise at the lowest page of usable RAM (page 0 excluded: the
/// IVT and the BIOS data area) where it overlaps none of `busy` (start,
/// end) ranges.
fn place_boot_area(ram: u64, busy: &[(u64, u64)], len: u64) -> Result<BootArea, LoadError> {
    let map = pc_memory_map(ram);
    let usable = || map.iter().filter(|r| r.kind == RegionKind::Usable);
    let free = |start: u64| {
        let end = start + len;
        usable().any(|r| start >= r.start && end <= r.start + r.len)
            && busy.iter().all(|&(b, e)| e <= start || b >= end)
    };
    let default = BootArea::DEFAULT.base();
    if free(default) {
        return Ok(BootArea::DEFAULT);
    }
    // The lowest free page starts a usable region or follows a busy range.
    usable()
        .map(|r| r.start)
        .chain(busy.iter().map(|&(_, end)| end))
        .map(|s| align_up(s.max(default), PAGE))
        .filter(|&s| free(s))
        .min()
        .map(BootArea::at)
        .ok_or(LoadError::NoRoomForBootData { len })
}

/// A page: the boot area's alignment.
const PAGE: u64 = 0x1000;

/// Rounds `value` up to a multiple of `align` (a power of two).
fn align_up(value: u64, align: u64) -> u64 {
    (value + align - 1) & !(align - 1)
}

/// A little-endian u16 at `off`, if the image is long enough.
fn le_u16(image: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        image.get(off..off + 2)?.try_into().ok()?,
    ))
}

/// A little-endian u32 at `off`, if the image is long enough.
fn le_u32(image: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        image.get(off..off + 4)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_blocks_are_ordered_disjoint_and_below_the_ebda() {
        let blocks = [
            (layout::GDT, layout::GDT + BOOT_GDT.len() as u64 * 8),
            (layout::MULTIBOOT_INFO, layout::MULTIBOOT_MODULES),
            (layout::MULTIBOOT_MODULES, layout::MULTIBOOT_STRINGS),
            (layout::MULTIBOOT_STRINGS, layout::MULTIBOOT_MMAP),
            (layout::MULTIBOOT_MMAP, layout::MULTIBOOT_END),
            (
                layout::BOOT_PARAMS,
                layout::BOOT_PARAMS + layout::BOOT_PARAMS_SIZE,
            ),
            (
                layout::SETUP_DATA,
                layout::SETUP_DATA + layout::SETUP_DATA_SIZE,
            ),
            (layout::STACK_BOTTOM, layout::STACK_TOP),
            (layout::CMDLINE, layout::CMDLINE + layout::CMDLINE_CAPACITY),
        ];
        for pair in blocks.windows(2) {
            assert!(pair[0].0 < pair[0].1);
            assert!(pair[0].1 <= pair[1].0, "{pair:x?} overlap");
        }
        assert_eq!(blocks[0].0, layout::AREA_START);
        assert_eq!(blocks[blocks.len() - 1].1, layout::AREA_END);
    }

    #[test]
    fn pc_memory_map_has_the_standard_holes() {
        let map = pc_memory_map(64 << 20);
        let spans: Vec<_> = map.iter().map(|r| (r.start, r.len, r.kind)).collect();
        assert_eq!(
            spans,
            [
                (0, 0x9_FC00, RegionKind::Usable),
                (0x9_FC00, 0x400, RegionKind::Reserved),
                (0xF_0000, 0x1_0000, RegionKind::Reserved),
                (0x10_0000, (64 << 20) - 0x10_0000, RegionKind::Usable),
            ]
        );
    }

    #[test]
    fn boot_state_is_flat_protected_mode_with_interrupts_off() {
        let s = boot_cpu_state(BootArea::DEFAULT);
        assert_eq!(s.cr0, cr0::PE | cr0::ET);
        assert_eq!(s.eflags, 0x2);
        assert_eq!(s.cs, Segment::flat_code32(0x10));
        for seg in [s.ds, s.es, s.ss, s.fs, s.gs] {
            assert_eq!(seg, Segment::flat_data32(0x18));
        }
        assert_eq!(s.gdtr.base, layout::GDT as u32);
        assert_eq!(s.gdtr.limit, 0x1F);
        assert_eq!(s.idtr.limit, 0);
        assert_eq!(s.tr.typ, 0xB);
        assert!(s.tr.present && !s.tr.s);
        assert_eq!(s.tr.limit, 0x67);
        assert!(!s.ldtr.present);
    }

    #[test]
    fn gdt_descriptors_decode_to_the_entry_segment_caches() {
        let mut mem = GuestMemory::new(MIN_RAM + 0xF000).unwrap();
        write_boot_gdt(&mut mem, BootArea::DEFAULT).unwrap();
        for (sel, cache) in [
            (BOOT_CS, Segment::flat_code32(BOOT_CS)),
            (BOOT_DS, Segment::flat_data32(BOOT_DS)),
        ] {
            let lo = mem.read_u32(layout::GDT + u64::from(sel)).unwrap();
            let hi = mem.read_u32(layout::GDT + u64::from(sel) + 4).unwrap();
            let base = (lo >> 16) | ((hi & 0xFF) << 16) | (hi & 0xFF00_0000);
            let raw_limit = (lo & 0xFFFF) | (hi & 0xF_0000);
            let g = hi & (1 << 23) != 0;
            let limit = if g {
                (raw_limit << 12) | 0xFFF
            } else {
                raw_limit
            };
            assert_eq!(base, cache.base);
            assert_eq!(limit, cache.limit);
            assert_eq!(((hi >> 8) & 0xF) as u8, cache.typ);
            assert_eq!(hi & (1 << 12) != 0, cache.s);
            assert_eq!(hi & (1 << 15) != 0, cache.present);
            assert_eq!(hi & (1 << 22) != 0, cache.db);
        }
        assert_eq!(mem.read_u32(layout::GDT).unwrap(), 0);
        assert_eq!(mem.read_u32(layout::GDT + 8).unwrap(), 0);
    }

    #[test]
    fn unknown_images_are_refused() {
        let mut mem = GuestMemory::new(4 << 20).unwrap();
        let junk = vec![0x90u8; 4096];
        assert!(matches!(
            load(&mut mem, &junk, None, ""),
            Err(LoadError::UnknownFormat)
        ));
        assert!(matches!(
            load(&mut mem, &[], None, ""),
            Err(LoadError::UnknownFormat)
        ));
    }

    #[test]
    fn tiny_ram_is_refused() {
        let mem = GuestMemory::new(0x8_0000).unwrap();
        assert!(matches!(
            check_ram(&mem),
            Err(LoadError::RamTooSmall { .. })
        ));
    }
}
