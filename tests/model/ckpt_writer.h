/*
 * Test-only writers for safetensors files and whole checkpoint directories, with knobs to break them in the ways
 * the loader must reject.
 */
#ifndef KILN_TESTS_CKPT_WRITER_H
#define KILN_TESTS_CKPT_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/model.h"

typedef struct stw_entry {
  const char *name;
  const char *dtype; /* "F32", "BF16", ... */
  int ndim;
  int64_t shape[4];
  const void *data;
  size_t bytes;
} stw_entry;

/* Writes a well-formed safetensors file: header padded to a multiple of 8, data packed in entry order. */
int stw_write(const char *path, const stw_entry *e, size_t n, const char *metadata_json);
/* Writes 8-byte length `hlen` (may lie), then `header` (strlen bytes), then `data`. */
int stw_write_raw(const char *path, uint64_t hlen, const char *header, const void *data, size_t data_len);
/* Writes `text` to `path`. */
int stw_write_text(const char *path, const char *text);

/* How to break a checkpoint written by ckpt_write. */
typedef struct ckpt_opts {
  int shards;              /* 0/1: one model.safetensors; >1: that many shards + model.safetensors.index.json */
  const char *skip;        /* omit this tensor */
  const char *bad_shape;   /* write this tensor with its first dimension + 1 */
  const char *bad_dtype;   /* write this tensor as I32 / I16 (same byte count) */
  const char *extra;       /* add an unused F32 tensor of this name (e.g. rotary inv_freq) */
  int write_lm_head;       /* also write lm_head.weight when tied */
  const char *missing_shard; /* list this shard name in the index but do not write it */
} ckpt_opts;

/* Writes `cfg_json` as DIR/config.json and the weights of `m` (its config must match cfg_json) as safetensors. */
int ckpt_write(const char *dir, const char *cfg_json, const kiln_model *m, const ckpt_opts *o);

/* Field-by-field equality (padding bytes make memcmp unreliable). */
int cfg_equal(const kiln_config *a, const kiln_config *b);

/* A fresh temporary directory (malloc'd path); ckpt_rmdir removes it and everything in it. */
char *ckpt_tmpdir(void);
void ckpt_rmdir(char *dir);

#endif
