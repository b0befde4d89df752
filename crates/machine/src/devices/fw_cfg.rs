//! QEMU's firmware configuration device (fw_cfg) on ports 0x510/0x511, the
//! traditional port interface of QEMU's docs/specs/fw_cfg.rst: a 16-bit
//! write to the selector port picks an item and rewinds its data offset,
//! and each byte read from the data port returns the item's next byte
//! (zeros past its end). Guests built to run under QEMU probe it for the
//! signature, then read the RAM size, the CPU count and the command line;
//! firmware finds its files (here `etc/e820`) through the file directory.
//!
//! There is no DMA interface: [`ID`] reports only the traditional
//! interface, and the DMA address port 0x514 is left unclaimed (it reads as
//! all ones), where QEMU answers "QEMU CFG". Items are read-only: QEMU
//! ignores data-port writes since v2.4, and so does popek.
//!
//! Where QEMU's PC machine and popek differ: QEMU hands a multiboot kernel's
//! command line only to its multiboot option ROM, never to the
//! `CMDLINE_*` keys, which it fills for Linux kernels only; popek fills them
//! for every kernel, so a guest finds its command line the same way
//! whatever it was loaded as. The kernel, initrd and setup items QEMU's
//! option ROMs read are absent: popek's loaders place the kernel
//! themselves.

use std::collections::BTreeMap;

use crate::bus::BusDevice;
use crate::loader::MemoryRegion;

/// The selector port (16-bit writes).
pub const SELECTOR: u16 = 0x510;
/// The data port (8-bit reads).
pub const DATA: u16 = 0x511;

/// Item keys, as QEMU numbers them.
pub mod key {
    /// "QEMU".
    pub const SIGNATURE: u16 = 0x00;
    /// Feature bitmap (u32, little-endian).
    pub const ID: u16 = 0x01;
    /// The VM's UUID (16 bytes).
    pub const UUID: u16 = 0x02;
    /// Guest RAM in bytes (u64).
    pub const RAM_SIZE: u16 = 0x03;
    /// 1 when the machine has no display (u16).
    pub const NOGRAPHIC: u16 = 0x04;
    /// CPUs present at boot (u16).
    pub const NB_CPUS: u16 = 0x05;
    /// Whether firmware should offer a boot menu (u16).
    pub const BOOT_MENU: u16 = 0x0E;
    /// The most CPUs the machine can have (u16).
    pub const MAX_CPUS: u16 = 0x0F;
    /// Guest-physical address of the command line (u32).
    pub const CMDLINE_ADDR: u16 = 0x13;
    /// Length of the command line with its NUL (u32).
    pub const CMDLINE_SIZE: u16 = 0x14;
    /// The command line, NUL-terminated.
    pub const CMDLINE_DATA: u16 = 0x15;
    /// The file directory.
    pub const FILE_DIR: u16 = 0x19;
    /// The first key given to a file.
    pub const FILE_FIRST: u16 = 0x20;
    /// Selector bit 14: the write channel (ignored: every item reads the
    /// same through it).
    pub const WRITE_CHANNEL: u16 = 0x4000;
    /// Selector bit 15: an architecture-specific item.
    pub const ARCH_LOCAL: u16 = 0x8000;
    /// x86: whether ISA IRQ 0 is on I/O APIC pin 2 (u32).
    pub const IRQ0_OVERRIDE: u16 = ARCH_LOCAL | 0x02;
}

/// What [`key::SIGNATURE`] holds.
pub const SIGNATURE: &[u8; 4] = b"QEMU";
/// [`key::ID`]'s bit for the traditional (port) interface, always there.
pub const ID_TRADITIONAL: u32 = 1 << 0;
/// [`key::ID`]'s bit for the DMA interface, which popek does not offer.
pub const ID_DMA: u32 = 1 << 1;
/// What [`key::ID`] holds.
pub const ID: u32 = ID_TRADITIONAL;
/// Bytes of a file name in a directory entry, its NUL included.
pub const FILE_NAME_LEN: usize = 56;
/// Bytes of one directory entry: size, select, reserved, name.
pub const DIR_ENTRY_LEN: usize = 8 + FILE_NAME_LEN;
/// Bytes of one `etc/e820` entry: address (u64), length (u64), type (u32).
pub const E820_ENTRY_LEN: usize = 20;
/// The file holding the memory map.
pub const E820_FILE: &str = "etc/e820";

/// What the machine tells the guest through fw_cfg.
#[derive(Clone, Debug)]
pub struct Config {
    /// Guest RAM in bytes.
    pub ram_bytes: u64,
    /// CPUs (popek has one).
    pub cpus: u16,
    /// The kernel command line.
    pub cmdline: String,
    /// Where the loader put the command line in guest memory (0 if nowhere).
    pub cmdline_addr: u32,
    /// The physical memory map the loaders describe.
    pub memory_map: Vec<MemoryRegion>,
}

/// The device: its items and the guest's position in the selected one.
pub struct FwCfg {
    /// By selector key, with the write-channel bit clear.
    items: BTreeMap<u16, Vec<u8>>,
    /// The selected item's key, `None` if it has no item.
    selected: Option<u16>,
    /// The next byte of the selected item a data read returns.
    offset: usize,
}

impl FwCfg {
    /// A device holding what `config` says, with nothing selected.
    pub fn new(config: &Config) -> Self {
        let mut items = BTreeMap::new();
        items.insert(key::SIGNATURE, SIGNATURE.to_vec());
        items.insert(key::ID, ID.to_le_bytes().to_vec());
        // QEMU's default UUID when none is given.
        items.insert(key::UUID, vec![0; 16]);
        items.insert(key::RAM_SIZE, config.ram_bytes.to_le_bytes().to_vec());
        // No display: the console is the serial port.
        items.insert(key::NOGRAPHIC, 1u16.to_le_bytes().to_vec());
        items.insert(key::NB_CPUS, config.cpus.to_le_bytes().to_vec());
        items.insert(key::MAX_CPUS, config.cpus.to_le_bytes().to_vec());
        items.insert(key::BOOT_MENU, 0u16.to_le_bytes().to_vec());
        let mut cmdline = config.cmdline.as_bytes().to_vec();
        cmdline.push(0);
        items.insert(
            key::CMDLINE_SIZE,
            (cmdline.len() as u32).to_le_bytes().to_vec(),
        );
        items.insert(
            key::CMDLINE_ADDR,
            config.cmdline_addr.to_le_bytes().to_vec(),
        );
        items.insert(key::CMDLINE_DATA, cmdline);
        // popek's I/O APIC has the PIT on pin 2, as QEMU's PC says here.
        items.insert(key::IRQ0_OVERRIDE, 1u32.to_le_bytes().to_vec());
        let files = [(E820_FILE, e820(&config.memory_map))];
        let mut dir = (files.len() as u32).to_be_bytes().to_vec();
        for ((name, data), select) in files.into_iter().zip(key::FILE_FIRST..) {
            dir.extend((data.len() as u32).to_be_bytes());
            dir.extend(select.to_be_bytes());
            dir.extend([0, 0]);
            let mut field = [0u8; FILE_NAME_LEN];
            field[..name.len()].copy_from_slice(name.as_bytes());
            dir.extend(field);
            items.insert(select, data);
        }
        items.insert(key::FILE_DIR, dir);
        FwCfg {
            items,
            selected: None,
            offset: 0,
        }
    }

    /// Selects the item `selector` names and rewinds to its first byte.
    fn select(&mut self, selector: u16) {
        let k = selector & !key::WRITE_CHANNEL;
        self.selected = self.items.contains_key(&k).then_some(k);
        self.offset = 0;
    }

    /// The selected item's next byte, or 0 past its end or with no item.
    fn next_byte(&mut self) -> u8 {
        let item = self.selected.and_then(|k| self.items.get(&k));
        match item.and_then(|data| data.get(self.offset)) {
            Some(&b) => {
                self.offset += 1;
                b
            }
            None => 0,
        }
    }
}

/// The memory map as QEMU's `etc/e820` file lays it out: little-endian
/// address, length and type per entry.
fn e820(map: &[MemoryRegion]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(map.len() * E820_ENTRY_LEN);
    for r in map {
        bytes.extend(r.start.to_le_bytes());
        bytes.extend(r.len.to_le_bytes());
        bytes.extend(r.kind.e820_type().to_le_bytes());
    }
    bytes
}

impl BusDevice for FwCfg {
    /// Every byte read, at either port, is a data byte (QEMU's combined
    /// port region reads data at both); wider reads take consecutive bytes.
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        for b in data.iter_mut() {
            *b = self.next_byte();
        }
    }

    /// A 16-bit write at the selector port selects; data writes and other
    /// widths are ignored, as by QEMU.
    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        if offset == 0 && data.len() == 2 {
            self.select(u16::from_le_bytes([data[0], data[1]]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::pc_memory_map;

    const RAM: u64 = 64 << 20;

    fn device(cmdline: &str) -> FwCfg {
        FwCfg::new(&Config {
            ram_bytes: RAM,
            cpus: 1,
            cmdline: cmdline.into(),
            cmdline_addr: 0x2_0000,
            memory_map: pc_memory_map(RAM),
        })
    }

    fn select(d: &mut FwCfg, k: u16) {
        d.write(SELECTOR.into(), 0, &k.to_le_bytes());
    }

    fn read(d: &mut FwCfg, n: usize) -> Vec<u8> {
        let mut out = vec![0; n];
        for b in &mut out {
            let mut one = [0u8];
            d.read(SELECTOR.into(), 1, &mut one);
            *b = one[0];
        }
        out
    }

    fn item(d: &mut FwCfg, k: u16, n: usize) -> Vec<u8> {
        select(d, k);
        read(d, n)
    }

    #[test]
    fn signature_and_id_without_dma() {
        let mut d = device("");
        assert_eq!(item(&mut d, key::SIGNATURE, 4), b"QEMU");
        let id = u32::from_le_bytes(item(&mut d, key::ID, 4).try_into().unwrap());
        assert_eq!(id, ID_TRADITIONAL);
        assert_eq!(id & ID_DMA, 0);
    }

    #[test]
    fn ram_size_and_cpu_counts() {
        let mut d = device("");
        let ram = u64::from_le_bytes(item(&mut d, key::RAM_SIZE, 8).try_into().unwrap());
        assert_eq!(ram, RAM);
        assert_eq!(item(&mut d, key::NB_CPUS, 2), [1, 0]);
        assert_eq!(item(&mut d, key::MAX_CPUS, 2), [1, 0]);
        assert_eq!(item(&mut d, key::NOGRAPHIC, 2), [1, 0]);
        assert_eq!(item(&mut d, key::IRQ0_OVERRIDE, 4), [1, 0, 0, 0]);
    }

    #[test]
    fn command_line_size_counts_the_nul() {
        let mut d = device("console=ttyS0 quiet");
        let size = u32::from_le_bytes(item(&mut d, key::CMDLINE_SIZE, 4).try_into().unwrap());
        assert_eq!(size, 20);
        assert_eq!(
            item(&mut d, key::CMDLINE_DATA, 20),
            b"console=ttyS0 quiet\0"
        );
        let addr = u32::from_le_bytes(item(&mut d, key::CMDLINE_ADDR, 4).try_into().unwrap());
        assert_eq!(addr, 0x2_0000);
    }

    #[test]
    fn reads_past_the_end_or_of_a_missing_item_are_zero() {
        let mut d = device("");
        assert_eq!(item(&mut d, key::SIGNATURE, 6), b"QEMU\0\0");
        assert_eq!(item(&mut d, 0x0123, 3), [0, 0, 0]);
        assert_eq!(item(&mut d, key::ARCH_LOCAL | 0x10, 2), [0, 0]);
    }

    #[test]
    fn selecting_rewinds_and_the_write_channel_reads_the_same_item() {
        let mut d = device("");
        select(&mut d, key::SIGNATURE);
        assert_eq!(read(&mut d, 2), b"QE");
        select(&mut d, key::SIGNATURE | key::WRITE_CHANNEL);
        assert_eq!(read(&mut d, 4), b"QEMU");
    }

    #[test]
    fn writes_change_nothing_and_only_word_writes_select() {
        let mut d = device("");
        select(&mut d, key::SIGNATURE);
        d.write(SELECTOR.into(), 1, b"X");
        d.write(SELECTOR.into(), 0, &[0x01]); // a byte at the selector
        assert_eq!(read(&mut d, 4), b"QEMU");
        d.write(SELECTOR.into(), 0, &0x0001_0003u32.to_le_bytes());
        select(&mut d, key::SIGNATURE);
        assert_eq!(read(&mut d, 4), b"QEMU");
    }

    #[test]
    fn file_directory_is_big_endian_and_names_the_memory_map() {
        let mut d = device("");
        select(&mut d, key::FILE_DIR);
        let count = u32::from_be_bytes(read(&mut d, 4).try_into().unwrap());
        assert_eq!(count, 1);
        let entry = read(&mut d, DIR_ENTRY_LEN);
        let size = u32::from_be_bytes(entry[0..4].try_into().unwrap()) as usize;
        let select_key = u16::from_be_bytes(entry[4..6].try_into().unwrap());
        let name = &entry[8..];
        let end = name.iter().position(|&b| b == 0).unwrap();
        assert_eq!(&name[..end], E820_FILE.as_bytes());
        assert_eq!(select_key, key::FILE_FIRST);
        let map = pc_memory_map(RAM);
        assert_eq!(size, map.len() * E820_ENTRY_LEN);
        let e820 = item(&mut d, select_key, size);
        for (raw, region) in e820.chunks(E820_ENTRY_LEN).zip(&map) {
            assert_eq!(
                u64::from_le_bytes(raw[0..8].try_into().unwrap()),
                region.start
            );
            assert_eq!(
                u64::from_le_bytes(raw[8..16].try_into().unwrap()),
                region.len
            );
            assert_eq!(
                u32::from_le_bytes(raw[16..20].try_into().unwrap()),
                region.kind.e820_type()
            );
        }
    }
}
