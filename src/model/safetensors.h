/*
 * safetensors.h (private): the safetensors container, validated.
 *
 * Layout: an 8-byte little-endian header length N, N bytes of JSON (an object: tensor name -> {"dtype", "shape",
 * "data_offsets": [begin, end]}, plus an optional "__metadata__" object of strings), then the data; offsets are
 * relative to the first byte after the header. kiln_st_parse() checks everything against the size of the buffer it
 * is given: the header length (>= 2, within the buffer, at most KILN_ST_MAX_HEADER), the JSON (an object, no
 * duplicate keys), each tensor's dtype (a known safetensors dtype), shape (non-negative, element count and byte
 * count without overflow), data_offsets (begin <= end, end within the data, end - begin == bytes of the shape) and
 * that no two tensors' byte ranges overlap. Gaps and trailing bytes are allowed.
 */
#ifndef KILN_MODEL_SAFETENSORS_H
#define KILN_MODEL_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KILN_ST_MAX_HEADER ((uint64_t)100000000) /* the reference implementation's own cap */
#define KILN_ST_MAX_DIMS 8

/* Every dtype a safetensors file may declare; only F32, F16 and BF16 can be bound to model weights. */
typedef enum kiln_st_dtype {
  KILN_ST_BOOL, KILN_ST_U8, KILN_ST_I8, KILN_ST_F8_E5M2, KILN_ST_F8_E4M3, KILN_ST_F8_E8M0, KILN_ST_I16,
  KILN_ST_U16, KILN_ST_F16, KILN_ST_BF16, KILN_ST_I32, KILN_ST_U32, KILN_ST_F32, KILN_ST_F64, KILN_ST_I64,
  KILN_ST_U64, KILN_ST_C64, KILN_ST_NDTYPES
} kiln_st_dtype;

typedef struct kiln_st_tensor {
  const char *name;  /* NUL-terminated, in the file's name storage */
  kiln_st_dtype dtype;
  int ndim;
  int64_t shape[KILN_ST_MAX_DIMS];
  uint64_t begin, end; /* byte range relative to the data start */
} kiln_st_tensor;

typedef struct kiln_st_file {
  char *path;             /* for messages */
  const uint8_t *base;    /* the whole file */
  uint64_t size;
  uint64_t data_start;    /* 8 + header length */
  kiln_st_tensor *tensors; /* sorted by name */
  size_t n_tensors;
  char *names;            /* storage for the names */
  void *map;              /* the mapping, when opened from a file (else NULL) */
  size_t map_len;
} kiln_st_file;

const char *kiln_st_dtype_name(kiln_st_dtype dt);
/* Bytes per element. */
uint64_t kiln_st_dtype_size(kiln_st_dtype dt);

/* Parses and validates a safetensors image in memory (the buffer must outlive `f`, which does not own it).
 * `path` names the file in messages. On error `f` holds nothing to free. */
int kiln_st_parse(kiln_st_file *f, const uint8_t *buf, uint64_t size, const char *path);
/* Maps `path` read-only and parses it. */
int kiln_st_open(kiln_st_file *f, const char *path);
/* Releases what kiln_st_parse / kiln_st_open allocated (and unmaps). Accepts a zeroed struct. */
void kiln_st_close(kiln_st_file *f);

/* The tensor named `name`, or NULL. */
const kiln_st_tensor *kiln_st_find(const kiln_st_file *f, const char *name);
/* Start of a tensor's data. */
static inline const uint8_t *kiln_st_data(const kiln_st_file *f, const kiln_st_tensor *t) {
  return f->base + f->data_start + t->begin;
}

#endif
