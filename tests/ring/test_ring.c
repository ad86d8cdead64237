/* Ring core (include/kiln/ring.h), single-threaded: records, wrap, batches, full/empty publication, views, fan-in
 * fairness, and the checks against an impossible (hostile) control block or header. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kiln/ring.h"

static kiln_ring *ring_new(uint64_t cap, uint32_t flags) {
  kiln_ring *r = aligned_alloc(128, kiln_ring_bytes(cap));
  assert_non_null(r);
  memset(r, 0xa5, kiln_ring_bytes(cap)); /* init must not rely on zeroed memory */
  assert_int_equal(kiln_ring_init(r, cap, flags), KILN_OK);
  return r;
}

static void fill(uint8_t *p, uint64_t n, uint64_t seed) {
  for (uint64_t i = 0; i < n; i++) p[i] = (uint8_t)(seed * 131 + i * 7);
}
static int check(const uint8_t *p, uint64_t n, uint64_t seed) {
  for (uint64_t i = 0; i < n; i++)
    if (p[i] != (uint8_t)(seed * 131 + i * 7)) return 0;
  return 1;
}

static void test_init_rejects_bad_capacity(void **state) {
  (void)state;
  kiln_ring r;
  assert_int_equal(kiln_ring_init(&r, 0, 0), KILN_EINVAL);
  assert_int_equal(kiln_ring_init(&r, 128, 0), KILN_EINVAL);
  assert_int_equal(kiln_ring_init(&r, 1000, 0), KILN_EINVAL);
  assert_int_equal(kiln_ring_init(&r, 1ull << 32, 0), KILN_EINVAL);
  assert_int_equal(kiln_rec_span(0), 64);
  assert_int_equal(kiln_rec_span(32), 64);
  assert_int_equal(kiln_rec_span(33), 128);
  assert_int_equal(kiln_rec_span(1024), 1088);
}

static void test_push_peek_release(void **state) {
  (void)state;
  kiln_ring *r = ring_new(4096, 0);
  kiln_ring_prod p = {0};
  kiln_ring_cons c = {0};
  assert_int_equal(kiln_ring_prod_attach(&p, r, 4096, 1), KILN_OK);
  assert_int_equal(kiln_ring_cons_attach(&c, r, 4096, 1), KILN_OK);
  const kiln_rec *rec;
  assert_int_equal(kiln_ring_peek(&c, &rec), KILN_EAGAIN);

  kiln_rec *w;
  assert_int_equal(kiln_ring_acquire(&p, 100, &w), KILN_OK);
  assert_int_equal(kiln_ring_acquire(&p, 100, &w), KILN_EBUSY); /* one outstanding slot at a time */
  fill(kiln_rec_data(w), 100, 1);
  w->stamp = 77;
  assert_int_equal(kiln_ring_commit(&p, w, 90, 5, 0x1234), KILN_OK); /* commit smaller than acquired */
  assert_int_equal(kiln_ring_commit(&p, w, 90, 5, 1), KILN_EINVAL);  /* nothing outstanding */

  assert_int_equal(kiln_ring_peek(&c, &rec), KILN_OK);
  assert_int_equal(rec->size, 90);
  assert_int_equal(rec->type, 5);
  assert_int_equal(rec->corr, 0x1234);
  assert_int_equal(rec->stamp, 77);
  assert_true(check(kiln_rec_data(rec), 90, 1));
  assert_int_equal(kiln_ring_peek(&c, &rec), KILN_EAGAIN);
  kiln_ring_release(&c);
  assert_int_equal(atomic_load(&r->head), 128);
  assert_int_equal(atomic_load(&r->tail), 128);

  /* Errors: too large; skip type reserved; wrong record pointer. */
  assert_int_equal(kiln_ring_acquire(&p, 4096, &w), KILN_ERANGE);
  assert_int_equal(kiln_ring_acquire(&p, 8, &w), KILN_OK);
  assert_int_equal(kiln_ring_commit(&p, w, 8, KILN_REC_SKIP, 0), KILN_EINVAL);
  assert_int_equal(kiln_ring_commit(&p, w + 1, 8, 1, 0), KILN_EINVAL);
  kiln_ring_abort(&p);
  assert_int_equal(kiln_ring_peek(&c, &rec), KILN_EAGAIN);
  free(r);
}

/* Random sizes through a small ring, many laps, both sides batching: every record arrives once, in order, intact. */
static void test_wrap_random_sizes(void **state) {
  (void)state;
  const uint64_t cap = 8192;
  kiln_ring *r = ring_new(cap, 0);
  kiln_ring_prod p = {0};
  kiln_ring_cons c = {0};
  assert_int_equal(kiln_ring_prod_attach(&p, r, cap, 7), KILN_OK);
  assert_int_equal(kiln_ring_cons_attach(&c, r, cap, 3), KILN_OK);
  uint64_t sent = 0, got = 0, skips_seen = 0;
  const uint64_t n = 200000;
  srand(7);
  while (got < n) {
    /* produce a few */
    for (int k = rand() % 8; k > 0 && sent < n; k--) {
      uint64_t size = (uint64_t)(rand() % (int)kiln_ring_max_payload(cap) + 1);
      if (rand() % 4) size = (uint64_t)(rand() % 300);
      kiln_rec *w;
      uint64_t before = p.tail & p.mask;
      int rc = kiln_ring_acquire(&p, size, &w);
      if (rc == KILN_EAGAIN) {
        assert_int_equal(atomic_load(&r->tail), p.tail); /* full => everything committed is published */
        break;
      }
      assert_int_equal(rc, KILN_OK);
      if ((uint8_t *)w - p.data != (ptrdiff_t)before) skips_seen++;
      fill(kiln_rec_data(w), size, sent);
      assert_int_equal(kiln_ring_commit(&p, w, size, (uint32_t)(sent & 0xffff), sent), KILN_OK);
      sent++;
    }
    if (sent == n) kiln_ring_flush(&p); /* the last partial batch: a producer with nothing more to say flushes */
    /* consume a few, sometimes as a batch */
    const kiln_rec *v[16];
    int64_t m = kiln_ring_peek_batch(&c, v, 1 + rand() % 16);
    assert_true(m >= 0);
    if (m == 0) assert_int_equal(atomic_load(&r->head), c.head); /* empty => everything released is published */
    for (int64_t i = 0; i < m; i++) {
      assert_int_equal(v[i]->corr, got);
      assert_int_equal(v[i]->type, got & 0xffff);
      assert_true(check(kiln_rec_data(v[i]), v[i]->size, got));
      got++;
    }
    if (m > 1 && rand() % 2) {
      assert_int_equal(kiln_ring_release_upto(&c, v[m / 2]), KILN_OK);
    }
    if (rand() % 3) kiln_ring_release(&c);
  }
  assert_int_equal(sent, n);
  assert_true(skips_seen > 100);
  assert_true(atomic_load(&r->tail) > 100 * cap); /* many laps */
  free(r);
}

/* A batch larger than the ring never stalls: full and empty publish the pending records/bytes. */
static void test_batch_larger_than_ring(void **state) {
  (void)state;
  const uint64_t cap = 4096;
  kiln_ring *r = ring_new(cap, 0);
  kiln_ring_prod p = {0};
  kiln_ring_cons c = {0};
  assert_int_equal(kiln_ring_prod_attach(&p, r, cap, 1000), KILN_OK);
  assert_int_equal(kiln_ring_cons_attach(&c, r, cap, 1000), KILN_OK);
  uint64_t sent = 0, got = 0;
  for (int round = 0; round < 1000; round++) {
    kiln_rec *w;
    while (kiln_ring_acquire(&p, 1024, &w) == KILN_OK) {
      fill(kiln_rec_data(w), 1024, sent);
      assert_int_equal(kiln_ring_commit(&p, w, 1024, 1, sent++), KILN_OK);
    }
    const kiln_rec *rec;
    while (kiln_ring_peek(&c, &rec) == KILN_OK) {
      assert_int_equal(rec->corr, got);
      assert_true(check(kiln_rec_data(rec), 1024, got++));
      kiln_ring_release(&c);
    }
    assert_int_equal(got, sent);
  }
  assert_true(sent >= 2000);
  free(r);
}

/* The largest record (span == capacity) fits from any starting offset once the ring drains. */
static void test_max_record_any_offset(void **state) {
  (void)state;
  const uint64_t cap = 1024;
  kiln_ring *r = ring_new(cap, 0);
  kiln_ring_prod p = {0};
  kiln_ring_cons c = {0};
  assert_int_equal(kiln_ring_prod_attach(&p, r, cap, 1), KILN_OK);
  assert_int_equal(kiln_ring_cons_attach(&c, r, cap, 1), KILN_OK);
  for (int i = 0; i < 40; i++) {
    kiln_rec *w;
    const kiln_rec *rec;
    static const uint8_t zeros[256];
    uint64_t small = (uint64_t)(i % 5) * 64;
    assert_int_equal(kiln_ring_push(&p, zeros, small, 1, 0), KILN_OK);
    int rc = kiln_ring_acquire(&p, kiln_ring_max_payload(cap), &w);
    if (rc == KILN_EAGAIN) { /* skip committed, record waits for the consumer */
      while (kiln_ring_peek(&c, &rec) == KILN_OK) kiln_ring_release(&c);
      rc = kiln_ring_acquire(&p, kiln_ring_max_payload(cap), &w);
    }
    assert_int_equal(rc, KILN_OK);
    assert_ptr_equal((uint8_t *)w, p.data);
    assert_int_equal(kiln_ring_commit(&p, w, kiln_ring_max_payload(cap), 2, i), KILN_OK);
    int seen_big = 0;
    while (kiln_ring_peek(&c, &rec) == KILN_OK) {
      if (rec->type == 2) {
        seen_big = 1;
        assert_int_equal(rec->corr, i);
      }
      kiln_ring_release(&c);
    }
    assert_true(seen_big);
  }
  free(r);
}

/* Hostile control blocks and headers are reported, sticky, and never followed. */
static void test_corruption(void **state) {
  (void)state;
  const uint64_t cap = 1024;
  kiln_ring *r = ring_new(cap, 0);
  kiln_ring_prod p = {0};
  kiln_ring_cons c = {0};
  const kiln_rec *rec;
  assert_int_equal(kiln_ring_cons_attach(&c, r, 2048, 1), KILN_ECORRUPT); /* capacity disagrees */
  r->magic ^= 1;
  assert_int_equal(kiln_ring_cons_attach(&c, r, cap, 1), KILN_ECORRUPT);
  r->magic ^= 1;
  atomic_store(&r->tail, cap + 64); /* more than cap ahead of head */
  assert_int_equal(kiln_ring_cons_attach(&c, r, cap, 1), KILN_ECORRUPT);
  atomic_store(&r->tail, 0);

  assert_int_equal(kiln_ring_prod_attach(&p, r, cap, 1), KILN_OK);
  assert_int_equal(kiln_ring_cons_attach(&c, r, cap, 1), KILN_OK);
  /* tail past the capacity */
  atomic_store(&r->tail, 2 * cap);
  assert_int_equal(kiln_ring_peek(&c, &rec), KILN_ECORRUPT);
  assert_int_equal(kiln_ring_peek(&c, &rec), KILN_ECORRUPT); /* sticky */

  /* header whose position is stale */
  atomic_store(&r->tail, 0);
  assert_int_equal(kiln_ring_cons_attach(&c, r, cap, 1), KILN_OK);
  assert_int_equal(kiln_ring_push(&p, "abc", 3, 1, 0), KILN_OK);
  atomic_store(&((kiln_rec *)p.data)->commit, 4096 ^ r->key);
  assert_int_equal(kiln_ring_peek(&c, &rec), KILN_ECORRUPT);

  /* size past what was published */
  atomic_store(&((kiln_rec *)p.data)->commit, 0 ^ r->key);
  ((kiln_rec *)p.data)->size = 500;
  assert_int_equal(kiln_ring_cons_attach(&c, r, cap, 1), KILN_OK);
  assert_int_equal(kiln_ring_peek(&c, &rec), KILN_ECORRUPT);

  /* a skip marker that does not end at the end of the data */
  ((kiln_rec *)p.data)->size = 0;
  ((kiln_rec *)p.data)->type = KILN_REC_SKIP;
  assert_int_equal(kiln_ring_cons_attach(&c, r, cap, 1), KILN_OK);
  assert_int_equal(kiln_ring_peek(&c, &rec), KILN_ECORRUPT);

  /* unaligned tail */
  atomic_store(&r->tail, 65);
  assert_int_equal(kiln_ring_cons_attach(&c, r, cap, 1), KILN_ECORRUPT);

  /* the producer checks head: beyond what it published, or backwards */
  atomic_store(&r->tail, 0);
  atomic_store(&r->head, 0);
  assert_int_equal(kiln_ring_prod_attach(&p, r, cap, 1), KILN_OK);
  for (int i = 0; i < 16; i++) assert_int_equal(kiln_ring_push(&p, "x", 1, 1, 0), KILN_OK);
  atomic_store(&r->head, 2048);
  assert_int_equal(kiln_ring_push(&p, "x", 1, 1, 0), KILN_ECORRUPT);
  assert_int_equal(kiln_ring_push(&p, "x", 1, 1, 0), KILN_ECORRUPT);
  free(r);
}

/* release_upto: only outstanding records; positions come from the handle, not from shared memory. */
static void test_release_upto(void **state) {
  (void)state;
  const uint64_t cap = 1024;
  kiln_ring *r = ring_new(cap, 0);
  kiln_ring_prod p = {0};
  kiln_ring_cons c = {0};
  assert_int_equal(kiln_ring_prod_attach(&p, r, cap, 1), KILN_OK);
  assert_int_equal(kiln_ring_cons_attach(&c, r, cap, 1), KILN_OK);
  for (int i = 0; i < 4; i++) assert_int_equal(kiln_ring_push(&p, "abcdefgh", 8, 1, i), KILN_OK);
  const kiln_rec *v[4];
  assert_int_equal(kiln_ring_peek_batch(&c, v, 3), 3);
  assert_int_equal(kiln_ring_release_upto(&c, v[1]), KILN_OK);
  assert_int_equal(c.head, 128);
  assert_int_equal(kiln_ring_release_upto(&c, v[0]), KILN_EINVAL); /* already released */
  assert_int_equal(kiln_ring_release_upto(&c, (const kiln_rec *)(c.data + 192)), KILN_EINVAL); /* not handed out */
  assert_int_equal(kiln_ring_release_upto(&c, (const kiln_rec *)(c.data + 1)), KILN_EINVAL);
  assert_int_equal(kiln_ring_release_upto(&c, v[2]), KILN_OK);
  assert_int_equal(c.head, 192);
  free(r);
}

/* Fan-in: with quantum q each ring yields at most q records per turn; a flooding producer cannot starve others. */
static void test_fanin_fair(void **state) {
  (void)state;
  const uint64_t cap = 65536;
  kiln_ring *r[3];
  kiln_ring_prod p[3] = {{0}};
  kiln_ring_cons c[3] = {{0}};
  for (int i = 0; i < 3; i++) {
    r[i] = ring_new(cap, 0);
    assert_int_equal(kiln_ring_prod_attach(&p[i], r[i], cap, 1), KILN_OK);
    assert_int_equal(kiln_ring_cons_attach(&c[i], r[i], cap, 1), KILN_OK);
  }
  for (int k = 0; k < 100; k++) assert_int_equal(kiln_ring_push(&p[0], "x", 1, 0, k), KILN_OK);
  for (int k = 0; k < 5; k++) assert_int_equal(kiln_ring_push(&p[1], "y", 1, 1, k), KILN_OK);
  for (int k = 0; k < 5; k++) assert_int_equal(kiln_ring_push(&p[2], "z", 1, 2, k), KILN_OK);
  kiln_ring_fanin f;
  kiln_ring_fanin_init(&f, c, 3, 2);
  int order[110], n = 0;
  const kiln_rec *rec;
  uint32_t which;
  while (kiln_ring_fanin_peek(&f, &rec, &which) == KILN_OK) {
    assert_true(n < 110);
    assert_int_equal(rec->type, which);
    order[n++] = (int)which;
    kiln_ring_release(&c[which]);
  }
  assert_int_equal(n, 110);
  /* Two full rounds 2 by 2 from rings 0,1,2; in the third, rings 1 and 2 have one record left each; then ring 0. */
  for (int i = 0; i < 12; i++) assert_int_equal(order[i], (i / 2) % 3);
  const int third[4] = {0, 0, 1, 2};
  for (int i = 12; i < 16; i++) assert_int_equal(order[i], third[i - 12]);
  for (int i = 16; i < 110; i++) assert_int_equal(order[i], 0);
  for (int i = 0; i < 3; i++) free(r[i]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_init_rejects_bad_capacity),
      cmocka_unit_test(test_push_peek_release),
      cmocka_unit_test(test_wrap_random_sizes),
      cmocka_unit_test(test_batch_larger_than_ring),
      cmocka_unit_test(test_max_record_any_offset),
      cmocka_unit_test(test_corruption),
      cmocka_unit_test(test_release_upto),
      cmocka_unit_test(test_fanin_fair),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
