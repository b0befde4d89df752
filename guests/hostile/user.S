/*
 * The hostile guest's ring-3 code: one entry per scenario (user_a ..
 * user_e), each ending at user_done (a UD2 the kernel recognises).
 *
 * FAULT(id, instruction) marks an instruction that must raise an
 * exception: it records (id, address, address of the next instruction)
 * in the site table, so the kernel's handler can name the attempt, check
 * the vector and error code, and resume after it.
 */
#include "hostile.h"

#define FAULT(id, ...)						\
	1: __VA_ARGS__ ;					\
	2: .pushsection .rodata.sites, "a" ;			\
	.long id, 1b, 2b ;					\
	.popsection

	.section .rodata.sites, "a"
	.align 4
	.globl sites_begin
sites_begin:

	.text

/* enter_user(eip, esp): IRET to ring 3 (LDT code and data) with IF set, IOPL 0. */
	.globl enter_user
enter_user:
	movl 4(%esp), %ecx
	movl 8(%esp), %edx
	movl $UDATA_SEL, %eax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %fs
	movw %ax, %gs
	pushl $UDATA_SEL		/* SS */
	pushl %edx			/* ESP */
	pushl $0x202			/* EFLAGS: IF, IOPL 0 */
	pushl $UCODE_SEL		/* CS */
	pushl %ecx			/* EIP */
	iretl

/* Every scenario ends here; the kernel's #UD handler reports and stops. */
	.globl user_done
user_done:
	ud2

/*
 * k: set NT with POPF (any privilege level may), then make system calls.
 * Under popek's BT engine the flag is live on the host CPU while ring 3
 * runs, and host code once kept it after the exit, so the next entry's
 * IRETQ raised #GP (IRET with NT is #GP in 64-bit mode) and the VM
 * stopped. Both calls must reach the guest kernel, NT in its frame.
 */
	.globl user_k
user_k:
	pushfl
	orl $EFLAGS_NT_BIT, (%esp)
	popfl
	movl $I386_GETPID, %eax
	int $0x80
	movl %eax, user_results + 4 * R_K_RESULT
	pushfl
	popl user_results + 4 * R_K_FLAGS
	movl $I386_EXIT, %eax
	xorl %ebx, %ebx
	int $0x80
	jmp user_done			/* not reached: the guest kernel ends the VM */

/*
 * j: SYSENTER with EBP at the monitor's region, then at page 0. On Intel
 * hosts popek's user code reaches the host's own SYSENTER path, which
 * reads the word at EBP (the vDSO's convention) before anything traps
 * the call. Each SYSENTER must fault into the guest kernel (IA32_
 * SYSENTER_CS is null: #GP(0); #UD without SEP) with the guest's own EBP.
 * The host keeps no EIP or ESP for SYSENTER, so the kernel's handler
 * knows the site from j_site and resumes at it with j_esp.
 */
	.globl user_j, j_site, j_esp
user_j:
	movl %esp, j_esp
	movl $SITE_J_REGION, j_site
	movl $MONITOR_ADDR, %ebp
	movl $5, %eax			/* i386 open */
	FAULT(SITE_J_REGION, sysenter)
	movl %esp, j_esp
	movl $SITE_J_PAGE0, j_site
	movl $0x10, %ebp
	movl $5, %eax
	FAULT(SITE_J_PAGE0, sysenter)
	jmp user_done

/*
 * a: load the host Linux's flat user selectors (under the BT engine this
 * code runs on the host CPU, where 0x2b is a flat 4 GiB data segment that
 * reaches the monitor at 0xFFC00000), then touch the monitor's region
 * through whatever DS and ES are afterwards. popek's BT engine keeps that
 * region inaccessible while ring 3 runs, so the read (SITE_A_READ) faults
 * on the host before it returns anything, the engine finds the host
 * selector in DS and stops the VM there: the write after it never runs
 * (tests/bt.rs, hostile_host_selector_ends_the_vm).
 */
	.globl user_a
user_a:
	movl $HOST_USER_DS, %eax
	FAULT(SITE_A_DS_2B, movw %ax, %ds)
	movl $MONITOR_ADDR, %esi
	FAULT(SITE_A_READ, movl (%esi), %eax)
	FAULT(SITE_A_WRITE, movl $HOSTILE_MARK, (%esi))
	movl $HOST_USER32_CS, %eax
	FAULT(SITE_A_ES_23, movw %ax, %es)
	FAULT(SITE_A_ES_READ, movl %es:(%esi), %eax)
	movl $HOST_USER_DS, %eax
	FAULT(SITE_A_SS_2B, movw %ax, %ss)
	movl %esp, %ebp
	pushl $HOST_USER_DS
	FAULT(SITE_A_FS_2B, popl %fs)
	movl %ebp, %esp			/* a POP that faults does not move ESP */
	movl $HOST_USER_CS, %eax
	FAULT(SITE_A_GS_33, movw %ax, %gs)
	FAULT(SITE_A_LDS_2B, ldsl host_far_pointer, %eax)
	jmp user_done

/*
 * b: take the protection keys away from the monitor. With CR4.PKE clear
 * (and no PKU in CPUID) WRPKRU and RDPKRU raise #UD; with CR4.OSXSAVE
 * clear so does XRSTOR, which could otherwise load PKRU from memory. Then
 * read, write and read again the monitor's region through a flat 4 GiB
 * selector of the guest's own: that is guest-physical memory where the
 * guest has no RAM, so reads float high and the write goes nowhere.
 */
	.globl user_b
user_b:
	xorl %eax, %eax			/* PKRU = 0: every key grants all access */
	xorl %ecx, %ecx
	xorl %edx, %edx
	FAULT(SITE_B_WRPKRU, .byte 0x0f, 0x01, 0xef)	/* wrpkru */
	xorl %ecx, %ecx
	FAULT(SITE_B_RDPKRU, .byte 0x0f, 0x01, 0xee)	/* rdpkru */
	movl $-1, %eax			/* requested-feature bitmap: all, PKRU included */
	movl $-1, %edx
	movl $xsave_area, %esi
	FAULT(SITE_B_XRSTOR, xrstor (%esi))
	movl $UFLAT_SEL, %eax
	movw %ax, %ds
	movl $MONITOR_ADDR, %esi
	movl (%esi), %eax
	movl %eax, user_results + 4 * R_B_READ
	movl $HOSTILE_MARK, (%esi)
	movl (%esi), %eax
	movl %eax, user_results + 4 * R_B_REREAD
	movl 0x3FFFFC(%esi), %eax	/* 0xFFFFFFFC, the region's last dword */
	movl %eax, user_results + 4 * R_B_READ_TOP
	movl $UDATA_SEL, %eax
	movw %ax, %ds
	jmp user_done

/*
 * c: leave 32-bit code for the host's 64-bit code segment 0x33 with a far
 * JMP, a far CALL and a far RET, at blob64, which makes host system
 * calls. In the guest each is #GP(0x30): index 6 is beyond its GDT.
 */
	.globl user_c
user_c:
	FAULT(SITE_C_LJMP_33, ljmp $HOST_USER_CS, $blob64)
	FAULT(SITE_C_LCALL_33, lcall $HOST_USER_CS, $blob64)
	movl %esp, %ebp
	pushl $HOST_USER_CS
	pushl $blob64
	FAULT(SITE_C_LRET_33, lret)
	movl %ebp, %esp			/* a faulting RET pops nothing */
	jmp user_done

/*
 * e: two more ways out, kept apart from c because KVM's instruction
 * emulator cannot carry them out at ring 3 (docs/kvm.md: on kvm-pvm hosts
 * they come back as #UD): an IRET to 0x33, and a far JMP to the host's
 * 32-bit code segment 0x23 at blob32, which makes i386 host system calls.
 * In the guest the IRET is #GP(0x30) and the JMP #GP(0x20) (index 4 is
 * the guest's LDT descriptor, no code segment).
 */
	.globl user_e
user_e:
	movl %esp, %ebp
	pushfl
	pushl $HOST_USER_CS
	pushl $blob64
	FAULT(SITE_E_IRET_33, iretl)
	movl %ebp, %esp			/* a faulting IRET pops nothing */
	FAULT(SITE_E_LJMP_23, ljmp $HOST_USER32_CS, $blob32)
	jmp user_done

/*
 * d: the i386 Linux system call interface, from ring 3. On this guest,
 * int 0x80 is the guest kernel's system call gate (DPL 3), so each of
 * these is an ordinary guest system call; none may reach the host.
 */
	.globl user_d
user_d:
	movl $I386_OPEN, %eax
	movl $hostile_path_d, %ebx
	movl $O_WRONLY_CREAT, %ecx
	movl $0x1a4, %edx		/* mode 0644 */
	int $0x80
	movl %eax, user_results + 4 * R_D_OPEN
	movl $I386_WRITE, %eax
	movl $1, %ebx			/* the host's stdout, if it were the host's call */
	movl $breach_message, %ecx
	movl $breach_length, %edx
	int $0x80
	movl %eax, user_results + 4 * R_D_WRITE
	movl $I386_KILL, %eax
	movl $1, %ebx
	movl $SIGKILL, %ecx
	int $0x80
	movl %eax, user_results + 4 * R_D_KILL
	movl $I386_EXIT, %eax
	xorl %ebx, %ebx
	int $0x80
	jmp user_done			/* not reached: the guest kernel ends the VM */

/*
 * f: go to the host's 64-bit code segment and come back. On a CPU that
 * honours the guest's GDT the far JMP is #GP(0x30). Under popek's BT
 * engine the host's GDT answers it, and nothing notices a trip that
 * neither faults nor lasts until the next kick: what matters is what
 * 64-bit code can see there. FS and GS are null first, and a trip through
 * the guest kernel makes the monitor enter ring 3 again with them null (loading a null
 * selector leaves the old base on some CPUs: it must not be the host's
 * thread pointer). A HLT (#GP at ring 3) makes the trip: KVM's emulator
 * here cannot deliver a ring-3 int 0x80 (docs/kvm.md). f64 records every register 64-bit code can read, and
 * checks that the guest's stack below ESP still holds the kernel's fill
 * pattern, then jumps back to the guest's own code segment.
 */
	.globl user_f
user_f:
	xorl %eax, %eax
	movw %ax, %fs
	movw %ax, %gs
	FAULT(SITE_F_HLT, hlt)		/* #GP: a trip through the guest kernel */
	movw %cs, %ax			/* the selector the CPU really runs on */
	movw %ax, f_back + 4
	FAULT(SITE_F_LJMP_33, ljmp $HOST_USER_CS, $f64)
	jmp f_done			/* a CPU that refused the jump */
f_back32:
	movl $1, f64_reached
f_done:
	movl $UDATA_SEL, %eax
	movw %ax, %fs
	movw %ax, %gs
	jmp user_done

/* g: 64-bit code reads, then writes, host memory above 4 GiB. */
	.globl user_g
user_g:
	FAULT(SITE_G_LJMP_33, ljmp $HOST_USER_CS, $g64)
	jmp user_done

/* h: 64-bit code calls the one host address it can know without a leak:
 * the vsyscall page's gettimeofday. */
	.globl user_h
user_h:
	FAULT(SITE_H_LJMP_33, ljmp $HOST_USER_CS, $h64)
	jmp user_done

/* i: 64-bit code that neither faults nor comes back. */
	.globl user_i
user_i:
	FAULT(SITE_I_LJMP_33, ljmp $HOST_USER_CS, $i64)
	jmp user_done

	.code64
#define SEEN(slot) (f64_seen + 8 * (slot))(%rip)
f64:
	movq %rax, SEEN(F_GPR + 0)
	movq %rcx, SEEN(F_GPR + 1)
	movq %rdx, SEEN(F_GPR + 2)
	movq %rbx, SEEN(F_GPR + 3)
	movq %rsp, SEEN(F_GPR + 4)
	movq %rbp, SEEN(F_GPR + 5)
	movq %rsi, SEEN(F_GPR + 6)
	movq %rdi, SEEN(F_GPR + 7)
	movq %r8, SEEN(F_GPR + 8)
	movq %r9, SEEN(F_GPR + 9)
	movq %r10, SEEN(F_GPR + 10)
	movq %r11, SEEN(F_GPR + 11)
	movq %r12, SEEN(F_GPR + 12)
	movq %r13, SEEN(F_GPR + 13)
	movq %r14, SEEN(F_GPR + 14)
	movq %r15, SEEN(F_GPR + 15)
	pushfq
	popq %rax
	movq %rax, SEEN(F_RFLAGS)
	testl $HOST_FSGSBASE, host_features(%rip)
	jz 1f
	rdfsbase %rax
	movq %rax, SEEN(F_FSBASE)
	rdgsbase %rax
	movq %rax, SEEN(F_GSBASE)
1:
	.irp n, 8, 9, 10, 11, 12, 13, 14, 15
	movups %xmm\n, SEEN(F_XMM8 + 2 * (\n - 8))
	.endr
	testl $HOST_AVX, host_features(%rip)
	jz 2f
	.irp n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
	vextractf128 $1, %ymm\n, SEEN(F_YMM_HI + 2 * \n)
	.endr
2:
	testl $HOST_AVX512, host_features(%rip)
	jz 3f
	.irp n, 0, 1, 2, 3, 4, 5, 6, 7
	kmovq %k\n, SEEN(F_K + \n)
	.endr
	.irp n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
	vextracti64x4 $1, %zmm\n, SEEN(F_ZMM_HI + 4 * \n)
	.endr
	.irp n, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
	vmovdqu64 %zmm\n, SEEN(F_ZMM16 + 8 * (\n - 16))
	.endr
3:
	/* Every dword of the stack from its base up to 16 bytes below RSP
	 * (the pushfq above used 8) must still be the fill pattern. */
	leaq user_stack(%rip), %rsi
	leaq -16(%rsp), %rcx
	xorl %edx, %edx
4:	cmpq %rcx, %rsi
	jae 6f
	cmpl $STACK_FILL, (%rsi)
	je 5f
	incl %edx
5:	addq $4, %rsi
	jmp 4b
6:	movl %edx, f64_stack_dirty(%rip)
	ljmpl *f_back(%rip)

g64:
	movabsq $0x100000000, %rsi	/* just above 4 GiB */
	movq (%rsi), %rax
	movq $HOSTILE_MARK, (%rsi)
	hlt

h64:
	leaq h64_timeval(%rip), %rdi
	xorl %esi, %esi
	movabsq $0xffffffffff600000, %rax	/* vsyscall gettimeofday */
	call *%rax
	hlt

i64:
	jmp i64
	.code32

/*
 * What the host would run after a far transfer to 0x33: x86-64 Linux
 * system calls. Never reached on a CPU that honours the guest's GDT; if it
 * ever runs, it leaves a file in /tmp, says so on stderr and ends the
 * process with status 99, so a breach cannot go unnoticed.
 */
	.code64
blob64:
	leaq hostile_path_c(%rip), %rdi
	movl $O_WRONLY_CREAT, %esi
	movl $0x1a4, %edx
	movl $2, %eax			/* open */
	syscall
	movl %eax, %edi
	leaq breach_message(%rip), %rsi
	movl $breach_length, %edx
	movl $1, %eax			/* write(fd, ...) */
	syscall
	movl $2, %edi
	leaq breach_message(%rip), %rsi
	movl $breach_length, %edx
	movl $1, %eax			/* write(2, ...) */
	syscall
	movl $1, %edi
	movl $SIGKILL, %esi
	movl $62, %eax			/* kill(1, SIGKILL): init ignores it, but try */
	syscall
	movl $110, %eax			/* getppid */
	syscall
	movl $99, %edi
	movl $231, %eax			/* exit_group(99) */
	syscall
	hlt
	.code32

/* What the host would run after a far JMP to 0x23 (scenario e): i386 system calls. */
blob32:
	movl $I386_OPEN, %eax
	movl $hostile_path_c, %ebx
	movl $O_WRONLY_CREAT, %ecx
	movl $0x1a4, %edx
	int $0x80
	movl %eax, %ebx
	movl $I386_WRITE, %eax
	movl $breach_message, %ecx
	movl $breach_length, %edx
	int $0x80
	movl $252, %eax			/* exit_group(99) */
	movl $99, %ebx
	int $0x80
	hlt

	.section .rodata
	.globl hostile_path_c, hostile_path_d, breach_message
hostile_path_c:
	.asciz "/tmp/popek-hostile-c"
hostile_path_d:
	.asciz "/tmp/popek-hostile-d"
breach_message:
	.ascii "popek hostile guest: this text was written by a host system call\n"
	.set breach_length, . - breach_message
	.byte 0
	.align 4
	.globl breach_message_length
breach_message_length:
	.long breach_length

	.data
	.align 4
/* A far pointer for LDS: the monitor's address with the host's data selector. */
host_far_pointer:
	.long MONITOR_ADDR
	.word HOST_USER_DS

/* Scenario f's way back: offset, then the selector user_f saw in CS. */
f_back:
	.long f_back32
	.word 0

	.bss
	.align 8
	.globl f64_seen, f64_reached, f64_stack_dirty
f64_seen:
	.space 8 * F_SLOTS
f64_reached:
	.space 4
f64_stack_dirty:
	.space 4
h64_timeval:
	.space 16
	.align 64
xsave_area:				/* XRSTOR needs 64-byte alignment */
	.space 1024
	.align 4
	.globl user_results
user_results:
	.space 4 * R_COUNT

	.section .rodata.sites, "a"
	.globl sites_end
sites_end:


	.data
j_site:
	.long -1
j_esp:
	.long 0
	.section .note.GNU-stack, "", @progbits
