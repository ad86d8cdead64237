// The official OpenAI Node SDK (npm package `openai`) driving `kiln serve` on the tiny test checkpoint: list
// models, completions, chat, streaming chat with include_usage, stop sequences, seed determinism, and the SDK's
// error classes. Run by CTest from the source tree with KILN_BIN set to the kiln binary.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import OpenAI from 'openai';

const bin = process.env.KILN_BIN;
if (!bin) {
  console.error('sdk_test: set KILN_BIN to the kiln binary');
  process.exit(2);
}
const KEY = 'sk-kiln-node-test';
const MODEL = 'qwen3-f32';

function startServer() {
  const child = spawn(bin, ['serve', '-m', 'tests/data/tiny/qwen3-f32', '--port', '0', '--chat-template', 'chatml',
                            '--api-key', KEY, '-t', '1', '--parallel', '2', '-q'],
                      { stdio: ['ignore', 'ignore', 'pipe'] });
  return new Promise((resolve, reject) => {
    let err = '';
    const timer = setTimeout(() => reject(new Error('server did not become ready: ' + err)), 30000);
    child.stderr.on('data', (d) => {
      err += d.toString();
      const m = err.match(/ready on http:\/\/[^:]+:(\d+)/);
      if (m) {
        clearTimeout(timer);
        resolve({ child, port: Number(m[1]) });
      }
    });
    child.on('exit', (code) => reject(new Error(`server exited with ${code}: ${err}`)));
  });
}

const tests = [];
const test = (name, fn) => tests.push({ name, fn });

let client, badKeyClient;

test('models.list and retrieve', async () => {
  const page = await client.models.list();
  const ids = page.data.map((m) => m.id);
  assert.deepEqual(ids, [MODEL]);
  assert.equal(page.data[0].object, 'model');
  assert.equal(page.data[0].owned_by, 'kiln');
  const m = await client.models.retrieve(MODEL);
  assert.equal(m.id, MODEL);
});

test('completions', async () => {
  const r = await client.completions.create({ model: MODEL, prompt: 'In the beginning', max_tokens: 8,
                                              temperature: 0, ignore_eos: true });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices.length, 1);
  assert.equal(typeof r.choices[0].text, 'string');
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 8);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + 8);
});

test('chat', async () => {
  const r = await client.chat.completions.create({ model: MODEL, max_tokens: 6, temperature: 0, ignore_eos: true,
                                                   messages: [{ role: 'system', content: 'Be brief.' },
                                                              { role: 'user', content: 'Hello' }] });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.equal(r.usage.completion_tokens, 6);
});

test('streaming chat with include_usage', async () => {
  const params = { model: MODEL, max_tokens: 10, temperature: 0, ignore_eos: true,
                   messages: [{ role: 'user', content: 'Tell me a story' }] };
  const whole = await client.chat.completions.create(params);
  const stream = await client.chat.completions.create({ ...params, stream: true,
                                                        stream_options: { include_usage: true } });
  let text = '', ids = new Set(), role = null, finish = null, usage = null, chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    ids.add(chunk.id);
    if (chunk.choices.length === 0) {
      usage = chunk.usage;
      continue;
    }
    const c = chunk.choices[0];
    if (c.delta.role) role = c.delta.role;
    if (c.delta.content) text += c.delta.content;
    if (c.finish_reason) finish = c.finish_reason;
  }
  assert.ok(chunks >= 3);
  assert.equal(ids.size, 1);
  assert.equal(role, 'assistant');
  assert.equal(finish, 'length');
  assert.equal(text, whole.choices[0].message.content);
  assert.ok(usage);
  assert.equal(usage.completion_tokens, 10);
  assert.equal(usage.prompt_tokens, whole.usage.prompt_tokens);
});

test('stop sequences', async () => {
  const params = { model: MODEL, prompt: 'The earth', max_tokens: 24, temperature: 0, ignore_eos: true };
  const full = (await client.completions.create(params)).choices[0].text;
  // A stop string from the middle of the greedy text: the answer is what comes before its first occurrence.
  let at = Math.floor(full.length / 2);
  while (at > 0 && !/[A-Za-z]/.test(full[at])) at--;
  const stop = full.slice(at, at + 2).trim() || full[at];
  const cut = full.indexOf(stop);
  const r = await client.completions.create({ ...params, stop: ['\u0001never', stop] });
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.choices[0].text, full.slice(0, cut));
  // Streaming with a stop string gives the same text.
  const s = await client.completions.create({ ...params, stop: [stop], stream: true });
  let streamed = '';
  for await (const chunk of s) streamed += chunk.choices[0]?.text ?? '';
  assert.equal(streamed, full.slice(0, cut));
});

test('seed determinism', async () => {
  const params = { model: MODEL, messages: [{ role: 'user', content: 'Seed me' }], max_tokens: 12,
                   temperature: 1, ignore_eos: true };
  const a = await client.chat.completions.create({ ...params, seed: 42 });
  const b = await client.chat.completions.create({ ...params, seed: 42 });
  const c = await client.chat.completions.create({ ...params, seed: 43 });
  assert.equal(a.choices[0].message.content, b.choices[0].message.content);
  assert.notEqual(a.choices[0].message.content, c.choices[0].message.content);
});

test('BadRequestError', async () => {
  await assert.rejects(client.chat.completions.create({ model: MODEL, temperature: 5,
                                                        messages: [{ role: 'user', content: 'x' }] }),
                       (e) => {
                         assert.ok(e instanceof OpenAI.BadRequestError, String(e));
                         assert.equal(e.status, 400);
                         assert.equal(e.param, 'temperature');
                         assert.equal(e.type, 'invalid_request_error');
                         return true;
                       });
  await assert.rejects(client.completions.create({ model: MODEL, prompt: 'x', max_tokens: 100000 }),
                       (e) => e instanceof OpenAI.BadRequestError && e.code === 'context_length_exceeded');
});

test('AuthenticationError', async () => {
  await assert.rejects(badKeyClient.models.list(), (e) => {
    assert.ok(e instanceof OpenAI.AuthenticationError, String(e));
    assert.equal(e.status, 401);
    assert.equal(e.code, 'invalid_api_key');
    return true;
  });
});

test('NotFoundError', async () => {
  await assert.rejects(client.chat.completions.create({ model: 'gpt-nope', messages: [{ role: 'user', content: 'x' }] }),
                       (e) => {
                         assert.ok(e instanceof OpenAI.NotFoundError, String(e));
                         assert.equal(e.status, 404);
                         assert.equal(e.code, 'model_not_found');
                         return true;
                       });
});

const { child, port } = await startServer();
const baseURL = `http://127.0.0.1:${port}/v1`;
client = new OpenAI({ baseURL, apiKey: KEY, maxRetries: 0, timeout: 30000 });
badKeyClient = new OpenAI({ baseURL, apiKey: 'sk-wrong', maxRetries: 0, timeout: 30000 });
let failed = 0;
for (const t of tests) {
  try {
    await t.fn();
    console.log(`ok - ${t.name}`);
  } catch (e) {
    failed++;
    console.log(`not ok - ${t.name}: ${e && e.stack ? e.stack : e}`);
  }
}
child.kill('SIGTERM');
const code = await new Promise((resolve) => child.on('exit', (c, sig) => resolve(c ?? sig)));
if (code !== 0) {
  failed++;
  console.log(`not ok - server exit status ${code} after SIGTERM`);
}
console.log(`${tests.length - failed} of ${tests.length} passed`);
process.exit(failed ? 1 : 0);
