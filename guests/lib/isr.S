/*
 * Interrupt and exception entry stubs: one 16-byte stub per vector, so the
 * stub for vector v sits at isr_stubs + 16*v (idt_init relies on this).
 *
 * The CPU pushes an error code only for vectors 8, 10-14, 17 and 21; every
 * other stub pushes NO_ERROR_CODE in its place so all frames have the same
 * shape. A wrong guess shows up as a shifted frame (EIP/CS checks fail).
 * isr_common then saves every register and calls isr_dispatch(struct frame *)
 * (lib/popek.h); on return it restores them, possibly changed, and IRETs.
 */
#define SEL_KDATA 0x10

	.text
	.align 16
	.globl isr_stubs
isr_stubs:
	.set vec, 0
	.rept 256
	.align 16
	.if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21)
	.else
	pushl $-1			/* NO_ERROR_CODE */
	.endif
	pushl $vec
	jmp isr_common
	.set vec, vec + 1
	.endr

/* Also the tail of the demo's SYSENTER entry (guests/demo/boot.S), which
 * pushes the same frame the CPU and a stub would have. */
	.globl isr_common
isr_common:
	pushal
	pushl %ds
	pushl %es
	pushl %fs
	pushl %gs
	movl $SEL_KDATA, %eax		/* the interrupted code's DS may be a user one */
	movw %ax, %ds
	movw %ax, %es
	cld				/* the C ABI wants DF clear */
	pushl %esp			/* struct frame * */
	call isr_dispatch
	addl $4, %esp
	popl %gs
	popl %fs
	popl %es
	popl %ds
	popal
	addl $8, %esp			/* vector and error code */
	iretl

	.section .note.GNU-stack, "", @progbits
