/*
 * kiln/tokenizer.h: Hugging Face tokenizer.json (byte-level BPE), token-exact with the tokenizers library.
 *
 * Pipeline, as tokenizers runs it: added/special tokens are matched first and split out of the text; each
 * remaining piece is normalised (NFC when the file asks for it), pre-tokenised (Split with the file's regex,
 * PCRE2 with UTF and UCP, then ByteLevel), and each word is merged by BPE rank (or taken whole when
 * ignore_merges and the word is in the vocabulary). Decoding maps tokens back through the ByteLevel alphabet to
 * raw bytes; a token's bytes need not be valid UTF-8 on their own.
 */
#ifndef KILN_TOKENIZER_H
#define KILN_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_tokenizer kiln_tokenizer;

/* Loads a tokenizer.json file. Errors name the file and the problem. */
int kiln_tokenizer_load(kiln_tokenizer **out, const char *path);
/* Loads from JSON text in memory (`path` is for messages only); used by the fuzzer. */
int kiln_tokenizer_load_mem(kiln_tokenizer **out, const char *json, size_t len, const char *path);
void kiln_tokenizer_free(kiln_tokenizer *tok);

/* Encodes UTF-8 text as HF `encode(text, add_special_tokens=False)` does. *ids is malloc'd; free() it. Invalid
 * UTF-8 input is an error (KILN_EINVAL). */
int kiln_tokenizer_encode(const kiln_tokenizer *tok, const char *text, size_t len, int32_t **ids, size_t *n_ids);

/* The raw bytes a token stands for (ByteLevel-decoded; special tokens give their content). The pointer stays valid
 * while the tokenizer lives. KILN_ERANGE for an id out of range. */
int kiln_tokenizer_token_bytes(const kiln_tokenizer *tok, int32_t id, const char **bytes, size_t *len);
/* Decodes ids to a malloc'd, NUL-terminated string (may contain invalid UTF-8 where the ids split a character;
 * such bytes are replaced by U+FFFD as tokenizers does). */
int kiln_tokenizer_decode(const kiln_tokenizer *tok, const int32_t *ids, size_t n, char **text, size_t *len);

/* Number of ids (vocabulary plus added tokens; the largest id + 1). */
int kiln_tokenizer_n_vocab(const kiln_tokenizer *tok);
/* The id of a token's exact string (vocabulary entry or added token), or -1. */
int32_t kiln_tokenizer_find(const kiln_tokenizer *tok, const char *token);
/* True when the id is an added token marked special. */
bool kiln_tokenizer_is_special(const kiln_tokenizer *tok, int32_t id);

#ifdef __cplusplus
}
#endif
#endif /* KILN_TOKENIZER_H */
