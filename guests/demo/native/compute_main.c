/*
 * The demo's compute benchmark as a native Linux i386 program, for the
 * side-by-side comparison with the same loop run as a demo user program
 * under popek. It compiles user/compute_kernel.c, the very source the demo's
 * `compute` program uses, with the demo's code generation flags, runs it
 * with the same iteration count, times it with RDTSC and prints the line
 * the demo prints.
 *
 * This machine has no i386 glibc (no static libc.a for -m32), so the program
 * needs no C library: its own _start, and raw int 0x80 Linux system calls
 * (write = 4, exit = 1). Build and run from guests/demo:
 *
 *     gcc -m32 -O2 -static -nostdlib -ffreestanding -fno-pie -no-pie \
 *         -fno-stack-protector -fno-asynchronous-unwind-tables \
 *         -fcf-protection=none -mgeneral-regs-only -std=gnu11 \
 *         -Wall -Wextra -Werror -I user \
 *         native/compute_main.c user/compute_kernel.c -o compute-native
 *     ./compute-native [iterations]
 *
 * (-mgeneral-regs-only and -fcf-protection=none match guests/build.rs, so
 * the loop's machine code is the same in both builds.)
 */
#include "compute_kernel.h"

typedef unsigned int u32;
typedef unsigned long long u64;

static int sys_write(int fd, const void *buf, u32 len)
{
	int ret;
	__asm__ volatile("int $0x80" : "=a"(ret) : "a"(4), "b"(fd), "c"(buf), "d"(len) : "memory");
	return ret;
}

static void __attribute__((noreturn)) sys_exit(int code)
{
	__asm__ volatile("int $0x80" : : "a"(1), "b"(code));
	__builtin_unreachable();
}

static inline u64 rdtsc(void)
{
	u32 lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)); /* as user/ulib.h */
	return ((u64)hi << 32) | lo;
}

/* v / d with the remainder in *rem, without libgcc's 64-bit division. */
static u64 divmod(u64 v, u32 d, u32 *rem)
{
	u32 hi = (u32)(v >> 32), lo = (u32)v, qhi = hi / d, r = hi % d, qlo;
	__asm__("divl %4" : "=a"(qlo), "=d"(r) : "a"(lo), "d"(r), "rm"(d));
	*rem = r;
	return ((u64)qhi << 32) | qlo;
}

static char out[160];
static u32 len;

static void put_str(const char *s)
{
	while (*s)
		out[len++] = *s++;
}

static void put_dec(u64 v)
{
	char digits[24];
	int n = 0;
	u32 r;
	do {
		v = divmod(v, 10, &r);
		digits[n++] = (char)('0' + r);
	} while (v);
	while (n)
		out[len++] = digits[--n];
}

static void put_hex8(u32 v)
{
	for (int shift = 28; shift >= 0; shift -= 4)
		out[len++] = "0123456789abcdef"[(v >> shift) & 15];
}

static u32 parse_u32(const char *s)
{
	u32 v = 0;
	while (*s >= '0' && *s <= '9')
		v = v * 10 + (u32)(*s++ - '0');
	return v;
}

static void __attribute__((noreturn, used)) start_c(u32 *sp)
{
	u32 argc = sp[0];
	char **argv = (char **)(sp + 1);
	u32 iterations = COMPUTE_DEFAULT_ITERATIONS;
	if (argc > 1 && parse_u32(argv[1]) > 0)
		iterations = parse_u32(argv[1]);

	u64 t0 = rdtsc();
	u32 sum = compute(iterations);
	u64 cycles = rdtsc() - t0;

	/* Same format as user/compute.c. */
	u32 frac;
	u64 per100 = divmod(cycles * 100, iterations, &frac);
	put_str("compute: iterations ");
	put_dec(iterations);
	put_str(", checksum 0x");
	put_hex8(sum);
	int checked = iterations == COMPUTE_DEFAULT_ITERATIONS;
	int ok = !checked || sum == COMPUTE_DEFAULT_CHECKSUM;
	put_str(!checked ? " (no reference)" : ok ? " ok" : " WRONG");
	put_str(", cycles ");
	put_dec(cycles);
	put_str(", ");
	put_dec(divmod(per100, 100, &frac));
	put_str(".");
	out[len++] = (char)('0' + frac / 10);
	out[len++] = (char)('0' + frac % 10);
	put_str(" cycles/iteration\n");
	sys_write(1, out, len);
	sys_exit(ok ? 0 : 1);
}

/* The kernel enters with ESP at argc; hand that to C with the stack aligned. */
__asm__(".globl _start\n"
	"_start:\n\t"
	"movl %esp, %eax\n\t"
	"andl $-16, %esp\n\t"
	"subl $12, %esp\n\t"
	"pushl %eax\n\t"
	"call start_c\n");
