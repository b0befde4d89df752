/*
 * Control transfers the sensitive guest checks, written in assembly so
 * the exact return addresses are known (global labels).
 */
#define SEL_KCODE 0x08
#define SEL_CODE2 0x40		/* a second flat code descriptor (GDT index 8) */

	.text

/* Far CALL through SEL_CODE2 and far RET back to SEL_KCODE. */
	.globl farcall_test, farcall_return
farcall_test:
	lcall $SEL_CODE2, $far_target
farcall_return:
	xorl %eax, %eax
	movw %cs, %ax
	movl %eax, cs_after_call
	ret
far_target:
	xorl %eax, %eax
	movw %cs, %ax
	movl %eax, cs_inside_call
	movl (%esp), %eax		/* the far CALL pushed EIP, then CS */
	movl %eax, pushed_eip
	movl 4(%esp), %eax
	movl %eax, pushed_cs
	lret

/* Far JMP to SEL_CODE2 and far JMP back. */
	.globl farjmp_test
farjmp_test:
	ljmp $SEL_CODE2, $1f
1:	xorl %eax, %eax
	movw %cs, %ax
	movl %eax, cs_inside_jmp
	ljmp $SEL_KCODE, $2f
2:	xorl %eax, %eax
	movw %cs, %ax
	movl %eax, cs_after_jmp
	ret

/* INT n, INTO and INT3; the labels are where each handler returns. */
	.globl do_int_n, int_n_after
do_int_n:
	int $0x41
int_n_after:
	ret

	.globl do_into_overflow, into_after
do_into_overflow:
	movb $0x7f, %al
	addb $1, %al			/* 0x7f + 1 overflows: OF = 1 */
	into
into_after:
	ret

	.globl do_into_no_overflow
do_into_no_overflow:
	xorl %eax, %eax			/* OF = 0: INTO does nothing */
	into
	ret

	.globl do_int3, int3_after
do_int3:
	int3
int3_after:
	ret

/* Waits for one interrupt: STI's shadow keeps it from slipping in before HLT. */
	.globl wait_for_irq, hlt_resume
wait_for_irq:
	sti
	hlt
hlt_resume:
	cli
	ret

	.bss
	.globl cs_after_call, cs_inside_call, pushed_eip, pushed_cs, cs_inside_jmp, cs_after_jmp
cs_after_call:	.long 0
cs_inside_call:	.long 0
pushed_eip:	.long 0
pushed_cs:	.long 0
cs_inside_jmp:	.long 0
cs_after_jmp:	.long 0

	.section .note.GNU-stack, "", @progbits
