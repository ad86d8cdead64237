/* safetensors container: parse and validate a header in memory; map a file read-only (see safetensors.h). */
#include "model/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kiln/status.h"

static const struct {
  const char *name;
  uint64_t size;
} st_dtypes[KILN_ST_NDTYPES] = {
    [KILN_ST_BOOL] = {"BOOL", 1},       [KILN_ST_U8] = {"U8", 1},     [KILN_ST_I8] = {"I8", 1},
    [KILN_ST_F8_E5M2] = {"F8_E5M2", 1}, [KILN_ST_F8_E4M3] = {"F8_E4M3", 1},
    [KILN_ST_F8_E8M0] = {"F8_E8M0", 1}, [KILN_ST_I16] = {"I16", 2},   [KILN_ST_U16] = {"U16", 2},
    [KILN_ST_F16] = {"F16", 2},         [KILN_ST_BF16] = {"BF16", 2}, [KILN_ST_I32] = {"I32", 4},
    [KILN_ST_U32] = {"U32", 4},         [KILN_ST_F32] = {"F32", 4},   [KILN_ST_F64] = {"F64", 8},
    [KILN_ST_I64] = {"I64", 8},         [KILN_ST_U64] = {"U64", 8},   [KILN_ST_C64] = {"C64", 8},
};

const char *kiln_st_dtype_name(kiln_st_dtype dt) {
  return (unsigned)dt < KILN_ST_NDTYPES ? st_dtypes[dt].name : "?";
}

uint64_t kiln_st_dtype_size(kiln_st_dtype dt) { return (unsigned)dt < KILN_ST_NDTYPES ? st_dtypes[dt].size : 0; }

static int dtype_lookup(const char *s, kiln_st_dtype *out) {
  for (int i = 0; i < KILN_ST_NDTYPES; i++)
    if (strcmp(s, st_dtypes[i].name) == 0) {
      *out = (kiln_st_dtype)i;
      return 0;
    }
  return -1;
}

static int cmp_by_name(const void *a, const void *b) {
  return strcmp(((const kiln_st_tensor *)a)->name, ((const kiln_st_tensor *)b)->name);
}

static int cmp_by_offset(const void *a, const void *b) {
  const kiln_st_tensor *x = *(const kiln_st_tensor *const *)a, *y = *(const kiln_st_tensor *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return 0;
}

/* Reads one tensor entry `v` named `name` into `t`, checking it against `data_len` bytes of data. */
static int parse_entry(kiln_st_tensor *t, const char *name, json_t *v, uint64_t data_len, const char *path) {
  if (!json_is_object(v)) return kiln_error(KILN_EFORMAT, "%s: tensor '%s': entry is not an object", path, name);
  json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"), *jo = json_object_get(v, "data_offsets");
  if (!json_is_string(jd)) return kiln_error(KILN_EFORMAT, "%s: tensor '%s': missing or non-string dtype", path, name);
  if (dtype_lookup(json_string_value(jd), &t->dtype) != 0)
    return kiln_error(KILN_EUNSUPPORTED, "%s: tensor '%s': unknown dtype '%s'", path, name, json_string_value(jd));
  if (!json_is_array(js)) return kiln_error(KILN_EFORMAT, "%s: tensor '%s': missing or non-array shape", path, name);
  size_t nd = json_array_size(js);
  if (nd > KILN_ST_MAX_DIMS)
    return kiln_error(KILN_EUNSUPPORTED, "%s: tensor '%s': %zu dimensions (at most %d)", path, name, nd,
                      KILN_ST_MAX_DIMS);
  t->ndim = (int)nd;
  uint64_t numel = 1;
  bool overflow = false, empty = false;
  for (size_t i = 0; i < nd; i++) {
    json_t *d = json_array_get(js, i);
    if (!json_is_integer(d) || json_integer_value(d) < 0)
      return kiln_error(KILN_EFORMAT, "%s: tensor '%s': shape[%zu] is not a non-negative integer", path, name, i);
    t->shape[i] = (int64_t)json_integer_value(d);
    if (t->shape[i] == 0) empty = true;
    if (__builtin_mul_overflow(numel, (uint64_t)t->shape[i], &numel)) overflow = true;
  }
  uint64_t bytes = 0;
  /* A zero dimension makes the tensor empty whatever the others say, so overflow only matters otherwise. */
  if (!empty && (overflow || __builtin_mul_overflow(numel, kiln_st_dtype_size(t->dtype), &bytes)))
    return kiln_error(KILN_EFORMAT, "%s: tensor '%s': shape too large", path, name);
  if (!json_is_array(jo) || json_array_size(jo) != 2)
    return kiln_error(KILN_EFORMAT, "%s: tensor '%s': data_offsets is not a pair", path, name);
  json_t *jb = json_array_get(jo, 0), *je = json_array_get(jo, 1);
  if (!json_is_integer(jb) || !json_is_integer(je) || json_integer_value(jb) < 0 || json_integer_value(je) < 0)
    return kiln_error(KILN_EFORMAT, "%s: tensor '%s': data_offsets are not non-negative integers", path, name);
  t->begin = (uint64_t)json_integer_value(jb);
  t->end = (uint64_t)json_integer_value(je);
  if (t->end < t->begin)
    return kiln_error(KILN_EFORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin", path, name,
                      (unsigned long long)t->begin, (unsigned long long)t->end);
  if (t->end > data_len)
    return kiln_error(KILN_EFORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] past the end of the data (%llu bytes)",
                      path, name, (unsigned long long)t->begin, (unsigned long long)t->end,
                      (unsigned long long)data_len);
  if (t->end - t->begin != bytes)
    return kiln_error(KILN_EFORMAT, "%s: tensor '%s': data_offsets span %llu bytes, its %s shape needs %llu", path,
                      name, (unsigned long long)(t->end - t->begin), st_dtypes[t->dtype].name,
                      (unsigned long long)bytes);
  return KILN_OK;
}

static int check_metadata(json_t *v, const char *path) {
  if (!json_is_object(v)) return kiln_error(KILN_EFORMAT, "%s: __metadata__ is not an object", path);
  const char *k;
  json_t *x;
  json_object_foreach(v, k, x) {
    if (!json_is_string(x)) return kiln_error(KILN_EFORMAT, "%s: __metadata__ '%s' is not a string", path, k);
  }
  return KILN_OK;
}

/* No two non-empty byte ranges may share a byte. */
static int check_overlap(kiln_st_file *f) {
  if (f->n_tensors < 2) return KILN_OK;
  kiln_st_tensor **by = malloc(f->n_tensors * sizeof *by);
  if (!by) return kiln_error(KILN_ENOMEM, "%s: out of memory", f->path);
  for (size_t i = 0; i < f->n_tensors; i++) by[i] = &f->tensors[i];
  qsort(by, f->n_tensors, sizeof *by, cmp_by_offset);
  int rc = KILN_OK;
  const kiln_st_tensor *prev = NULL;
  for (size_t i = 0; i < f->n_tensors && rc == KILN_OK; i++) {
    const kiln_st_tensor *t = by[i];
    if (t->begin == t->end) continue;
    if (prev && t->begin < prev->end)
      rc = kiln_error(KILN_EFORMAT, "%s: tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap", f->path,
                      prev->name, (unsigned long long)prev->begin, (unsigned long long)prev->end, t->name,
                      (unsigned long long)t->begin, (unsigned long long)t->end);
    prev = t;
  }
  free(by);
  return rc;
}

int kiln_st_parse(kiln_st_file *f, const uint8_t *buf, uint64_t size, const char *path) {
  memset(f, 0, sizeof *f);
  if (!path) path = "(buffer)";
  if (size < 8)
    return kiln_error(KILN_EFORMAT, "%s: truncated: %llu bytes, a safetensors file needs at least 8", path,
                      (unsigned long long)size);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = hlen << 8 | buf[i];
  if (hlen > size - 8)
    return kiln_error(KILN_EFORMAT, "%s: header length %llu past end of file (%llu bytes)", path,
                      (unsigned long long)hlen, (unsigned long long)size);
  if (hlen > KILN_ST_MAX_HEADER)
    return kiln_error(KILN_EFORMAT, "%s: header length %llu exceeds the limit of %llu bytes", path,
                      (unsigned long long)hlen, (unsigned long long)KILN_ST_MAX_HEADER);
  if (hlen < 2 || buf[8] != '{')
    return kiln_error(KILN_EFORMAT, "%s: header does not start with a JSON object", path);

  json_error_t jerr;
  json_t *root = json_loadb((const char *)buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
  if (!root) return kiln_error(KILN_EFORMAT, "%s: header JSON: %s (at byte %d)", path, jerr.text, jerr.position + 8);
  int rc = KILN_OK;
  if (!json_is_object(root)) {
    rc = kiln_error(KILN_EFORMAT, "%s: header is not a JSON object", path);
    goto done;
  }
  f->path = strdup(path);
  if (!f->path) {
    rc = kiln_error(KILN_ENOMEM, "%s: out of memory", path);
    goto done;
  }
  f->base = buf;
  f->size = size;
  f->data_start = 8 + hlen;

  size_t n = 0, name_bytes = 0;
  const char *key;
  json_t *val;
  json_object_foreach(root, key, val) {
    if (strcmp(key, "__metadata__") == 0) {
      if ((rc = check_metadata(val, path)) != KILN_OK) goto done;
      continue;
    }
    n++;
    name_bytes += strlen(key) + 1;
  }
  if (n > 0) {
    f->tensors = calloc(n, sizeof *f->tensors);
    f->names = malloc(name_bytes);
    if (!f->tensors || !f->names) {
      rc = kiln_error(KILN_ENOMEM, "%s: out of memory for %zu tensor entries", path, n);
      goto done;
    }
  }
  char *np = f->names;
  json_object_foreach(root, key, val) {
    if (strcmp(key, "__metadata__") == 0) continue;
    kiln_st_tensor *t = &f->tensors[f->n_tensors];
    size_t kl = strlen(key) + 1;
    memcpy(np, key, kl);
    t->name = np;
    np += kl;
    if ((rc = parse_entry(t, key, val, size - f->data_start, path)) != KILN_OK) goto done;
    f->n_tensors++;
  }
  if (f->n_tensors > 1) qsort(f->tensors, f->n_tensors, sizeof *f->tensors, cmp_by_name);
  rc = check_overlap(f);

done:
  json_decref(root);
  if (rc != KILN_OK) kiln_st_close(f);
  return rc;
}

int kiln_st_open(kiln_st_file *f, const char *path) {
  memset(f, 0, sizeof *f);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return kiln_error(errno == ENOENT ? KILN_ENOTFOUND : KILN_EIO, "%s: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return kiln_error(KILN_EIO, "%s: %s", path, strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return kiln_error(KILN_EIO, "%s: not a regular file", path);
  }
  uint64_t size = (uint64_t)st.st_size;
  if (size < 8) {
    close(fd);
    return kiln_error(KILN_EFORMAT, "%s: truncated: %llu bytes, a safetensors file needs at least 8", path,
                      (unsigned long long)size);
  }
  if (size > SIZE_MAX) {
    close(fd);
    return kiln_error(KILN_ERANGE, "%s: too large to map", path);
  }
  void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
  int e = errno;
  close(fd); /* the mapping keeps the file open */
  if (map == MAP_FAILED) return kiln_error(KILN_EIO, "%s: mmap: %s", path, strerror(e));
  int rc = kiln_st_parse(f, map, size, path);
  if (rc != KILN_OK) {
    munmap(map, (size_t)size);
    return rc;
  }
  f->map = map;
  f->map_len = (size_t)size;
  return KILN_OK;
}

void kiln_st_close(kiln_st_file *f) {
  if (!f) return;
  if (f->map) munmap(f->map, f->map_len);
  free(f->tensors);
  free(f->names);
  free(f->path);
  memset(f, 0, sizeof *f);
}

const kiln_st_tensor *kiln_st_find(const kiln_st_file *f, const char *name) {
  if (!f->n_tensors) return NULL;
  kiln_st_tensor key = {.name = name};
  return bsearch(&key, f->tensors, f->n_tensors, sizeof *f->tensors, cmp_by_name);
}
