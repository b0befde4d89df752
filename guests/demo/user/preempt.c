/*
 * preempt: timer preemption. Parent and child each run the compute loop
 * for SPIN iterations (tens of milliseconds, several timer ticks) with no
 * system call inside, timing it with RDTSC. Only the timer can take the
 * CPU from a process in such a loop, so the two run intervals overlap only
 * if the kernel preempted them. The child sends its interval and checksum
 * through a pipe; both checksums must be the reference, which also checks
 * that being interrupted and switched out in the middle of the loop left
 * every register intact.
 */
#include "ulib.h"
#include "compute_kernel.h"

#define SPIN 12000000u
#define SPIN_CHECKSUM 0xd82c3738u

struct report {
	u64 start, end;
	u32 checksum;
};

int main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	int fds[2];
	if (pipe(fds) < 0) {
		printf("preempt: pipe failed\n");
		return 1;
	}
	int pid = fork();
	if (pid < 0) {
		printf("preempt: fork failed\n");
		return 1;
	}
	struct report me;
	me.start = rdtsc();
	me.checksum = compute(SPIN);
	me.end = rdtsc();
	if (pid == 0) {
		close(fds[0]);
		exit(write(fds[1], &me, sizeof(me)) == sizeof(me) ? 0 : 1);
	}

	close(fds[1]);
	struct report child;
	u32 got = 0;
	while (got < sizeof(child)) {
		int n = read(fds[0], (u8 *)&child + got, sizeof(child) - got);
		if (n <= 0)
			break;
		got += (u32)n;
	}
	int status = -1;
	int waited = wait(&status);
	int reported = got == sizeof(child) && waited == pid && status == 0;
	int overlap = reported && child.start < me.end && me.start < child.end;
	int sums = reported && me.checksum == SPIN_CHECKSUM && child.checksum == SPIN_CHECKSUM;
	printf("preempt: two processes ran %u compute iterations each without system calls: "
	       "run times overlapped %s, checksums %s, cycles %llu and %llu\n",
	       SPIN, overlap ? "ok" : "NO", sums ? "ok" : "WRONG", me.end - me.start,
	       reported ? child.end - child.start : 0);
	return overlap && sums ? 0 : 1;
}
