/*
 * Bus client: connect, check the listener (SO_PEERCRED, hello), receive and check the segment, attach the rings.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "bus/bus_impl.h"

static int connect_once_(const struct sockaddr_un *addr, int *fd_out) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return kiln_error(KILN_EIO, "bus: socket: %s", strerror(errno));
  if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) != 0) {
    int e = errno;
    close(fd);
    if (e == ENOENT || e == ECONNREFUSED || e == EAGAIN)
      return kiln_error(KILN_EAGAIN, "bus: no listener at %s: %s", addr->sun_path, strerror(e));
    return kiln_error(e == EACCES ? KILN_EPERM : KILN_EIO, "bus: connect %s: %s", addr->sun_path, strerror(e));
  }
  *fd_out = fd;
  return KILN_OK;
}

int kiln_bus_connect(kiln_bus_chan **out, const char *path, const kiln_bus_opts *opts, int64_t timeout_ns) {
  *out = NULL;
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  size_t len = path ? strlen(path) : 0;
  if (len == 0 || len >= sizeof addr.sun_path)
    return kiln_error(KILN_EINVAL, "bus: socket path '%s' is empty or too long", path ? path : "");
  memcpy(addr.sun_path, path, len + 1);
  int64_t deadline = timeout_ns < 0 ? INT64_MAX : bus__now_ns() + timeout_ns;
  int fd = -1, seg_fd = -1, rc;
  for (;;) {
    rc = connect_once_(&addr, &fd);
    if (rc != KILN_EAGAIN || bus__now_ns() >= deadline) break;
    struct timespec ts = {0, 2000000}; /* the listener may not be up yet */
    nanosleep(&ts, NULL);
  }
  if (rc != KILN_OK) return rc == KILN_EAGAIN ? kiln_error(KILN_ETIMEDOUT, "bus: no listener at %s", path) : rc;

  kiln_bus_chan *ch = calloc(1, sizeof *ch);
  if (!ch) {
    close(fd);
    return kiln_error(KILN_ENOMEM, "bus: out of memory");
  }
  ch->fd = fd;
  rc = bus__peer_check(fd, opts ? opts->allow_uids : NULL, opts ? opts->n_allow_uids : 0, &ch->peer_pid,
                       &ch->peer_uid);
  if (rc != KILN_OK) goto fail;
  bus_hello h;
  bus__hello_init(&h);
  h.flags = KILN_RING_FLAG_WAKE;
  h.ring_cap = opts ? opts->ring_bytes : 0;
  if ((rc = bus__send_hello(fd, &h, -1)) != KILN_OK) goto fail;
  int64_t left = deadline == INT64_MAX ? BUS_HANDSHAKE_NS : deadline - bus__now_ns();
  if (left < BUS_HANDSHAKE_NS) left = BUS_HANDSHAKE_NS; /* a listener that answers is given its handshake time */
  if ((rc = bus__recv_hello(fd, &h, &seg_fd, left, "listener")) != KILN_OK) goto fail;
  if ((rc = bus__hello_check(&h, "listener")) != KILN_OK) goto fail;
  if (h.status != KILN_OK) {
    rc = kiln_error(h.status < 0 && h.status >= KILN_EBUSY ? h.status : KILN_EIO, "bus: listener refused: %s",
                    kiln_strerror(h.status));
    goto fail;
  }
  if (seg_fd < 0) {
    rc = kiln_error(KILN_EFORMAT, "bus: listener accepted but passed no segment");
    goto fail;
  }
  void *map;
  if ((rc = bus__seg_open(seg_fd, &h, &map)) != KILN_OK) goto fail;
  close(seg_fd);
  seg_fd = -1;
  ch->seg = map;
  ch->seg_bytes = h.seg_bytes;
  /* The client produces on the request ring and consumes the response ring. */
  if ((rc = bus__chan_attach(ch, map, h.seg_bytes, h.ring_cap, h.off_req, h.off_resp, opts)) != KILN_OK) goto fail;
  *out = ch;
  return KILN_OK;
fail:
  if (seg_fd >= 0) close(seg_fd);
  ch->dead = rc; /* no goodbye on a failed handshake */
  kiln_bus_chan_close(ch);
  return rc;
}
