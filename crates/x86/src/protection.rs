//! The descriptor checks of LAR, LSL, VERR and VERW: instructions that read
//! the descriptor tables without trapping at any privilege level, and so must
//! be computed against the guest's tables by a monitor (the BT engine's
//! callouts; the KVM engine where the host's emulator lacks them).

use crate::descriptor::{types, Descriptor, Selector};
use crate::interrupt::{read_descriptor, Exception, LinearMemory};
use crate::CpuState;

/// The descriptor `sel` names, if it is inside its table; `None` for a null
/// selector or one past the limit (the instruction then clears ZF).
fn lookup(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    sel: u16,
) -> Result<Option<Descriptor>, Exception> {
    let sel = Selector(sel);
    if sel.is_null() || sel.descriptor_address(&cpu.gdtr, &cpu.ldtr).is_none() {
        return Ok(None);
    }
    read_descriptor(cpu, mem, sel, 0).map(|(d, _)| Some(d))
}

/// DPL >= max(CPL, RPL), which every check needs except for conforming code.
fn privileged_enough(cpu: &CpuState, d: &Descriptor, sel: u16) -> bool {
    (d.is_code() && d.is_conforming()) || d.dpl >= cpu.cpl().max(sel as u8 & 3)
}

/// The descriptor if LAR/LSL may see it: a code/data segment, or a system
/// descriptor of a type `system_ok` accepts, at a privilege they may read.
fn visible(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    sel: u16,
    system_ok: fn(u8) -> bool,
) -> Result<Option<Descriptor>, Exception> {
    Ok(lookup(cpu, mem, sel)?
        .filter(|d| (d.s || system_ok(d.typ)) && privileged_enough(cpu, d, sel)))
}

/// LAR: the access-rights bytes (descriptor bits 8-23 of the high dword,
/// as `high & 0x00FFFF00`) if the descriptor is visible, else `None`.
pub fn lar(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    sel: u16,
) -> Result<Option<u32>, Exception> {
    let system_ok = |typ| {
        matches!(
            typ,
            types::TSS16_AVAILABLE
                | types::LDT
                | types::TSS16_BUSY
                | types::CALL_GATE16
                | types::TASK_GATE
                | types::TSS32_AVAILABLE
                | types::TSS32_BUSY
                | types::CALL_GATE32
        )
    };
    Ok(visible(cpu, mem, sel, system_ok)?.map(|d| (d.to_u64() >> 32) as u32 & 0x00FF_FF00))
}

/// LSL: the segment's effective byte limit if visible, else `None`.
pub fn lsl(
    cpu: &CpuState,
    mem: &mut impl LinearMemory,
    sel: u16,
) -> Result<Option<u32>, Exception> {
    let system_ok = |typ| {
        matches!(
            typ,
            types::TSS16_AVAILABLE
                | types::LDT
                | types::TSS16_BUSY
                | types::TSS32_AVAILABLE
                | types::TSS32_BUSY
        )
    };
    Ok(visible(cpu, mem, sel, system_ok)?.map(|d| d.effective_limit()))
}

/// VERR: true if the segment could be loaded and read at the current CPL.
pub fn verr(cpu: &CpuState, mem: &mut impl LinearMemory, sel: u16) -> Result<bool, Exception> {
    Ok(lookup(cpu, mem, sel)?
        .is_some_and(|d| d.s && d.is_readable() && privileged_enough(cpu, &d, sel)))
}

/// VERW: true if the segment could be loaded and written at the current CPL.
pub fn verw(cpu: &CpuState, mem: &mut impl LinearMemory, sel: u16) -> Result<bool, Exception> {
    Ok(lookup(cpu, mem, sel)?
        .is_some_and(|d| d.is_data() && d.is_writable() && d.dpl >= cpu.cpl().max(sel as u8 & 3)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interrupt::testing::Flat;
    use crate::state::cr0;
    use crate::{Segment, TableRegister};

    fn desc(typ: u8, s: bool, dpl: u8, limit: u32, g: bool) -> u64 {
        Descriptor {
            base: 0,
            limit,
            typ,
            s,
            dpl,
            present: true,
            avl: false,
            l: false,
            db: s,
            g,
        }
        .to_u64()
    }

    /// GDT: 0x08 code DPL0, 0x10 data DPL0, 0x18 data DPL3, 0x20 busy TSS,
    /// 0x28 execute-only code, 0x30 read-only data, 0x38 interrupt gate (invalid for LAR).
    fn setup(cpl: u8) -> (CpuState, Flat) {
        let mut m = Flat(vec![0; 0x2000]);
        let entries = [
            0,
            desc(0xB, true, 0, 0xFFFFF, true),
            desc(0x3, true, 0, 0xFFFFF, true),
            desc(0x3, true, 3, 0xFFF, false),
            desc(0xB, false, 0, 0x67, false),
            desc(0x9, true, 0, 0xFFFFF, true),
            desc(0x1, true, 0, 0xFFFFF, true),
            desc(0xE, false, 0, 0, false),
        ];
        for (i, e) in entries.iter().enumerate() {
            m.write(0x1000 + 8 * i as u32, &e.to_le_bytes()).unwrap();
        }
        let mut cpu = CpuState::reset();
        cpu.cr0 = cr0::PE;
        cpu.gdtr = TableRegister {
            base: 0x1000,
            limit: 8 * 8 - 1,
        };
        cpu.ldtr = Segment::unusable();
        cpu.cs = Segment::flat_code32(if cpl == 3 { 0x1B } else { 0x08 });
        (cpu, m)
    }

    #[test]
    fn lar_returns_access_rights_of_visible_descriptors() {
        let (cpu, mut m) = setup(0);
        assert_eq!(lar(&cpu, &mut m, 0x08).unwrap(), Some(0x00CF_9B00));
        assert_eq!(lar(&cpu, &mut m, 0x1B).unwrap(), Some(0x0040_F300));
        assert_eq!(lar(&cpu, &mut m, 0x20).unwrap(), Some(0x0000_8B00));
        assert_eq!(
            lar(&cpu, &mut m, 0x38).unwrap(),
            None,
            "interrupt gates are invisible to LAR"
        );
        assert_eq!(lar(&cpu, &mut m, 0).unwrap(), None);
        assert_eq!(lar(&cpu, &mut m, 0x40).unwrap(), None, "past the GDT limit");
        assert_eq!(
            lar(&cpu, &mut m, 0x13).unwrap(),
            None,
            "RPL 3 hides a DPL-0 segment"
        );
    }

    #[test]
    fn user_mode_sees_only_dpl3_descriptors() {
        let (cpu, mut m) = setup(3);
        assert_eq!(lar(&cpu, &mut m, 0x10).unwrap(), None);
        assert_eq!(lsl(&cpu, &mut m, 0x1B).unwrap(), Some(0xFFF));
        assert!(!verr(&cpu, &mut m, 0x10).unwrap());
        assert!(verw(&cpu, &mut m, 0x1B).unwrap());
    }

    #[test]
    fn lsl_applies_granularity_and_refuses_gates() {
        let (cpu, mut m) = setup(0);
        assert_eq!(lsl(&cpu, &mut m, 0x08).unwrap(), Some(0xFFFF_FFFF));
        assert_eq!(lsl(&cpu, &mut m, 0x20).unwrap(), Some(0x67));
        assert_eq!(lsl(&cpu, &mut m, 0x38).unwrap(), None);
    }

    #[test]
    fn verr_and_verw_follow_read_and_write_permissions() {
        let (cpu, mut m) = setup(0);
        assert!(verr(&cpu, &mut m, 0x08).unwrap(), "readable code");
        assert!(!verw(&cpu, &mut m, 0x08).unwrap(), "code is never writable");
        assert!(!verr(&cpu, &mut m, 0x28).unwrap(), "execute-only code");
        assert!(
            verr(&cpu, &mut m, 0x30).unwrap(),
            "read-only data is readable"
        );
        assert!(!verw(&cpu, &mut m, 0x30).unwrap(), "read-only data");
        assert!(verw(&cpu, &mut m, 0x10).unwrap());
        assert!(
            !verr(&cpu, &mut m, 0x20).unwrap(),
            "system segments are not readable"
        );
    }
}
