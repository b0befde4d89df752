/*
 * The ring-3 half of the paging guest, and the kernel's way in and out.
 *
 * The user code sits alone on its own pages (user_text_start to
 * user_text_end, page-aligned), which the kernel maps with U=1; every
 * other page of the image stays supervisor-only. Each trip to ring 3 runs
 * one operation described by user_args (a U=1 page the kernel fills in),
 * stores the result in user_args and returns with INT 0x80.
 */
#define SEL_KDATA 0x10
#define SEL_UCODE_RPL3 0x1B
#define SEL_UDATA_RPL3 0x23
#define PF_POISON 0xBADF00D5

/* user_args fields (struct user_args in paging.c). */
#define ARG_OP 0
#define ARG_ADDR 4
#define ARG_VALUE 8
#define ARG_RESULT 12
#define OP_READ 1
#define OP_WRITE 2
#define OP_CALL 3

/* ---- kernel side -------------------------------------------------------- */

	.text

/* void run_user(u32 eip, u32 esp): IRETs to eip at CPL 3 with a stack at
 * esp and returns when the user code's INT 0x80 handler (paging.c) sends
 * the CPU to user_returned. */
	.globl run_user, user_returned
run_user:
	pushl %ebp
	pushl %ebx
	pushl %esi
	pushl %edi
	movl %esp, kernel_esp
	movl 20(%esp), %ecx
	movl 24(%esp), %edx
	movl $SEL_UDATA_RPL3, %eax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %fs
	movw %ax, %gs
	pushl $SEL_UDATA_RPL3		/* SS */
	pushl %edx			/* ESP */
	pushl $0x202			/* EFLAGS: IF (the PICs are masked), IOPL 0 */
	pushl $SEL_UCODE_RPL3		/* CS */
	pushl %ecx			/* EIP */
	iretl

/* Reached by an IRET at CPL 0 from the INT 0x80 handler: ESP is still on
 * the ESP0 stack, so go back to run_user's. */
user_returned:
	movl kernel_esp, %esp
	popl %edi
	popl %esi
	popl %ebx
	popl %ebp
	ret

	.bss
	.align 4
kernel_esp:
	.long 0

/* ---- user side (CPL 3) -------------------------------------------------- */

	.section .text.user_pages, "ax"
	.balign 4096
	.globl user_text_start, user_text_end, user_main
	.globl user_read_fault, user_read_resume
	.globl user_write_fault, user_write_resume
	.globl user_call_landing
user_text_start:
user_main:
	/* Load the flat DPL-3 data selector here at CPL 3: the segment
	 * allows every address, so only paging can refuse an access. */
	movl $SEL_UDATA_RPL3, %eax
	movw %ax, %ds
	movw %ax, %es
	movl user_args + ARG_OP, %eax
	movl user_args + ARG_ADDR, %ecx
	movl user_args + ARG_VALUE, %edx
	cmpl $OP_READ, %eax
	je 1f
	cmpl $OP_WRITE, %eax
	je 2f
	cmpl $OP_CALL, %eax
	je 3f
	movl $PF_POISON, %eax
	jmp 9f

1:	/* read through DS */
user_read_fault:
	movl %ds:(%ecx), %eax
user_read_resume:
	jmp 9f

2:	/* write through ES */
	movl %edx, %eax
user_write_fault:
	movl %edx, %es:(%ecx)
user_write_resume:
	jmp 9f

3:	/* call: if fetching the target faults, the catcher resumes at
	 * user_call_landing, which returns from the CALL with PF_POISON */
	call *%ecx
	jmp 9f
user_call_landing:
	movl $PF_POISON, %eax
	ret

9:	movl %eax, user_args + ARG_RESULT
	int $0x80
	ud2				/* not reached: the kernel does not return here */

	.balign 4096
user_text_end:

	.section .note.GNU-stack, "", @progbits
