//! `popek run --perf-map`: one line per translated block in perf's map
//! format for code generated at run time (`START SIZE NAME`, hex), so that
//! `perf report` on popek names translated code by the guest code it came
//! from instead of showing bare translation-cache addresses.
//!
//! A name is the guest's symbol plus offset when the user gave guest
//! symbols (a System.map or /proc/kallsyms listing), else the guest's
//! linear EIP; both carry the CPL the block was translated for. The map
//! is written when the run ends and holds the blocks live then: perf
//! keeps the first of two lines for one address, so a log of every block
//! would name code that replaced an evicted block by the evicted one.

use std::collections::BTreeMap;
use std::io::Write;

/// The farthest past a symbol's start that an address is still named by it.
const MAX_OFFSET: u32 = 64 << 10;

/// Guest symbols, sorted by address: what a guest linear address is
/// named in the map.
#[derive(Clone, Debug, Default)]
pub struct GuestSymbols(Vec<(u32, String)>);

impl GuestSymbols {
    /// Parses System.map / kallsyms lines (`ADDRESS TYPE NAME [MODULE]`),
    /// keeping text symbols (types t and T) that fit in 32 bits.
    pub fn parse(text: &str) -> GuestSymbols {
        let mut syms: Vec<(u32, String)> = text
            .lines()
            .filter_map(|line| {
                let mut f = line.split_whitespace();
                let addr = u32::from_str_radix(f.next()?, 16).ok()?;
                let kind = f.next()?;
                let name = f.next()?;
                (kind.eq_ignore_ascii_case("t")).then(|| (addr, name.to_string()))
            })
            .collect();
        syms.sort_by_key(|s| s.0);
        GuestSymbols(syms)
    }

    /// How many symbols there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `name+0xOFF` for `addr`, if a symbol starts at most
    /// [`MAX_OFFSET`] below it (past the last function, in a module or in
    /// user space the nearest symbol would be a lie).
    fn name_of(&self, addr: u32) -> Option<String> {
        let i = self.0.partition_point(|s| s.0 <= addr).checked_sub(1)?;
        let (start, name) = &self.0[i];
        (addr - start <= MAX_OFFSET).then(|| format!("{name}+{:#x}", addr - start))
    }
}

/// Where the map goes, how its lines are named, and the live blocks.
pub struct PerfMap {
    out: std::fs::File,
    symbols: GuestSymbols,
    /// Host start -> (length, name) of each block not yet overwritten.
    blocks: BTreeMap<u32, (u32, String)>,
}

impl std::fmt::Debug for PerfMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerfMap")
            .field("symbols", &self.symbols.len())
            .finish()
    }
}

impl PerfMap {
    /// A map written to `file` (opened before the process is confined,
    /// and allowed to be written to), naming code by `symbols`.
    pub fn new(file: std::fs::File, symbols: GuestSymbols) -> PerfMap {
        PerfMap {
            out: file,
            symbols,
            blocks: BTreeMap::new(),
        }
    }

    /// Records the block at host `start`, `len` bytes long, translated
    /// from guest linear `eip` at `cpl`, in place of the blocks it
    /// overwrites.
    pub fn record(&mut self, start: u32, len: u32, eip: u32, cpl: u8) {
        let end = start.saturating_add(len);
        let reaching_in = self
            .blocks
            .range(..start)
            .next_back()
            .filter(|(&s, &(l, _))| s.saturating_add(l) > start);
        let gone: Vec<u32> = reaching_in
            .into_iter()
            .chain(self.blocks.range(start..end))
            .map(|(&s, _)| s)
            .collect();
        for s in gone {
            self.blocks.remove(&s);
        }
        let name = self.symbols.name_of(eip).unwrap_or_default();
        self.blocks.insert(
            start,
            (
                len,
                format!("[cpl{cpl}] {eip:08x} {name}").trim_end().into(),
            ),
        );
    }
}

impl Drop for PerfMap {
    /// Writes the map. A failed write is dropped: a profile aid must not
    /// turn a guest's run into a failure.
    fn drop(&mut self) {
        let mut text = String::new();
        for (start, (len, name)) in &self.blocks {
            text.push_str(&format!("{start:x} {len:x} {name}\n"));
        }
        let _ = self.out.write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_an_address_by_the_text_symbol_at_or_below_it() {
        let s = GuestSymbols::parse(
            "c1000000 T _text\nc1000100 t early_idt\nc1200000 D some_data\nc1000200 T startup_32\nzz T bad\n",
        );
        assert_eq!(s.len(), 3);
        assert_eq!(s.name_of(0xc100_0104).as_deref(), Some("early_idt+0x4"));
        assert_eq!(s.name_of(0xc100_0200).as_deref(), Some("startup_32+0x0"));
        assert_eq!(s.name_of(0xbfff_ffff), None);
        assert_eq!(s.name_of(0xc100_0200 + MAX_OFFSET + 1), None);
    }

    #[test]
    fn writes_the_live_blocks_only() {
        let path = std::env::temp_dir().join(format!("popek-perfmap-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let mut m = PerfMap::new(file, GuestSymbols::parse("c1000000 T _text\n"));
        m.record(0xffd0_0000, 0x40, 0xc100_0010, 0);
        m.record(0xffd0_0040, 0x20, 0x0804_8000, 3);
        m.record(0xffd0_0060, 0x20, 0xc100_0000, 0);
        // Evicted and overwritten: the first two go, the third stays.
        m.record(0xffd0_0020, 0x30, 0xc100_0020, 0);
        drop(m);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            text,
            "ffd00020 30 [cpl0] c1000020 _text+0x20\nffd00060 20 [cpl0] c1000000 _text+0x0\n"
        );
    }
}
