/*
 * 32-bit entry of the bzhello kernel (Linux boot protocol, code32_start =
 * 0x100000). The loader enters here in flat protected mode with
 * CS = 0x10, DS = ES = SS = 0x18, IF = 0, ESI = &boot_params and
 * EBX = EBP = EDI = 0 (Documentation/arch/x86/boot.rst, "32-bit boot
 * protocol"). Nothing gives us a stack, so the entry state is stored to
 * memory before anything else, then bz_main checks it.
 */
	.section .text.entry, "ax"
	.globl _start
_start:
	jmp start32

/* kernel_info (protocol 2.15): the setup header's kernel_info_offset
 * points here. build.rs finds it by its "LToP" magic. */
	.align 16
	.globl kernel_info
kernel_info:
	.ascii "LToP"
	.long kernel_info_end - kernel_info	/* size */
	.long kernel_info_end - kernel_info	/* size_total */
	.long 0					/* setup_type_max */
kernel_info_end:

/* For build.rs: the memory the kernel needs from 0x100000 (init_size). */
	.align 4
	.ascii "PKBZ"
	.long __end - _start

start32:
	movl %esi, entry_esi
	movl %ebx, entry_ebx
	movl %ebp, entry_ebp
	movl %edi, entry_edi
	xorl %eax, %eax
	movw %cs, %ax
	movl %eax, entry_cs
	movw %ds, %ax
	movl %eax, entry_ds
	movw %es, %ax
	movl %eax, entry_es
	movw %ss, %ax
	movl %eax, entry_ss
	movl $stack_top, %esp
	pushfl
	popl entry_eflags
	/* Zero .bss (the entry_* words live in .data, so they survive). */
	cld
	movl $__bss_start, %edi
	movl $__bss_end, %ecx
	subl %edi, %ecx
	shrl $2, %ecx
	xorl %eax, %eax
	rep stosl
	pushl $0
	popfl
	call bz_main
1:	cli
	hlt
	jmp 1b

	.data
	.align 4
	.globl entry_esi, entry_ebx, entry_ebp, entry_edi
	.globl entry_cs, entry_ds, entry_es, entry_ss, entry_eflags
entry_esi:	.long 0xFFFFFFFF
entry_ebx:	.long 0xFFFFFFFF
entry_ebp:	.long 0xFFFFFFFF
entry_edi:	.long 0xFFFFFFFF
entry_cs:	.long 0xFFFFFFFF
entry_ds:	.long 0xFFFFFFFF
entry_es:	.long 0xFFFFFFFF
entry_ss:	.long 0xFFFFFFFF
entry_eflags:	.long 0xFFFFFFFF

	.section .stack, "aw", @nobits
	.align 16
	.space 8192
stack_top:

	.section .note.GNU-stack, "", @progbits
