/*
 * What main.c and the workloads share.
 */
#ifndef BENCH_H
#define BENCH_H

#include "rt.h"

/* One run of a workload. */
struct run {
	/* Rounds to measure (> 0). */
	u32 rounds;
	/* The optional third argument, or NULL. */
	const char *extra;
	char **envp;
	/* Set by the workload: TSC cycles the measured rounds took. */
	u64 cycles;
};

/* Starts the failure line: "popek-bench NAME FAIL "; the caller adds the
 * reason with out_*() and ends with fail_end(). */
void fail_begin(void);
/* Ends the failure line and exits 1. */
void fail_end(void) __attribute__((noreturn));

/*
 * Prints "popek-bench NAME FAIL <what> (error E)" (without the error part
 * when err is 0) and exits 1. A negative err is taken as -errno.
 */
void fail(const char *what, long err) __attribute__((noreturn));

/* Like fail(), but names a child's wait status: how it exited or died. */
void fail_child(const char *who, int status) __attribute__((noreturn));

/* Waits for `pid`; fails unless it exited with status 0. */
/* Waits for child `pid`, which must have exited with `code`. */
void reap(long pid, const char *who, int code);

/* Every workload: `void bench_NAME(struct run *)`, listed in the
 * generated workloads.h with its default rounds. */
#define WORKLOAD(name, rounds) void bench_##name(struct run *r);
#include "workloads.h"
#undef WORKLOAD

#endif
