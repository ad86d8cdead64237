/* model_impl.h (private): what a kiln_model owns, and the list of weights its config implies. */
#ifndef KILN_MODEL_MODEL_IMPL_H
#define KILN_MODEL_MODEL_IMPL_H

#include <stdbool.h>
#include <stddef.h>

#include "kiln/model.h"
#include "model/safetensors.h"

typedef struct kiln_model_impl {
  kiln_st_file *files;   /* mapped safetensors files */
  size_t n_files;
  void *owned;           /* random weights (one block) */
  void **copies;         /* aligned copies of tensors whose bytes sit misaligned in a file */
  size_t n_copies;
} kiln_model_impl;

#define KILN_WSPEC_NAME 96

/* One weight the architecture needs: its Hugging Face name, where it goes and the shape the config implies. */
typedef struct kiln_wspec {
  char name[KILN_WSPEC_NAME];
  kiln_tensor *slot;
  int ndim;
  int64_t shape[2];
  bool is_norm; /* RMSNorm weight (random weights: near 1) */
} kiln_wspec;

/* A zeroed model with `cfg`, its layer array and its impl. NULL when out of memory (message recorded). */
kiln_model *kiln_model_alloc_(const kiln_config *cfg);
/* The weights `m->cfg` implies, in a stable order (embed, layers in order, final norm, lm_head when untied).
 * *out is malloc'd. */
int kiln_model_specs_(kiln_model *m, kiln_wspec **out, size_t *n);

#endif
