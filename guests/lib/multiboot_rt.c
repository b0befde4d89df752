/* C side of the multiboot entry (multiboot.S). */
#include "popek.h"

void rt_start(u32 magic, struct multiboot_info *mbi);

void rt_start(u32 magic, struct multiboot_info *mbi)
{
	uart_init();
	/* Our own tables: the loader's GDT may live anywhere in RAM. */
	gdt_init();
	idt_init();
	pic_init();
	kmain(magic, mbi);
	finish();
}
