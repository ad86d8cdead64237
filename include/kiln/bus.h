/*
 * kiln/bus.h: rings in shared memory between processes (the bus). Zero-copy, duplex, with liveness.
 *
 * A listener binds a Unix-domain socket. For each client it accepts, it creates a memfd segment holding one pair of
 * rings (request: client -> server, response: server -> client), sets it to mode 0600, seals it against resize
 * (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL, so neither side can truncate it under the other and fault it) and
 * passes the fd to the client with SCM_RIGHTS. One segment per client keeps clients apart: a client can only
 * reach its own rings. The handshake carries magic, version, endianness, header and segment sizes and flags in
 * both directions; wrong magic or version is refused with a status, before anything is mapped. Peers are checked
 * with SO_PEERCRED: the same uid by default, plus an allow-list of uids.
 *
 * Each side holds a kiln_bus_chan: a producer handle on its outgoing ring and a consumer handle on its incoming
 * ring (the core of kiln/ring.h), the socket, and the mapping. The data path never makes a system call while the
 * peer keeps up: a wait spins first (opts.spin iterations) and then sleeps on a futex with the no-lost-wake-up
 * protocol of kiln/ring.h, in slices of at most 10 ms; between slices it checks the socket, so a peer that dies
 * (kill -9 included) is reported as KILN_EPEERDEAD within about 10 ms of a wait, never as a hang. Records the
 * peer published before it died are still delivered first. A record is visible only once complete, so a peer that
 * dies in the middle of writing never exposes a partial one. The listener reuses a dead client's slot for the next
 * client; a client whose listener died connects again.
 *
 * Hostile memory: everything read from the segment is checked (kiln/ring.h); an impossible index or header gives
 * KILN_ECORRUPT and the channel stays unusable; no access ever leaves the mapping.
 *
 * Correlation ids: kiln_bus_next_corr() numbers requests; a server answers with the request's corr so a client can
 * match responses.
 *
 * Threads: a channel is used by one thread at a time (one producer and one consumer per ring; a thread may drive
 * both directions). The listener (accept, poll, close) is used by one thread.
 */
#ifndef KILN_BUS_H
#define KILN_BUS_H

#include <stdint.h>

#include "kiln/ring.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_BUS_MAGIC 0x315355424e4c494bull /* "KILNBUS1" read as a little-endian u64 */
#define KILN_BUS_VERSION 1u

typedef struct kiln_bus kiln_bus;           /* a listener */
typedef struct kiln_bus_chan kiln_bus_chan; /* one side of a client connection */

typedef struct kiln_bus_opts {
  uint64_t ring_bytes;        /* capacity of each ring, a power of two; 0: 1 MiB (listener decides) */
  uint32_t max_clients;       /* listener: clients at once; 0: 16 */
  uint32_t batch;             /* records per publication; 0/1: publish every commit */
  int64_t spin;               /* spin iterations before a wait sleeps; < 0: default (20000) */
  const uint32_t *allow_uids; /* uids accepted besides our own (SO_PEERCRED) */
  uint32_t n_allow_uids;
} kiln_bus_opts;

/* ---------------------------------------------------------------------------------------------- listener */
/* Listens on `path` (a stale socket file there is replaced; any other file is an error). */
int kiln_bus_listen(kiln_bus **out, const char *path, const kiln_bus_opts *opts);
/* Accepts one client within timeout_ns (0: only if one is waiting; < 0: forever). On success *out is the server's
 * side of the new channel, owned by the listener until kiln_bus_chan_close(). KILN_ETIMEDOUT when none came,
 * KILN_EPERM for a refused uid, KILN_EFORMAT / KILN_EUNSUPPORTED for a bad hello, KILN_EBUSY when all slots are in
 * use (the client is told). A dead client's slot is reclaimed here. */
int kiln_bus_accept(kiln_bus *b, int64_t timeout_ns, kiln_bus_chan **out);
/* Fair fan-in over all live channels: waits up to timeout_ns for a record on any of them, taking at most
 * `quantum` records from one channel before moving on. On KILN_OK, *ch and *rec are set (release with
 * kiln_bus_release(*ch)); on KILN_EPEERDEAD or KILN_ECORRUPT, *ch is the channel concerned (reported once; close
 * it). KILN_ETIMEDOUT when nothing came. */
int kiln_bus_poll(kiln_bus *b, int64_t timeout_ns, kiln_bus_chan **ch, const kiln_rec **rec);
/* The listening socket (readable when a client is waiting to be accepted), for an outer poll loop. */
int kiln_bus_fd(const kiln_bus *b);
/* Closes every channel, the socket, and removes the socket file. NULL is fine. */
void kiln_bus_close(kiln_bus *b);

/* ---------------------------------------------------------------------------------------------- client */
/* Connects to the listener at `path` (retrying until timeout_ns while the socket does not exist or refuses). */
int kiln_bus_connect(kiln_bus_chan **out, const char *path, const kiln_bus_opts *opts, int64_t timeout_ns);

/* Either side: a client's channel is freed; a listener's channel frees its slot. NULL is fine. */
void kiln_bus_chan_close(kiln_bus_chan *ch);

/* ---------------------------------------------------------------------------------------------- data path */
/* Producing. Acquire waits (up to timeout_ns; 0: not at all) for room for `size` payload bytes. */
int kiln_bus_acquire(kiln_bus_chan *ch, uint64_t size, kiln_rec **out, int64_t timeout_ns);
int kiln_bus_commit(kiln_bus_chan *ch, kiln_rec *rec, uint64_t size, uint32_t type, uint64_t corr);
/* Copies `size` bytes into a new record (acquire + memcpy + commit). */
int kiln_bus_send(kiln_bus_chan *ch, const void *data, uint64_t size, uint32_t type, uint64_t corr,
                  int64_t timeout_ns);
/* Publishes committed records now (batching: see kiln_bus_opts.batch). */
int kiln_bus_flush(kiln_bus_chan *ch);

/* Consuming. Peek waits up to timeout_ns for the next record (valid until released). */
int kiln_bus_peek(kiln_bus_chan *ch, const kiln_rec **out, int64_t timeout_ns);
/* Up to k records as views (waits for the first one only); returns the count or a negative status. */
int64_t kiln_bus_peek_batch(kiln_bus_chan *ch, const kiln_rec **views, int64_t k, int64_t timeout_ns);
/* A run of up to `max` records that are contiguous in memory and have the same payload size: the first payload at
 * byte offset *offset in the segment (kiln_bus_segment), *n records, *stride bytes apart, *size payload bytes each.
 * This is the batch view the Python binding turns into one strided NumPy array. Waits for the first record. */
int kiln_bus_peek_run(kiln_bus_chan *ch, int64_t max, int64_t timeout_ns, uint64_t *offset, int64_t *n,
                      uint64_t *stride, uint64_t *size);
/* Releases every record handed out so far. */
int kiln_bus_release(kiln_bus_chan *ch);

/* KILN_OK while the peer is connected, KILN_EPEERDEAD once it is gone (a system call: not for hot loops). */
int kiln_bus_alive(kiln_bus_chan *ch);
/* Waits for a readable record / for room, with liveness checks; KILN_OK, KILN_ETIMEDOUT, KILN_EPEERDEAD, ... */
int kiln_bus_wait_readable(kiln_bus_chan *ch, int64_t timeout_ns);
int kiln_bus_wait_writable(kiln_bus_chan *ch, uint64_t size, int64_t timeout_ns);

/* A fresh correlation id for a request on this channel (1, 2, 3, ...). */
uint64_t kiln_bus_next_corr(kiln_bus_chan *ch);
/* The mapping of the channel's segment (both rings live in it). */
void kiln_bus_segment(kiln_bus_chan *ch, void **base, uint64_t *bytes);
/* The raw core handles, for hot loops that use the inline ring API directly (no liveness checks there). */
kiln_ring_prod *kiln_bus_tx(kiln_bus_chan *ch);
kiln_ring_cons *kiln_bus_rx(kiln_bus_chan *ch);
/* The peer's pid and uid as the kernel reported them at connect (SO_PEERCRED). */
int kiln_bus_peer(const kiln_bus_chan *ch, int32_t *pid, uint32_t *uid);

#ifdef __cplusplus
}
#endif
#endif /* KILN_BUS_H */
