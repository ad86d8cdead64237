/* Small file helpers for the checkpoint loader (see loader_io.h). */
#include "model/loader_io.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kiln/status.h"

int kiln_loader_read_file(const char *path, size_t max, char **out, size_t *len) {
  *out = NULL;
  *len = 0;
  FILE *fp = fopen(path, "rb");
  if (!fp) return kiln_error(errno == ENOENT ? KILN_ENOTFOUND : KILN_EIO, "%s: %s", path, strerror(errno));
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap + 1);
  int rc = KILN_OK;
  if (!buf) {
    rc = kiln_error(KILN_ENOMEM, "%s: out of memory", path);
    goto done;
  }
  for (;;) {
    if (n == cap) {
      if (cap > max) {
        rc = kiln_error(KILN_ERANGE, "%s: larger than %zu bytes", path, max);
        goto done;
      }
      size_t ncap = cap * 2;
      char *nb = realloc(buf, ncap + 1);
      if (!nb) {
        rc = kiln_error(KILN_ENOMEM, "%s: out of memory", path);
        goto done;
      }
      buf = nb;
      cap = ncap;
    }
    size_t got = fread(buf + n, 1, cap - n, fp);
    n += got;
    if (got == 0) {
      if (ferror(fp)) rc = kiln_error(KILN_EIO, "%s: read error", path);
      break;
    }
  }
  if (rc == KILN_OK && n > max) rc = kiln_error(KILN_ERANGE, "%s: larger than %zu bytes", path, max);
done:
  fclose(fp);
  if (rc != KILN_OK) {
    free(buf);
    return rc;
  }
  buf[n] = '\0';
  *out = buf;
  *len = n;
  return KILN_OK;
}

char *kiln_loader_join(const char *dir, const char *name) {
  size_t dl = strlen(dir), nl = strlen(name);
  bool slash = dl > 0 && dir[dl - 1] != '/';
  char *p = malloc(dl + slash + nl + 1);
  if (!p) return NULL;
  memcpy(p, dir, dl);
  if (slash) p[dl] = '/';
  memcpy(p + dl + slash, name, nl + 1);
  return p;
}

bool kiln_loader_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}
