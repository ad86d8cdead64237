/*
 * kiln/ring.h: the one ring (DESIGN.md decision 1). A lock-free single-producer single-consumer record ring that
 * works in process memory, in a shared-memory segment between processes and in mapped memory polled by a GPU.
 *
 * Layout. A ring is a control block (kiln_ring, 640 bytes) followed by `cap` bytes of data, cap a power of two
 * between 256 B and 2 GiB. The control block holds two free-running byte counters on separate 128-byte line
 * pairs: `tail` (bytes committed, written only by the producer) and `head` (bytes released, written only by the
 * consumer); two sleep flags, each on its own line pair and written only by its own side; and an immutable
 * description (magic, version, capacity, flags). Neither side ever writes the other side's counter.
 *
 * Records. Every record starts on a 64-byte boundary with a 32-byte header (kiln_rec: payload size, type id,
 * correlation id, optional clock stamp, and a commit word) followed by the payload; its span is
 * kiln_rec_span(size), the header plus payload rounded up to 64. A record never wraps: when it does not fit before
 * the end of the data, the producer writes a skip marker (type KILN_REC_SKIP) that covers the rest and puts the
 * record at offset 0. The consumer hides skip markers.
 *
 * Commit words. Commit stores the record's position XOR the ring's key (random per ring, fixed at init) into the
 * header's last word, with release order, after everything else in the record. A consumer that has caught up with
 * the published tail polls that word at its read position instead of the producer's tail line: one cache line
 * moves per record instead of two, which halves the latency of a small message. A stale word (an older lap, or
 * payload bytes) cannot match: it would have to equal this exact position XOR this ring's key. Records below the
 * published tail must carry their commit word too, or the ring is corrupt. Publication of tail (batched) still
 * drives sleeping, wake-ups, and the checks against the counters.
 *
 * Zero copy. The producer acquires a slot of N bytes, writes the payload in place and commits; the consumer peeks
 * the next record (or a batch of up to K records, as views), reads it in place and releases it. Each side keeps a
 * cached copy of the peer's counter and re-reads the shared one only when the cache says full or empty.
 *
 * Batching. Commits and releases are published (one release-store of the counter) every `batch` records, or
 * sooner: when half the ring is pending, on an explicit flush, and always before a call reports full or empty, so
 * a peer never waits on a record or a free byte that has not been published, and a ring smaller than the batch
 * still works. Code that sleeps (kiln_ring_wait_*, the bus) flushes before it sleeps.
 *
 * Hostile memory. The consumer trusts nothing it reads from the ring: counters that move backwards or past the
 * capacity, headers whose position, size or span disagree with the counters, skip markers that do not end at the
 * end of the data: all are reported as KILN_ECORRUPT and leave the handle unusable (every later call returns the
 * same). The handle keeps its own copy of the capacity and data pointer, so no access ever leaves [data, data+cap).
 * The producer likewise checks the consumer's counter. A payload pointer handed out stays inside the data, but its
 * bytes can of course change under a hostile peer: copy before you validate payload contents.
 *
 * Crash safety. A record becomes visible only through its commit word or the tail, and both are stored (release)
 * after the record is written, so a producer killed in the middle of a record never exposes a partial one.
 *
 * Sleeping. The core never blocks. kiln_ring_wait_readable/writable (src/ring/ring_wait.c, Linux futex) spin, then
 * sleep on the low 32 bits of the peer's counter after raising their own sleep flag; a publisher that finds the
 * peer's flag raised after a full fence wakes it (the Dekker pattern: see kiln_ring__publish_tail). In CUDA device
 * code the core compiles without sleeping (the host side polls).
 *
 * Compiles as C11 (C11 atomics) and inside .cu files (host and device), where the atomics are cuda::atomic_ref with
 * system scope, so the GPU and the host see each other's acquire/release. All functions are inline; the few that
 * sleep or record error messages live in src/ring/.
 *
 * Thread rules: one thread drives a kiln_ring_prod, one drives a kiln_ring_cons; they may be different processes.
 */
#ifndef KILN_RING_H
#define KILN_RING_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "kiln/status.h"

/* ---------------------------------------------------------------- atomics: C11 on the host, system scope on GPUs */
#if defined(__CUDACC__)
#include <cuda/atomic>
#define KILN_RING_FN static inline __host__ __device__
#define KILN_RING_ATOMIC(T) T
#define kiln_ring__ld_acq(p) (cuda::atomic_ref<uint64_t, cuda::thread_scope_system>(*(p)).load(cuda::memory_order_acquire))
#define kiln_ring__ld_rlx(p) (cuda::atomic_ref<uint64_t, cuda::thread_scope_system>(*(p)).load(cuda::memory_order_relaxed))
#define kiln_ring__st_rel(p, v) (cuda::atomic_ref<uint64_t, cuda::thread_scope_system>(*(p)).store((v), cuda::memory_order_release))
#define kiln_ring__st_rlx(p, v) (cuda::atomic_ref<uint64_t, cuda::thread_scope_system>(*(p)).store((v), cuda::memory_order_relaxed))
#define kiln_ring__ld32_rlx(p) (cuda::atomic_ref<uint32_t, cuda::thread_scope_system>(*(p)).load(cuda::memory_order_relaxed))
#define kiln_ring__st32_rlx(p, v) (cuda::atomic_ref<uint32_t, cuda::thread_scope_system>(*(p)).store((v), cuda::memory_order_relaxed))
#define kiln_ring__fence_sc() cuda::atomic_thread_fence(cuda::memory_order_seq_cst, cuda::thread_scope_system)
#define kiln_ring__fence_rel() cuda::atomic_thread_fence(cuda::memory_order_release, cuda::thread_scope_system)
#define kiln_ring__fence_acq() cuda::atomic_thread_fence(cuda::memory_order_acquire, cuda::thread_scope_system)
#define KILN_RING_LIKELY(x) (x)
#define KILN_RING_UNLIKELY(x) (x)
#else
#include <stdatomic.h>
#define KILN_RING_FN static inline
#define KILN_RING_ATOMIC(T) _Atomic T
#define kiln_ring__ld_acq(p) atomic_load_explicit((p), memory_order_acquire)
#define kiln_ring__ld_rlx(p) atomic_load_explicit((p), memory_order_relaxed)
#define kiln_ring__st_rel(p, v) atomic_store_explicit((p), (v), memory_order_release)
#define kiln_ring__st_rlx(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)
#define kiln_ring__ld32_rlx(p) atomic_load_explicit((p), memory_order_relaxed)
#define kiln_ring__st32_rlx(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)
#define kiln_ring__fence_sc() atomic_thread_fence(memory_order_seq_cst)
#define kiln_ring__fence_rel() atomic_thread_fence(memory_order_release)
#define kiln_ring__fence_acq() atomic_thread_fence(memory_order_acquire)
#define KILN_RING_LIKELY(x) __builtin_expect(!!(x), 1)
#define KILN_RING_UNLIKELY(x) __builtin_expect(!!(x), 0)
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_RING_MAGIC 0x474e49524e4c494bull /* "KILNRING" little-endian */
#define KILN_RING_VERSION 1u
#define KILN_RING_MIN_CAP 256ull
#define KILN_RING_MAX_CAP (1ull << 31) /* keeps a sleeper's 32-bit futex snapshot unambiguous (ring_wait.c) */
#define KILN_REC_ALIGN 64u
#define KILN_REC_SKIP 0xffffffffu /* reserved type: wrap marker, never handed to users */
#define KILN_RING_FLAG_WAKE 1u    /* peers may sleep: publishers check the sleep flags (costs a fence per publish) */

/* A record header; the payload follows at (rec + 1), 32-byte aligned. */
typedef struct kiln_rec {
  uint32_t size;  /* payload bytes */
  uint32_t type;  /* user type id (KILN_REC_SKIP is reserved) */
  uint64_t corr;  /* correlation id (request/response matching) */
  uint64_t stamp; /* optional clock stamp; 0 when unused */
  KILN_RING_ATOMIC(uint64_t) commit; /* position ^ ring key, stored last (release): the record is complete */
} kiln_rec;

/* The shared control block; the ring's data follows it directly. */
typedef struct kiln_ring {
  /* line pair 0: producer-owned */
  KILN_RING_ATOMIC(uint64_t) tail; /* bytes committed and published, free-running */
  uint8_t pad0[120];
  /* line pair 1: consumer-owned */
  KILN_RING_ATOMIC(uint64_t) head; /* bytes released and published, free-running */
  uint8_t pad1[120];
  /* line pair 2: written by the consumer only when it goes to sleep or wakes; read by the producer per publish */
  KILN_RING_ATOMIC(uint32_t) cons_sleeping;
  uint8_t pad2[124];
  /* line pair 3: same for the producer (sleeping on a full ring) */
  KILN_RING_ATOMIC(uint32_t) prod_sleeping;
  uint8_t pad3[124];
  /* line pair 4: immutable after kiln_ring_init */
  uint64_t magic;
  uint32_t version;
  uint32_t flags;
  uint64_t cap;
  uint64_t key; /* commit-word key */
  uint8_t pad4[96];
} kiln_ring;

#ifdef __cplusplus
static_assert(sizeof(kiln_rec) == 32 && sizeof(kiln_ring) == 640, "shared layout");
#else
_Static_assert(sizeof(kiln_rec) == 32 && sizeof(kiln_ring) == 640, "shared layout");
#endif

/* Producer handle: local (never shared) state of the one producer. */
typedef struct kiln_ring_prod {
  kiln_ring *ring;
  uint8_t *data;
  uint64_t cap, mask;
  uint64_t tail;       /* local: bytes committed (published or not) */
  uint64_t pub;        /* last tail published */
  uint64_t head_cache; /* last head read from the consumer */
  uint64_t acq;        /* position of the outstanding acquired slot */
  uint64_t acq_span;   /* its span in bytes; 0: none outstanding */
  uint32_t batch;      /* publish every `batch` commits (>= 1) */
  uint32_t pending;    /* commits since the last publish */
  uint32_t wake;       /* KILN_RING_FLAG_WAKE copied at attach */
  int err;             /* sticky: KILN_ECORRUPT once the consumer's counter was found impossible */
  uint64_t key;        /* commit-word key copied at attach */
} kiln_ring_prod;

/* Consumer handle. Records handed out by peek stay valid until released. */
typedef struct kiln_ring_cons {
  kiln_ring *ring;
  const uint8_t *data;
  uint64_t cap, mask;
  uint64_t head;       /* local: bytes released (published or not) */
  uint64_t pub;        /* last head published */
  uint64_t rd;         /* position after the last record handed out (>= head) */
  uint64_t tail_cache; /* last tail read from the producer */
  uint32_t batch;      /* publish every `batch` releases (>= 1) */
  uint32_t pending;
  uint32_t wake;
  int err;             /* sticky KILN_ECORRUPT */
  uint32_t last_size;  /* payload size of the last record handed out, as checked: with an untrusted peer use this,
                          not rec->size, which the peer can change after the check */
  uint64_t key;        /* commit-word key copied at attach */
} kiln_ring_cons;

/* ------------------------------------------------------------------------------------------------ sizes */
KILN_RING_FN uint64_t kiln_rec_span(uint64_t size) {
  return (sizeof(kiln_rec) + size + (KILN_REC_ALIGN - 1)) & ~(uint64_t)(KILN_REC_ALIGN - 1);
}
/* Payload of a record. */
KILN_RING_FN void *kiln_rec_data(const kiln_rec *r) { return (void *)(r + 1); }
/* Bytes needed for a ring of capacity `cap` (control block + data). */
KILN_RING_FN uint64_t kiln_ring_bytes(uint64_t cap) { return sizeof(kiln_ring) + cap; }
/* Largest payload a ring of capacity `cap` accepts. */
KILN_RING_FN uint64_t kiln_ring_max_payload(uint64_t cap) { return cap - sizeof(kiln_rec); }
KILN_RING_FN int kiln_ring_cap_ok(uint64_t cap) {
  return cap >= KILN_RING_MIN_CAP && cap <= KILN_RING_MAX_CAP && (cap & (cap - 1)) == 0;
}
KILN_RING_FN uint8_t *kiln_ring__data(kiln_ring *r) { return (uint8_t *)(r + 1); }

/* A per-ring key for commit words: distinct for rings made at different places or times (not a secret). */
KILN_RING_FN uint64_t kiln_ring__make_key(const void *where, uint64_t cap) {
  uint64_t x = (uint64_t)(uintptr_t)where ^ (cap << 17);
#if defined(__CUDA_ARCH__)
  x ^= (uint64_t)clock64();
#else
  struct timespec ts;
  timespec_get(&ts, TIME_UTC);
  x ^= (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec;
#endif
  /* splitmix64 finaliser */
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* Initialises a ring in `mem` (kiln_ring_bytes(cap) bytes, 128-byte aligned): empty, counters at 0. Call before
 * any handle attaches. KILN_EINVAL for a bad capacity. */
KILN_RING_FN int kiln_ring_init(kiln_ring *r, uint64_t cap, uint32_t flags) {
  if (!kiln_ring_cap_ok(cap)) return KILN_EINVAL;
  kiln_ring__st_rlx(&r->tail, 0);
  kiln_ring__st_rlx(&r->head, 0);
  kiln_ring__st32_rlx(&r->cons_sleeping, 0);
  kiln_ring__st32_rlx(&r->prod_sleeping, 0);
  r->magic = KILN_RING_MAGIC;
  r->version = KILN_RING_VERSION;
  r->flags = flags;
  r->cap = cap;
  r->key = kiln_ring__make_key(r, cap);
  /* Orders the initialisation before whatever hands the ring to another thread (a flag, a socket message). */
  kiln_ring__fence_rel();
  return KILN_OK;
}

/* Checks the control block against what the attaching side was told (cap) and that the counters are plausible. */
KILN_RING_FN int kiln_ring__check(kiln_ring *r, uint64_t cap) {
  if (r->magic != KILN_RING_MAGIC || r->version != KILN_RING_VERSION || r->cap != cap || !kiln_ring_cap_ok(cap))
    return KILN_ECORRUPT;
  return KILN_OK;
}

/* Attaches the producer. `cap` must be the capacity the caller trusts (it created the ring or read it from a
 * validated handshake); the control block must agree. `batch` <= 1 publishes every commit. Picks up the counters
 * as they are, so a replacement producer continues where a dead one stopped. */
KILN_RING_FN int kiln_ring_prod_attach(kiln_ring_prod *p, kiln_ring *r, uint64_t cap, uint32_t batch) {
  if (kiln_ring__check(r, cap) != KILN_OK) return KILN_ECORRUPT;
  p->ring = r;
  p->data = kiln_ring__data(r);
  p->cap = cap;
  p->mask = cap - 1;
  /* Acquire: the producer's view of what the consumer released pairs with the consumer's release-store of head. */
  uint64_t h = kiln_ring__ld_acq(&r->head);
  uint64_t t = kiln_ring__ld_rlx(&r->tail);
  if (t - h > cap || ((t | h) & (KILN_REC_ALIGN - 1)) != 0) return KILN_ECORRUPT;
  p->tail = p->pub = t;
  p->head_cache = h;
  p->acq = 0;
  p->acq_span = 0;
  p->batch = batch > 1 ? batch : 1;
  p->pending = 0;
  p->wake = r->flags & KILN_RING_FLAG_WAKE;
  p->err = KILN_OK;
  p->key = r->key;
  return KILN_OK;
}

KILN_RING_FN int kiln_ring_cons_attach(kiln_ring_cons *c, kiln_ring *r, uint64_t cap, uint32_t batch) {
  if (kiln_ring__check(r, cap) != KILN_OK) return KILN_ECORRUPT;
  c->ring = r;
  c->data = kiln_ring__data(r);
  c->cap = cap;
  c->mask = cap - 1;
  uint64_t h = kiln_ring__ld_rlx(&r->head);
  /* Acquire: records below tail were written before the producer's release-store of tail. */
  uint64_t t = kiln_ring__ld_acq(&r->tail);
  if (t - h > cap || ((t | h) & (KILN_REC_ALIGN - 1)) != 0) return KILN_ECORRUPT;
  c->head = c->pub = c->rd = h;
  c->tail_cache = t;
  c->batch = batch > 1 ? batch : 1;
  c->pending = 0;
  c->wake = r->flags & KILN_RING_FLAG_WAKE;
  c->err = KILN_OK;
  c->last_size = 0;
  c->key = r->key;
  return KILN_OK;
}

/* Implemented in src/ring/ring_wait.c (host only): futex wake of a sleeping peer. */
void kiln_ring__wake(KILN_RING_ATOMIC(uint64_t) *word);

/* ------------------------------------------------------------------------------------------------ producer */

/* Publishes committed records: one release-store of tail. If peers may sleep, a full fence then orders that store
 * before the load of the consumer's sleep flag; the consumer raises its flag, fences, then re-reads tail before it
 * sleeps, so at least one of the two sees the other (no lost wake-up; the futex value check covers the window
 * between the consumer's re-read and its sleep). */
KILN_RING_FN void kiln_ring__publish_tail(kiln_ring_prod *p) {
  kiln_ring *r = p->ring;
  /* Release: the record bytes and headers written before this store are visible to whoever acquires tail. */
  kiln_ring__st_rel(&r->tail, p->tail);
  p->pub = p->tail;
  p->pending = 0;
#if !defined(__CUDA_ARCH__)
  if (p->wake) {
    /* Full fence: orders the tail store above before the sleep-flag load below (store->load needs seq_cst). */
    kiln_ring__fence_sc();
    if (kiln_ring__ld32_rlx(&r->cons_sleeping)) kiln_ring__wake(&r->tail);
  }
#endif
}

/* Publishes every committed record now. */
KILN_RING_FN void kiln_ring_flush(kiln_ring_prod *p) {
  if (p->tail != p->pub) kiln_ring__publish_tail(p);
}

/* Free bytes the producer can count on without re-reading head. */
KILN_RING_FN uint64_t kiln_ring__room(const kiln_ring_prod *p) { return p->cap - (p->tail - p->head_cache); }

/* Re-reads head (acquire: pairs with the consumer's release-store, so the consumer's reads of those bytes are done
 * before we overwrite them) and checks it: it may only move forward and never past what we committed (a consumer
 * may read committed records by their commit words before the tail is published). */
KILN_RING_FN int kiln_ring__refresh_head(kiln_ring_prod *p) {
  uint64_t h = kiln_ring__ld_acq(&p->ring->head);
  if (KILN_RING_UNLIKELY(h - p->head_cache > p->tail - p->head_cache || (h & (KILN_REC_ALIGN - 1)) != 0))
    return p->err = KILN_ECORRUPT;
  p->head_cache = h;
  return KILN_OK;
}

/* Acquires a slot for a payload of `size` bytes. On success *out points at the record header: write the payload
 * at kiln_rec_data(*out), optionally the type/corr/stamp fields (or pass them to commit), then commit. Returns
 * KILN_EAGAIN when the ring is full (all committed records are published first), KILN_ERANGE when the record can
 * never fit, KILN_EBUSY when a slot is already outstanding, KILN_ECORRUPT when the consumer's counter is impossible.
 */
KILN_RING_FN int kiln_ring_acquire(kiln_ring_prod *p, uint64_t size, kiln_rec **out) {
  if (KILN_RING_UNLIKELY(p->err)) return p->err;
  if (KILN_RING_UNLIKELY(p->acq_span)) return KILN_EBUSY;
  uint64_t span = kiln_rec_span(size);
  if (KILN_RING_UNLIKELY(size > kiln_ring_max_payload(p->cap))) return KILN_ERANGE;
  uint64_t off = p->tail & p->mask;
  uint64_t to_end = p->cap - off;
  if (KILN_RING_UNLIKELY(span > to_end)) {
    /* A record never wraps: it needs a skip marker over the to_end bytes left first. The marker is committed as
     * soon as it fits, even if the record then does not: once the consumer passes it, the whole ring is free, so
     * a record of any span up to cap eventually fits. */
    if (kiln_ring__room(p) < to_end && (kiln_ring__refresh_head(p) != KILN_OK || kiln_ring__room(p) < to_end)) {
      if (p->err) return p->err;
      kiln_ring_flush(p); /* never hold a batch while reporting full */
      return KILN_EAGAIN;
    }
    kiln_rec *skip = (kiln_rec *)(p->data + off);
    skip->size = (uint32_t)(to_end - sizeof(kiln_rec));
    skip->type = KILN_REC_SKIP;
    skip->corr = 0;
    skip->stamp = 0;
    /* Release: the marker's fields before its commit word (a consumer may poll it). */
    kiln_ring__st_rel(&skip->commit, p->tail ^ p->key);
    p->tail += to_end; /* committed locally; published with the next publish */
    off = 0;
  }
  if (KILN_RING_UNLIKELY(kiln_ring__room(p) < span)) {
    if (kiln_ring__refresh_head(p) != KILN_OK) return p->err;
    if (kiln_ring__room(p) < span) {
      /* Full: publish what we have so the consumer can drain it (never hold a batch while reporting full). */
      kiln_ring_flush(p);
      return KILN_EAGAIN;
    }
  }
  kiln_rec *rec = (kiln_rec *)(p->data + off);
  rec->size = (uint32_t)size;
  rec->type = 0;
  rec->corr = 0;
  rec->stamp = 0;
  p->acq = p->tail;
  p->acq_span = span;
  *out = rec;
  return KILN_OK;
}

/* Commits the outstanding slot with payload `size` (<= the size acquired: a slot may be acquired large and
 * committed smaller) and the given type (not KILN_REC_SKIP) and correlation id. Publishes when the batch is full or
 * half the ring is pending. */
KILN_RING_FN int kiln_ring_commit(kiln_ring_prod *p, kiln_rec *rec, uint64_t size, uint32_t type, uint64_t corr) {
  if (KILN_RING_UNLIKELY(!p->acq_span || rec != (kiln_rec *)(p->data + (p->acq & p->mask)))) return KILN_EINVAL;
  uint64_t span = kiln_rec_span(size);
  if (KILN_RING_UNLIKELY(span > p->acq_span || type == KILN_REC_SKIP)) return KILN_EINVAL;
  rec->size = (uint32_t)size;
  rec->type = type;
  rec->corr = corr;
  /* Release: payload and header fields before the commit word; a consumer that acquires the word sees them all. */
  kiln_ring__st_rel(&rec->commit, p->acq ^ p->key);
  p->tail = p->acq + span;
  p->acq_span = 0;
  if (++p->pending >= p->batch || p->tail - p->pub >= p->cap / 2) kiln_ring__publish_tail(p);
  return KILN_OK;
}

/* Drops the outstanding slot without committing it. */
KILN_RING_FN void kiln_ring_abort(kiln_ring_prod *p) { p->acq_span = 0; }

/* Copies `size` bytes into a new record and commits it (the copying convenience). */
KILN_RING_FN int kiln_ring_push(kiln_ring_prod *p, const void *src, uint64_t size, uint32_t type, uint64_t corr) {
  kiln_rec *rec;
  int rc = kiln_ring_acquire(p, size, &rec);
  if (rc != KILN_OK) return rc;
  uint8_t *dst = (uint8_t *)kiln_rec_data(rec);
  const uint8_t *s = (const uint8_t *)src;
#if defined(__CUDA_ARCH__)
  for (uint64_t i = 0; i < size; i++) dst[i] = s[i];
#else
  if (size > 0) __builtin_memcpy(dst, s, size); /* an empty record may come with src == NULL */
#endif
  return kiln_ring_commit(p, rec, size, type, corr);
}

/* ------------------------------------------------------------------------------------------------ consumer */

/* Publishes released bytes (release-store of head: our reads of those records happen before the producer can
 * reuse their bytes), then, if the producer may sleep, wakes it (same Dekker pattern as the tail). */
KILN_RING_FN void kiln_ring__publish_head(kiln_ring_cons *c) {
  kiln_ring *r = c->ring;
  kiln_ring__st_rel(&r->head, c->head);
  c->pub = c->head;
  c->pending = 0;
#if !defined(__CUDA_ARCH__)
  if (c->wake) {
    /* Full fence: orders the head store before the producer's sleep-flag load. */
    kiln_ring__fence_sc();
    if (kiln_ring__ld32_rlx(&r->prod_sleeping)) kiln_ring__wake(&r->head);
  }
#endif
}

KILN_RING_FN void kiln_ring_cons_flush(kiln_ring_cons *c) {
  if (c->head != c->pub) kiln_ring__publish_head(c);
}

/* Re-reads tail (acquire: pairs with the producer's release-store, so the records below it are fully written) and
 * checks it: forward only, never more than cap ahead of the head we published. */
KILN_RING_FN int kiln_ring__refresh_tail(kiln_ring_cons *c) {
  uint64_t t = kiln_ring__ld_acq(&c->ring->tail);
  if (KILN_RING_UNLIKELY(t - c->tail_cache > c->pub + c->cap - c->tail_cache || (t & (KILN_REC_ALIGN - 1)) != 0))
    return c->err = KILN_ECORRUPT;
  c->tail_cache = t;
  return KILN_OK;
}

/* Hands out the next record after those already handed out (it stays valid until released). KILN_EAGAIN when
 * there is none (released bytes are published first), KILN_ECORRUPT for an impossible header or counter. */
KILN_RING_FN int kiln_ring_peek(kiln_ring_cons *c, const kiln_rec **out) {
  if (KILN_RING_UNLIKELY(c->err)) return c->err;
  for (;;) {
    uint64_t off = c->rd & c->mask, to_end = c->cap - off;
    kiln_rec *rec = (kiln_rec *)(uintptr_t)(c->data + off);
    uint64_t want = c->rd ^ c->key, limit;
    if ((int64_t)(c->tail_cache - c->rd) > 0) {
      /* Published: the acquire of tail ordered the record before us; its commit word must be there. */
      if (KILN_RING_UNLIKELY(kiln_ring__ld_rlx(&rec->commit) != want)) return c->err = KILN_ECORRUPT;
      limit = c->tail_cache;
    } else {
      /* Past the published tail: acquire the commit word (pairs with the release-store in commit). */
      if (kiln_ring__ld_acq(&rec->commit) != want) {
        if (kiln_ring__refresh_tail(c) != KILN_OK) return c->err;
        if ((int64_t)(c->tail_cache - c->rd) > 0) continue; /* published meanwhile: take the checked path */
        kiln_ring_cons_flush(c); /* never hold released bytes while reporting empty */
        return KILN_EAGAIN;
      }
      limit = c->pub + c->cap; /* the producer cannot have written at or past our published head + cap */
    }
    const volatile kiln_rec *vrec = (const volatile kiln_rec *)rec;
    /* Read each field exactly once (volatile: the compiler may not re-load it from memory a hostile peer can
     * change), so the checks below hold for the values we act on. */
    uint32_t size = vrec->size, type = vrec->type;
    uint64_t span = kiln_rec_span(size);
    if (KILN_RING_UNLIKELY(span > limit - c->rd || span > to_end)) return c->err = KILN_ECORRUPT;
    if (type == KILN_REC_SKIP) {
      if (KILN_RING_UNLIKELY(span != to_end)) return c->err = KILN_ECORRUPT;
      /* Skip markers are not handed out; release one at once when nothing before it is outstanding. */
      if (c->head == c->rd) c->head += span;
      c->rd += span;
      continue;
    }
    c->rd += span;
    c->last_size = size;
#if !defined(__CUDA_ARCH__)
    /* Each header's size gives the next header's address, so a stream of records is a chain of dependent cache
     * misses. Break it: prefetch the header 4 records ahead assuming this span, but only inside the published
     * tail (lines the producer has finished: fetching a line it is still writing would slow it down). */
    if ((int64_t)(c->tail_cache - c->rd) > (int64_t)(4 * span))
      __builtin_prefetch(c->data + ((c->rd + 4 * span) & c->mask), 0, 3);
#endif
    *out = rec;
    return KILN_OK;
  }
}

/* Is a record ready at rd (published, or committed and showing its commit word)? For wait loops: one load of the
 * word the producer writes last, so polling it moves one cache line per record. */
KILN_RING_FN int kiln_ring__ready(const kiln_ring_cons *c) {
  if ((int64_t)(c->tail_cache - c->rd) > 0) return 1;
  kiln_rec *rec = (kiln_rec *)(uintptr_t)(c->data + (c->rd & c->mask));
  return kiln_ring__ld_rlx(&rec->commit) == (c->rd ^ c->key);
}

/* Hands out up to `k` records as views; returns how many (0 when empty) or a negative status. */
KILN_RING_FN int64_t kiln_ring_peek_batch(kiln_ring_cons *c, const kiln_rec **views, int64_t k) {
  int64_t n = 0;
  while (n < k) {
    int rc = kiln_ring_peek(c, &views[n]);
    if (rc == KILN_EAGAIN) break;
    if (rc != KILN_OK) return rc;
    n++;
  }
  return n;
}

/* Hands out a run: up to `max` records that follow each other in memory with the same payload size (one strided
 * view of n records, kiln_rec_span(size) bytes apart). *first is the first record and *size_out the payload size as
 * checked (use it, not the header, which a hostile peer could change afterwards). Returns n >= 1, 0 when the ring
 * is empty, or a negative status. A run never crosses the wrap. */
KILN_RING_FN int64_t kiln_ring_peek_run(kiln_ring_cons *c, int64_t max, const kiln_rec **first, uint32_t *size_out) {
  const kiln_rec *r0;
  int rc = kiln_ring_peek(c, &r0);
  if (rc == KILN_EAGAIN) return 0;
  if (rc != KILN_OK) return rc;
  /* The first record's span as peek validated it (rd moved by exactly that much); its size must agree. */
  uint64_t span = c->rd - (c->head + (((uint64_t)((const uint8_t *)r0 - c->data) - c->head) & c->mask));
  uint32_t size = ((const volatile kiln_rec *)r0)->size;
  if (kiln_rec_span(size) != span) return c->err = KILN_ECORRUPT;
  int64_t n = 1;
  while (n < max) {
    uint64_t rd = c->rd, head = c->head;
    const kiln_rec *r;
    rc = kiln_ring_peek(c, &r);
    if (rc == KILN_EAGAIN) break;
    if (rc != KILN_OK) return rc;
    if ((const uint8_t *)r != (const uint8_t *)r0 + (uint64_t)n * span || c->rd - rd != span ||
        ((const volatile kiln_rec *)r)->size != size) {
      c->rd = rd; /* not part of the run: hand it back (rd and head are ours alone) */
      c->head = head;
      break;
    }
    n++;
  }
  *first = r0;
  *size_out = size;
  return n;
}

/* Advances head to `to` (a position at or before rd) and publishes when due. */
KILN_RING_FN void kiln_ring__release_to(kiln_ring_cons *c, uint64_t to) {
  c->head = to;
  if (++c->pending >= c->batch || c->head - c->pub >= c->cap / 2) kiln_ring__publish_head(c);
}

/* Releases every record handed out so far. */
KILN_RING_FN void kiln_ring_release(kiln_ring_cons *c) {
  if (c->head != c->rd) kiln_ring__release_to(c, c->rd);
}

/* Releases the records handed out up to and including `rec` (which must be one of them). The position comes from
 * our own bookkeeping (rec's offset), not from shared memory; KILN_EINVAL for a pointer that is not outstanding. */
KILN_RING_FN int kiln_ring_release_upto(kiln_ring_cons *c, const kiln_rec *rec) {
  uint64_t off = (uint64_t)((const uint8_t *)rec - c->data);
  if (off >= c->cap || (off & (KILN_REC_ALIGN - 1))) return KILN_EINVAL;
  uint64_t pos = c->head + ((off - c->head) & c->mask);
  if (pos >= c->rd) return KILN_EINVAL;
  /* The record's end: the next record's start. Its size is re-read, so re-check it against rd. */
  uint64_t end = pos + kiln_rec_span(((const volatile kiln_rec *)rec)->size);
  if (end > c->rd || end <= pos) return c->err = KILN_ECORRUPT;
  kiln_ring__release_to(c, end);
  return KILN_OK;
}

/* Bytes committed and visible but not yet handed out, as far as the cache knows (a hint, never a promise). */
KILN_RING_FN uint64_t kiln_ring_readable_hint(const kiln_ring_cons *c) {
  return (int64_t)(c->tail_cache - c->rd) > 0 ? c->tail_cache - c->rd : 0;
}

/* ------------------------------------------------------------------------------------------------ fan-in (MPSC) */

/* Many producers, one consumer: a set of SPSC rings (one per producer) polled round-robin. Each ring yields at most
 * `quantum` records per turn before the next ring gets its turn, so no producer can starve another. The caller owns
 * the array of consumer handles. */
typedef struct kiln_ring_fanin {
  kiln_ring_cons *cons; /* n consumer handles, each attached to one producer's ring */
  uint32_t n;
  uint32_t cur;     /* ring whose turn it is */
  uint32_t quantum; /* records per turn (>= 1) */
  uint32_t taken;   /* records taken from `cur` in this turn */
} kiln_ring_fanin;

KILN_RING_FN void kiln_ring_fanin_init(kiln_ring_fanin *f, kiln_ring_cons *cons, uint32_t n, uint32_t quantum) {
  f->cons = cons;
  f->n = n;
  f->cur = 0;
  f->quantum = quantum > 1 ? quantum : 1;
  f->taken = 0;
}

/* Hands out the next record from the ring whose turn it is; *which says the ring. KILN_EAGAIN when all rings are
 * empty; a corrupt ring returns KILN_ECORRUPT with *which set (the caller may drop that ring and go on). */
KILN_RING_FN int kiln_ring_fanin_peek(kiln_ring_fanin *f, const kiln_rec **out, uint32_t *which) {
  for (uint32_t tried = 0; tried <= f->n && f->n; tried++) {
    if (f->taken >= f->quantum) {
      f->cur = f->cur + 1 == f->n ? 0 : f->cur + 1;
      f->taken = 0;
    }
    kiln_ring_cons *c = &f->cons[f->cur];
    int rc = c->ring ? kiln_ring_peek(c, out) : KILN_EAGAIN;
    if (rc == KILN_OK) {
      f->taken++;
      *which = f->cur;
      return KILN_OK;
    }
    if (rc != KILN_EAGAIN) {
      *which = f->cur;
      f->taken = f->quantum; /* move on next time */
      return rc;
    }
    f->taken = f->quantum; /* empty: give the turn away */
  }
  return KILN_EAGAIN;
}

/* ------------------------------------------------------------------------------------------------ waiting (host) */
#if !defined(__CUDA_ARCH__)
/* Wait until the consumer has a record to read (or the ring is corrupt), spinning `spin` iterations first and then
 * sleeping on a futex; timeout_ns < 0 waits forever. Released bytes are published before sleeping. Returns KILN_OK
 * (something is readable), KILN_ETIMEDOUT, or KILN_ECORRUPT. */
int kiln_ring_wait_readable(kiln_ring_cons *c, int64_t spin, int64_t timeout_ns);
/* Wait until `size` bytes of payload can be acquired; committed records are published before sleeping. */
int kiln_ring_wait_writable(kiln_ring_prod *p, uint64_t size, int64_t spin, int64_t timeout_ns);
#endif

#ifdef __cplusplus
}
#endif
#endif /* KILN_RING_H */
