/*
 * The compute benchmark's loop, free of any OS dependency so that the same
 * source runs as a demo user program (user/compute.c) and as a native
 * Linux i386 program (native/compute_main.c).
 */
#ifndef COMPUTE_KERNEL_H
#define COMPUTE_KERNEL_H

/* The iteration count the demo and the native program use by default. */
#define COMPUTE_DEFAULT_ITERATIONS 60000000u
/* compute(COMPUTE_DEFAULT_ITERATIONS): a check that user code computed
 * exactly what it does on the host CPU. */
#define COMPUTE_DEFAULT_CHECKSUM 0xe4e583e2u

/* Runs the loop `iterations` times and returns its checksum. */
unsigned int compute(unsigned int iterations);

#endif
