/* Error table: every code has a name and a message, and kiln_error() records the message per thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "kiln/status.h"

static void test_names_and_messages(void **state) {
  (void)state;
#define CHECK(name, value, msg)                                        \
  assert_string_equal(kiln_strerror(value), msg);                      \
  assert_string_equal(kiln_err_name(value), "KILN_" #name);
  KILN_STATUS_MAP(CHECK)
#undef CHECK
  assert_string_equal(kiln_strerror(-12345), "unknown error");
}

static void test_error_message(void **state) {
  (void)state;
  kiln_clear_error();
  assert_string_equal(kiln_last_error(), "");
  int rc = kiln_error(KILN_EFORMAT, "%s: bad header (%d)", "x.safetensors", 7);
  assert_int_equal(rc, KILN_EFORMAT);
  assert_string_equal(kiln_last_error(), "x.safetensors: bad header (7)");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_names_and_messages),
      cmocka_unit_test(test_error_message),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
