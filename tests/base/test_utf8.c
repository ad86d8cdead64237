/* kiln_utf8_sanitize and kiln_utf8_incomplete_tail, checked on every input of up to 3 bytes against utf8proc's
 * decoder: valid text passes unchanged, anything else comes out as valid UTF-8 with at least one U+FFFD, and a
 * full output buffer stops at a whole character. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include <utf8proc.h>

#include "base/utf8.h"

/* utf8proc's verdict: the whole of s[0..n) is well-formed UTF-8. */
static int valid_(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t k = utf8proc_iterate(s + i, (utf8proc_ssize_t)(n - i), &cp);
    if (k <= 0) return 0;
    i += (size_t)k;
  }
  return 1;
}

static void test_exhaustive(void **state) {
  (void)state;
  unsigned char s[3];
  char out[16];
  for (size_t n = 1; n <= 3; n++) {
    uint32_t lim = 1u << (8 * n);
    for (uint32_t v = 0; v < lim; v++) {
      for (size_t i = 0; i < n; i++) s[i] = (unsigned char)(v >> (8 * i));
      size_t m = kiln_utf8_sanitize(out, sizeof out, (const char *)s, n);
      assert_true(valid_((const unsigned char *)out, m));
      if (valid_(s, n)) {
        assert_int_equal(m, n);
        assert_memory_equal(out, s, n);
      } else {
        assert_non_null(memmem(out, m, "\xef\xbf\xbd", 3));
        assert_true(m <= 3 * n);
      }
      /* an incomplete tail is a valid prefix that one more byte could complete */
      size_t t = kiln_utf8_incomplete_tail((const char *)s, n);
      if (t) assert_false(valid_(s + n - t, t));
      if (valid_(s, n)) assert_int_equal(t, 0);
    }
  }
}

static void test_short_buffer(void **state) {
  (void)state;
  const char *s = "a\xc3\xa9\xff" "b"; /* a, e-acute, a bad byte, b: 1 + 2 + 3 + 1 bytes out */
  char out[8];
  assert_int_equal(kiln_utf8_sanitize(out, 8, s, 5), 7);
  assert_int_equal(kiln_utf8_sanitize(out, 2, s, 5), 1); /* e-acute does not fit whole */
  assert_int_equal(kiln_utf8_sanitize(out, 5, s, 5), 3); /* nor the replacement */
  assert_int_equal(kiln_utf8_sanitize(out, 0, s, 5), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_exhaustive),
      cmocka_unit_test(test_short_buffer),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
