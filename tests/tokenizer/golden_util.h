/* Helpers of the tokenizer tests: reading files and JSON lines, comparing id sequences. */
#ifndef KILN_TEST_TOKENIZER_GOLDEN_UTIL_H
#define KILN_TEST_TOKENIZER_GOLDEN_UTIL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/tokenizer.h"

/* Path under the source tree ($KILN_SOURCE_DIR, else the working directory), in a static buffer per call slot. */
const char *tt_src_path(int slot, const char *rel);
/* Whole file, NUL-terminated; NULL when it cannot be read. */
char *tt_read_file(const char *path, size_t *len);
/* One JSON value per line (strings may hold NUL). *n gets the count; NULL on error (message on stderr). */
json_t **tt_read_jsonl(const char *path, size_t *n);
void tt_free_jsonl(json_t **v, size_t n);
/* Encodes each string of lines[i * stride] and compares with golden[i] (arrays of ids). Prints the first few
 * mismatches with context and returns how many lines differ (or failed to encode). */
size_t tt_check_ids(const kiln_tokenizer *t, const char *label, json_t **lines, size_t n_lines, size_t stride,
                    json_t **golden, size_t n_golden);

#endif
