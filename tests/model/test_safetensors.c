/* The safetensors parser on images built in memory: a good file, and each way a header can be wrong, each with a
 * one-line message naming the file (and the tensor, where there is one). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kiln/status.h"
#include "model/ckpt_writer.h"
#include "model/safetensors.h"

/* An image: 8-byte length (the real one unless `hlen` != UINT64_MAX), the header, then `data_len` bytes 0..255. */
static uint8_t *image(const char *header, uint64_t hlen, size_t data_len, size_t *size) {
  size_t hl = strlen(header);
  *size = 8 + hl + data_len;
  uint8_t *b = malloc(*size);
  assert_non_null(b);
  if (hlen == UINT64_MAX) hlen = hl;
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)(hlen >> (8 * i));
  memcpy(b + 8, header, hl);
  for (size_t i = 0; i < data_len; i++) b[8 + hl + i] = (uint8_t)i;
  return b;
}

static void expect_bad(const char *header, uint64_t hlen, size_t data_len, int want, const char *needle) {
  size_t size;
  uint8_t *b = image(header, hlen, data_len, &size);
  kiln_st_file f;
  int rc = kiln_st_parse(&f, b, size, "x.safetensors");
  const char *msg = kiln_last_error();
  if (rc != want || strncmp(msg, "x.safetensors: ", 15) != 0 || !strstr(msg, needle))
    fail_msg("header %s: want %s '%s', got %s '%s'", header, kiln_err_name(want), needle, kiln_err_name(rc), msg);
  assert_null(strchr(msg, '\n'));
  assert_null(f.tensors);
  assert_null(f.path);
  free(b);
}

static void test_good(void **s) {
  (void)s;
  const char *h = "{\"__metadata__\":{\"format\":\"pt\"},"
                  "\"b\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[16,28]},"
                  "\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                  "\"empty\":{\"dtype\":\"F16\",\"shape\":[0,5],\"data_offsets\":[16,16]},"
                  "\"scalar\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[32,40]}}    ";
  size_t size;
  uint8_t *b = image(h, UINT64_MAX, 48, &size);
  kiln_st_file f;
  assert_int_equal(kiln_st_parse(&f, b, size, "good.safetensors"), KILN_OK);
  assert_int_equal(f.n_tensors, 4);
  assert_string_equal(f.tensors[0].name, "a"); /* sorted by name */
  assert_string_equal(f.tensors[3].name, "scalar");
  const kiln_st_tensor *t = kiln_st_find(&f, "b");
  assert_non_null(t);
  assert_int_equal(t->dtype, KILN_ST_BF16);
  assert_int_equal(t->ndim, 2);
  assert_int_equal(t->shape[0], 2);
  assert_int_equal(t->shape[1], 3);
  assert_ptr_equal(kiln_st_data(&f, t), b + 8 + strlen(h) + 16);
  assert_int_equal(kiln_st_data(&f, t)[0], 16);
  t = kiln_st_find(&f, "scalar");
  assert_int_equal(t->ndim, 0);
  assert_int_equal(kiln_st_dtype_size(t->dtype), 8);
  assert_null(kiln_st_find(&f, "c"));
  assert_null(kiln_st_find(&f, "__metadata__"));
  assert_string_equal(f.path, "good.safetensors");
  kiln_st_close(&f);
  /* An empty header object is a valid, empty file. */
  b = (free(b), image("{}", UINT64_MAX, 0, &size));
  assert_int_equal(kiln_st_parse(&f, b, size, "e"), KILN_OK);
  assert_int_equal(f.n_tensors, 0);
  assert_null(kiln_st_find(&f, "a"));
  kiln_st_close(&f);
  free(b);
}

#define T1(dtype, shape, offs) "{\"t\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":" offs "}}"

static void test_bad_length(void **s) {
  (void)s;
  kiln_st_file f;
  uint8_t tiny[5] = {0};
  assert_int_equal(kiln_st_parse(&f, tiny, sizeof tiny, "x.safetensors"), KILN_EFORMAT);
  assert_string_equal(kiln_last_error(), "x.safetensors: truncated: 5 bytes, a safetensors file needs at least 8");
  expect_bad("{}", 9999999, 4086, KILN_EFORMAT, "header length 9999999 past end of file (4096 bytes)");
  expect_bad("{}", UINT64_MAX - 1, 0, KILN_EFORMAT, "header length 18446744073709551614 past end of file");
  expect_bad("{}", 3, 0, KILN_EFORMAT, "past end of file (10 bytes)");
  expect_bad("{}", 0, 0, KILN_EFORMAT, "header does not start with a JSON object");
  expect_bad("[1, 2]", UINT64_MAX, 0, KILN_EFORMAT, "header does not start with a JSON object");
  expect_bad(" {}", UINT64_MAX, 0, KILN_EFORMAT, "header does not start with a JSON object");
  /* Over the cap: a buffer that large (calloc'd, untouched pages) with a header length just past the cap. */
  size_t big = (size_t)KILN_ST_MAX_HEADER + 64;
  uint8_t *b = calloc(1, big);
  assert_non_null(b);
  uint64_t hl = KILN_ST_MAX_HEADER + 1;
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)(hl >> (8 * i));
  b[8] = '{';
  assert_int_equal(kiln_st_parse(&f, b, big, "big.safetensors"), KILN_EFORMAT);
  assert_non_null(strstr(kiln_last_error(), "big.safetensors: header length 100000001 exceeds the limit"));
  free(b);
}

static void test_bad_json(void **s) {
  (void)s;
  expect_bad("{\"t\":", UINT64_MAX, 0, KILN_EFORMAT, "header JSON");
  expect_bad("{} trailing", UINT64_MAX, 0, KILN_EFORMAT, "header JSON");
  expect_bad("{\"t\":1}", UINT64_MAX, 0, KILN_EFORMAT, "tensor 't': entry is not an object");
  expect_bad("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
             "\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
             UINT64_MAX, 8, KILN_EFORMAT, "header JSON: duplicate object key");
  expect_bad("{\"__metadata__\":[1]}", UINT64_MAX, 0, KILN_EFORMAT, "__metadata__ is not an object");
  expect_bad("{\"__metadata__\":{\"a\":1}}", UINT64_MAX, 0, KILN_EFORMAT, "__metadata__ 'a' is not a string");
}

static void test_bad_dtype(void **s) {
  (void)s;
  expect_bad(T1("Q4_K", "[4]", "[0,4]"), UINT64_MAX, 4, KILN_EUNSUPPORTED, "tensor 't': unknown dtype 'Q4_K'");
  expect_bad("{\"t\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", UINT64_MAX, 4, KILN_EFORMAT,
             "tensor 't': missing or non-string dtype");
  expect_bad("{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", UINT64_MAX, 4, KILN_EFORMAT,
             "tensor 't': missing or non-string dtype");
}

static void test_bad_shape(void **s) {
  (void)s;
  expect_bad(T1("F32", "[-1]", "[0,4]"), UINT64_MAX, 4, KILN_EFORMAT, "shape[0] is not a non-negative integer");
  expect_bad(T1("F32", "[1.5]", "[0,4]"), UINT64_MAX, 4, KILN_EFORMAT, "shape[0] is not a non-negative integer");
  expect_bad(T1("F32", "4", "[0,4]"), UINT64_MAX, 4, KILN_EFORMAT, "missing or non-array shape");
  expect_bad(T1("F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]"), UINT64_MAX, 4, KILN_EUNSUPPORTED, "9 dimensions");
  expect_bad(T1("F32", "[4294967296,4294967296]", "[0,4]"), UINT64_MAX, 4, KILN_EFORMAT, "shape too large");
  expect_bad(T1("F32", "[4611686018427387904]", "[0,4]"), UINT64_MAX, 4, KILN_EFORMAT, "shape too large");
  /* bytes = numel * size must equal the span. */
  expect_bad(T1("F32", "[2]", "[0,4]"), UINT64_MAX, 8, KILN_EFORMAT,
             "data_offsets span 4 bytes, its F32 shape needs 8");
  expect_bad(T1("BF16", "[3]", "[0,4]"), UINT64_MAX, 8, KILN_EFORMAT, "span 4 bytes, its BF16 shape needs 6");
}

static void test_bad_offsets(void **s) {
  (void)s;
  expect_bad(T1("F32", "[1]", "[0,4,8]"), UINT64_MAX, 8, KILN_EFORMAT, "data_offsets is not a pair");
  expect_bad(T1("F32", "[1]", "[\"0\",4]"), UINT64_MAX, 8, KILN_EFORMAT, "not non-negative integers");
  expect_bad(T1("F32", "[1]", "[-4,0]"), UINT64_MAX, 8, KILN_EFORMAT, "not non-negative integers");
  expect_bad(T1("F32", "[0]", "[8,4]"), UINT64_MAX, 8, KILN_EFORMAT, "data_offsets [8, 4] end before they begin");
  expect_bad(T1("F32", "[2]", "[4,12]"), UINT64_MAX, 8, KILN_EFORMAT,
             "tensor 't': data_offsets [4, 12] past the end of the data (8 bytes)");
  /* A truncated file: the last tensor ends past the end. */
  expect_bad(T1("F32", "[1024]", "[0,4096]"), UINT64_MAX, 4000, KILN_EFORMAT, "past the end of the data (4000 bytes)");
  expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
             "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
             UINT64_MAX, 16, KILN_EFORMAT, "tensors 'a' [0, 8] and 'b' [4, 12] overlap");
  expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
             "\"z\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[16,20]},"
             "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[14,16]}}",
             UINT64_MAX, 24, KILN_EFORMAT, "tensors 'a' [0, 16] and 'b' [14, 16] overlap");
  expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
             "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
             UINT64_MAX, 16, KILN_EFORMAT, "overlap");
}

/* Adjacent, gapped and empty ranges are fine. */
static void test_layouts_accepted(void **s) {
  (void)s;
  const char *h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
                  "\"c\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                  "\"d\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[20,21]}}";
  size_t size;
  uint8_t *b = image(h, UINT64_MAX, 32, &size);
  kiln_st_file f;
  assert_int_equal(kiln_st_parse(&f, b, size, "ok"), KILN_OK);
  assert_int_equal(f.n_tensors, 4);
  kiln_st_close(&f);
  free(b);
}

static void test_open(void **s) {
  (void)s;
  char *dir = ckpt_tmpdir();
  assert_non_null(dir);
  char path[512];
  kiln_st_file f;
  snprintf(path, sizeof path, "%s/none.safetensors", dir);
  assert_int_equal(kiln_st_open(&f, path), KILN_ENOTFOUND);
  assert_non_null(strstr(kiln_last_error(), "none.safetensors: No such file"));
  assert_int_equal(kiln_st_open(&f, dir), KILN_EIO);
  assert_non_null(strstr(kiln_last_error(), "not a regular file"));
  assert_int_equal(stw_write_text(path, "abc"), 0);
  assert_int_equal(kiln_st_open(&f, path), KILN_EFORMAT);
  assert_non_null(strstr(kiln_last_error(), "truncated: 3 bytes"));
  float v[3] = {1, 2, 3};
  stw_entry e = {"w", "F32", 1, {3}, v, sizeof v};
  assert_int_equal(stw_write(path, &e, 1, NULL), 0);
  assert_int_equal(kiln_st_open(&f, path), KILN_OK);
  const kiln_st_tensor *t = kiln_st_find(&f, "w");
  assert_non_null(t);
  assert_memory_equal(kiln_st_data(&f, t), v, sizeof v);
  assert_int_equal(f.data_start % 8, 0);
  kiln_st_close(&f);
  ckpt_rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_good),        cmocka_unit_test(test_bad_length), cmocka_unit_test(test_bad_json),
      cmocka_unit_test(test_bad_dtype),   cmocka_unit_test(test_bad_shape),  cmocka_unit_test(test_bad_offsets),
      cmocka_unit_test(test_layouts_accepted), cmocka_unit_test(test_open),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
