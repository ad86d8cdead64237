/*
 * The CPU backend's thread pool: every job runs exactly once on every thread with its own index, the job's writes
 * are visible to the caller when run() returns, the caller's writes before run() are visible to the job, and the
 * pool survives sleeping workers (gaps longer than the spin) and repeated create/free. Run under TSan too.
 */
#include <setjmp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "backend/cpu/cpu_pool.h"
#include "kiln/status.h"

typedef struct job {
  int64_t input;        /* written by the caller before run() */
  int64_t out[16];      /* one slot per thread */
  int calls[16];
} job;

static void job_fn_(void *arg, int tid, int n) {
  job *j = arg;
  j->calls[tid]++;
  j->out[tid] = j->input * 1000 + tid + n * 100;
}

static void run_many_(int threads, int rounds, int sleep_every) {
  kiln_cpu_pool *p;
  assert_int_equal(kiln_cpu_pool_create(&p, threads), KILN_OK);
  assert_int_equal(kiln_cpu_pool_size(p), threads);
  job j;
  memset(&j, 0, sizeof j);
  for (int r = 0; r < rounds; r++) {
    j.input = r;
    kiln_cpu_pool_run(p, job_fn_, &j);
    for (int t = 0; t < threads; t++) {
      assert_int_equal(j.calls[t], r + 1);
      assert_int_equal(j.out[t], (int64_t)r * 1000 + t + threads * 100);
    }
    if (sleep_every && r % sleep_every == 0) { /* longer than the spin: the workers fall asleep */
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
    }
  }
  kiln_cpu_pool_free(p);
}

static void test_one_thread(void **s) {
  (void)s;
  run_many_(1, 100, 0);
}

static void test_spinning(void **s) {
  (void)s;
  run_many_(2, 20000, 0);
  run_many_(4, 2000, 0);
}

static void test_sleeping(void **s) {
  (void)s;
  run_many_(2, 60, 1);
  run_many_(3, 60, 7);
}

static void test_create_free(void **s) {
  (void)s;
  for (int i = 0; i < 20; i++) {
    kiln_cpu_pool *p;
    assert_int_equal(kiln_cpu_pool_create(&p, 1 + i % 4), KILN_OK);
    kiln_cpu_pool_free(p);
  }
  kiln_cpu_pool *p = (kiln_cpu_pool *)&p;
  assert_int_equal(kiln_cpu_pool_create(&p, 0), KILN_EINVAL);
  assert_null(p);
  kiln_cpu_pool_free(NULL);
}

static void test_split(void **s) {
  (void)s;
  for (int64_t n = 0; n < 50; n++)
    for (int parts = 1; parts < 7; parts++) {
      int64_t prev = 0;
      for (int i = 0; i < parts; i++) {
        int64_t lo, hi;
        kiln_cpu_split(n, parts, i, &lo, &hi);
        assert_int_equal(lo, prev);
        assert_true(hi - lo == n / parts || hi - lo == n / parts + 1);
        prev = hi;
      }
      assert_int_equal(prev, n);
    }
}

/* Work stealing: every unit is claimed exactly once, whatever the split, with one thread slowed down. */
typedef struct steal_job {
  kiln_cpu_steal *r;
  int64_t n;
  _Atomic int claims[1000];
  _Atomic int bad;
  int per_thread[16];
} steal_job;

static void steal_fn_(void *arg, int tid, int nth) {
  steal_job *j = arg;
  int64_t u;
  while (kiln_cpu_steal_next(j->r, nth, tid, &u)) {
    if (u < 0 || u >= j->n) { /* checked by the caller (cmocka asserts belong to the main thread) */
      atomic_store(&j->bad, 1);
      continue;
    }
    atomic_fetch_add(&j->claims[u], 1);
    j->per_thread[tid]++;
    if (tid == 1) { /* a slow thread (its own share would take 0.3 s): the others take its units */
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
    }
  }
}

static void test_steal(void **s) {
  (void)s;
  for (int threads = 1; threads <= 4; threads++) {
    kiln_cpu_pool *p;
    assert_int_equal(kiln_cpu_pool_create(&p, threads), KILN_OK);
    kiln_cpu_steal *r = aligned_alloc(64, sizeof *r * (size_t)threads);
    assert_non_null(r);
    const int64_t sizes[] = {0, 1, 3, 64, 999};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
      static steal_job j;
      memset(&j, 0, sizeof j);
      j.r = r;
      j.n = sizes[k];
      kiln_cpu_steal_init(r, threads, j.n);
      kiln_cpu_pool_run(p, steal_fn_, &j);
      assert_int_equal(atomic_load(&j.bad), 0);
      for (int64_t u = 0; u < j.n; u++) assert_int_equal(atomic_load(&j.claims[u]), 1);
      if (threads > 1 && j.n == 999) assert_true(j.per_thread[1] < 999 / threads); /* its range was shared */
    }
    free(r);
    kiln_cpu_pool_free(p);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_one_thread), cmocka_unit_test(test_spinning), cmocka_unit_test(test_sleeping),
      cmocka_unit_test(test_create_free), cmocka_unit_test(test_split), cmocka_unit_test(test_steal),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
