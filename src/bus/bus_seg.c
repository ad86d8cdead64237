/*
 * Bus segments: one memfd per client, holding a header page and two rings (request, response).
 *
 * The creator sizes the memfd, makes it mode 0600, initialises the rings and seals it (no shrink, no grow, no more
 * seals), so the size the peer checked stays true: neither side can truncate the file and make the other fault
 * on an access inside its mapping. The opener re-checks the size and the seals itself before mapping.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bus/bus_impl.h"

static uint64_t round_page_(uint64_t n) { return (n + BUS_PAGE - 1) & ~(uint64_t)(BUS_PAGE - 1); }

int bus__seg_layout(uint64_t cap, uint64_t *off_req, uint64_t *off_resp, uint64_t *seg_bytes) {
  if (!kiln_ring_cap_ok(cap)) return kiln_error(KILN_EINVAL, "bus: ring size %llu is not a power of two in [%llu, %llu]",
                                                (unsigned long long)cap, (unsigned long long)KILN_RING_MIN_CAP,
                                                (unsigned long long)KILN_RING_MAX_CAP);
  uint64_t ring = round_page_(kiln_ring_bytes(cap));
  *off_req = BUS_PAGE;
  *off_resp = BUS_PAGE + ring;
  *seg_bytes = BUS_PAGE + 2 * ring;
  return KILN_OK;
}

int bus__seg_create(uint64_t cap, uint32_t flags, int *fd_out, void **map_out, uint64_t *bytes_out) {
  uint64_t off_req, off_resp, bytes;
  int rc = bus__seg_layout(cap, &off_req, &off_resp, &bytes);
  if (rc != KILN_OK) return rc;
  void *map = MAP_FAILED;
  int fd = memfd_create("kiln-bus", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return kiln_error(KILN_EIO, "bus: memfd_create: %s", strerror(errno));
  if (fchmod(fd, 0600) != 0) {
    rc = kiln_error(KILN_EIO, "bus: fchmod segment: %s", strerror(errno));
    goto fail;
  }
  if (ftruncate(fd, (off_t)bytes) != 0) {
    rc = kiln_error(errno == ENOSPC || errno == ENOMEM ? KILN_ENOMEM : KILN_EIO, "bus: size segment to %llu bytes: %s",
                    (unsigned long long)bytes, strerror(errno));
    goto fail;
  }
  map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) {
    rc = kiln_error(KILN_ENOMEM, "bus: map segment: %s", strerror(errno));
    goto fail;
  }
  bus_seg_hdr *h = map;
  h->magic = KILN_BUS_MAGIC;
  h->version = KILN_BUS_VERSION;
  h->endian = BUS_ENDIAN;
  h->seg_bytes = bytes;
  h->ring_cap = cap;
  h->off_req = off_req;
  h->off_resp = off_resp;
  h->ring_hdr_bytes = sizeof(kiln_ring);
  h->rec_hdr_bytes = sizeof(kiln_rec);
  h->server_pid = (int32_t)getpid();
  h->client_pid = 0;
  if (kiln_ring_init((kiln_ring *)((uint8_t *)map + off_req), cap, flags) != KILN_OK ||
      kiln_ring_init((kiln_ring *)((uint8_t *)map + off_resp), cap, flags) != KILN_OK) {
    rc = kiln_error(KILN_EINVAL, "bus: ring init failed");
    goto fail;
  }
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    rc = kiln_error(KILN_EIO, "bus: seal segment: %s", strerror(errno));
    goto fail;
  }
  *fd_out = fd;
  *map_out = map;
  *bytes_out = bytes;
  return KILN_OK;
fail:
  if (map != MAP_FAILED) munmap(map, bytes);
  close(fd);
  return rc;
}

/* Maps a segment received from a listener after checking the fd and the layout the hello announced. Nothing in
 * the segment is trusted beyond what is compared here against the hello. */
int bus__seg_open(int fd, const bus_hello *h, void **map_out) {
  uint64_t off_req, off_resp, bytes;
  int rc = bus__seg_layout(h->ring_cap, &off_req, &off_resp, &bytes);
  if (rc != KILN_OK) return rc;
  if (h->seg_bytes != bytes || h->off_req != off_req || h->off_resp != off_resp)
    return kiln_error(KILN_EFORMAT, "bus: listener announced a segment layout that does not match its ring size");
  struct stat st;
  if (fstat(fd, &st) != 0) return kiln_error(KILN_EIO, "bus: fstat segment: %s", strerror(errno));
  if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != bytes)
    return kiln_error(KILN_EFORMAT, "bus: segment is %lld bytes, hello says %llu", (long long)st.st_size,
                      (unsigned long long)bytes);
  int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW))
    return kiln_error(KILN_EPERM, "bus: segment is not sealed against resize");
  void *map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) return kiln_error(KILN_ENOMEM, "bus: map segment: %s", strerror(errno));
  bus_seg_hdr hdr;
  memcpy(&hdr, map, sizeof hdr); /* one copy: the checks hold for what we compare */
  if (hdr.magic != KILN_BUS_MAGIC || hdr.version != KILN_BUS_VERSION || hdr.endian != BUS_ENDIAN ||
      hdr.seg_bytes != bytes || hdr.ring_cap != h->ring_cap || hdr.off_req != off_req || hdr.off_resp != off_resp ||
      hdr.ring_hdr_bytes != sizeof(kiln_ring) || hdr.rec_hdr_bytes != sizeof(kiln_rec)) {
    munmap(map, bytes);
    return kiln_error(KILN_EFORMAT, "bus: segment header does not match the handshake");
  }
  ((bus_seg_hdr *)map)->client_pid = (int32_t)getpid();
  *map_out = map;
  return KILN_OK;
}
