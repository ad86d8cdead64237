/*
 * Sleeping on a ring (Linux): bounded spin, a few yields, then a futex wait on the low 32 bits of the peer's counter.
 *
 * No lost wake-up. The sleeper raises its own sleep flag, issues a full fence, re-reads the peer's counter and only
 * then sleeps with FUTEX_WAIT on the 32-bit value it just read. The publisher stores its counter (release), issues
 * a full fence and reads the flag (kiln_ring__publish_tail/head). With both fences, the two stores cannot both be
 * missed by the two loads (store-buffering litmus test): either the sleeper sees the new counter and does not
 * sleep, or the publisher sees the flag and wakes. If the wake comes between the sleeper's re-read and its
 * FUTEX_WAIT, the kernel's check of the futex word against the value read (done atomically with queueing the
 * sleeper) fails with EAGAIN, because the counter already moved. The word is unambiguous: while we sleep our own
 * counter is fixed, so the peer's can move at most cap < 2^32 bytes past the value we read. A consumer also
 * checks the commit word at its read position (kiln/ring.h) before it sleeps: a committed but unpublished record
 * is read without waiting for the batch.
 *
 * The futex is shared (no FUTEX_PRIVATE_FLAG) because rings live in memory shared between processes. Rings whose
 * publishers do not check the flags (no KILN_RING_FLAG_WAKE) cannot be slept on; waiting on them backs off with
 * short sleeps instead.
 */
#include "kiln/ring.h"

#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/cpu_relax.h"

/* After spinning, a few sched_yield() rounds before sleeping: cheap when the peer is about to run on our CPU. */
#define YIELDS_ 16
/* Spin turns without a pause instruction (a few microseconds) before pausing between turns. */
#define QUIET_SPIN_ 4096
/* While spinning, yield every 1024 turns: when the peer shares our CPU (an oversubscribed machine), spinning out the
 * whole budget before letting it run costs a time slice per hand-off; when it does not, a yield is a cheap no-op. */
#define YIELD_EVERY_ 1023

static uint32_t *low_word_(_Atomic uint64_t *word) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  return (uint32_t *)(void *)word;
#else
  return (uint32_t *)(void *)word + 1;
#endif
}

void kiln_ring__wake(_Atomic uint64_t *word) {
  /* One sleeper per side in SPSC; INT32_MAX costs nothing extra and is robust to a replaced peer. */
  syscall(SYS_futex, low_word_(word), FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
}

/* Sleeps until *word's low half differs from `seen` or `ns` passes (spurious returns are fine: callers re-check). */
static void futex_sleep_(_Atomic uint64_t *word, uint32_t seen, int64_t ns) {
  struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
  syscall(SYS_futex, low_word_(word), FUTEX_WAIT, seen, &ts, NULL, 0);
}

/* Without KILN_RING_FLAG_WAKE the publisher never looks at our flag: back off instead of sleeping. */
static void backoff_(int64_t ns) {
  struct timespec ts = {0, ns < 50000 ? (long)ns : 50000};
  nanosleep(&ts, NULL);
}

int kiln_ring_wait_readable(kiln_ring_cons *c, int64_t spin, int64_t timeout_ns) {
  if (c->err) return c->err;
  if (kiln_ring__ready(c)) return KILN_OK;
  /* Spin on the commit word of the record that will appear at rd: the producer writes it last, so one cache line
   * moves per record. The tail is re-read now and then (it also catches a corrupt ring). The first QUIET_SPIN_
   * turns do not pause: a pause costs tens of ns of reaction time, the whole budget of a round trip. */
  for (int64_t i = 0; i < spin; i++) {
    if (kiln_ring__ready(c)) return KILN_OK;
    if ((i & 63) == 63) {
      if (kiln_ring__refresh_tail(c) != KILN_OK) return c->err;
      if (kiln_ring__ready(c)) return KILN_OK;
      if ((i & YIELD_EVERY_) == YIELD_EVERY_) sched_yield();
    }
    if (i >= QUIET_SPIN_) kiln_cpu_relax();
  }
  /* The producer may be waiting for the bytes we released: publish them before we yield or sleep. */
  kiln_ring_cons_flush(c);
  int64_t deadline = timeout_ns >= 0 ? kiln_mono_ns() + timeout_ns : INT64_MAX; /* counted from the end of the spin */
  for (int i = 0;; i++) {
    if (kiln_ring__refresh_tail(c) != KILN_OK) return c->err;
    if (kiln_ring__ready(c)) return KILN_OK;
    if (i < YIELDS_) {
      sched_yield(); /* on an oversubscribed machine the producer may be waiting for our CPU */
      continue;
    }
    int64_t left = deadline - kiln_mono_ns();
    if (left <= 0) return KILN_ETIMEDOUT;
    if (!c->wake) {
      backoff_(left);
      continue;
    }
    kiln_ring *r = c->ring;
    kiln_ring__st32_rlx(&r->cons_sleeping, 1);
    /* Full fence: orders the flag store before the re-reads of tail and of the commit word (pairs with the fence
     * in publish_tail: a record committed after these reads is published, and we are woken, before the producer
     * sleeps or reports full, or at its next flush). */
    kiln_ring__fence_sc();
    uint64_t t = kiln_ring__ld_acq(&r->tail);
    if ((int64_t)(t - c->rd) <= 0 && !kiln_ring__ready(c)) futex_sleep_(&r->tail, (uint32_t)t, left);
    kiln_ring__st32_rlx(&r->cons_sleeping, 0);
  }
}

int kiln_ring_wait_writable(kiln_ring_prod *p, uint64_t size, int64_t spin, int64_t timeout_ns) {
  if (p->err) return p->err;
  if (size > kiln_ring_max_payload(p->cap)) return KILN_ERANGE;
  /* Worst case: a skip marker to the end plus the record. Waiting for that much room is never more than the ring
   * allows, because acquire commits the skip marker as soon as it fits (see kiln_ring_acquire): a caller loops
   * wait_writable + acquire until acquire succeeds. */
  uint64_t span = kiln_rec_span(size), to_end = p->cap - (p->tail & p->mask);
  uint64_t need = span <= to_end ? span : to_end;
  if (kiln_ring__room(p) >= need) return KILN_OK;
  for (int64_t i = 0; i < spin; i++) {
    if (kiln_ring__refresh_head(p) != KILN_OK) return p->err;
    if (kiln_ring__room(p) >= need) return KILN_OK;
    if ((i & YIELD_EVERY_) == YIELD_EVERY_) sched_yield();
    if (i >= QUIET_SPIN_) kiln_cpu_relax();
  }
  kiln_ring_flush(p); /* the consumer may be waiting for these records: publish before we yield or sleep */
  int64_t deadline = timeout_ns >= 0 ? kiln_mono_ns() + timeout_ns : INT64_MAX;
  for (int i = 0;; i++) {
    if (kiln_ring__refresh_head(p) != KILN_OK) return p->err;
    if (kiln_ring__room(p) >= need) return KILN_OK;
    if (i < YIELDS_) {
      sched_yield();
      continue;
    }
    int64_t left = deadline - kiln_mono_ns();
    if (left <= 0) return KILN_ETIMEDOUT;
    if (!p->wake) {
      backoff_(left);
      continue;
    }
    kiln_ring *r = p->ring;
    kiln_ring__st32_rlx(&r->prod_sleeping, 1);
    /* Full fence: orders the flag store before the head re-read (pairs with the fence in publish_head). */
    kiln_ring__fence_sc();
    uint64_t h = kiln_ring__ld_acq(&r->head);
    if (h == p->head_cache) futex_sleep_(&r->head, (uint32_t)h, left);
    kiln_ring__st32_rlx(&r->prod_sleeping, 0);
  }
}
