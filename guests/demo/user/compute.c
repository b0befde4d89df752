/*
 * compute: the CPU benchmark. The loop (compute_kernel.c) is pure user
 * code with no system calls, timed with RDTSC from user mode; the same
 * source built natively (native/compute_main.c) prints the same line.
 *
 * argv[1]: iteration count (default COMPUTE_DEFAULT_ITERATIONS). The
 * checksum is checked against the reference for the default count.
 */
#include "ulib.h"
#include "compute_kernel.h"

int main(int argc, char **argv)
{
	u32 iterations = COMPUTE_DEFAULT_ITERATIONS;
	if (argc > 1 && argv[1]) {
		iterations = parse_u32(argv[1]);
		if (!iterations) {
			printf("compute: bad iteration count %s\n", argv[1]);
			return 2;
		}
	}

	u64 t0 = rdtsc();
	u32 sum = compute(iterations);
	u64 cycles = rdtsc() - t0;

	int checked = iterations == COMPUTE_DEFAULT_ITERATIONS;
	int ok = !checked || sum == COMPUTE_DEFAULT_CHECKSUM;
	u32 frac;
	u64 whole = divmod64(divmod64(cycles * 100, iterations, NULL), 100, &frac);
	printf("compute: iterations %u, checksum 0x%08x%s, cycles %llu, %llu.%02u cycles/iteration\n",
	       iterations, sum, !checked ? " (no reference)" : ok ? " ok" : " WRONG", cycles, whole,
	       frac);
	return ok ? 0 : 1;
}
