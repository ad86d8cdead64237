/*
 * backend/cpu/cpu_pool.h (internal): a pool of persistent threads that run one job at a time on all threads.
 *
 * The forward pass is a sequence of short parallel jobs (a matmul, the attention of all heads, ...), a few hundred
 * per token. Creating threads per job or waking them through a mutex would cost more than the small jobs, so the
 * threads live as long as the pool and wait for the next job by spinning on a generation counter for a short
 * while (KILN_POOL_SPIN_NS), then sleeping on a futex. The calling thread is thread 0 of every job: a pool of n
 * threads starts n - 1 workers, and kiln_cpu_pool_run() returns when all n have finished the job.
 *
 * One thread calls run() at a time (the engine thread); jobs do not nest.
 */
#ifndef KILN_CPU_POOL_H
#define KILN_CPU_POOL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct kiln_cpu_pool kiln_cpu_pool;

/* A job: called once on each thread with its index tid in [0, n_threads). */
typedef void (*kiln_cpu_job_fn)(void *arg, int tid, int n_threads);

/* n_threads >= 1. */
int kiln_cpu_pool_create(kiln_cpu_pool **out, int n_threads);
/* Stops and joins the workers. Accepts NULL. */
void kiln_cpu_pool_free(kiln_cpu_pool *p);
int kiln_cpu_pool_size(const kiln_cpu_pool *p);
/* Runs fn on every thread of the pool (the caller is thread 0) and returns when all have returned. The writes of
 * every thread's fn happen before run() returns; the caller's writes before run() are visible to every fn. */
void kiln_cpu_pool_run(kiln_cpu_pool *p, kiln_cpu_job_fn fn, void *arg);

/* Splits [0, n) into `parts` contiguous ranges as evenly as possible and returns part i as [*lo, *hi). */
static inline void kiln_cpu_split(int64_t n, int parts, int i, int64_t *lo, int64_t *hi) {
  int64_t base = n / parts, rem = n % parts;
  *lo = i * base + (i < rem ? i : rem);
  *hi = *lo + base + (i < rem ? 1 : 0);
}

/* Work split with stealing. A job's units (row chunks, heads) are first split evenly in contiguous ranges, one
 * per thread, so on a quiet machine each thread streams its own part of the weights in order; a thread that has
 * finished its range takes units from the others' (the next unclaimed one at the front of each). On a shared
 * machine a thread that loses its core for a while then delays the job by one unit, not by its whole range.
 * Each range's claim counter sits on its own cache line. The caller prepares the ranges (kiln_cpu_steal_init)
 * before kiln_cpu_pool_run(), which publishes them. */
typedef struct kiln_cpu_steal {
  _Alignas(64) _Atomic int64_t next; /* next unit to claim in this range */
  int64_t end;                       /* one past the range's last unit */
} kiln_cpu_steal;

/* r[0..n_threads): the even split of n units. */
void kiln_cpu_steal_init(kiln_cpu_steal *r, int n_threads, int64_t n);
/* Claims a unit for thread tid: its own range first, then the others'. False when none is left. */
bool kiln_cpu_steal_next(kiln_cpu_steal *r, int n_threads, int tid, int64_t *unit);

#endif /* KILN_CPU_POOL_H */
