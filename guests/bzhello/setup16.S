/*
 * Real-mode setup code of the bzhello bzImage (the setup sectors).
 *
 * popek's loader never runs this: it uses the 32-bit entry. Loaders that
 * do run it (QEMU's -kernel, GRUB's "linux16") jump to offset 0x200 of the
 * setup segment, whose short jump lands here (build.rs links this file at
 * SETUP_CODE_OFFSET and places it there). Like Linux's own setup, it
 * builds boot_params from the loaded header and the BIOS e820 map, switches
 * to protected mode and enters code32_start with the 32-bit boot
 * protocol's register state. It lets bzhello be tried outside popek.
 *
 * Data is addressed through DS = the setup segment, where offsets equal
 * file offsets (the link address is the file offset).
 */
#define ZERO_PAGE 0x1000	/* our boot_params, in the loader's heap area */
#define SETUP_HDR 0x1F1
#define SETUP_HDR_END 0x290
#define E820_ENTRIES 0x1E8
#define E820_TABLE 0x2D0
#define CODE32_START 0x214
#define SMAP 0x534D4150

	.code16
	.text
	.globl setup_start
setup_start:
	cli
	cld
	movw %ds, %ax
	movw %ax, %es

	/* boot_params = zeroes + the setup header as the loader left it. */
	movw $ZERO_PAGE, %di
	movw $2048, %cx
	xorw %ax, %ax
	rep stosw
	movw $SETUP_HDR, %si
	movw $(ZERO_PAGE + SETUP_HDR), %di
	movw $(SETUP_HDR_END - SETUP_HDR), %cx
	rep movsb

	/* The BIOS memory map, INT 15h AX=E820h, up to 128 entries. */
	xorl %ebx, %ebx
	movw $(ZERO_PAGE + E820_TABLE), %di
1:	movl $0xE820, %eax
	movl $SMAP, %edx
	movl $20, %ecx
	int $0x15
	jc 2f
	cmpl $SMAP, %eax
	jne 2f
	incb (ZERO_PAGE + E820_ENTRIES)
	addw $20, %di
	cmpb $128, (ZERO_PAGE + E820_ENTRIES)
	jae 2f
	testl %ebx, %ebx
	jnz 1b
2:
	/* ESI = linear address of boot_params; patch the GDTR base. */
	xorl %esi, %esi
	movw %ds, %si
	shll $4, %esi
	movl %esi, %eax
	addl $gdt, %eax
	movl %eax, gdtr + 2
	lgdtl gdtr
	addl $ZERO_PAGE, %esi

	movl %cr0, %eax
	orl $1, %eax
	movl %eax, %cr0
	/* Far return (32-bit operand size) to 0x10:linear(pm32). */
	movl %esi, %eax
	subl $ZERO_PAGE, %eax
	addl $pm32, %eax
	pushl $0x10
	pushl %eax
	lretl

	.code32
pm32:
	movl $0x18, %eax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movw %ax, %fs
	movw %ax, %gs
	xorl %ebx, %ebx
	xorl %ebp, %ebp
	xorl %edi, %edi
	movl CODE32_START(%esi), %eax
	jmp *%eax

	.align 8
gdt:	.quad 0
	.quad 0
	.quad 0x00CF9B000000FFFF	/* 0x10: flat 32-bit code */
	.quad 0x00CF93000000FFFF	/* 0x18: flat data */
gdtr:	.word gdtr - gdt - 1
	.long 0

	.section .note.GNU-stack, "", @progbits
