/*
 * The demo kernel's entry, context switch and return to user mode.
 *
 * boot_entry runs where the loader left it: 32-bit protected mode, paging
 * off, IF=0, EAX = multiboot magic, EBX = physical address of the multiboot
 * information. It is linked at its physical address (.boot in link.ld);
 * everything else is linked at KERNEL_BASE + physical. It zeroes .bss,
 * maps the first BOOT_MAP_MB of physical memory twice with 4 MiB pages,
 * at 0 (so the instructions after the one that sets CR0.PG still execute)
 * and at KERNEL_BASE, turns paging on and jumps to the kernel's virtual
 * address. kmain then maps all RAM at KERNEL_BASE and drops the identity
 * mapping (mm.c).
 */
#include "kernel_defs.h"

#define MB_MAGIC 0x1BADB002
/* bit 0: page-align modules, bit 1: give us the memory size and map. */
#define MB_FLAGS 0x00000003

#define V2P(x) ((x) - KERNEL_BASE)

	.section .multiboot, "a"
	.align 4
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)

	.section .text.boot, "ax"
	.globl boot_entry
boot_entry:
	cli
	movl %eax, %esi			/* keep magic and info out of rep stos's way */
	movl %ebx, %ebp
	movb $MARK_BOOT, %al
	outb %al, $0x80

	cld
	movl $V2P(__bss_start), %edi
	movl $V2P(__bss_end), %ecx
	subl %edi, %ecx
	shrl $2, %ecx
	xorl %eax, %eax
	rep stosl

	/* kernel_pd (in .bss, zeroed just above): 4 MiB pages. The identity
	 * entries are temporary; the KERNEL_BASE ones are global (CR4.PGE)
	 * and have A and D set up front, as kernel mappings always will. */
	movl $V2P(kernel_pd), %edi
	movl $(PTE_P | PTE_W | PTE_PS | PTE_A | PTE_D), %eax
	movl $(BOOT_MAP_MB / 4), %ecx
1:	movl %eax, (%edi)
	leal PTE_G(%eax), %edx
	movl %edx, (KERNEL_BASE >> 22) * 4(%edi)
	addl $4, %edi
	addl $0x400000, %eax
	loop 1b

	movl %cr4, %eax
	orl $(CR4_PSE | CR4_PGE), %eax
	movl %eax, %cr4
	movl $V2P(kernel_pd), %eax
	movl %eax, %cr3
	movl %cr0, %eax
	orl $(CR0_PG | CR0_WP), %eax
	movl %eax, %cr0
	movl $high_entry, %eax
	jmp *%eax

	.text
high_entry:
	movl $boot_stack_top, %esp
	pushl $0			/* known EFLAGS: IF=0, DF=0, IOPL=0 */
	popfl
	pushl %ebp			/* multiboot information (physical) */
	pushl %esi			/* magic */
	call kmain
2:	cli
	hlt
	jmp 2b

/*
 * swtch(u32 *save_esp, u32 esp): saves the callee-saved registers on the
 * current kernel stack, stores ESP in *save_esp, switches to esp and pops
 * the registers saved there. A new process's stack is prepared to "return"
 * into trapret (proc.c).
 */
	.globl swtch
swtch:
	movl 4(%esp), %eax
	movl 8(%esp), %edx
	pushl %ebp
	pushl %ebx
	pushl %esi
	pushl %edi
	movl %esp, (%eax)
	movl %edx, %esp
	popl %edi
	popl %esi
	popl %ebx
	popl %ebp
	ret

/*
 * sysenter_entry: the kernel's SYSENTER entry (IA32_SYSENTER_EIP; the
 * user runtime's ABI in user/sys.h). IA32_SYSENTER_ESP points at the
 * TSS's ESP0 field, so the first instruction switches to the running
 * process's kernel stack. It then pushes the frame INT 0x80 would have
 * pushed (the caller's ESP is in EBP, its return address in ESI; IF was
 * set in user mode, SYSENTER cleared it) and joins the interrupt path,
 * which leaves by IRET: a forked child or a switched-to process returns
 * the same way as after INT 0x80.
 */
	.globl sysenter_entry
sysenter_entry:
	movl (%esp), %esp
	pushl $0x23			/* user SS (SEL_UDATA | 3) */
	pushl %ebp			/* user ESP */
	pushfl
	orl $0x200, (%esp)		/* IF */
	pushl $0x1B			/* user CS (SEL_UCODE | 3) */
	pushl %esi			/* user EIP */
	pushl $-1			/* NO_ERROR_CODE */
	pushl $0x80
	jmp isr_common

/*
 * trapret: leaves the kernel through the struct frame at ESP (lib/popek.h),
 * like the tail of the interrupt stubs in lib/isr.S. New processes start
 * here: a forked child with a copy of its parent's frame (EAX = 0), init
 * and exec'ed programs with a fresh one.
 */
	.globl trapret
trapret:
	popl %gs
	popl %fs
	popl %es
	popl %ds
	popal
	addl $8, %esp			/* vector and error code */
	iretl

	.section .stack, "aw", @nobits
	.align 16
	.space 16384
	.globl boot_stack_top
boot_stack_top:

/* One kernel stack per process slot (proc.c). */
	.align 4096
	.globl kstacks
kstacks:
	.space NPROC * KSTACK_SIZE

	.section .note.GNU-stack, "", @progbits
