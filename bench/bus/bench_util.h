/* bench/bus helpers: TSC timing calibrated against CLOCK_MONOTONIC, CPU pinning, percentiles, and the raw
 * cache-line round trip (the physical floor every bus figure is printed beside). */
#ifndef KILN_BENCH_BUS_UTIL_H
#define KILN_BENCH_BUS_UTIL_H

#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <x86intrin.h>

static inline uint64_t tsc_now(void) {
  _mm_lfence(); /* keeps the read from moving ahead of the code being timed */
  uint64_t t = __rdtsc();
  _mm_lfence();
  return t;
}

static inline int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* TSC ticks per ns, measured over 50 ms. */
static inline double tsc_per_ns(void) {
  int64_t a = mono_ns();
  uint64_t ta = tsc_now();
  while (mono_ns() - a < 50000000) {
  }
  int64_t b = mono_ns();
  uint64_t tb = tsc_now();
  return (double)(tb - ta) / (double)(b - a);
}

static inline int pin_cpu(int cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  return sched_setaffinity(0, sizeof s, &s);
}

static int cmp_u64_(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

typedef struct pct {
  double p50, p99, p999, min;
} pct;

/* Sorts `v` (ticks) and returns percentiles in ns. */
static inline pct percentiles(uint64_t *v, size_t n, double tpn) {
  qsort(v, n, sizeof *v, cmp_u64_);
  pct p = {v[n / 2] / tpn, v[(size_t)(n * 0.99)] / tpn, v[(size_t)(n * 0.999)] / tpn, v[0] / tpn};
  return p;
}

/* The raw cache-line round trip: one 64-byte line, the initiator stores 2i+1 and spins until it reads 2i+2, the
 * responder spins until it reads 2i+1 and stores 2i+2. Nothing else moves: this is the floor. */
typedef struct raw_line {
  _Alignas(128) _Atomic uint64_t x;
  uint8_t pad[120];
  _Atomic uint64_t stop; /* other control, on its own line pair */
  _Atomic uint64_t seq;
} raw_line;

/* Both sides keep `base` (the value of x before this block) in step: it grows by 2n per block. */
static inline void raw_initiate(raw_line *l, uint64_t *ticks, size_t n, uint64_t *basep) {
  uint64_t base = *basep;
  *basep += 2 * n;
  for (size_t i = 0; i < n; i++) {
    uint64_t t0 = tsc_now();
    atomic_store_explicit(&l->x, base + 2 * i + 1, memory_order_release);
    while (atomic_load_explicit(&l->x, memory_order_acquire) != base + 2 * i + 2) {
    }
    ticks[i] = tsc_now() - t0;
  }
}

static inline void raw_respond(raw_line *l, size_t n, uint64_t *basep) {
  uint64_t base = *basep;
  *basep += 2 * n;
  for (size_t i = 0; i < n; i++) {
    while (atomic_load_explicit(&l->x, memory_order_acquire) != base + 2 * i + 1) {
    }
    atomic_store_explicit(&l->x, base + 2 * i + 2, memory_order_release);
  }
}

#endif
