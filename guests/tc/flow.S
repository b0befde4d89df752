/*
 * Control flow the tc guest needs exactly as written, which C cannot
 * promise: a call/ret chain of known depth and frame size, indirect jumps
 * through a table of our own, the odd ways of using CALL and RET that a
 * translator must copy faithfully (CALL pushes the *guest* return address,
 * RET may be a jump, RET imm16, far CALL/RET), and a stack switch.
 *
 * Every routine follows the cdecl ABI: arguments on the stack, result in
 * EAX, EBX/ESI/EDI/EBP preserved.
 */
#define SEL_KCODE 0x08

	.text

/*
 * u32 call_on_stack(u32 (*fn)(void), void *top): runs fn on the stack that
 * ends at top and returns its result. fn keeps EBP (cdecl), which holds
 * the way back.
 */
	.globl call_on_stack
call_on_stack:
	pushl %ebp
	movl %esp, %ebp
	movl 8(%ebp), %eax
	movl 12(%ebp), %esp
	call *%eax
	movl %ebp, %esp
	popl %ebp
	ret

/*
 * u32 chain_sum(u32 n): n nested CALLs, each frame exactly 8 bytes (the
 * pushed argument and the return address), so the depth shows in ESP:
 * chain_top_esp - chain_bottom_esp = 4 + 8 * n. Returns 1 + 2 + ... + n,
 * summed on the way back up, so every RET must land where its CALL was.
 */
	.globl chain_sum, chain_top_esp, chain_bottom_esp
chain_sum:
	movl 4(%esp), %eax
	movl %esp, chain_top_esp
	call chain_level
	ret
chain_level:				/* EAX = levels still to go */
	testl %eax, %eax
	jnz 1f
	movl %esp, chain_bottom_esp
	ret
1:	pushl %eax
	decl %eax
	call chain_level
	popl %ecx
	addl %ecx, %eax
	ret

/*
 * u32 jump_table_dispatch(u32 op, u32 x): JMP *%eax to one of eight
 * handlers chosen by op & 7, each ending in its own RET.
 */
	.globl jump_table_dispatch
jump_table_dispatch:
	movl 4(%esp), %ecx
	andl $7, %ecx
	movl 8(%esp), %edx
	movl asm_handlers(,%ecx,4), %eax
	jmp *%eax
h0:	leal 1(%edx), %eax
	ret
h1:	leal (%edx,%edx,2), %eax
	ret
h2:	movl %edx, %eax
	xorl $0x5A5A5A5A, %eax
	ret
h3:	movl %edx, %eax
	roll $7, %eax
	ret
h4:	movl %edx, %eax
	notl %eax
	ret
h5:	movl %edx, %eax
	shrl $3, %eax
	ret
h6:	movl %edx, %eax
	negl %eax
	ret
h7:	leal 0x1000(%edx), %eax
	ret

/*
 * u32 jump_mem_dispatch(u32 op, u32 x): the same handlers reached with a
 * memory-indirect JMP *asm_handlers(,%ecx,4) (no register holds the target).
 */
	.globl jump_mem_dispatch
jump_mem_dispatch:
	movl 4(%esp), %ecx
	andl $7, %ecx
	movl 8(%esp), %edx
	jmp *asm_handlers(,%ecx,4)

/* u32 call_reg(u32 (*fn)(u32), u32 x): CALL *%eax, a register-indirect call. */
	.globl call_reg
call_reg:
	movl 4(%esp), %eax
	pushl 8(%esp)
	call *%eax
	addl $4, %esp
	ret

/*
 * u32 call_next_pop(void): CALL to the next instruction and POP, the
 * position-independent way of reading EIP. Returns what was pushed; it
 * must be the guest address call_next_label, whatever the code runs from.
 */
	.globl call_next_pop, call_next_label
call_next_pop:
	call call_next_label
call_next_label:
	popl %eax
	ret

/*
 * u32 push_ret_jump(void): PUSH of an address, then RET to it: a RET that
 * is a jump, with no CALL behind it. Returns 0x600D when it lands.
 */
	.globl push_ret_jump
push_ret_jump:
	pushl $1f
	ret
	movl $0xBAD, %eax		/* skipped by the RET */
	ret
1:	movl $0x600D, %eax
	ret

/*
 * u32 ret_imm(u32 a, u32 b): calls a stdcall-style callee that pops its
 * two arguments with RET $8. Returns a - b and leaves ESP as it was;
 * the result is 0xDEAD if ESP came back wrong.
 */
	.globl ret_imm
ret_imm:
	movl %esp, %edx
	pushl 8(%esp)			/* b */
	pushl 8(%esp)			/* a (ESP moved by 4) */
	call stdcall_sub
	cmpl %esp, %edx
	je 1f
	movl $0xDEAD, %eax
1:	ret
stdcall_sub:
	movl 4(%esp), %eax
	subl 8(%esp), %eax
	ret $8

/*
 * u32 far_call(void): far CALL to SEL_KCODE:far_callee and LRET back; the
 * callee returns what the CALL pushed as CS (0x0008 in the low word).
 */
	.globl far_call
far_call:
	lcall $SEL_KCODE, $far_callee
	ret
far_callee:
	movl 4(%esp), %eax
	andl $0xFFFF, %eax
	lret

	.section .rodata
	.align 4
asm_handlers:
	.long h0, h1, h2, h3, h4, h5, h6, h7

	.bss
	.align 4
chain_top_esp:
	.long 0
chain_bottom_esp:
	.long 0

/*
 * The deep-recursion stack: 2000 C frames do not fit the runtime's 16 KiB
 * boot stack. Not zeroed (like the boot stack), so it costs no guest work.
 */
	.section .stack, "aw", @nobits
	.align 16
	.globl deep_stack_top
	.space 256 * 1024
deep_stack_top:

	.section .note.GNU-stack, "", @progbits
