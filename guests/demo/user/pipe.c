/*
 * pipe: two processes talking through pipes. The parent writes MESSAGES
 * messages of MESSAGE_SIZE pseudo-random bytes into one pipe; the child
 * reads until end of file, checksums what it got and sends the byte count
 * and checksum back through a second pipe; the parent compares them with
 * its own. The message buffer comes from sbrk, and the child gets its copy
 * through fork.
 */
#include "ulib.h"

#define MESSAGES 512
#define MESSAGE_SIZE 256

static u32 fnv(u32 h, const u8 *p, u32 n)
{
	for (u32 i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

static int read_full(int fd, void *buf, u32 n)
{
	u32 got = 0;
	while (got < n) {
		int r = read(fd, (u8 *)buf + got, n - got);
		if (r <= 0)
			return -1;
		got += (u32)r;
	}
	return 0;
}

int main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	int data[2], reply[2];
	if (pipe(data) < 0 || pipe(reply) < 0) {
		printf("pipe: pipe failed\n");
		return 1;
	}
	u8 *buf = sbrk(MESSAGE_SIZE);
	if (buf == (u8 *)-1) {
		printf("pipe: sbrk failed\n");
		return 1;
	}

	u64 t0 = rdtsc();
	int pid = fork();
	if (pid < 0) {
		printf("pipe: fork failed\n");
		return 1;
	}
	if (pid == 0) {
		/* The reader. */
		close(data[1]);
		close(reply[0]);
		u32 result[2] = { 0, 2166136261u }; /* bytes, checksum */
		int n;
		while ((n = read(data[0], buf, MESSAGE_SIZE)) > 0) {
			result[0] += (u32)n;
			result[1] = fnv(result[1], buf, (u32)n);
		}
		if (n < 0 || write(reply[1], result, sizeof(result)) != sizeof(result))
			exit(1);
		exit(0);
	}

	/* The writer. */
	close(data[0]);
	close(reply[1]);
	u32 x = 0x12345678, sum = 2166136261u;
	for (u32 m = 0; m < MESSAGES; m++) {
		for (u32 i = 0; i < MESSAGE_SIZE; i++) {
			x ^= x << 13;
			x ^= x >> 17;
			x ^= x << 5;
			buf[i] = (u8)(x >> 24);
		}
		sum = fnv(sum, buf, MESSAGE_SIZE);
		if (write(data[1], buf, MESSAGE_SIZE) != MESSAGE_SIZE) {
			printf("pipe: write %u failed\n", m);
			return 1;
		}
	}
	close(data[1]); /* the reader sees end of file */

	u32 result[2] = { 0, 0 };
	int got_reply = read_full(reply[0], result, sizeof(result));
	int status = -1;
	int waited = wait(&status);
	u64 cycles = rdtsc() - t0;

	int ok = got_reply == 0 && waited == pid && status == 0 &&
		 result[0] == MESSAGES * MESSAGE_SIZE && result[1] == sum;
	printf("pipe: %u bytes in %u messages of %u, reader's byte count %u and checksum 0x%08x %s, "
	       "cycles %llu\n",
	       MESSAGES * MESSAGE_SIZE, MESSAGES, MESSAGE_SIZE, result[0], result[1],
	       ok ? "ok" : "WRONG", cycles);
	return ok ? 0 : 1;
}
