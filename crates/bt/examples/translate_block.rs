//! Prints guest blocks of an embedded guest next to their translations.
//!
//! ```text
//! cargo run -p popek-bt --example translate_block -- GUEST ADDR [BLOCKS]
//! cargo run -p popek-bt --example translate_block -- hello 0x1008d0 3
//! ```
//!
//! GUEST is a name from `popek guests`, ADDR a guest linear address inside
//! its loaded image (find one with `objdump -d` of the guest's ELF), BLOCKS
//! how many blocks to translate, each starting where the previous one's
//! guest bytes end. Blocks are emitted for the host addresses the engine
//! would give them in an empty translation cache, with the indirect-branch
//! miss handler where the engine installs it, and the guest runs flat
//! (CS base 0, 32-bit, CPL 0, no paging) as popek's guests do. Translation
//! needs no monitor, so this runs anywhere.
//!
//! Each guest instruction is followed by the host instructions translated
//! from it; the block's exit stubs come last. Operands in GS (the monitor
//! region) are named after the vCPU-area field they reach.

use std::process::ExitCode;

use bt::cache::{BlockKey, Context, GuestPage};
use bt::contract::{gs, Inline, Layout};
use bt::monitor::switch::tc_exit_stub;
use bt::translate::{Translation, Translator};
use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter, OpKind, Register};
use object::{Object, ObjectSegment, ObjectSymbol};

/// A guest's loadable segments, flattened into one buffer from `base` on.
struct Image {
    base: u32,
    bytes: Vec<u8>,
    /// (address, name) of the ELF's function symbols, sorted.
    symbols: Vec<(u32, String)>,
}

impl Image {
    fn load(elf: &[u8]) -> Result<Image, String> {
        // The embedded bytes may be unaligned; object wants the headers
        // aligned, and a heap copy is.
        let elf = elf.to_vec();
        let file = object::File::parse(&*elf).map_err(|e| format!("not an ELF: {e}"))?;
        let segs: Vec<_> = file.segments().collect();
        let lo = segs
            .iter()
            .map(|s| s.address())
            .min()
            .ok_or("no segments")?;
        let hi = segs
            .iter()
            .map(|s| s.address() + s.size())
            .max()
            .ok_or("no segments")?;
        let mut bytes = vec![0; (hi - lo) as usize];
        for s in &segs {
            let data = s.data().map_err(|e| e.to_string())?;
            let at = (s.address() - lo) as usize;
            bytes[at..at + data.len()].copy_from_slice(data);
        }
        let mut symbols: Vec<(u32, String)> = file
            .symbols()
            .filter(|s| s.kind() == object::SymbolKind::Text)
            .filter_map(|s| Some((s.address() as u32, s.name().ok()?.to_string())))
            .collect();
        symbols.sort();
        Ok(Image {
            base: lo as u32,
            bytes,
            symbols,
        })
    }

    /// The guest bytes from `eip` on, as the engine hands them over: to the
    /// page end plus 15 bytes at most.
    fn code_at(&self, eip: u32) -> Option<&[u8]> {
        let at = eip.checked_sub(self.base)? as usize;
        let end = (at + 4096 + 15).min(self.bytes.len());
        (at < end).then(|| &self.bytes[at..end])
    }

    /// `name+off` for `addr`.
    fn symbolize(&self, addr: u32) -> String {
        match self.symbols.iter().rev().find(|(a, _)| *a <= addr) {
            Some((a, n)) if addr == *a => n.clone(),
            Some((a, n)) => format!("{n}+{:#x}", addr - a),
            None => String::new(),
        }
    }
}

/// What a GS-relative displacement in translated code names: every field
/// of the vCPU area and the lookup table, from the contract both sides
/// import.
fn gs_name(disp: u32) -> Option<String> {
    let disp = disp as i32;
    let fields = [
        (gs::TC_REASON, "tc_reason"),
        (gs::TC_ARG, "tc_arg"),
        (gs::EXIT_FAR, "exit_far"),
        (gs::GUEST_FS, "guest_fs"),
        (gs::GUEST_GS, "guest_gs"),
        (gs::INLINE_HITS, "inline_hits"),
        (gs::SAVED_EAX, "scratch[0]: saved EAX"),
        (gs::SAVED_ECX, "scratch[1]: saved ECX"),
        (gs::TARGET, "scratch[2]: jump target / popped EFLAGS"),
        (gs::FROM, "scratch[3]: exit's jmp address"),
        (gs::VSYS, "vsys: TF IOPL NT AC VIF VIP ID"),
        (gs::VIF, "vif (| irq_pending << 16)"),
        (gs::IRQ_PENDING, "irq_pending"),
        (gs::STI_SHADOW_AT, "sti_shadow_at"),
        (gs::TABLE, "lookup table: -eip"),
        (gs::TABLE + 4, "lookup table: host address"),
    ];
    let sregs = ["cs", "ss", "ds", "es", "fs", "gs"];
    fields
        .iter()
        .find(|(off, _)| *off == disp)
        .map(|(_, n)| (*n).to_string())
        .or_else(|| {
            let i = usize::try_from((disp - gs::INLINED) / 4).ok()?;
            let kind = Inline::ALL
                .get(i)
                .filter(|_| (disp - gs::INLINED) % 4 == 0)?;
            Some(format!("inlined[{}]", kind.name()))
        })
        .or_else(|| {
            let i = usize::try_from((disp - gs::GUEST_SEL) / 4).ok()?;
            let s = sregs.get(i).filter(|_| (disp - gs::GUEST_SEL) % 4 == 0)?;
            Some(format!("guest_sel[{s}]"))
        })
        .or_else(|| {
            let n = (disp - gs::GUEST_CR) / 4;
            ((0..5).contains(&n) && (disp - gs::GUEST_CR) % 4 == 0)
                .then(|| format!("guest_cr[cr{n}]"))
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Disassembles `code` (32-bit, at `ip`) into (address, bytes, text).
fn disassemble(code: &[u8], ip: u32) -> Vec<(u32, Vec<u8>, String, Instruction)> {
    let mut dec = Decoder::with_ip(32, code, u64::from(ip), DecoderOptions::NONE);
    let mut fmt = IntelFormatter::new();
    fmt.options_mut().set_hex_prefix("0x");
    fmt.options_mut().set_hex_suffix("");
    fmt.options_mut().set_uppercase_hex(false);
    let mut out = Vec::new();
    for insn in &mut dec {
        let mut text = String::new();
        fmt.format(&insn, &mut text);
        let at = (insn.ip() - u64::from(ip)) as usize;
        out.push((insn.ip32(), code[at..at + insn.len()].to_vec(), text, insn));
    }
    out
}

/// A note on a host instruction: the vCPU field it touches, or where a
/// jump goes.
fn host_note(t: &Translation, host: u32, miss: u32, insn: &Instruction) -> String {
    if insn.memory_segment() == Register::GS && insn.memory_base() == Register::None {
        if let Some(n) = gs_name(insn.memory_displacement32()) {
            return n;
        }
    }
    if insn.op0_kind() == OpKind::NearBranch32 {
        let target = insn.near_branch32();
        if target == miss {
            return "-> miss handler".into();
        }
        let off = insn.ip32() - host;
        if let Some((guest, _)) = t.block.exits.iter().find(|(_, at)| *at == off) {
            return format!("exit -> guest {guest:#x} (chained by patching rel32)");
        }
    }
    String::new()
}

fn run(args: &[String]) -> Result<(), String> {
    let [name, addr, rest @ ..] = args else {
        return Err("usage: translate_block GUEST ADDR [BLOCKS]".into());
    };
    let guest = popek_guests::find(name).ok_or_else(|| format!("no guest named {name}"))?;
    let addr = u32::from_str_radix(addr.trim_start_matches("0x"), 16)
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    let blocks: usize = match rest.first() {
        Some(n) => n.parse().map_err(|e| format!("bad block count {n}: {e}"))?,
        None => 1,
    };
    let image = Image::load(guest.image)?;
    let layout = Layout::DEFAULT;
    let miss = layout.stub() + ((tc_exit_stub().len() as u32 + 15) & !15);
    let translator = Translator::new(miss);
    let ctx = Context {
        cs_base: 0,
        cpl: 0,
        code32: true,
        paging: false,
        step: false,
    };
    let mut eip = addr;
    let mut host = layout.tc();
    for _ in 0..blocks {
        let code = image
            .code_at(eip)
            .ok_or_else(|| format!("{eip:#x} is outside the guest image"))?;
        let t = translator
            .translate(BlockKey { eip, ctx }, code, GuestPage(eip >> 12), host)
            .map_err(|e| e.to_string())?;
        println!(
            "block {eip:#010x} <{}>: {} guest bytes, {} instructions -> {} host bytes at {host:#010x}",
            image.symbolize(eip),
            t.block.guest_len,
            t.block.insns.len(),
            t.code.len()
        );
        let guest = disassemble(&code[..t.block.guest_len as usize], eip);
        let host_insns = disassemble(&t.code, host);
        let host_end = |i: usize| {
            t.block
                .insns
                .get(i + 1)
                .map_or(u32::MAX, |m| host + m.host_offset)
        };
        let mut h = host_insns.iter().peekable();
        for (i, (g_ip, g_bytes, g_text, _)) in guest.iter().enumerate() {
            println!("  {g_ip:08x}  {:<24} {g_text}", hex(g_bytes));
            let end = if i + 1 == guest.len() {
                // The last instruction owns everything up to the stubs.
                t.block
                    .exits
                    .iter()
                    .map(|&(_, at)| host + at + 5)
                    .max()
                    .unwrap_or(u32::MAX)
                    .max(host + t.block.insns[i].host_offset)
            } else {
                host_end(i)
            };
            while let Some((h_ip, h_bytes, h_text, insn)) = h.next_if(|x| x.0 < end) {
                let note = host_note(&t, host, miss, insn);
                let note = if note.is_empty() {
                    note
                } else {
                    format!("; {note}")
                };
                println!(
                    "      {:>38} {h_ip:08x}  {:<26} {h_text:<36}{note}",
                    "",
                    hex(h_bytes)
                );
            }
        }
        if h.peek().is_some() {
            println!(
                "  exit stubs (one per exit; the monitor chains an exit's jmp past its stub):"
            );
        }
        for (h_ip, h_bytes, h_text, insn) in h {
            let note = host_note(&t, host, miss, insn);
            let note = if note.is_empty() {
                note
            } else {
                format!("; {note}")
            };
            println!(
                "      {:>38} {h_ip:08x}  {:<26} {h_text:<36}{note}",
                "",
                hex(h_bytes)
            );
        }
        println!();
        eip += t.block.guest_len;
        host = (host + t.code.len() as u32 + 15) & !15;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("translate_block: {e}");
            ExitCode::FAILURE
        }
    }
}
