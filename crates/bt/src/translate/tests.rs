//! Translations of hand-assembled blocks, checked byte for byte where the
//! bytes are the point (IDENT copies, re-encoded branches) and by record
//! otherwise.

use super::*;
use crate::cache::Context;

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
    let code = [0x90, 0xFA, 0x90]; // nop; cli; nop
    let t = translate(0x5000, &code);
    assert_eq!(t.block.insns.len(), 2);
    assert_eq!(t.block.guest_len, 2);
    assert!(t.block.exits.is_empty());
    // gs mov dword [tc_arg], 0x5001
    let arg = std::mem::offset_of!(crate::monitor::switch::VcpuArea, tc_arg) as u32;
    let mut want = vec![0x65, 0xC7, 0x05];
    want.extend(arg.to_le_bytes());
    want.extend(0x5001u32.to_le_bytes());
    assert_eq!(&t.code[1..1 + want.len()], &want[..]);
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
    use crate::monitor::switch::VcpuArea;
    use std::mem::offset_of;
    let mut want = vec![0x65, 0x8E, 0x25];
    want.extend(area(offset_of!(VcpuArea, guest_gs)));
    want.extend([0x64, 0x0F, 0xB7, 0x05, 0x10, 0, 0, 0]);
    want.extend([0x65, 0x8E, 0x25]);
    want.extend(area(offset_of!(VcpuArea, guest_fs)));
    assert_eq!(&t.code[..want.len()], &want[..]);
}
