/*
 * forkwait: fork + wait, ROUNDS times. Each child exits at once with a
 * status derived from the round; the parent checks that wait returns that
 * child and that status. Measures the whole fork/exit/wait cycle: address
 * space copy (copy-on-write), two context switches, the child's first
 * write fault, teardown.
 */
#include "ulib.h"

#define ROUNDS 1000

int main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	int bad = 0;
	u64 t0 = rdtsc();
	for (u32 i = 0; i < ROUNDS; i++) {
		int pid = fork();
		if (pid == 0)
			exit((int)(i & 0x7F));
		if (pid < 0) {
			printf("forkwait: fork failed in round %u\n", i);
			return 1;
		}
		int status = -1;
		int got = wait(&status);
		if (got != pid || status != (int)(i & 0x7F)) {
			if (!bad)
				printf("forkwait: round %u: wait gave pid %d status %d, want %d and %u\n", i,
				       got, status, pid, i & 0x7F);
			bad++;
		}
	}
	u64 cycles = rdtsc() - t0;
	printf("forkwait: %u fork+wait rounds, children's pids and exit statuses %s, cycles %llu, "
	       "%llu cycles/round\n",
	       ROUNDS, bad ? "WRONG" : "ok", cycles, divmod64(cycles, ROUNDS, NULL));
	return bad ? 1 : 0;
}
