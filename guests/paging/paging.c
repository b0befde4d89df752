/*
 * paging: 32-bit two-level paging (CR0.PG, CR4.PSE, CR4.PGE) checked
 * against what the architecture guarantees (Intel SDM vol. 3 chapter 4).
 *
 * The kernel identity-maps its first 4 MiB with 4 KiB pages (page 0 left
 * out) and sets up a few more page-directory entries to test through:
 *
 *   PDE 0    0x00000000  page table pt_low: identity, supervisor, except
 *                        the ring-3 code, data and stack pages (U=1)
 *   PDE 1    0x00400000  4 MiB page, identity (physical 4 MiB), supervisor
 *   PDE 2    0x00800000  page table pt_win: the test windows WIN(n)
 *   PDE 3    0x00C00000  4 MiB page aliasing physical 4 MiB again
 *   PDE 4    0x01000000  supervisor PDE over a U=1 PTE
 *   PDE 5    0x01400000  not present (filled in through the self-map)
 *   PDE 6    0x01800000  read-only PDE over a writable U=1 PTE
 *   PDE 7    0x01C00000  read-only 4 MiB page (physical 4 MiB)
 *   PDE 1022 0xFF800000  the page directory itself: the page tables appear
 *                        at 0xFF800000 and the directory at 0xFFBFE000.
 *                        (Not the classic PDE 1023: popek's monitor owns
 *                        the top 4 MiB of linear space, as VMware's did,
 *                        and does not emulate guest accesses there.)
 *
 * A second directory, pd1, is the same except for its own window table
 * and self-map. Faults are taken by the probe catcher (lib/paging.h),
 * which records CR2 and the error code and skips the access.
 *
 * Only guaranteed behaviour is checked: a changed entry is relied on only
 * after an INVLPG, a CR3 write, a CR4.PGE change or a CR0.PG toggle,
 * never the other way round (a stale TLB entry may or may not be used).
 * Accessed bits are checked set only after an access through that entry,
 * dirty bits clear only on a page that was only read since they were
 * cleared.
 */
#include "popek.h"
#include "paging.h"

#define SEL_UCODE_RPL3 (SEL_UCODE | 3)

/* ---- the layout --------------------------------------------------------- */

#define PSE_PHYS 0x00400000u     /* physical 4 MiB: the 4 MiB pages' frame */
#define LIN_PSE 0x00400000u      /* PDE 1 */
#define LIN_WIN 0x00800000u      /* PDE 2 */
#define LIN_PSE_ALIAS 0x00C00000u /* PDE 3 */
#define LIN_SUP_PDE 0x01000000u  /* PDE 4 */
#define LIN_NEW 0x01400000u      /* PDE 5 */
#define LIN_RO_PDE 0x01800000u   /* PDE 6 */
#define LIN_PSE_RO 0x01C00000u   /* PDE 7 */
#define SELF_PDE 1022u
#define SELF_PTS 0xFF800000u     /* page tables through the self-map */
#define SELF_PD 0xFFBFE000u      /* the page directory through the self-map */
#define PDX(a) ((a) >> 22)
#define PTX(a) (((a) >> 12) & 1023)

/* The windows: pages of PDE 2, each with one job. */
#define WIN(n) (LIN_WIN + (n) * PAGE_SIZE)
enum {
	W_DATA,      /* frame A, RW: INVLPG */
	W_ALIAS1,    /* frame B, RW */
	W_ALIAS2,    /* frame B again */
	W_RO,        /* frame C, read-only supervisor */
	W_NP,        /* not present */
	W_USER_RO,   /* frame D, read-only user */
	W_CODE,      /* code_x (pd0) / code_y (pd1) */
	W_GLOBAL,    /* frame A, G=1 */
	W_CR3,       /* frame A (pd0) / frame B (pd1) */
	W_STRADDLE,  /* code page whose last instruction continues on... */
	W_STRADDLE2, /* ...this page, not present at first */
	W_SELF,      /* edited through the self-map */
	W_USER_RW,   /* frame E, RW user */
	W_AD,        /* frame F, RW: accessed and dirty bits */
	W_UCR3,      /* user RW: frame A (pd0) / frame B (pd1) */
	W_EMU,       /* frame A, RW: stores the monitor's emulator makes */
	W_SYSCALL,   /* code_z, read-only user code ending in INT 0x80 */
	W_SYSCALL_RW, /* code_z again, user-writable */
	W_COUNT
};

/* Data frames, each with its own marker in word 0. */
enum { FA, FB, FC, FD, FE, FF, NFRAMES };
#define MARK(f) (0x5EED0000u + (f))

#define PAGE_ALIGNED __attribute__((aligned(4096)))
static volatile u32 pd0[1024] PAGE_ALIGNED;
static volatile u32 pd1[1024] PAGE_ALIGNED;
static volatile u32 pt_low[1024] PAGE_ALIGNED;
static volatile u32 pt_win[1024] PAGE_ALIGNED;
static volatile u32 pt_win1[1024] PAGE_ALIGNED;
static volatile u32 pt_sup[1024] PAGE_ALIGNED;
static volatile u32 pt_ro[1024] PAGE_ALIGNED;
static volatile u32 pt_new[1024] PAGE_ALIGNED;
static volatile u32 frames[NFRAMES][1024] PAGE_ALIGNED;
static volatile u8 code_x[4096] PAGE_ALIGNED;
static volatile u8 code_y[4096] PAGE_ALIGNED;
static volatile u8 code_straddle[2][4096] PAGE_ALIGNED;
static volatile u8 code_z[4096] PAGE_ALIGNED;
static volatile u8 code_w[4096] PAGE_ALIGNED;
/* More frames with a hot INT 0x80 than popek keeps copies of (64). */
#define MANY_FRAMES 66
static volatile u8 code_many[MANY_FRAMES][4096] PAGE_ALIGNED;
/* A supervisor page ring 3 must not read or write. */
static volatile u32 secret[1024] PAGE_ALIGNED;
#define SECRET 0x5EC2E7u

/* Ring 3's pages (U=1): its stack and the argument block (user.S). */
struct user_args {
	u32 op, addr, value, result;
};
#define OP_READ 1
#define OP_WRITE 2
#define OP_CALL 3
union user_page {
	struct user_args a;
	u8 page[4096];
};
union user_page user_args PAGE_ALIGNED;
static u8 user_stack[4096] PAGE_ALIGNED;
static u8 esp0_stack[4096] PAGE_ALIGNED;

extern char user_text_start[], user_text_end[], user_main[];
extern char user_read_fault[], user_read_resume[];
extern char user_write_fault[], user_write_resume[];
extern char user_call_landing[];
extern char user_returned[];
void run_user(u32 eip, u32 esp);

#define CODE_X_RESULT 0x1111u
#define CODE_Y_RESULT 0x2222u
#define STRADDLE_RESULT 0x11223344u

/* ---- helpers ----------------------------------------------------------- */

static u32 phys(const volatile void *p) { return (u32)p; } /* identity-mapped */

static void set_pte(volatile u32 *pt, u32 lin, u32 value) { pt[PTX(lin)] = value; }


/* One operation at CPL 3 (user.S); returns what it read, wrote or got. */
static u32 user_op(u32 op, u32 addr, u32 value)
{
	user_args.a.op = op;
	user_args.a.addr = addr;
	user_args.a.value = value;
	user_args.a.result = 0;
	if (op == OP_CALL)
		pf_arm_exec(addr, user_call_landing);
	run_user((u32)user_main, (u32)user_stack + sizeof(user_stack));
	pf_arm_exec(0, 0);
	return user_args.a.result;
}

static void on_syscall(struct frame *f)
{
	if ((f->cs & 3) != 3) {
		check("INT 0x80 comes only from ring 3", 0);
		finish();
	}
	/* Back to run_user's caller at CPL 0 (user.S). */
	f->eip = (u32)user_returned;
	f->cs = SEL_KCODE;
	f->eflags = EFLAGS_FIXED;
	f->ds = f->es = f->fs = f->gs = SEL_KDATA;
}

/* Code for the windows: "mov $imm, %eax; ret". */
static void put_code(volatile u8 *p, u32 imm)
{
	p[0] = 0xB8;
	p[1] = imm & 0xFF;
	p[2] = (imm >> 8) & 0xFF;
	p[3] = (imm >> 16) & 0xFF;
	p[4] = imm >> 24;
	p[5] = 0xC3;
}

/* A #GP from ring 3 (test_hot_syscall_rewritten): its error code, and
 * back to run_user's caller as the INT 0x80 handler goes. */
static volatile u32 user_gp_error;
static void on_user_gp(struct frame *f)
{
	if ((f->cs & 3) != 3) {
		check("#GP comes only from ring 3 here", 0);
		finish();
	}
	user_gp_error = f->error;
	on_syscall(f);
}

/* A #BP from ring 3: where it returned to. */
static volatile u32 user_bp_eip;
static void on_user_bp(struct frame *f)
{
	user_bp_eip = f->eip;
	on_syscall(f);
}

/* Code for W_SYSCALL, reached by OP_CALL: "mov $imm, %eax; mov %eax,
 * user_args.result; int $0x80" (the INT at offset 10). */
#define SYSCALL_SITE 10
static void put_syscall(volatile u8 *p, u32 imm)
{
	u32 result = (u32)&user_args.a.result;
	put_code(p, imm); /* the MOV; its RET is overwritten next */
	p[5] = 0xA3;
	for (int i = 0; i < 4; i++)
		p[6 + i] = (result >> (8 * i)) & 0xFF;
	p[SYSCALL_SITE] = 0xCD;
	p[SYSCALL_SITE + 1] = 0x80;
}

/* ---- building the tables ------------------------------------------------ */

static void build_tables(void)
{
	for (u32 f = 0; f < NFRAMES; f++)
		frames[f][0] = MARK(f);
	secret[0] = SECRET;
	put_code(code_x, CODE_X_RESULT);
	put_code(code_y, CODE_Y_RESULT);
	put_syscall(code_z, 0xA1);
	/* mov $0x11223344, %eax; ret: the MOV's first 2 bytes end the first
	 * page, its last 3 and the RET start the second. */
	code_straddle[0][4094] = 0xB8;
	code_straddle[0][4095] = 0x44;
	code_straddle[1][0] = 0x33;
	code_straddle[1][1] = 0x22;
	code_straddle[1][2] = 0x11;
	code_straddle[1][3] = 0xC3;

	/* Identity 4 KiB pages for 0-4 MiB, supervisor, global (G is ignored
	 * until CR4.PGE is set; both directories share this table, so a
	 * global entry is right in both). Page 0 stays unmapped. */
	for (u32 i = 1; i < 1024; i++)
		pt_low[i] = (i * PAGE_SIZE) | PTE_P | PTE_W | PTE_G;
	for (u32 a = (u32)user_text_start; a < (u32)user_text_end; a += PAGE_SIZE)
		pt_low[PTX(a)] |= PTE_U;
	pt_low[PTX((u32)&user_args)] |= PTE_U;
	pt_low[PTX((u32)user_stack)] |= PTE_U;

	set_pte(pt_win, WIN(W_DATA), phys(frames[FA]) | PTE_P | PTE_W);
	set_pte(pt_win, WIN(W_ALIAS1), phys(frames[FB]) | PTE_P | PTE_W);
	set_pte(pt_win, WIN(W_ALIAS2), phys(frames[FB]) | PTE_P | PTE_W);
	set_pte(pt_win, WIN(W_RO), phys(frames[FC]) | PTE_P);
	set_pte(pt_win, WIN(W_NP), 0);
	set_pte(pt_win, WIN(W_USER_RO), phys(frames[FD]) | PTE_P | PTE_U);
	set_pte(pt_win, WIN(W_CODE), phys(code_x) | PTE_P | PTE_W);
	set_pte(pt_win, WIN(W_GLOBAL), phys(frames[FA]) | PTE_P | PTE_W | PTE_G);
	set_pte(pt_win, WIN(W_CR3), phys(frames[FA]) | PTE_P | PTE_W);
	set_pte(pt_win, WIN(W_STRADDLE), phys(code_straddle[0]) | PTE_P | PTE_W);
	set_pte(pt_win, WIN(W_STRADDLE2), 0);
	set_pte(pt_win, WIN(W_SELF), phys(frames[FA]) | PTE_P | PTE_W);
	set_pte(pt_win, WIN(W_USER_RW), phys(frames[FE]) | PTE_P | PTE_W | PTE_U);
	set_pte(pt_win, WIN(W_AD), phys(frames[FF]) | PTE_P | PTE_W);
	set_pte(pt_win, WIN(W_EMU), phys(frames[FA]) | PTE_P | PTE_W);
	set_pte(pt_win, WIN(W_SYSCALL), phys(code_z) | PTE_P | PTE_U);
	set_pte(pt_win, WIN(W_SYSCALL_RW), phys(code_z) | PTE_P | PTE_W | PTE_U);
	for (u32 i = 0; i < 1024; i++)
		pt_win1[i] = pt_win[i] & ~PTE_G;
	set_pte(pt_win1, WIN(W_CR3), phys(frames[FB]) | PTE_P | PTE_W);
	set_pte(pt_win1, WIN(W_CODE), phys(code_y) | PTE_P | PTE_W);
	set_pte(pt_win, WIN(W_UCR3), phys(frames[FA]) | PTE_P | PTE_W | PTE_U);
	set_pte(pt_win1, WIN(W_UCR3), phys(frames[FB]) | PTE_P | PTE_W | PTE_U);

	pt_sup[0] = phys(frames[FD]) | PTE_P | PTE_W | PTE_U;
	pt_ro[0] = phys(frames[FE]) | PTE_P | PTE_W | PTE_U;

	pd0[PDX(0)] = phys(pt_low) | PTE_P | PTE_W | PTE_U;
	pd0[PDX(LIN_PSE)] = PSE_PHYS | PTE_P | PTE_W | PTE_PS;
	pd0[PDX(LIN_WIN)] = phys(pt_win) | PTE_P | PTE_W | PTE_U;
	pd0[PDX(LIN_PSE_ALIAS)] = PSE_PHYS | PTE_P | PTE_W | PTE_PS;
	pd0[PDX(LIN_SUP_PDE)] = phys(pt_sup) | PTE_P | PTE_W;
	pd0[PDX(LIN_NEW)] = 0;
	pd0[PDX(LIN_RO_PDE)] = phys(pt_ro) | PTE_P | PTE_U;
	pd0[PDX(LIN_PSE_RO)] = PSE_PHYS | PTE_P | PTE_PS;
	pd0[SELF_PDE] = phys(pd0) | PTE_P | PTE_W;
	for (u32 i = 0; i < 1024; i++)
		pd1[i] = pd0[i];
	pd1[PDX(LIN_WIN)] = phys(pt_win1) | PTE_P | PTE_W | PTE_U;
	pd1[SELF_PDE] = phys(pd1) | PTE_P | PTE_W;
}

static void enable_paging(void)
{
	write_cr4(read_cr4() | CR4_PSE);
	write_cr3(phys(pd0));
	write_cr0(read_cr0() | CR0_PG | CR0_WP);

	check("CR0.PG and CR0.WP read back set", (read_cr0() & (CR0_PG | CR0_WP)) == (CR0_PG | CR0_WP));
	check_eq("CR3 reads back the page directory", read_cr3(), phys(pd0));
	check("CR4.PSE reads back set", read_cr4() & CR4_PSE);
}

/* ---- the checks ----------------------------------------------------------- */

static void test_mappings(void)
{
	u32 v;

	check_eq("4 KiB window maps its frame: marker read through WIN(data)",
		 probe_read(WIN(W_DATA)), MARK(FA));
	probe_write(WIN(W_ALIAS1) + 0x44, 0xA11A5001);
	check_eq("alias: a write through one linear page is read through another",
		 probe_read(WIN(W_ALIAS2) + 0x44), 0xA11A5001);
	check_eq("alias: ... and through the frame's identity mapping", frames[FB][0x44 / 4], 0xA11A5001);
	frames[FB][0x48 / 4] = 0xA11A5002;
	check_eq("alias: a write through the identity mapping is read through the window",
		 probe_read(WIN(W_ALIAS1) + 0x48), 0xA11A5002);

	probe_write(LIN_PSE + 0x123450, 0x45E00001);
	check_eq("4 MiB pages: a write through PDE 1 is read through the PDE 3 alias",
		 probe_read(LIN_PSE_ALIAS + 0x123450), 0x45E00001);
	probe_write(LIN_PSE_ALIAS + 0x3FFFFC, 0x45E00002);
	check_eq("4 MiB pages: the last word of the alias is the last word of the frame",
		 probe_read(LIN_PSE + 0x3FFFFC), 0x45E00002);
	check_eq("4 MiB read-only page reads the same frame", probe_read(LIN_PSE_RO + 0x123450), 0x45E00001);

	v = probe_read(WIN(W_USER_RW));
	check_eq("CPL 0 reads a user page (no SMAP)", v, MARK(FE));
}

static void test_kernel_faults(void)
{
	u32 v;

	pf_begin();
	v = probe_read(WIN(W_NP) + 0x10);
	pf_check("read of a not-present PTE at CPL 0", 0, WIN(W_NP) + 0x10, (u32)probe_read_fault);
	check_eq("the faulting read gave no data", v, PF_POISON);

	pf_begin();
	probe_write(WIN(W_NP) + 0x20, 1);
	pf_check("write to a not-present PTE at CPL 0", PF_W, WIN(W_NP) + 0x20, (u32)probe_write_fault);

	pf_begin();
	probe_read(LIN_NEW + 0x2468);
	pf_check("read under a not-present PDE at CPL 0", 0, LIN_NEW + 0x2468, (u32)probe_read_fault);

	pf_begin();
	probe_write(LIN_NEW + 0x3FFFFC, 1);
	pf_check("write under a not-present PDE at CPL 0", PF_W, LIN_NEW + 0x3FFFFC, 0);

	frames[FC][1] = 0x0123;
	pf_begin();
	probe_write(WIN(W_RO) + 4, 0x4567);
	pf_check("write to a read-only PTE at CPL 0 with CR0.WP=1", PF_P | PF_W, WIN(W_RO) + 4,
		    (u32)probe_write_fault);
	check_eq("the refused write left the page unchanged", frames[FC][1], 0x0123);

	write_cr0(read_cr0() & ~CR0_WP);
	pf_begin();
	probe_write(WIN(W_RO) + 4, 0x4567);
	pf_check_none("write to a read-only PTE at CPL 0 with CR0.WP=0 does not fault");
	check_eq("... and the write reached the page", frames[FC][1], 0x4567);
	pf_begin();
	probe_write(LIN_PSE_RO + 0x200000, 0x45E00003);
	pf_check_none("write to a read-only 4 MiB page at CPL 0 with CR0.WP=0 does not fault");
	check_eq("... and the write reached the 4 MiB frame", probe_read(LIN_PSE + 0x200000), 0x45E00003);
	write_cr0(read_cr0() | CR0_WP);

	pf_begin();
	probe_write(LIN_RO_PDE + 8, 1);
	pf_check("write through a read-only PDE (writable PTE) at CPL 0 with WP=1", PF_P | PF_W,
		    LIN_RO_PDE + 8, 0);

	pf_begin();
	probe_write(LIN_PSE_RO + 0x10, 1);
	pf_check("write to a read-only 4 MiB page at CPL 0 with WP=1", PF_P | PF_W, LIN_PSE_RO + 0x10, 0);

	/* Instruction fetches. Without NX or SMEP the I/D bit stays 0. */
	pf_begin();
	v = probe_exec(WIN(W_NP) + 0x100);
	pf_check("fetch from a not-present page at CPL 0 (I/D bit 0)", 0, WIN(W_NP) + 0x100,
		    WIN(W_NP) + 0x100);

	u32 start = WIN(W_STRADDLE) + 4094;
	pf_begin();
	v = probe_exec(start);
	check_eq("fetch of an instruction running into a not-present page: one #PF", pf_since_begin(), 1);
	check_eq("... error code 0 (not present, read, CPL 0)", pf_last.error, 0);
	check_eq("... saved EIP is the instruction's first byte", pf_last.eip, start);
	check("... CR2 is one of the instruction's 3 bytes on the not-present page",
	      pf_last.cr2 >= WIN(W_STRADDLE2) && pf_last.cr2 < WIN(W_STRADDLE2) + 3);
	set_pte(pt_win, WIN(W_STRADDLE2), phys(code_straddle[1]) | PTE_P | PTE_W);
	invlpg(WIN(W_STRADDLE2));
	pf_begin();
	v = probe_exec(start);
	pf_check_none("with both pages present, the straddling instruction runs");
	check_eq("... and gives its result", v, STRADDLE_RESULT);
}

static void test_user_faults(void)
{
	u32 v;
	const u32 ucs = SEL_UCODE_RPL3;

	/* What ring 3 may do. */
	pf_begin();
	v = user_op(OP_READ, WIN(W_USER_RO) + 0, 0);
	pf_check_none("CPL 3 reads a read-only user page without a fault");
	check_eq("... and sees its data", v, MARK(FD));
	pf_begin();
	user_op(OP_WRITE, WIN(W_USER_RW) + 0x80, 0x05E2D00D);
	pf_check_none("CPL 3 writes a writable user page without a fault");
	check_eq("... and the kernel reads what it wrote", frames[FE][0x80 / 4], 0x05E2D00D);

	/* What it may not. */
	pf_begin();
	v = user_op(OP_READ, (u32)&secret[3], 0);
	pf_check("CPL 3 read of a supervisor page (DS = flat DPL-3 selector 0x23)", PF_P | PF_U,
		    (u32)&secret[3], (u32)user_read_fault);
	check_eq("... the fault came from CS 0x1B", pf_last.cs, ucs);
	check("... and ring 3 got no data", v == PF_POISON);

	pf_begin();
	user_op(OP_WRITE, (u32)&secret[0], 0xBAD);
	pf_check("CPL 3 write to a supervisor page", PF_P | PF_W | PF_U, (u32)&secret[0],
		    (u32)user_write_fault);
	check_eq("... and the supervisor page is unchanged", secret[0], SECRET);

	frames[FD][2] = 0xD0D0;
	pf_begin();
	user_op(OP_WRITE, WIN(W_USER_RO) + 8, 0xBAD);
	pf_check("CPL 3 write to a read-only user page", PF_P | PF_W | PF_U, WIN(W_USER_RO) + 8, 0);
	check_eq("... and the page is unchanged", frames[FD][2], 0xD0D0);

	pf_begin();
	user_op(OP_READ, WIN(W_NP) + 0xC, 0);
	pf_check("CPL 3 read of a not-present page", PF_U, WIN(W_NP) + 0xC, (u32)user_read_fault);

	pf_begin();
	user_op(OP_WRITE, LIN_NEW + 0x1000, 1);
	pf_check("CPL 3 write under a not-present PDE", PF_W | PF_U, LIN_NEW + 0x1000, 0);

	pf_begin();
	user_op(OP_READ, LIN_PSE + 0x10, 0);
	pf_check("CPL 3 read of a supervisor 4 MiB page", PF_P | PF_U, LIN_PSE + 0x10, 0);

	pf_begin();
	user_op(OP_READ, LIN_SUP_PDE + 0x20, 0);
	pf_check("CPL 3 read of a U=1 PTE under a U=0 PDE", PF_P | PF_U, LIN_SUP_PDE + 0x20, 0);

	pf_begin();
	v = user_op(OP_READ, LIN_RO_PDE + 0, 0);
	pf_check_none("CPL 3 reads a user page under a read-only user PDE");
	check_eq("... and sees its data", v, MARK(FE));
	pf_begin();
	user_op(OP_WRITE, LIN_RO_PDE + 0x24, 1);
	pf_check("CPL 3 write to a writable PTE under a read-only PDE", PF_P | PF_W | PF_U,
		    LIN_RO_PDE + 0x24, 0);

	pf_begin();
	user_op(OP_CALL, (u32)probe_read, 0);
	pf_check("CPL 3 call into supervisor code (fetch, I/D bit 0)", PF_P | PF_U, (u32)probe_read,
		    (u32)probe_read);
	pf_begin();
	user_op(OP_CALL, WIN(W_NP) + 0x30, 0);
	pf_check("CPL 3 call into a not-present page", PF_U, WIN(W_NP) + 0x30, WIN(W_NP) + 0x30);
}

static void test_accessed_dirty(void)
{
	volatile u32 *pte = &pt_win[PTX(WIN(W_AD))];
	volatile u32 *pde = &pd0[PDX(LIN_WIN)];

	*pte &= ~(PTE_A | PTE_D);
	*pde &= ~PTE_A;
	flush_tlb();
	probe_read(WIN(W_AD) + 0x10);
	check("read sets A in the PTE", *pte & PTE_A);
	check("read sets A in the PDE", *pde & PTE_A);
	check("read leaves D clear in the PTE", !(*pte & PTE_D));
	probe_read(WIN(W_AD) + 0x14);
	check("a second read leaves D clear", !(*pte & PTE_D));
	probe_write(WIN(W_AD) + 0x10, 0xD1D1);
	check("write sets D in the PTE", *pte & PTE_D);
	check("... and A stays set", *pte & PTE_A);

	/* A write as the first access sets both. */
	*pte &= ~(PTE_A | PTE_D);
	flush_tlb();
	probe_write(WIN(W_AD) + 0x18, 0xD2D2);
	check("a first access that writes sets A and D in the PTE",
	      (*pte & (PTE_A | PTE_D)) == (PTE_A | PTE_D));

	/* An instruction fetch is an access, not a write. */
	volatile u32 *code_pte = &pt_win[PTX(WIN(W_CODE))];
	*code_pte &= ~(PTE_A | PTE_D);
	flush_tlb();
	check_eq("code runs from a window page", probe_exec(WIN(W_CODE)), CODE_X_RESULT);
	check("an instruction fetch sets A in the PTE", *code_pte & PTE_A);
	check("an instruction fetch leaves D clear", !(*code_pte & PTE_D));

	/* 4 MiB pages keep A and D in the PDE. */
	volatile u32 *big = &pd0[PDX(LIN_PSE_ALIAS)];
	*big &= ~(PTE_A | PTE_D);
	flush_tlb();
	probe_read(LIN_PSE_ALIAS + 0x2000);
	check("read sets A in a 4 MiB page's PDE", *big & PTE_A);
	check("read leaves D clear in a 4 MiB page's PDE", !(*big & PTE_D));
	probe_write(LIN_PSE_ALIAS + 0x2000, 0);
	check("write sets D in a 4 MiB page's PDE", *big & PTE_D);

	/* Ring 3's accesses set them just the same. */
	volatile u32 *upte = &pt_win[PTX(WIN(W_USER_RW))];
	*upte &= ~(PTE_A | PTE_D);
	flush_tlb();
	user_op(OP_READ, WIN(W_USER_RW), 0);
	check("a CPL 3 read sets A and leaves D clear", (*upte & (PTE_A | PTE_D)) == PTE_A);
	user_op(OP_WRITE, WIN(W_USER_RW) + 4, 7);
	check("a CPL 3 write sets D", *upte & PTE_D);
}

static void test_invlpg(void)
{
	volatile u32 *pte = &pt_win[PTX(WIN(W_DATA))];

	check_eq("WIN(data) maps frame A", probe_read(WIN(W_DATA)), MARK(FA));
	*pte = phys(frames[FB]) | PTE_P | PTE_W;
	invlpg(WIN(W_DATA));
	check_eq("PTE pointed at frame B + INVLPG: the read sees frame B", probe_read(WIN(W_DATA)), MARK(FB));

	*pte = 0;
	invlpg(WIN(W_DATA) + 0x800); /* any address in the page will do */
	pf_begin();
	probe_read(WIN(W_DATA) + 0x40);
	pf_check("PTE cleared + INVLPG: the read faults", 0, WIN(W_DATA) + 0x40, 0);

	*pte = phys(frames[FA]) | PTE_P | PTE_W;
	invlpg(WIN(W_DATA));
	pf_begin();
	check_eq("PTE present again + INVLPG: frame A", probe_read(WIN(W_DATA)), MARK(FA));
	pf_check_none("... without a fault");

	/* Code through a remapped page. */
	volatile u32 *code_pte = &pt_win[PTX(WIN(W_CODE))];
	check_eq("WIN(code) runs code_x", probe_exec(WIN(W_CODE)), CODE_X_RESULT);
	*code_pte = phys(code_y) | PTE_P | PTE_W;
	invlpg(WIN(W_CODE));
	check_eq("code PTE pointed at code_y + INVLPG: the same address runs code_y",
		 probe_exec(WIN(W_CODE)), CODE_Y_RESULT);
	*code_pte = phys(code_x) | PTE_P | PTE_W;
	invlpg(WIN(W_CODE));
	check_eq("code PTE back + INVLPG: code_x again", probe_exec(WIN(W_CODE)), CODE_X_RESULT);

	/* A 4 MiB page: INVLPG of any address in it drops the whole page. */
	volatile u32 *big = &pd0[PDX(LIN_PSE_ALIAS)];
	static volatile u32 low_var = 0x10E7A12;
	probe_write(LIN_PSE + phys(&low_var), 0x45E00004);
	check_eq("4 MiB alias maps physical 4 MiB", probe_read(LIN_PSE_ALIAS + phys(&low_var)), 0x45E00004);
	*big = 0 | PTE_P | PTE_W | PTE_PS;
	invlpg(LIN_PSE_ALIAS + 0x123450);
	check_eq("4 MiB PDE pointed at physical 0 + INVLPG: a kernel variable shows through it",
		 probe_read(LIN_PSE_ALIAS + phys(&low_var)), 0x10E7A12);
	*big = PSE_PHYS | PTE_P | PTE_W | PTE_PS;
	invlpg(LIN_PSE_ALIAS);
	check_eq("4 MiB PDE back + INVLPG of another address in the page: physical 4 MiB again",
		 probe_read(LIN_PSE_ALIAS + phys(&low_var)), 0x45E00004);
	check_eq("... and at the first address too", probe_read(LIN_PSE_ALIAS + 0x123450), 0x45E00001);
}

/*
 * SIDT is carried out by a monitor's emulator rather than run as it is, so
 * its store goes through the monitor's own walks of these tables: after a
 * remap and an INVLPG or a CR3 write, as after the CPU's, it must land in
 * the new frame. (A store after a remap with no flush is not checked: a
 * stale TLB entry may or may not be used.)
 */
#define EMU_AT 0x100u
static void sidt_at(u32 lin) { __asm__ volatile("sidt (%0)" : : "r"(lin) : "memory"); }
static int holds_idtr(u32 f, const volatile u8 *want)
{
	const volatile u8 *at = (const volatile u8 *)frames[f] + EMU_AT;
	for (int i = 0; i < 6; i++)
		if (at[i] != want[i])
			return 0;
	return 1;
}
static void poison(u32 f)
{
	for (int i = 0; i < 2; i++)
		frames[f][EMU_AT / 4 + i] = 0xDEADBEEF;
}

static void test_emulated_stores_follow_flushes(void)
{
	volatile u32 *pte = &pt_win[PTX(WIN(W_EMU))];
	volatile u8 want[6];
	__asm__ volatile("sidt (%0)" : : "r"(want) : "memory");
	for (u32 f = FA; f <= FC; f++)
		poison(f);

	sidt_at(WIN(W_EMU) + EMU_AT);
	check("SIDT through WIN(emu) stores the IDTR in frame A", holds_idtr(FA, want));
	/* Twice, so that a monitor that keeps its walks has one to keep. */
	sidt_at(WIN(W_EMU) + EMU_AT);

	*pte = phys(frames[FB]) | PTE_P | PTE_W;
	invlpg(WIN(W_EMU));
	poison(FA);
	sidt_at(WIN(W_EMU) + EMU_AT);
	check("PTE pointed at frame B + INVLPG: SIDT stores in frame B", holds_idtr(FB, want));
	check("... and not in frame A", frames[FA][EMU_AT / 4] == 0xDEADBEEF);

	*pte = phys(frames[FC]) | PTE_P | PTE_W;
	write_cr3(read_cr3());
	poison(FB);
	sidt_at(WIN(W_EMU) + EMU_AT);
	check("PTE pointed at frame C + CR3 rewritten: SIDT stores in frame C", holds_idtr(FC, want));
	check("... and not in frame B", frames[FB][EMU_AT / 4] == 0xDEADBEEF);

	*pte = phys(frames[FA]) | PTE_P | PTE_W;
	write_cr3(read_cr3());
}

/* User code whose INT 0x80 runs often, on a read-only page, and then is
 * rewritten by the kernel (popek runs such a site as INT3 from a copy of
 * its frame, which the write must end: engine/int80.rs). */
/* Of `n` calls into W_SYSCALL, how many returned `want`. */
static u32 syscall_page_gives(u32 want, u32 n)
{
	u32 same = 0;
	for (u32 i = 0; i < n; i++)
		same += user_op(OP_CALL, WIN(W_SYSCALL), 0) == want;
	return same;
}

static void test_hot_syscall_rewritten(void)
{
	check_eq("a user INT 0x80 on a read-only page, 20 times", syscall_page_gives(0xA1, 20), 20);
	check_eq("... the kernel reads the INT 0x80 there", code_z[SYSCALL_SITE], 0xCD);
	put_syscall(code_z, 0xB2);
	check_eq("the kernel rewrites the page: user code runs the new code",
		 user_op(OP_CALL, WIN(W_SYSCALL), 0), 0xB2);
	check_eq("... 20 times more", syscall_page_gives(0xB2, 20), 20);
	/* User code writes the MOV's immediate through a writable alias. */
	user_op(OP_WRITE, WIN(W_SYSCALL_RW) + 1, 0xC4);
	check_eq("user code rewrites it through a writable alias: the new code runs",
		 user_op(OP_CALL, WIN(W_SYSCALL), 0), 0xC4);
	check_eq("... 20 times more", syscall_page_gives(0xC4, 20), 20);
	/* The gate made DPL 0: the hot site's INT 0x80 raises #GP(0x402). */
	idt_set_attr(0x80, 0x8E);
	set_handler(13, on_user_gp);
	user_gp_error = 0;
	check_eq("the gate made DPL 0: the hot INT 0x80 ran its MOV...",
		 user_op(OP_CALL, WIN(W_SYSCALL), 0), 0xC4);
	check_eq("... and raised #GP(0x402)", user_gp_error, 0x402);
	idt_set_attr(0x80, 0xEE);
	set_handler(13, 0);
	/* Another frame at the same address, with an INT3 of its own where
	 * code_z's INT 0x80 is: the guest's #BP, after the INT3. */
	volatile u32 *pte = &pt_win[PTX(WIN(W_SYSCALL))];
	put_syscall(code_w, 0xD5);
	code_w[SYSCALL_SITE] = 0xCC;
	*pte = phys(code_w) | PTE_P | PTE_U;
	invlpg(WIN(W_SYSCALL));
	idt_set_attr(3, 0xEE);
	set_handler(3, on_user_bp);
	user_bp_eip = 0;
	check_eq("another frame's INT3 at a hot site's address: its MOV ran...",
		 user_op(OP_CALL, WIN(W_SYSCALL), 0), 0xD5);
	check_eq("... and #BP came after its INT3", user_bp_eip,
		 WIN(W_SYSCALL) + SYSCALL_SITE + 1);
	set_handler(3, 0);
	idt_set_attr(3, 0x8E);
	*pte = phys(code_z) | PTE_P | PTE_U;
	invlpg(WIN(W_SYSCALL));
	check_eq("code_z back: its hot INT 0x80 is a system call again",
		 user_op(OP_CALL, WIN(W_SYSCALL), 0), 0xC4);
	put_syscall(code_z, 0xB2);
	/* The INT 0x80 itself replaced by a RET: the call returns to user.S,
	 * which stores EAX and makes its own INT 0x80. */
	code_z[SYSCALL_SITE] = 0xC3;
	check_eq("the INT 0x80 rewritten into a RET: the RET runs",
		 user_op(OP_CALL, WIN(W_SYSCALL), 0), 0xB2);
}

/* One hot INT 0x80 site after another, each in a frame of its own at
 * the same address: popek gives up the copy of a frame no page maps any
 * more when it needs a slot (mmu evict_unmapped_copy). */
static void test_many_hot_syscall_frames(void)
{
	volatile u32 *pte = &pt_win[PTX(WIN(W_SYSCALL))];
	u32 right = 0;
	for (u32 k = 0; k < MANY_FRAMES; k++) {
		put_syscall(code_many[k], 0x1000 + k);
		*pte = phys(code_many[k]) | PTE_P | PTE_U;
		invlpg(WIN(W_SYSCALL));
		right += syscall_page_gives(0x1000 + k, 9);
	}
	check_eq("66 frames, each with a hot INT 0x80 at one address, 9 calls each",
		 right, MANY_FRAMES * 9);
	right = 0;
	for (u32 k = 0; k < 3; k++) {
		*pte = phys(code_many[k]) | PTE_P | PTE_U;
		invlpg(WIN(W_SYSCALL));
		right += syscall_page_gives(0x1000 + k, 3);
	}
	check_eq("... the first three again", right, 9);
	*pte = phys(code_z) | PTE_P | PTE_U;
	invlpg(WIN(W_SYSCALL));
}

static void test_cr3_switch(void)
{
	check_eq("pd0: WIN(cr3) is frame A", probe_read(WIN(W_CR3)), MARK(FA));
	write_cr3(phys(pd1));
	check_eq("CR3 <- pd1 reads back", read_cr3(), phys(pd1));
	check_eq("pd1: the same linear page is frame B", probe_read(WIN(W_CR3)), MARK(FB));
	check_eq("pd1: WIN(code) runs code_y", probe_exec(WIN(W_CODE)), CODE_Y_RESULT);
	write_cr3(phys(pd0));
	check_eq("CR3 <- pd0: frame A again", probe_read(WIN(W_CR3)), MARK(FA));
	check_eq("pd0: WIN(code) runs code_x again", probe_exec(WIN(W_CODE)), CODE_X_RESULT);

	/* A CR3 write drops non-global translations even when CR3 does not change. */
	pt_win[PTX(WIN(W_CR3))] = phys(frames[FC]) | PTE_P | PTE_W;
	write_cr3(phys(pd0));
	check_eq("PTE changed + CR3 rewritten with the same value: frame C", probe_read(WIN(W_CR3)),
		 MARK(FC));
	pt_win[PTX(WIN(W_CR3))] = phys(frames[FA]) | PTE_P | PTE_W;
	write_cr3(phys(pd0));
	check_eq("PTE back + CR3 rewritten: frame A", probe_read(WIN(W_CR3)), MARK(FA));
}

/*
 * Ring 3 follows CR3 too, including when the entry it used changed while
 * another directory was loaded and no ring-3 code ran in between (a
 * monitor may keep user mappings across such a switch and must check them
 * before ring 3 runs again). Entries written with A set, as a page the
 * process has used, and without.
 */
static void test_cr3_switch_user(void)
{
	volatile u32 *pte = &pt_win[PTX(WIN(W_UCR3))];
	u32 v;

	pf_begin();
	v = user_op(OP_READ, WIN(W_UCR3), 0);
	pf_check_none("CPL 3 reads WIN(ucr3) under pd0 without a fault");
	check_eq("... and sees frame A", v, MARK(FA));
	write_cr3(phys(pd1));
	check_eq("CPL 3 under pd1: the same page is frame B", user_op(OP_READ, WIN(W_UCR3), 0),
		 MARK(FB));
	write_cr3(phys(pd0));
	check_eq("CPL 3 under pd0 again: frame A", user_op(OP_READ, WIN(W_UCR3), 0), MARK(FA));

	write_cr3(phys(pd1));
	*pte = phys(frames[FC]) | PTE_P | PTE_W | PTE_U | PTE_A;
	write_cr3(phys(pd0));
	check_eq("pd0's entry moved to frame C (accessed) while pd1 was loaded: CPL 3 reads frame C",
		 user_op(OP_READ, WIN(W_UCR3), 0), MARK(FC));

	write_cr3(phys(pd1));
	*pte = phys(frames[FA]) | PTE_P | PTE_W | PTE_U;
	write_cr3(phys(pd0));
	check_eq("... moved back to frame A (not accessed): CPL 3 reads frame A",
		 user_op(OP_READ, WIN(W_UCR3), 0), MARK(FA));

	write_cr3(phys(pd1));
	*pte = 0;
	write_cr3(phys(pd0));
	pf_begin();
	user_op(OP_READ, WIN(W_UCR3) + 4, 0);
	pf_check("... cleared while pd1 was loaded: CPL 3 read faults", PF_U, WIN(W_UCR3) + 4,
		 (u32)user_read_fault);

	*pte = phys(frames[FA]) | PTE_P | PTE_W | PTE_U;
	pf_begin();
	user_op(OP_WRITE, WIN(W_UCR3) + 8, 0x0C3A0C3A);
	pf_check_none("... present and writable again: CPL 3 writes it");
	write_cr3(phys(pd1));
	*pte = phys(frames[FA]) | PTE_P | PTE_U | PTE_A | PTE_D;
	write_cr3(phys(pd0));
	pf_begin();
	user_op(OP_WRITE, WIN(W_UCR3) + 8, 0xBAD);
	pf_check("... made read-only while pd1 was loaded: CPL 3 write faults", PF_P | PF_W | PF_U,
		 WIN(W_UCR3) + 8, (u32)user_write_fault);
	check_eq("... and frame A keeps the first write", frames[FA][2], 0x0C3A0C3A);
	*pte = phys(frames[FA]) | PTE_P | PTE_W | PTE_U;
	write_cr3(phys(pd0));
}

static void test_global(void)
{
	volatile u32 *gpte = &pt_win[PTX(WIN(W_GLOBAL))];

	write_cr4(read_cr4() | CR4_PGE);
	check("CR4.PGE reads back set", read_cr4() & CR4_PGE);
	check_eq("global page maps frame A", probe_read(WIN(W_GLOBAL)), MARK(FA));

	/* No check between the change and the flush: with PGE=1 the old
	 * global translation may or may not survive a CR3 write. */
	*gpte = phys(frames[FB]) | PTE_P | PTE_W | PTE_G;
	write_cr4(read_cr4() & ~CR4_PGE);
	check_eq("global PTE changed + CR4.PGE cleared: frame B", probe_read(WIN(W_GLOBAL)), MARK(FB));
	write_cr4(read_cr4() | CR4_PGE);
	check_eq("CR4.PGE set again: still frame B", probe_read(WIN(W_GLOBAL)), MARK(FB));

	*gpte = phys(frames[FC]) | PTE_P | PTE_W | PTE_G;
	invlpg(WIN(W_GLOBAL));
	check_eq("global PTE changed + INVLPG: frame C", probe_read(WIN(W_GLOBAL)), MARK(FC));

	*gpte = 0;
	invlpg(WIN(W_GLOBAL));
	pf_begin();
	probe_read(WIN(W_GLOBAL));
	pf_check("global PTE cleared + INVLPG: the read faults", 0, WIN(W_GLOBAL), 0);
	*gpte = phys(frames[FA]) | PTE_P | PTE_W | PTE_G;
	invlpg(WIN(W_GLOBAL));

	/* Non-global entries still go with a CR3 write while PGE=1. */
	volatile u32 *pte = &pt_win[PTX(WIN(W_DATA))];
	check_eq("non-global page maps frame A", probe_read(WIN(W_DATA)), MARK(FA));
	*pte = phys(frames[FD]) | PTE_P | PTE_W;
	flush_tlb();
	check_eq("non-global PTE changed + CR3 write with PGE=1: frame D", probe_read(WIN(W_DATA)),
		 MARK(FD));
	*pte = phys(frames[FA]) | PTE_P | PTE_W;
	flush_tlb();

	/* The kernel's own pages are global: CR3 switches keep working. */
	write_cr3(phys(pd1));
	check_eq("pd1 with PGE=1: WIN(cr3) is frame B", probe_read(WIN(W_CR3)), MARK(FB));
	write_cr3(phys(pd0));
	check_eq("pd0 with PGE=1: WIN(cr3) is frame A", probe_read(WIN(W_CR3)), MARK(FA));
}

static void test_self_map(void)
{
	volatile u32 *pd_view = (volatile u32 *)SELF_PD;
	volatile u32 *pt_view = (volatile u32 *)SELF_PTS;
	u32 lin = WIN(W_SELF);

	check_eq("self-map: PDE 2 read through 0xFFBFE008", probe_read(SELF_PD + 4 * PDX(LIN_WIN)),
		 pd0[PDX(LIN_WIN)]);
	check_eq("self-map: PDE 1022 points at the directory itself",
		 probe_read(SELF_PD + 4 * SELF_PDE) & PAGE_MASK, phys(pd0));
	check_eq("self-map: WIN(self)'s PTE read through 0xFF800000 + 4*(lin>>12)",
		 probe_read(SELF_PTS + 4 * (lin >> 12)), pt_win[PTX(lin)]);
	check_eq("WIN(self) maps frame A", probe_read(lin), MARK(FA));

	pt_view[lin >> 12] = phys(frames[FC]) | PTE_P | PTE_W;
	check_eq("a PTE written through the self-map is in the page table", pt_win[PTX(lin)],
		 phys(frames[FC]) | PTE_P | PTE_W);
	invlpg(lin);
	check_eq("PTE edited through the self-map + INVLPG: frame C", probe_read(lin), MARK(FC));

	/* Grow the address space: a new page table for PDE 5, installed and
	 * filled through the self-map alone. */
	u32 target = LIN_NEW + 3 * PAGE_SIZE + 0x10;
	u32 new_pt_view = SELF_PTS + PDX(LIN_NEW) * PAGE_SIZE;
	pd_view[PDX(LIN_NEW)] = phys(pt_new) | PTE_P | PTE_W;
	invlpg(new_pt_view);
	check_eq("PDE 5 written through the self-map is in the directory", pd0[PDX(LIN_NEW)],
		 phys(pt_new) | PTE_P | PTE_W);
	pf_begin();
	probe_write(new_pt_view + 4 * PTX(target), phys(frames[FD]) | PTE_P | PTE_W);
	pf_check_none("the new page table is reachable through the self-map");
	check_eq("... and the PTE written there is in it", pt_new[PTX(target)],
		 phys(frames[FD]) | PTE_P | PTE_W);
	invlpg(target);
	pf_begin();
	check_eq("the page mapped through the new table shows frame D", probe_read(target & PAGE_MASK),
		 MARK(FD));
	pf_check_none("... without a fault");

	pd_view[PDX(LIN_NEW)] = 0;
	invlpg(target);
	invlpg(new_pt_view);
	pf_begin();
	probe_read(target);
	pf_check("PDE 5 removed through the self-map + INVLPG: the read faults", 0, target, 0);
	pf_begin();
	probe_read(new_pt_view);
	pf_check("... and its page table left the self-map", 0, new_pt_view, 0);

	pt_win[PTX(lin)] = phys(frames[FA]) | PTE_P | PTE_W;
	invlpg(lin);
}

static void test_pse_off(void)
{
	/* With CR4.PSE=0 a PDE's PS bit is ignored: PDE 3 then points at a
	 * page table, the first 4 KiB of physical 4 MiB. A CR4.PSE change is
	 * not among the operations the SDM (vol. 3 section 4.10.4.1) says
	 * invalidate the TLB, so each change is followed by a CR3 write
	 * (PDE 3 and the pages it maps are not global). */
	volatile u32 *table = (volatile u32 *)LIN_PSE; /* identity 4 MiB page */
	for (u32 i = 0; i < 1024; i++)
		table[i] = 0;
	table[5] = phys(frames[FE]) | PTE_P | PTE_W;
	probe_write(LIN_PSE + 5 * PAGE_SIZE, 0x45E00005);

	check_eq("CR4.PSE=1: PDE 3 maps 4 MiB, page 5 is physical 4 MiB + 20 KiB",
		 probe_read(LIN_PSE_ALIAS + 5 * PAGE_SIZE), 0x45E00005);
	write_cr4(read_cr4() & ~CR4_PSE);
	flush_tlb();
	check("CR4.PSE reads back clear", !(read_cr4() & CR4_PSE));
	check_eq("CR4.PSE cleared + CR3 write: PDE 3 is a page-table pointer, page 5 is frame E",
		 probe_read(LIN_PSE_ALIAS + 5 * PAGE_SIZE), MARK(FE));
	pf_begin();
	probe_read(LIN_PSE_ALIAS + 6 * PAGE_SIZE);
	pf_check("CR4.PSE=0: page 6 of that table is not present", 0, LIN_PSE_ALIAS + 6 * PAGE_SIZE, 0);
	write_cr4(read_cr4() | CR4_PSE);
	flush_tlb();
	check_eq("CR4.PSE set again + CR3 write: the 4 MiB page is back",
		 probe_read(LIN_PSE_ALIAS + 5 * PAGE_SIZE), 0x45E00005);
}

static void test_paging_off_on(void)
{
	u32 probe_at = LIN_PSE_ALIAS + 0x2000; /* physical 0xC02000 without paging */
	volatile u32 *gpte = &pt_win[PTX(WIN(W_GLOBAL))];

	probe_write(LIN_PSE + 0x2000, 0x0FF00001); /* physical 0x402000 */
	check_eq("paged: 0xC02000 is the 4 MiB alias of physical 0x402000", probe_read(probe_at),
		 0x0FF00001);
	/* A global translation for WIN(global), then a change to its PTE. */
	check_eq("global page maps frame A", probe_read(WIN(W_GLOBAL)), MARK(FA));
	*gpte = phys(frames[FD]) | PTE_P | PTE_W | PTE_G;

	/* Everything the code touches is identity-mapped, so C runs straight
	 * through the switch. */
	write_cr0(read_cr0() & ~CR0_PG);
	check("CR0.PG cleared", !(read_cr0() & CR0_PG));
	probe_write(probe_at, 0x0FF00002);
	check_eq("unpaged: 0xC02000 is physical 0xC02000", probe_read(probe_at), 0x0FF00002);
	check_eq("unpaged: physical 0x402000 still holds its value", probe_read(LIN_PSE + 0x2000),
		 0x0FF00001);
	frames[FB][1] = 0xB0B0;
	write_cr3(phys(pd1));
	write_cr0(read_cr0() | CR0_PG);
	check("CR0.PG set again with CR3 = pd1", (read_cr0() & CR0_PG) && read_cr3() == phys(pd1));
	check_eq("pd1: WIN(cr3) is frame B, with the word written while unpaged",
		 probe_read(WIN(W_CR3) + 4), 0xB0B0);
	check_eq("pd1: 0xC02000 is the alias of physical 0x402000 again", probe_read(probe_at),
		 0x0FF00001);

	write_cr3(phys(pd0));
	check_eq("pd0 again: WIN(cr3) is frame A", probe_read(WIN(W_CR3)), MARK(FA));
	check_eq("pd0: the global PTE changed before CR0.PG was cleared gives frame D",
		 probe_read(WIN(W_GLOBAL)), MARK(FD));
	/* Now a global translation for frame D may be cached: change the PTE
	 * and toggle CR0.PG, which drops global entries too. */
	*gpte = phys(frames[FE]) | PTE_P | PTE_W | PTE_G;
	write_cr0(read_cr0() & ~CR0_PG);
	write_cr0(read_cr0() | CR0_PG);
	check_eq("global PTE changed + CR0.PG toggled off and on: frame E", probe_read(WIN(W_GLOBAL)),
		 MARK(FE));
	*gpte = phys(frames[FA]) | PTE_P | PTE_W | PTE_G;
	invlpg(WIN(W_GLOBAL));
}

void kmain(u32 magic, struct multiboot_info *mbi)
{
	(void)magic;
	(void)mbi;

	kprintf("paging: 32-bit paging, 4 MiB pages, global pages, #PF and the TLB\n");
	pf_install();
	pf_add_site(user_read_fault, user_read_resume);
	pf_add_site(user_write_fault, user_write_resume);
	tss_init((u32)esp0_stack + sizeof(esp0_stack));
	idt_set_attr(0x80, 0xEE); /* INT 0x80 from ring 3 */
	set_handler(0x80, on_syscall);

	u32 features = cpuid_1_edx();
	check("CPUID reports PSE (4 MiB pages)", features & CPUID_PSE);
	check("CPUID reports PGE (global pages)", features & CPUID_PGE);
	if ((features & (CPUID_PSE | CPUID_PGE)) != (CPUID_PSE | CPUID_PGE))
		finish(); /* setting CR4.PSE or PGE would raise #GP */

	build_tables();
	enable_paging();
	test_mappings();
	test_kernel_faults();
	test_user_faults();
	test_accessed_dirty();
	test_invlpg();
	test_emulated_stores_follow_flushes();
	test_hot_syscall_rewritten();
	test_many_hot_syscall_frames();
	test_cr3_switch();
	test_cr3_switch_user();
	test_global();
	test_self_map();
	test_pse_off();
	test_paging_off_on();
	kprintf("%u page faults taken\n", pf_count);
}
