/*
 * tc: a translation-cache exerciser, at CPL 0.
 *
 * Everything here is ordinary kernel code for a CPU, and exactly the code a
 * binary translator's cache must get right: hot loops (lookup and chaining
 * pay off or do not), deep CALL/RET chains (return addresses are guest
 * addresses, every RET is an indirect jump), indirect jumps and calls
 * through tables, and code that rewrites itself (translations must be
 * dropped when their guest bytes change). Each phase computes values and
 * checks them against what the same C computes on any x86 (work.h).
 *
 * Phase markers on the POST port 0x80: the guest writes 1 there just
 * before the loop phase and 2 just after it, and prints nothing in
 * between. The BT engine snapshots its translation-cache statistics at
 * those two writes; its test asserts a lookup hit rate above 90% over the
 * loop phase, which holds only if hot blocks stay translated and linked.
 */
#include "popek.h"
#include "work.h"

/* POST port values delimiting the loop phase (see above). */
#define PHASE_LOOPS_BEGIN 1
#define PHASE_LOOPS_END 2
#define POST_PORT 0x80

/* flow.S */
u32 call_on_stack(u32 (*fn)(void), void *top);
u32 chain_sum(u32 n);
extern u32 chain_top_esp, chain_bottom_esp;
extern char deep_stack_top[];
u32 jump_table_dispatch(u32 op, u32 x);
u32 jump_mem_dispatch(u32 op, u32 x);
u32 call_reg(u32 (*fn)(u32), u32 x);
u32 call_next_pop(void);
extern char call_next_label[];
u32 push_ret_jump(void);
u32 ret_imm(u32 a, u32 b);
u32 far_call(void);

/* smc.S */
u32 smc_const(void);
extern u8 smc_const_imm[];
extern volatile u32 smc_neighbour;
u32 smc_ahead(u32 v);
u32 smc_inline(u32 v);
u32 smc_jump(void);
extern u8 smc_jump_rel[], smc_jump_next[], smc_target_a[], smc_target_b[];
extern u8 jit_buffer[];

/*
 * Sizes, read through volatiles so that gcc cannot compute any phase at
 * compile time.
 */
static volatile u32 xorshift_rounds = 200000;
static volatile u32 nested_rows = 400, nested_cols = 250;
static volatile u32 call_rounds = 100000;
static volatile u32 collatz_limit = 1000;
static volatile u32 chain_depth = 2000;
static volatile u32 fib_n = 20;
static volatile u32 return_site_rounds = 1000;
static volatile u32 switch_rounds = 12000;
static volatile u32 call_table_rounds = 8000;

/*
 * Expected results: the functions of work.h compiled for the host
 * (gcc -O2, x86-64) with the same inputs.
 */
#define WANT_XORSHIFT 0x6181b510
#define WANT_NESTED 0x940eda48
#define WANT_CALLS 0x1fdcba61
#define WANT_COLLATZ 59542
#define WANT_RETURN_SITES 0x2842a11a
#define WANT_MIXED 0x2388f836
#define WANT_SWITCH 0x4ed098c9
#define WANT_CALL_TABLE 0xc71e0484

static void phase_loops(void)
{
	u32 xorshift, nested, calls, collatz;

	outb(POST_PORT, PHASE_LOOPS_BEGIN);
	xorshift = loop_xorshift(xorshift_rounds);
	nested = loop_nested(nested_rows, nested_cols);
	calls = loop_calls(call_rounds);
	collatz = loop_collatz(collatz_limit);
	outb(POST_PORT, PHASE_LOOPS_END);

	check_eq("loop: 200000 rounds of xorshift32", xorshift, WANT_XORSHIFT);
	check_eq("loop: 400 x 250 nested loops", nested, WANT_NESTED);
	check_eq("loop: 100000 calls of a small function", calls, WANT_CALLS);
	check_eq("loop: Collatz steps of 1..1000 (data-dependent branches)", collatz, WANT_COLLATZ);
}

/* What the deep phase measured, filled on the deep stack. */
static struct {
	u32 chain, chain_bytes, sum, sum_bytes, even, odd, fib, ack23, ack34, sites;
} deep;

static u32 sum_bottom;

/* sum_down with a probe of the stack at the bottom of the recursion. */
NOIPA static u32 probed_sum(u32 n)
{
	if (!n) {
		sum_bottom = (u32)__builtin_frame_address(0);
		return 0;
	}
	u32 r = probed_sum(n - 1);
	OPAQUE(r);
	return r + n;
}

static u32 run_deep(void)
{
	u32 n = chain_depth;

	deep.chain = chain_sum(n);
	deep.chain_bytes = chain_top_esp - chain_bottom_esp;
	u32 top = (u32)__builtin_frame_address(0);
	deep.sum = probed_sum(n);
	deep.sum_bytes = top - sum_bottom;
	deep.even = is_even(n);
	deep.odd = is_odd(n + 1);
	deep.fib = fib(fib_n);
	deep.ack23 = ackermann(2, 3);
	deep.ack34 = ackermann(3, 4);
	deep.sites = many_return_sites(return_site_rounds);
	return 0x5AFE;
}

static void phase_calls(void)
{
	char what[96];
	u32 n = chain_depth;

	/* 2000 C frames do not fit the 16 KiB boot stack: use a 256 KiB one. */
	check_eq("deep calls ran on their own stack and came back", call_on_stack(run_deep, deep_stack_top), 0x5AFE);
	ksnprintf(what, sizeof(what), "call/ret chain %u deep (asm) sums 1..%u", n, n);
	check_eq(what, deep.chain, n * (n + 1) / 2);
	check_eq("call/ret chain: ESP went down exactly 4 + 8 bytes per level", deep.chain_bytes, 4 + 8 * n);
	ksnprintf(what, sizeof(what), "C recursion %u deep sums 1..%u", n, n);
	check_eq(what, deep.sum, n * (n + 1) / 2);
	/* At least a return address and a saved register per level: real calls. */
	check("C recursion used a stack frame per level", deep.sum_bytes >= 8 * n);
	check_eq("mutual recursion: 2000 is even", deep.even, 1);
	check_eq("mutual recursion: 2001 is odd", deep.odd, 1);
	check_eq("fib(20) by tree recursion", deep.fib, 6765);
	check_eq("ackermann(2, 3)", deep.ack23, 9);
	check_eq("ackermann(3, 4)", deep.ack34, 125);
	check_eq("one callee, four call sites, 1000 rounds", deep.sites, WANT_RETURN_SITES);
}

static void phase_indirect(void)
{
	char what[96];
	const u32 x = 0x12345678;
	u32 good;

	check_eq("bytecode interpreter (jump-table switch): sum of squares 1..100", interpret(prog_squares), 338350);
	check_eq("bytecode interpreter: every other opcode", interpret(prog_mixed), WANT_MIXED);
	check_eq("12-case switch walked 12000 times", switch_walk(switch_rounds), WANT_SWITCH);
	check_eq("8000 calls through a table of 8 function pointers", call_table(call_table_rounds), WANT_CALL_TABLE);

	good = 0;
	for (u32 op = 0; op < 8; op++)
		good += jump_table_dispatch(op, x) == handler_model(op, x);
	check_eq("jmp *%eax through a table reaches all 8 handlers", good, 8);
	good = 0;
	for (u32 i = 0; i < 64; i++) {
		u32 op = (i * 5) & 7;
		good += jump_mem_dispatch(op, x + i) == handler_model(op, x + i);
	}
	check_eq("jmp *table(,%ecx,4) 64 times in a varying order", good, 64);
	check_eq("call *%eax", call_reg(step, 10), 31);

	ksnprintf(what, sizeof(what), "call to the next instruction pushes its guest address %08x", (u32)call_next_label);
	check_eq(what, call_next_pop(), (u32)call_next_label);
	check_eq("push + ret is a jump", push_ret_jump(), 0x600D);
	check_eq("ret $8 pops the arguments: 10 - 3, ESP restored", ret_imm(10, 3), 7);
	check_eq("far call pushes CS 0x08, lret comes back", far_call(), SEL_KCODE);
}

static void patch32(u8 *at, u32 v)
{
	/* Byte stores: the immediates are not aligned. */
	volatile u8 *p = at;
	for (int i = 0; i < 4; i++)
		p[i] = (u8)(v >> (8 * i));
}

/* mov $k, %eax; add 4(%esp), %eax; ret */
static const u8 jit_add[] = { 0xB8, 0, 0, 0, 0, 0x03, 0x44, 0x24, 0x04, 0xC3 };
/* mov 4(%esp), %eax; imul %eax, %eax; ret */
static const u8 jit_square[] = { 0x8B, 0x44, 0x24, 0x04, 0x0F, 0xAF, 0xC0, 0xC3 };

static void phase_smc(void)
{
	u32 good, sum;

	check_eq("smc: the unpatched routine returns 0x11111111", smc_const(), 0x11111111);

	/* Patch, call it hot, patch again: stale translations show as old values. */
	good = 0;
	for (u32 round = 0; round < 8; round++) {
		u32 v = 0x1000 * (round + 1) + round;
		patch32(smc_const_imm, v);
		sum = 0;
		for (int i = 0; i < 50; i++)
			sum += smc_const();
		good += sum == 50 * v;
	}
	check_eq("smc: 8 rounds of patch + 50 calls return each new value", good, 8);

	/* Data next to code: writes there change no instruction. */
	patch32(smc_const_imm, 0x77);
	smc_neighbour = 0;
	sum = 0;
	for (int i = 0; i < 2000; i++) {
		smc_neighbour++;
		sum += smc_const();
	}
	check_eq("smc: 2000 writes to data in the code's page", smc_neighbour, 2000);
	check_eq("smc: the code in that page still returns its value", sum, 2000 * 0x77);

	good = 0;
	for (u32 i = 0; i < 6; i++) {
		u32 v = 0xA0000000 + i * 0x01010101;
		good += smc_ahead(v) == v;
	}
	check_eq("smc: patch an instruction ahead in the running routine, jmp, run (6 values)", good, 6);

	good = 0;
	for (u32 i = 0; i < 6; i++) {
		u32 v = 0x0B000000 + i * 0x00370037;
		good += smc_inline(v) == v;
	}
	check_eq("smc: patch the very next instruction, no jmp (6 values)", good, 6);

	u32 first = smc_jump();
	patch32(smc_jump_rel, (u32)smc_target_b - (u32)smc_jump_next);
	sum = 0;
	for (int i = 0; i < 100; i++)
		sum += smc_jump();
	patch32(smc_jump_rel, (u32)smc_target_a - (u32)smc_jump_next);
	u32 last = smc_jump();
	check_eq("smc: direct jmp goes to target a", first, 0xAAAA);
	check_eq("smc: its rel32 patched: 100 calls go to target b", sum, 100 * 0xBBBB);
	check_eq("smc: patched back: target a again", last, 0xAAAA);

	/* Whole routines written into one buffer, alternately. */
	u32 (*jit)(u32) = (u32(*)(u32))jit_buffer;
	good = 0;
	for (u32 round = 0; round < 4; round++) {
		u8 code[sizeof(jit_add)];
		memcpy(code, jit_add, sizeof(code));
		patch32(code + 1, 1000 * (round + 1));
		memcpy(jit_buffer, code, sizeof(code));
		good += jit(5) == 1000 * (round + 1) + 5;
		memcpy(jit_buffer, jit_square, sizeof(jit_square));
		good += jit(12 + round) == (12 + round) * (12 + round);
	}
	check_eq("smc: two routines copied alternately into one buffer (8 calls)", good, 8);
}

void kmain(u32 magic, struct multiboot_info *mbi)
{
	(void)magic;
	(void)mbi;

	kprintf("tc: loops, deep calls, indirect jumps, self-modifying code\n");
	phase_loops();
	phase_calls();
	phase_indirect();
	phase_smc();
}
