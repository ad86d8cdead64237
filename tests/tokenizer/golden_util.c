/* Helpers of the tokenizer tests (golden_util.h). */
#include "golden_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/status.h"

const char *tt_src_path(int slot, const char *rel) {
  static char buf[4][4096];
  const char *src = getenv("KILN_SOURCE_DIR");
  snprintf(buf[slot & 3], sizeof buf[0], "%s/%s", src && *src ? src : ".", rel);
  return buf[slot & 3];
}

char *tt_read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *buf = NULL;
  size_t n = 0, cap = 0;
  for (;;) {
    if (n + 65536 + 1 > cap) {
      cap = (n + 65536 + 1) * 2;
      char *p = realloc(buf, cap);
      if (!p) {
        free(buf);
        fclose(f);
        return NULL;
      }
      buf = p;
    }
    size_t r = fread(buf + n, 1, 65536, f);
    n += r;
    if (r < 65536) break;
  }
  int err = ferror(f);
  fclose(f);
  if (err) {
    free(buf);
    return NULL;
  }
  buf[n] = 0;
  if (len) *len = n;
  return buf;
}

json_t **tt_read_jsonl(const char *path, size_t *n) {
  size_t len;
  char *text = tt_read_file(path, &len);
  if (!text) {
    fprintf(stderr, "%s: cannot read\n", path);
    return NULL;
  }
  size_t cap = 1024, count = 0;
  json_t **v = malloc(cap * sizeof *v);
  char *p = text, *end = text + len;
  while (v && p < end) {
    char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
    if (l) {
      json_error_t e;
      json_t *j = json_loadb(p, l, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
      if (!j) {
        fprintf(stderr, "%s:%zu: %s\n", path, count + 1, e.text);
        tt_free_jsonl(v, count);
        free(text);
        return NULL;
      }
      if (count == cap) {
        json_t **q = realloc(v, 2 * cap * sizeof *v);
        if (!q) break;
        v = q;
        cap *= 2;
      }
      v[count++] = j;
    }
    p += l + 1;
  }
  free(text);
  *n = count;
  return v;
}

void tt_free_jsonl(json_t **v, size_t n) {
  if (!v) return;
  for (size_t i = 0; i < n; i++) json_decref(v[i]);
  free(v);
}

static void print_ids(const char *what, const int32_t *ids, size_t n, size_t from) {
  fprintf(stderr, "    %s (%zu ids) from %zu:", what, n, from);
  for (size_t i = from; i < n && i < from + 12; i++) fprintf(stderr, " %d", ids[i]);
  fprintf(stderr, "\n");
}

size_t tt_check_ids(const kiln_tokenizer *t, const char *label, json_t **lines, size_t n_lines, size_t stride,
                    json_t **golden, size_t n_golden) {
  size_t bad = 0;
  size_t want_lines = (n_lines + stride - 1) / stride;
  if (want_lines != n_golden) {
    fprintf(stderr, "%s: %zu golden lines for %zu corpus lines\n", label, n_golden, want_lines);
    return n_golden > want_lines ? n_golden : want_lines;
  }
  for (size_t g = 0; g < n_golden; g++) {
    json_t *line = lines[g * stride], *gold = golden[g];
    size_t ng = json_array_size(gold);
    int32_t *want = malloc((ng ? ng : 1) * sizeof *want);
    if (!want) return n_golden;
    for (size_t k = 0; k < ng; k++) want[k] = (int32_t)json_integer_value(json_array_get(gold, k));
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = kiln_tokenizer_encode(t, json_string_value(line), json_string_length(line), &ids, &n);
    size_t diff = 0;
    while (!rc && diff < n && diff < ng && ids[diff] == want[diff]) diff++;
    if (rc || n != ng || diff != n) {
      if (++bad <= 5) {
        char *dump = json_dumps(line, JSON_ENCODE_ANY | JSON_ENSURE_ASCII);
        fprintf(stderr, "%s: line %zu differs: %.200s\n", label, g * stride + 1, dump ? dump : "?");
        free(dump);
        if (rc)
          fprintf(stderr, "    encode failed: %s\n", kiln_last_error());
        else {
          size_t from = diff > 3 ? diff - 3 : 0;
          print_ids("kiln", ids, n, from);
          print_ids("HF  ", want, ng, from);
        }
      }
    }
    free(ids);
    free(want);
  }
  return bad;
}
