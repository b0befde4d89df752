/*
 * Check helpers: one line per check, then a PASS/FAIL summary and an exit
 * through the isa-debug-exit port (value 0 -> exit status 1 = pass,
 * value 1 -> exit status 3 = fail).
 */
#include "popek.h"

static u32 checks, passed;

void check(const char *what, int ok)
{
	checks++;
	if (ok) {
		passed++;
		kprintf("ok   %s\n", what);
	} else {
		kprintf("FAIL %s\n", what);
	}
}

void check_eq(const char *what, u32 got, u32 want)
{
	checks++;
	if (got == want) {
		passed++;
		kprintf("ok   %s\n", what);
	} else {
		kprintf("FAIL %s (got 0x%x, want 0x%x)\n", what, got, want);
	}
}

void check_str(const char *what, const char *got, const char *want)
{
	checks++;
	if (!strcmp(got, want)) {
		passed++;
		kprintf("ok   %s\n", what);
	} else {
		kprintf("FAIL %s (got \"%s\", want \"%s\")\n", what, got, want);
	}
}

void halt_forever(void)
{
	for (;;)
		__asm__ volatile("cli; hlt");
}

int verdict(void)
{
	int ok = checks > 0 && passed == checks;
	kprintf("%s %u/%u\n", ok ? "PASS" : "FAIL", passed, checks);
	return ok;
}

void finish(void)
{
	int ok = verdict();
	outb(DEBUG_EXIT, ok ? 0 : 1);
	/* Only reached on a machine without the exit device. */
	halt_forever();
}
