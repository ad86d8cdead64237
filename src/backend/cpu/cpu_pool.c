/*
 * The CPU backend's thread pool (see cpu_pool.h).
 *
 * Hand-off protocol. The caller publishes a job by storing fn/arg and pending = n - 1, then incrementing `gen`
 * (release: orders the job fields before the new generation). A worker that sees gen change (acquire) runs the
 * job and decrements `pending` (acq_rel: its job writes happen before the caller's acquire load that sees 0).
 * Waiting is a spin for KILN_POOL_SPIN_NS, then a futex sleep. To skip the wake syscall when nobody sleeps, each
 * side announces itself in a counter before sleeping; the announcement and the re-check of the awaited word, and
 * the publisher's update and its read of the counter, are all seq_cst, so one of the two sides always sees the
 * other (store-buffer litmus): either the sleeper sees the new value and does not sleep, or the publisher sees
 * the sleeper and wakes it. FUTEX_WAIT itself re-checks the word, so a wake between the check and the sleep is
 * not lost either.
 */
#include "backend/cpu/cpu_pool.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/cpu_relax.h"

#include "kiln/status.h"

/* How long a waiting thread spins before it sleeps. Long enough to cover the serial gaps of a forward pass (norms,
 * residual adds: microseconds) and the host's work between two decode steps (sampling over a 152k vocabulary:
 * ~0.2 ms): on a virtual machine, a thread that sleeps idles its vCPU, and waking a halted vCPU was measured at
 * ~5 ms on the build machine, which a 2-thread decode step of a tiny model (50 us) would otherwise pay every
 * token. Short enough not to burn a core for long between requests. */
#define KILN_POOL_SPIN_NS 2000000

struct kiln_cpu_pool {
  int n;
  pthread_t *threads;
  kiln_cpu_job_fn fn;
  void *arg;
  _Alignas(64) _Atomic uint32_t gen; /* job generation; workers wait for it to change */
  _Atomic uint32_t sleepers;         /* workers asleep (or about to be) on gen */
  _Atomic bool stop;
  _Alignas(64) _Atomic uint32_t pending; /* workers still running the current job */
  _Atomic uint32_t caller_sleeping;      /* the caller is asleep (or about to be) on pending */
};

typedef struct worker_arg {
  kiln_cpu_pool *p;
  int tid;
} worker_arg;

static void futex_wait_(_Atomic uint32_t *addr, uint32_t val) {
  /* EAGAIN (value changed), EINTR and spurious wakes all just return: callers re-check in a loop. */
  syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake_(_Atomic uint32_t *addr) {
  syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

/* Spins, then sleeps, until *word != val; returns the new value (acquire). */
static uint32_t wait_change_(_Atomic uint32_t *word, uint32_t val, _Atomic uint32_t *sleep_count) {
  uint32_t cur;
  uint64_t t0 = 0;
  for (uint32_t i = 0;; i++) {
    cur = atomic_load_explicit(word, memory_order_acquire);
    if (cur != val) return cur;
    kiln_cpu_relax();
    if ((i & 255) == 255) {
      uint64_t t = (uint64_t)kiln_mono_ns();
      if (t0 == 0) t0 = t;
      else if (t - t0 > KILN_POOL_SPIN_NS) break;
    }
  }
  for (;;) {
    atomic_fetch_add_explicit(sleep_count, 1, memory_order_seq_cst); /* announce, then re-check (seq_cst) */
    cur = atomic_load_explicit(word, memory_order_seq_cst);
    if (cur == val) futex_wait_(word, val);
    atomic_fetch_sub_explicit(sleep_count, 1, memory_order_relaxed);
    cur = atomic_load_explicit(word, memory_order_acquire);
    if (cur != val) return cur;
  }
}

static void *worker_main_(void *a) {
  worker_arg *wa = a;
  kiln_cpu_pool *p = wa->p;
  const int tid = wa->tid;
  free(wa);
  uint32_t seen = 0;
  for (;;) {
    seen = wait_change_(&p->gen, seen, &p->sleepers);
    if (atomic_load_explicit(&p->stop, memory_order_acquire)) break;
    p->fn(p->arg, tid, p->n);
    /* seq_cst: pairs with the caller's announcement in caller_sleeping (see the file comment). */
    if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_seq_cst) == 1 &&
        atomic_load_explicit(&p->caller_sleeping, memory_order_seq_cst))
      futex_wake_(&p->pending);
  }
  return NULL;
}

static void publish_(kiln_cpu_pool *p) {
  /* seq_cst: the new generation is ordered before the read of `sleepers` (see the file comment). */
  atomic_fetch_add_explicit(&p->gen, 1, memory_order_seq_cst);
  if (atomic_load_explicit(&p->sleepers, memory_order_seq_cst)) futex_wake_(&p->gen);
}

int kiln_cpu_pool_create(kiln_cpu_pool **out, int n_threads) {
  *out = NULL;
  if (n_threads < 1) return kiln_error(KILN_EINVAL, "cpu: thread count %d < 1", n_threads);
  kiln_cpu_pool *p = calloc(1, sizeof *p);
  if (!p) return kiln_error(KILN_ENOMEM, "cpu: thread pool: out of memory");
  p->n = 1;
  if (n_threads > 1) {
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    if (!p->threads) {
      free(p);
      return kiln_error(KILN_ENOMEM, "cpu: thread pool: out of memory");
    }
  }
  for (int i = 1; i < n_threads; i++) {
    worker_arg *wa = malloc(sizeof *wa);
    if (!wa) {
      kiln_cpu_pool_free(p);
      return kiln_error(KILN_ENOMEM, "cpu: thread pool: out of memory");
    }
    wa->p = p;
    wa->tid = i;
    int rc = pthread_create(&p->threads[i], NULL, worker_main_, wa);
    if (rc != 0) {
      free(wa);
      kiln_cpu_pool_free(p);
      return kiln_error(KILN_ENOMEM, "cpu: starting thread %d of %d: %s", i, n_threads, strerror(rc));
    }
    p->n = i + 1; /* threads 1..i exist: free() joins exactly those */
  }
  *out = p;
  return KILN_OK;
}

void kiln_cpu_pool_free(kiln_cpu_pool *p) {
  if (!p) return;
  if (p->n > 1) {
    atomic_store_explicit(&p->stop, true, memory_order_relaxed);
    publish_(p); /* release via the seq_cst increment: workers see stop after they see the new generation */
    for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
  }
  free(p->threads);
  free(p);
}

int kiln_cpu_pool_size(const kiln_cpu_pool *p) { return p->n; }

void kiln_cpu_pool_run(kiln_cpu_pool *p, kiln_cpu_job_fn fn, void *arg) {
  if (p->n == 1) {
    fn(arg, 0, 1);
    return;
  }
  p->fn = fn;
  p->arg = arg;
  atomic_store_explicit(&p->pending, (uint32_t)(p->n - 1), memory_order_relaxed);
  publish_(p); /* orders fn, arg and pending before the generation the workers wait for */
  fn(arg, 0, p->n);
  uint32_t left = atomic_load_explicit(&p->pending, memory_order_acquire);
  uint64_t t0 = 0;
  for (uint32_t i = 0; left != 0; i++) {
    kiln_cpu_relax();
    left = atomic_load_explicit(&p->pending, memory_order_acquire);
    if (left != 0 && (i & 255) == 255) {
      uint64_t t = (uint64_t)kiln_mono_ns();
      if (t0 == 0) t0 = t;
      else if (t - t0 > KILN_POOL_SPIN_NS) {
        atomic_store_explicit(&p->caller_sleeping, 1, memory_order_seq_cst); /* announce, then re-check */
        left = atomic_load_explicit(&p->pending, memory_order_seq_cst);
        if (left != 0) futex_wait_(&p->pending, left);
        atomic_store_explicit(&p->caller_sleeping, 0, memory_order_relaxed);
        left = atomic_load_explicit(&p->pending, memory_order_acquire);
      }
    }
  }
}

void kiln_cpu_steal_init(kiln_cpu_steal *r, int n_threads, int64_t n) {
  for (int i = 0; i < n_threads; i++) {
    int64_t lo, hi;
    kiln_cpu_split(n, n_threads, i, &lo, &hi);
    /* relaxed: kiln_cpu_pool_run() publishes these stores to the threads (release on the generation) */
    atomic_store_explicit(&r[i].next, lo, memory_order_relaxed);
    r[i].end = hi;
  }
}

bool kiln_cpu_steal_next(kiln_cpu_steal *r, int n_threads, int tid, int64_t *unit) {
  for (int k = 0; k < n_threads; k++) {
    kiln_cpu_steal *v = &r[(tid + k) % n_threads];
    /* relaxed: a claim only selects work; fetch_add hands each unit to exactly one thread, and the job's results
     * are published by the pool's completion protocol */
    if (atomic_load_explicit(&v->next, memory_order_relaxed) >= v->end) continue;
    int64_t u = atomic_fetch_add_explicit(&v->next, 1, memory_order_relaxed);
    if (u < v->end) {
      *unit = u;
      return true;
    }
  }
  return false;
}
