/*
 * Ring-3 entry and the user-mode instruction sites the kernel expects to
 * fault. Each <name>_fault label is the instruction that must raise #GP;
 * the kernel's handler recognises it by the saved EIP and skips it.
 */
#define SEL_UCODE_RPL3 0x1B
#define SEL_UDATA_RPL3 0x23
#define SYS_PROBE 3

	.text

/* enter_user(eip, esp): IRET to ring 3 with IF set and IOPL 0. */
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

/* Privileged at CPL 3: each raises #GP(0). */
	.globl user_cli, user_cli_fault
user_cli:
user_cli_fault:
	cli
	ret

	.globl user_hlt, user_hlt_fault
user_hlt:
user_hlt_fault:
	hlt
	ret

/* IOPL 0 and no I/O bitmap in the TSS: IN faults at CPL 3. */
	.globl user_in, user_in_fault
user_in:
	movw $0x3F8, %dx
user_in_fault:
	inb %dx, %al
	ret

/* INT 0x81's gate has DPL 0: #GP with error code (0x81 << 3) | 2 (IDT). */
	.globl user_int81, user_int81_fault
user_int81:
user_int81_fault:
	int $0x81
	ret

/* A system call with known values in every argument register, recording
 * the user ESP at the INT so the kernel can compare the saved one. */
	.globl user_probe_syscall, probe_user_esp
user_probe_syscall:
	pushl %ebx
	pushl %esi
	pushl %edi
	movl $SYS_PROBE, %eax
	movl $0x11111111, %ebx
	movl $0x22222222, %ecx
	movl $0x33333333, %edx
	movl $0x44444444, %esi
	movl $0x55555555, %edi
	movl %esp, probe_user_esp
	int $0x80
	popl %edi
	popl %esi
	popl %ebx
	ret

	.bss
probe_user_esp:
	.long 0


/* user_sysenter(): SYSENTER with the vDSO's convention (EBP = ESP) and
 * known values in every other register; the kernel's entry SYSEXITs to
 * user_sysenter_return with ECX = the EBP it was given. Where SYSENTER
 * faults instead, the kernel's handler resumes there too. Returns EAX. */
#define SYS_FAST 5
	.text
	.globl user_sysenter, user_sysenter_return, sysenter_user_esp
user_sysenter:
	pushl %ebx
	pushl %esi
	pushl %edi
	pushl %ebp
	movl $SYS_FAST, %eax
	movl $0x11111111, %ebx
	movl $0x22222222, %ecx
	movl $0x33333333, %edx
	movl $0x44444444, %esi
	movl $0x55555555, %edi
	movl %esp, %ebp
	movl %esp, sysenter_user_esp
	sysenter
user_sysenter_return:
	popl %ebp
	popl %edi
	popl %esi
	popl %ebx
	ret

/* The kernel's SYSENTER entry: CPL 0 on IA32_SYSENTER_ESP's stack with
 * IF clear. on_sysenter checks the frame and sets its EAX. */
	.globl sysenter_entry
sysenter_entry:
	pushfl
	pushal
	pushl %esp
	call on_sysenter
	addl $4, %esp
	popal
	popfl
	movl $user_sysenter_return, %edx
	movl %ebp, %ecx
	/* SYSEXIT leaves EFLAGS alone: IF goes back on as Linux does it,
	 * STI's shadow covering the SYSEXIT. */
	sti
	sysexit

	.bss
sysenter_user_esp:
	.long 0
	.section .note.GNU-stack, "", @progbits
