//! ACPI tables describing exactly the machine popek builds: one CPU with
//! its local APIC, the I/O APIC, the HPET, the PM block of
//! [`crate::devices::acpi_pm`], and in the DSDT the ISA devices, the HPET
//! and the S5 sleep state. They sit in the BIOS area (0xF1000 on), which
//! the e820 map reserves, where Linux's RSDP scan of 0xE0000-0xFFFFF finds
//! them.
//!
//! Choices, each one what Linux 6.1 takes without a word of complaint:
//!
//! - **RSDP revision 0 with an RSDT** (32-bit pointers): the machine is
//!   32-bit and every table lies below 1 MiB, so an XSDT would add
//!   nothing.
//! - **FADT revision 3** (ACPI 2.0, 244 bytes): the smallest FADT whose
//!   IA-PC boot flags ACPICA reads (it zeroes them in FADTs of 132 bytes
//!   or less, such as QEMU's revision 1), so Linux learns that there is an
//!   8042, no VGA and no MSI. Its 64-bit X_ fields repeat the 32-bit ones
//!   with the same widths, which ACPICA checks, but for X_FIRMWARE_CTRL:
//!   the FACS is named once. No SMI command port: the machine is always in
//!   ACPI mode.
//! - **FACS version 1** (ACPI 2.0), 64 bytes, 64-byte aligned: no waking
//!   vector (popek does not sleep), the global lock free.
//! - **MADT revision 1**: the local APIC (ID 0, enabled), the I/O APIC
//!   (ID 0 at 0xFEC00000, GSI base 0), ISA IRQ 0 on GSI 2 and the SCI
//!   (IRQ 9) level-triggered active high as QEMU's, NMI on every CPU's
//!   LINT1, and PCAT_COMPAT: there is an 8259A pair as well.
//! - **HPET table** revision 1: the block at 0xFED00000, its ID the low
//!   half of the capabilities register.
//! - **DSDT revision 2**, AML written out below byte by byte (no iasl):
//!   \\_S5 and, under \\_SB, the HPET, COM1, the keyboard controller and
//!   the RTC with their ports, memory and IRQs.

use crate::devices::acpi_pm;
use crate::devices::{cmos, hpet, ioapic};
use crate::memory::{GuestMemory, MemoryError};

use super::checksum;

/// Where the RSDP is: 16-byte aligned, in the area Linux scans.
pub const RSDP_ADDR: u64 = 0xF_1000;
/// The end (exclusive) of the area the tables may fill.
pub const AREA_END: u64 = 0xF_2000;

// The tables stay inside what the e820 map reserves, and in what Linux scans.
const _: () = assert!(
    RSDP_ADDR >= crate::loader::BIOS_ROM_START && AREA_END <= crate::loader::HIGH_MEMORY_START
);

/// OEM ID in every table header and the RSDP.
pub const OEM_ID: &[u8; 6] = b"POPEK ";
/// OEM table ID in every table header.
pub const OEM_TABLE_ID: &[u8; 8] = b"POPEKPC ";
/// Creator ID: the tool that made the tables (popek itself).
const CREATOR_ID: &[u8; 4] = b"PPEK";
/// The local APIC's address as the MADT gives it.
pub const LAPIC_ADDR: u32 = 0xFEE0_0000;
/// Size of the standard table header.
const HEADER_LEN: usize = 36;

/// A table's standard header, its length and checksum still zero.
fn header(signature: &[u8; 4], revision: u8) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend(signature);
    h.extend([0; 4]); // length
    h.push(revision);
    h.push(0); // checksum
    h.extend(OEM_ID);
    h.extend(OEM_TABLE_ID);
    h.extend(1u32.to_le_bytes()); // OEM revision
    h.extend(CREATOR_ID);
    h.extend(1u32.to_le_bytes()); // creator revision
    h
}

/// Fills in a table's length and checksum.
fn seal(mut table: Vec<u8>) -> Vec<u8> {
    let len = table.len() as u32;
    table[4..8].copy_from_slice(&len.to_le_bytes());
    table[9] = 0;
    table[9] = checksum(&table);
    table
}

/// Generic Address Structure spaces.
mod space {
    pub const MEMORY: u8 = 0;
    pub const IO: u8 = 1;
}

/// A Generic Address Structure: `bits` wide at `addr` in `space`,
/// accessed as its width says (access size 0, "undefined", when zero).
fn gas(space: u8, bits: u8, addr: u64) -> [u8; 12] {
    let access = match bits {
        8 => 1,
        16 => 2,
        32 => 3,
        64 => 4,
        _ => 0,
    };
    let mut g = [0u8; 12];
    g[0] = space;
    g[1] = bits;
    g[3] = access;
    g[4..].copy_from_slice(&addr.to_le_bytes());
    g
}

/// FADT flags (ACPI 6.5 table 5.10).
mod fadt_flags {
    /// WBINVD flushes and invalidates caches.
    pub const WBINVD: u32 = 1 << 0;
    /// C1 (HLT) works.
    pub const PROC_C1: u32 = 1 << 2;
    /// No fixed-feature power button (and no control-method one either).
    pub const PWR_BUTTON: u32 = 1 << 4;
    /// No fixed-feature sleep button.
    pub const SLP_BUTTON: u32 = 1 << 5;
    /// The RTC's wake status is not in the fixed registers.
    pub const FIX_RTC: u32 = 1 << 6;
}

/// IA-PC boot architecture flags (FADT IAPC_BOOT_ARCH).
mod boot_arch {
    /// ISA devices the OS cannot enumerate (the UART, the RTC, the PIT).
    pub const LEGACY_DEVICES: u16 = 1 << 0;
    /// An 8042 keyboard controller at 0x60/0x64.
    pub const I8042: u16 = 1 << 1;
    /// No VGA: do not probe its ports or memory.
    pub const NO_VGA: u16 = 1 << 2;
    /// No MSI.
    pub const NO_MSI: u16 = 1 << 3;
}

/// The FADT (revision 3) pointing at the FACS and the DSDT.
fn fadt(facs: u32, dsdt: u32) -> Vec<u8> {
    let mut t = header(b"FACP", 3);
    t.extend(facs.to_le_bytes()); // FIRMWARE_CTRL
    t.extend(dsdt.to_le_bytes()); // DSDT
    t.push(0); // reserved (ACPI 1.0's INT_MODEL)
    t.push(0); // preferred PM profile: unspecified
    t.extend(u16::from(acpi_pm::SCI_IRQ).to_le_bytes()); // SCI_INT
    t.extend(0u32.to_le_bytes()); // SMI_CMD: none, always in ACPI mode
    t.extend([0, 0, 0, 0]); // ACPI_ENABLE, ACPI_DISABLE, S4BIOS_REQ, PSTATE_CNT
    let pm1a_evt = u32::from(acpi_pm::PM1A_EVT);
    let pm1a_cnt = u32::from(acpi_pm::PM1A_CNT);
    let pm_tmr = u32::from(acpi_pm::PM_TMR);
    for block in [pm1a_evt, 0, pm1a_cnt, 0, 0, pm_tmr, 0, 0] {
        // PM1a_EVT, PM1b_EVT, PM1a_CNT, PM1b_CNT, PM2_CNT, PM_TMR, GPE0, GPE1
        t.extend(block.to_le_bytes());
    }
    t.push(acpi_pm::PM1_EVT_LEN);
    t.push(acpi_pm::PM1_CNT_LEN);
    t.push(0); // PM2_CNT_LEN
    t.push(acpi_pm::PM_TMR_LEN);
    t.extend([0, 0, 0]); // GPE0_BLK_LEN, GPE1_BLK_LEN, GPE1_BASE
    t.push(0); // CST_CNT
    t.extend(101u16.to_le_bytes()); // P_LVL2_LAT > 100: no C2
    t.extend(1001u16.to_le_bytes()); // P_LVL3_LAT > 1000: no C3
    t.extend([0; 4]); // FLUSH_SIZE, FLUSH_STRIDE (WBINVD works)
    t.extend([0, 0]); // DUTY_OFFSET, DUTY_WIDTH: no throttling
    t.extend([0, 0]); // DAY_ALRM, MON_ALRM: no such alarms
    t.push(cmos::RTC_CENTURY); // CENTURY
    let arch = boot_arch::LEGACY_DEVICES | boot_arch::I8042 | boot_arch::NO_VGA | boot_arch::NO_MSI;
    t.extend(arch.to_le_bytes()); // IAPC_BOOT_ARCH
    t.push(0); // reserved
    use fadt_flags::*;
    let flags = WBINVD | PROC_C1 | PWR_BUTTON | SLP_BUTTON | FIX_RTC;
    t.extend(flags.to_le_bytes());
    t.extend([0; 12]); // RESET_REG: none (the i8042 resets the machine)
    t.push(0); // RESET_VALUE
    t.extend([0, 0, 0]); // reserved in ACPI 2.0 (ARM_BOOT_ARCH, minor version)
                         // X_FIRMWARE_CTRL stays zero: with both set ACPICA installs the FACS
                         // twice, and the specification has only one of the two set.
    t.extend(0u64.to_le_bytes());
    t.extend(u64::from(dsdt).to_le_bytes()); // X_DSDT, the same as DSDT
    let io = |len: u8, port: u32| gas(space::IO, len * 8, port.into());
    t.extend(io(acpi_pm::PM1_EVT_LEN, pm1a_evt)); // X_PM1a_EVT_BLK
    t.extend([0; 12]); // X_PM1b_EVT_BLK
    t.extend(io(acpi_pm::PM1_CNT_LEN, pm1a_cnt)); // X_PM1a_CNT_BLK
    t.extend([0; 12]); // X_PM1b_CNT_BLK
    t.extend([0; 12]); // X_PM2_CNT_BLK
    t.extend(io(acpi_pm::PM_TMR_LEN, pm_tmr)); // X_PM_TMR_BLK
    t.extend([0; 24]); // X_GPE0_BLK, X_GPE1_BLK
    debug_assert_eq!(t.len(), FADT_LEN);
    seal(t)
}

/// Length of an ACPI 2.0 FADT.
const FADT_LEN: usize = 244;

/// The FACS (version 1), 64 bytes.
fn facs() -> Vec<u8> {
    let mut t = Vec::with_capacity(64);
    t.extend(b"FACS");
    t.extend(64u32.to_le_bytes());
    t.extend(0u32.to_le_bytes()); // hardware signature
    t.extend(0u32.to_le_bytes()); // firmware waking vector: none
    t.extend(0u32.to_le_bytes()); // global lock: free
    t.extend(0u32.to_le_bytes()); // flags: no S4BIOS, no 64-bit wake
    t.extend(0u64.to_le_bytes()); // X firmware waking vector
    t.push(1); // version
    t.resize(64, 0);
    t
}

/// MADT entry types.
mod madt {
    pub const LOCAL_APIC: u8 = 0;
    pub const IO_APIC: u8 = 1;
    pub const SOURCE_OVERRIDE: u8 = 2;
    pub const LOCAL_APIC_NMI: u8 = 4;
    /// Flags: the multiprocessor system is also PC/AT compatible (8259A).
    pub const PCAT_COMPAT: u32 = 1;
    /// MPS INTI flags: active high (bits 1:0 = 01).
    pub const ACTIVE_HIGH: u16 = 0b01;
    /// MPS INTI flags: level-triggered (bits 3:2 = 11).
    pub const LEVEL: u16 = 0b11 << 2;
}

/// The MADT.
fn madt() -> Vec<u8> {
    use madt::*;
    let mut t = header(b"APIC", 1);
    t.extend(LAPIC_ADDR.to_le_bytes());
    t.extend(PCAT_COMPAT.to_le_bytes());
    // Processor 0 (ACPI UID 0), APIC ID 0, enabled.
    t.extend([LOCAL_APIC, 8, 0, 0]);
    t.extend(1u32.to_le_bytes());
    // I/O APIC ID 0 at its address, GSIs from 0.
    t.extend([IO_APIC, 12, 0, 0]);
    t.extend((ioapic::BASE as u32).to_le_bytes());
    t.extend(0u32.to_le_bytes());
    // ISA IRQ 0 (the PIT, or the HPET's timer 0) is GSI 2; the SCI is
    // level-triggered, active high.
    for (irq, gsi, flags) in [
        (0u8, 2u32, 0u16),
        (acpi_pm::SCI_IRQ, 9, ACTIVE_HIGH | LEVEL),
    ] {
        t.extend([SOURCE_OVERRIDE, 10, 0, irq]);
        t.extend(gsi.to_le_bytes());
        t.extend(flags.to_le_bytes());
    }
    // NMI on LINT1 of every processor (UID 0xFF), flags as the bus says.
    t.extend([LOCAL_APIC_NMI, 6, 0xFF, 0, 0, 1]);
    seal(t)
}

/// The HPET description table.
fn hpet_table() -> Vec<u8> {
    let mut t = header(b"HPET", 1);
    t.extend((hpet::CAPABILITIES_VALUE as u32).to_le_bytes()); // event timer block ID
    t.extend(gas(space::MEMORY, 64, hpet::BASE));
    t.push(0); // HPET number
    t.extend(0u16.to_le_bytes()); // minimum periodic tick: no claim
    t.push(0); // no page protection guarantee
    seal(t)
}

/// The RSDT listing `tables`.
fn rsdt(tables: &[u32]) -> Vec<u8> {
    let mut t = header(b"RSDT", 1);
    for a in tables {
        t.extend(a.to_le_bytes());
    }
    seal(t)
}

/// The RSDP (revision 0, 20 bytes) pointing at the RSDT.
fn rsdp(rsdt: u32) -> Vec<u8> {
    let mut t = Vec::with_capacity(20);
    t.extend(b"RSD PTR ");
    t.push(0); // checksum
    t.extend(OEM_ID);
    t.push(0); // revision 0: ACPI 1.0's RSDP, RSDT only
    t.extend(rsdt.to_le_bytes());
    t[8] = checksum(&t);
    t
}

/// AML: the pieces of the DSDT's byte code (ACPI 6.5 chapter 20).
mod aml {
    pub const ZERO: u8 = 0x00;
    pub const NAME: u8 = 0x08;
    pub const BYTE: u8 = 0x0A;
    pub const DWORD: u8 = 0x0C;
    pub const SCOPE: u8 = 0x10;
    pub const BUFFER: u8 = 0x11;
    pub const PACKAGE: u8 = 0x12;
    pub const EXT: u8 = 0x5B;
    pub const DEVICE: u8 = 0x82;
    pub const ROOT: u8 = b'\\';

    /// A PkgLength followed by `body`: the encoded length counts its own
    /// bytes (one up to 63 in all, else a lead byte with the low nibble
    /// and the count of bytes that follow, then the rest 8 bits a byte).
    pub fn package(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(body.len() + 3);
        let n = body.len();
        if n < 0x3F {
            out.push((n + 1) as u8);
        } else if n + 2 <= 0xFFF {
            let total = n + 2;
            out.push(0x40 | (total & 0xF) as u8);
            out.push((total >> 4) as u8);
        } else {
            let total = n + 3;
            assert!(total <= 0xF_FFFF, "AML package too long");
            out.push(0x80 | (total & 0xF) as u8);
            out.push((total >> 4) as u8);
            out.push((total >> 12) as u8);
        }
        out.extend(body);
        out
    }

    /// `Name (name, value)`, `value` already encoded.
    pub fn name(name: &[u8; 4], value: &[u8]) -> Vec<u8> {
        let mut out = vec![NAME];
        out.extend(name);
        out.extend(value);
        out
    }

    /// `Scope (\name) { body }`.
    pub fn scope_root(name: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut inner = vec![ROOT];
        inner.extend(name);
        inner.extend(body);
        let mut out = vec![SCOPE];
        out.extend(package(&inner));
        out
    }

    /// `Device (name) { body }`.
    pub fn device(name: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut inner = name.to_vec();
        inner.extend(body);
        let mut out = vec![EXT, DEVICE];
        out.extend(package(&inner));
        out
    }

    /// `Buffer () { bytes }`.
    pub fn buffer(bytes: &[u8]) -> Vec<u8> {
        let mut inner = vec![BYTE, u8::try_from(bytes.len()).expect("a short buffer")];
        inner.extend(bytes);
        let mut out = vec![BUFFER];
        out.extend(package(&inner));
        out
    }

    /// `EisaId ("PNPxxxx")`: three letters in 5 bits each, then four hex
    /// digits, stored big-endian, as a DWord constant.
    pub fn eisa_id(id: &str) -> Vec<u8> {
        let b = id.as_bytes();
        assert!(b.len() == 7, "an EISA ID is 3 letters and 4 hex digits");
        let letter = |c: u8| u16::from(c - b'@') & 0x1F;
        let vendor = (letter(b[0]) << 10) | (letter(b[1]) << 5) | letter(b[2]);
        let product = u16::from_str_radix(&id[3..], 16).expect("hex product number");
        let mut out = vec![DWORD];
        out.extend(vendor.to_be_bytes());
        out.extend(product.to_be_bytes());
        out
    }

    /// Resource template items (ACPI 6.5 section 6.4).
    pub mod resource {
        /// `IO (Decode16, port, port, 1, len)`: a fixed range of ports.
        pub fn io(port: u16, len: u8) -> Vec<u8> {
            let [lo, hi] = port.to_le_bytes();
            vec![0x47, 0x01, lo, hi, lo, hi, 0x01, len]
        }

        /// `IRQNoFlags () {irq}`: an edge-triggered, active-high ISA IRQ.
        pub fn irq(irq: u8) -> Vec<u8> {
            let [lo, hi] = (1u16 << irq).to_le_bytes();
            vec![0x22, lo, hi]
        }

        /// `Memory32Fixed (ReadWrite, base, len)`.
        pub fn memory32(base: u32, len: u32) -> Vec<u8> {
            let mut out = vec![0x86, 0x09, 0x00, 0x01];
            out.extend(base.to_le_bytes());
            out.extend(len.to_le_bytes());
            out
        }

        /// The end tag, its checksum 0 ("do not check").
        pub const END: [u8; 2] = [0x79, 0x00];
    }
}

/// One ISA-style device: `Device (name) { _HID, [_UID], _CRS }`.
fn aml_device(name: &[u8; 4], hid: &str, uid: Option<u8>, resources: &[Vec<u8>]) -> Vec<u8> {
    let mut body = aml::name(b"_HID", &aml::eisa_id(hid));
    if let Some(uid) = uid {
        body.extend(aml::name(b"_UID", &[aml::BYTE, uid]));
    }
    let mut crs: Vec<u8> = resources.concat();
    crs.extend(aml::resource::END);
    body.extend(aml::name(b"_CRS", &aml::buffer(&crs)));
    aml::device(name, &body)
}

/// The DSDT's definition block:
///
/// ```text
/// Name (\_S5, Package (4) { 0, 0, 0, 0 })  // SLP_TYPa, SLP_TYPb, reserved
/// Scope (\_SB) {
///     Device (HPET) { Name (_HID, EisaId ("PNP0103")) Name (_UID, 0)
///         Name (_CRS, ResourceTemplate () {
///             Memory32Fixed (ReadWrite, 0xFED00000, 0x400) }) }
///     Device (COM1) { Name (_HID, EisaId ("PNP0501")) Name (_UID, 1)
///         Name (_CRS, ResourceTemplate () {
///             IO (Decode16, 0x3F8, 0x3F8, 1, 8) IRQNoFlags () {4} }) }
///     Device (KBD_) { Name (_HID, EisaId ("PNP0303"))
///         Name (_CRS, ResourceTemplate () {
///             IO (Decode16, 0x60, 0x60, 1, 1) IO (Decode16, 0x64, 0x64, 1, 1)
///             IRQNoFlags () {1} }) }
///     Device (RTC_) { Name (_HID, EisaId ("PNP0B00"))
///         Name (_CRS, ResourceTemplate () {
///             IO (Decode16, 0x70, 0x70, 1, 2) IRQNoFlags () {8} }) }
/// }
/// ```
fn dsdt_aml() -> Vec<u8> {
    use aml::resource::{io, irq, memory32};
    let s5 = acpi_pm::S5_SLEEP_TYPE as u8;
    let sleep_type = |t: u8| {
        if t == 0 {
            vec![aml::ZERO]
        } else {
            vec![aml::BYTE, t]
        }
    };
    let mut s5_package = vec![4]; // NumElements
    for element in [
        sleep_type(s5),
        sleep_type(s5),
        vec![aml::ZERO],
        vec![aml::ZERO],
    ] {
        s5_package.extend(element);
    }
    let mut package = vec![aml::PACKAGE];
    package.extend(aml::package(&s5_package));
    let mut out = vec![aml::NAME, aml::ROOT];
    out.extend(b"_S5_");
    out.extend(package);

    let uart = crate::devices::uart::COM1;
    let kbd = [crate::devices::i8042::DATA, crate::devices::i8042::COMMAND];
    let devices = [
        aml_device(
            b"HPET",
            "PNP0103",
            Some(0),
            &[memory32(hpet::BASE as u32, hpet::SIZE as u32)],
        ),
        aml_device(b"COM1", "PNP0501", Some(1), &[io(uart, 8), irq(4)]),
        aml_device(
            b"KBD_",
            "PNP0303",
            None,
            &[io(kbd[0], 1), io(kbd[1], 1), irq(1)],
        ),
        aml_device(b"RTC_", "PNP0B00", None, &[io(cmos::INDEX, 2), irq(8)]),
    ];
    out.extend(aml::scope_root(b"_SB_", &devices.concat()));
    out
}

/// The DSDT.
fn dsdt() -> Vec<u8> {
    let mut t = header(b"DSDT", 2);
    t.extend(dsdt_aml());
    seal(t)
}

/// Where each table went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The table's signature.
    pub signature: [u8; 4],
    /// Its guest-physical address.
    pub addr: u64,
    /// Its length in bytes.
    pub len: usize,
}

/// Every table and where it goes, the RSDP first.
fn layout() -> Vec<(u64, Vec<u8>)> {
    let mut next = RSDP_ADDR + 0x40;
    let mut place = |bytes: Vec<u8>, align: u64| {
        let at = next.next_multiple_of(align);
        next = at + bytes.len() as u64;
        (at, bytes)
    };
    let facs = place(facs(), 64);
    let dsdt = place(dsdt(), 16);
    let madt = place(madt(), 16);
    let hpet = place(hpet_table(), 16);
    let fadt = place(fadt(facs.0 as u32, dsdt.0 as u32), 16);
    let rsdt = place(rsdt(&[fadt.0 as u32, madt.0 as u32, hpet.0 as u32]), 16);
    let rsdp = (RSDP_ADDR, rsdp(rsdt.0 as u32));
    vec![rsdp, rsdt, fadt, facs, dsdt, madt, hpet]
}

/// Writes the tables into `mem` and says where they went.
pub fn install(mem: &mut GuestMemory) -> Result<Vec<Placement>, MemoryError> {
    let mut placed = Vec::new();
    for (at, bytes) in layout() {
        assert!(
            at + bytes.len() as u64 <= AREA_END,
            "the ACPI tables outgrew their area"
        );
        mem.write(at, &bytes)?;
        let mut signature = [0; 4];
        signature.copy_from_slice(&bytes[..4]);
        placed.push(Placement {
            signature,
            addr: at,
            len: bytes.len(),
        });
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    /// Reads the table at `addr` as ACPICA does: header length, checksum.
    fn table(mem: &GuestMemory, addr: u64, signature: &[u8; 4]) -> Vec<u8> {
        let head = mem.slice(addr, HEADER_LEN).unwrap();
        assert_eq!(&head[..4], signature);
        let len = u32_at(head, 4) as usize;
        let t = mem.slice(addr, len).unwrap().to_vec();
        assert_eq!(
            sum(&t),
            0,
            "{} checksum",
            String::from_utf8_lossy(signature)
        );
        assert_eq!(&t[10..16], OEM_ID);
        t
    }

    fn installed() -> GuestMemory {
        let mut mem = GuestMemory::new(2 << 20).unwrap();
        install(&mut mem).unwrap();
        mem
    }

    /// The RSDP as Linux's scan finds it: 16-byte steps over 0xE0000-0xFFFFF.
    fn find_rsdp(mem: &GuestMemory) -> u64 {
        (0xE_0000..0x10_0000)
            .step_by(16)
            .find(|&a| {
                let b = mem.slice(a, 20).unwrap();
                &b[..8] == b"RSD PTR " && sum(b) == 0
            })
            .expect("an RSDP")
    }

    #[test]
    fn the_rsdp_is_found_where_linux_looks_and_leads_to_every_table() {
        let mem = installed();
        let rsdp = find_rsdp(&mem);
        assert_eq!(rsdp, RSDP_ADDR);
        let r = mem.slice(rsdp, 20).unwrap();
        assert_eq!(r[15], 0, "revision 0: RSDT only");
        let rsdt = table(&mem, u64::from(u32_at(r, 16)), b"RSDT");
        let entries: Vec<u32> = rsdt[HEADER_LEN..]
            .chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let sigs: Vec<_> = entries
            .iter()
            .map(|&a| mem.slice(a.into(), 4).unwrap().to_vec())
            .collect();
        assert_eq!(sigs, [b"FACP".to_vec(), b"APIC".to_vec(), b"HPET".to_vec()]);
        for (&a, s) in entries.iter().zip(&sigs) {
            table(&mem, a.into(), s[..4].try_into().unwrap());
        }
    }

    #[test]
    fn the_fadt_describes_the_pm_block_and_agrees_with_its_x_fields() {
        let mem = installed();
        let fadt = layout()
            .into_iter()
            .find(|(_, b)| &b[..4] == b"FACP")
            .unwrap();
        let f = table(&mem, fadt.0, b"FACP");
        assert_eq!((f.len(), f[8]), (244, 3));
        let facs = u32_at(&f, 36);
        let dsdt = u32_at(&f, 40);
        assert_eq!(facs % 64, 0, "the FACS is 64-byte aligned");
        assert_eq!(&mem.slice(facs.into(), 4).unwrap(), b"FACS");
        assert_eq!(u32_at(mem.slice(facs.into(), 8).unwrap(), 4), 64);
        table(&mem, dsdt.into(), b"DSDT");
        assert_eq!(u16::from_le_bytes([f[46], f[47]]), 9, "SCI_INT");
        assert_eq!(u32_at(&f, 48), 0, "no SMI_CMD");
        assert_eq!(u32_at(&f, 56), 0x600);
        assert_eq!(u32_at(&f, 64), 0x604);
        assert_eq!(u32_at(&f, 76), 0x608);
        assert_eq!((f[88], f[89], f[91]), (4, 2, 4));
        assert_eq!(f[108], 0x32, "CENTURY");
        assert_eq!(
            u16::from_le_bytes([f[109], f[110]]),
            0b1111,
            "legacy, 8042, no VGA, no MSI"
        );
        assert_eq!(u32_at(&f, 112) & (1 << 8), 0, "a 24-bit PM timer");
        assert_eq!(
            u64::from_le_bytes(f[132..140].try_into().unwrap()),
            0,
            "the FACS is named once"
        );
        assert_eq!(
            u64::from_le_bytes(f[140..148].try_into().unwrap()),
            dsdt.into()
        );
        // X_PM1a_EVT, X_PM1a_CNT, X_PM_TMR: I/O space, the widths above.
        for (at, bits, port) in [(148, 32, 0x600u64), (172, 16, 0x604), (208, 32, 0x608)] {
            assert_eq!((f[at], f[at + 1]), (1, bits), "GAS at {at}");
            assert_eq!(
                u64::from_le_bytes(f[at + 4..at + 12].try_into().unwrap()),
                port
            );
        }
    }

    #[test]
    fn the_madt_lists_the_apics_and_the_overrides() {
        let m = madt();
        assert_eq!(sum(&m), 0);
        assert_eq!(u32_at(&m, 36), 0xFEE0_0000);
        assert_eq!(u32_at(&m, 40), 1, "PCAT_COMPAT");
        let mut entries = Vec::new();
        let mut i = 44;
        while i < m.len() {
            entries.push(m[i..i + usize::from(m[i + 1])].to_vec());
            i += usize::from(m[i + 1]);
        }
        assert_eq!(i, m.len());
        assert_eq!(entries[0], [0, 8, 0, 0, 1, 0, 0, 0]);
        assert_eq!(entries[1], [1, 12, 0, 0, 0, 0, 0xC0, 0xFE, 0, 0, 0, 0]);
        assert_eq!(entries[2], [2, 10, 0, 0, 2, 0, 0, 0, 0, 0]);
        assert_eq!(entries[3], [2, 10, 0, 9, 9, 0, 0, 0, 0x0D, 0]);
        assert_eq!(entries[4], [4, 6, 0xFF, 0, 0, 1]);
    }

    #[test]
    fn the_hpet_table_matches_the_device() {
        let t = hpet_table();
        assert_eq!((t.len(), sum(&t)), (56, 0));
        assert_eq!(u32_at(&t, 36), 0x8086_A201);
        assert_eq!(t[40], 0, "system memory");
        assert_eq!(
            u64::from_le_bytes(t[44..52].try_into().unwrap()),
            0xFED0_0000
        );
    }

    #[test]
    fn pkg_lengths_encode_as_the_spec_says() {
        assert_eq!(aml::package(&[0; 5])[0], 6);
        assert_eq!(aml::package(&[0; 62])[0], 63);
        // 63 bytes of body: 65 in all, two length bytes.
        assert_eq!(aml::package(&[0; 63])[..2], [0x41, 0x04]);
        assert_eq!(aml::package(&[0; 63]).len(), 65);
        assert_eq!(aml::package(&[0; 5000])[..3], [0x8B, 0x38, 0x01]);
    }

    #[test]
    fn eisa_ids_compress_as_iasl_does() {
        // EisaId ("PNP0103") is 0x0301D041 in iasl's disassembly.
        assert_eq!(aml::eisa_id("PNP0103"), [0x0C, 0x41, 0xD0, 0x01, 0x03]);
        assert_eq!(aml::eisa_id("PNP0B00"), [0x0C, 0x41, 0xD0, 0x0B, 0x00]);
    }

    #[test]
    fn the_dsdt_names_s5_first_and_its_scope_is_one_package() {
        let aml = dsdt_aml();
        // Name (\_S5_, Package (4) { Zero, Zero, Zero, Zero })
        assert_eq!(
            aml[..12],
            [0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 0x06, 4, 0, 0, 0]
        );
        assert_eq!(aml[12], 0);
        // Scope (\_SB_): its PkgLength covers the rest of the block.
        let scope = &aml[13..];
        assert_eq!(scope[0], aml::SCOPE);
        let lead = scope[1];
        let (len, bytes) = match lead >> 6 {
            0 => (usize::from(lead), 1),
            n => {
                let mut len = usize::from(lead & 0xF);
                for i in 0..usize::from(n) {
                    len |= usize::from(scope[2 + i]) << (4 + 8 * i);
                }
                (len, 1 + usize::from(n))
            }
        };
        assert_eq!(1 + len, scope.len(), "{bytes}-byte PkgLength");
        assert_eq!(&scope[1 + bytes..1 + bytes + 5], b"\\_SB_");
    }

    #[test]
    fn everything_fits_in_the_reserved_bios_area() {
        let mut end = 0;
        for (at, bytes) in layout() {
            assert!(at >= RSDP_ADDR && at % 16 == 0);
            end = end.max(at + bytes.len() as u64);
        }
        assert!(end <= AREA_END, "{end:#x}");
    }
}
