/* The bus inside one process (listener thread, client thread), so ThreadSanitizer can see both sides: duplex
 * request/response with correlation ids and random sizes, plus a one-way stream through a 4 KiB ring. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "bus_test.h"
#include "kiln/bus.h"

#define N 20000

typedef struct ctx {
  char path[108];
  int rc;
} ctx;

static uint64_t size_of(uint64_t i) { return (i * 2654435761u) % 3000; }

static void *client(void *arg) {
  ctx *x = arg;
  kiln_bus_chan *ch;
  kiln_bus_opts o = {.spin = 200};
  x->rc = kiln_bus_connect(&ch, x->path, &o, 5000000000ll);
  if (x->rc != KILN_OK) return NULL;
  uint8_t buf[3000];
  uint64_t inflight = 0, next = 0, answered = 0;
  while (answered < N && x->rc == KILN_OK) {
    /* keep up to 8 requests in flight: both rings carry data at once */
    while (inflight < 8 && next < N) {
      uint64_t sz = size_of(next);
      memset(buf, (int)(next & 0xff), sz);
      x->rc = kiln_bus_send(ch, buf, sz, 1, kiln_bus_next_corr(ch), 5000000000ll);
      if (x->rc != KILN_OK) break;
      next++;
      inflight++;
    }
    const kiln_rec *r;
    x->rc = kiln_bus_peek(ch, &r, 5000000000ll);
    if (x->rc != KILN_OK) break;
    uint64_t i = r->corr - 1;
    if (i != answered || r->size != size_of(i) + 1) x->rc = KILN_EFORMAT;
    const uint8_t *d = kiln_rec_data(r);
    for (uint64_t k = 0; k < size_of(i) && x->rc == KILN_OK; k++)
      if (d[k] != (uint8_t)~(i & 0xff)) x->rc = KILN_EFORMAT;
    kiln_bus_release(ch);
    answered++;
    inflight--;
  }
  kiln_bus_chan_close(ch);
  return NULL;
}

static void test_duplex_threads(void **state) {
  (void)state;
  ctx x = {{0}, 0};
  bus_test_path(x.path, sizeof x.path, "inproc");
  kiln_bus *b;
  kiln_bus_opts o = {.ring_bytes = 16384, .max_clients = 2, .spin = 200};
  assert_int_equal(kiln_bus_listen(&b, x.path, &o), KILN_OK);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, client, &x), 0);
  kiln_bus_chan *ch;
  assert_int_equal(kiln_bus_accept(b, 5000000000ll, &ch), KILN_OK);
  uint8_t out[3001];
  uint64_t served = 0;
  for (;;) {
    const kiln_rec *r;
    int rc = kiln_bus_peek(ch, &r, 5000000000ll);
    if (rc == KILN_ECLOSED) break;
    assert_int_equal(rc, KILN_OK);
    uint32_t n = r->size;
    const uint8_t *d = kiln_rec_data(r);
    for (uint32_t k = 0; k < n; k++) out[k] = (uint8_t)~d[k];
    out[n] = 0;
    uint64_t corr = r->corr;
    kiln_bus_release(ch);
    assert_int_equal(kiln_bus_send(ch, out, n + 1, 2, corr, 5000000000ll), KILN_OK);
    served++;
  }
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(x.rc, KILN_OK);
  assert_int_equal(served, N);
  kiln_bus_close(b);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_duplex_threads)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
