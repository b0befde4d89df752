/*
 * Multiboot v1 header and entry point for the multiboot guests.
 *
 * The loader enters _start in 32-bit protected mode, paging off, IF=0, with
 * EAX = 0x2BADB002 and EBX = the multiboot information structure. We zero
 * .bss, switch to our own stack and call rt_start(magic, info) in C, which
 * loads the guest's own GDT and IDT before kmain runs.
 */
#define MB_MAGIC 0x1BADB002
/* bit 0: page-align modules, bit 1: give us mem_lower/mem_upper. */
#define MB_FLAGS 0x00000003

	.section .multiboot, "a"
	.align 4
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)

	.section .text.entry, "ax"
	.globl _start
_start:
	cli
	movl %eax, %esi			/* keep magic and info out of rep stos's way */
	movl %ebx, %ebp
	cld
	movl $__bss_start, %edi
	movl $__bss_end, %ecx
	subl %edi, %ecx
	shrl $2, %ecx
	xorl %eax, %eax
	rep stosl
	movl $stack_top, %esp
	pushl $0			/* known EFLAGS: IF=0, DF=0, IOPL=0 */
	popfl
	pushl %ebp
	pushl %esi
	call rt_start
1:	cli
	hlt
	jmp 1b

	.section .stack, "aw", @nobits
	.align 16
	.space 16384
stack_top:

	.section .note.GNU-stack, "", @progbits
