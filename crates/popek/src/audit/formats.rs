//! Finding the 32-bit code in a kernel file: the executable sections of an
//! ELF, the (decompressed) protected-mode payload of a Linux bzImage, the
//! load range of a multiboot a.out-kludge image, or a flat binary.
//!
//! Only the extraction lives here; what to do with the bytes is
//! [`super::census`]'s business.

use std::fmt;
use std::io::Read;

use machine::loader::linux::{self, hdr};
use machine::loader::multiboot::{self, header_flags, Probe};
use object::elf::{
    FileHeader32, ELFCLASS32, ELFCLASS64, ELFMAG, EM_386, PF_X, PT_LOAD, SHF_EXECINSTR, SHT_NOBITS,
};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader, Sym};
use object::Endianness;

/// Where a flat binary is assumed to be loaded unless told otherwise: the
/// 1 MiB mark where multiboot and bzImage kernels start.
pub const DEFAULT_FLAT_BASE: u64 = 0x10_0000;

/// The largest decompressed kernel accepted: far above any real vmlinux,
/// low enough that a corrupt size field cannot exhaust memory.
const MAX_DECOMPRESSED: u64 = 1 << 30;

/// Setup header fields this module reads beyond those the loader names.
mod bz {
    /// u32: offset of the payload from the protected-mode code (2.08+).
    pub const PAYLOAD_OFFSET: usize = 0x248;
    /// u32: length of the payload (2.08+).
    pub const PAYLOAD_LENGTH: usize = 0x24C;
    /// Protocol 2.08 introduced the payload fields.
    pub const PAYLOAD_SINCE: u16 = 0x0208;
    /// setup_sects of 0 means 4, as in the loader.
    pub const DEFAULT_SETUP_SECTS: usize = 4;
    /// A setup sector.
    pub const SECTOR: usize = 512;
}

/// One range of code to sweep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeRange {
    /// Section name, or a description where there is none.
    pub name: String,
    /// Address of the first byte (the ELF's sh_addr/p_vaddr, or the base).
    pub address: u64,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Sorted addresses known to start an instruction (the ELF's symbols
    /// in this range), where the sweep resynchronises; often none.
    pub starts: Vec<u64>,
}

/// What was found in a file: how it was read, and its code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// How the file was understood, e.g. "bzImage (boot protocol 2.15), xz payload, ELF32 i386".
    pub format: String,
    /// The code ranges, in file order.
    pub ranges: Vec<CodeRange>,
}

/// Why a file's code could not be found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormatError {
    /// Not ELF, bzImage or multiboot, and not asked to be read as flat.
    Unknown,
    /// The file ends before something it announces.
    Truncated {
        /// What was cut off.
        what: &'static str,
        /// Bytes needed.
        needed: u64,
        /// Bytes there.
        actual: u64,
    },
    /// An ELF that is not 32-bit x86, or is malformed.
    BadElf(String),
    /// A bzImage whose setup header cannot be trusted.
    BadBzImage(String),
    /// A multiboot a.out-kludge header that contradicts itself.
    BadMultiboot(String),
    /// A bzImage payload compressed with a method popek does not decode.
    UnsupportedCompression(&'static str),
    /// The payload's decompressor failed.
    Decompress {
        /// The compression method.
        method: &'static str,
        /// The decompressor's message.
        message: String,
    },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::Unknown => write!(
                f,
                "unknown format: not an ELF, a Linux bzImage or a multiboot image \
                 (use --flat [--base ADDR] to decode raw 32-bit code)"
            ),
            FormatError::Truncated {
                what,
                needed,
                actual,
            } => write!(
                f,
                "truncated file: the {what} needs {needed} bytes, the file has {actual}"
            ),
            FormatError::BadElf(why) => write!(f, "cannot audit this ELF: {why}"),
            FormatError::BadBzImage(why) => write!(f, "cannot audit this bzImage: {why}"),
            FormatError::BadMultiboot(why) => {
                write!(f, "cannot audit this multiboot a.out-kludge image: {why}")
            }
            FormatError::UnsupportedCompression(method) => write!(
                f,
                "unsupported compression: the bzImage payload is {method}-compressed; \
                 popek decodes gzip, xz, lzma, zstd and lz4 (decompress it yourself, \
                 e.g. with the kernel's scripts/extract-vmlinux, and audit the ELF)"
            ),
            FormatError::Decompress { method, message } => {
                write!(
                    f,
                    "the bzImage's {method} payload does not decompress: {message}"
                )
            }
        }
    }
}

impl std::error::Error for FormatError {}

/// Reads `data` as a flat binary loaded at `base`: one range, all of it.
pub fn flat(data: &[u8], base: u64) -> Image {
    Image {
        format: format!("flat binary at {base:#x}"),
        ranges: vec![CodeRange {
            name: "flat".into(),
            address: base,
            bytes: data.to_vec(),
            starts: Vec::new(),
        }],
    }
}

/// Recognises `data` as ELF, bzImage or multiboot a.out kludge (in that
/// order) and returns its code.
pub fn detect(data: &[u8]) -> Result<Image, FormatError> {
    if data.starts_with(&ELFMAG) {
        return elf(data);
    }
    if linux::looks_like_linux(data) {
        return bzimage(data);
    }
    if let Some(image) = multiboot_aout(data)? {
        return Ok(image);
    }
    Err(FormatError::Unknown)
}

fn le_u16(data: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(data.get(off..off + 2)?.try_into().ok()?))
}

fn le_u32(data: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(off..off + 4)?.try_into().ok()?))
}

/// The executable sections of a 32-bit x86 ELF, or its executable PT_LOAD
/// segments when it has no section headers (a stripped or hand-made file).
pub fn elf(data: &[u8]) -> Result<Image, FormatError> {
    let bad = |why: String| FormatError::BadElf(why);
    const EI_CLASS: usize = 4;
    match data.get(EI_CLASS) {
        Some(&ELFCLASS32) => {}
        Some(&ELFCLASS64) => {
            return Err(bad(
                "it is a 64-bit ELF (an x86-64 kernel?); popek audits 32-bit x86 code".into(),
            ))
        }
        Some(class) => return Err(bad(format!("unknown ELF class {class}"))),
        None => {
            return Err(FormatError::Truncated {
                what: "ELF header",
                needed: 52,
                actual: data.len() as u64,
            })
        }
    }
    let header = FileHeader32::<Endianness>::parse(data).map_err(|e| bad(e.to_string()))?;
    let endian = header.endian().map_err(|e| bad(e.to_string()))?;
    let machine = header.e_machine(endian);
    if machine != EM_386 {
        return Err(bad(format!(
            "its machine is {machine}, not i386 ({EM_386})"
        )));
    }
    let sections = header
        .sections(endian, data)
        .map_err(|e| bad(format!("bad section headers: {e}")))?;
    let mut ranges = Vec::new();
    let mut indices = Vec::new();
    for (index, section) in sections.iter().enumerate() {
        let flags = section.sh_flags(endian);
        if flags & SHF_EXECINSTR == 0 || section.sh_type(endian) == SHT_NOBITS {
            continue;
        }
        let name = sections
            .section_name(endian, section)
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_else(|_| "(unnamed)".into());
        let bytes = section
            .data(endian, data)
            .map_err(|_| FormatError::Truncated {
                what: "ELF section data",
                needed: u64::from(section.sh_offset(endian)) + u64::from(section.sh_size(endian)),
                actual: data.len() as u64,
            })?;
        ranges.push(CodeRange {
            name,
            address: section.sh_addr(endian).into(),
            bytes: bytes.to_vec(),
            starts: Vec::new(),
        });
        indices.push(index);
    }
    let what = if ranges.is_empty() {
        // No section headers (or none marked executable): fall back to
        // what the loader itself uses, the executable loadable segments.
        let segments = header
            .program_headers(endian, data)
            .map_err(|e| bad(format!("bad program headers: {e}")))?;
        for (i, ph) in segments.iter().enumerate() {
            if ph.p_type(endian) != PT_LOAD || ph.p_flags(endian) & PF_X == 0 {
                continue;
            }
            let bytes = ph.data(endian, data).map_err(|()| FormatError::Truncated {
                what: "ELF segment data",
                needed: u64::from(ph.p_offset(endian)) + u64::from(ph.p_filesz(endian)),
                actual: data.len() as u64,
            })?;
            ranges.push(CodeRange {
                name: format!("segment {i}"),
                address: ph.p_vaddr(endian).into(),
                bytes: bytes.to_vec(),
                starts: Vec::new(),
            });
        }
        "executable segment"
    } else {
        symbol_starts(endian, data, &sections, &indices, &mut ranges);
        "executable section"
    };
    if ranges.is_empty() {
        return Err(bad(
            "it has no executable section (SHF_EXECINSTR) or segment (PT_LOAD with PF_X)".into(),
        ));
    }
    let plural = if ranges.len() == 1 { "" } else { "s" };
    let symbols: usize = ranges.iter().map(|r| r.starts.len()).sum();
    let resync = if symbols > 0 {
        format!(", {symbols} symbols as sweep restart points")
    } else {
        String::new()
    };
    Ok(Image {
        format: format!("ELF32 i386, {} {what}{plural}{resync}", ranges.len()),
        ranges,
    })
}

/// Gives each section range the addresses of the symbols defined in it.
/// Code sections hold data too (a multiboot header, jump tables); a
/// symbol marks where code certainly starts again, so the sweep need not
/// stay out of step after data, as objdump does not. Section and file
/// symbols carry no such promise. The symbols only refine the sweep, so a
/// malformed symbol table costs the refinement, not the audit.
fn symbol_starts(
    endian: Endianness,
    data: &[u8],
    sections: &object::read::elf::SectionTable<FileHeader32<Endianness>>,
    indices: &[usize],
    ranges: &mut [CodeRange],
) {
    let Ok(symbols) = sections.symbols(endian, data, object::elf::SHT_SYMTAB) else {
        return;
    };
    for sym in symbols.iter() {
        let typ = sym.st_type();
        if typ == object::elf::STT_SECTION || typ == object::elf::STT_FILE {
            continue;
        }
        let shndx = usize::from(sym.st_shndx(endian));
        if let Some(r) = indices.iter().position(|&i| i == shndx) {
            ranges[r].starts.push(sym.st_value(endian).into());
        }
    }
    for r in ranges.iter_mut() {
        r.starts.sort_unstable();
        r.starts.dedup();
    }
}

/// The compression methods the kernel's decompressor knows, by the magic
/// at the start of the payload.
fn compression_of(payload: &[u8]) -> Option<&'static str> {
    const MAGICS: &[(&[u8], &str)] = &[
        (&[0x1F, 0x8B], "gzip"),
        (&[0xFD, b'7', b'z', b'X', b'Z', 0x00], "xz"),
        (&[0x5D, 0x00, 0x00], "lzma"),
        (&[0x28, 0xB5, 0x2F, 0xFD], "zstd"),
        (&[0x02, 0x21, 0x4C, 0x18], "lz4"),
        (b"BZh", "bzip2"),
        (&[0x89, b'L', b'Z', b'O'], "lzo"),
    ];
    MAGICS
        .iter()
        .find(|(magic, _)| payload.starts_with(magic))
        .map(|(_, name)| *name)
}

/// Decompresses a kernel payload. The kernel build appends the
/// decompressed size as a little-endian u32 (`size_append`), and the
/// stream is read up to that size only, so the four trailing bytes are
/// never mistaken for a second stream.
pub fn decompress(method: &'static str, payload: &[u8]) -> Result<Vec<u8>, FormatError> {
    let size_hint = payload
        .len()
        .checked_sub(4)
        .and_then(|at| le_u32(payload, at))
        .map(u64::from)
        .filter(|&n| n > 0 && n <= MAX_DECOMPRESSED);
    let limit = size_hint.unwrap_or(MAX_DECOMPRESSED);
    let fail = |message: String| FormatError::Decompress { method, message };
    let mut out = Vec::new();
    let result = match method {
        "gzip" => flate2::read::GzDecoder::new(payload)
            .take(limit)
            .read_to_end(&mut out),
        "xz" => lzma_rust2::XzReader::new(payload, false)
            .take(limit)
            .read_to_end(&mut out),
        "lzma" => lzma_rust2::LzmaReader::new_mem_limit(payload, u32::MAX, None)
            .map_err(|e| fail(e.to_string()))?
            .take(limit)
            .read_to_end(&mut out),
        "zstd" => ruzstd::StreamingDecoder::new(payload)
            .map_err(|e| fail(e.to_string()))?
            .take(limit)
            .read_to_end(&mut out),
        "lz4" => {
            out = lz4_legacy(payload, limit).map_err(fail)?;
            Ok(out.len())
        }
        other => return Err(FormatError::UnsupportedCompression(other)),
    };
    match result {
        Ok(_) => {}
        // With the size known, an error past it (a trailer the decoder
        // does not expect) does not matter; before it, it does.
        Err(_) if size_hint.is_some_and(|n| out.len() as u64 >= n) => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    if let Some(n) = size_hint {
        if (out.len() as u64) < n {
            return Err(FormatError::Truncated {
                what: "compressed payload (its size trailer promises more data)",
                needed: n,
                actual: out.len() as u64,
            });
        }
    }
    Ok(out)
}

/// The legacy LZ4 format (`lz4 -l`) the kernel uses: a magic, then blocks
/// each preceded by its compressed length, each decompressing to at most
/// 8 MiB.
fn lz4_legacy(payload: &[u8], limit: u64) -> Result<Vec<u8>, String> {
    const MAGIC: u32 = 0x184C_2102;
    const BLOCK_MAX: usize = 8 << 20;
    let mut out = Vec::new();
    let mut at = 4;
    while (out.len() as u64) < limit {
        let Some(len) = le_u32(payload, at) else {
            break;
        };
        at += 4;
        if len == MAGIC {
            continue; // concatenated archives repeat the magic
        }
        let block = payload
            .get(at..at + len as usize)
            .ok_or_else(|| format!("a block of {len} bytes at offset {at} runs past the end"))?;
        at += len as usize;
        let start = out.len();
        out.resize(start + BLOCK_MAX, 0);
        let n = lz4_flex::block::decompress_into(block, &mut out[start..])
            .map_err(|e| e.to_string())?;
        out.truncate(start + n);
    }
    out.truncate(limit.min(out.len() as u64) as usize);
    Ok(out)
}

/// A Linux bzImage: the setup sectors (16-bit code, out of scope) are
/// skipped, the protected-mode payload is decompressed, and the vmlinux
/// ELF inside is audited; a payload that is not an ELF, or an image older
/// than protocol 2.08 that does not say where its payload is, is audited
/// as flat code at code32_start.
pub fn bzimage(data: &[u8]) -> Result<Image, FormatError> {
    let truncated = |what, needed: usize| FormatError::Truncated {
        what,
        needed: needed as u64,
        actual: data.len() as u64,
    };
    let header_end = hdr::HEADER + 4;
    if data.len() < header_end {
        return Err(truncated("Linux setup header", header_end));
    }
    if le_u16(data, hdr::BOOT_FLAG) != Some(linux::BOOT_FLAG_MAGIC)
        || le_u32(data, hdr::HEADER) != Some(linux::HEADER_MAGIC)
    {
        return Err(FormatError::BadBzImage(
            "it has only one of the boot flag (0xAA55 at 0x1FE) and the \"HdrS\" signature \
             (at 0x202)"
                .into(),
        ));
    }
    let version = le_u16(data, hdr::VERSION).unwrap_or(0);
    let setup_sects = match usize::from(data[hdr::SETUP_SECTS]) {
        0 => bz::DEFAULT_SETUP_SECTS,
        n => n,
    };
    let pm_start = (setup_sects + 1) * bz::SECTOR;
    if data.len() <= pm_start {
        return Err(truncated(
            "bzImage (setup sectors plus protected-mode kernel)",
            pm_start + 1,
        ));
    }
    let code32_start = le_u32(data, hdr::CODE32_START)
        .map(u64::from)
        .filter(|&a| a != 0)
        .unwrap_or(DEFAULT_FLAT_BASE);
    let protocol = format!(
        "bzImage (boot protocol {}.{:02})",
        version >> 8,
        version & 0xFF
    );
    let (offset, length) = if version >= bz::PAYLOAD_SINCE {
        let field = |off| {
            le_u32(data, off)
                .map(|v| v as usize)
                .ok_or(truncated("Linux setup header", off + 4))
        };
        (field(bz::PAYLOAD_OFFSET)?, field(bz::PAYLOAD_LENGTH)?)
    } else {
        (0, 0)
    };
    if length == 0 {
        // No payload fields (old protocol, or a hand-made image such as
        // popek's bzhello): the protected-mode part is the kernel.
        return Ok(Image {
            format: format!(
                "{protocol}, protected-mode kernel audited as flat code at {code32_start:#x}"
            ),
            ranges: vec![CodeRange {
                name: "protected-mode kernel".into(),
                address: code32_start,
                bytes: data[pm_start..].to_vec(),
                starts: Vec::new(),
            }],
        });
    }
    let start = pm_start + offset;
    let end = start + length;
    if data.len() < end {
        return Err(truncated(
            "bzImage payload (payload_offset + payload_length)",
            end,
        ));
    }
    let payload = &data[start..end];
    let (what, inner) = match compression_of(payload) {
        Some(method) => (format!("{method} payload"), decompress(method, payload)?),
        None => ("uncompressed payload".to_string(), payload.to_vec()),
    };
    if inner.starts_with(&ELFMAG) {
        let image = elf(&inner)?;
        return Ok(Image {
            format: format!("{protocol}, {what}: vmlinux {}", image.format),
            ranges: image.ranges,
        });
    }
    Ok(Image {
        format: format!(
            "{protocol}, {what} (not an ELF) audited as flat code at {code32_start:#x}"
        ),
        ranges: vec![CodeRange {
            name: "payload".into(),
            address: code32_start,
            bytes: inner,
            starts: Vec::new(),
        }],
    })
}

/// A multiboot image that uses the a.out kludge (header flag bit 16): its
/// header says which file bytes load where, and that range is swept.
/// Returns `None` for a file with no valid multiboot header or one that
/// relies on ELF instead.
fn multiboot_aout(data: &[u8]) -> Result<Option<Image>, FormatError> {
    let Probe::Found(at) = multiboot::probe(data) else {
        return Ok(None);
    };
    let flags = le_u32(data, at + 4).unwrap_or(0);
    if flags & header_flags::AOUT_KLUDGE == 0 {
        return Ok(None);
    }
    let field = |off: usize| {
        le_u32(data, at + off)
            .map(u64::from)
            .ok_or(FormatError::Truncated {
                what: "multiboot header with a.out kludge fields",
                needed: (at + 32) as u64,
                actual: data.len() as u64,
            })
    };
    let (header_addr, load_addr, load_end_addr) = (field(12)?, field(16)?, field(20)?);
    // The header's own address fixes where the file is in memory, as in
    // the loader; a header that contradicts itself is not worth guessing at.
    let file_start = header_addr
        .checked_sub(load_addr)
        .and_then(|before| (at as u64).checked_sub(before))
        .ok_or_else(|| {
            FormatError::BadMultiboot(format!(
                "load_addr {load_addr:#x} does not fit header_addr \
                 {header_addr:#x} at file offset {at:#x}"
            ))
        })?;
    let file_end = if load_end_addr == 0 {
        data.len() as u64
    } else {
        file_start + load_end_addr.saturating_sub(load_addr)
    };
    if file_end > data.len() as u64 {
        return Err(FormatError::Truncated {
            what: "a.out kludge load range",
            needed: file_end,
            actual: data.len() as u64,
        });
    }
    Ok(Some(Image {
        format: format!(
            "multiboot a.out kludge, loaded at {load_addr:#x} and audited as flat code"
        ),
        ranges: vec![CodeRange {
            name: "a.out load range".into(),
            address: load_addr,
            bytes: data[file_start as usize..file_end as usize].to_vec(),
            starts: Vec::new(),
        }],
    }))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// pushf; cli; sidt [0x2000]; ret: one kind of each interesting class.
    const TEXT: &[u8] = &[0x9C, 0xFA, 0x0F, 0x01, 0x0D, 0x00, 0x20, 0x00, 0x00, 0xC3];
    const TEXT_ADDR: u32 = 0xC100_0000;
    /// Data that would decode as popf; cli if it were (wrongly) swept.
    const DATA: &[u8] = &[0x9D, 0xFA, 0x00, 0x00];

    fn put(buf: &mut Vec<u8>, off: usize, bytes: &[u8]) {
        if buf.len() < off + bytes.len() {
            buf.resize(off + bytes.len(), 0);
        }
        buf[off..off + bytes.len()].copy_from_slice(bytes);
    }

    /// A minimal ELF32 i386 executable: one PT_LOAD (R+X) segment holding
    /// [`TEXT`] then [`DATA`]; with `sections`, section headers for .text
    /// (AX), .data (WA), .shstrtab, and a .symtab whose symbols sit at
    /// `symbols` (addresses in .text).
    fn elf32(sections: bool, symbols: &[u32]) -> Vec<u8> {
        const TEXT_OFF: usize = 0x100;
        let data_off = TEXT_OFF + TEXT.len();
        let shstr_off = data_off + DATA.len();
        let shstrtab = b"\0.text\0.data\0.shstrtab\0.symtab\0.strtab\0";
        let sym_off = (shstr_off + shstrtab.len()).next_multiple_of(4);
        let strtab_off = sym_off + 16 * (symbols.len() + 1);
        let sh_off = (strtab_off + 1).next_multiple_of(4);

        let mut f = Vec::new();
        put(&mut f, 0, b"\x7fELF\x01\x01\x01");
        put(&mut f, 16, &2u16.to_le_bytes()); // ET_EXEC
        put(&mut f, 18, &3u16.to_le_bytes()); // EM_386
        put(&mut f, 20, &1u32.to_le_bytes());
        put(&mut f, 24, &TEXT_ADDR.to_le_bytes());
        put(&mut f, 28, &52u32.to_le_bytes()); // e_phoff
        put(&mut f, 40, &52u16.to_le_bytes()); // e_ehsize
        put(&mut f, 42, &32u16.to_le_bytes()); // e_phentsize
        put(&mut f, 44, &1u16.to_le_bytes()); // e_phnum
        put(&mut f, 46, &40u16.to_le_bytes()); // e_shentsize
                                               // PT_LOAD, R+X, the text and data together.
        let seg_len = (TEXT.len() + DATA.len()) as u32;
        for (i, v) in [
            1,
            TEXT_OFF as u32,
            TEXT_ADDR,
            TEXT_ADDR,
            seg_len,
            seg_len,
            5,
            0x1000,
        ]
        .iter()
        .enumerate()
        {
            put(&mut f, 52 + 4 * i, &v.to_le_bytes());
        }
        put(&mut f, TEXT_OFF, TEXT);
        put(&mut f, data_off, DATA);
        if !sections {
            return f;
        }
        put(&mut f, shstr_off, shstrtab);
        for (i, &value) in symbols.iter().enumerate() {
            let at = sym_off + 16 * (i + 1);
            put(&mut f, at + 4, &value.to_le_bytes());
            put(&mut f, at + 12, &[0x12]); // STB_GLOBAL, STT_FUNC
            put(&mut f, at + 14, &1u16.to_le_bytes()); // in .text
        }
        put(&mut f, strtab_off, b"\0");
        let data_addr = TEXT_ADDR + TEXT.len() as u32;
        // name, type, flags, addr, offset, size, link, info, align, entsize
        let headers: [[u32; 10]; 6] = [
            [0; 10],
            [
                1,
                1,
                6,
                TEXT_ADDR,
                TEXT_OFF as u32,
                TEXT.len() as u32,
                0,
                0,
                16,
                0,
            ],
            [
                7,
                1,
                3,
                data_addr,
                data_off as u32,
                DATA.len() as u32,
                0,
                0,
                4,
                0,
            ],
            [
                13,
                3,
                0,
                0,
                shstr_off as u32,
                shstrtab.len() as u32,
                0,
                0,
                1,
                0,
            ],
            [
                23,
                2,
                0,
                0,
                sym_off as u32,
                (strtab_off - sym_off) as u32,
                5,
                1,
                4,
                16,
            ],
            [31, 3, 0, 0, strtab_off as u32, 1, 0, 0, 1, 0],
        ];
        for (i, h) in headers.iter().enumerate() {
            for (j, v) in h.iter().enumerate() {
                put(&mut f, sh_off + 40 * i + 4 * j, &v.to_le_bytes());
            }
        }
        put(&mut f, 32, &(sh_off as u32).to_le_bytes()); // e_shoff
        put(&mut f, 48, &6u16.to_le_bytes()); // e_shnum
        put(&mut f, 50, &3u16.to_le_bytes()); // e_shstrndx
        f
    }

    /// A bzImage with one setup sector, boot protocol `version`, 16 bytes
    /// of decompressor stub, then `payload` (announced when version >= 2.08).
    fn bzimage(version: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 1024];
        f[hdr::SETUP_SECTS] = 1;
        put(&mut f, hdr::BOOT_FLAG, &0xAA55u16.to_le_bytes());
        put(&mut f, hdr::JUMP_OFFSET - 1, &[0xEB, 0x66]);
        put(&mut f, hdr::HEADER, b"HdrS");
        put(&mut f, hdr::VERSION, &version.to_le_bytes());
        put(&mut f, hdr::LOADFLAGS, &[1]);
        put(&mut f, hdr::CODE32_START, &0x100000u32.to_le_bytes());
        if version >= 0x0208 {
            put(&mut f, bz::PAYLOAD_OFFSET, &16u32.to_le_bytes());
            put(
                &mut f,
                bz::PAYLOAD_LENGTH,
                &(payload.len() as u32).to_le_bytes(),
            );
        }
        f.extend_from_slice(&[0x90; 16]);
        f.extend_from_slice(payload);
        f
    }

    /// The kernel build's `size_append`: the decompressed size, LE u32.
    fn with_size(mut compressed: Vec<u8>, plain: &[u8]) -> Vec<u8> {
        compressed.extend_from_slice(&(plain.len() as u32).to_le_bytes());
        compressed
    }

    fn gzip(plain: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(plain).unwrap();
        with_size(e.finish().unwrap(), plain)
    }

    /// xz as scripts/xz_wrap.sh makes it: CRC32 check, x86 BCJ filter.
    fn xz(plain: &[u8]) -> Vec<u8> {
        use lzma_rust2::{CheckType, FilterType, XzOptions, XzWriter};
        let mut options = XzOptions::with_preset(6);
        options.set_check_sum_type(CheckType::Crc32);
        options.prepend_pre_filter(FilterType::BcjX86, 0);
        let mut w = XzWriter::new(Vec::new(), options).unwrap();
        w.write_all(plain).unwrap();
        with_size(w.finish().unwrap(), plain)
    }

    /// .lzma as `lzma -9` writes it to a pipe: size unknown, end marker.
    fn lzma(plain: &[u8]) -> Vec<u8> {
        let options = lzma_rust2::LzmaOptions::with_preset(6);
        let mut w = lzma_rust2::LzmaWriter::new_use_header(Vec::new(), &options, None).unwrap();
        w.write_all(plain).unwrap();
        with_size(w.finish().unwrap(), plain)
    }

    /// A zstd frame with one raw (stored) block: valid zstd without an encoder.
    fn zstd(plain: &[u8]) -> Vec<u8> {
        assert!(plain.len() < 1 << 16);
        let mut f = vec![0x28, 0xB5, 0x2F, 0xFD];
        // Single segment, two-byte frame content size (stored minus 256).
        f.push(0b0110_0000);
        f.extend_from_slice(&((plain.len() - 256) as u16).to_le_bytes());
        // Last block, raw, its size.
        let block = 1 | (plain.len() as u32) << 3;
        f.extend_from_slice(&block.to_le_bytes()[..3]);
        f.extend_from_slice(plain);
        with_size(f, plain)
    }

    /// Legacy LZ4 as `lz4 -l` writes it.
    fn lz4(plain: &[u8]) -> Vec<u8> {
        let block = lz4_flex::block::compress(plain);
        let mut f = 0x184C_2102u32.to_le_bytes().to_vec();
        f.extend_from_slice(&(block.len() as u32).to_le_bytes());
        f.extend_from_slice(&block);
        with_size(f, plain)
    }

    /// The vmlinux used inside the bzImage tests: big enough (> 256 bytes)
    /// for the zstd helper, with its symbols.
    fn vmlinux() -> Vec<u8> {
        let mut f = elf32(true, &[TEXT_ADDR]);
        f.resize(f.len().max(600), 0);
        f
    }

    #[test]
    fn elf_sweeps_executable_sections_only() {
        let image = detect(&elf32(true, &[])).unwrap();
        assert_eq!(image.format, "ELF32 i386, 1 executable section");
        assert_eq!(
            image.ranges,
            vec![CodeRange {
                name: ".text".into(),
                address: TEXT_ADDR.into(),
                bytes: TEXT.to_vec(),
                starts: vec![],
            }]
        );
    }

    #[test]
    fn elf_symbols_become_restart_points() {
        let image = detect(&elf32(true, &[TEXT_ADDR + 1, TEXT_ADDR, TEXT_ADDR + 1])).unwrap();
        assert_eq!(
            image.ranges[0].starts,
            vec![u64::from(TEXT_ADDR), u64::from(TEXT_ADDR + 1)]
        );
        assert!(
            image.format.ends_with("2 symbols as sweep restart points"),
            "{}",
            image.format
        );
    }

    #[test]
    fn elf_without_sections_uses_executable_segments() {
        let image = detect(&elf32(false, &[])).unwrap();
        assert_eq!(image.format, "ELF32 i386, 1 executable segment");
        assert_eq!(image.ranges[0].name, "segment 0");
        assert_eq!(image.ranges[0].address, u64::from(TEXT_ADDR));
        assert_eq!(image.ranges[0].bytes, [TEXT, DATA].concat());
    }

    #[test]
    fn elf64_is_refused_by_name() {
        let mut f = elf32(true, &[]);
        f[4] = 2;
        let e = detect(&f).unwrap_err();
        assert!(e.to_string().contains("64-bit ELF"), "{e}");
    }

    #[test]
    fn non_x86_elf_is_refused() {
        let mut f = elf32(true, &[]);
        f[18] = 40; // EM_ARM
        let e = detect(&f).unwrap_err().to_string();
        assert!(e.contains("machine is 40, not i386"), "{e}");
    }

    #[test]
    fn elf_section_past_the_end_is_truncated() {
        let mut f = elf32(false, &[]);
        f.truncate(0x104);
        assert!(matches!(
            detect(&f),
            Err(FormatError::Truncated {
                what: "ELF segment data",
                ..
            })
        ));
    }

    #[track_caller]
    fn assert_vmlinux_inside(image: &Image, method: &str) {
        assert_eq!(
            image.format,
            format!(
                "bzImage (boot protocol 2.15), {method} payload: vmlinux ELF32 i386, \
                 1 executable section, 1 symbols as sweep restart points"
            )
        );
        assert_eq!(image.ranges.len(), 1);
        assert_eq!(image.ranges[0].bytes, TEXT);
        assert_eq!(image.ranges[0].address, u64::from(TEXT_ADDR));
    }

    #[test]
    fn bzimage_with_gzip_payload_yields_the_vmlinux_sections() {
        assert_vmlinux_inside(
            &detect(&bzimage(0x020F, &gzip(&vmlinux()))).unwrap(),
            "gzip",
        );
    }

    #[test]
    fn bzimage_with_xz_bcj_payload_yields_the_vmlinux_sections() {
        assert_vmlinux_inside(&detect(&bzimage(0x020F, &xz(&vmlinux()))).unwrap(), "xz");
    }

    #[test]
    fn bzimage_with_lzma_payload_yields_the_vmlinux_sections() {
        assert_vmlinux_inside(
            &detect(&bzimage(0x020F, &lzma(&vmlinux()))).unwrap(),
            "lzma",
        );
    }

    #[test]
    fn bzimage_with_zstd_payload_yields_the_vmlinux_sections() {
        assert_vmlinux_inside(
            &detect(&bzimage(0x020F, &zstd(&vmlinux()))).unwrap(),
            "zstd",
        );
    }

    #[test]
    fn bzimage_with_lz4_payload_yields_the_vmlinux_sections() {
        assert_vmlinux_inside(&detect(&bzimage(0x020F, &lz4(&vmlinux()))).unwrap(), "lz4");
    }

    #[test]
    fn bzimage_with_uncompressed_elf_payload() {
        let image = detect(&bzimage(0x020F, &vmlinux())).unwrap();
        assert!(
            image.format.contains("uncompressed payload: vmlinux ELF32"),
            "{}",
            image.format
        );
        assert_eq!(image.ranges[0].bytes, TEXT);
    }

    #[test]
    fn bzimage_payload_that_is_no_elf_is_flat_at_code32_start() {
        let image = detect(&bzimage(0x020F, &gzip(TEXT))).unwrap();
        assert_eq!(
            image.format,
            "bzImage (boot protocol 2.15), gzip payload (not an ELF) audited as flat code at \
             0x100000"
        );
        assert_eq!(image.ranges[0].address, 0x100000);
        assert_eq!(image.ranges[0].bytes, TEXT);
    }

    #[test]
    fn old_bzimage_without_payload_fields_is_flat_after_the_setup() {
        let image = detect(&bzimage(0x0206, TEXT)).unwrap();
        assert!(image
            .format
            .starts_with("bzImage (boot protocol 2.06), protected-mode kernel"));
        // The 16 stub bytes before the payload are part of the protected-mode kernel.
        assert_eq!(image.ranges[0].bytes, [&[0x90; 16][..], TEXT].concat());
        assert_eq!(image.ranges[0].address, 0x100000);
    }

    #[test]
    fn bzip2_payload_is_unsupported_by_name() {
        let e = detect(&bzimage(0x020F, b"BZh91AY&SY\0\0\0\0")).unwrap_err();
        assert_eq!(e, FormatError::UnsupportedCompression("bzip2"));
        assert!(e.to_string().contains("bzip2-compressed"), "{e}");
    }

    #[test]
    fn lzo_payload_is_unsupported_by_name() {
        let e = detect(&bzimage(0x020F, b"\x89LZO\0\r\n\x1a\n")).unwrap_err();
        assert_eq!(e, FormatError::UnsupportedCompression("lzo"));
    }

    #[test]
    fn bzimage_cut_inside_its_payload_is_truncated() {
        let mut f = bzimage(0x020F, &gzip(&vmlinux()));
        f.truncate(f.len() - 10);
        let e = detect(&f).unwrap_err();
        assert!(
            matches!(e, FormatError::Truncated { what, .. } if what.starts_with("bzImage payload")),
            "{e:?}"
        );
    }

    #[test]
    fn bzimage_cut_inside_its_setup_is_truncated() {
        let f = bzimage(0x020F, &[]);
        let e = detect(&f[..0x300]).unwrap_err();
        assert!(matches!(e, FormatError::Truncated { .. }), "{e:?}");
        let e = detect(&f[..0x204]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("truncated file: the Linux setup header"),
            "{e}"
        );
    }

    #[test]
    fn corrupt_compressed_payload_is_a_decompression_error() {
        let mut payload = gzip(&vmlinux());
        payload[20] ^= 0xFF;
        payload[21] ^= 0xFF;
        let e = detect(&bzimage(0x020F, &payload)).unwrap_err();
        assert!(
            matches!(
                &e,
                FormatError::Decompress { method: "gzip", .. } | FormatError::Truncated { .. }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn payload_shorter_than_its_size_trailer_is_truncated() {
        let plain = vmlinux();
        let mut payload = gzip(&plain);
        let n = payload.len();
        payload[n - 4..].copy_from_slice(&(plain.len() as u32 + 100).to_le_bytes());
        let e = detect(&bzimage(0x020F, &payload)).unwrap_err();
        assert!(matches!(e, FormatError::Truncated { .. }), "{e:?}");
    }

    #[test]
    fn multiboot_aout_kludge_is_swept_from_load_addr() {
        // Header at file offset 8, loaded at 0x100000: the file starts there.
        let mut f = vec![0x90; 8];
        let flags = header_flags::AOUT_KLUDGE;
        let magic = multiboot::HEADER_MAGIC;
        for v in [
            magic,
            flags,
            0u32.wrapping_sub(magic).wrapping_sub(flags),
            0x100008, // header_addr
            0x100000, // load_addr
            0,        // load_end_addr: the whole file
            0,
            0x100000 + 40,
        ] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(TEXT);
        let image = detect(&f).unwrap();
        assert!(
            image.format.starts_with("multiboot a.out kludge"),
            "{}",
            image.format
        );
        assert_eq!(image.ranges[0].address, 0x100000);
        assert_eq!(image.ranges[0].bytes, f);
    }

    #[test]
    fn anything_else_is_unknown_and_says_how_to_force_flat() {
        let e = detect(TEXT).unwrap_err();
        assert_eq!(e, FormatError::Unknown);
        assert!(e.to_string().contains("--flat"), "{e}");
    }

    #[test]
    fn flat_is_the_whole_file_at_the_base() {
        let image = flat(TEXT, 0x7C00);
        assert_eq!(image.format, "flat binary at 0x7c00");
        assert_eq!(image.ranges[0].address, 0x7C00);
        assert_eq!(image.ranges[0].bytes, TEXT);
    }
}
