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

	.bss
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

	.section .note.GNU-stack, "", @progbits
