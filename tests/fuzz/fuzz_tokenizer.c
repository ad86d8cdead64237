/*
 * libFuzzer: the tokenizer.
 *  - Input starting with '{': a tokenizer.json for kiln_tokenizer_load_mem. When it loads, a few fixed texts are
 *    encoded and decoded; every id must name a token.
 *  - Any other input: text for a small valid tokenizer (byte-level vocabulary, merges, added tokens raw and
 *    normalised, single_word, NFC, the Qwen split regex, ByteLevel). Valid UTF-8 must encode to ids that decode
 *    back to the normalised text (the added tokens start and end with brackets, which compose with nothing, so
 *    normalising the whole text equals normalising the pieces between them); invalid UTF-8 must be refused.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/status.h"
#include "kiln/tokenizer.h"
#include "model/tokenizer_impl.h"

static kiln_tokenizer *g_small;

static kiln_tokenizer *small_tokenizer(void) {
  if (g_small) return g_small;
  const tok_bytelevel *bl = tok_bytelevel_table();
  static char j[32768];
  size_t o = 0;
  o += (size_t)snprintf(
      j + o, sizeof j - o,
      "{\"added_tokens\":["
      "{\"id\":0,\"content\":\"[END]\",\"special\":true,\"normalized\":false},"
      "{\"id\":0,\"content\":\"[M]\",\"special\":true,\"single_word\":true,\"normalized\":false},"
      "{\"id\":0,\"content\":\"the\",\"single_word\":true,\"normalized\":true},"
      "{\"id\":0,\"content\":\"\\u0151\",\"normalized\":true}],"
      "\"normalizer\":{\"type\":\"NFC\"},\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":["
      "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?"
      "\\\\p{L}+|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},"
      "\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]},"
      "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"vocab\":{");
  for (int b = 0; b < 256; b++) {
    char ch[3] = {bl->enc[b][0], bl->enc[b][1], 0};
    ch[bl->enc_len[b]] = 0;
    o += (size_t)snprintf(j + o, sizeof j - o, "\"%s\":%d,", b == '"' ? "\\\"" : b == '\\' ? "\\\\" : ch, b);
  }
  o += (size_t)snprintf(j + o, sizeof j - o,
                        "\"th\":256,\"the\":257,\"\\u0120t\":258,\"\\u0120th\":259,\"\\u0120the\":260,\"in\":261,\"ing\":262},"
                        "\"merges\":[[\"t\",\"h\"],[\"th\",\"e\"],[\"\\u0120\",\"t\"],[\"\\u0120t\",\"h\"],"
                        "[\"\\u0120th\",\"e\"],"
                        "[\"i\",\"n\"],[\"in\",\"g\"]]}}");
  if (o >= sizeof j || kiln_tokenizer_load_mem(&g_small, j, o, "fuzz/small.json") != KILN_OK) __builtin_trap();
  return g_small;
}

static void check_ids(const kiln_tokenizer *t, const int32_t *ids, size_t n) {
  for (size_t i = 0; i < n; i++) {
    const char *b;
    size_t l;
    if (kiln_tokenizer_token_bytes(t, ids[i], &b, &l) != KILN_OK) __builtin_trap();
  }
}

static void fuzz_json(const uint8_t *data, size_t size) {
  kiln_tokenizer *t = NULL;
  if (kiln_tokenizer_load_mem(&t, (const char *)data, size, "fuzz/tokenizer.json") != KILN_OK) {
    if (t || !kiln_last_error()[0]) __builtin_trap();
    return;
  }
  static const char *texts[] = {"Hello, world! It's 2024.\n", "  \t\r\n", "e\xcc\x81 \xe4\xb8\xad\xf0\x9f\x99\x82",
                                "<|endoftext|>a<s>", ""};
  for (size_t k = 0; k < sizeof texts / sizeof texts[0]; k++) {
    int32_t *ids = NULL;
    size_t n = 0;
    if (kiln_tokenizer_encode(t, texts[k], strlen(texts[k]), &ids, &n) == KILN_OK) {
      check_ids(t, ids, n);
      char *s = NULL;
      if (kiln_tokenizer_decode(t, ids, n, &s, NULL) != KILN_OK) __builtin_trap();
      free(s);
    }
    free(ids);
  }
  kiln_tokenizer_free(t);
}

static void fuzz_text(const uint8_t *data, size_t size) {
  const kiln_tokenizer *t = small_tokenizer();
  const char *s = (const char *)data;
  int32_t *ids = NULL;
  size_t n = 0;
  int rc = kiln_tokenizer_encode(t, s, size, &ids, &n);
  bool valid = tok_utf8_check(s, size) == size;
  if (!valid) {
    if (rc != KILN_EINVAL || ids) __builtin_trap();
    return;
  }
  if (rc != KILN_OK) __builtin_trap();
  check_ids(t, ids, n);
  char *back = NULL, *norm = NULL;
  size_t bl = 0, nl = 0;
  bool owned = false;
  if (kiln_tokenizer_decode(t, ids, n, &back, &bl) != KILN_OK) __builtin_trap();
  if (tok_normalize(t, s, size, &norm, &nl, &owned) != KILN_OK) __builtin_trap();
  /* Every byte of the normalised text comes back: no token loses or invents text. */
  if (bl != nl || memcmp(back, norm, nl) != 0) __builtin_trap();
  if (owned) free(norm);
  free(back);
  free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 0 && data[0] == '{')
    fuzz_json(data, size);
  else
    fuzz_text(data, size);
  return 0;
}
