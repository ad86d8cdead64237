/*
 * test_chat_template: family detection from template sources and tokenizer_config.json files, loading errors,
 * Python-compatible details the golden test may not reach (float reprs, Unicode whitespace), and bad input.
 */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "kiln/chat.h"
#include "kiln/status.h"

static void detect_families(void **state) {
  (void)state;
  kiln_chat_template t;
  struct {
    const char *file;
    kiln_chat_format fmt;
    bool clock, builtin;
    const char *bos;
  } want[] = {
      {"tests/data/chat/chatml.json", KILN_CHAT_CHATML, false, false, ""},
      {"tests/data/chat/qwen3.json", KILN_CHAT_QWEN3, false, false, ""},
      {"tests/data/chat/llama3.json", KILN_CHAT_LLAMA3, false, false, "<|begin_of_text|>"},
      {"tests/data/chat/llama31.json", KILN_CHAT_LLAMA31, false, true, "<|begin_of_text|>"},
      {"tests/data/chat/llama32.json", KILN_CHAT_LLAMA31, true, false, "<|begin_of_text|>"},
  };
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    assert_int_equal(kiln_chat_template_load(&t, want[i].file), KILN_OK);
    assert_int_equal(t.format, want[i].fmt);
    assert_int_equal(t.date_from_clock, want[i].clock);
    assert_int_equal(t.builtin_tools, want[i].builtin);
    assert_string_equal(t.bos_token, want[i].bos);
  }
  assert_int_equal(kiln_chat_template_detect(&t, "{{ messages }}"), KILN_EUNSUPPORTED);
  /* A ChatML template with its own tool logic is not plain ChatML. */
  assert_int_equal(kiln_chat_template_detect(&t, "<|im_start|>{% if tools %}{% endif %}"), KILN_EUNSUPPORTED);
  assert_int_equal(kiln_chat_template_by_name(&t, "llama32"), KILN_OK);
  assert_true(t.date_from_clock);
  assert_int_equal(kiln_chat_template_by_name(&t, "jinja"), KILN_EINVAL);
  assert_string_equal(kiln_chat_format_name(KILN_CHAT_QWEN3), "qwen3");
}

static char *tmpfile_with(const char *text) {
  static char path[64];
  snprintf(path, sizeof path, "/tmp/kiln_chat_XXXXXX");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  return path;
}

static void load_errors(void **state) {
  (void)state;
  kiln_chat_template t;
  assert_int_equal(kiln_chat_template_load(&t, "tests/data/chat/does-not-exist.json"), KILN_ENOTFOUND);
  char *p = tmpfile_with("{\"chat_template\": 5");
  assert_int_equal(kiln_chat_template_load(&t, p), KILN_EFORMAT);
  assert_non_null(strstr(kiln_last_error(), p));
  unlink(p);
  p = tmpfile_with("{\"bos_token\": \"<s>\"}");
  assert_int_equal(kiln_chat_template_load(&t, p), KILN_ENOTFOUND);
  unlink(p);
  /* Named templates: "default" is taken. */
  p = tmpfile_with("{\"bos_token\": {\"content\": \"<B>\"}, \"chat_template\": [{\"name\": \"tool_use\", \"template\": "
                   "\"x\"}, {\"name\": \"default\", \"template\": \"<|start_header_id|>\"}]}");
  assert_int_equal(kiln_chat_template_load(&t, p), KILN_OK);
  assert_int_equal(t.format, KILN_CHAT_LLAMA3);
  assert_string_equal(t.bos_token, "<B>");
  unlink(p);
}

static void render_details(void **state) {
  (void)state;
  kiln_chat_template t;
  assert_int_equal(kiln_chat_template_by_name(&t, "qwen3"), KILN_OK);
  char *out;
  size_t n;
  /* Floats in tool schemas print as Python's repr. */
  assert_int_equal(kiln_chat_render(&t, "[{\"role\":\"user\",\"content\":\"q\"}]",
                                    "[{\"a\":[0.1,1e-05,0.0001,1e16,1e15,-0.0,2.5e-300,100.0,1.0e0]}]", NULL, false,
                                    &out, &n),
                   KILN_OK);
  assert_non_null(strstr(out, "{\"a\": [0.1, 1e-05, 0.0001, 1e+16, 1000000000000000.0, -0.0, 2.5e-300, 100.0, 1.0]}"));
  assert_int_equal(strlen(out), n);
  free(out);
  /* Llama trims Unicode whitespace as Python's str.strip() does, but not U+200B (not whitespace to Python). */
  assert_int_equal(kiln_chat_template_by_name(&t, "llama3"), KILN_OK);
  assert_int_equal(kiln_chat_render(&t, "[{\"role\":\"user\",\"content\":\"\\u3000\\u00a0x\\u2028\\u200b\\u0085\"}]",
                                    NULL, NULL, false, &out, &n),
                   KILN_OK);
  assert_string_equal(out, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nx\u2028\u200b<|eot_id|>");
  free(out);
  /* Bad input: one-line errors, no output. */
  out = (char *)1;
  assert_int_equal(kiln_chat_render(&t, "{\"role\":\"user\"}", NULL, NULL, true, &out, &n), KILN_EINVAL);
  assert_null(out);
  assert_int_equal(kiln_chat_render(&t, "[1]", NULL, NULL, true, &out, &n), KILN_EINVAL);
  assert_int_equal(kiln_chat_render(&t, "[{\"role\":5}]", NULL, NULL, true, &out, &n), KILN_EINVAL);
  assert_int_equal(kiln_chat_render(&t, "[{\"role\":\"user\",\"content\":[1]}]", NULL, NULL, true, &out, &n),
                   KILN_EINVAL);
  assert_int_equal(kiln_chat_render(&t, "[", NULL, NULL, true, &out, &n), KILN_EINVAL);
  assert_int_equal(kiln_chat_render(&t, "[]", NULL, "[1]", true, &out, &n), KILN_EINVAL);
  assert_int_equal(kiln_chat_template_by_name(&t, "llama31"), KILN_OK);
  assert_int_equal(kiln_chat_render(&t, "[{\"role\":\"user\",\"content\":\"x\"}]", NULL, "{\"date_string\":1}", true,
                                    &out, &n),
                   KILN_EINVAL);
  assert_non_null(strstr(kiln_last_error(), "date_string"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(detect_families),
      cmocka_unit_test(load_errors),
      cmocka_unit_test(render_details),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
