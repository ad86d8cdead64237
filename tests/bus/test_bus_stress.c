/* Multi-process stress over the bus, client -> listener, nothing lost or duplicated:
 *   1. 10^8 small records (8-byte payload: the sequence number) through the inline core, batched;
 *   2. 10^6 records of random sizes up to 64 KiB (log-uniform: as many below 64 B as near 64 KiB), every byte
 *      checked, crossing the wrap at every alignment;
 *   3. a 4 KiB ring with 1 KiB records and a batch larger than the ring: must never stall (a wait that times out
 *      fails the test).
 * Under sanitizers the counts are divided by 10 (the instrumented build is checked for errors, the plain one for
 * volume). `test_bus_stress soak` multiplies them by 10 (label soak, outside CI). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus_test.h"
#include "kiln/bus.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SCALE_DIV 10
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SCALE_DIV 10
#endif
#endif
#ifndef SCALE_DIV
#define SCALE_DIV 1
#endif

#define WAIT_NS 5000000000ll /* a stall of 5 s is a failure */

static uint64_t mix(uint64_t x) {
  x ^= x >> 31;
  x *= 0x9e3779b97f4a7c15ull;
  x ^= x >> 29;
  return x;
}

static int fail(const char *what, uint64_t i) {
  fprintf(stderr, "stress: %s at record %llu: %s\n", what, (unsigned long long)i, kiln_last_error());
  return 1;
}

/* Phase 1 producer: small records straight through the inline core. */
static int produce_small(kiln_bus_chan *ch, uint64_t n) {
  kiln_ring_prod *p = kiln_bus_tx(ch);
  for (uint64_t i = 0; i < n; i++) {
    kiln_rec *w;
    int rc;
    while ((rc = kiln_ring_acquire(p, 8, &w)) == KILN_EAGAIN)
      if (kiln_bus_wait_writable(ch, 8, WAIT_NS) != KILN_OK) return fail("producer stalled", i);
    if (rc != KILN_OK) return fail("acquire", i);
    memcpy(kiln_rec_data(w), &i, 8);
    kiln_ring_commit(p, w, 8, 1, 0);
  }
  kiln_ring_flush(p);
  return 0;
}

static int consume_small(kiln_bus_chan *ch, uint64_t n) {
  kiln_ring_cons *c = kiln_bus_rx(ch);
  uint64_t sum = 0;
  for (uint64_t i = 0; i < n; i++) {
    const kiln_rec *r;
    int rc;
    while ((rc = kiln_ring_peek(c, &r)) == KILN_EAGAIN)
      if (kiln_bus_wait_readable(ch, WAIT_NS) != KILN_OK) return fail("consumer stalled", i);
    if (rc != KILN_OK) return fail("peek", i);
    uint64_t v;
    memcpy(&v, kiln_rec_data(r), 8);
    if (r->size != 8 || v != i) return fail("wrong record", i);
    sum += v;
    kiln_ring_release(c);
  }
  if (sum != n * (n - 1) / 2) return fail("checksum", n);
  return 0;
}

/* Phases 2 and 3: sizes from `max_size`, payload bytes (i * 7 + k) mod 256 after an 8-byte sequence number. */
static uint64_t big_size(uint64_t i, uint64_t max_size) {
  if (max_size == 1024) return 1024;
  uint64_t r = mix(i), top = 16ull << (r % 13); /* 16 B .. 64 KiB */
  return 8 + (r >> 8) % (top - 7);
}

static int produce_big(kiln_bus_chan *ch, uint64_t n, uint64_t max_size) {
  for (uint64_t i = 0; i < n; i++) {
    uint64_t size = big_size(i, max_size);
    kiln_rec *w;
    if (kiln_bus_acquire(ch, size, &w, WAIT_NS) != KILN_OK) return fail("producer stalled", i);
    uint8_t *d = kiln_rec_data(w);
    memcpy(d, &i, 8);
    for (uint64_t k = 8; k < size; k++) d[k] = (uint8_t)(i * 7 + k);
    kiln_bus_commit(ch, w, size, 2, i);
  }
  kiln_bus_flush(ch);
  return 0;
}

static int consume_big(kiln_bus_chan *ch, uint64_t n, uint64_t max_size) {
  for (uint64_t i = 0; i < n; i++) {
    const kiln_rec *r;
    if (kiln_bus_peek(ch, &r, WAIT_NS) != KILN_OK) return fail("consumer stalled", i);
    uint64_t size = r->size, v;
    const uint8_t *d = kiln_rec_data(r);
    memcpy(&v, d, 8);
    if (size != big_size(i, max_size) || v != i || r->corr != i) return fail("wrong record", i);
    uint8_t bad = 0;
    for (uint64_t k = 8; k < size; k++) bad |= (uint8_t)(d[k] ^ (uint8_t)(i * 7 + k));
    if (bad) return fail("corrupt payload", i);
    kiln_bus_release(ch);
  }
  const kiln_rec *r;
  int rc = kiln_bus_peek(ch, &r, 0);
  if (rc != KILN_EAGAIN && rc != KILN_ECLOSED) return fail("extra record", n);
  return 0;
}

typedef struct phase {
  const char *name;
  uint64_t n, ring, max_size;
  uint32_t batch;
} phase;

static int run_phase(const phase *ph) {
  char path[108];
  bus_test_path(path, sizeof path, "stress");
  kiln_bus *b;
  kiln_bus_opts o = {.ring_bytes = ph->ring, .max_clients = 1, .batch = ph->batch, .spin = -1};
  if (kiln_bus_listen(&b, path, &o) != KILN_OK) return fail("listen", 0);
  int64_t t0 = bus_test_now_ns();
  pid_t c = fork();
  if (c == 0) {
    kiln_bus_chan *ch;
    kiln_bus_opts co = {.batch = ph->batch, .spin = -1};
    if (kiln_bus_connect(&ch, path, &co, 5000000000ll) != KILN_OK) _exit(fail("connect", 0));
    int rc = ph->max_size ? produce_big(ch, ph->n, ph->max_size) : produce_small(ch, ph->n);
    kiln_bus_chan_close(ch);
    _exit(rc);
  }
  kiln_bus_chan *ch;
  int rc = kiln_bus_accept(b, 5000000000ll, &ch) != KILN_OK ? fail("accept", 0) : 0;
  if (!rc) rc = ph->max_size ? consume_big(ch, ph->n, ph->max_size) : consume_small(ch, ph->n);
  if (rc) kill(c, SIGKILL);
  int st = bus_test_wait(c);
  double s = (double)(bus_test_now_ns() - t0) / 1e9;
  printf("stress %-28s %11llu records in %6.2f s (%.1f M/s)\n", ph->name, (unsigned long long)ph->n, s,
         (double)ph->n / s / 1e6);
  kiln_bus_close(b);
  return rc || st != 0;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  uint64_t mul = argc > 1 && strcmp(argv[1], "soak") == 0 ? 10 : 1;
  const phase phases[] = {
      {"small (8 B)", 100000000ull * mul / SCALE_DIV, 1 << 20, 0, 64},
      {"random sizes (<= 64 KiB)", 1000000ull * mul / SCALE_DIV, 1 << 20, 65536, 16},
      {"4 KiB ring, 1 KiB records", 200000ull * mul / SCALE_DIV, 4096, 1024, 64},
  };
  int bad = 0;
  const char *only = getenv("KILN_STRESS_PHASE"); /* "0".."2": run one phase (for investigation) */
  for (size_t i = 0; i < sizeof phases / sizeof *phases; i++)
    if (!only || (size_t)atoi(only) == i) bad |= run_phase(&phases[i]);
  printf("stress: %s\n", bad ? "FAILED" : "ok");
  return bad;
}
