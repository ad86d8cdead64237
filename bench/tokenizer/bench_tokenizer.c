/*
 * bench_tokenizer: tokenizer speed on one core. Encodes English prose (the KJV bible, 4.3 MB, from the `bible`
 * command of Debian's bible-kjv, or -f FILE) with a tokenizer.json (default: the Qwen3 one), as one text and line by
 * line (short calls, as prompts are), and decodes it back; checks decode(encode(text)) == text before timing.
 * Prints a table, and the JSON record for bench/results/ with --json.
 *
 *   bench_tokenizer [-t tokenizer.json] [-f text] [-r repeats] [--json]
 */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>

#include "kiln/status.h"
#include "kiln/tokenizer.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static char *slurp(FILE *f, size_t *len) {
  size_t cap = 1 << 20, n = 0;
  char *buf = malloc(cap);
  while (buf) {
    size_t r = fread(buf + n, 1, cap - n, f);
    n += r;
    if (n < cap) break;
    char *p = realloc(buf, cap * 2);
    if (!p) {
      free(buf);
      return NULL;
    }
    buf = p;
    cap *= 2;
  }
  *len = n;
  return buf;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void cpu_model(char *out, size_t cap) {
  snprintf(out, cap, "unknown");
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    if (!strncmp(line, "model name", 10)) {
      char *c = strchr(line, ':');
      if (c) {
        c += 2;
        c[strcspn(c, "\n")] = 0;
        snprintf(out, cap, "%s", c);
      }
      break;
    }
  }
  fclose(f);
}

static void shell_line(const char *cmd, char *out, size_t cap) {
  snprintf(out, cap, "unknown");
  FILE *p = popen(cmd, "r");
  if (!p) return;
  if (fgets(out, (int)cap, p)) out[strcspn(out, "\n")] = 0;
  pclose(p);
}

int main(int argc, char **argv) {
  const char *tok_path = "third_party/qwen3/tokenizer.json", *text_path = NULL;
  int repeats = 5;
  int json = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-t") && i + 1 < argc)
      tok_path = argv[++i];
    else if (!strcmp(argv[i], "-f") && i + 1 < argc)
      text_path = argv[++i];
    else if (!strcmp(argv[i], "-r") && i + 1 < argc)
      repeats = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--json"))
      json = 1;
    else {
      fprintf(stderr, "usage: %s [-t tokenizer.json] [-f text] [-r repeats] [--json]\n", argv[0]);
      return 2;
    }
  }
  if (repeats < 1 || repeats > 100) repeats = 5;

  /* One core: the number is per core, and the shared machine's other core stays out of it. */
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(sched_getcpu() >= 0 ? sched_getcpu() : 0, &set);
  sched_setaffinity(0, sizeof set, &set);

  size_t len = 0;
  char *text = NULL;
  FILE *f = text_path ? fopen(text_path, "rb") : popen("bible 'Genesis 1:1-Revelation 22:21'", "r");
  if (f) {
    text = slurp(f, &len);
    if (text_path)
      fclose(f);
    else
      pclose(f);
  }
  if (!text || len == 0) {
    fprintf(stderr, "bench_tokenizer: no text (%s)\n", text_path ? text_path : "the bible command of bible-kjv");
    return 1;
  }

  double load[3];
  kiln_tokenizer *t = NULL;
  for (int k = 0; k < 3; k++) {
    kiln_tokenizer_free(t);
    double t0 = now_s();
    if (kiln_tokenizer_load(&t, tok_path) != KILN_OK) {
      fprintf(stderr, "bench_tokenizer: %s\n", kiln_last_error());
      return 1;
    }
    load[k] = now_s() - t0;
  }
  qsort(load, 3, sizeof load[0], cmp_double);

  /* Check first: the text must come back byte for byte (prose is NFC already). */
  int32_t *ids = NULL;
  size_t n = 0;
  char *back = NULL;
  size_t bl = 0;
  if (kiln_tokenizer_encode(t, text, len, &ids, &n) != KILN_OK || kiln_tokenizer_decode(t, ids, n, &back, &bl) != KILN_OK) {
    fprintf(stderr, "bench_tokenizer: %s\n", kiln_last_error());
    return 1;
  }
  if (bl != len || memcmp(back, text, len) != 0) {
    fprintf(stderr, "bench_tokenizer: decode(encode(text)) differs from the text\n");
    return 1;
  }
  free(back);

  double *enc = calloc((size_t)repeats, sizeof *enc), *lines = calloc((size_t)repeats, sizeof *lines),
         *dec = calloc((size_t)repeats, sizeof *dec);
  if (!enc || !lines || !dec) return 1;
  size_t n_lines = 0;
  for (int r = 0; r < repeats; r++) {
    int32_t *ids2;
    size_t n2;
    double t0 = now_s();
    if (kiln_tokenizer_encode(t, text, len, &ids2, &n2) != KILN_OK || n2 != n) return 1;
    enc[r] = (double)len / (now_s() - t0) / 1e6;
    free(ids2);

    t0 = now_s();
    n_lines = 0;
    for (const char *p = text, *end = text + len; p < end;) {
      const char *nl = memchr(p, '\n', (size_t)(end - p));
      size_t l = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
      if (kiln_tokenizer_encode(t, p, l, &ids2, &n2) != KILN_OK) return 1;
      free(ids2);
      p += l;
      n_lines++;
    }
    lines[r] = (double)len / (now_s() - t0) / 1e6;

    t0 = now_s();
    if (kiln_tokenizer_decode(t, ids, n, &back, &bl) != KILN_OK) return 1;
    dec[r] = (double)len / (now_s() - t0) / 1e6;
    free(back);
  }
  qsort(enc, (size_t)repeats, sizeof *enc, cmp_double);
  qsort(lines, (size_t)repeats, sizeof *lines, cmp_double);
  qsort(dec, (size_t)repeats, sizeof *dec, cmp_double);
  double enc_med = enc[repeats / 2], lines_med = lines[repeats / 2], dec_med = dec[repeats / 2];

  char cpu[256], commit[64], date[64], host[128];
  cpu_model(cpu, sizeof cpu);
  shell_line("git rev-parse --short HEAD 2>/dev/null", commit, sizeof commit);
  time_t now = time(NULL);
  strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
  struct utsname u;
  snprintf(host, sizeof host, "%s", uname(&u) == 0 ? u.machine : "?");

  printf("tokenizer %s: %d ids, load %.3f s (median of 3)\n", tok_path, kiln_tokenizer_n_vocab(t), load[1]);
  printf("text: %zu bytes, %zu lines, %zu tokens (%.2f bytes/token)\n", len, n_lines, n, (double)len / (double)n);
  printf("encode, whole text   %8.2f MB/s (median of %d, best %.2f)\n", enc_med, repeats, enc[repeats - 1]);
  printf("encode, line by line %8.2f MB/s\n", lines_med);
  printf("decode               %8.2f MB/s\n", dec_med);
  printf("target: encode >= 5 MB/s of English prose on one core: %s\n", enc_med >= 5.0 && lines_med >= 5.0 ? "met" : "NOT met");
  if (json) {
    printf("{\"bench\": \"tokenizer-encode\", \"date\": \"%s\", \"commit\": \"%s\", \"machine\": \"%s, %s, 1 core "
           "(pinned)\", \"tokenizer\": \"%s\", \"n_vocab\": %d, \"text\": \"KJV bible (bible-kjv), %zu bytes, %zu "
           "lines\", \"tokens\": %zu, \"load_s\": %.3f, \"encode_mb_s\": %.2f, \"encode_best_mb_s\": %.2f, "
           "\"encode_lines_mb_s\": %.2f, \"decode_mb_s\": %.2f, \"repeats\": %d, \"target_mb_s\": 5}\n",
           date, commit, cpu, host, tok_path, kiln_tokenizer_n_vocab(t), len, n_lines, n, load[1], enc_med,
           enc[repeats - 1], lines_med, dec_med, repeats);
  }
  free(enc);
  free(lines);
  free(dec);
  free(ids);
  free(text);
  kiln_tokenizer_free(t);
  return 0;
}
