/*
 * Bus listener: the socket, the client slots, the handshake on the listener's side, and fair fan-in over clients.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "bus/bus_impl.h"

static int fill_addr_(struct sockaddr_un *a, const char *path) {
  memset(a, 0, sizeof *a);
  a->sun_family = AF_UNIX;
  size_t n = path ? strlen(path) : 0;
  if (n == 0 || n >= sizeof a->sun_path) return kiln_error(KILN_EINVAL, "bus: socket path '%s' is empty or too long", path ? path : "");
  memcpy(a->sun_path, path, n + 1);
  return KILN_OK;
}

int kiln_bus_listen(kiln_bus **out, const char *path, const kiln_bus_opts *opts) {
  *out = NULL;
  struct sockaddr_un addr;
  int rc = fill_addr_(&addr, path);
  if (rc != KILN_OK) return rc;
  kiln_bus_opts o = {0};
  if (opts) o = *opts;
  if (!o.ring_bytes) o.ring_bytes = BUS_DEFAULT_RING;
  if (!o.max_clients) o.max_clients = BUS_DEFAULT_CLIENTS;
  if (!kiln_ring_cap_ok(o.ring_bytes))
    return kiln_error(KILN_EINVAL, "bus: ring size %llu is not a power of two in [256, 2^31]",
                      (unsigned long long)o.ring_bytes);
  if (o.max_clients > 4096) return kiln_error(KILN_EINVAL, "bus: %u clients is too many", o.max_clients);
  kiln_bus *b = calloc(1, sizeof *b);
  if (!b) return kiln_error(KILN_ENOMEM, "bus: out of memory");
  b->fd = -1;
  b->opts = o;
  b->n_slots = o.max_clients;
  b->slots = calloc(b->n_slots, sizeof *b->slots);
  if (o.n_allow_uids) {
    b->allow = malloc(o.n_allow_uids * sizeof *b->allow);
    if (b->allow) memcpy(b->allow, o.allow_uids, o.n_allow_uids * sizeof *b->allow);
  }
  b->opts.allow_uids = b->allow;
  if (!b->slots || (o.n_allow_uids && !b->allow)) {
    rc = kiln_error(KILN_ENOMEM, "bus: out of memory");
    goto fail;
  }
  /* Replace a stale socket file (a listener that died leaves one); refuse to delete anything else. */
  struct stat st;
  if (lstat(path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      rc = kiln_error(KILN_EINVAL, "bus: %s exists and is not a socket", path);
      goto fail;
    }
    unlink(path);
  }
  b->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (b->fd < 0) {
    rc = kiln_error(KILN_EIO, "bus: socket: %s", strerror(errno));
    goto fail;
  }
  /* The socket file is created with mode 0600 (umask), so only our uid can even connect by default. */
  mode_t old = umask(0177);
  int br = bind(b->fd, (struct sockaddr *)&addr, sizeof addr);
  umask(old);
  if (br != 0 || listen(b->fd, 64) != 0) {
    rc = kiln_error(KILN_EIO, "bus: %s: %s", path, strerror(errno));
    goto fail;
  }
  if (o.n_allow_uids) chmod(path, 0666); /* other uids must be able to connect; SO_PEERCRED decides */
  memcpy(b->path, addr.sun_path, sizeof b->path);
  *out = b;
  return KILN_OK;
fail:
  if (b->fd >= 0) close(b->fd);
  free(b->allow);
  free(b->slots);
  free(b);
  return rc;
}

int kiln_bus_fd(const kiln_bus *b) { return b->fd; }

void kiln_bus_close(kiln_bus *b) {
  if (!b) return;
  for (uint32_t i = 0; i < b->n_slots; i++)
    if (b->slots[i]) kiln_bus_chan_close(b->slots[i]);
  if (b->fd >= 0) {
    close(b->fd);
    unlink(b->path);
  }
  free(b->allow);
  free(b->slots);
  free(b);
}

/* A refused client hears why (status in the hello) before we hang up. */
static void refuse_(int fd, int status) {
  bus_hello h;
  bus__hello_init(&h);
  h.status = status;
  (void)bus__send_hello(fd, &h, -1);
}

/* Frees the slots of clients that died or left, so a new client can take their place. */
static void reclaim_(kiln_bus *b) {
  for (uint32_t i = 0; i < b->n_slots; i++) {
    kiln_bus_chan *ch = b->slots[i];
    if (ch && (ch->dead || bus__sock_alive(ch->fd) != KILN_OK)) kiln_bus_chan_close(ch);
  }
}

static int handshake_(kiln_bus *b, int fd, kiln_bus_chan **out) {
  /* Read the hello before refusing anyone, so the refusal is not lost to a client still writing its hello. */
  bus_hello h;
  int rc = bus__recv_hello(fd, &h, NULL, BUS_HANDSHAKE_NS, "client");
  if (rc != KILN_OK) return rc;
  int32_t pid;
  uint32_t uid;
  rc = bus__peer_check(fd, b->allow, b->opts.n_allow_uids, &pid, &uid);
  if (rc != KILN_OK) {
    refuse_(fd, rc);
    return rc;
  }
  rc = bus__hello_check(&h, "client");
  if (rc != KILN_OK) {
    refuse_(fd, rc);
    return rc;
  }
  uint32_t slot = b->n_slots;
  for (uint32_t i = 0; i < b->n_slots && slot == b->n_slots; i++)
    if (!b->slots[i]) slot = i;
  if (slot == b->n_slots) {
    reclaim_(b);
    for (uint32_t i = 0; i < b->n_slots && slot == b->n_slots; i++)
      if (!b->slots[i]) slot = i;
  }
  if (slot == b->n_slots) {
    refuse_(fd, KILN_EBUSY);
    return kiln_error(KILN_EBUSY, "bus: all %u client slots are in use", b->n_slots);
  }
  kiln_bus_chan *ch = calloc(1, sizeof *ch);
  if (!ch) {
    refuse_(fd, KILN_ENOMEM);
    return kiln_error(KILN_ENOMEM, "bus: out of memory");
  }
  ch->fd = -1;
  int seg_fd = -1;
  void *map = NULL;
  uint64_t bytes = 0;
  uint32_t flags = KILN_RING_FLAG_WAKE;
  rc = bus__seg_create(b->opts.ring_bytes, flags, &seg_fd, &map, &bytes);
  if (rc != KILN_OK) {
    refuse_(fd, rc);
    free(ch);
    return rc;
  }
  const bus_seg_hdr *sh = map;
  ch->fd = fd;
  ch->bus = b;
  ch->slot = slot;
  ch->peer_pid = pid;
  ch->peer_uid = uid;
  /* The listener produces on the response ring and consumes the request ring. */
  rc = bus__chan_attach(ch, map, bytes, b->opts.ring_bytes, sh->off_resp, sh->off_req, &b->opts);
  if (rc == KILN_OK) {
    bus_hello a;
    bus__hello_init(&a);
    a.flags = flags;
    a.status = KILN_OK;
    a.ring_cap = b->opts.ring_bytes;
    a.seg_bytes = bytes;
    a.off_req = sh->off_req;
    a.off_resp = sh->off_resp;
    rc = bus__send_hello(fd, &a, seg_fd);
  }
  close(seg_fd); /* the client holds its own reference now; our mapping keeps the memory */
  if (rc != KILN_OK) {
    ch->fd = -1;
    ch->dead = rc;
    kiln_bus_chan_close(ch);
    return rc;
  }
  b->slots[slot] = ch;
  *out = ch;
  return KILN_OK;
}

int kiln_bus_accept(kiln_bus *b, int64_t timeout_ns, kiln_bus_chan **out) {
  *out = NULL;
  int64_t deadline = timeout_ns < 0 ? INT64_MAX : bus__now_ns() + timeout_ns;
  for (;;) {
    int fd = accept4(b->fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0) {
      int rc = handshake_(b, fd, out);
      if (rc != KILN_OK) close(fd);
      return rc;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
      return kiln_error(KILN_EIO, "bus: accept: %s", strerror(errno));
    int64_t left = deadline == INT64_MAX ? -1 : deadline - bus__now_ns();
    if (deadline != INT64_MAX && left <= 0) return kiln_error(KILN_ETIMEDOUT, "bus: no client within the timeout");
    struct pollfd p = {b->fd, POLLIN, 0};
    int ms = left < 0 ? -1 : (int)((left + 999999) / 1000000);
    if (poll(&p, 1, ms) < 0 && errno != EINTR) return kiln_error(KILN_EIO, "bus: poll: %s", strerror(errno));
  }
}

/* One pass of fair fan-in: the channel whose turn it is gives up to `quantum` records, then the next. */
static int poll_once_(kiln_bus *b, uint32_t quantum, kiln_bus_chan **ch, const kiln_rec **rec) {
  for (uint32_t tried = 0; tried <= b->n_slots; tried++) {
    if (b->taken >= quantum) {
      b->cur = b->cur + 1 >= b->n_slots ? 0 : b->cur + 1;
      b->taken = 0;
    }
    kiln_bus_chan *c = b->slots[b->cur];
    if (!c || c->reported) {
      b->taken = quantum;
      continue;
    }
    int rc = kiln_ring_peek(&c->rx, rec);
    if (rc == KILN_OK) {
      b->taken++;
      *ch = c;
      return KILN_OK;
    }
    b->taken = quantum;
    if (rc != KILN_EAGAIN) {
      c->reported = 1;
      *ch = c;
      return kiln_error(KILN_ECORRUPT, "bus: request ring of client pid %d corrupted", (int)c->peer_pid);
    }
  }
  return KILN_EAGAIN;
}

int kiln_bus_poll(kiln_bus *b, int64_t timeout_ns, kiln_bus_chan **ch, const kiln_rec **rec) {
  *ch = NULL;
  *rec = NULL;
  const uint32_t quantum = 32;
  int64_t deadline = timeout_ns < 0 ? INT64_MAX : bus__now_ns() + timeout_ns;
  int64_t spins = b->opts.spin >= 0 ? b->opts.spin : BUS_DEFAULT_SPIN, last_check = 0;
  for (int64_t i = 0;; i++) {
    int rc = poll_once_(b, quantum, ch, rec);
    if (rc != KILN_EAGAIN) return rc;
    if (i < spins) continue;
    int64_t now = bus__now_ns();
    if (now - last_check >= BUS_SLICE_NS) {
      last_check = now;
      for (uint32_t s = 0; s < b->n_slots; s++) {
        kiln_bus_chan *c = b->slots[s];
        if (c && !c->reported && kiln_bus_alive(c) != KILN_OK) {
          c->reported = 1;
          *ch = c;
          return c->dead;
        }
      }
    }
    if (now >= deadline) return KILN_ETIMEDOUT;
    /* Many rings cannot share one futex: nap briefly (the latency-critical path is one channel's own wait). */
    struct timespec ts = {0, 50000};
    nanosleep(&ts, NULL);
  }
}
