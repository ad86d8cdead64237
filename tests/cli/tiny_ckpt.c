/* Writes small Hugging Face checkpoints for the CLI tests (see tiny_ckpt.h). */
#include "tiny_ckpt.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Shapes shared by both architectures. */
enum { HIDDEN = 64, INTER = 96, LAYERS = 2, HEADS = 4, KV_HEADS = 2 };

/* Merges of the toy BPE, in rank order (the GPT-2 byte alphabet spells a space as "Ġ"). */
static const char *const merges_[][2] = {
    {"Ġ", "t"}, {"h", "e"}, {"Ġt", "he"}, {"i", "n"}, {"Ġ", "a"},  {"e", "r"},   {"o", "n"},
    {"Ġ", "s"}, {"r", "e"}, {"Ġ", "o"},   {"in", "g"}, {"a", "n"}, {"n", "d"},   {"Ġa", "nd"},
    {"Ġ", "c"}, {"a", "t"}, {"Ġc", "at"}, {"o", "u"}, {"Ġ", "w"},  {"e", "s"},   {"Ġ", "Ġ"},
};
#define N_MERGES (int)(sizeof merges_ / sizeof merges_[0])

/* GPT-2's bytes_to_unicode: printable bytes stand for themselves, the others for U+0100 onwards. */
static void byte_char_(int b, char out[3]) {
  int cp;
  if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) {
    cp = b;
  } else {
    int n = 0;
    for (int x = 0; x < b; x++)
      if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) n++;
    cp = 256 + n;
  }
  if (cp < 0x80) {
    out[0] = (char)cp;
    out[1] = 0;
  } else {
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    out[2] = 0;
  }
}

static json_t *added_token_(int id, const char *content) {
  return json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", id, "content", content, "single_word", 0, "lstrip", 0,
                   "rstrip", 0, "normalized", 0, "special", 1);
}

static json_t *tokenizer_json_(tiny_arch arch, tiny_info *info) {
  json_t *vocab = json_object();
  char ch[3];
  for (int b = 0; b < 256; b++) {
    byte_char_(b, ch);
    json_object_set_new(vocab, ch, json_integer(b));
  }
  json_t *merges = json_array();
  int id = 256;
  for (int i = 0; i < N_MERGES; i++, id++) {
    char joined[64];
    snprintf(joined, sizeof joined, "%s%s", merges_[i][0], merges_[i][1]);
    json_object_set_new(vocab, joined, json_integer(id));
    /* Qwen3's file writes merges as pairs, older files as "a b" strings: one of each form. */
    if (arch == TINY_QWEN3) json_array_append_new(merges, json_pack("[s,s]", merges_[i][0], merges_[i][1]));
    else {
      char pair[64];
      snprintf(pair, sizeof pair, "%s %s", merges_[i][0], merges_[i][1]);
      json_array_append_new(merges, json_string(pair));
    }
  }
  json_t *added = json_array();
  info->eos_id = id++;
  json_array_append_new(added, added_token_(info->eos_id, "<|endoftext|>"));
  info->bos_id = -1;
  json_t *post = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 0,
                           "use_regex", 0);
  if (arch == TINY_LLAMA) {
    info->bos_id = id++;
    json_array_append_new(added, added_token_(info->bos_id, "<|begin_of_text|>"));
    json_decref(post);
    post = json_pack(
        "{s:s, s:[{s:{s:s,s:i}},{s:{s:s,s:i}}], s:[], s:{s:{s:s,s:[i],s:[s]}}}", "type", "TemplateProcessing",
        "single", "SpecialToken", "id", "<|begin_of_text|>", "type_id", 0, "Sequence", "id", "A", "type_id", 0,
        "pair", "special_tokens", "<|begin_of_text|>", "id", "<|begin_of_text|>", "ids", info->bos_id, "tokens",
        "<|begin_of_text|>");
  }
  info->n_vocab = id;
  const char *regex = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                      "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  return json_pack(
      "{s:s, s:n, s:n, s:o, s:{s:s}, s:{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, {s:s, s:b, s:b, s:b}]}, s:o, "
      "s:{s:s, s:b, s:b, s:b}, s:{s:s, s:n, s:n, s:s, s:s, s:b, s:b, s:b, s:o, s:o}}",
      "version", "1.0", "truncation", "padding", "added_tokens", added, "normalizer", "type", "NFC", "pre_tokenizer",
      "type", "Sequence", "pretokenizers", "type", "Split", "pattern", "Regex", regex, "behavior", "Isolated",
      "invert", 0, "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 0, "use_regex", 0, "post_processor",
      post, "decoder", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 0, "use_regex", 0, "model", "type",
      "BPE", "dropout", "unk_token", "continuing_subword_prefix", "", "end_of_word_suffix", "", "fuse_unk", 0,
      "byte_fallback", 0, "ignore_merges", 0, "vocab", vocab, "merges", merges);
}

static json_t *config_json_(tiny_arch arch, const tiny_info *info) {
  if (arch == TINY_QWEN3)
    return json_pack("{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:b, s:s, s:i, s:b, s:s}",
                     "architectures", "Qwen3ForCausalLM", "model_type", "qwen3", "vocab_size", info->n_vocab,
                     "hidden_size", HIDDEN, "intermediate_size", INTER, "num_hidden_layers", LAYERS,
                     "num_attention_heads", HEADS, "num_key_value_heads", KV_HEADS, "head_dim", 32,
                     "max_position_embeddings", TINY_MAX_POS, "rms_norm_eps", 1e-6, "rope_theta", 1000000.0,
                     "tie_word_embeddings", 1, "torch_dtype", "float32", "eos_token_id", info->eos_id,
                     "attention_bias", 0, "hidden_act", "silu");
  return json_pack("{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:b, s:s, s:i, s:[i], s:b, s:b, s:s, "
                   "s:{s:s, s:f, s:f, s:f, s:f, s:i}}",
                   "architectures", "LlamaForCausalLM", "model_type", "llama", "vocab_size", info->n_vocab,
                   "hidden_size", HIDDEN, "intermediate_size", INTER, "num_hidden_layers", LAYERS,
                   "num_attention_heads", HEADS, "num_key_value_heads", KV_HEADS, "head_dim", 16,
                   "max_position_embeddings", TINY_MAX_POS, "rms_norm_eps", 1e-5, "tie_word_embeddings", 0,
                   "dtype", "float32", "bos_token_id", info->bos_id, "eos_token_id", info->eos_id, "attention_bias", 0,
                   "mlp_bias", 0, "hidden_act", "silu", "rope_parameters", "rope_type", "llama3", "rope_theta",
                   500000.0, "factor", 8.0, "low_freq_factor", 1.0, "high_freq_factor", 4.0,
                   "original_max_position_embeddings", 64);
}

/* ---- safetensors ------------------------------------------------------------------------------------------- */

typedef struct tensor_ {
  char name[96];
  int ndim;
  int64_t shape[2];
  float *data;
} tensor_;

static uint64_t rng_;

static double uniform_(void) { /* splitmix64 -> [0, 1) */
  uint64_t z = (rng_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (z >> 11) * (1.0 / 9007199254740992.0);
}

/* A matrix of uniform values in +-scale, or a norm vector near 1 (so norms are visibly not all ones). */
static int add_(tensor_ *t, int *n, const char *name, int64_t rows, int64_t cols, double scale, bool norm) {
  tensor_ *x = &t[(*n)++];
  snprintf(x->name, sizeof x->name, "%s", name);
  x->ndim = cols ? 2 : 1;
  x->shape[0] = rows;
  x->shape[1] = cols;
  int64_t numel = rows * (cols ? cols : 1);
  if (!(x->data = malloc((size_t)numel * sizeof(float)))) return -1;
  for (int64_t i = 0; i < numel; i++)
    x->data[i] = (float)(norm ? 1.0 + 0.2 * (uniform_() - 0.5) : scale * (2 * uniform_() - 1));
  return 0;
}

static int write_safetensors_(const char *path, tensor_ *t, int n) {
  json_t *hdr = json_object();
  uint64_t off = 0;
  for (int i = 0; i < n; i++) {
    uint64_t bytes = (uint64_t)t[i].shape[0] * (t[i].ndim == 2 ? (uint64_t)t[i].shape[1] : 1) * 4;
    json_t *shape = t[i].ndim == 2 ? json_pack("[I,I]", (json_int_t)t[i].shape[0], (json_int_t)t[i].shape[1])
                                   : json_pack("[I]", (json_int_t)t[i].shape[0]);
    json_object_set_new(hdr, t[i].name,
                        json_pack("{s:s, s:o, s:[I,I]}", "dtype", "F32", "shape", shape, "data_offsets",
                                  (json_int_t)off, (json_int_t)(off + bytes)));
    off += bytes;
  }
  json_object_set_new(hdr, "__metadata__", json_pack("{s:s}", "format", "pt"));
  char *text = json_dumps(hdr, JSON_COMPACT);
  json_decref(hdr);
  if (!text) return -1;
  size_t len = strlen(text), padded = (len + 7) / 8 * 8; /* the data starts 8-byte aligned, as HF writes it */
  FILE *f = fopen(path, "wb");
  int rc = f ? 0 : -1;
  unsigned char le[8];
  for (int i = 0; i < 8; i++) le[i] = (unsigned char)((uint64_t)padded >> (8 * i));
  if (rc == 0 && (fwrite(le, 1, 8, f) != 8 || fwrite(text, 1, len, f) != len)) rc = -1;
  for (size_t i = len; rc == 0 && i < padded; i++)
    if (fputc(' ', f) == EOF) rc = -1;
  for (int i = 0; rc == 0 && i < n; i++) {
    size_t numel = (size_t)t[i].shape[0] * (t[i].ndim == 2 ? (size_t)t[i].shape[1] : 1);
    if (fwrite(t[i].data, sizeof(float), numel, f) != numel) rc = -1; /* little-endian host */
  }
  if (f && fclose(f) != 0) rc = -1;
  free(text);
  return rc;
}

static int write_weights_(const char *path, tiny_arch arch, const tiny_info *info) {
  tensor_ t[4 + LAYERS * 13];
  int n = 0, rc = 0;
  int hd = arch == TINY_QWEN3 ? 32 : 16;
  rng_ = arch == TINY_QWEN3 ? 0x5157454E33ull : 0x4C4C414D41ull;
  /* Large enough weights that the next-token distribution is far from flat and greedy choices are not ties. */
  rc |= add_(t, &n, "model.embed_tokens.weight", info->n_vocab, HIDDEN, 1.0, false);
  for (int l = 0; l < LAYERS && rc == 0; l++) {
    char name[96];
#define W(suffix, rows, cols, scale, norm)                                    \
  snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix);               \
  rc |= add_(t, &n, name, rows, cols, scale, norm);
    W("input_layernorm.weight", HIDDEN, 0, 0, true);
    W("self_attn.q_proj.weight", HEADS * hd, HIDDEN, 0.25, false);
    W("self_attn.k_proj.weight", KV_HEADS * hd, HIDDEN, 0.25, false);
    W("self_attn.v_proj.weight", KV_HEADS * hd, HIDDEN, 0.25, false);
    W("self_attn.o_proj.weight", HIDDEN, HEADS * hd, 0.25, false);
    if (arch == TINY_QWEN3) {
      W("self_attn.q_norm.weight", hd, 0, 0, true);
      W("self_attn.k_norm.weight", hd, 0, 0, true);
    }
    W("post_attention_layernorm.weight", HIDDEN, 0, 0, true);
    W("mlp.gate_proj.weight", INTER, HIDDEN, 0.25, false);
    W("mlp.up_proj.weight", INTER, HIDDEN, 0.25, false);
    W("mlp.down_proj.weight", HIDDEN, INTER, 0.2, false);
#undef W
  }
  rc |= add_(t, &n, "model.norm.weight", HIDDEN, 0, 0, true);
  if (arch == TINY_LLAMA) rc |= add_(t, &n, "lm_head.weight", info->n_vocab, HIDDEN, 0.5, false);
  if (rc == 0) rc = write_safetensors_(path, t, n);
  for (int i = 0; i < n; i++) free(t[i].data);
  return rc;
}

static int dump_(json_t *v, const char *dir, const char *name) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int rc = v ? json_dump_file(v, path, JSON_INDENT(2)) : -1;
  json_decref(v);
  if (rc != 0) fprintf(stderr, "tiny_ckpt: cannot write %s\n", path);
  return rc;
}

int tiny_ckpt_write(const char *dir, tiny_arch arch, tiny_info *info) {
  tiny_info local;
  if (!info) info = &local;
  if (mkdir(dir, 0755) != 0) {
    fprintf(stderr, "tiny_ckpt: mkdir %s: %s\n", dir, strerror(errno));
    return -1;
  }
  if (dump_(tokenizer_json_(arch, info), dir, "tokenizer.json") || dump_(config_json_(arch, info), dir, "config.json"))
    return -1;
  if (dump_(json_pack("{s:i, s:[i]}", "bos_token_id", info->bos_id >= 0 ? info->bos_id : info->eos_id,
                      "eos_token_id", info->eos_id),
            dir, "generation_config.json"))
    return -1;
  char path[4096];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  if (write_weights_(path, arch, info) != 0) {
    fprintf(stderr, "tiny_ckpt: cannot write %s\n", path);
    return -1;
  }
  return 0;
}
