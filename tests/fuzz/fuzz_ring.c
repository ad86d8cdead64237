/*
 * Fuzz target: the ring core over hostile shared memory. The input is a program: a header picks the capacity and
 * the initial control block and data (a memory image a peer could have written), then each op either acts as our
 * side (peek, peek_batch, peek_run, release, release_upto, acquire/commit as the producer) or scribbles over the
 * shared memory as a hostile peer would, between our operations. The ring lives in a heap block of exactly
 * kiln_ring_bytes(cap) bytes, so any access outside the segment is caught by ASan. Every payload handed out is
 * read in full. The core must never read or write outside, and must report KILN_ECORRUPT rather than crash.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/ring.h"

static uint64_t take(const uint8_t **p, size_t *n, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes && *n; i++, (*p)++, (*n)--) v |= (uint64_t)**p << (8 * i);
  return v;
}

static volatile uint8_t sink;
static void touch(const kiln_rec *r, uint64_t size) {
  const uint8_t *d = kiln_rec_data(r);
  uint8_t x = 0;
  for (uint64_t i = 0; i < size; i++) x ^= d[i];
  sink = x;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const uint8_t *p = data;
  size_t n = size;
  uint64_t cap = 256ull << (take(&p, &n, 1) % 5); /* 256 .. 4096 */
  uint8_t *mem = malloc(kiln_ring_bytes(cap));
  if (!mem) return 0;
  kiln_ring *r = (kiln_ring *)mem;
  kiln_ring_init(r, cap, 0);
  r->key = 0; /* a known key, so seeds can hold valid commit words (the position itself) */
  /* The image: counters and data from the input (the description stays valid, or attach refuses, also fine). */
  atomic_store(&r->tail, take(&p, &n, 8));
  atomic_store(&r->head, take(&p, &n, 8));
  uint64_t img = take(&p, &n, 2) % (cap + 1);
  for (uint64_t i = 0; i < img && n; i++) mem[sizeof(kiln_ring) + i] = (uint8_t)take(&p, &n, 1);
  if (take(&p, &n, 1) == 0xff) r->cap = take(&p, &n, 8);

  kiln_ring_cons c;
  kiln_ring_prod w;
  int have_c = kiln_ring_cons_attach(&c, r, cap, 1 + (uint32_t)take(&p, &n, 1) % 4) == KILN_OK;
  int have_w = kiln_ring_prod_attach(&w, r, cap, 1 + (uint32_t)take(&p, &n, 1) % 4) == KILN_OK;
  const kiln_rec *views[8];
  int64_t nviews = 0;
  for (int ops = 0; n && ops < 256; ops++) {
    switch (take(&p, &n, 1) % 9) {
    case 0: /* peek */
      if (have_c && kiln_ring_peek(&c, &views[0]) == KILN_OK) {
        touch(views[0], c.last_size);
        nviews = 1;
      }
      break;
    case 1: { /* a batch */
      if (!have_c) break;
      int64_t k = kiln_ring_peek_batch(&c, views, 1 + (int64_t)take(&p, &n, 1) % 8);
      nviews = k > 0 ? k : 0;
      for (int64_t i = 0; i < nviews; i++) touch(views[i], 0);
      break;
    }
    case 2: { /* a run: everything it covers must be inside */
      if (!have_c) break;
      const kiln_rec *first;
      uint32_t sz;
      int64_t k = kiln_ring_peek_run(&c, 1 + (int64_t)take(&p, &n, 1) % 16, &first, &sz);
      for (int64_t i = 0; i < k; i++) touch((const kiln_rec *)((const uint8_t *)first + i * kiln_rec_span(sz)), sz);
      break;
    }
    case 3:
      if (have_c) kiln_ring_release(&c);
      nviews = 0;
      break;
    case 4:
      if (have_c && nviews) kiln_ring_release_upto(&c, views[take(&p, &n, 1) % (uint64_t)nviews]);
      nviews = 0;
      break;
    case 5: { /* hostile peer writes 8 bytes anywhere in the segment */
      uint64_t off = take(&p, &n, 2) % (kiln_ring_bytes(cap) - 7);
      uint64_t v = take(&p, &n, 8);
      memcpy(mem + off, &v, 8);
      break;
    }
    case 6: /* hostile peer moves a counter */
      atomic_store(take(&p, &n, 1) & 1 ? &r->tail : &r->head, take(&p, &n, 8));
      break;
    case 7: { /* our producer side against a hostile consumer */
      if (!have_w) break;
      kiln_rec *rec;
      uint64_t sz = take(&p, &n, 2) % (cap + 64);
      if (kiln_ring_acquire(&w, sz, &rec) == KILN_OK) {
        memset(kiln_rec_data(rec), 0x5a, sz);
        kiln_ring_commit(&w, rec, sz, 1, 2);
      }
      break;
    }
    case 8:
      if (have_w) kiln_ring_flush(&w);
      break;
    }
  }
  free(mem);
  return 0;
}
