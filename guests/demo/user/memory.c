/*
 * memory: the address space as a process sees it, and the faults a kernel
 * must resolve or turn into a kill.
 *
 *  - sbrk grows the heap (zeroed, writable) and shrinks it back;
 *  - the stack grows on demand (demand-zero page faults) down to 64 KiB;
 *  - after fork, parent and child write the same variables and each sees
 *    only its own writes (copy-on-write);
 *  - a child that writes to its program text, reads page 0, reads kernel
 *    memory or executes CLI is killed with status 128 + vector;
 *  - the kernel refuses user pointers into kernel memory and exec of a
 *    program that does not exist.
 */
#include "ulib.h"

#define HEAP_BYTES (3 * 4096 + 100)
#define STACK_BYTES (64 * 1024)

static volatile u32 shared_value = 1;
static u32 failures;

static void expect(const char *what, int ok)
{
	if (!ok) {
		printf("memory: %s: WRONG\n", what);
		failures++;
	}
}

static int test_sbrk(void)
{
	u8 *old = sbrk(0);
	u8 *heap = sbrk(HEAP_BYTES);
	if (heap == (u8 *)-1 || heap != old || sbrk(0) != heap + HEAP_BYTES)
		return 0;
	for (u32 i = 0; i < HEAP_BYTES; i++) {
		if (heap[i])
			return 0; /* new memory is zeroed */
		heap[i] = (u8)(i * 7);
	}
	for (u32 i = 0; i < HEAP_BYTES; i++) {
		if (heap[i] != (u8)(i * 7))
			return 0;
	}
	return sbrk(-HEAP_BYTES) == heap + HEAP_BYTES && sbrk(0) == old;
}

static u32 __attribute__((noinline)) deep_stack(u32 seed)
{
	volatile u8 big[STACK_BYTES];
	for (u32 i = 0; i < STACK_BYTES; i += 512)
		big[i] = (u8)(seed + i);
	u32 sum = 0;
	for (u32 i = 0; i < STACK_BYTES; i += 512)
		sum += big[i];
	return sum;
}

static int test_stack(void)
{
	u32 want = 0;
	for (u32 i = 0; i < STACK_BYTES; i += 512)
		want += (u8)(5 + i);
	return deep_stack(5) == want;
}

static int test_cow(void)
{
	shared_value = 100;
	int pid = fork();
	if (pid == 0) {
		u32 seen = shared_value;
		shared_value = 200;
		exit(seen == 100 && shared_value == 200 ? 42 : 1);
	}
	if (pid < 0)
		return 0;
	shared_value = 300;
	int status = -1;
	return wait(&status) == pid && status == 42 && shared_value == 300;
}

/* Runs fault(n) in a child; returns its exit status. */
static int child_status(int n)
{
	int pid = fork();
	if (pid == 0) {
		switch (n) {
		case 0: /* write to our own program text */
			*(volatile u32 *)(u32)&main = 0;
			break;
		case 1: /* read page 0 */
			(void)*(volatile u32 *)0;
			break;
		case 2: /* read the kernel */
			(void)*(volatile u32 *)0xC0100000;
			break;
		case 3:
			__asm__ volatile("cli");
			break;
		}
		exit(0);
	}
	int status = -1;
	if (pid < 0 || wait(&status) != pid)
		return -1;
	return status;
}

int main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	int sbrk_ok = test_sbrk();
	expect("sbrk", sbrk_ok);
	int stack_ok = test_stack();
	expect("stack growth", stack_ok);
	int cow_ok = test_cow();
	expect("copy-on-write isolation", cow_ok);

	static const int want[4] = { EXIT_KILLED + 14, EXIT_KILLED + 14, EXIT_KILLED + 14,
				     EXIT_KILLED + 13 };
	int kills_ok = 1;
	for (int n = 0; n < 4; n++) {
		int status = child_status(n);
		if (status != want[n]) {
			printf("memory: fault %d: child exit status %d, want %d\n", n, status, want[n]);
			kills_ok = 0;
		}
	}
	expect("faulting children killed", kills_ok);

	char *const args[] = { "nonexistent", NULL };
	int bad_ok = write(1, (void *)0xC0100000, 16) == -1 && write(1, (void *)0xBFFFFFF8, 16) == -1 &&
		     exec("nonexistent", args) == -1 && pipe((int *)0xC0000000) == -1;
	expect("bad pointers and names refused", bad_ok);

	printf("memory: sbrk %s, stack growth %s, copy-on-write isolation %s, faulting children "
	       "killed %s, bad pointers refused %s\n",
	       sbrk_ok ? "ok" : "WRONG", stack_ok ? "ok" : "WRONG", cow_ok ? "ok" : "WRONG",
	       kills_ok ? "ok" : "WRONG", bad_ok ? "ok" : "WRONG");
	return failures ? 1 : 0;
}
