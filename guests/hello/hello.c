/*
 * hello: the default guest. Prints a greeting and checks what the multiboot
 * loader handed over, then exits through the debug-exit port.
 */
#include "popek.h"

void kmain(u32 magic, struct multiboot_info *mbi)
{
	kprintf("hello from a popek guest\n");

	check_eq("multiboot magic in EAX is 0x2BADB002", magic, MULTIBOOT_BOOTLOADER_MAGIC);
	check("multiboot info has mem_lower/mem_upper (flags bit 0)", mbi->flags & MBI_FLAG_MEM);
	/* 640 KiB of conventional memory less the 1 KiB EBDA, as on a BIOS PC. */
	check_eq("mem_lower is 639 KiB", mbi->mem_lower, 639);
	/* The exact value depends on the RAM size popek was given. */
	check("mem_upper is nonzero", mbi->mem_upper > 0);
	check("multiboot info has a boot loader name (flags bit 9)", mbi->flags & MBI_FLAG_LOADER_NAME);
	const char *name = (mbi->flags & MBI_FLAG_LOADER_NAME) ? (const char *)mbi->boot_loader_name : "";
	check_str("boot loader name", name, "popek");
}
