/*
 * init: runs the demo's script, one step per program, each in a child
 * process (fork + exec + wait), and prints a summary. Its exit status
 * (the number of failed steps) becomes the VM's exit status.
 *
 * Arguments are the key=value words of the kernel command line:
 *   run=compute,pipe   the steps to run, in order (default: all)
 *   iterations=N       compute's iteration count
 */
#include "ulib.h"

struct step {
	const char *name;
	u8 marker;
};

static const struct step steps[] = {
	{ "compute", MARK_COMPUTE },
	{ "forkwait", MARK_FORKWAIT },
	{ "pipe", MARK_PIPE },
	{ "preempt", MARK_PREEMPT },
	{ "memory", MARK_MEMORY },
};
#define NSTEPS (sizeof(steps) / sizeof(steps[0]))
#define MAX_RUN 8

/* Runs one step; returns its exit status. */
static int run_step(const struct step *s, char *arg)
{
	mark(s->marker);
	printf("init: step %s\n", s->name);
	int pid = fork();
	if (pid < 0) {
		printf("init: fork failed\n");
		return -1;
	}
	if (pid == 0) {
		char *argv[] = { (char *)s->name, arg, NULL };
		exec(s->name, argv);
		printf("init: exec %s failed\n", s->name);
		exit(127);
	}
	/* Orphans become init's children too: reap them on the way. */
	int status = -1, got;
	while ((got = wait(&status)) != pid) {
		if (got < 0) {
			printf("init: wait failed waiting for pid %d\n", pid);
			return -1;
		}
	}
	return status;
}

int main(int argc, char **argv)
{
	const char *run = NULL;
	char *iterations = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strncmp(argv[i], "run=", 4))
			run = argv[i] + 4;
		else if (!strncmp(argv[i], "iterations=", 11))
			iterations = argv[i] + 11;
		else
			printf("init: ignoring argument %s\n", argv[i]);
	}

	/* Which steps, in order. */
	const struct step *todo[MAX_RUN];
	int count = 0, failed = 0;
	if (!run) {
		for (u32 i = 0; i < NSTEPS; i++)
			todo[count++] = &steps[i];
	} else {
		for (const char *s = run; *s;) {
			u32 len = 0;
			while (s[len] && s[len] != ',')
				len++;
			const struct step *found = NULL;
			for (u32 i = 0; i < NSTEPS; i++) {
				if (strlen(steps[i].name) == len && !strncmp(steps[i].name, s, len))
					found = &steps[i];
			}
			if (!found) {
				printf("init: unknown step in run=%s\n", run);
				failed++;
			} else if (count < MAX_RUN) {
				todo[count++] = found;
			}
			s += len;
			if (*s == ',')
				s++;
		}
	}

	char line[256];
	u32 n = (u32)snprintf(line, sizeof(line), "init: pid %d, running", getpid());
	for (int i = 0; i < count && n < sizeof(line); i++)
		n += (u32)snprintf(line + n, sizeof(line) - n, " %s", todo[i]->name);
	printf("%s\n", line);

	u32 free_before = meminfo();
	int status[MAX_RUN], passed = 0;
	for (int i = 0; i < count; i++) {
		status[i] = run_step(todo[i], !strcmp(todo[i]->name, "compute") ? iterations : NULL);
		if (status[i] == 0)
			passed++;
		else
			failed++;
	}
	u32 free_after = meminfo();

	mark(MARK_SUMMARY);
	n = (u32)snprintf(line, sizeof(line), "init: summary:");
	for (int i = 0; i < count && n < sizeof(line); i++) {
		if (status[i] == 0)
			n += (u32)snprintf(line + n, sizeof(line) - n, "%s %s ok", i ? "," : "", todo[i]->name);
		else
			n += (u32)snprintf(line + n, sizeof(line) - n, "%s %s FAILED (status %d)", i ? "," : "",
					   todo[i]->name, status[i]);
	}
	printf("%s%s\n", line, count ? "" : " nothing to run");
	if (free_before == free_after) {
		printf("init: no memory leaked: %u pages free before and after the steps\n", free_after);
	} else {
		printf("init: memory leaked: %u pages free before the steps, %u after\n", free_before,
		       free_after);
		failed++;
	}
	printf("init: %d of %d steps passed\n", passed, count);
	return failed;
}
