/*
 * base/clock.h (internal): the monotonic clock every timeout, deadline and timing in the library reads.
 */
#ifndef KILN_BASE_CLOCK_H
#define KILN_BASE_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Nanoseconds of CLOCK_MONOTONIC (a vDSO read, no system call). */
static inline int64_t kiln_mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The same in milliseconds, for timings reported to users. */
static inline double kiln_mono_ms(void) { return (double)kiln_mono_ns() / 1e6; }

#endif
