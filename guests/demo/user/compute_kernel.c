/*
 * The compute benchmark: integer work with no memory traffic beyond a
 * 1 KiB table and no system calls, so under popek it runs at native speed.
 *
 * Each iteration steps an xorshift32 generator, updates one entry of a
 * table it picks with the generator, and folds that entry into an FNV-1a
 * style hash. The dependency chains (generator, table entry, hash) keep
 * the compiler from collapsing the loop while staying cheap per iteration.
 */
#include "compute_kernel.h"

unsigned int compute(unsigned int iterations)
{
	unsigned int table[256];
	unsigned int x = 2463534242u, h = 2166136261u;

	for (unsigned int i = 0; i < 256; i++)
		table[i] = i * 0x9E3779B9u;
	for (unsigned int i = 0; i < iterations; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		unsigned int j = x & 255;
		unsigned int t = table[j] * 31u + (x >> 8) + i;
		table[j] = t;
		h = (h ^ t) * 16777619u;
	}
	return h;
}
