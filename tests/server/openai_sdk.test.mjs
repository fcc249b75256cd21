// The official OpenAI Node SDK against `fastvlm serve` on the tiny fixture: an image as a data URL,
// non-streaming and streaming, plus the SDK's view of two errors. The greedy answer must equal
// `fastvlm run --temp 0`'s for the same image and prompt. Run by ctest (server_openai_sdk), which sets
// FASTVLM_BIN and FASTVLM_MODEL; exits 77 (skipped) when the SDK is not installed.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

let OpenAI;
try {
  ({ default: OpenAI } = await import('openai'));
} catch {
  console.error('the openai package is not installed: run scripts/setup.sh (npm install --prefix tests/server)');
  process.exit(77);
}

const bin = process.env.FASTVLM_BIN;
const model = process.env.FASTVLM_MODEL;
assert.ok(bin && model, 'FASTVLM_BIN and FASTVLM_MODEL must be set');
const imagePath = join(model, 'golden', 'image_b_97x131.jpg');
const prompt = 'Describe the image.';
const maxTokens = 12;
const apiKey = 'sdk-test-key';

// Bounded in time whatever happens.
setTimeout(() => {
  console.error('openai_sdk.test.mjs: timed out');
  process.exit(1);
}, 150_000).unref();

function startServer() {
  const server = spawn(bin, ['serve', '-m', model, '--port', '0', '--threads', '1', '--api-key', apiKey],
                       { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let seen = '';
    server.stdout.on('data', (data) => {
      seen += data;
      const match = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(seen);
      if (match) resolve({ server, port: Number(match[1]) });
    });
    server.on('exit', (code) => reject(new Error(`fastvlm serve exited with ${code} before listening: ${seen}`)));
  });
}

const reference = JSON.parse(execFileSync(bin, ['run', '-m', model, '--threads', '1', '--image', imagePath,
                                                '-p', prompt, '-n', String(maxTokens), '--temp', '0', '--json'])).text;
const imageUrl = `data:image/jpeg;base64,${readFileSync(imagePath).toString('base64')}`;
const messages = [{ role: 'user', content: [{ type: 'text', text: prompt }, { type: 'image_url', image_url: { url: imageUrl } }] }];

const { server, port } = await startServer();
let failed = false;
try {
  const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey, maxRetries: 0, timeout: 60_000 });

  const models = await client.models.list();
  assert.equal(models.data[0].id, 'tiny-fastvlm');

  const completion = await client.chat.completions.create({ model: 'tiny-fastvlm', messages, max_tokens: maxTokens, temperature: 0 });
  assert.equal(completion.object, 'chat.completion');
  assert.equal(completion.choices[0].message.role, 'assistant');
  assert.equal(completion.choices[0].message.content, reference);
  assert.ok(completion.usage.completion_tokens <= maxTokens);

  const stream = await client.chat.completions.create({
    model: 'tiny-fastvlm', messages, max_tokens: maxTokens, temperature: 0, stream: true,
    stream_options: { include_usage: true },
  });
  let streamed = '';
  let usage = null;
  let finishReason = null;
  for await (const chunk of stream) {
    for (const choice of chunk.choices) {
      streamed += choice.delta.content ?? '';
      finishReason = choice.finish_reason ?? finishReason;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(streamed, reference);
  assert.ok(finishReason === 'stop' || finishReason === 'length');
  assert.equal(usage.completion_tokens, completion.usage.completion_tokens);

  await assert.rejects(
    client.chat.completions.create({ model: 'tiny-fastvlm', max_tokens: 2,
      messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/png;base64,bm90IGFuIGltYWdl' } }] }] }),
    (error) => error instanceof OpenAI.BadRequestError && error.status === 400);
  const wrongKey = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(wrongKey.chat.completions.create({ model: 'tiny-fastvlm', messages, max_tokens: 2 }),
                       (error) => error instanceof OpenAI.AuthenticationError && error.status === 401);
  console.log(`openai SDK against fastvlm serve: ok (answer ${JSON.stringify(reference)})`);
} catch (error) {
  failed = true;
  console.error(error);
} finally {
  server.kill('SIGTERM');
}
const exitCode = await new Promise((resolve) => server.on('exit', (code) => resolve(code)));
assert.equal(exitCode, 0, 'fastvlm serve must exit cleanly on SIGTERM');
process.exit(failed ? 1 : 0);
