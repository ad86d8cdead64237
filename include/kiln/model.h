/*
 * kiln/model.h: a Hugging Face checkpoint in memory: its configuration and its weights.
 *
 * kiln_model_load() reads config.json (transformers 4 and 5 forms), generation_config.json (optional) and the
 * safetensors weights (one file or shards listed in model.safetensors.index.json), mmap'd and validated: every
 * tensor the architecture needs is present with the dtype and shape the config implies, and every byte range lies
 * inside its file without overlapping another. Tensors point into the mapping; nothing is copied. The tokenizer is
 * loaded separately (kiln/tokenizer.h) so tools that need only one of the two do not pay for the other.
 *
 * Weight layout follows PyTorch's nn.Linear: a projection from `in` to `out` features is a row-major [out][in]
 * matrix, so y = W x reads W row by row.
 */
#ifndef KILN_MODEL_H
#define KILN_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kiln_dtype { KILN_F32 = 0, KILN_F16 = 1, KILN_BF16 = 2 } kiln_dtype;

/* Bytes per element; "F32", "F16", "BF16". */
size_t kiln_dtype_size(kiln_dtype dt);
const char *kiln_dtype_name(kiln_dtype dt);

/* A read-only view of a tensor (row-major, contiguous). `data` is NULL for a tensor that is absent (an optional
 * bias, or lm_head when embeddings are tied). */
typedef struct kiln_tensor {
  const void *data;
  kiln_dtype dtype;
  int ndim;
  int64_t shape[4];
} kiln_tensor;

int64_t kiln_tensor_numel(const kiln_tensor *t);

typedef enum kiln_arch { KILN_ARCH_QWEN3 = 0, KILN_ARCH_LLAMA = 1 } kiln_arch;

typedef enum kiln_rope_type { KILN_ROPE_DEFAULT = 0, KILN_ROPE_LLAMA3 = 1 } kiln_rope_type;

#define KILN_MAX_EOS 8

typedef struct kiln_config {
  kiln_arch arch;
  int vocab_size;
  int hidden_size;        /* d_model */
  int intermediate_size;  /* SwiGLU hidden width */
  int n_layers;
  int n_heads;            /* query heads */
  int n_kv_heads;         /* key/value heads (GQA: n_heads % n_kv_heads == 0) */
  int head_dim;           /* as given by config.json; hidden_size / n_heads only when absent */
  int max_position_embeddings;
  float rms_norm_eps;
  double rope_theta;
  kiln_rope_type rope_type;
  /* llama3 rope scaling (rope_type == KILN_ROPE_LLAMA3) */
  double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
  int rope_original_max_position;
  bool tie_word_embeddings;
  bool attention_bias;    /* q/k/v projections carry biases */
  bool qk_norm;           /* per-head RMSNorm of q and k before RoPE (Qwen3) */
  kiln_dtype torch_dtype; /* as declared by config.json (informational) */
  int bos_token_id;       /* -1 when none */
  int eos_token_ids[KILN_MAX_EOS]; /* generation_config.json's list (when not null), else config.json's */
  int n_eos;
} kiln_config;

typedef struct kiln_layer_weights {
  kiln_tensor attn_norm;           /* [hidden] input_layernorm */
  kiln_tensor wq, wk, wv, wo;      /* [n_heads*head_dim][hidden], [n_kv*hd][hidden] x2, [hidden][n_heads*hd] */
  kiln_tensor bq, bk, bv;          /* biases when attention_bias, else data == NULL */
  kiln_tensor bo;                  /* [hidden] o_proj bias when attention_bias (HF Llama/Qwen3), else NULL data */
  kiln_tensor q_norm, k_norm;      /* [head_dim] when qk_norm, else data == NULL */
  kiln_tensor ffn_norm;            /* [hidden] post_attention_layernorm */
  kiln_tensor w_gate, w_up;        /* [intermediate][hidden] */
  kiln_tensor w_down;              /* [hidden][intermediate] */
} kiln_layer_weights;

typedef struct kiln_model {
  kiln_config cfg;
  kiln_tensor embed;               /* [vocab][hidden] model.embed_tokens */
  kiln_tensor final_norm;          /* [hidden] model.norm */
  kiln_tensor lm_head;             /* [vocab][hidden]; equals `embed` when tied */
  kiln_layer_weights *layers;      /* [n_layers] */
  char *dir;                       /* checkpoint directory (NULL for random weights) */
  size_t weight_bytes;             /* bytes of all weight tensors, as stored */
  void *impl;                      /* mappings / owned buffers (private) */
} kiln_model;

/* Progress of a load: called with bytes done and total (for a progress bar). May be NULL. */
typedef void (*kiln_progress_fn)(void *user, uint64_t done, uint64_t total);

/* Parses config.json text. `path` is used in error messages only. */
int kiln_config_parse(kiln_config *cfg, const char *json, size_t len, const char *path);
/* Reads DIR/config.json and, when present, DIR/generation_config.json. */
int kiln_config_load(kiln_config *cfg, const char *dir);
/* Reads one config.json at `path` (e.g. bench/configs/qwen3-0.6b.json for --random-weights). */
int kiln_config_load_file(kiln_config *cfg, const char *path);

/* Loads the checkpoint in `dir`. On error *out is NULL and kiln_last_error() names the file and the problem. */
int kiln_model_load(kiln_model **out, const char *dir, kiln_progress_fn progress, void *user);
/* Builds a model of the given config with random weights of dtype `dt` (normal, std 0.02; norms near 1), for
 * benchmarks. Deterministic in `seed`. */
int kiln_model_random(kiln_model **out, const kiln_config *cfg, kiln_dtype dt, uint64_t seed);
/* Frees the model and unmaps its files. Accepts NULL. */
void kiln_model_free(kiln_model *m);

#ifdef __cplusplus
}
#endif
#endif /* KILN_MODEL_H */
