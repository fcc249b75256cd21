// The web UI of `fastvlm serve` in a real browser: Debian's headless Chromium driven by playwright-core,
// against the real server on the tiny fixture. A greedy streamed answer must equal `fastvlm run --temp 0`'s
// for the same image, prompt and max tokens; the stop button, the API key prompt and the live camera
// (Chromium's fake camera) are checked too, and screenshots are written for a person to look at.
// Run by ctest (webui_browser), which sets FASTVLM_BIN, FASTVLM_MODEL and FASTVLM_WEBUI_SCREENSHOTS;
// exits 77 (skipped) when playwright-core is not installed.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { startServer } from '../serve.mjs';

let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch {
  console.error('playwright-core is not installed: run scripts/setup.sh (npm ci --prefix tests/webui)');
  process.exit(77);
}

const bin = process.env.FASTVLM_BIN;
const model = process.env.FASTVLM_MODEL;
const screenshots = process.env.FASTVLM_WEBUI_SCREENSHOTS;
assert.ok(bin && model && screenshots, 'FASTVLM_BIN, FASTVLM_MODEL and FASTVLM_WEBUI_SCREENSHOTS must be set');
const browserPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const imagePath = join(model, 'golden', 'image_a_320x200.png');
const prompt = 'Describe the image.';
const maxTokens = 24;
mkdirSync(screenshots, { recursive: true });

setTimeout(() => {
  console.error('webui.test.mjs: timed out');
  process.exit(1);
}, 280_000).unref();

// The chat completion requests a page sends, with their bodies and network timings.
function recordRequests(page) {
  const requests = [];
  page.on('request', (request) => {
    if (request.url().endsWith('/v1/chat/completions')) requests.push(request);
  });
  return requests;
}

async function setSettings(page, { temperature, maxTokens: tokens }) {
  await page.click('#settings-toggle');
  await page.fill('#temperature', String(temperature));
  await page.fill('#max-tokens', String(tokens));
  await page.click('#settings-toggle');
}

async function ask(page, text) {
  const before = await page.locator('.message.assistant').count();
  await page.fill('#prompt', text);
  await page.press('#prompt', 'Enter');
  const reply = page.locator('.message.assistant').nth(before);
  await reply.waitFor();
  return reply;
}

const reference = JSON.parse(execFileSync(bin, ['run', '-m', model, '--dtype', 'f32', '--threads', '1', '--image', imagePath, '-p', prompt,
                                                '-n', String(maxTokens), '--temp', '0', '--json'])).text;
assert.ok(reference.length > 0);

const browser = await chromium.launch({
  executablePath: browserPath,
  args: ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'],
});
const servers = [];
try {
  // --- Chat: a streamed greedy answer equals the CLI's; a follow-up carries the history ---
  const { server, url } = await startServer(bin, model);
  servers.push(server);
  {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const pageErrors = [];
    page.on('pageerror', (error) => pageErrors.push(error));
    const requests = recordRequests(page);
    await page.goto(url);
    await page.locator('#model-name', { hasText: 'tiny-fastvlm' }).waitFor();
    await setSettings(page, { temperature: 0, maxTokens });
    await page.setInputFiles('#image-input', imagePath);
    await page.locator('#attachment:not([hidden])').waitFor();
    const reply = await ask(page, prompt);
    await page.locator('.message.assistant[data-state="done"]').waitFor({ timeout: 60_000 });

    const body = requests[0].postDataJSON();
    assert.equal(body.stream, true);
    assert.equal(body.stream_options.include_usage, true);
    assert.equal(body.temperature, 0);
    assert.equal(body.max_tokens, maxTokens);
    const [textPart, imagePart] = body.messages.at(-1).content;
    assert.deepEqual(textPart, { type: 'text', text: prompt });
    assert.equal(imagePart.image_url.url, `data:image/png;base64,${readFileSync(imagePath).toString('base64')}`);

    // The answer is shown through the page's own Markdown renderer: render the CLI's text the same way.
    const expected = await page.evaluate(async (text) => (await import('/markdown.js')).renderMarkdown(text), reference);
    assert.equal(await reply.locator('.content').innerHTML(), expected);
    const stats = await reply.locator('.stats').textContent();
    assert.match(stats, /TTFT \d+ ms · [\d.]+ tokens\/s · \d+ tokens · vision \d+ ms · prefill \d+ ms/);

    await ask(page, 'And the colours?');
    await page.locator('.message.assistant[data-state="done"]').nth(1).waitFor({ timeout: 60_000 });
    const history = requests[1].postDataJSON().messages;
    assert.deepEqual(history.map((m) => m.role), ['user', 'assistant', 'user']);
    assert.equal(history[1].content, reference);
    await page.screenshot({ path: join(screenshots, 'chat.png') });

    // Markup in an answer is shown as text, never run.
    const rendered = await page.evaluate(async () =>
      (await import('/markdown.js')).renderMarkdown('<img src=x onerror=alert(1)> **bold** `<b>`\n```\n<script>\n```\n- item'));
    assert.equal(rendered, '<p>&lt;img src=x onerror=alert(1)&gt; <strong>bold</strong> <code>&lt;b&gt;</code></p>' +
                           '<pre><code>&lt;script&gt;</code></pre><ul><li>item</li></ul>');

    // --- Stop: a long answer is cut short, and the server is free for the next question ---
    await page.click('#new-chat');
    await setSettings(page, { temperature: 0, maxTokens: 3000 });
    const long = await ask(page, 'Tell me a very long story.');
    await long.locator('.content').filter({ hasText: /\S/ }).waitFor({ timeout: 60_000 });
    await page.click('#stop');
    await page.locator('.message.assistant[data-state="stopped"]').waitFor();
    assert.match(await long.locator('.stats').textContent(), /stopped$/);
    assert.ok(await page.locator('#send').isVisible());
    await setSettings(page, { temperature: 0, maxTokens: 4 });
    await ask(page, 'Short, please.');
    await page.locator('.message.assistant[data-state="done"]').waitFor({ timeout: 60_000 });
    assert.deepEqual(pageErrors, []);
    await page.close();
  }

  // --- Live camera: Chromium's fake camera; one request at a time, each after the previous answer ---
  {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, permissions: ['camera'] });
    const page = await context.newPage();
    const requests = recordRequests(page);
    await page.goto(url);
    await page.locator('#model-name', { hasText: 'tiny-fastvlm' }).waitFor();
    await setSettings(page, { temperature: 0, maxTokens: 8 });
    await page.click('#tab-camera');
    assert.equal(await page.inputValue('#camera-prompt'), 'Describe what you see in one sentence.');
    await page.click('#camera-toggle');
    await page.locator('#camera-frames li').nth(2).waitFor({ timeout: 90_000 });
    await page.screenshot({ path: join(screenshots, 'camera.png') });
    await page.click('#camera-toggle');
    assert.match(await page.textContent('#camera-stats'), /TTFT \d+ ms · \d+ frames answered · [\d.]+ frames\/min/);

    const frames = await page.locator('#camera-frames li').evaluateAll((items) =>
      items.map((li) => ({ sentAt: Number(li.dataset.sentAt), endedAt: Number(li.dataset.endedAt) })).reverse());
    assert.ok(frames.length >= 3);
    for (let i = 1; i < frames.length; i++) assert.ok(frames[i].sentAt >= frames[i - 1].endedAt, JSON.stringify(frames));
    // The browser's own network timings say the same: each request starts after the previous response ended.
    // The page sends the next frame once it has read the answer's last event; the browser marks responseEnd
    // at the stream's terminating chunk, which can arrive a moment later (1.1 ms once, on a loaded machine).
    // (The page's own sentAt / endedAt above are held to it exactly; the answers here stream for ~60 ms.)
    const kStreamCloseMs = 5;
    for (let i = 1; i < requests.length; i++) {
      const previous = requests[i - 1].timing();
      assert.ok(previous.responseEnd > 0, `request ${i - 1} had not finished when request ${i} started`);
      if (i === requests.length - 1 && requests[i].timing().startTime === 0) break;  // stopped before any response
      assert.ok(requests[i].timing().startTime >= previous.startTime + previous.responseEnd - kStreamCloseMs,
                JSON.stringify([previous, requests[i].timing()]));
    }
    const body = requests[0].postDataJSON();
    assert.match(body.messages.at(-1).content[1].image_url.url, /^data:image\/jpeg;base64,/);
    await context.close();
  }

  // --- The page is served without authentication; the API key is asked for once per tab ---
  {
    const { server: keyed, url: keyedUrl } = await startServer(bin, model, '--api-key', 'webui-secret');
    servers.push(keyed);
    const response = await fetch(keyedUrl);
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-security-policy'), /script-src 'self'/);
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const requests = recordRequests(page);
    await page.goto(keyedUrl);
    await page.locator('#key-dialog[open]').waitFor();
    await page.fill('#key-input', 'wrong');
    await page.press('#key-input', 'Enter');
    await page.locator('#key-error:not([hidden])').waitFor();
    await page.fill('#key-input', 'webui-secret');
    await page.press('#key-input', 'Enter');
    await page.locator('#model-name', { hasText: 'tiny-fastvlm' }).waitFor();
    await setSettings(page, { temperature: 0, maxTokens: 4 });
    await ask(page, 'Hello?');
    await page.locator('.message.assistant[data-state="done"]').waitFor({ timeout: 60_000 });
    assert.equal(await requests[0].headerValue('authorization'), 'Bearer webui-secret');
    await page.reload();
    await page.locator('#model-name', { hasText: 'tiny-fastvlm' }).waitFor();
    assert.equal(await page.locator('#key-dialog[open]').count(), 0);
    await page.close();
  }

  // --- --no-webui: no page, the API as before ---
  {
    const { server: bare, url: bareUrl } = await startServer(bin, model, '--no-webui');
    servers.push(bare);
    assert.equal((await fetch(bareUrl)).status, 404);
    assert.equal((await fetch(`${bareUrl}/app.js`)).status, 404);
    assert.equal((await fetch(`${bareUrl}/v1/models`)).status, 200);
  }
} finally {
  await browser.close();
  for (const server of servers) server.kill('SIGTERM');
}
console.log(`webui.test.mjs: passed; screenshots in ${screenshots}`);
