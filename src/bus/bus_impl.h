/* Private to src/bus: the channel and listener structs, the segment and handshake layouts, internal helpers. */
#ifndef KILN_BUS_IMPL_H
#define KILN_BUS_IMPL_H

#include <stdint.h>
#include <sys/types.h>

#include "kiln/bus.h"

#define BUS_ENDIAN 0x01020304u   /* written in the sender's byte order: a peer of the other order reads 0x04030201 */
#define BUS_PAGE 4096u
#define BUS_SLICE_NS 10000000ll  /* longest sleep between liveness checks: death is seen within ~10 ms of a wait */
#define BUS_HANDSHAKE_NS 1000000000ll /* a connected peer that says nothing for 1 s is dropped */
#define BUS_DEFAULT_RING (1ull << 20)
#define BUS_DEFAULT_CLIENTS 16u
#define BUS_DEFAULT_SPIN 20000

/* First page of every segment. Written once by the listener before the fd is passed; the client checks it
 * against the handshake and then never reads it again (it keeps its own copy of everything it needs). */
typedef struct bus_seg_hdr {
  uint64_t magic;
  uint32_t version;
  uint32_t endian;
  uint64_t seg_bytes;
  uint64_t ring_cap;
  uint64_t off_req;  /* client -> server ring (control block) */
  uint64_t off_resp; /* server -> client ring */
  uint32_t ring_hdr_bytes;
  uint32_t rec_hdr_bytes;
  int32_t server_pid;
  int32_t client_pid;
} bus_seg_hdr;

/* The handshake message, both directions (64 bytes). */
typedef struct bus_hello {
  uint64_t magic;
  uint32_t version;
  uint32_t endian;
  uint32_t hello_bytes;    /* sizeof(bus_hello) */
  uint32_t ring_hdr_bytes; /* sizeof(kiln_ring) */
  uint32_t rec_hdr_bytes;  /* sizeof(kiln_rec) */
  uint32_t flags;          /* ring flags (KILN_RING_FLAG_WAKE) */
  int32_t status;          /* listener's answer: KILN_OK, or why it refused */
  uint32_t reserved;
  uint64_t ring_cap;       /* client: requested (0: listener's choice); listener: actual */
  uint64_t seg_bytes;      /* listener -> client: layout */
  uint64_t off_req;
  uint64_t off_resp;
} bus_hello;

struct kiln_bus_chan {
  kiln_ring_prod tx; /* outgoing ring (client: request; server: response) */
  kiln_ring_cons rx; /* incoming ring */
  int fd;            /* socket to the peer: liveness */
  int dead;          /* KILN_EPEERDEAD once seen (sticky) */
  int reported;      /* listener: death or corruption already reported by kiln_bus_poll */
  int64_t spin;
  int64_t last_check_ns; /* coarse clock of the last liveness check on a non-waiting path */
  uint64_t next_corr;
  void *seg;
  uint64_t seg_bytes;
  kiln_bus *bus; /* listener side: owner */
  uint32_t slot;
  int32_t peer_pid;
  uint32_t peer_uid;
};

struct kiln_bus {
  int fd;
  char path[108];
  kiln_bus_opts opts;
  uint32_t *allow; /* copy of opts.allow_uids */
  uint32_t n_slots;
  kiln_bus_chan **slots; /* NULL: free */
  uint32_t cur, taken;   /* fan-in position */
};

/* bus_seg.c */
int bus__seg_layout(uint64_t cap, uint64_t *off_req, uint64_t *off_resp, uint64_t *seg_bytes);
int bus__seg_create(uint64_t cap, uint32_t flags, int *fd_out, void **map_out, uint64_t *bytes_out);
int bus__seg_open(int fd, const bus_hello *h, void **map_out);
/* bus_sock.c */
int64_t bus__now_ns(void);
int64_t bus__coarse_ns(void);
void bus__hello_init(bus_hello *h);
int bus__hello_check(const bus_hello *h, const char *who);
int bus__send_hello(int fd, const bus_hello *h, int pass_fd);
int bus__recv_hello(int fd, bus_hello *h, int *fd_out, int64_t timeout_ns, const char *who);
int bus__peer_check(int fd, const uint32_t *allow, uint32_t n_allow, int32_t *pid, uint32_t *uid);
int bus__sock_alive(int fd);
/* bus_chan.c */
int bus__chan_attach(kiln_bus_chan *ch, void *seg, uint64_t seg_bytes, uint64_t cap, uint64_t off_tx,
                     uint64_t off_rx, const kiln_bus_opts *opts);
void bus__chan_unmap(kiln_bus_chan *ch);

#endif
