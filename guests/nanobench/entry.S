/*
 * The nanobenchmarks' hot paths, in assembly so that each timed loop and
 * each handler is exactly the few instructions being measured: no
 * compiler-chosen prologue, and no trip through the runtime's generic
 * interrupt dispatcher (isr.S saves every register and reloads four
 * segment registers, which would be measured along with the event).
 *
 * Handlers reached from ring 3 keep the user's DS and ES: both are flat
 * (base 0, 4 GiB), which is all the few kernel accesses here need, and
 * reloading them would add segment loads to every measured event.
 *
 * Anything a handler does not recognise goes on to the runtime's stub for
 * that vector (isr_stubs + 16 * vector), whose dispatcher reports it as an
 * unexpected vector and ends the run: a stray fault fails loudly instead
 * of being counted as a benchmark iteration.
 */
#define SEL_KDATA 0x10
#define SEL_UCODE_RPL3 0x1B
#define SEL_UDATA_RPL3 0x23

/* Must match nanobench.c. */
#define PF_PAGE_A 0x00800000		/* PF_PAGE_B is PF_PAGE_A ^ 0x1000 */
#define ARG_ITERS 0			/* struct user_args */
#define ARG_T0 4
#define ARG_T1 12
#define ARG_BAD 20
#define CNT_SYSCALLS 0			/* struct counters */
#define CNT_DIVZEROS 4
#define CNT_KERNEL_ESP 16
#define CNT_SYSENTERS 20

	.text

/* ---- kernel side ------------------------------------------------------- */

/* void run_user(void (*eip)(void), u32 esp): IRETs to eip at CPL 3 and
 * returns once that code has done INT 0x81 (nano_return_entry). */
	.globl run_user
run_user:
	pushl %ebp
	pushl %ebx
	pushl %esi
	pushl %edi
	movl %esp, counters + CNT_KERNEL_ESP
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

/* INT 0x81 (gate DPL 3): the ring-3 loop is done. Drop the ESP0 frame and
 * return from run_user on the kernel stack it was called on. */
	.globl nano_return_entry
nano_return_entry:
	movl $SEL_KDATA, %eax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %fs
	movw %ax, %gs
	movl counters + CNT_KERNEL_ESP, %esp
	popl %edi
	popl %esi
	popl %ebx
	popl %ebp
	ret

/* INT 0x80 (gate DPL 3): the guest's own system call, the least a kernel
 * can do for one: count it and return. */
	.globl nano_syscall_entry
nano_syscall_entry:
	incl counters + CNT_SYSCALLS
	iretl

/* SYSENTER (IA32_SYSENTER_EIP): the same least, then SYSEXIT to the
 * instruction after the user's SYSENTER on the stack it left in EBP.
 * SYSENTER cleared IF; STI puts it back for ring 3, its shadow covering
 * the SYSEXIT, as Linux does. */
	.globl nano_sysenter_entry
nano_sysenter_entry:
	incl counters + CNT_SYSENTERS
	movl $user_sysenter_next, %edx
	movl %ebp, %ecx
	sti
	sysexit

/* #DE: resume after the DIV that divided by zero, as a kernel that
 * emulates or skips the instruction would. */
	.globl nano_de_entry
nano_de_entry:
	cmpl $nano_div_insn, (%esp)
	jne 1f
	addl $(nano_div_next - nano_div_insn), (%esp)
	incl counters + CNT_DIVZEROS
	iretl
1:	jmp isr_stubs + 16 * 0

/* #PF: nano_pf (C) maps the faulting benchmark page and unmaps the other
 * one, the work of a kernel's demand-paging path. */
	.globl nano_pf_entry
nano_pf_entry:
	pushl %eax
	pushl %ecx
	pushl %edx
	cld				/* the C ABI wants DF clear */
	movl %cr2, %eax
	pushl 12(%esp)			/* the error code */
	pushl %eax			/* CR2 */
	call nano_pf
	addl $8, %esp
	testl %eax, %eax
	popl %edx
	popl %ecx
	popl %eax
	jz 1f
	addl $4, %esp			/* the error code */
	iretl
1:	jmp isr_stubs + 16 * 14

/* u32 callret_loop(u32 n): n calls of a leaf function, which counts
 * itself in EAX so the caller can tell every call ran; returns the count. */
	.globl callret_loop
callret_loop:
	movl 4(%esp), %ecx
	xorl %eax, %eax
1:	call callret_leaf
	decl %ecx
	jnz 1b
	ret

callret_leaf:
	incl %eax
	ret

/* void divzero_loop(u32 n): n divisions by zero at CPL 0. */
	.globl divzero_loop
divzero_loop:
	pushl %ebx
	movl 8(%esp), %ebx
	xorl %ecx, %ecx
1:	movl $1, %eax
	xorl %edx, %edx
nano_div_insn:
	divl %ecx
nano_div_next:
	decl %ebx
	jnz 1b
	popl %ebx
	ret

/* ---- user side (CPL 3) ------------------------------------------------- */

/* Each loop reads the iteration count from user_args, times itself with
 * RDTSC (CR4.TSD is clear, so RDTSC works at CPL 3), stores both readings
 * and goes back to the kernel with INT 0x81. */

/* The loop's first RDTSC, stored as user_args.t0. */
.macro LOOP_START
	rdtsc
	movl %eax, user_args + ARG_T0
	movl %edx, user_args + ARG_T0 + 4
.endm

/* The loop's last RDTSC, stored as user_args.t1. */
.macro LOOP_END
	rdtsc
	movl %eax, user_args + ARG_T1
	movl %edx, user_args + ARG_T1 + 4
.endm

	.section .text.user_pages, "ax"
	.balign 4096
	.globl user_text_start, user_text_end
	.globl user_syscall, user_sysenter, user_pgfault
user_text_start:

user_syscall:
	movl user_args + ARG_ITERS, %esi
	LOOP_START
1:	int $0x80
	decl %esi
	jnz 1b
	LOOP_END
	int $0x81
	ud2				/* not reached */

/* SYSENTER takes no return address or stack: the kernel's entry knows
 * where to return (user_sysenter_next) and finds the stack in EBP. */
user_sysenter:
	movl user_args + ARG_ITERS, %esi
	movl %esp, %ebp
	LOOP_START
1:	sysenter
user_sysenter_next:
	decl %esi
	jnz 1b
	LOOP_END
	int $0x81
	ud2				/* not reached */

/* Alternates between the two benchmark pages; the kernel keeps at most
 * one of them mapped, so every read faults. Each page's frame holds its
 * own linear address, so a read that comes back with anything else (the
 * wrong frame, or a stale mapping) is counted in user_args.bad. */
user_pgfault:
	movl user_args + ARG_ITERS, %esi
	xorl %ebx, %ebx
	movl $PF_PAGE_A, %ecx
	LOOP_START
1:	cmpl %ecx, (%ecx)
	je 2f
	incl %ebx
2:	xorl $0x1000, %ecx
	decl %esi
	jnz 1b
	LOOP_END
	movl %ebx, user_args + ARG_BAD
	int $0x81
	ud2				/* not reached */

	.balign 4096
user_text_end:

	.section .note.GNU-stack, "", @progbits
