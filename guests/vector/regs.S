/*
 * The vector registers 32-bit code can name, loaded from and stored to a
 * struct vregs (vector.c), and the instructions the kernel expects to
 * fault. Outside 64-bit mode only xmm0-7 / ymm0-7 / zmm0-7 exist; the
 * opmask registers k0-k7 all do.
 *
 * struct vregs layout: 8 slots of 64 bytes (slot n holds xmmN, ymmN or
 * zmmN from its first byte), then k0-k7 (8 bytes each), then MXCSR.
 */
#define F_AVX 1
#define F_AVX512 2
#define K_OFF 512
#define MXCSR_OFF 576
/* A data segment with a 4 KiB limit (vector.c puts it in the GDT). */
#define SEL_SMALL 0x30

	.text

/* fx_store(void *area): FXSAVE into a 512-byte, 16-byte aligned area. */
	.globl fx_store
fx_store:
	movl 4(%esp), %eax
	fxsave (%eax)
	ret

/* vec_load(const struct vregs *r, u32 features) */
	.globl vec_load
vec_load:
	movl 4(%esp), %eax
	movl 8(%esp), %ecx
	ldmxcsr MXCSR_OFF(%eax)
	testl $F_AVX512, %ecx
	jnz 3f
	testl $F_AVX, %ecx
	jnz 2f
	.irp n, 0, 1, 2, 3, 4, 5, 6, 7
	movdqu \n*64(%eax), %xmm\n
	.endr
	ret
2:
	.irp n, 0, 1, 2, 3, 4, 5, 6, 7
	vmovdqu \n*64(%eax), %ymm\n
	.endr
	ret
3:
	.irp n, 0, 1, 2, 3, 4, 5, 6, 7
	vmovdqu64 \n*64(%eax), %zmm\n
	kmovq K_OFF+\n*8(%eax), %k\n
	.endr
	ret

/* vec_store(struct vregs *r, u32 features): bytes the width does not
 * cover are left as they were. */
	.globl vec_store
vec_store:
	movl 4(%esp), %eax
	movl 8(%esp), %ecx
	stmxcsr MXCSR_OFF(%eax)
	testl $F_AVX512, %ecx
	jnz 3f
	testl $F_AVX, %ecx
	jnz 2f
	.irp n, 0, 1, 2, 3, 4, 5, 6, 7
	movdqu %xmm\n, \n*64(%eax)
	.endr
	ret
2:
	.irp n, 0, 1, 2, 3, 4, 5, 6, 7
	vmovdqu %ymm\n, \n*64(%eax)
	.endr
	ret
3:
	.irp n, 0, 1, 2, 3, 4, 5, 6, 7
	vmovdqu64 %zmm\n, \n*64(%eax)
	kmovq %k\n, K_OFF+\n*8(%eax)
	.endr
	ret

/* enter_user(eip, esp): IRET to ring 3 with IF set and IOPL 0. */
#define SEL_UCODE_RPL3 0x1B
#define SEL_UDATA_RPL3 0x23
	.globl enter_user
enter_user:
	movl 4(%esp), %ecx
	movl 8(%esp), %edx
	movl $SEL_UDATA_RPL3, %eax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %fs
	movw %ax, %gs
	pushl $SEL_UDATA_RPL3		/* SS */
	pushl %edx			/* ESP */
	pushl $0x202			/* EFLAGS: IF, IOPL 0 */
	pushl $SEL_UCODE_RPL3		/* CS */
	pushl %ecx			/* EIP */
	iretl

/*
 * Fault sites: each <name>_fault raises an exception the kernel handles by
 * resuming at <name>_resume (vector.c's table).
 */

/* At CPL 3 with IOPL 0 and no I/O bitmap: #GP(0). */
	.globl user_in, user_in_fault, user_in_resume
user_in:
	movw $0x3F8, %dx
user_in_fault:
	inb %dx, %al
user_in_resume:
	ret

	.globl do_ud2, ud2_fault, ud2_resume
do_ud2:
ud2_fault:
	ud2
ud2_resume:
	ret

/* A read past FS's 4 KiB limit: #GP(0) at CPL 0. */
	.globl kernel_gp, kernel_gp_fault, kernel_gp_resume
kernel_gp:
	pushl %fs
	movl $SEL_SMALL, %eax
	movw %ax, %fs
kernel_gp_fault:
	movl %fs:0x2000, %eax
kernel_gp_resume:
	popl %fs
	ret

	.section .note.GNU-stack, "", @progbits
