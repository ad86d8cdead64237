/*
 * Bus channels: the data path. Every call first tries the inline ring core; only when it reports full or empty
 * does it wait: spin, then futex sleeps of at most BUS_SLICE_NS, with a liveness check of the socket between
 * sleeps. A call with timeout 0 never waits; it checks liveness at most every 10 ms (coarse clock), so a caller
 * that only polls still learns that its peer died.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/cpu_relax.h"
#include "bus/bus_impl.h"

int bus__chan_attach(kiln_bus_chan *ch, void *seg, uint64_t seg_bytes, uint64_t cap, uint64_t off_tx,
                     uint64_t off_rx, const kiln_bus_opts *opts) {
  uint32_t batch = opts && opts->batch > 1 ? opts->batch : 1;
  /* Releases are published lazily (every 64, or half a ring, and always before a wait or an empty peek): the
   * producer needs our head only when its ring is full, and a store plus fence per release would sit on the
   * latency path of every round trip. */
  uint32_t rel_batch = batch > 64 ? batch : 64;
  ch->seg = seg;
  ch->seg_bytes = seg_bytes;
  ch->spin = opts && opts->spin >= 0 ? opts->spin : BUS_DEFAULT_SPIN;
  ch->next_corr = 0;
  ch->dead = 0;
  ch->reported = 0;
  ch->last_check_ns = bus__coarse_ns();
  if (kiln_ring_prod_attach(&ch->tx, (kiln_ring *)((uint8_t *)seg + off_tx), cap, batch) != KILN_OK ||
      kiln_ring_cons_attach(&ch->rx, (kiln_ring *)((uint8_t *)seg + off_rx), cap, rel_batch) != KILN_OK)
    return kiln_error(KILN_ECORRUPT, "bus: ring control block does not match the handshake");
  return KILN_OK;
}

void bus__chan_unmap(kiln_bus_chan *ch) {
  if (ch->seg) munmap(ch->seg, ch->seg_bytes);
  ch->seg = NULL;
}

void kiln_bus_chan_close(kiln_bus_chan *ch) {
  if (!ch) return;
  if (ch->fd >= 0) {
    if (!ch->dead) {
      kiln_ring_flush(&ch->tx);
      /* Say goodbye, so the peer reports KILN_ECLOSED rather than KILN_EPEERDEAD. */
      (void)send(ch->fd, "B", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    close(ch->fd);
  }
  bus__chan_unmap(ch);
  if (ch->bus && ch->slot < ch->bus->n_slots && ch->bus->slots[ch->slot] == ch) ch->bus->slots[ch->slot] = NULL;
  free(ch);
}

static int dead_(kiln_bus_chan *ch) {
  return kiln_error(ch->dead, ch->dead == KILN_ECLOSED ? "bus: peer (pid %d) closed the channel"
                                                      : "bus: peer (pid %d) died", (int)ch->peer_pid);
}

static int check_alive_(kiln_bus_chan *ch) {
  if (ch->dead) return dead_(ch);
  int rc = bus__sock_alive(ch->fd);
  if (rc != KILN_OK) {
    ch->dead = rc;
    return dead_(ch);
  }
  return KILN_OK;
}

int kiln_bus_alive(kiln_bus_chan *ch) { return check_alive_(ch); }

/* On a non-waiting path: a liveness check at most every 10 ms. */
static int maybe_check_(kiln_bus_chan *ch) {
  int64_t now = bus__coarse_ns();
  if (now - ch->last_check_ns < BUS_SLICE_NS) return KILN_OK;
  ch->last_check_ns = now;
  return check_alive_(ch);
}

static int ring_err_(kiln_bus_chan *ch, int rc, const char *which) {
  if (rc == KILN_ECORRUPT)
    return kiln_error(rc, "bus: %s ring corrupted (impossible index or record header from pid %d)", which,
                      (int)ch->peer_pid);
  return kiln_error(rc, "bus: %s ring: %s", which, kiln_strerror(rc));
}

/* Waits until readable (want_room == 0) or until `size` bytes fit, up to the absolute deadline (INT64_MAX: none). */
static int wait_(kiln_bus_chan *ch, int want_room, uint64_t size, int64_t deadline) {
  /* Duplex: whichever way we wait, the peer may be waiting on our other ring (a batched request not yet
   * published, releases it needs to make room): publish both before waiting. */
  kiln_ring_flush(&ch->tx);
  kiln_ring_cons_flush(&ch->rx);
  int64_t spin = ch->spin;
  for (;;) {
    int64_t left = deadline == INT64_MAX ? BUS_SLICE_NS : deadline - bus__now_ns();
    if (left < 0) left = 0;
    int64_t slice = left < BUS_SLICE_NS ? left : BUS_SLICE_NS;
    int rc = want_room ? kiln_ring_wait_writable(&ch->tx, size, spin, slice)
                       : kiln_ring_wait_readable(&ch->rx, spin, slice);
    spin = 0;
    if (rc == KILN_OK) return KILN_OK;
    if (rc != KILN_ETIMEDOUT) return ring_err_(ch, rc, want_room ? "outgoing" : "incoming");
    if (check_alive_(ch) != KILN_OK) {
      /* Records the peer published before it went are still delivered. */
      if (!want_room && kiln_ring_wait_readable(&ch->rx, 0, 0) == KILN_OK) return KILN_OK;
      return dead_(ch);
    }
    ch->last_check_ns = bus__coarse_ns();
    if (deadline != INT64_MAX && bus__now_ns() >= deadline) return KILN_ETIMEDOUT;
  }
}

/* The first part of a consuming wait, spun right here on the commit word with a pause per turn: without the pause
 * the loop keeps many loads of the polled line in flight, and the store that ends the wait costs a memory-order
 * pipeline flush on exit (32-byte round trip p50 190 -> 160 ns near, 630 -> 470 ns far; raw 120 / 450 ns). Short
 * (64 turns, about 2 us at ~28 ns per pause on the build VM): on an oversubscribed machine the peer may need our
 * CPU, and wait_ (the ring's wait) yields and sleeps. Once per call, so a peer that flips the word cannot keep a
 * call with a timeout spinning. Both rings are published first, as wait_ does (the peer may be waiting on either). */
#define BUS_FAST_SPIN 64
static int spin_ready_(kiln_bus_chan *ch) {
  kiln_ring_flush(&ch->tx);
  kiln_ring_cons_flush(&ch->rx);
  int64_t n = ch->spin < BUS_FAST_SPIN ? ch->spin : BUS_FAST_SPIN;
  for (int64_t i = 0; i < n; i++) {
    if (kiln_ring__ready(&ch->rx)) return 1;
    kiln_cpu_relax();
  }
  return 0;
}

static int64_t deadline_(int64_t timeout_ns) { return timeout_ns < 0 ? INT64_MAX : bus__now_ns() + timeout_ns; }

int kiln_bus_wait_readable(kiln_bus_chan *ch, int64_t timeout_ns) {
  if (kiln_ring__ready(&ch->rx)) return KILN_OK;
  if (ch->rx.err) return ring_err_(ch, ch->rx.err, "incoming");
  int64_t deadline = deadline_(timeout_ns);
  if (timeout_ns != 0 && spin_ready_(ch)) return KILN_OK;
  return wait_(ch, 0, 0, deadline);
}

int kiln_bus_wait_writable(kiln_bus_chan *ch, uint64_t size, int64_t timeout_ns) {
  if (ch->dead) return dead_(ch);
  return wait_(ch, 1, size, deadline_(timeout_ns));
}

int kiln_bus_acquire(kiln_bus_chan *ch, uint64_t size, kiln_rec **out, int64_t timeout_ns) {
  if (ch->dead) return dead_(ch);
  int64_t deadline = 0;
  for (;;) {
    int rc = kiln_ring_acquire(&ch->tx, size, out);
    if (rc == KILN_OK) return KILN_OK;
    if (rc == KILN_ERANGE)
      return kiln_error(rc, "bus: record of %llu bytes does not fit a ring of %llu", (unsigned long long)size,
                        (unsigned long long)ch->tx.cap);
    if (rc != KILN_EAGAIN) return ring_err_(ch, rc, "outgoing");
    if (timeout_ns == 0) {
      rc = maybe_check_(ch);
      return rc != KILN_OK ? rc : KILN_EAGAIN;
    }
    if (!deadline) deadline = deadline_(timeout_ns);
    rc = wait_(ch, 1, size, deadline);
    if (rc != KILN_OK) return rc;
  }
}

int kiln_bus_commit(kiln_bus_chan *ch, kiln_rec *rec, uint64_t size, uint32_t type, uint64_t corr) {
  int rc = kiln_ring_commit(&ch->tx, rec, size, type, corr);
  if (rc != KILN_OK) return kiln_error(rc, "bus: commit without a matching acquire, or bad size or type");
  return KILN_OK;
}

int kiln_bus_send(kiln_bus_chan *ch, const void *data, uint64_t size, uint32_t type, uint64_t corr,
                  int64_t timeout_ns) {
  kiln_rec *rec;
  int rc = kiln_bus_acquire(ch, size, &rec, timeout_ns);
  if (rc != KILN_OK) return rc;
  if (size) memcpy(kiln_rec_data(rec), data, size);
  return kiln_bus_commit(ch, rec, size, type, corr);
}

int kiln_bus_flush(kiln_bus_chan *ch) {
  kiln_ring_flush(&ch->tx);
  return ch->dead ? dead_(ch) : KILN_OK;
}

/* Shared shape of the consuming calls: try, and on empty either report (timeout 0) or wait and retry. */
#define CONSUME_(try_expr, empty_cond)                                                                      \
  int64_t deadline = 0;                                                                                     \
  for (;;) {                                                                                                \
    try_expr;                                                                                               \
    if (!(empty_cond)) break;                                                                               \
    if (timeout_ns == 0) {                                                                                  \
      int crc = ch->dead ? dead_(ch) : maybe_check_(ch);                                                    \
      return crc != KILN_OK ? crc : KILN_EAGAIN;                                                            \
    }                                                                                                       \
    if (!deadline) {                                                                                        \
      deadline = deadline_(timeout_ns);                                                                     \
      if (spin_ready_(ch)) continue;                                                                        \
    }                                                                                                       \
    int wrc = wait_(ch, 0, 0, deadline);                                                                    \
    if (wrc != KILN_OK) return wrc;                                                                         \
  }

int kiln_bus_peek(kiln_bus_chan *ch, const kiln_rec **out, int64_t timeout_ns) {
  int rc;
  CONSUME_(rc = kiln_ring_peek(&ch->rx, out), rc == KILN_EAGAIN)
  return rc == KILN_OK ? KILN_OK : ring_err_(ch, rc, "incoming");
}

int64_t kiln_bus_peek_batch(kiln_bus_chan *ch, const kiln_rec **views, int64_t k, int64_t timeout_ns) {
  if (k <= 0) return kiln_error(KILN_EINVAL, "bus: batch of %lld records", (long long)k);
  int64_t n;
  CONSUME_(n = kiln_ring_peek_batch(&ch->rx, views, k), n == 0)
  return n > 0 ? n : ring_err_(ch, (int)n, "incoming");
}

int kiln_bus_peek_run(kiln_bus_chan *ch, int64_t max, int64_t timeout_ns, uint64_t *offset, int64_t *n_out,
                      uint64_t *stride, uint64_t *size) {
  if (max <= 0) return kiln_error(KILN_EINVAL, "bus: run of %lld records", (long long)max);
  const kiln_rec *first = NULL;
  uint32_t sz = 0;
  int64_t n;
  CONSUME_(n = kiln_ring_peek_run(&ch->rx, max, &first, &sz), n == 0)
  if (n < 0) return ring_err_(ch, (int)n, "incoming");
  uint64_t sp = kiln_rec_span(sz);
  *offset = (uint64_t)((const uint8_t *)kiln_rec_data(first) - (const uint8_t *)ch->seg);
  *n_out = n;
  *stride = sp;
  *size = sz;
  return KILN_OK;
}

int kiln_bus_release(kiln_bus_chan *ch) {
  kiln_ring_release(&ch->rx);
  return KILN_OK;
}

uint64_t kiln_bus_next_corr(kiln_bus_chan *ch) { return ++ch->next_corr; }

void kiln_bus_segment(kiln_bus_chan *ch, void **base, uint64_t *bytes) {
  *base = ch->seg;
  *bytes = ch->seg_bytes;
}

kiln_ring_prod *kiln_bus_tx(kiln_bus_chan *ch) { return &ch->tx; }
kiln_ring_cons *kiln_bus_rx(kiln_bus_chan *ch) { return &ch->rx; }

int kiln_bus_peer(const kiln_bus_chan *ch, int32_t *pid, uint32_t *uid) {
  if (pid) *pid = ch->peer_pid;
  if (uid) *uid = ch->peer_uid;
  return KILN_OK;
}
