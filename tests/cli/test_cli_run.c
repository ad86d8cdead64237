/*
 * kiln run: the --json fields, seeds, greedy across threads and prompt sources, streaming, stop strings, BOS,
 * a full context.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <pty.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static void run_fields_(const char *model, const tiny_info *info) {
  const char *prompt = "the cat and the dog";
  size_t n_prompt;
  int32_t *pids = t_tokenize(model, prompt, &n_prompt);
  free(pids);
  t_gen g;
  t_run_json(&g, model, NULL, "-p", prompt, "-n", "12", "--ignore-eos", "--temp", "0.9", "--seed", "7", NULL);
  assert_int_equal(g.completion_tokens, 12);
  /* Llama's tokenizer puts <|begin_of_text|> first (its post-processor): run does too, tokenize does not. */
  assert_int_equal(g.prompt_tokens, (int)n_prompt + (info->bos_id >= 0 ? 1 : 0));
  for (size_t i = 0; i < g.n_ids; i++) assert_true(g.ids[i] >= 0 && g.ids[i] < info->n_vocab);

  /* The text is what the ids decode to. */
  char *csv = t_ids_csv(g.ids, g.n_ids);
  proc_result r;
  t_kiln(&r, NULL, "detokenize", "-m", model, "--ids", csv, NULL);
  t_expect_ok(&r);
  CHECK(&r, r.out_len == g.text_len && memcmp(r.out, g.text, g.text_len) == 0);
  proc_result_free(&r);
  free(csv);

  /* Same seed, same tokens; another seed, other tokens. */
  t_gen g2, g3;
  t_run_json(&g2, model, NULL, "-p", prompt, "-n", "12", "--ignore-eos", "--temp", "0.9", "--seed", "7", NULL);
  assert_true(t_same_ids(&g, &g2));
  t_run_json(&g3, model, NULL, "-p", prompt, "-n", "12", "--ignore-eos", "--temp", "0.9", "--seed", "8", NULL);
  assert_false(t_same_ids(&g, &g3));
  json_decref(g.v);
  json_decref(g2.v);
  json_decref(g3.v);

  /* Greedy is the same on 1 and 2 threads, and on the prompt from -p, -f and stdin. */
  char *file = t_path_in(T.tmp, "prompt.txt");
  t_write_file(file, prompt, strlen(prompt));
  t_gen a, b, c, d;
  t_run_json(&a, model, NULL, "-p", prompt, "-n", "16", "--ignore-eos", "-t", "1", NULL);
  t_run_json(&b, model, NULL, "-p", prompt, "-n", "16", "--ignore-eos", "-t", "2", NULL);
  t_run_json(&c, model, NULL, "-f", file, "-n", "16", "--ignore-eos", NULL);
  t_run_json(&d, model, prompt, "-p", "-", "-n", "16", "--ignore-eos", NULL);
  assert_int_equal(a.n_ids, 16);
  assert_true(t_same_ids(&a, &b));
  assert_true(t_same_ids(&a, &c));
  assert_true(t_same_ids(&a, &d));

  /* Without --json the streamed text is the whole text, and the timings are on stderr. */
  t_kiln(&r, NULL, "run", "-m", model, "-p", prompt, "-n", "16", "--ignore-eos", NULL);
  t_expect_ok(&r);
  CHECK(&r, r.out_len == a.text_len && memcmp(r.out, a.text, a.text_len) == 0);
  CHECK(&r, strstr(r.err, "TTFT") && strstr(r.err, "tok/s"));
  CHECK(&r, !strstr(r.err, "loading [")); /* the progress bar is for terminals only */
  CHECK(&r, memchr(r.err, '\n', r.err_len) == r.err + r.err_len - 1); /* one line of timings */
  proc_result_free(&r);

  /* A stop string ends the text before its first occurrence (pick two printable ASCII bytes of the text). */
  for (size_t i = 1; i + 2 <= a.text_len; i++) {
    unsigned char x = (unsigned char)a.text[i], y = (unsigned char)a.text[i + 1];
    if (x > 32 && x < 127 && y > 32 && y < 127) {
      char stop[3] = {(char)x, (char)y, 0};
      const char *first = strstr(a.text, stop);
      t_gen s;
      t_run_json(&s, model, NULL, "-p", prompt, "-n", "16", "--ignore-eos", "--stop", stop, NULL);
      assert_int_equal(s.text_len, (size_t)(first - a.text));
      assert_memory_equal(s.text, a.text, s.text_len);
      assert_true(s.n_ids <= a.n_ids);
      json_decref(s.v);
      break;
    }
  }
  json_decref(a.v);
  json_decref(b.v);
  json_decref(c.v);
  json_decref(d.v);
}

static void test_run_qwen3(void **state) {
  (void)state;
  run_fields_(T.qwen, &T.qi);
}

static void test_run_llama(void **state) {
  (void)state;
  run_fields_(T.llama, &T.li);
  /* --no-bos drops the BOS the tokenizer would add. */
  size_t n;
  free(t_tokenize(T.llama, "the cat", &n));
  t_gen g;
  t_run_json(&g, T.llama, NULL, "-p", "the cat", "-n", "2", "--no-bos", NULL);
  assert_int_equal(g.prompt_tokens, (int)n);
  json_decref(g.v);
}

/* Generation up to the end of the context stops there (finish "length"), no further. */
static void test_run_context_full(void **state) {
  (void)state;
  t_gen g;
  t_run_json(&g, T.qwen, NULL, "-p", "the cat", "-n", "0", "--ignore-eos", "--ctx", "12", NULL);
  assert_true(g.prompt_tokens + g.completion_tokens <= 13);
  assert_true(g.completion_tokens >= 9);
  json_decref(g.v);
}


/* On a terminal: the progress bar while the weights load, erased before the text, and a final newline. */
static void test_run_terminal(void **state) {
  (void)state;
  int fd;
  pid_t pid = forkpty(&fd, NULL, NULL, NULL);
  assert_true(pid >= 0);
  if (pid == 0) {
    execl(T.kiln, T.kiln, "run", "-m", T.qwen, "-p", "the cat", "-n", "4", "--ignore-eos", (char *)NULL);
    _exit(127);
  }
  char buf[16384];
  size_t len = 0;
  for (;;) { /* the terminal reports EIO once the child has exited and closed it */
    ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
    if (n <= 0) break;
    len += (size_t)n;
  }
  buf[len] = 0;
  close(fd);
  int ws;
  assert_int_equal(waitpid(pid, &ws, 0), pid);
  if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0 || !strstr(buf, "loading [") || !strstr(buf, "100%") ||
      !strstr(buf, "\r\033[K") || !strstr(buf, "TTFT")) {
    fprintf(stderr, "terminal output (status %d):\n%s\n", ws, buf);
    fail();
  }
}

/* --chat: the prompt as a user turn in the chat template (the model's tokenizer_config.json, or one by name). */
static void test_run_chat(void **state) {
  (void)state;
  size_t n;
  free(t_tokenize(T.qwen, "<|im_start|>user\nthe cat<|im_end|>\n<|im_start|>assistant\n", &n));
  t_gen g;
  t_run_json(&g, T.qwen, NULL, "-p", "the cat", "--chat-template", "chatml", "-n", "2", NULL);
  assert_int_equal(g.prompt_tokens, (int)n);
  json_decref(g.v);

  /* The model's own template, recognised from its Jinja source. */
  char dir[1200];
  t_clone_ckpt(T.qwen, "chat", dir, sizeof dir);
  const char *cfg = "{\"bos_token\": null, \"chat_template\": \"{% for message in messages %}{{'<|im_start|>' + "
                    "message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if "
                    "add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}\"}";
  t_write_file(t_path_in(dir, "tokenizer_config.json"), cfg, strlen(cfg));
  t_run_json(&g, dir, NULL, "-p", "the cat", "--chat", "-n", "2", NULL);
  assert_int_equal(g.prompt_tokens, (int)n);
  json_decref(g.v);

  /* A system turn comes first; Qwen3's template closes an empty think block when thinking is off. */
  free(t_tokenize(T.qwen, "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nthe cat<|im_end|>\n"
                          "<|im_start|>assistant\n", &n));
  t_run_json(&g, dir, NULL, "-p", "the cat", "--system", "be brief", "-n", "2", NULL);
  assert_int_equal(g.prompt_tokens, (int)n);
  json_decref(g.v);
  t_gen think, no_think;
  t_run_json(&think, T.qwen, NULL, "-p", "the cat", "--chat-template", "qwen3", "-n", "2", NULL);
  t_run_json(&no_think, T.qwen, NULL, "-p", "the cat", "--chat-template", "qwen3", "--no-think", "-n", "2", NULL);
  assert_true(no_think.prompt_tokens > think.prompt_tokens);
  json_decref(think.v);
  json_decref(no_think.v);

  t_fails(1, "tokenizer_config.json", NULL, NULL, "run", "-m", T.qwen, "-p", "hi", "--chat", NULL);
  t_fails(1, "foo", NULL, NULL, "run", "-m", T.qwen, "-p", "hi", "--chat-template", "foo", NULL);
}

int main(int argc, char **argv) {
  int rc = t_init(argc, argv);
  if (rc) return rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_run_qwen3),
      cmocka_unit_test(test_run_llama),
      cmocka_unit_test(test_run_context_full),
      cmocka_unit_test(test_run_chat),
      cmocka_unit_test(test_run_terminal),
  };
  return cmocka_run_group_tests(tests, t_setup, t_teardown);
}
