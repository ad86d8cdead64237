/* kiln_strbuf: appends keep a NUL-terminated copy, printf grows past the first capacity, failures are sticky. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "base/strbuf.h"

static void test_put(void **state) {
  (void)state;
  kiln_strbuf b = {0};
  assert_true(kiln_strbuf_put(&b, "", 0));
  assert_null(b.p); /* nothing appended, nothing allocated */
  assert_true(kiln_strbuf_puts(&b, "abc"));
  assert_true(kiln_strbuf_put(&b, "d\0e", 3)); /* embedded NUL kept */
  assert_int_equal(b.n, 6);
  assert_memory_equal(b.p, "abcd\0e", 7);
  /* grow well past the first allocation */
  char big[1000];
  memset(big, 'x', sizeof big);
  for (int i = 0; i < 10; i++) assert_true(kiln_strbuf_put(&b, big, sizeof big));
  assert_int_equal(b.n, 10006);
  assert_true(b.cap > b.n);
  assert_int_equal(b.p[b.n], '\0');
  assert_int_equal(b.p[b.n - 1], 'x');
  kiln_strbuf_free(&b);
  assert_null(b.p);
  assert_int_equal(b.n, 0);
  kiln_strbuf_free(&b); /* a freed buffer may be freed again */
}

static void test_printf(void **state) {
  (void)state;
  kiln_strbuf b = {0};
  assert_true(kiln_strbuf_printf(&b, "%s=%d;", "a", 1)); /* into no buffer at all */
  assert_string_equal(b.p, "a=1;");
  char word[600];
  memset(word, 'y', sizeof word - 1);
  word[sizeof word - 1] = '\0';
  assert_true(kiln_strbuf_printf(&b, "[%s]", word)); /* longer than the room left */
  assert_int_equal(b.n, 4 + 2 + 599);
  assert_int_equal(strlen(b.p), b.n);
  assert_int_equal(b.p[4], '[');
  assert_int_equal(b.p[b.n - 1], ']');
  assert_true(kiln_strbuf_printf(&b, "%s", "")); /* empty output */
  assert_int_equal(b.n, 605);
  kiln_strbuf_free(&b);
}

static void test_sticky_failure(void **state) {
  (void)state;
  kiln_strbuf b = {0};
  assert_true(kiln_strbuf_puts(&b, "ok"));
  assert_false(kiln_strbuf_reserve(&b, SIZE_MAX - 1)); /* would wrap: refused, not attempted */
  assert_true(b.failed);
  assert_false(kiln_strbuf_puts(&b, "more"));
  assert_false(kiln_strbuf_printf(&b, "%d", 5));
  assert_int_equal(b.n, 2);
  assert_string_equal(b.p, "ok"); /* what was there stays, for the owner to free */
  kiln_strbuf_free(&b);
  assert_false(b.failed);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_put),
      cmocka_unit_test(test_printf),
      cmocka_unit_test(test_sticky_failure),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
