/* Ring core across two threads: random sizes crossing the wrap with batching on both sides, and a sleep/wake stress
 * where both sides go to sleep on almost every wait (a lost wake-up shows up as a timeout). Also runs under TSan. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "kiln/ring.h"

typedef struct job {
  kiln_ring *r;
  uint64_t cap, n, max_size;
  uint32_t batch;
  int64_t spin;
  uint64_t sum; /* producer: checksum of what it sent */
  int rc;
} job;

static uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x;
}

static uint64_t size_of(uint64_t i, uint64_t max) { return mix(i) % (max + 1); }

static void *producer(void *arg) {
  job *j = arg;
  kiln_ring_prod p;
  j->rc = kiln_ring_prod_attach(&p, j->r, j->cap, j->batch);
  for (uint64_t i = 0; i < j->n && j->rc == KILN_OK; i++) {
    uint64_t size = size_of(i, j->max_size);
    kiln_rec *w;
    int rc;
    while ((rc = kiln_ring_acquire(&p, size, &w)) == KILN_EAGAIN) {
      rc = kiln_ring_wait_writable(&p, size, j->spin, 5000000000ll);
      if (rc != KILN_OK) break;
    }
    if (rc != KILN_OK) {
      j->rc = rc;
      break;
    }
    uint8_t *d = kiln_rec_data(w);
    for (uint64_t k = 0; k < size; k++) d[k] = (uint8_t)(i + k);
    j->sum += i * 31 + size;
    j->rc = kiln_ring_commit(&p, w, size, (uint32_t)i, i);
  }
  kiln_ring_flush(&p);
  return NULL;
}

static void run_pair(uint64_t cap, uint64_t n, uint64_t max_size, uint32_t batch, int64_t spin, uint32_t flags) {
  kiln_ring *r = aligned_alloc(128, kiln_ring_bytes(cap));
  assert_non_null(r);
  assert_int_equal(kiln_ring_init(r, cap, flags), KILN_OK);
  job j = {r, cap, n, max_size, batch, spin, 0, 0};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, producer, &j), 0);
  kiln_ring_cons c;
  assert_int_equal(kiln_ring_cons_attach(&c, r, cap, batch), KILN_OK);
  uint64_t got = 0, sum = 0, bad = 0;
  while (got < n) {
    const kiln_rec *rec = NULL;
    int rc = kiln_ring_peek(&c, &rec);
    if (rc == KILN_EAGAIN) {
      rc = kiln_ring_wait_readable(&c, spin, 5000000000ll);
      assert_int_equal(rc, KILN_OK); /* a lost wake-up would time out here */
      continue;
    }
    assert_int_equal(rc, KILN_OK);
    uint64_t size = rec->size;
    if (rec->corr != got || size != size_of(got, max_size)) bad++;
    const uint8_t *d = kiln_rec_data(rec);
    for (uint64_t k = 0; k < size; k++) bad += d[k] != (uint8_t)(got + k);
    sum += got * 31 + size;
    got++;
    kiln_ring_release(&c);
  }
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(j.rc, KILN_OK);
  assert_int_equal(bad, 0);
  assert_int_equal(sum, j.sum);
  const kiln_rec *rec;
  assert_int_equal(kiln_ring_peek(&c, &rec), KILN_EAGAIN); /* nothing duplicated */
  free(r);
}

static void test_random_sizes_threads(void **state) {
  (void)state;
  run_pair(16384, 100000, 5000, 8, 1000, KILN_RING_FLAG_WAKE);
}

/* 4 KiB ring, 1 KiB records, batch bigger than the ring: never stalls. */
static void test_small_ring_big_batch(void **state) {
  (void)state;
  run_pair(4096, 50000, 1024, 64, 200, KILN_RING_FLAG_WAKE);
}

/* No spinning: both sides sleep on nearly every wait. */
static void test_sleep_wake(void **state) {
  (void)state;
  run_pair(256, 30000, 100, 1, 0, KILN_RING_FLAG_WAKE);
}

/* Without the wake flag, waits back off instead of sleeping and still make progress. */
static void test_no_wake_flag(void **state) {
  (void)state;
  run_pair(1024, 5000, 300, 2, 0, 0);
}

static void test_wait_timeout(void **state) {
  (void)state;
  const uint64_t cap = 1024;
  kiln_ring *r = aligned_alloc(128, kiln_ring_bytes(cap));
  assert_non_null(r);
  assert_int_equal(kiln_ring_init(r, cap, KILN_RING_FLAG_WAKE), KILN_OK);
  kiln_ring_cons c;
  kiln_ring_prod p;
  assert_int_equal(kiln_ring_cons_attach(&c, r, cap, 1), KILN_OK);
  assert_int_equal(kiln_ring_prod_attach(&p, r, cap, 1), KILN_OK);
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  assert_int_equal(kiln_ring_wait_readable(&c, 10, 20000000), KILN_ETIMEDOUT);
  clock_gettime(CLOCK_MONOTONIC, &b);
  int64_t ns = (b.tv_sec - a.tv_sec) * 1000000000ll + (b.tv_nsec - a.tv_nsec);
  assert_true(ns >= 20000000 && ns < 2000000000);
  while (kiln_ring_push(&p, "x", 1, 1, 0) == KILN_OK) {
  }
  assert_int_equal(kiln_ring_wait_writable(&p, 1, 10, 1000000), KILN_ETIMEDOUT);
  assert_int_equal(kiln_ring_wait_writable(&p, cap, 10, 1000000), KILN_ERANGE);
  assert_int_equal(kiln_ring_wait_readable(&c, 10, 0), KILN_OK);
  free(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_random_sizes_threads), cmocka_unit_test(test_small_ring_big_batch),
      cmocka_unit_test(test_sleep_wake),           cmocka_unit_test(test_no_wake_flag),
      cmocka_unit_test(test_wait_timeout),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
