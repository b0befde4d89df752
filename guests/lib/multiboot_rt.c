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

int cmdline_has_word(struct multiboot_info *mbi, const char *word)
{
	if (!(mbi->flags & MBI_FLAG_CMDLINE) || !mbi->cmdline)
		return 0;
	const char *cmdline = (const char *)mbi->cmdline;
	u32 n = strlen(word);
	for (const char *at = strstr(cmdline, word); at; at = strstr(at + 1, word))
		if ((at == cmdline || at[-1] == ' ') && (at[n] == 0 || at[n] == ' '))
			return 1;
	return 0;
}
