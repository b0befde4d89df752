/*
 * Self-modifying code for the tc guest. It lives in a section that is both
 * writable and executable ("awx"), which the linker folds into .data; the
 * guest runs without paging, so nothing stops it writing its own code.
 *
 * Architecture (Intel SDM vol. 3, "Self-Modifying Code" in the cache
 * control chapter, and "Handling Self- and Cross-Modifying Code"): a
 * store to code that is cached invalidates it, and from the Pentium on a
 * store that hits an instruction already prefetched invalidates the
 * prefetch queue, so the next execution sees the new bytes. The portable recipe is "store, then
 * jump, then execute"; every patch below is followed by a jump (a CALL, a
 * RET or a JMP) before the patched bytes run, except in smc_inline, which
 * relies on the Pentium-and-later rule on purpose: it is the case where a
 * translator must notice that the block it is executing was just written.
 */

	.section .data.smc, "awx", @progbits

/*
 * The routines get a page of their own, so that the only writes into it
 * are the patches below and the deliberate ones to smc_neighbour: the
 * guest's other data (check counters, results) lives in other pages.
 */
	.balign 4096

/*
 * u32 smc_const(void): returns the immediate at smc_const_imm, which the
 * C side overwrites between calls.
 */
	.globl smc_const, smc_const_imm
smc_const:
	.byte 0xB8			/* mov $imm32, %eax */
smc_const_imm:
	.long 0x11111111
	ret

/*
 * A word of plain data in the same page as smc_const and the routines
 * below: writes to it change no instruction, and must not break them.
 */
	.globl smc_neighbour
	.align 4
smc_neighbour:
	.long 0

/*
 * u32 smc_ahead(u32 v): stores v into the immediate of an instruction a
 * few bytes further on in this same routine, jumps (the SDM's recipe) and
 * executes it: returns v.
 */
	.globl smc_ahead
smc_ahead:
	movl 4(%esp), %eax
	movl %eax, 1f + 1
	jmp 1f
1:	movl $0x22222222, %eax		/* imm32 patched above */
	ret

/*
 * u32 smc_inline(u32 v): stores v into the immediate of the very next
 * instruction, with no jump in between (see the top of this file): returns
 * v. The store and the patched instruction are in one straight line, so a
 * translator holding them in one block is executing stale code unless it
 * stops after the store.
 */
	.globl smc_inline
smc_inline:
	movl 4(%esp), %ecx
	movl %ecx, 1f + 1
1:	movl $0x33333333, %eax		/* imm32 patched above */
	ret

/*
 * u32 smc_jump(void): a direct JMP whose 32-bit displacement the C side
 * rewrites (smc_jump_rel) to go to smc_target_a or smc_target_b: a
 * translator that chained this jump must unchain it.
 */
	.globl smc_jump, smc_jump_rel, smc_jump_next, smc_target_a, smc_target_b
smc_jump:
	.byte 0xE9			/* jmp rel32 */
smc_jump_rel:
	.long smc_target_a - smc_jump_next
smc_jump_next:
	int3				/* never reached */
smc_target_a:
	movl $0xAAAA, %eax
	ret
smc_target_b:
	movl $0xBBBB, %eax
	ret

/*
 * Room for code the C side writes whole (a template copied in, then
 * another over it), filled with INT3 so a stray call traps.
 */
	.globl jit_buffer
	.align 16
jit_buffer:
	.fill 64, 1, 0xCC
	.balign 4096

	.section .note.GNU-stack, "", @progbits
