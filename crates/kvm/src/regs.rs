//! Conversion between popek's architectural state and KVM's register structs.

use kvm_bindings::{kvm_dtable, kvm_regs, kvm_segment, kvm_sregs};
use x86::{CpuState, Segment, TableRegister};

fn to_kvm_segment(s: &Segment) -> kvm_segment {
    kvm_segment {
        base: u64::from(s.base),
        limit: s.limit,
        selector: s.selector,
        type_: s.typ,
        present: s.present as u8,
        dpl: s.dpl,
        db: s.db as u8,
        s: s.s as u8,
        l: 0,
        g: s.g as u8,
        avl: s.avl as u8,
        // KVM wants null protected-mode selectors marked unusable, as VMX does.
        unusable: (!s.present) as u8,
        padding: 0,
    }
}

fn from_kvm_segment(k: &kvm_segment) -> Segment {
    Segment {
        selector: k.selector,
        base: k.base as u32,
        limit: k.limit,
        typ: k.type_,
        s: k.s != 0,
        dpl: k.dpl,
        present: k.present != 0 && k.unusable == 0,
        db: k.db != 0,
        g: k.g != 0,
        avl: k.avl != 0,
    }
}

fn to_dtable(t: &TableRegister) -> kvm_dtable {
    kvm_dtable {
        base: u64::from(t.base),
        limit: t.limit,
        padding: [0; 3],
    }
}

/// Writes `state` into KVM's general and special register sets.
pub fn to_kvm(state: &CpuState, regs: &mut kvm_regs, sregs: &mut kvm_sregs) {
    regs.rax = u64::from(state.eax);
    regs.rbx = u64::from(state.ebx);
    regs.rcx = u64::from(state.ecx);
    regs.rdx = u64::from(state.edx);
    regs.rsi = u64::from(state.esi);
    regs.rdi = u64::from(state.edi);
    regs.rsp = u64::from(state.esp);
    regs.rbp = u64::from(state.ebp);
    regs.rip = u64::from(state.eip);
    regs.rflags = u64::from(state.eflags);
    sregs.cs = to_kvm_segment(&state.cs);
    sregs.ds = to_kvm_segment(&state.ds);
    sregs.es = to_kvm_segment(&state.es);
    sregs.fs = to_kvm_segment(&state.fs);
    sregs.gs = to_kvm_segment(&state.gs);
    sregs.ss = to_kvm_segment(&state.ss);
    sregs.tr = to_kvm_segment(&state.tr);
    sregs.ldt = to_kvm_segment(&state.ldtr);
    sregs.gdt = to_dtable(&state.gdtr);
    sregs.idt = to_dtable(&state.idtr);
    sregs.cr0 = u64::from(state.cr0);
    sregs.cr2 = u64::from(state.cr2);
    sregs.cr3 = u64::from(state.cr3);
    sregs.cr4 = u64::from(state.cr4);
    sregs.efer = state.efer;
}

/// Reads KVM's register sets back into popek's architectural state.
pub fn from_kvm(regs: &kvm_regs, sregs: &kvm_sregs) -> CpuState {
    CpuState {
        eax: regs.rax as u32,
        ebx: regs.rbx as u32,
        ecx: regs.rcx as u32,
        edx: regs.rdx as u32,
        esi: regs.rsi as u32,
        edi: regs.rdi as u32,
        esp: regs.rsp as u32,
        ebp: regs.rbp as u32,
        eip: regs.rip as u32,
        eflags: regs.rflags as u32,
        cs: from_kvm_segment(&sregs.cs),
        ds: from_kvm_segment(&sregs.ds),
        es: from_kvm_segment(&sregs.es),
        fs: from_kvm_segment(&sregs.fs),
        gs: from_kvm_segment(&sregs.gs),
        ss: from_kvm_segment(&sregs.ss),
        tr: from_kvm_segment(&sregs.tr),
        ldtr: from_kvm_segment(&sregs.ldt),
        gdtr: TableRegister {
            base: sregs.gdt.base as u32,
            limit: sregs.gdt.limit,
        },
        idtr: TableRegister {
            base: sregs.idt.base as u32,
            limit: sregs.idt.limit,
        },
        cr0: sregs.cr0 as u32,
        cr2: sregs.cr2 as u32,
        cr3: sregs.cr3 as u32,
        cr4: sregs.cr4 as u32,
        efer: sregs.efer,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_kvm_structs() {
        let mut s = CpuState::reset();
        s.cr0 |= x86::state::cr0::PE;
        s.cs = Segment::flat_code32(0x10);
        s.ds = Segment::flat_data32(0x18);
        s.fs = Segment::unusable();
        s.eax = 0x2BAD_B002;
        s.esi = 0x7000;
        s.gdtr = TableRegister {
            base: 0x1000,
            limit: 0x1F,
        };
        let (mut r, mut sr) = (kvm_regs::default(), kvm_sregs::default());
        to_kvm(&s, &mut r, &mut sr);
        assert_eq!(sr.fs.unusable, 1);
        assert_eq!(sr.cs.db, 1);
        let back = from_kvm(&r, &sr);
        assert_eq!(back.eax, s.eax);
        assert_eq!(back.cs, s.cs);
        assert_eq!(back.ds, s.ds);
        assert_eq!(back.fs, s.fs);
        assert_eq!(back.gdtr, s.gdtr);
        assert_eq!(back.cr0, s.cr0);
    }
}
