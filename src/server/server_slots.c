/*
 * server/server_slots.c: request slots (a pair of SPSC rings each), their reference counts, and the doorbell that
 * wakes the engine thread.
 *
 * Claiming is lock-free: a compare-and-swap of `busy` from 0 to 1, starting at a rotating hint so that slots are
 * reused evenly. All slots busy means the queue is full (the caller answers 503).
 *
 * The doorbell is a futex word. A connection publishes its record on the slot's in-ring (release-store of the ring's
 * tail), then bumps `bell` and reads `engine_asleep` (both seq_cst). The engine reads `bell`, polls every in-ring,
 * and if they are all empty raises `engine_asleep` (seq_cst) and sleeps with FUTEX_WAIT on the value of `bell` it
 * read before polling. Either the connection sees the flag and wakes it, or its bump precedes the flag store in the
 * single seq_cst order, in which case the futex value check fails and the engine does not sleep; and a bump that
 * preceded the engine's first read of `bell` was preceded by the record's publication, which that read (acquire)
 * makes visible to the poll. No wake-up is lost.
 */
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "kiln/status.h"
#include "server/server_impl.h"

double srv_now(void) { return (double)kiln_mono_ns() * 1e-9; }

static kiln_ring *ring_new(uint64_t cap, uint32_t flags) {
  void *mem = NULL;
  if (posix_memalign(&mem, 128, (size_t)kiln_ring_bytes(cap)) != 0) return NULL;
  memset(mem, 0, (size_t)kiln_ring_bytes(cap));
  if (kiln_ring_init((kiln_ring *)mem, cap, flags) != KILN_OK) {
    free(mem);
    return NULL;
  }
  return (kiln_ring *)mem;
}

int srv_slots_init(struct kiln_server *s) {
  int n = s->n_slots;
  s->slots = calloc((size_t)n, sizeof *s->slots);
  s->in_cons = calloc((size_t)n, sizeof *s->in_cons);
  if (!s->slots || !s->in_cons) return kiln_error(KILN_ENOMEM, "server: out of memory for %d request slots", n);
  for (int i = 0; i < n; i++) {
    srv_slot *sl = &s->slots[i];
    sl->index = (uint32_t)i;
    /* The engine polls in-rings and sleeps on the doorbell, so they need no wake flag; connections sleep on their
     * out-ring, so the engine's publications there check the consumer's sleep flag. */
    sl->in = ring_new(SRV_IN_RING_CAP, 0);
    sl->out = ring_new(SRV_OUT_RING_CAP, KILN_RING_FLAG_WAKE);
    if (!sl->in || !sl->out) return kiln_error(KILN_ENOMEM, "server: out of memory for request rings");
    if (kiln_ring_prod_attach(&sl->in_prod, sl->in, SRV_IN_RING_CAP, 1) ||
        kiln_ring_cons_attach(&s->in_cons[i], sl->in, SRV_IN_RING_CAP, 1) ||
        kiln_ring_prod_attach(&sl->out_prod, sl->out, SRV_OUT_RING_CAP, 1) ||
        kiln_ring_cons_attach(&sl->out_cons, sl->out, SRV_OUT_RING_CAP, 1))
      return kiln_error(KILN_ECORRUPT, "server: cannot attach request rings");
  }
  /* One record per slot per turn: a chatty connection (submit, then cancel) cannot delay another's submit. */
  kiln_ring_fanin_init(&s->fanin, s->in_cons, (uint32_t)n, 1);
  return KILN_OK;
}

void srv_slots_free(struct kiln_server *s) {
  if (s->slots) {
    for (int i = 0; i < s->n_slots; i++) {
      srv_job_free(s->slots[i].job);
      free(s->slots[i].in);
      free(s->slots[i].out);
    }
  }
  free(s->slots);
  free(s->in_cons);
  s->slots = NULL;
  s->in_cons = NULL;
}

void srv_job_free(srv_job *j) {
  if (!j) return;
  if (j->tasks) {
    for (int i = 0; i < j->n_tasks; i++) {
      free(j->tasks[i].prompt_lp);
      free(j->tasks[i].outbox);
    }
  }
  free(j->tasks);
  free(j->ids);
  free(j->stops);
  free(j);
}

srv_slot *srv_slot_claim(struct kiln_server *s) {
  uint32_t n = (uint32_t)s->n_slots;
  uint32_t start = atomic_fetch_add_explicit(&s->slot_hint, 1, memory_order_relaxed);
  for (uint32_t k = 0; k < n; k++) {
    srv_slot *sl = &s->slots[(start + k) % n];
    int expect = 0;
    /* Acquire: pairs with the release in srv_slot_release, so the previous holders' use of the slot's connection
     * side handles and job happens before ours. */
    if (atomic_load_explicit(&sl->busy, memory_order_relaxed) == 0 &&
        atomic_compare_exchange_strong_explicit(&sl->busy, &expect, 1, memory_order_acquire,
                                                memory_order_relaxed)) {
      /* Drop what an abandoned request left in the out-ring (the engine has released the slot, so it no longer
       * writes there). */
      const kiln_rec *rec;
      while (kiln_ring_peek(&sl->out_cons, &rec) == KILN_OK) kiln_ring_release(&sl->out_cons);
      kiln_ring_cons_flush(&sl->out_cons);
      atomic_store_explicit(&sl->refs, 1, memory_order_relaxed);
      sl->job = NULL;
      return sl;
    }
  }
  return NULL;
}

void srv_slot_release(struct kiln_server *s, srv_slot *sl) {
  (void)s;
  /* acq_rel: the last owner must see everything the other owner did with the job before freeing it. */
  if (atomic_fetch_sub_explicit(&sl->refs, 1, memory_order_acq_rel) != 1) return;
  srv_job_free(sl->job);
  sl->job = NULL;
  /* Release: the frees above and our use of the slot happen before the next claim's acquire. */
  atomic_store_explicit(&sl->busy, 0, memory_order_release);
}

void srv_bell_ring(struct kiln_server *s) {
  /* seq_cst RMW, then seq_cst load: see the file comment for why no wake-up is lost. */
  atomic_fetch_add_explicit(&s->bell, 1, memory_order_seq_cst);
  if (atomic_load_explicit(&s->engine_asleep, memory_order_seq_cst))
    syscall(SYS_futex, (uint32_t *)&s->bell, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

void srv_bell_wait(struct kiln_server *s, uint32_t bell_seen, int timeout_ms) {
  atomic_store_explicit(&s->engine_asleep, 1, memory_order_seq_cst);
  if (atomic_load_explicit(&s->bell, memory_order_seq_cst) == bell_seen) {
    struct timespec ts = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L};
    syscall(SYS_futex, (uint32_t *)&s->bell, FUTEX_WAIT_PRIVATE, bell_seen, timeout_ms >= 0 ? &ts : NULL, NULL, 0);
  }
  atomic_store_explicit(&s->engine_asleep, 0, memory_order_relaxed);
}

int srv_slot_send(struct kiln_server *s, srv_slot *sl, uint32_t type, const void *payload, size_t size) {
  static const char none = 0; /* an empty payload still needs a valid pointer for the copy */
  if (!payload) payload = &none;
  uint64_t corr = sl->job ? sl->job->id : 0;
  int rc = kiln_ring_push(&sl->in_prod, payload, size, type, corr);
  if (rc == KILN_EAGAIN) {
    /* The engine drains in-rings on every turn; a full one means it is busy in a long step. Wait for room. */
    rc = kiln_ring_wait_writable(&sl->in_prod, size, 0, 2000000000LL);
    if (rc == KILN_OK) rc = kiln_ring_push(&sl->in_prod, payload, size, type, corr);
  }
  if (rc == KILN_OK) kiln_ring_flush(&sl->in_prod);
  srv_bell_ring(s);
  return rc;
}
