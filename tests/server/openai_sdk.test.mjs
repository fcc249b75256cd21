// The official OpenAI Node SDK against `fastvlm serve` on the tiny fixture: an image as a data URL,
// non-streaming and streaming, plus the SDK's view of two errors; structured output (every answer, greedy
// and sampled over 50 seeds, streamed and not, validates with ajv), log-probabilities, n, embeddings, and
// bad requests answered 400 with the server healthy afterwards. The greedy answer must equal
// `fastvlm run --temp 0`'s for the same image and prompt. Run by ctest (server_openai_sdk), which sets
// FASTVLM_BIN and FASTVLM_MODEL; exits 77 (skipped) when the SDK is not installed.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { startServer } from '../serve.mjs';

let OpenAI, Ajv;
try {
  ({ default: OpenAI } = await import('openai'));
  ({ default: Ajv } = await import('ajv'));
} catch {
  console.error('the openai or ajv package is not installed: run scripts/setup.sh (npm install --prefix tests/server)');
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
}, 170_000).unref();

const reference = JSON.parse(execFileSync(bin, ['run', '-m', model, '--dtype', 'f32', '--threads', '1', '--image', imagePath,
                                                '-p', prompt, '-n', String(maxTokens), '--temp', '0', '--json'])).text;
const imageUrl = `data:image/jpeg;base64,${readFileSync(imagePath).toString('base64')}`;
const messages = [{ role: 'user', content: [{ type: 'text', text: prompt }, { type: 'image_url', image_url: { url: imageUrl } }] }];

// Bounded (maxLength, maxItems, enums, number bounds) so that every sampled answer completes.
const personSchema = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 10 },
    age: { type: 'integer', minimum: 0, maximum: 120 },
    score: { type: 'number', minimum: -1, exclusiveMaximum: 1 },
    tags: { type: 'array', items: { enum: ['red', 'green', 'blue'] }, maxItems: 3 },
    when: { type: 'string', format: 'date' },
    kind: { anyOf: [{ type: 'null' }, { type: 'boolean' }, { $ref: '#/$defs/code' }] },
  },
  required: ['name', 'age', 'kind'],
  additionalProperties: false,
  $defs: { code: { type: 'string', pattern: '^[A-Z]{2}[0-9]{2}$' } },
};

async function structuredOutput(client) {
  // Formats are checked by shape below: ajv validates them only with the ajv-formats plugin.
  const validate = new Ajv({ validateFormats: false }).compile(personSchema);
  const responseFormat = { type: 'json_schema', json_schema: { name: 'person', schema: personSchema, strict: true } };
  const check = (content, finishReason, what) => {
    assert.equal(finishReason, 'stop', `${what}: ${content}`);
    const value = JSON.parse(content);
    assert.ok(validate(value), `${what}: ${content} ${JSON.stringify(validate.errors)}`);
    if (value.when !== undefined) assert.match(value.when, /^\d{4}-[01]\d-[0-3]\d$/);
  };
  const request = { model: 'tiny-fastvlm', messages: [{ role: 'user', content: 'A person, as JSON.' }], max_tokens: 400,
                    response_format: responseFormat };
  const runs = [{ temperature: 0, seed: 0 }];
  for (let seed = 1; seed <= 50; ++seed) runs.push({ temperature: 1, seed });
  for (const run of runs) {
    const what = `temperature ${run.temperature} seed ${run.seed}`;
    const answer = await client.chat.completions.create({ ...request, ...run });
    check(answer.choices[0].message.content, answer.choices[0].finish_reason, what);
    const stream = await client.chat.completions.create({ ...request, ...run, stream: true });
    let text = '';
    let finishReason = null;
    for await (const chunk of stream)
      for (const choice of chunk.choices) {
        text += choice.delta.content ?? '';
        finishReason = choice.finish_reason ?? finishReason;
      }
    assert.equal(text, answer.choices[0].message.content, `${what}: streamed and not`);
    check(text, finishReason, `${what} streamed`);
  }
  const object = await client.chat.completions.create({ ...request, response_format: { type: 'json_object' }, seed: 7 });
  if (object.choices[0].finish_reason === 'stop') assert.equal(typeof JSON.parse(object.choices[0].message.content), 'object');
}

async function logprobsAndChoices(client) {
  const answer = await client.chat.completions.create({
    model: 'tiny-fastvlm', messages: [{ role: 'user', content: 'Hello' }], max_tokens: 6, temperature: 0.8, seed: 3,
    logprobs: true, top_logprobs: 3, n: 2, presence_penalty: 0.5, frequency_penalty: 0.5, logit_bias: { 0: -100 } });
  assert.equal(answer.choices.length, 2);
  let tokens = 0;
  for (const [index, choice] of answer.choices.entries()) {
    assert.equal(choice.index, index);
    const content = choice.logprobs.content;
    tokens += content.length;
    for (const token of content) {
      assert.equal(typeof token.token, 'string');
      assert.ok(token.logprob <= 0);
      assert.ok(Array.isArray(token.bytes) && token.bytes.every((b) => Number.isInteger(b) && b >= 0 && b < 256));
      assert.equal(token.top_logprobs.length, 3);
      for (let i = 1; i < 3; ++i) assert.ok(token.top_logprobs[i - 1].logprob >= token.top_logprobs[i].logprob);
      assert.ok(token.top_logprobs[0].logprob >= token.logprob - 1e-6);
    }
  }
  assert.equal(tokens, answer.usage.completion_tokens);
  const stream = await client.chat.completions.create({
    model: 'tiny-fastvlm', messages: [{ role: 'user', content: 'Hello' }], max_tokens: 5, temperature: 0,
    logprobs: true, top_logprobs: 1, stream: true });
  let streamedTokens = 0;
  for await (const chunk of stream)
    for (const choice of chunk.choices) streamedTokens += choice.logprobs?.content?.length ?? 0;
  assert.ok(streamedTokens > 0);
}

async function embeddings(client) {
  // The SDK asks for base64 by default and decodes it; the float form must agree.
  const text = await client.embeddings.create({ model: 'tiny-fastvlm', input: ['hello world', imageUrl] });
  const floats = await client.embeddings.create({ model: 'tiny-fastvlm', input: ['hello world', imageUrl],
                                                  encoding_format: 'float' });
  assert.equal(text.data.length, 2);
  for (let i = 0; i < 2; ++i) {
    assert.equal(text.data[i].embedding.length, floats.data[i].embedding.length);
    text.data[i].embedding.forEach((value, d) => assert.ok(Math.abs(value - floats.data[i].embedding[d]) < 1e-6));
  }
  assert.ok(text.usage.prompt_tokens > 2);
}

async function badRequests(client, port) {
  const messages = [{ role: 'user', content: 'x' }];
  const bad = [
    { messages, logprobs: true, top_logprobs: 21 },
    { messages, n: 0 },
    { messages, n: 100 },
    { messages, logit_bias: { 99999999: 1 } },
    { messages, presence_penalty: 'high' },
    { messages, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'string', oneOf: [] } } } },
    { messages, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'strng' } } } },
    { messages, response_format: { type: 'xml' } },
  ];
  for (const body of bad)
    await assert.rejects(client.chat.completions.create({ model: 'tiny-fastvlm', max_tokens: 2, ...body }),
                         (error) => error instanceof OpenAI.BadRequestError && error.status === 400 &&
                                    typeof error.error?.message === 'string',
                         JSON.stringify(body));
  const health = await fetch(`http://127.0.0.1:${port}/health`);
  assert.equal(health.status, 200);
}

const { server, port } = await startServer(bin, model, '--api-key', apiKey);
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
  await structuredOutput(client);
  await logprobsAndChoices(client);
  await embeddings(client);
  await badRequests(client, port);
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
