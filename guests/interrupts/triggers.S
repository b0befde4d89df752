/*
 * Instructions that raise one exception each. For every trigger, the
 * global label <name>_fault marks the instruction that raises it and
 * <name>_resume the instruction after it, where the handler resumes.
 * Each trigger is an ordinary function (clobbers only EAX, ECX, EDX).
 */
#define SEL_KDATA 0x10

	.text

/* #DE: DIV by zero (fault: EIP of the DIV, no error code). */
	.globl trigger_de, de_fault, de_resume
trigger_de:
	xorl %ecx, %ecx
	xorl %edx, %edx
	movl $1, %eax
de_fault:
	divl %ecx
de_resume:
	ret

/* #DB: single step. A POPF that sets TF traps after the *next* instruction. */
	.globl trigger_db, db_fault, db_resume
trigger_db:
	pushfl
	orl $0x100, (%esp)
	popfl
db_fault:
	movl $0x1234, %eax
db_resume:
	ret

/* #BP: INT3 (trap: EIP after the INT3, no error code). */
	.globl trigger_bp, bp_fault, bp_resume
trigger_bp:
bp_fault:
	int3
bp_resume:
	ret

/* #UD: UD2. */
	.globl trigger_ud, ud_fault, ud_resume
trigger_ud:
ud_fault:
	ud2
ud_resume:
	ret

/* #NP: loading DS with a present-bit-clear data descriptor (GDT index 6). */
	.globl trigger_np, np_fault, np_resume
trigger_np:
	movl $0x30, %eax
np_fault:
	movw %ax, %ds
np_resume:
	ret

/* #GP(selector): loading DS with a selector past the GDT limit. RPL 3 is
 * set on purpose: the error code carries only index and TI (0x100). */
	.globl trigger_gp_limit, gp_limit_fault, gp_limit_resume
trigger_gp_limit:
	movl $0x103, %eax
gp_limit_fault:
	movw %ax, %ds
gp_limit_resume:
	ret

/* #GP(0): a write through a read-only data segment (GDT index 7). */
	.globl trigger_gp_write, gp_write_fault, gp_write_resume
trigger_gp_write:
	movl $0x38, %eax
	movw %ax, %fs
gp_write_fault:
	movl $1, %fs:gp_write_target
gp_write_resume:
	movl $SEL_KDATA, %eax
	movw %ax, %fs
	ret

/* #GP(selector): a far jump to a data segment. */
	.globl trigger_gp_jmp, gp_jmp_fault, gp_jmp_resume
trigger_gp_jmp:
gp_jmp_fault:
	ljmp $SEL_KDATA, $gp_jmp_resume
gp_jmp_resume:
	ret

/* Waits for one interrupt: STI's one-instruction shadow means no interrupt
 * can slip in between STI and HLT, so HLT always wakes on it. */
	.globl wait_for_irq, hlt_resume
wait_for_irq:
	sti
	hlt
hlt_resume:
	cli
	ret

	.data
	.globl gp_write_target
gp_write_target:
	.long 0

	.section .note.GNU-stack, "", @progbits
