/*
 * hostile: ring-3 code that attacks the monitor running it.
 *
 * Under popek's BT engine, guest user code runs directly on the host CPU
 * inside the monitor's own process (design.md sections 3 and 4), so
 * anything the host CPU lets 32-bit user code do is a way out: load the
 * host Linux's flat selectors, rewrite the protection-key register, jump
 * to the host's 64-bit code segment, make host system calls. A faithful
 * virtual CPU gives each attempt the architectural result it has on a
 * real x86 running this guest, and that is what this guest checks.
 *
 * One scenario per run, chosen on the command line (attack=a .. attack=k):
 *  a  load host selectors 0x2b, 0x23, 0x33 into DS/ES/SS/FS/GS (and LDS);
 *     read and write the monitor's region 0xFFC00000 through DS and ES;
 *  b  WRPKRU, RDPKRU and XRSTOR (ways to change PKRU), then read, write
 *     and re-read 0xFFC00000 through a flat 4 GiB selector of the guest;
 *  c  far JMP, far CALL and far RET to 0x33 (host 64-bit code), at code
 *     making host system calls;
 *  d  int 0x80 with i386 Linux system call numbers (open, write, kill,
 *     exit), which must reach the guest's own kernel;
 *  e  IRET to 0x33 and a far JMP to 0x23 (host 32-bit code): apart from c
 *     because KVM's emulator cannot do them at ring 3 (kvm-pvm: #UD).
 *  f  far JMP to 0x33 and back: if the host lets 64-bit code run, it must
 *     find no host value in any register or on the guest's stack;
 *  g  64-bit code reads and writes memory above 4 GiB;
 *  h  64-bit code calls the host's vsyscall page;
 *  i  64-bit code spins without faulting.
 *  j  SYSENTER with EBP at the monitor's region and at page 0 (the host's
 *     own SYSENTER path reads the word at EBP before the call traps).
 *  k  NT set with POPF, then system calls (host code kept the guest's NT
 *     once, and the next entry's IRETQ faulted).
 *
 * For f-i a CPU that honours the guest's GDT raises #GP(0x30) at the far
 * JMP. popek's BT engine cannot refuse it (the host's GDT answers), so
 * under bt f checks what 64-bit code could see, and g, h and i must end
 * the VM (tests/bt.rs). host-fsgsbase, host-avx and host-avx512 on the
 * command line say which registers the host has for f to read.
 *
 * The kernel prints what it expects, then one line per attempt as it
 * happens. The GDT has five entries (hostile.h), so host selectors of
 * index 5 and up are beyond its limit. The user code and data segments
 * (LDT) have a 3 GiB limit, as a kernel protecting its upper gigabyte
 * with segments would set them; scenario b uses a third, flat, one.
 */
#include "popek.h"
#include "hostile.h"

/* user.S */
void enter_user(void (*eip)(void), u32 esp) __attribute__((noreturn));
void user_a(void), user_b(void), user_c(void), user_d(void), user_e(void);
void user_f(void), user_g(void), user_h(void), user_i(void), user_j(void), user_k(void);
extern u32 j_site, j_esp;
extern u64 f64_seen[F_SLOTS];
extern u32 f64_reached, f64_stack_dirty;
/* Read by f64 (user.S): HOST_* bits. */
u32 host_features;
extern char user_done[];
extern const char hostile_path_d[], breach_message[];
extern const u32 breach_message_length;
extern u32 user_results[R_COUNT];

/* The FAULT() table of user.S. */
struct site {
	u32 id, at, resume;
};
extern const struct site sites_begin[], sites_end[];

#define NO_ERR NO_ERROR_CODE

/* What each faulting site must raise, and how to say it. */
static const struct {
	char scenario;
	u32 vector, error;
	const char *what;
} expect[SITE_COUNT] = {
	[SITE_A_DS_2B] = { 'a', 13, 0x28, "load of host selector 0x2b into DS raised #GP(0x28)" },
	[SITE_A_READ] = { 'a', 13, 0, "read of 0xFFC00000 past DS's 3 GiB limit raised #GP(0)" },
	[SITE_A_WRITE] = { 'a', 13, 0, "write of 0xFFC00000 past DS's 3 GiB limit raised #GP(0)" },
	[SITE_A_ES_23] = { 'a', 13, 0x20, "load of host selector 0x23 into ES raised #GP(0x20) (guest GDT entry 4 is its LDT)" },
	[SITE_A_ES_READ] = { 'a', 13, 0, "read of ES:0xFFC00000 past ES's 3 GiB limit raised #GP(0)" },
	[SITE_A_SS_2B] = { 'a', 13, 0x28, "load of host selector 0x2b into SS raised #GP(0x28)" },
	[SITE_A_FS_2B] = { 'a', 13, 0x28, "pop of host selector 0x2b into FS raised #GP(0x28)" },
	[SITE_A_GS_33] = { 'a', 13, 0x30, "load of host selector 0x33 into GS raised #GP(0x30)" },
	[SITE_A_LDS_2B] = { 'a', 13, 0x28, "lds of 002b:ffc00000 raised #GP(0x28)" },
	[SITE_B_WRPKRU] = { 'b', 6, NO_ERR, "wrpkru raised #UD" },
	[SITE_B_RDPKRU] = { 'b', 6, NO_ERR, "rdpkru raised #UD" },
	[SITE_B_XRSTOR] = { 'b', 6, NO_ERR, "xrstor raised #UD" },
	[SITE_C_LJMP_33] = { 'c', 13, 0x30, "far jmp to host selector 0x33 (64-bit code) raised #GP(0x30)" },
	[SITE_C_LCALL_33] = { 'c', 13, 0x30, "far call to host selector 0x33 raised #GP(0x30)" },
	[SITE_C_LRET_33] = { 'c', 13, 0x30, "far ret to host selector 0x33 raised #GP(0x30)" },
	[SITE_E_IRET_33] = { 'e', 13, 0x30, "iret to host selector 0x33 raised #GP(0x30)" },
	[SITE_E_LJMP_23] = { 'e', 13, 0x20, "far jmp to host selector 0x23 (32-bit code) raised #GP(0x20)" },
	[SITE_F_HLT] = { 'f', 13, 0, "hlt at ring 3 (with FS and GS null) raised #GP(0)" },
	[SITE_F_LJMP_33] = { 'f', 13, 0x30, "far jmp to host selector 0x33 raised #GP(0x30)" },
	[SITE_G_LJMP_33] = { 'g', 13, 0x30, "far jmp to host selector 0x33 raised #GP(0x30)" },
	[SITE_H_LJMP_33] = { 'h', 13, 0x30, "far jmp to host selector 0x33 raised #GP(0x30)" },
	[SITE_I_LJMP_33] = { 'i', 13, 0x30, "far jmp to host selector 0x33 raised #GP(0x30)" },
	/* Without SEP in CPUID these raise #UD instead (on_sysenter_fault). */
	[SITE_J_REGION] = { 'j', 13, 0, "SYSENTER with EBP at 0xFFC00000 raised #GP(0) (IA32_SYSENTER_CS null)" },
	[SITE_J_PAGE0] = { 'j', 13, 0, "SYSENTER with EBP at 0x10 raised #GP(0) (IA32_SYSENTER_CS null)" },
};

static const struct {
	char name;
	void (*entry)(void);
	const char *does;
	const char *expects;
} scenarios[] = {
	{ 'a', user_a,
	  "ring 3 loads the host's selectors 0x2b, 0x23, 0x33 and touches 0xFFC00000",
	  "#GP(selector) for each load (the GDT has 5 entries), #GP(0) for 0xFFC00000 (3 GiB limits)" },
	{ 'b', user_b,
	  "ring 3 runs WRPKRU, RDPKRU, XRSTOR, then reads/writes 0xFFC00000 through a flat selector",
	  "#UD for each (CR4.PKE and CR4.OSXSAVE clear), all-ones reads and a dropped write (no RAM there)" },
	{ 'c', user_c,
	  "ring 3 far-jumps, -calls and -returns to 0x33 (host 64-bit code), at host system calls",
	  "#GP(0x30) for each (index 6 is beyond the GDT); no host system call runs" },
	{ 'd', user_d,
	  "ring 3 issues int 0x80 with i386 Linux numbers: open, write, kill(1, SIGKILL), exit",
	  "each arrives at the guest kernel's int 0x80 handler; none reaches the host" },
	{ 'e', user_e,
	  "ring 3 IRETs to 0x33 and far-jumps to 0x23 (host 32-bit code), at host system calls",
	  "#GP(0x30) for the IRET, #GP(0x20) for 0x23 (an LDT descriptor); no host system call runs" },
	{ 'f', user_f,
	  "ring 3 far-jumps to 0x33 with null FS and GS, reads every register 64-bit code can, and jumps back",
	  "#GP(0x30); where the host's GDT answers instead, 64-bit code finds no host value" },
	{ 'g', user_g, "ring 3 far-jumps to 0x33 and reads, then writes, memory above 4 GiB",
	  "#GP(0x30); where the host's GDT answers instead, the VM is stopped at the read" },
	{ 'h', user_h, "ring 3 far-jumps to 0x33 and calls the host's vsyscall page (gettimeofday)",
	  "#GP(0x30); where the host's GDT answers instead, the VM is stopped at the call" },
	{ 'i', user_i, "ring 3 far-jumps to 0x33 and spins there without faulting",
	  "#GP(0x30); where the host's GDT answers instead, the VM is stopped at the next kick" },
	{ 'j', user_j, "ring 3 runs SYSENTER with EBP at 0xFFC00000 (the monitor's region), then at 0x10",
	  "#GP(0) for each (#UD without SEP), with the guest's own EBP; nothing of the host's" },
	{ 'k', user_k, "ring 3 sets NT with POPF, then makes system calls",
	  "each int 0x80 reaches the guest kernel with NT in the saved EFLAGS, and ring 3 keeps NT" },
};

static char scenario;
static u32 site_hits[SITE_COUNT];

static u64 hostile_gdt[HOSTILE_GDT_ENTRIES] __attribute__((aligned(8)));
static u64 ldt[HOSTILE_LDT_ENTRIES] __attribute__((aligned(8)));
static u8 kernel_stack[8192] __attribute__((aligned(16)));
/* Not static: f64 (user.S) checks what lies below its stack pointer. */
u8 user_stack[8192] __attribute__((aligned(16)));

/* What the guest kernel's int 0x80 returns: recognisably not a host result. */
#define GUEST_RETURN(nr) (0x4B000000u | (nr))

static void load_tables(void)
{
	hostile_gdt[0] = 0;
	hostile_gdt[SEL_KCODE >> 3] = make_desc(0, 0xFFFFF, ACC_CODE_R, FLAGS_4K_32);
	hostile_gdt[SEL_KDATA >> 3] = make_desc(0, 0xFFFFF, ACC_DATA_W, FLAGS_4K_32);
	memset(&tss, 0, sizeof(tss));
	tss.ss0 = SEL_KDATA;
	tss.esp0 = (u32)kernel_stack + sizeof(kernel_stack);
	tss.iomap_base = sizeof(tss); /* no I/O bitmap: IN/OUT fault at CPL 3 */
	hostile_gdt[TSS_SEL >> 3] = make_desc((u32)&tss, sizeof(tss) - 1, ACC_TSS, FLAGS_SYS);
	hostile_gdt[LDT_SEL >> 3] = make_desc((u32)ldt, sizeof(ldt) - 1, ACC_LDT, FLAGS_SYS);

	/* 3 GiB: limit 0xBFFFF pages. */
	ldt[UCODE_SEL >> 3] = make_desc(0, 0xBFFFF, ACC_CODE_R | ACC_DPL(3), FLAGS_4K_32);
	ldt[UDATA_SEL >> 3] = make_desc(0, 0xBFFFF, ACC_DATA_W | ACC_DPL(3), FLAGS_4K_32);
	ldt[UFLAT_SEL >> 3] = make_desc(0, 0xFFFFF, ACC_DATA_W | ACC_DPL(3), FLAGS_4K_32);

	struct dtr d = { sizeof(hostile_gdt) - 1, (u32)hostile_gdt };
	__asm__ volatile("lgdt %0\n\t"
			 "ljmp %1, $1f\n"
			 "1:\n\t"
			 "movw %w2, %%ds\n\t"
			 "movw %w2, %%es\n\t"
			 "movw %w2, %%fs\n\t"
			 "movw %w2, %%gs\n\t"
			 "movw %w2, %%ss\n\t"
			 "lldt %w3\n\t"
			 "ltr %w4"
			 :
			 : "m"(d), "i"(SEL_KCODE), "r"(SEL_KDATA), "r"(LDT_SEL), "r"(TSS_SEL)
			 : "memory");
}

static const struct site *find_site(u32 eip)
{
	for (const struct site *s = sites_begin; s < sites_end; s++)
		if (s->at == eip)
			return s;
	return NULL;
}

static void report_and_finish(struct frame *f);
static void report_f64(void);

static const char *vector_name(u32 v)
{
	static const char *names[] = { "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO",
				       "#TS", "#NP", "#SS", "#GP", "#PF", "v15", "#MF", "#AC", "#MC", "#XM" };
	return v < ARRAY_SIZE(names) ? names[v] : "vector";
}

/* A fault of scenario j's SYSENTER at site j_site, wherever it says EIP
 * was: the host's SYSENTER path keeps no EIP or ESP (popek on Intel
 * hosts reports EIP 0 and ESP = EBP), so the site is the one user code
 * named, and it resumes on the ESP it saved. */
static void on_sysenter_fault(struct frame *f)
{
	char what[160];
	u32 id = j_site, ebp = id == SITE_J_REGION ? MONITOR_ADDR : 0x10;
	u32 a = 1, b, c = 0, d;
	__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
	int sep = (d >> 11) & 1;
	u32 vector = sep ? 13 : 6, error = sep ? 0 : NO_ERR;
	const struct site *s = 0;
	for (const struct site *t = sites_begin; t < sites_end; t++)
		if (t->id == id)
			s = t;
	j_site = -1;
	site_hits[id]++;
	int same = f->vector == vector && f->error == error;
	if (sep)
		ksnprintf(what, sizeof(what), "%s", expect[id].what);
	else
		ksnprintf(what, sizeof(what), "SYSENTER with EBP at 0x%x raised #UD (no SEP)", ebp);
	if (!same)
		ksnprintf(what + strlen(what), sizeof(what) - strlen(what), " (got %s %u, error code 0x%x)",
			  vector_name(f->vector), f->vector, f->error);
	check(what, same);
	check_eq("the fault shows the guest's own EBP", f->ebp, ebp);
	f->eip = s->resume;
	f->user_esp = j_esp;
}

/* Every exception from ring 3 lands here. */
static void on_exception(struct frame *f)
{
	char what[160];

	if (f->vector == 6 && f->eip == (u32)user_done) {
		report_and_finish(f);
		return;
	}
	if (scenario == 'j' && j_site < SITE_COUNT) {
		on_sysenter_fault(f);
		return;
	}
	const struct site *s = find_site(f->eip);
	if (s && s->id < SITE_COUNT && expect[s->id].scenario == scenario) {
		site_hits[s->id]++;
		int same = f->vector == expect[s->id].vector && f->error == expect[s->id].error;
		if (same)
			ksnprintf(what, sizeof(what), "%s", expect[s->id].what);
		else
			ksnprintf(what, sizeof(what), "%s (got %s %u, error code 0x%x)", expect[s->id].what,
				  vector_name(f->vector), f->vector, f->error);
		check(what, same);
		f->eip = s->resume;
		return;
	}
	if (scenario == 'd' && f->vector == 6 && *(const u8 *)f->eip == 0xCD && ((const u8 *)f->eip)[1] == 0x80) {
		/* kvm-pvm hosts deliver a ring-3 INT n as #UD (docs/kvm.md). */
		ksnprintf(what, sizeof(what), "int 0x80 eax=%u raised #UD instead of reaching the guest kernel", f->eax);
		check(what, 0);
		finish();
	}
	ksnprintf(what, sizeof(what), "unexpected %s (vector %u) at %04x:%08x, error code 0x%x", vector_name(f->vector),
		  f->vector, f->cs & 0xFFFF, f->eip, f->error);
	check(what, 0);
	finish();
}

/* The guest kernel's system calls (scenario d): the i386 Linux numbers,
 * received and answered here, never by the host. */
static void on_syscall(struct frame *f)
{
	char what[128];
	u32 nr = f->eax;
	int args_ok;

	if (scenario == 'k') {
		ksnprintf(what, sizeof(what), "int 0x80 eax=%u from ring 3 with NT set reached the guest kernel", nr);
		check(what, (f->cs & 3) == 3 && (f->eflags & EFLAGS_NT_BIT));
		if (nr == I386_EXIT) {
			check_eq("the first call returned the guest kernel's value", user_results[R_K_RESULT],
				 GUEST_RETURN(I386_GETPID));
			check("ring 3 still had NT after the first call", user_results[R_K_FLAGS] & EFLAGS_NT_BIT);
			report_and_finish(f);
		}
		f->eax = GUEST_RETURN(nr);
		return;
	}

	switch (nr) {
	case I386_OPEN:
		args_ok = f->ebx == (u32)hostile_path_d && !strcmp((const char *)f->ebx, "/tmp/popek-hostile-d") &&
			  f->ecx == O_WRONLY_CREAT && f->edx == 0x1a4;
		ksnprintf(what, sizeof(what), "int 0x80 eax=5 (open \"%s\") reached the guest kernel",
			  hostile_path_d);
		break;
	case I386_WRITE:
		args_ok = f->ebx == 1 && f->ecx == (u32)breach_message && f->edx == breach_message_length;
		ksnprintf(what, sizeof(what), "int 0x80 eax=4 (write to fd 1) reached the guest kernel");
		break;
	case I386_KILL:
		args_ok = f->ebx == 1 && f->ecx == SIGKILL;
		ksnprintf(what, sizeof(what), "int 0x80 eax=37 (kill(1, SIGKILL)) reached the guest kernel");
		break;
	case I386_EXIT:
		args_ok = f->ebx == 0;
		ksnprintf(what, sizeof(what), "int 0x80 eax=1 (exit(0)) reached the guest kernel");
		break;
	default:
		ksnprintf(what, sizeof(what), "int 0x80 with an unexpected eax=%u", nr);
		check(what, 0);
		finish();
	}
	check(what, args_ok && (f->cs & 3) == 3);
	if (nr == I386_EXIT) {
		check_eq("open returned the guest kernel's value to ring 3", user_results[R_D_OPEN],
			 GUEST_RETURN(I386_OPEN));
		check_eq("write returned the guest kernel's value to ring 3", user_results[R_D_WRITE],
			 GUEST_RETURN(I386_WRITE));
		check_eq("kill returned the guest kernel's value to ring 3", user_results[R_D_KILL],
			 GUEST_RETURN(I386_KILL));
		report_and_finish(f);
	}
	f->eax = GUEST_RETURN(nr);
}

static int all_zero(const u64 *v, u32 n)
{
	u64 any = 0;
	for (u32 i = 0; i < n; i++)
		any |= v[i];
	return any == 0;
}

/* Scenario f came back from 64-bit code: what did it see? Every value
 * must be the guest's own (zero where the guest never wrote). */
static void report_f64(void)
{
	const u64 *v = f64_seen;
	u64 upper = 0;

	kprintf("far jmp to 0x33 reached the host's 64-bit code segment and came back unnoticed; what 64-bit code "
		"could read:\n");
	for (u32 i = 0; i < 8; i++)
		upper |= v[F_GPR + i] >> 32;
	check("the upper halves of RAX..RDI (RSP included) held 0", upper == 0);
	check("R8-R15 held 0", all_zero(&v[F_GPR + 8], 8));
	check("RFLAGS held no bit above 31", (v[F_RFLAGS] >> 32) == 0);
	if (host_features & HOST_FSGSBASE) {
		check_eq("the FS base (FS null) was 0, not the host's thread pointer", (u32)(v[F_FSBASE] >> 32),
			 0);
		check_eq("the FS base's low half was 0 too", (u32)v[F_FSBASE], 0);
		check("the GS base (GS null) was 0", v[F_GSBASE] == 0);
	} else {
		kprintf("(the host has no RDFSBASE for user code: FS and GS bases not read)\n");
	}
	check("XMM8-XMM15 (64-bit mode only) held 0", all_zero(&v[F_XMM8], 16));
	if (host_features & HOST_AVX)
		check("the upper halves of YMM0-YMM15 held 0", all_zero(&v[F_YMM_HI], 32));
	else
		kprintf("(no AVX on the host: YMM not read)\n");
	if (host_features & HOST_AVX512) {
		check("k0-k7 held 0", all_zero(&v[F_K], 8));
		check("bits 256-511 of ZMM0-ZMM15 held 0", all_zero(&v[F_ZMM_HI], 64));
		check("ZMM16-ZMM31 held 0", all_zero(&v[F_ZMM16], 128));
	} else {
		kprintf("(no AVX-512 on the host: k0-k7 and ZMM not read)\n");
	}
	check_eq("the guest's stack below ESP held only its kernel's fill pattern (dwords changed)", f64_stack_dirty,
		 0);
}

/* The user code is done (UD2 at user_done, or exit in scenario d). */
static void report_and_finish(struct frame *f)
{
	char what[128];

	if (scenario == 'f' && f64_reached)
		report_f64();
	for (u32 id = 0; id < SITE_COUNT; id++) {
		if (expect[id].scenario != scenario || site_hits[id] == 1)
			continue;
		/* The host's GDT answered the far JMP: report_f64 said so. */
		if (id == SITE_F_LJMP_33 && f64_reached && site_hits[id] == 0)
			continue;
		ksnprintf(what, sizeof(what), "%s: expected once, happened %u times", expect[id].what, site_hits[id]);
		check(what, 0);
	}
	if (scenario == 'b') {
		check_eq("read of 0xFFC00000 through the guest's flat selector 0x17 floats high (no RAM there)",
			 user_results[R_B_READ], 0xFFFFFFFF);
		check_eq("write of \"HOST\" to 0xFFC00000 went nowhere: read back 0xffffffff", user_results[R_B_REREAD],
			 0xFFFFFFFF);
		check_eq("read of 0xFFFFFFFC, the region's last dword, floats high", user_results[R_B_READ_TOP],
			 0xFFFFFFFF);
	}
	check("ring 3 ended in its own code segment 0x07", (f->cs & 0xFFFF) == UCODE_SEL);
	check("ring 3 ended with its own DS, ES, FS, GS and SS (0x0f)",
	      (f->ds & 0xFFFF) == UDATA_SEL && (f->es & 0xFFFF) == UDATA_SEL && (f->fs & 0xFFFF) == UDATA_SEL &&
		      (f->gs & 0xFFFF) == UDATA_SEL && (f->user_ss & 0xFFFF) == UDATA_SEL);
	finish();
}

/* The scenario attack= names on the command line, or 0. */
static char chosen_attack(struct multiboot_info *mbi)
{
	char word[] = "attack=?";
	for (u32 i = 0; i < ARRAY_SIZE(scenarios); i++) {
		word[7] = scenarios[i].name;
		if (cmdline_has_word(mbi, word))
			return scenarios[i].name;
	}
	return 0;
}

void kmain(u32 magic, struct multiboot_info *mbi)
{
	(void)magic;

	scenario = chosen_attack(mbi);
	host_features = (cmdline_has_word(mbi, "host-fsgsbase") ? HOST_FSGSBASE : 0) | (cmdline_has_word(mbi, "host-avx") ? HOST_AVX : 0) |
			(cmdline_has_word(mbi, "host-avx512") ? HOST_AVX512 : 0);
	for (u32 i = 0; i < ARRAY_SIZE(scenarios); i++) {
		if (scenarios[i].name != scenario)
			continue;
		kprintf("hostile %c: %s\n", scenario, scenarios[i].does);
		kprintf("expect: %s\n", scenarios[i].expects);
		load_tables();
		if (scenario == 'f')
			for (u32 i = 0; i < sizeof(user_stack) / 4; i++)
				((u32 *)user_stack)[i] = STACK_FILL;
		for (int v = 0; v < 32; v++)
			set_handler(v, on_exception);
		idt_set_attr(0x80, 0xEE); /* interrupt gate, DPL 3: the guest's system call */
		set_handler(0x80, on_syscall);
		enter_user(scenarios[i].entry, (u32)user_stack + sizeof(user_stack));
	}
	kprintf("hostile: choose a scenario with attack=a to attack=k on the command line\n");
	check("the command line names a scenario", 0);
}
