// The README's server examples run as written against `fastvlm serve --api-key secret` on the tiny fixture:
// every fenced block after a `<!-- server-example: NAME -->` line is extracted, its address
// (http://127.0.0.1:8080) pointed at the test server, run (sh with bash, js with Node and the OpenAI SDK of
// tests/server/node_modules) in a folder holding cat.jpg, and its output checked for the shape the README
// documents. An example that is missing, renamed, unknown to this test or failing fails the test. Run by
// ctest (server_readme_examples), which sets FASTVLM_BIN, FASTVLM_MODEL and FASTVLM_README; exits 77
// (skipped) when the SDK is not installed.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { startServer } from '../serve.mjs';

const here = dirname(fileURLToPath(import.meta.url));
try {
  await import('openai');
} catch {
  console.error('the openai package is not installed: run scripts/setup.sh (npm install --prefix tests/server)');
  process.exit(77);
}

const bin = process.env.FASTVLM_BIN;
const model = process.env.FASTVLM_MODEL;
const readme = process.env.FASTVLM_README;
assert.ok(bin && model && readme, 'FASTVLM_BIN, FASTVLM_MODEL and FASTVLM_README must be set');
const hiddenSize = JSON.parse(readFileSync(join(model, 'config.json'), 'utf8')).hidden_size;

setTimeout(() => {
  console.error('readme_examples.test.mjs: timed out');
  process.exit(1);
}, 170_000).unref();

// name -> { language, block } for every marked block; a marker line not followed by a fence is an error.
function extractExamples(text) {
  const examples = new Map();
  const marker = /^<!-- server-example: ([\w-]+) -->\n```(\w+)\n([\s\S]*?)^```$/gm;
  for (const match of text.matchAll(marker)) {
    assert.ok(!examples.has(match[1]), `README: two examples are named ${match[1]}`);
    examples.set(match[1], { language: match[2], block: match[3] });
  }
  const markers = [...text.matchAll(/^<!-- server-example: ([\w-]+) -->$/gm)].map((m) => m[1]);  // on a line of its own
  for (const name of markers) assert.ok(examples.has(name), `README: the marker ${name} is not followed by a fenced block`);
  return examples;
}

// The JSON documents a shell example printed, one per curl (the prelude ends each with a newline).
const documents = (stdout) => stdout.split('\n').filter((line) => line.trim()).map((line) => JSON.parse(line));

function checkPerson(text) {
  const person = JSON.parse(text);
  assert.deepEqual(Object.keys(person), ['name', 'age'], `not a person: ${text}`);
  // maxLength counts characters (code points), not JavaScript's UTF-16 units.
  assert.ok(typeof person.name === 'string' && [...person.name].length <= 20, `name: ${text}`);
  assert.ok(Number.isInteger(person.age) && person.age >= 0 && person.age <= 120, `age: ${text}`);
}

// What each example prints, as the README documents it.
const checks = {
  'chat-curl': (stdout) => {
    const [answer] = documents(stdout);
    assert.equal(answer.object, 'chat.completion');
    assert.equal(typeof answer.choices[0].message.content, 'string');
  },
  'chat-js': (stdout) => assert.ok(stdout.endsWith('\n'), 'no answer printed'),  // the text may be blank
  'structured-curl': (stdout) => {
    const [answer] = documents(stdout);
    assert.equal(answer.choices.length, 2, 'n: 2 choices');
    for (const choice of answer.choices) {
      checkPerson(choice.message.content);
      assert.ok(choice.logprobs.content.length > 0);
      for (const token of choice.logprobs.content) {
        assert.equal(typeof token.token, 'string');
        assert.ok(token.logprob <= 0 && Array.isArray(token.bytes));
        assert.equal(token.top_logprobs.length, 2);
      }
    }
  },
  'structured-js': (stdout) => {
    const [json, first] = stdout.trim().split('\n');
    checkPerson(json);
    const fields = first.split(' ');  // the token (no space in the first token of compact JSON), logprob, 2
    assert.ok(fields.length === 3 && Number(fields[1]) <= 0 && fields[2] === '2', `first token line: ${first}`);
  },
  'embeddings-curl': (stdout) => {
    const [embeddings, tokenized, detokenized, props] = documents(stdout);
    assert.equal(embeddings.data.length, 2);
    for (const item of embeddings.data) assert.equal(item.embedding.length, hiddenSize);
    assert.deepEqual(tokenized.tokens.map((t) => t.id), [9707, 1879]);
    assert.equal(tokenized.tokens.map((t) => t.piece).join(''), 'Hello world');
    assert.equal(detokenized.content, 'Hello world');
    assert.equal(typeof props.model_path, 'string');
    assert.ok(props.n_ctx > 0 && props.total_slots > 0, JSON.stringify(props));
    assert.equal(props.modalities.vision, true);
  },
  'embeddings-js': (stdout) => assert.equal(stdout.trim(), `2 ${hiddenSize}`),
};

const examples = extractExamples(readFileSync(readme, 'utf8'));
assert.deepEqual([...examples.keys()].sort(), Object.keys(checks).sort(),
                 'the README\'s marked server examples and those this test checks differ');

const { server, url } = await startServer(bin, model, '--api-key', 'secret');
const work = mkdtempSync(join(tmpdir(), 'fastvlm-readme-'));
const run = promisify(execFile);
let failed = 0;
try {
  copyFileSync(join(model, 'golden', 'image_b_97x131.jpg'), join(work, 'cat.jpg'));
  symlinkSync(join(here, 'node_modules'), join(work, 'node_modules'));  // `import OpenAI from 'openai'` resolves here
  for (const [name, { language, block }] of examples) {
    assert.ok(block.includes('http://127.0.0.1:8080'), `${name} does not talk to the documented address`);
    const code = block.replaceAll('http://127.0.0.1:8080', url);
    let command;
    if (language === 'sh') {
      // Errors fail the example: an HTTP error status, a failing command; each response on its own line.
      const prelude = 'set -euo pipefail\ncurl() { command curl -sS --fail-with-body "$@"; echo; }\n';
      writeFileSync(join(work, `${name}.sh`), prelude + code);
      command = ['bash', [join(work, `${name}.sh`)]];
    } else {
      assert.equal(language, 'js', `${name}: a ${language} block cannot be run`);
      writeFileSync(join(work, `${name}.mjs`), code);
      command = [process.execPath, [join(work, `${name}.mjs`)]];
    }
    try {
      const { stdout } = await run(...command, { cwd: work, timeout: 60_000, maxBuffer: 64 << 20 });
      checks[name](stdout);
      console.log(`ok ${name}`);
    } catch (error) {
      ++failed;
      console.error(`FAILED ${name}: ${error.message}\n${error.stdout ?? ''}${error.stderr ?? ''}`);
    }
  }
} finally {
  server.kill();
  rmSync(work, { recursive: true, force: true });
}
assert.equal(failed, 0, `${failed} README example(s) failed`);
console.log('readme examples: all passed');
