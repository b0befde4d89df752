/*
 * popek-bench: one static i386 program holding every Linux workload of
 * `popek bench`, so the same machine code runs natively, under popek and
 * under QEMU.
 *
 *     popek-bench WORKLOAD [ROUNDS] [extra]
 *
 * prints exactly one line on stdout:
 *
 *     popek-bench NAME rounds=N cycles=TOTAL per_round=CYCLES_PER_ROUND
 *
 * or "popek-bench NAME FAIL <reason>" with exit status 1. See README.md.
 */
#include "bench.h"

struct workload {
	const char *name;
	void (*run)(struct run *);
	u32 default_rounds;
};

static const struct workload workloads[] = {
#define WORKLOAD(name, rounds) {#name, bench_##name, rounds},
#include "workloads.h"
#undef WORKLOAD
};

#define WORKLOAD_COUNT (sizeof workloads / sizeof workloads[0])

/* The name the result and failure lines carry. */
static const char *current = "-";

static void start_line(void)
{
	out_str("popek-bench ");
	out_str(current);
	out_char(' ');
}

void fail_begin(void)
{
	start_line();
	out_str("FAIL ");
}

void fail_end(void)
{
	out_flush();
	sys_exit(1);
}

void fail(const char *what, long err)
{
	fail_begin();
	out_str(what);
	if (err) {
		out_str(" (error ");
		out_dec((u64)(err < 0 ? -err : err));
		out_char(')');
	}
	fail_end();
}

void fail_child(const char *who, int status)
{
	fail_begin();
	out_str(who);
	if (status == -1) {
		out_str(": wait4 stored no status");
	} else if ((status & 0x7f) == 0) {
		out_str(" exited with status ");
		out_dec((u32)(status >> 8) & 0xff);
	} else {
		out_str(" was killed by signal ");
		out_dec((u32)status & 0x7f);
	}
	fail_end();
}

void reap(long pid, const char *who, int code)
{
	/* Not an exit status: the kernel's store must replace it. */
	int status = -1;
	long r = sys_wait4(pid, &status);
	if (r != pid)
		fail("wait4", r);
	if (status != code << 8)
		fail_child(who, status);
}

static void __attribute__((noreturn)) bad_usage(const char *what)
{
	fail_begin();
	out_str(what);
	out_str("; usage: popek-bench WORKLOAD [ROUNDS] [extra]; workloads:");
	for (u32 i = 0; i < WORKLOAD_COUNT; i++) {
		out_char(' ');
		out_str(workloads[i].name);
	}
	fail_end();
}

int main(int argc, char **argv, char **envp)
{
	if (argc < 2)
		bad_usage("no workload named");
	current = argv[1];
	const struct workload *w = NULL;
	for (u32 i = 0; i < WORKLOAD_COUNT; i++)
		if (str_eq(argv[1], workloads[i].name))
			w = &workloads[i];
	if (!w)
		bad_usage("unknown workload");

	struct run r = {.rounds = w->default_rounds, .envp = envp};
	if (argc > 2) {
		r.rounds = parse_u32(argv[2]);
		if (r.rounds == 0)
			fail("ROUNDS must be a decimal number from 1 to 4294967295", 0);
	}
	if (argc > 3)
		r.extra = argv[3];

	w->run(&r);

	start_line();
	out_str("rounds=");
	out_dec(r.rounds);
	out_str(" cycles=");
	out_dec(r.cycles);
	out_str(" per_round=");
	out_dec(div_u64(r.cycles, r.rounds));
	out_flush();
	return 0;
}
