//! Translations of hand-assembled blocks, checked byte for byte where the
//! bytes are the point (IDENT copies, re-encoded branches) and by record
//! otherwise.

use super::*;
use crate::cache::Context;
use iced_x86::{Code, Decoder, DecoderOptions};

const HOST: u32 = 0x10_0000;
const MISS: u32 = 0x20_0000;

fn key(eip: u32) -> BlockKey {
    BlockKey {
        eip,
        ctx: Context {
            cs_base: 0,
            cpl: 0,
            code32: true,
            paging: false,
            step: false,
        },
    }
}

fn translate(eip: u32, code: &[u8]) -> Translation {
    Translator::new(MISS)
        .translate(key(eip), code, GuestPage(eip >> 12), HOST)
        .expect("translates")
}

#[test]
fn innocuous_instructions_are_copied_verbatim_up_to_the_branch() {
    // mov eax, 1; add eax, ebx; jmp +0x10
    let code = [0xB8, 1, 0, 0, 0, 0x01, 0xD8, 0xEB, 0x10];
    let t = translate(0x1000, &code);
    assert_eq!(&t.code[..7], &code[..7]);
    assert_eq!(t.block.guest_len, 9);
    let eips: Vec<u32> = t.block.insns.iter().map(|m| m.guest_eip).collect();
    assert_eq!(eips, [0x1000, 0x1005, 0x1007]);
    // The JMP became one chainable exit to its guest target.
    assert_eq!(t.block.exits.len(), 1);
    assert_eq!(t.block.exits[0].0, 0x1009 + 0x10);
    assert_eq!(t.code[t.block.exits[0].1 as usize], 0xE9);
}

#[test]
fn jcc_keeps_its_condition_and_gets_two_exits() {
    // cmp eax, ebx; jne -4 (short)
    let code = [0x39, 0xD8, 0x75, 0xFC];
    let t = translate(0x2000, &code);
    assert_eq!(&t.code[..2], &[0x39, 0xD8]);
    // jne rel32 = +5, over the not-taken exit's jmp.
    assert_eq!(&t.code[2..8], &[0x0F, 0x85, 5, 0, 0, 0]);
    assert_eq!(t.block.exits, vec![(0x2004, 8), (0x2000, 13)]);
}

#[test]
fn every_condition_code_maps_to_its_opcode() {
    for cc in 0u8..16 {
        let code = [0x70 + cc, 0x02];
        let t = translate(0x3000, &code);
        assert_eq!(&t.code[..2], &[0x0F, 0x80 + cc], "cc {cc:x}");
    }
}

#[test]
fn loop_keeps_its_rel8_form() {
    let code = [0xE2, 0xFE]; // loop $
    let t = translate(0x3000, &code);
    assert_eq!(&t.code[..2], &[0xE2, 5]);
    assert_eq!(t.block.exits, vec![(0x3002, 2), (0x3000, 7)]);
}

#[test]
fn call_pushes_the_guest_return_address() {
    let code = [0xE8, 0x10, 0, 0, 0]; // call +0x10
    let t = translate(0x4000, &code);
    // push 0x4005
    assert_eq!(&t.code[..5], &[0x68, 0x05, 0x40, 0, 0]);
    assert_eq!(t.block.exits, vec![(0x4015, 5)]);
}

#[test]
fn privileged_instructions_become_callouts_that_end_the_block() {
    let code = [0x90, 0xF4, 0x90]; // nop; hlt; nop
    let t = translate(0x5000, &code);
    assert_eq!(t.block.insns.len(), 2);
    assert_eq!(t.block.guest_len, 2);
    assert!(t.block.exits.is_empty());
    // gs mov dword [tc_arg], 0x5001
    let arg = std::mem::offset_of!(crate::contract::VcpuArea, tc_arg) as u32;
    let mut want = vec![0x65, 0xC7, 0x05];
    want.extend(arg.to_le_bytes());
    want.extend(0x5001u32.to_le_bytes());
    assert_eq!(&t.code[1..1 + want.len()], &want[..]);
}

#[test]
fn a_data_instruction_that_reached_a_device_becomes_a_callout() {
    // mov [ebx], eax; mov eax, 1; ret: the store reached a device before.
    let code = [0x89, 0x03, 0xB8, 1, 0, 0, 0, 0xC3];
    let mut tr = Translator::new(MISS);
    assert!(tr.callout_at(0x6000));
    assert!(!tr.callout_at(0x6000), "known already");
    let t = tr
        .translate(key(0x6000), &code, GuestPage(6), HOST)
        .expect("translates");
    // The block is the callout alone, with the store's EIP as its argument.
    assert_eq!(t.block.insns.len(), 1);
    assert_eq!(t.block.guest_len, 2);
    let arg = std::mem::offset_of!(crate::contract::VcpuArea, tc_arg) as u32;
    let mut want = vec![0x65, 0xC7, 0x05];
    want.extend(arg.to_le_bytes());
    want.extend(0x6000u32.to_le_bytes());
    assert_eq!(&t.code[..want.len()], &want[..]);
    // The next instruction, another site's neighbour, is copied as before.
    let t = tr
        .translate(key(0x6002), &code[2..], GuestPage(6), HOST)
        .expect("translates");
    assert_eq!(&t.code[..5], &code[2..7]);
}

// ---- CLI, STI, PUSHF and POPF inline on the virtual CPU ------------------

/// The host code of guest instruction `i` of `t` (up to the next one or
/// the exit stubs), disassembled one instruction a line, with vCPU-area
/// offsets named and short branches shown as the bytes they skip.
fn listing(t: &Translation, i: usize) -> Vec<String> {
    use crate::contract::VcpuArea;
    use iced_x86::{Formatter, IntelFormatter};
    use std::mem::offset_of;
    let start = t.block.insns[i].host_offset as usize;
    let end = t
        .block
        .insns
        .get(i + 1)
        .map(|m| m.host_offset as usize)
        .or_else(|| t.block.exits.first().map(|e| e.1 as usize))
        .unwrap_or(t.code.len());
    let scratch = offset_of!(VcpuArea, scratch);
    let inlined = offset_of!(VcpuArea, inlined);
    let guest_sel = offset_of!(VcpuArea, guest_sel);
    let guest_cr = offset_of!(VcpuArea, guest_cr);
    let names = [
        (offset_of!(VcpuArea, tc_reason), "tc_reason"),
        (offset_of!(VcpuArea, tc_arg), "tc_arg"),
        (offset_of!(VcpuArea, exit_far), "exit_far"),
        (scratch, "saved_eax"),
        (scratch + 4, "saved_ecx"),
        (scratch + 8, "popped"),
        (offset_of!(VcpuArea, vsys), "vsys"),
        (offset_of!(VcpuArea, vif), "vif"),
        (offset_of!(VcpuArea, irq_pending), "irq_pending"),
        (offset_of!(VcpuArea, sti_shadow_at), "sti_shadow_at"),
        (inlined, "inlined.cli"),
        (inlined + 4, "inlined.sti"),
        (inlined + 8, "inlined.pushf"),
        (inlined + 12, "inlined.popf"),
        (inlined + 16, "inlined.push_sreg"),
        (inlined + 20, "inlined.mov_from_sreg"),
        (inlined + 24, "inlined.mov_from_cr"),
        (guest_sel, "sel.cs"),
        (guest_sel + 4, "sel.ss"),
        (guest_sel + 8, "sel.ds"),
        (guest_sel + 12, "sel.es"),
        (guest_sel + 16, "sel.fs"),
        (guest_sel + 20, "sel.gs"),
        (guest_cr, "cr0"),
        (guest_cr + 8, "cr2"),
        (guest_cr + 12, "cr3"),
        (guest_cr + 16, "cr4"),
    ];
    let ip = u64::from(HOST) + start as u64;
    let mut dec = Decoder::with_ip(32, &t.code[start..end], ip, DecoderOptions::NONE);
    let mut fmt = IntelFormatter::new();
    fmt.options_mut().set_hex_prefix("0x");
    fmt.options_mut().set_hex_suffix("");
    fmt.options_mut().set_uppercase_hex(false);
    fmt.options_mut().set_space_after_operand_separator(true);
    let mut out = Vec::new();
    for insn in &mut dec {
        let mut text = String::new();
        fmt.format(&insn, &mut text);
        for (off, name) in names {
            text = text.replace(&format!("gs:[{off:#x}]"), &format!("gs:[{name}]"));
        }
        if insn.is_jcc_short_or_near() || insn.is_jmp_short() || insn.code() == Code::Jecxz_rel8_32
        {
            // Bytes skipped, as the rel8 says.
            let rel = insn.near_branch32() - insn.next_ip32();
            let mnemonic = text.split(' ').next().unwrap().to_string();
            text = format!("{mnemonic} +{rel:#x}");
        }
        out.push(text);
    }
    out
}

/// Where in `code` the bytes `needle` start.
fn find(code: &[u8], needle: &[u8]) -> Option<usize> {
    code.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn cli_clears_the_virtual_if_inline_and_the_block_goes_on() {
    let code = [0x90, 0xFA, 0x90]; // nop; cli; nop
    let t = translate(0x5000, &code);
    assert_eq!(t.block.insns.len(), 3, "CLI does not end the block");
    assert_eq!(t.block.exits, vec![(0x5003, t.block.exits[0].1)]);
    assert_eq!(
        listing(&t, 1),
        [
            "mov word ptr gs:[vif], 0",
            "mov gs:[saved_ecx], ecx",
            "mov ecx, gs:[inlined.cli]",
            "lea ecx, [ecx+1]",
            "mov gs:[inlined.cli], ecx",
            "mov ecx, gs:[saved_ecx]",
        ]
    );
    // The first instruction does the work: 65 66 C7 05 <vif> 00 00.
    let vif = std::mem::offset_of!(crate::contract::VcpuArea, vif) as u32;
    let mut want = vec![0x65, 0x66, 0xC7, 0x05];
    want.extend(vif.to_le_bytes());
    want.extend([0, 0]);
    assert_eq!(&t.code[1..1 + want.len()], &want[..]);
}

/// The counting tail every selector or CR read ends or starts with.
fn counted(kind: &str) -> Vec<String> {
    [
        "mov gs:[saved_ecx], ecx".to_string(),
        format!("mov ecx, gs:[inlined.{kind}]"),
        "lea ecx, [ecx+1]".to_string(),
        format!("mov gs:[inlined.{kind}], ecx"),
        "mov ecx, gs:[saved_ecx]".to_string(),
    ]
    .to_vec()
}

#[test]
fn push_sreg_pushes_the_guest_selector_from_the_vcpu_area() {
    // push ds; push cs; o16 push es; nop
    let t = translate(0x5000, &[0x1E, 0x0E, 0x66, 0x06, 0x90]);
    assert_eq!(t.block.insns.len(), 4, "PUSH Sreg does not end the block");
    let mut want = vec!["push dword ptr gs:[sel.ds]".to_string()];
    want.extend(counted("push_sreg"));
    assert_eq!(listing(&t, 0), want);
    assert_eq!(listing(&t, 1)[0], "push dword ptr gs:[sel.cs]");
    assert_eq!(listing(&t, 2)[0], "push word ptr gs:[sel.es]");
    // The push comes first, so a stack fault is at the boundary.
    assert_eq!(&t.code[..3], &[0x65, 0xFF, 0x35]);
}

#[test]
fn mov_from_sreg_to_a_register_reads_the_vcpu_area() {
    // mov eax, ds; mov cx, ss; mov esi, gs; mov [eax], ds
    let t = translate(
        0x5000,
        &[0x8C, 0xD8, 0x66, 0x8C, 0xD1, 0x8C, 0xEE, 0x8C, 0x18],
    );
    assert_eq!(t.block.insns.len(), 4);
    let mut want = counted("mov_from_sreg");
    want.push("mov eax, gs:[sel.ds]".to_string());
    assert_eq!(listing(&t, 0), want);
    // ECX is the count's scratch: the read comes after it is restored,
    // and a 16-bit destination keeps its upper half.
    assert_eq!(listing(&t, 1).last().unwrap(), "mov cx, gs:[sel.ss]");
    assert_eq!(listing(&t, 2).last().unwrap(), "mov esi, gs:[sel.gs]");
    // A memory destination stays a callout: it ends the block.
    assert_eq!(
        listing(&t, 3)[0],
        format!("mov dword ptr gs:[tc_arg], {:#x}", 0x5007)
    );
}

#[test]
fn a_segment_load_from_memory_reads_the_selector_with_the_guests_operand() {
    // mov fs, [esp + 0x28] (Linux's SYSEXIT path); nop
    let t = translate(0x5000, &[0x8E, 0x64, 0x24, 0x28, 0x90]);
    assert_eq!(
        t.block.insns.len(),
        2,
        "the load is inline: the block goes on"
    );
    let l = listing(&t, 0);
    assert_eq!(l[4], "movzx eax, word ptr [esp+0x28]", "{l:#?}");
    // Through GS, which is the monitor's in translated code: a callout.
    let t = translate(0x5000, &[0x65, 0x8E, 0x20, 0x90]);
    assert_eq!(t.block.insns.len(), 1);
    assert_eq!(
        listing(&t, 0)[0],
        format!("mov dword ptr gs:[tc_arg], {:#x}", 0x5000)
    );
}

#[test]
fn mov_from_cr_reads_the_vcpu_area_at_cpl0_only() {
    // mov ebx, cr3; mov edx, cr0; mov eax, cr2; mov edi, cr4
    let code = [
        0x0F, 0x20, 0xDB, 0x0F, 0x20, 0xC2, 0x0F, 0x20, 0xD0, 0x0F, 0x20, 0xE7,
    ];
    let t = translate(0x5000, &code);
    assert_eq!(t.block.insns.len(), 4);
    let mut want = counted("mov_from_cr");
    want.push("mov ebx, gs:[cr3]".to_string());
    assert_eq!(listing(&t, 0), want);
    assert_eq!(listing(&t, 1).last().unwrap(), "mov edx, gs:[cr0]");
    assert_eq!(listing(&t, 2).last().unwrap(), "mov eax, gs:[cr2]");
    assert_eq!(listing(&t, 3).last().unwrap(), "mov edi, gs:[cr4]");
    // CR1 does not exist: #UD is the emulator's business.
    let mut cr1 = vec![0x0F, 0x20, 0xC8];
    cr1.extend([0x90; 16]);
    let t = translate(0x5000, &cr1);
    assert_eq!(
        listing(&t, 0)[0],
        format!("mov dword ptr gs:[tc_arg], {:#x}", 0x5000)
    );
}

#[test]
fn pushf_builds_the_guest_image_with_lea_alone() {
    let t = translate(0x5000, &[0x9C, 0x90]); // pushfd; nop
    assert_eq!(t.block.insns.len(), 2);
    assert_eq!(
        listing(&t, 0),
        [
            "pushfd",
            "mov gs:[saved_eax], eax",
            "mov gs:[saved_ecx], ecx",
            "mov eax, [esp]",
            "mov ecx, gs:[vsys]",
            "lea eax, [eax+ecx-0x200]",
            "movzx ecx, word ptr gs:[vif]",
            "lea eax, [eax+ecx]",
            "mov [esp], eax",
            "mov ecx, gs:[inlined.pushf]",
            "lea ecx, [ecx+1]",
            "mov gs:[inlined.pushf], ecx",
            "mov eax, gs:[saved_eax]",
            "mov ecx, gs:[saved_ecx]",
        ]
    );
    // PUSHFD is the first byte, so a fault of the push is at the boundary.
    assert_eq!(t.code[0], 0x9C);
}

#[test]
fn popf_splits_the_value_between_the_virtual_cpu_and_the_host_flags() {
    let t = translate(0x5000, &[0x9D, 0x90]); // popfd; nop
    assert_eq!(t.block.insns.len(), 2, "POPF does not end the block");
    let next = 0x5001u32;
    assert_eq!(
        listing(&t, 0),
        [
            "pop dword ptr gs:[popped]",
            "mov gs:[saved_eax], eax",
            "mov gs:[saved_ecx], ecx",
            "mov ecx, gs:[inlined.popf]",
            "lea ecx, [ecx+1]",
            "mov gs:[inlined.popf], ecx",
            "mov eax, gs:[popped]",
            "and eax, 0x247100",
            "mov ecx, gs:[vsys]",
            "and ecx, 0x180000",
            "or ecx, eax",
            "mov gs:[vsys], ecx",
            "mov eax, gs:[popped]",
            "and eax, 0x200",
            "mov gs:[vif], ax",
            "movzx ecx, word ptr gs:[irq_pending]",
            "or ecx, 0x100",
            "and ecx, gs:[popped]",
            "mov eax, gs:[popped]",
            "test ah, 4",
            "je +0x3",
            "std",
            "jmp +0x1",
            "cld",
            "mov al, ah",
            "and al, 8",
            "add al, 0x78",
            "mov ah, gs:[popped]",
            "sahf",
            "mov eax, gs:[saved_eax]",
            "jecxz +0x24",
            "mov ecx, gs:[saved_ecx]",
            &format!("mov dword ptr gs:[tc_arg], {next:#x}"),
            &format!(
                "mov dword ptr gs:[tc_reason], {}",
                ExitReason::IrqWindow as u32
            ),
            "jmp far fword ptr gs:[exit_far]",
            "mov ecx, gs:[saved_ecx]",
        ]
    );
    // The guest's value never goes through POPFD: no 9D byte.
    assert_eq!(find(&t.code, &[0x9D]), None);
}

#[test]
fn sti_leaves_only_when_it_lets_a_waiting_interrupt_in() {
    let t = translate(0x5000, &[0xFB, 0xF4]); // sti; hlt
    let shadow = HOST + t.block.insns[1].host_offset;
    assert_eq!(
        listing(&t, 0),
        [
            "mov gs:[saved_ecx], ecx",
            "mov ecx, gs:[inlined.sti]",
            "lea ecx, [ecx+1]",
            "mov gs:[inlined.sti], ecx",
            "mov ecx, gs:[vif]",
            "mov word ptr gs:[vif], 0x200",
            "lea ecx, [ecx-0x2000000]",
            "jecxz +0x9",
            "mov ecx, gs:[saved_ecx]",
            "jmp +0x24",
            "mov ecx, gs:[saved_ecx]",
            "mov dword ptr gs:[tc_arg], 0x5001",
            &format!(
                "mov dword ptr gs:[tc_reason], {}",
                ExitReason::StiShadow as u32
            ),
            "jmp far fword ptr gs:[exit_far]",
            &format!("mov dword ptr gs:[sti_shadow_at], {shadow:#x}"),
        ]
    );
    // The HLT in STI's shadow is in the same block, right after.
    assert_eq!(t.block.insns[1].guest_eip, 0x5001);
}

#[test]
fn the_instruction_after_sti_stays_in_its_block() {
    // 63 NOPs, STI as the 64th instruction, then a NOP in its shadow.
    let mut code = vec![0x90; MAX_INSNS - 1];
    code.extend([0xFB, 0x90, 0x90]);
    let t = translate(0x6000, &code);
    assert_eq!(t.block.insns.len(), MAX_INSNS + 1);
    assert_eq!(t.block.exits[0].0, 0x6000 + MAX_INSNS as u32 + 1);
}

#[test]
fn sti_stays_a_callout_where_its_shadow_would_start_another_block() {
    let callout = |t: &Translation| t.block.exits.is_empty();
    // The last byte of a page.
    let mut code = vec![0xFB];
    code.extend([0x90; 15]);
    assert!(callout(&translate(0x8FFF, &code)));
    // Before an instruction that straddles the page end.
    let code = [0xFB, 0xB8, 1, 2, 3, 4];
    assert!(callout(&translate(0x8FFC, &code)));
    // In a one-instruction (step) block.
    let ctx = Context {
        step: true,
        ..key(0).ctx
    };
    let t = Translator::new(MISS)
        .translate(
            BlockKey { eip: 0x5000, ctx },
            &[0xFB, 0x90],
            GuestPage(5),
            HOST,
        )
        .unwrap();
    assert!(callout(&t));
    // With room after it, it is inline.
    assert!(!callout(&translate(0x8FFD, &[0xFB, 0x90, 0x90])));
}

#[test]
fn only_the_cpl0_32_bit_forms_are_inline() {
    let callout = |code: &[u8], cpl: u8| {
        let ctx = Context { cpl, ..key(0).ctx };
        let t = Translator::new(MISS)
            .translate(BlockKey { eip: 0x5000, ctx }, code, GuestPage(5), HOST)
            .unwrap();
        t.block.exits.is_empty()
    };
    assert!(callout(&[0x66, 0x9C, 0x90], 0), "16-bit PUSHF");
    assert!(callout(&[0x66, 0x9D, 0x90], 0), "16-bit POPF");
    for op in [0xFA, 0xFB, 0x9D] {
        assert!(!callout(&[op, 0x90, 0x90], 0), "{op:#x} at CPL 0");
        assert!(
            callout(&[op, 0x90, 0x90], 1),
            "{op:#x} at CPL 1 (IOPL decides)"
        );
    }
    assert!(!callout(&[0x9C, 0x90], 1), "PUSHFD is the same at any CPL");
    assert!(!callout(&[0x1E, 0x90], 1), "PUSH DS is the same at any CPL");
    assert!(!callout(&[0x8C, 0xD8, 0x90], 2), "so is MOV EAX, DS");
    assert!(
        !callout(&[0x0F, 0x20, 0xC0, 0x90], 0),
        "MOV EAX, CR0 at CPL 0"
    );
    assert!(
        callout(&[0x0F, 0x20, 0xC0, 0x90], 1),
        "MOV EAX, CR0 at CPL 1 (#GP)"
    );
}

#[test]
fn a_block_of_the_longest_rewrites_fits_a_chunk() {
    let t = translate(0x5000, &[0x9D; 100]);
    assert!(t.code.len() as u32 <= crate::cache::code::MIN_CHUNK);
    assert!(t.block.insns.len() < 100, "ended by MAX_BLOCK_BYTES");
    let mut code = vec![0x9D; 9];
    code.push(0xFB);
    code.extend([0x9D; 90]);
    let t = translate(0x5000, &code);
    assert!(t.code.len() as u32 <= crate::cache::code::MIN_CHUNK);
}

#[test]
fn ret_probes_the_table_and_misses_to_the_handler() {
    let t = translate(0x6000, &[0xC3]);
    assert!(t.block.exits.is_empty());
    let code = &t.code;
    // The miss jump lands on the shared handler.
    let jecxz = code.iter().position(|&b| b == 0xE3).expect("jecxz");
    // JECXZ, not JCXZ: no address-size prefix, and it skips the miss jump.
    assert_ne!(code[jecxz - 1], 0x67);
    assert_eq!(code[jecxz + 1], 5);
    assert_eq!(code[jecxz + 2], 0xE9);
    let rel = i32::from_le_bytes(code[jecxz + 3..jecxz + 7].try_into().unwrap());
    let after = HOST + jecxz as u32 + 7;
    assert_eq!(after.wrapping_add(rel as u32), MISS);
}

#[test]
fn indirect_jump_loads_its_target_with_the_guest_addressing() {
    // jmp [ebx*4 + 0x1000]
    let code = [0xFF, 0x24, 0x9D, 0x00, 0x10, 0x00, 0x00];
    let t = translate(0x7000, &code);
    // After saving EAX and ECX (two 7-byte stores): mov eax, [ebx*4+0x1000]
    assert_eq!(&t.code[14..21], &[0x8B, 0x04, 0x9D, 0x00, 0x10, 0x00, 0x00]);
}

#[test]
fn blocks_stop_at_the_page_end() {
    let mut code = vec![0x90; 4];
    code.extend([0x90; 15]);
    let t = translate(0x8FFC, &code);
    assert_eq!(t.block.guest_len, 4);
    assert_eq!(t.block.exits, vec![(0x9000, 4)]);
    assert_eq!(t.block.spill, None);
}

#[test]
fn a_straddling_first_instruction_names_the_next_page() {
    // mov eax, imm32 starting 2 bytes before the page end.
    let code = [0xB8, 1, 2, 3, 4, 0x90, 0x90];
    let t = translate(0x8FFE, &code);
    assert_eq!(t.block.guest_len, 5);
    assert_eq!(t.block.spill, Some(GuestPage(0x9)));
    assert_eq!(t.block.exits, vec![(0x9003, 5)]);
}

#[test]
fn unsupported_instructions_name_their_bytes() {
    let err = Translator::new(MISS)
        .translate(
            BlockKey {
                eip: 0x1000,
                ctx: Context {
                    code32: false,
                    ..Context::default()
                },
            },
            &[0x90],
            GuestPage(1),
            HOST,
        )
        .unwrap_err();
    assert!(err.to_string().contains("0x00001000 (90)"), "{err}");
}

#[test]
fn gs_override_borrows_fs_for_the_guest_gs() {
    // movzx eax, word gs:[0x10]
    let code = [0x65, 0x0F, 0xB7, 0x05, 0x10, 0, 0, 0, 0xFA];
    let t = translate(0x9000, &code);
    let area = |f: usize| (f as u32).to_le_bytes();
    use crate::contract::VcpuArea;
    use std::mem::offset_of;
    let mut want = vec![0x65, 0x8E, 0x25];
    want.extend(area(offset_of!(VcpuArea, guest_gs)));
    want.extend([0x64, 0x0F, 0xB7, 0x05, 0x10, 0, 0, 0]);
    want.extend([0x65, 0x8E, 0x25]);
    want.extend(area(offset_of!(VcpuArea, guest_fs)));
    assert_eq!(&t.code[..want.len()], &want[..]);
}

#[test]
fn rdtsc_runs_natively_while_the_guests_tsc_is_the_hosts() {
    // rdtsc; mov ebx, eax; ret
    let code = [0x0F, 0x31, 0x89, 0xC3, 0xC3];
    // A callout ends the block at the RDTSC; copied, the block runs on.
    let t = translate(0x6000, &code);
    assert_eq!(
        &t.code[..4],
        &code[..4],
        "RDTSC and the MOV copied as they are"
    );
    assert_eq!(t.block.guest_len, 5);
    // With an offset (the guest wrote IA32_TSC) it is a callout again.
    let mut tr = Translator::new(MISS);
    tr.set_native_tsc(false);
    let t = tr
        .translate(key(0x6000), &code, GuestPage(6), HOST)
        .unwrap();
    assert_eq!(t.block.guest_len, 2);
    assert_ne!(&t.code[..2], &code[..2]);
    // Above CPL 0, CR4.TSD may make it fault: a callout.
    let ctx = Context {
        cpl: 3,
        ..key(0).ctx
    };
    let t = Translator::new(MISS)
        .translate(BlockKey { eip: 0x6000, ctx }, &code, GuestPage(6), HOST)
        .unwrap();
    assert_eq!(t.block.guest_len, 2);
}

#[test]
fn iretd_and_sysexit_leave_with_reasons_of_their_own_and_a_16_bit_iret_as_a_callout() {
    for (bytes, reason) in [
        (&[0xCF][..], ExitReason::Iret),
        (&[0x0F, 0x35][..], ExitReason::Sysexit),
        (&[0x66, 0xCF][..], ExitReason::Callout),
    ] {
        let t = translate(0x5000, bytes);
        assert_eq!(
            listing(&t, 0),
            [
                "mov dword ptr gs:[tc_arg], 0x5000",
                &format!("mov dword ptr gs:[tc_reason], {}", reason as u32),
                "jmp far fword ptr gs:[exit_far]",
            ],
            "{bytes:02x?}"
        );
    }
}
