//! Shadow segments: each guest segment register is shadowed by an LDT entry
//! of this process with the guest descriptor's base, limit and type at DPL 3;
//! translated code's shadows (the kernel view) have their limit truncated
//! below the monitor region, guest user code's keep the guest's.

use x86::Segment;

use super::error::MonitorError;
use crate::contract::{Layout, REGION_SIZE, VECTOR_GATE_OFFSET};

/// Which guest segment register a shadow LDT slot belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// CS.
    Cs = 0,
    /// SS.
    Ss = 1,
    /// DS.
    Ds = 2,
    /// ES.
    Es = 3,
    /// FS.
    Fs = 4,
    /// GS.
    Gs = 5,
}

/// First LDT index the monitor uses. The shadows live at the top of the
/// 8192-entry LDT, where a guest's own LDT selectors are unlikely to point:
/// a guest that loads one of *its* LDT selectors at CPL 3 then meets an
/// empty host entry and faults, and the monitor redoes the load against
/// the guest's tables, instead of silently getting a shadow.
const FIRST_ENTRY: u32 = 8184;

/// Which code a shadow is for. Each has its own six LDT slots, so that
/// going from guest kernel to guest user code and back rewrites no entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Translated guest kernel code: limits truncated below the monitor
    /// region, which is open while translated code runs.
    Kernel = 0,
    /// Directly executed guest user code: the guest's limits as they are
    /// (the monitor region is closed then, and guest kernel pages are
    /// hidden), so that an offset wrapping around 4 GiB, as glibc's TLS
    /// offsets below GS do, works as on the guest's CPU.
    User = 1,
}

/// First LDT index of the user view's slots, right below the kernel's.
const FIRST_USER_ENTRY: u32 = FIRST_ENTRY - 8;

impl Slot {
    /// LDT index of this slot in `view`.
    pub const fn entry(self, view: View) -> u32 {
        match view {
            View::Kernel => FIRST_ENTRY + self as u32,
            View::User => FIRST_USER_ENTRY + self as u32,
        }
    }

    /// The host selector of this slot in `view`: LDT (TI=1), RPL 3.
    pub const fn selector(self, view: View) -> u16 {
        ((self.entry(view) as u16) << 3) | 4 | 3
    }
}

/// The `struct user_desc` of modify_ldt(2).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserDesc {
    /// LDT index.
    pub entry_number: u32,
    /// Linear base.
    pub base_addr: u32,
    /// 20-bit limit, in bytes or in pages.
    pub limit: u32,
    /// seg_32bit:1 contents:2 read_exec_only:1 limit_in_pages:1
    /// seg_not_present:1 useable:1 lm:1.
    pub flags: u32,
}

const F_SEG_32BIT: u32 = 1 << 0;
const CONTENTS_SHIFT: u32 = 1;
const F_READ_EXEC_ONLY: u32 = 1 << 3;
const F_LIMIT_IN_PAGES: u32 = 1 << 4;

/// Contents values of user_desc.
const CONTENTS_DATA: u32 = 0;
const CONTENTS_CODE: u32 = 2;
const CONTENTS_CODE_CONFORMING: u32 = 3;

/// Builds the LDT entry that shadows `seg` in `slot`.
///
/// The shadow is DPL 3 whatever the guest's DPL, and its last byte lies
/// below the base of the monitor region `layout` places, so that guest
/// accesses into the region fault (a guard, not a security boundary: see
/// design.md section 3). A segment based at or above that base is refused:
/// with the region at the top of the 32-bit space, as now, that base is in
/// the region.
pub fn shadow_descriptor(
    slot: Slot,
    view: View,
    seg: &Segment,
    layout: Layout,
) -> Result<UserDesc, MonitorError> {
    let unsupported = |why: &str| MonitorError::Segment(format!("{slot:?} {why}: {seg:?}"));
    if !seg.s {
        return Err(unsupported("is a system segment"));
    }
    if !seg.present {
        return Err(unsupported("is not present"));
    }
    let top = layout.base();
    if view == View::Kernel && seg.base >= top {
        return Err(unsupported("has its base in the monitor region"));
    }
    let code = seg.is_code();
    if !code && seg.typ & 0x4 != 0 {
        // TODO: expand-down data segments cover [limit+1, 4 GiB) and would
        // need their lower bound raised instead; no guest of ours uses them.
        return Err(unsupported("is expand-down"));
    }
    let limit = match view {
        View::Kernel => seg.limit.min(top - 1 - seg.base),
        View::User => seg.limit,
    };
    let (limit_field, pages) = if limit > 0xF_FFFF {
        // Round down to whole pages: the shadow may only ever be smaller.
        (((u64::from(limit) + 1) >> 12) as u32 - 1, true)
    } else {
        (limit, false)
    };
    let contents = match (code, seg.typ & 0x4 != 0) {
        (true, true) => CONTENTS_CODE_CONFORMING,
        (true, false) => CONTENTS_CODE,
        (false, _) => CONTENTS_DATA,
    };
    // Bit 1 of the type is "readable" for code and "writable" for data; the
    // user_desc bit is its negation in both cases.
    let read_exec_only = seg.typ & 0x2 == 0;
    let mut flags = contents << CONTENTS_SHIFT;
    if seg.db {
        flags |= F_SEG_32BIT;
    }
    if read_exec_only {
        flags |= F_READ_EXEC_ONLY;
    }
    if pages {
        flags |= F_LIMIT_IN_PAGES;
    }
    Ok(UserDesc {
        entry_number: slot.entry(view),
        base_addr: seg.base,
        limit: limit_field,
        flags,
    })
}

/// Writes one LDT entry of this process with modify_ldt(1).
pub fn write_entry(desc: &UserDesc) -> Result<(), MonitorError> {
    // SAFETY: modify_ldt only reads `size_of::<UserDesc>()` bytes from the
    // pointer, which points at a live, properly laid out user_desc. Changing
    // the LDT cannot break the host: the host's own code uses GDT selectors.
    let r = unsafe {
        libc::syscall(
            libc::SYS_modify_ldt,
            1,
            desc as *const UserDesc,
            std::mem::size_of::<UserDesc>(),
        )
    };
    if r != 0 {
        return Err(MonitorError::Host(format!(
            "modify_ldt({desc:?}): {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// LDT index of the monitor's flat 32-bit code segment, which translated
/// code runs on (the guest's CS base is applied at translation time).
const MONITOR_CODE_ENTRY: u32 = FIRST_ENTRY + 6;
/// LDT index of the monitor's data segment over its region, which
/// translated code reaches through GS.
const MONITOR_DATA_ENTRY: u32 = FIRST_ENTRY + 7;

/// Host selector of the monitor's flat code segment (LDT, RPL 3).
pub const MONITOR_CS: u16 = ((MONITOR_CODE_ENTRY as u16) << 3) | 4 | 3;
/// Host selector of the monitor's data segment (LDT, RPL 3).
pub const MONITOR_GS: u16 = ((MONITOR_DATA_ENTRY as u16) << 3) | 4 | 3;
/// LDT index of the monitor's data segment for runs of translated code
/// without the guest's vector state: it stops below the vector gate.
const MONITOR_LAZY_DATA_ENTRY: u32 = FIRST_USER_ENTRY + 7;
/// Host selector of that segment (LDT, RPL 3).
pub const MONITOR_GS_LAZY: u16 = ((MONITOR_LAZY_DATA_ENTRY as u16) << 3) | 4 | 3;

/// Writes the monitor's three LDT entries: flat 4 GiB 32-bit code, and
/// data over the monitor region `layout` places, whole and without the
/// vector gate.
pub fn install_monitor_segments(layout: Layout) -> Result<(), MonitorError> {
    write_entry(&UserDesc {
        entry_number: MONITOR_CODE_ENTRY,
        base_addr: 0,
        limit: 0xF_FFFF,
        flags: F_SEG_32BIT | (CONTENTS_CODE << CONTENTS_SHIFT) | F_LIMIT_IN_PAGES,
    })?;
    // The lazy one stops below the vector gate.
    for (entry, end) in [
        (MONITOR_DATA_ENTRY, REGION_SIZE),
        (MONITOR_LAZY_DATA_ENTRY, VECTOR_GATE_OFFSET),
    ] {
        write_entry(&UserDesc {
            entry_number: entry,
            base_addr: layout.base(),
            limit: end / 4096 - 1,
            flags: F_SEG_32BIT | (CONTENTS_DATA << CONTENTS_SHIFT) | F_LIMIT_IN_PAGES,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel-view shadow of `seg` under the region where
    /// `Monitor::new` puts it.
    fn shadow_descriptor(slot: Slot, seg: &Segment) -> Result<UserDesc, MonitorError> {
        super::shadow_descriptor(slot, View::Kernel, seg, Layout::DEFAULT)
    }

    fn user_code() -> Segment {
        let mut s = Segment::flat_code32(0x1B);
        s.dpl = 3;
        s
    }

    #[test]
    fn flat_segments_stop_below_the_monitor() {
        let d = shadow_descriptor(Slot::Cs, &user_code()).unwrap();
        assert_eq!(d.base_addr, 0);
        assert_eq!(d.limit, 0xFFBFF);
        assert_eq!(
            d.flags,
            F_SEG_32BIT | (CONTENTS_CODE << 1) | F_LIMIT_IN_PAGES
        );
        let d = shadow_descriptor(Slot::Ds, &Segment::flat_data32(0x23)).unwrap();
        assert_eq!(d.limit, 0xFFBFF);
        assert_eq!(d.flags, F_SEG_32BIT | F_LIMIT_IN_PAGES);
        assert_eq!(d.entry_number, Slot::Ds.entry(View::Kernel));
    }

    #[test]
    fn small_segments_keep_their_byte_limit() {
        let mut s = Segment::flat_data32(0x23);
        s.base = 0x1000;
        s.limit = 0x1234;
        s.typ = 0x1; // read-only data
        s.db = false;
        let d = shadow_descriptor(Slot::Es, &s).unwrap();
        assert_eq!((d.base_addr, d.limit), (0x1000, 0x1234));
        assert_eq!(d.flags, F_READ_EXEC_ONLY);
    }

    #[test]
    fn a_high_base_truncates_to_the_monitor() {
        let mut s = Segment::flat_data32(0x23);
        s.base = 0xC000_0000;
        let d = shadow_descriptor(Slot::Fs, &s).unwrap();
        // 0xC0000000 + (0x3FBFF + 1) * 4096 - 1 = 0xFFBFFFFF
        assert_eq!(d.limit, 0x3FBFF);
        s.base = 0xFFC0_0000;
        assert!(shadow_descriptor(Slot::Fs, &s).is_err());
    }

    #[test]
    fn user_shadows_keep_the_guests_limit_so_offsets_wrap() {
        // glibc's TLS: GS based at the thread pointer, 4 GiB limit, and
        // variables at negative offsets from it.
        let mut s = Segment::flat_data32(0x33);
        s.base = 0x0898_2380;
        let d = super::shadow_descriptor(Slot::Gs, View::User, &s, Layout::DEFAULT).unwrap();
        assert_eq!((d.base_addr, d.limit), (0x0898_2380, 0xFFFFF));
        assert_eq!(d.entry_number, Slot::Gs.entry(View::User));
        assert_ne!(Slot::Gs.entry(View::User), Slot::Gs.entry(View::Kernel));
        // The kernel view of the same segment stops below the region.
        let d = shadow_descriptor(Slot::Gs, &s).unwrap();
        assert!(u64::from(d.base_addr) + (u64::from(d.limit) + 1) * 4096 <= 0xFFC0_0000);
    }

    #[test]
    fn selectors_are_ldt_rpl3() {
        // Index 8184 = 0xFFC0 >> 3: the top of the LDT.
        assert_eq!(Slot::Cs.selector(View::Kernel), 0xFFC7);
        assert_eq!(Slot::Gs.selector(View::Kernel), 0xFFEF);
        assert_eq!(Slot::Cs.selector(View::User), 0xFF87);
        assert_eq!(MONITOR_CS, 0xFFF7);
        assert_eq!(MONITOR_GS, 0xFFFF);
        assert_eq!(MONITOR_GS_LAZY, 0xFFBF);
    }
}
