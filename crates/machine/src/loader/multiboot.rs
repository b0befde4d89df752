//! Multiboot version 1: ELF32 kernels and the a.out kludge.
//!
//! The kernel's segments go to their physical addresses, anywhere in usable
//! RAM (below 1 MiB too); the initrd becomes the single module, page
//! aligned right after the kernel (at or above 1 MiB); the information
//! structure, module list, strings, memory map, boot GDT, stack and command
//! line live in the boot area (see [`super`]), which moves out of the
//! kernel's way when the kernel covers its default place.

use object::elf::{FileHeader32, ELFCLASS32, ELFCLASS64, ELFDATA2LSB, ELFMAG, EM_386, ET_EXEC};
use object::read::elf::{FileHeader, ProgramHeader};
use object::Endianness;

use super::{
    align_up, boot_cpu_state, check_ram, check_usable, layout, le_u32, pc_memory_map,
    place_boot_area, write_boot_gdt, write_cmdline, BootArea, KernelFormat, LoadError,
    LoadedKernel, HIGH_MEMORY_START, LOW_MEMORY_END,
};
use crate::memory::GuestMemory;

/// Magic number at the start of a multiboot header.
pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// Magic number the loader leaves in EAX for the kernel.
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// The header must lie within this many bytes from the start of the image.
pub const SEARCH_LIMIT: usize = 8192;
/// The header is 32-bit aligned.
const HEADER_ALIGN: usize = 4;
/// Name reported in the information structure.
const BOOT_LOADER_NAME: &str = "popek";
/// String attached to the initrd module.
const MODULE_STRING: &str = "initrd";
/// Module alignment when the kernel asks for page-aligned modules.
const PAGE_SIZE: u64 = 4096;

/// Multiboot header flags.
pub mod header_flags {
    /// Modules must be page aligned.
    pub const PAGE_ALIGN_MODULES: u32 = 1 << 0;
    /// mem_lower/mem_upper (and the memory map) must be provided.
    pub const MEMORY_INFO: u32 = 1 << 1;
    /// A video mode table must be provided.
    pub const VIDEO_MODE: u32 = 1 << 2;
    /// The a.out kludge address fields are valid and take precedence.
    pub const AOUT_KLUDGE: u32 = 1 << 16;
    /// Bits a loader must refuse the kernel for if it does not support them.
    pub const REQUIRED_MASK: u32 = 0xFFFF;
    /// The required bits this loader honours.
    pub const SUPPORTED_REQUIRED: u32 = PAGE_ALIGN_MODULES | MEMORY_INFO;
}

/// Byte offsets of multiboot header fields, relative to the magic.
mod hdr {
    pub const FLAGS: usize = 4;
    pub const CHECKSUM: usize = 8;
    pub const HEADER_ADDR: usize = 12;
    pub const LOAD_ADDR: usize = 16;
    pub const LOAD_END_ADDR: usize = 20;
    pub const BSS_END_ADDR: usize = 24;
    pub const ENTRY_ADDR: usize = 28;
    /// Length of magic, flags and checksum.
    pub const BASE_LEN: usize = 12;
    /// Length including the a.out kludge fields.
    pub const AOUT_LEN: usize = 32;
}

/// Multiboot information structure: flag bits and field offsets.
pub mod info {
    /// mem_lower and mem_upper are valid.
    pub const FLAG_MEMORY: u32 = 1 << 0;
    /// cmdline is valid.
    pub const FLAG_CMDLINE: u32 = 1 << 2;
    /// mods_count and mods_addr are valid.
    pub const FLAG_MODS: u32 = 1 << 3;
    /// mmap_length and mmap_addr are valid.
    pub const FLAG_MMAP: u32 = 1 << 6;
    /// boot_loader_name is valid.
    pub const FLAG_LOADER_NAME: u32 = 1 << 9;

    /// Offset of flags.
    pub const FLAGS: usize = 0;
    /// Offset of mem_lower (KiB below 1 MiB).
    pub const MEM_LOWER: usize = 4;
    /// Offset of mem_upper (KiB from 1 MiB).
    pub const MEM_UPPER: usize = 8;
    /// Offset of cmdline.
    pub const CMDLINE: usize = 16;
    /// Offset of mods_count.
    pub const MODS_COUNT: usize = 20;
    /// Offset of mods_addr.
    pub const MODS_ADDR: usize = 24;
    /// Offset of mmap_length.
    pub const MMAP_LENGTH: usize = 44;
    /// Offset of mmap_addr.
    pub const MMAP_ADDR: usize = 48;
    /// Offset of boot_loader_name.
    pub const BOOT_LOADER_NAME: usize = 64;
    /// Size of the structure including the framebuffer fields (left zero).
    pub const SIZE: usize = 116;

    /// Size of one module list entry (mod_start, mod_end, string, reserved).
    pub const MODULE_SIZE: usize = 16;
    /// Size of one memory map entry including its leading size field.
    pub const MMAP_ENTRY_SIZE: usize = 24;
}

/// Result of searching an image for a multiboot header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A header with a valid checksum at this file offset.
    Found(usize),
    /// Only a magic with a bad checksum (the first one) was found.
    BadChecksum {
        /// File offset of the magic.
        offset: usize,
        /// magic + flags + checksum.
        sum: u32,
    },
    /// No magic in the search window.
    Absent,
}

/// Searches the first 8 KiB of `image` for a multiboot header.
pub fn probe(image: &[u8]) -> Probe {
    let mut bad = None;
    let last = image.len().min(SEARCH_LIMIT).saturating_sub(hdr::BASE_LEN);
    for offset in (0..=last).step_by(HEADER_ALIGN) {
        let (Some(magic), Some(flags), Some(checksum)) = (
            le_u32(image, offset),
            le_u32(image, offset + hdr::FLAGS),
            le_u32(image, offset + hdr::CHECKSUM),
        ) else {
            break;
        };
        if magic != HEADER_MAGIC {
            continue;
        }
        let sum = magic.wrapping_add(flags).wrapping_add(checksum);
        if sum == 0 {
            return Probe::Found(offset);
        }
        bad.get_or_insert(Probe::BadChecksum { offset, sum });
    }
    bad.unwrap_or(Probe::Absent)
}

/// Explains refused required header flags in words, for error messages.
pub fn describe_required_flags(flags: u32) -> String {
    (0..16)
        .filter(|bit| flags & (1 << bit) != 0)
        .map(|bit| match 1 << bit {
            header_flags::VIDEO_MODE => {
                "bit 2, a video mode table (popek has no display; rebuild the kernel without \
                 the video mode request)"
                    .to_owned()
            }
            _ => format!("bit {bit}, a feature unknown to popek"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// One range of the kernel image to place in RAM.
struct Piece<'a> {
    /// Physical load address.
    addr: u64,
    /// Bytes from the file.
    data: &'a [u8],
    /// Size in memory; the part past `data` is bss and gets zeroed.
    mem_len: u64,
}

/// The kernel as the loader will place it.
struct KernelImage<'a> {
    pieces: Vec<Piece<'a>>,
    entry: u32,
    /// "ELF" or "a.out kludge", for the summary.
    kind: &'static str,
}

/// Loads a multiboot kernel, its initrd as a module, and the information structure.
pub fn load(
    mem: &mut GuestMemory,
    image: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
) -> Result<LoadedKernel, LoadError> {
    check_ram(mem)?;
    let offset = match probe(image) {
        Probe::Found(offset) => offset,
        Probe::BadChecksum { offset, sum } => {
            return Err(LoadError::BadMultibootChecksum { offset, sum })
        }
        Probe::Absent => {
            return Err(LoadError::WrongMagic {
                what: "first word of the image (no multiboot header in its first 8 KiB)",
                expected: HEADER_MAGIC,
                found: le_u32(image, 0).unwrap_or(0),
            })
        }
    };
    let flags = le_u32(image, offset + hdr::FLAGS).unwrap_or(0);
    let refused = flags & header_flags::REQUIRED_MASK & !header_flags::SUPPORTED_REQUIRED;
    if refused != 0 {
        return Err(LoadError::UnsupportedMultibootFlags { flags: refused });
    }
    let optional_unknown = flags & !header_flags::REQUIRED_MASK & !header_flags::AOUT_KLUDGE;
    if optional_unknown != 0 {
        tracing::info!("ignoring optional multiboot header flags {optional_unknown:#x}");
    }

    let kernel = if flags & header_flags::AOUT_KLUDGE != 0 {
        parse_aout(image, offset)?
    } else {
        parse_elf(image)?
    };

    let ram = mem.size();
    for (i, piece) in kernel.pieces.iter().enumerate() {
        check_usable(
            &format!("kernel segment {i}"),
            piece.addr,
            piece.mem_len,
            ram,
        )?;
    }
    let kernel_end = kernel
        .pieces
        .iter()
        .map(|p| p.addr + p.mem_len)
        .max()
        .unwrap_or(HIGH_MEMORY_START);

    // Modules always start on a page boundary, which also satisfies
    // PAGE_ALIGN_MODULES; at least 1 MiB keeps them off the BIOS holes.
    let module = match initrd {
        Some(bytes) if !bytes.is_empty() => {
            let start = align_up(kernel_end.max(HIGH_MEMORY_START), PAGE_SIZE);
            let end = start + bytes.len() as u64;
            if end > ram {
                return Err(LoadError::InitrdDoesNotFit {
                    size: bytes.len() as u64,
                    reason: format!(
                        "after the kernel it would occupy {start:#x}..{end:#x}, but RAM ends at {ram:#x}"
                    ),
                });
            }
            Some((start, bytes))
        }
        _ => None,
    };

    let mut busy: Vec<(u64, u64)> = kernel
        .pieces
        .iter()
        .map(|p| (p.addr, p.addr + p.mem_len))
        .collect();
    if let Some((start, bytes)) = module {
        busy.push((start, start + bytes.len() as u64));
    }
    let area_len = BootArea::len_with_cmdline(cmdline.len() as u64);
    let area = place_boot_area(ram, &busy, area_len)?;
    write_cmdline(mem, area, cmdline)?;
    write_boot_gdt(mem, area)?;
    let mut summary = vec![format!(
        "multiboot kernel ({}), header at file offset {offset:#x}, flags {flags:#x}",
        kernel.kind
    )];
    if area != BootArea::DEFAULT {
        summary.push(format!(
            "boot area moved out of the kernel's way to {:#x}..{:#x}",
            area.base(),
            area.base() + area_len
        ));
    }
    for piece in &kernel.pieces {
        mem.write(piece.addr, piece.data)?;
        let file_len = piece.data.len() as u64;
        mem.slice_mut(piece.addr + file_len, (piece.mem_len - file_len) as usize)?
            .fill(0);
        summary.push(format!(
            "kernel segment {:#x}..{:#x} ({:#x} bytes from the file, {:#x} bss)",
            piece.addr,
            piece.addr + piece.mem_len,
            file_len,
            piece.mem_len - file_len
        ));
    }
    if let Some((start, bytes)) = module {
        mem.write(start, bytes)?;
        summary.push(format!(
            "module \"{MODULE_STRING}\" {start:#x}..{:#x}",
            start + bytes.len() as u64
        ));
    }
    write_info(
        mem,
        area,
        module.map(|(start, bytes)| (start, bytes.len() as u64)),
    )?;
    summary.push(format!(
        "multiboot info at {:#x}, memory map at {:#x}, command line at {:#x} ({} bytes)",
        area.of(layout::MULTIBOOT_INFO),
        area.of(layout::MULTIBOOT_MMAP),
        area.of(layout::CMDLINE),
        cmdline.len()
    ));

    let mut entry = boot_cpu_state(area);
    entry.eax = BOOTLOADER_MAGIC;
    entry.ebx = area.of(layout::MULTIBOOT_INFO) as u32;
    entry.eip = kernel.entry;
    summary.push(format!(
        "entry EIP={:#x} EAX={:#x} EBX={:#x}",
        entry.eip, entry.eax, entry.ebx
    ));
    Ok(LoadedKernel {
        format: KernelFormat::Multiboot,
        entry,
        summary,
        cmdline_addr: area.of(layout::CMDLINE),
    })
}

/// Builds the information structure and what it points to in `area`.
fn write_info(
    mem: &mut GuestMemory,
    area: BootArea,
    module: Option<(u64, u64)>,
) -> Result<(), LoadError> {
    let ram = mem.size();
    let block = (layout::MULTIBOOT_END - layout::MULTIBOOT_INFO) as usize;
    mem.slice_mut(area.of(layout::MULTIBOOT_INFO), block)?
        .fill(0);

    let loader_name = area.of(layout::MULTIBOOT_STRINGS);
    let module_string = loader_name + BOOT_LOADER_NAME.len() as u64 + 1;
    mem.write(loader_name, BOOT_LOADER_NAME.as_bytes())?;
    mem.write(module_string, MODULE_STRING.as_bytes())?;

    let mut mods_count = 0;
    if let Some((start, len)) = module {
        let mut entry = [0u8; info::MODULE_SIZE];
        put_u32(&mut entry, 0, start as u32);
        put_u32(&mut entry, 4, (start + len) as u32);
        put_u32(&mut entry, 8, module_string as u32);
        mem.write(area.of(layout::MULTIBOOT_MODULES), &entry)?;
        mods_count = 1;
    }

    let mut mmap = Vec::new();
    for region in pc_memory_map(ram) {
        // The size field counts the bytes after itself.
        mmap.extend_from_slice(&((info::MMAP_ENTRY_SIZE - 4) as u32).to_le_bytes());
        mmap.extend_from_slice(&region.start.to_le_bytes());
        mmap.extend_from_slice(&region.len.to_le_bytes());
        mmap.extend_from_slice(&region.kind.e820_type().to_le_bytes());
    }
    debug_assert!(layout::MULTIBOOT_MMAP + mmap.len() as u64 <= layout::MULTIBOOT_END);
    mem.write(area.of(layout::MULTIBOOT_MMAP), &mmap)?;

    let mut mbi = [0u8; info::SIZE];
    put_u32(
        &mut mbi,
        info::FLAGS,
        info::FLAG_MEMORY
            | info::FLAG_CMDLINE
            | info::FLAG_MODS
            | info::FLAG_MMAP
            | info::FLAG_LOADER_NAME,
    );
    put_u32(&mut mbi, info::MEM_LOWER, (LOW_MEMORY_END / 1024) as u32);
    put_u32(
        &mut mbi,
        info::MEM_UPPER,
        ((ram - HIGH_MEMORY_START) / 1024) as u32,
    );
    put_u32(&mut mbi, info::CMDLINE, area.of(layout::CMDLINE) as u32);
    put_u32(&mut mbi, info::MODS_COUNT, mods_count);
    put_u32(
        &mut mbi,
        info::MODS_ADDR,
        area.of(layout::MULTIBOOT_MODULES) as u32,
    );
    put_u32(&mut mbi, info::MMAP_LENGTH, mmap.len() as u32);
    put_u32(
        &mut mbi,
        info::MMAP_ADDR,
        area.of(layout::MULTIBOOT_MMAP) as u32,
    );
    put_u32(&mut mbi, info::BOOT_LOADER_NAME, loader_name as u32);
    mem.write(area.of(layout::MULTIBOOT_INFO), &mbi)?;
    Ok(())
}

/// Stores a little-endian u32 into a structure being built.
fn put_u32(buf: &mut [u8], off: usize, value: u32) {
    buf[off..off + 4].copy_from_slice(&value.to_le_bytes());
}

/// Reads the kernel's layout from the a.out kludge fields of the header at `offset`.
fn parse_aout(image: &[u8], offset: usize) -> Result<KernelImage<'_>, LoadError> {
    let field = |off: usize| {
        le_u32(image, offset + off).ok_or(LoadError::Truncated {
            what: "multiboot header with a.out kludge fields",
            needed: (offset + hdr::AOUT_LEN) as u64,
            actual: image.len() as u64,
        })
    };
    let header_addr = u64::from(field(hdr::HEADER_ADDR)?);
    let load_addr = u64::from(field(hdr::LOAD_ADDR)?);
    let load_end_addr = u64::from(field(hdr::LOAD_END_ADDR)?);
    let bss_end_addr = u64::from(field(hdr::BSS_END_ADDR)?);
    let entry = field(hdr::ENTRY_ADDR)?;

    if load_addr > header_addr {
        return Err(LoadError::BadAoutKludge(format!(
            "load_addr {load_addr:#x} is above header_addr {header_addr:#x}"
        )));
    }
    // The header's own address fixes where the file is in memory.
    let before_header = header_addr - load_addr;
    let Some(file_start) = (offset as u64).checked_sub(before_header) else {
        return Err(LoadError::BadAoutKludge(format!(
            "load_addr {load_addr:#x} is {before_header:#x} bytes before the header, \
             but the header is only {offset:#x} bytes into the file"
        )));
    };
    let file_len = image.len() as u64;
    let load_end = if load_end_addr == 0 {
        load_addr + (file_len - file_start)
    } else {
        load_end_addr
    };
    if load_end < load_addr {
        return Err(LoadError::BadAoutKludge(format!(
            "load_end_addr {load_end:#x} is below load_addr {load_addr:#x}"
        )));
    }
    let load_len = load_end - load_addr;
    if file_start + load_len > file_len {
        return Err(LoadError::Truncated {
            what: "a.out kludge load range",
            needed: file_start + load_len,
            actual: file_len,
        });
    }
    let bss_end = if bss_end_addr == 0 {
        load_end
    } else {
        bss_end_addr
    };
    if bss_end < load_end {
        return Err(LoadError::BadAoutKludge(format!(
            "bss_end_addr {bss_end:#x} is below the end of the loaded data {load_end:#x}"
        )));
    }
    let data = &image[file_start as usize..(file_start + load_len) as usize];
    Ok(KernelImage {
        pieces: vec![Piece {
            addr: load_addr,
            data,
            mem_len: bss_end - load_addr,
        }],
        entry,
        kind: "a.out kludge",
    })
}

/// Reads the PT_LOAD segments and entry point of an ELF32 i386 executable.
fn parse_elf(image: &[u8]) -> Result<KernelImage<'_>, LoadError> {
    let not_elf = |why: String| LoadError::NotElf32X86(why);
    if !image.starts_with(&ELFMAG) {
        return Err(not_elf("no ELF magic at the start of the file".into()));
    }
    let ehdr_len = std::mem::size_of::<FileHeader32<Endianness>>();
    if image.len() < ehdr_len {
        return Err(LoadError::Truncated {
            what: "ELF header",
            needed: ehdr_len as u64,
            actual: image.len() as u64,
        });
    }
    const EI_CLASS: usize = 4;
    const EI_DATA: usize = 5;
    match image[EI_CLASS] {
        ELFCLASS32 => {}
        ELFCLASS64 => return Err(not_elf("it is a 64-bit ELF file".into())),
        class => return Err(not_elf(format!("unknown ELF class {class}"))),
    }
    if image[EI_DATA] != ELFDATA2LSB {
        return Err(not_elf("it is not little-endian".into()));
    }
    let ehdr = FileHeader32::<Endianness>::parse(image).map_err(|e| not_elf(e.to_string()))?;
    let endian = ehdr.endian().map_err(|e| not_elf(e.to_string()))?;
    let machine = ehdr.e_machine(endian);
    if machine != EM_386 {
        return Err(not_elf(format!(
            "its machine is {machine}, not i386 ({EM_386})"
        )));
    }
    let typ = ehdr.e_type(endian);
    if typ != ET_EXEC {
        return Err(not_elf(format!(
            "its type is {typ}, not an executable (ET_EXEC = {ET_EXEC})"
        )));
    }
    let phdrs = ehdr
        .program_headers(endian, image)
        .map_err(|e| not_elf(format!("bad program headers: {e}")))?;
    let e_entry = ehdr.e_entry(endian);
    let mut entry = e_entry;
    let mut pieces = Vec::new();
    for (i, ph) in phdrs.iter().enumerate() {
        if ph.p_type(endian) != object::elf::PT_LOAD || ph.p_memsz(endian) == 0 {
            continue;
        }
        let (paddr, vaddr) = (ph.p_paddr(endian), ph.p_vaddr(endian));
        let (filesz, memsz) = (ph.p_filesz(endian), ph.p_memsz(endian));
        if filesz > memsz {
            return Err(not_elf(format!(
                "segment {i} has p_filesz {filesz:#x} larger than p_memsz {memsz:#x}"
            )));
        }
        let data = ph.data(endian, image).map_err(|()| LoadError::Truncated {
            what: "ELF segment data",
            needed: u64::from(ph.p_offset(endian)) + u64::from(filesz),
            actual: image.len() as u64,
        })?;
        // Paging is off at entry, so a higher-half kernel's virtual e_entry
        // is translated through its segment to a physical one, as GRUB does.
        if (vaddr..vaddr.saturating_add(memsz)).contains(&e_entry) {
            entry = e_entry - vaddr + paddr;
        }
        pieces.push(Piece {
            addr: u64::from(paddr),
            data,
            mem_len: u64::from(memsz),
        });
    }
    if pieces.is_empty() {
        return Err(not_elf("it has no loadable segments".into()));
    }
    Ok(KernelImage {
        pieces,
        entry,
        kind: "ELF",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: u64 = 16 << 20;

    /// One PT_LOAD segment for the synthetic ELF builder.
    struct Seg {
        paddr: u32,
        vaddr: u32,
        data: Vec<u8>,
        memsz: u32,
    }

    /// A multiboot header with a valid checksum (base fields only).
    fn mb_header(flags: u32) -> Vec<u8> {
        let mut h = Vec::new();
        for word in [
            HEADER_MAGIC,
            flags,
            0u32.wrapping_sub(HEADER_MAGIC.wrapping_add(flags)),
        ] {
            h.extend_from_slice(&word.to_le_bytes());
        }
        h
    }

    fn put(buf: &mut [u8], off: usize, bytes: &[u8]) {
        buf[off..off + bytes.len()].copy_from_slice(bytes);
    }

    /// An ELF32 file: header, program headers at 52, the multiboot header
    /// at 0x200, segment i's data at 0x1000 * (i + 1).
    fn elf(class: u8, machine: u16, e_type: u16, entry: u32, segs: &[Seg], mb: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 0x1000 * (segs.len() + 1)];
        put(&mut f, 0, &ELFMAG);
        f[4] = class;
        f[5] = ELFDATA2LSB;
        f[6] = 1; // EV_CURRENT
        put(&mut f, 16, &e_type.to_le_bytes());
        put(&mut f, 18, &machine.to_le_bytes());
        put(&mut f, 20, &1u32.to_le_bytes());
        put(&mut f, 24, &entry.to_le_bytes());
        put(&mut f, 28, &52u32.to_le_bytes()); // e_phoff
        put(&mut f, 40, &52u16.to_le_bytes()); // e_ehsize
        put(&mut f, 42, &32u16.to_le_bytes()); // e_phentsize
        put(&mut f, 44, &(segs.len() as u16).to_le_bytes());
        put(&mut f, 46, &40u16.to_le_bytes()); // e_shentsize
        for (i, s) in segs.iter().enumerate() {
            let ph = 52 + 32 * i;
            let off = 0x1000 * (i + 1);
            put(&mut f, ph, &object::elf::PT_LOAD.to_le_bytes());
            put(&mut f, ph + 4, &(off as u32).to_le_bytes());
            put(&mut f, ph + 8, &s.vaddr.to_le_bytes());
            put(&mut f, ph + 12, &s.paddr.to_le_bytes());
            put(&mut f, ph + 16, &(s.data.len() as u32).to_le_bytes());
            put(&mut f, ph + 20, &s.memsz.to_le_bytes());
            put(&mut f, ph + 24, &5u32.to_le_bytes());
            put(&mut f, ph + 28, &0x1000u32.to_le_bytes());
            put(&mut f, off, &s.data);
        }
        put(&mut f, 0x200, mb);
        f
    }

    fn kernel_elf(flags: u32, segs: &[Seg]) -> Vec<u8> {
        elf(
            ELFCLASS32,
            EM_386,
            ET_EXEC,
            0x10_0010,
            segs,
            &mb_header(flags),
        )
    }

    fn text_at(paddr: u32) -> Seg {
        Seg {
            paddr,
            vaddr: paddr,
            data: vec![0xAB; 0x40],
            memsz: 0x40,
        }
    }

    fn ram() -> GuestMemory {
        GuestMemory::new(RAM).unwrap()
    }

    fn c_string(mem: &GuestMemory, addr: u32) -> String {
        let bytes = mem.slice(u64::from(addr), 256).unwrap();
        let end = bytes.iter().position(|&b| b == 0).unwrap();
        String::from_utf8(bytes[..end].to_vec()).unwrap()
    }

    fn mbi(mem: &GuestMemory, off: usize) -> u32 {
        mem.read_u32(layout::MULTIBOOT_INFO + off as u64).unwrap()
    }

    #[test]
    fn elf_kernel_is_loaded_with_info_structure() {
        let text: Vec<u8> = (0..0x100u32).map(|i| i as u8).collect();
        let data = vec![0x5A; 0x20];
        let segs = [
            Seg {
                paddr: 0x10_0000,
                vaddr: 0xC010_0000,
                data: text.clone(),
                memsz: 0x100,
            },
            Seg {
                paddr: 0x10_2000,
                vaddr: 0xC010_2000,
                data: data.clone(),
                memsz: 0x3000,
            },
        ];
        let image = elf(
            ELFCLASS32,
            EM_386,
            ET_EXEC,
            0xC010_0010,
            &segs,
            &mb_header(3),
        );
        let initrd: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let mut mem = ram();
        // Garbage where the bss goes, to see it zeroed.
        mem.slice_mut(0x10_2000, 0x3000).unwrap().fill(0xEE);

        let loaded =
            super::super::load(&mut mem, &image, Some(&initrd), "console=ttyS0 x").unwrap();
        assert_eq!(loaded.format, KernelFormat::Multiboot);
        assert!(!loaded.summary.is_empty());
        let s = &loaded.entry;
        assert_eq!(s.eax, BOOTLOADER_MAGIC);
        assert_eq!(s.ebx, layout::MULTIBOOT_INFO as u32);
        assert_eq!(s.eip, 0x10_0010, "virtual e_entry translated to physical");
        assert_eq!(s.cs.selector, 0x10);

        assert_eq!(mem.slice(0x10_0000, 0x100).unwrap(), &text[..]);
        assert_eq!(mem.slice(0x10_2000, 0x20).unwrap(), &data[..]);
        assert!(mem
            .slice(0x10_2020, 0x3000 - 0x20)
            .unwrap()
            .iter()
            .all(|&b| b == 0));

        let flags = mbi(&mem, info::FLAGS);
        for bit in [
            info::FLAG_MEMORY,
            info::FLAG_CMDLINE,
            info::FLAG_MODS,
            info::FLAG_MMAP,
            info::FLAG_LOADER_NAME,
        ] {
            assert_ne!(flags & bit, 0, "info flag {bit:#x}");
        }
        assert_eq!(mbi(&mem, info::MEM_LOWER), 639);
        assert_eq!(
            mbi(&mem, info::MEM_UPPER),
            ((RAM - 0x10_0000) / 1024) as u32
        );
        assert_eq!(c_string(&mem, mbi(&mem, info::CMDLINE)), "console=ttyS0 x");
        assert_eq!(c_string(&mem, mbi(&mem, info::BOOT_LOADER_NAME)), "popek");

        assert_eq!(mbi(&mem, info::MODS_COUNT), 1);
        let mods = u64::from(mbi(&mem, info::MODS_ADDR));
        let start = mem.read_u32(mods).unwrap();
        let end = mem.read_u32(mods + 4).unwrap();
        assert_eq!(start % 4096, 0);
        assert!(start >= 0x10_5000, "module after the kernel's bss");
        assert_eq!(end - start, initrd.len() as u32);
        assert_eq!(
            mem.slice(u64::from(start), initrd.len()).unwrap(),
            &initrd[..]
        );
        assert_eq!(c_string(&mem, mem.read_u32(mods + 8).unwrap()), "initrd");

        let mmap_len = mbi(&mem, info::MMAP_LENGTH) as usize;
        let mmap_addr = u64::from(mbi(&mem, info::MMAP_ADDR));
        let raw = mem.slice(mmap_addr, mmap_len).unwrap();
        let entries: Vec<(u32, u64, u64, u32)> = raw
            .chunks(info::MMAP_ENTRY_SIZE)
            .map(|e| {
                (
                    u32::from_le_bytes(e[0..4].try_into().unwrap()),
                    u64::from_le_bytes(e[4..12].try_into().unwrap()),
                    u64::from_le_bytes(e[12..20].try_into().unwrap()),
                    u32::from_le_bytes(e[20..24].try_into().unwrap()),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                (20, 0, 0x9_FC00, 1),
                (20, 0x9_FC00, 0x400, 2),
                (20, 0xF_0000, 0x1_0000, 2),
                (20, 0x10_0000, RAM - 0x10_0000, 1),
            ]
        );
    }

    #[test]
    fn without_initrd_there_are_no_modules() {
        let mut mem = ram();
        let image = kernel_elf(0, &[text_at(0x10_0000)]);
        let loaded = load(&mut mem, &image, None, "").unwrap();
        assert_eq!(loaded.entry.eip, 0x10_0010);
        assert_eq!(mbi(&mem, info::MODS_COUNT), 0);
        assert_eq!(c_string(&mem, mbi(&mem, info::CMDLINE)), "");
    }

    #[test]
    fn aout_kludge_kernel_loads_by_header_addresses() {
        // File: 0x40 bytes of code, the header at file offset 0x40, more code.
        let mut image = vec![0xC3u8; 0x200];
        let flags = header_flags::AOUT_KLUDGE | header_flags::PAGE_ALIGN_MODULES;
        let mut h = mb_header(flags);
        for word in [0x20_0040u32, 0x20_0000, 0x20_0180, 0x20_3000, 0x20_0100] {
            h.extend_from_slice(&word.to_le_bytes());
        }
        image[0x40..0x60].copy_from_slice(&h);
        image[0x170..0x180].fill(0x11);
        image[0x180..].fill(0x77); // past load_end: must not be loaded
        let mut mem = ram();
        mem.slice_mut(0x20_0180, 0x100).unwrap().fill(0xEE);

        let loaded = super::super::load(&mut mem, &image, Some(b"abc"), "k").unwrap();
        assert_eq!(loaded.entry.eip, 0x20_0100);
        assert_eq!(loaded.entry.eax, BOOTLOADER_MAGIC);
        assert_eq!(mem.slice(0x20_0000, 0x180).unwrap(), &image[..0x180]);
        assert!(mem
            .slice(0x20_0180, 0x3000 - 0x180)
            .unwrap()
            .iter()
            .all(|&b| b == 0));
        let mods = u64::from(mbi(&mem, info::MODS_ADDR));
        assert_eq!(mem.read_u32(mods).unwrap(), 0x20_3000);
        assert_eq!(mem.slice(0x20_3000, 3).unwrap(), b"abc");
    }

    #[test]
    fn aout_kludge_with_load_addr_above_header_is_refused() {
        let mut image = vec![0u8; 0x100];
        let mut h = mb_header(header_flags::AOUT_KLUDGE);
        for word in [0x10_0000u32, 0x10_1000, 0, 0, 0x10_1000] {
            h.extend_from_slice(&word.to_le_bytes());
        }
        image[..0x20].copy_from_slice(&h);
        assert!(matches!(
            load(&mut ram(), &image, None, ""),
            Err(LoadError::BadAoutKludge(_))
        ));
    }

    #[test]
    fn aout_kludge_past_the_end_of_file_is_truncated() {
        let mut image = vec![0u8; 0x100];
        let mut h = mb_header(header_flags::AOUT_KLUDGE);
        for word in [0x10_0000u32, 0x10_0000, 0x10_1000, 0, 0x10_0000] {
            h.extend_from_slice(&word.to_le_bytes());
        }
        image[..0x20].copy_from_slice(&h);
        assert!(matches!(
            load(&mut ram(), &image, None, ""),
            Err(LoadError::Truncated {
                needed: 0x1000,
                actual: 0x100,
                ..
            })
        ));
    }

    #[test]
    fn aout_header_cut_short_is_truncated() {
        let image = mb_header(header_flags::AOUT_KLUDGE);
        assert!(matches!(
            load(&mut ram(), &image, None, ""),
            Err(LoadError::Truncated { .. })
        ));
    }

    #[test]
    fn bad_checksum_is_refused() {
        let mut image = kernel_elf(0, &[text_at(0x10_0000)]);
        image[0x208] ^= 1;
        assert!(matches!(
            super::super::load(&mut ram(), &image, None, ""),
            Err(LoadError::BadMultibootChecksum { offset: 0x200, .. })
        ));
    }

    #[test]
    fn header_beyond_8k_is_not_found() {
        let mut image = vec![0u8; 0x3000];
        image[0x2000..0x200C].copy_from_slice(&mb_header(0));
        assert_eq!(probe(&image), Probe::Absent);
        assert!(matches!(
            load(&mut ram(), &image, None, ""),
            Err(LoadError::WrongMagic { .. })
        ));
    }

    #[test]
    fn video_mode_request_is_refused() {
        let image = kernel_elf(header_flags::VIDEO_MODE | 3, &[text_at(0x10_0000)]);
        let err = load(&mut ram(), &image, None, "").unwrap_err();
        assert!(matches!(
            err,
            LoadError::UnsupportedMultibootFlags { flags: 4 }
        ));
        assert!(err.to_string().contains("video mode"));
    }

    #[test]
    fn unknown_required_flags_are_refused() {
        let image = kernel_elf(1 << 5, &[text_at(0x10_0000)]);
        assert!(matches!(
            load(&mut ram(), &image, None, ""),
            Err(LoadError::UnsupportedMultibootFlags { flags: 0x20 })
        ));
    }

    #[test]
    fn unknown_optional_flags_are_ignored() {
        let image = kernel_elf(1 << 20, &[text_at(0x10_0000)]);
        assert!(load(&mut ram(), &image, None, "").is_ok());
    }

    #[test]
    fn sixty_four_bit_elf_is_refused() {
        let image = elf(
            ELFCLASS64,
            62,
            ET_EXEC,
            0,
            &[text_at(0x10_0000)],
            &mb_header(0),
        );
        assert!(matches!(
            load(&mut ram(), &image, None, ""),
            Err(LoadError::NotElf32X86(_))
        ));
    }

    #[test]
    fn non_x86_elf_is_refused() {
        let image = elf(
            ELFCLASS32,
            40,
            ET_EXEC,
            0,
            &[text_at(0x10_0000)],
            &mb_header(0),
        );
        let err = load(&mut ram(), &image, None, "").unwrap_err();
        assert!(matches!(err, LoadError::NotElf32X86(ref why) if why.contains("machine")));
    }

    #[test]
    fn shared_object_is_refused() {
        let image = elf(
            ELFCLASS32,
            EM_386,
            3,
            0,
            &[text_at(0x10_0000)],
            &mb_header(0),
        );
        assert!(matches!(
            load(&mut ram(), &image, None, ""),
            Err(LoadError::NotElf32X86(_))
        ));
    }

    #[test]
    fn non_elf_without_kludge_is_refused() {
        let mut image = vec![0u8; 0x100];
        image[..12].copy_from_slice(&mb_header(0));
        assert!(matches!(
            load(&mut ram(), &image, None, ""),
            Err(LoadError::NotElf32X86(_))
        ));
    }

    #[test]
    fn segment_data_past_end_of_file_is_truncated() {
        let mut image = kernel_elf(0, &[text_at(0x10_0000)]);
        image.truncate(0x1020);
        assert!(matches!(
            load(&mut ram(), &image, None, ""),
            Err(LoadError::Truncated { .. })
        ));
    }

    #[test]
    fn segment_outside_ram_is_refused() {
        let image = kernel_elf(0, &[text_at(RAM as u32 - 0x20)]);
        assert!(matches!(
            load(&mut ram(), &image, None, ""),
            Err(LoadError::OutsideRam { .. })
        ));
    }

    /// The information structure's field at `off`, wherever `loaded` put it.
    fn field(mem: &GuestMemory, loaded: &LoadedKernel, off: usize) -> u32 {
        mem.read_u32(u64::from(loaded.entry.ebx) + off as u64)
            .unwrap()
    }

    /// Everything the loader placed for the kernel: (start, end) of the
    /// boot GDT, the information structure, the module list, the strings,
    /// the memory map, the stack and the command line.
    fn boot_data(mem: &GuestMemory, loaded: &LoadedKernel, cmdline: &str) -> Vec<(u64, u64)> {
        let at = |off| u64::from(field(mem, loaded, off));
        let e = &loaded.entry;
        let gdt = u64::from(e.gdtr.base);
        let stack_top = u64::from(e.esp);
        vec![
            (gdt, gdt + u64::from(e.gdtr.limit) + 1),
            (u64::from(e.ebx), u64::from(e.ebx) + info::SIZE as u64),
            (at(info::MODS_ADDR), at(info::MODS_ADDR) + 16),
            (
                at(info::BOOT_LOADER_NAME),
                at(info::BOOT_LOADER_NAME) + 0x100,
            ),
            (
                at(info::MMAP_ADDR),
                at(info::MMAP_ADDR) + u64::from(field(mem, loaded, info::MMAP_LENGTH)),
            ),
            (
                stack_top - (layout::STACK_TOP - layout::STACK_BOTTOM),
                stack_top,
            ),
            (
                at(info::CMDLINE),
                at(info::CMDLINE) + cmdline.len() as u64 + 1,
            ),
        ]
    }

    /// Loads `image` with `initrd` and checks that the kernel's bytes are
    /// intact, the information structure is whole, and none of the
    /// loader's data overlaps the kernel, the module or the firmware's
    /// low memory (IVT, BDA, EBDA and up).
    fn load_clear_of_kernel(image: &[u8], initrd: Option<&[u8]>, ram: u64) -> LoadedKernel {
        let mut mem = GuestMemory::new(ram).unwrap();
        let cmdline = "low kernel";
        let loaded = super::super::load(&mut mem, image, initrd, cmdline).unwrap();
        let kernel = parse_kernel(image);
        let mut busy: Vec<(u64, u64)> = kernel
            .pieces
            .iter()
            .map(|p| (p.addr, p.addr + p.mem_len))
            .collect();
        for p in &kernel.pieces {
            assert_eq!(mem.slice(p.addr, p.data.len()).unwrap(), p.data);
        }
        if let Some(initrd) = initrd {
            let mods = u64::from(field(&mem, &loaded, info::MODS_ADDR));
            let start = u64::from(mem.read_u32(mods).unwrap());
            let end = u64::from(mem.read_u32(mods + 4).unwrap());
            assert_eq!(mem.slice(start, (end - start) as usize).unwrap(), initrd);
            busy.push((start, end));
        }
        busy.push((0, 0x1000));
        busy.push((LOW_MEMORY_END, HIGH_MEMORY_START));
        for (start, end) in boot_data(&mem, &loaded, cmdline) {
            for &(b, e) in &busy {
                assert!(
                    end <= b || start >= e,
                    "boot data {start:#x}..{end:#x} overlaps {b:#x}..{e:#x}"
                );
            }
        }
        assert_eq!(c_string(&mem, field(&mem, &loaded, info::CMDLINE)), cmdline);
        assert_eq!(
            c_string(&mem, field(&mem, &loaded, info::BOOT_LOADER_NAME)),
            "popek"
        );
        assert_eq!(field(&mem, &loaded, info::MEM_LOWER), 639);
        // The boot GDT the entry state names is the one in memory.
        let gdt = u64::from(loaded.entry.gdtr.base);
        assert_eq!(mem.read_u32(gdt + 0x14).unwrap(), 0x00CF_9B00);
        loaded
    }

    fn parse_kernel(image: &[u8]) -> KernelImage<'_> {
        let Probe::Found(offset) = probe(image) else {
            panic!("no header")
        };
        let flags = le_u32(image, offset + hdr::FLAGS).unwrap();
        if flags & header_flags::AOUT_KLUDGE != 0 {
            parse_aout(image, offset).unwrap()
        } else {
            parse_elf(image).unwrap()
        }
    }

    /// An a.out kludge image whose file is loaded whole at `load_addr`,
    /// with `bss` bytes after it and the header at file offset 0x40.
    fn aout_at(load_addr: u32, file_len: usize, bss: u32) -> Vec<u8> {
        let mut image = vec![0xC3u8; file_len];
        let mut h = mb_header(header_flags::AOUT_KLUDGE | header_flags::PAGE_ALIGN_MODULES);
        let end = load_addr + file_len as u32;
        for word in [
            load_addr + 0x40,
            load_addr,
            end,
            end + bss,
            load_addr + 0x100,
        ] {
            h.extend_from_slice(&word.to_le_bytes());
        }
        image[0x40..0x60].copy_from_slice(&h);
        image
    }

    #[test]
    fn a_kernel_at_the_default_area_moves_the_boot_data() {
        let image = kernel_elf(0, &[text_at(0x1_0000)]);
        let loaded = load_clear_of_kernel(&image, None, RAM);
        assert_ne!(u64::from(loaded.entry.ebx), layout::MULTIBOOT_INFO);
        assert!(loaded
            .summary
            .iter()
            .any(|l| l.contains("moved out of the kernel's way")));
    }

    #[test]
    fn an_elf_kernel_linked_at_0x8000_loads_with_its_module() {
        let seg = Seg {
            paddr: 0x8000,
            vaddr: 0x8000,
            data: vec![0xAB; 0x800],
            memsz: 0x1_8000,
        };
        let image = elf(ELFCLASS32, EM_386, ET_EXEC, 0x8000, &[seg], &mb_header(3));
        let loaded = load_clear_of_kernel(&image, Some(&[7u8; 5000]), RAM);
        assert_eq!(loaded.entry.eip, 0x8000);
        // The lowest free page after the kernel's bss.
        assert_eq!(loaded.entry.gdtr.base, 0x2_0000);
        assert!(u64::from(loaded.entry.esp) < LOW_MEMORY_END);
    }

    #[test]
    fn an_aout_kludge_kernel_linked_at_0x8000_loads() {
        let image = aout_at(0x8000, 0x2000, 0x4000);
        let loaded = load_clear_of_kernel(&image, Some(b"abc"), RAM);
        assert_eq!(loaded.entry.eip, 0x8100);
        assert!(loaded.entry.gdtr.base >= 0xE000);
    }

    #[test]
    fn a_kernel_filling_low_memory_gets_its_boot_data_above_it() {
        // From the end of page 0 to the EBDA: no room left below 1 MiB.
        let image = aout_at(0x1000, 0x1000, (LOW_MEMORY_END - 0x2000) as u32);
        let loaded = load_clear_of_kernel(&image, Some(&[1u8; 0x3000]), RAM);
        let gdt = u64::from(loaded.entry.gdtr.base);
        // Past the module, which follows the kernel at 1 MiB.
        assert_eq!(gdt, HIGH_MEMORY_START + 0x3000);
    }

    #[test]
    fn a_kernel_over_the_firmware_areas_is_refused() {
        for (at, why) in [
            (0x400, "BIOS data area"),
            (0x9_FC00, "EBDA"),
            (0xA_0000, "VGA window"),
            (0xF_0000, "BIOS ROM"),
            (0x9_F000, "straddling the EBDA"),
        ] {
            let seg = Seg {
                paddr: at,
                vaddr: at,
                data: vec![0xAB; 0x40],
                memsz: 0x1000,
            };
            let image = kernel_elf(0, &[seg]);
            let err = load(&mut ram(), &image, None, "").unwrap_err();
            assert!(
                matches!(err, LoadError::NotUsableRam { .. }),
                "{why}: {err}"
            );
        }
    }

    #[test]
    fn no_room_for_the_boot_data_is_refused() {
        // The kernel takes all usable RAM but page 0's tail.
        let ram_size = HIGH_MEMORY_START + 0x2_0000;
        let segs = [
            Seg {
                paddr: 0x1000,
                vaddr: 0x1000,
                data: vec![1; 0x10],
                memsz: (LOW_MEMORY_END - 0x1000) as u32,
            },
            Seg {
                paddr: HIGH_MEMORY_START as u32,
                vaddr: HIGH_MEMORY_START as u32,
                data: vec![1; 0x10],
                memsz: 0x1_F000,
            },
        ];
        let image = kernel_elf(0, &segs);
        let mut mem = GuestMemory::new(ram_size).unwrap();
        assert!(matches!(
            load(&mut mem, &image, None, ""),
            Err(LoadError::NoRoomForBootData { .. })
        ));
    }

    #[test]
    fn initrd_too_large_is_refused() {
        let image = kernel_elf(0, &[text_at(0x10_0000)]);
        let initrd = vec![0u8; RAM as usize];
        assert!(matches!(
            load(&mut ram(), &image, Some(&initrd), ""),
            Err(LoadError::InitrdDoesNotFit { .. })
        ));
    }

    #[test]
    fn overlong_command_line_is_refused() {
        let image = kernel_elf(0, &[text_at(0x10_0000)]);
        let cmdline = "x".repeat(layout::CMDLINE_CAPACITY as usize);
        assert!(matches!(
            load(&mut ram(), &image, None, &cmdline),
            Err(LoadError::CommandLineTooLong { .. })
        ));
    }
}
