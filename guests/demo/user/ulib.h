/*
 * The demo's user runtime: system call stubs, a few string helpers and a
 * printf that formats into a buffer and writes it with one system call (so
 * lines from different processes never interleave).
 */
#ifndef ULIB_H
#define ULIB_H

#include "sys.h"

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef int s32;

#define NULL ((void *)0)

/* The program's entry: _start calls exit(main(argc, argv)). */
int main(int argc, char **argv);

/* ---- system calls (sys.h) ---------------------------------------------- */

int write(int fd, const void *buf, u32 len);
int read(int fd, void *buf, u32 len);
int fork(void);
int exec(const char *name, char *const argv[]);
int wait(int *status);
void exit(int code) __attribute__((noreturn));
int getpid(void);
void *sbrk(int delta);
int pipe(int fds[2]);
int close(int fd);
void mark(u8 code);
u32 meminfo(void);

/* ---- helpers ----------------------------------------------------------- */

static inline u64 rdtsc(void)
{
	u32 lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
}

/* v / d, remainder in *rem (no libgcc in freestanding code). */
u64 divmod64(u64 v, u32 d, u32 *rem);

/* strlen, strcmp, memset, memcpy and memcmp are guests/lib/string.c's,
 * linked into every program. */
u32 strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, u32 n);
void *memset(void *d, int c, u32 n);
void *memcpy(void *d, const void *s, u32 n);
int memcmp(const void *a, const void *b, u32 n);
/* Parses a decimal number; returns 0 if s is not one (or is 0). */
u32 parse_u32(const char *s);

/*
 * %c %s %d %u %x with an optional '0' flag and width, and %llu / %llx for
 * u64. printf writes the whole result to fd 1 with a single write.
 */
int vsnprintf(char *buf, u32 size, const char *fmt, __builtin_va_list ap);
int snprintf(char *buf, u32 size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
