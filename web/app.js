// The page: settings, the API key prompt, the chat view and the switch to the live camera view.
import { ApiError, formatStats, listModels, newAnswer, setApiKey, streamChat } from './api.js';
import { setUpCamera } from './camera.js';
import { renderMarkdown } from './markdown.js';

const $ = (id) => document.getElementById(id);
const SETTINGS_STORAGE = 'fastvlm.settings';

let model = '';

// --- Settings (kept in localStorage: they hold nothing secret) ---

const settingInputs = { system: $('system-prompt'), temperature: $('temperature'), maxTokens: $('max-tokens') };

function loadSettings() {
  const saved = JSON.parse(localStorage.getItem(SETTINGS_STORAGE) ?? '{}');
  for (const [name, input] of Object.entries(settingInputs)) if (name in saved) input.value = saved[name];
}

function saveSettings() {
  const values = Object.fromEntries(Object.entries(settingInputs).map(([name, input]) => [name, input.value]));
  localStorage.setItem(SETTINGS_STORAGE, JSON.stringify(values));
}

// The request fields every question shares: the system prompt first, then `messages`.
function requestWith(messages) {
  const system = settingInputs.system.value.trim();
  const request = {
    messages: system ? [{ role: 'system', content: system }, ...messages] : messages,
    temperature: Number(settingInputs.temperature.value) || 0,
    max_tokens: Math.max(1, Math.floor(Number(settingInputs.maxTokens.value) || 256)),
  };
  if (model) request.model = model;
  return request;
}

$('settings-toggle').addEventListener('click', () => {
  const panel = $('settings');
  panel.hidden = !panel.hidden;
  $('settings-toggle').setAttribute('aria-expanded', String(!panel.hidden));
});
$('settings').addEventListener('input', saveSettings);
$('settings').addEventListener('submit', (event) => event.preventDefault());

// --- API key and connection ---

function showBanner(message) {
  $('banner').textContent = message;
  $('banner').hidden = !message;
}

// Resolves once the user has entered a key (stored for this tab).
function askForKey(problem) {
  const dialog = $('key-dialog');
  $('key-error').textContent = problem;
  $('key-error').hidden = !problem;
  $('key-input').value = '';
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      setApiKey($('key-input').value);
      resolve();
    }, { once: true });
  });
}

// Asks /v1/models until it answers: a 401 means the server wants a key (again).
async function connect() {
  let problem = '';
  for (;;) {
    try {
      const models = await listModels();
      model = models[0]?.id ?? '';
      $('model-name').textContent = model;
      showBanner('');
      return;
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 401) {
        showBanner(`Cannot reach the server: ${error.message}`);
        return;
      }
      await askForKey(problem);
      problem = 'The server refused that key.';
    }
  }
}

// What a view does when a request is refused: a 401 asks for the key again before the next try.
async function handleRequestError(error) {
  if (error instanceof ApiError && error.status === 401) await askForKey('The server refused the key.');
}

// --- Chat ---

const conversation = [];  // OpenAI messages of the answered turns
let attachedImage = null;  // a data URL
let running = null;        // the AbortController of the answer in progress

function attach(file) {
  if (!file || !file.type.startsWith('image/')) return;
  const reader = new FileReader();
  reader.onload = () => {
    attachedImage = reader.result;
    $('attachment-preview').src = attachedImage;
    $('attachment').hidden = false;
  };
  reader.readAsDataURL(file);
}

function detach() {
  attachedImage = null;
  $('attachment').hidden = true;
  $('attachment-preview').removeAttribute('src');
  $('image-input').value = '';
}

function addMessage(role) {
  $('empty-hint').hidden = true;
  const element = document.createElement('article');
  element.className = `message ${role}`;
  $('messages').append(element);
  return element;
}

function scrollToEnd() {
  $('messages').scrollTop = $('messages').scrollHeight;
}

function setRunning(controller) {
  running = controller;
  $('send').hidden = Boolean(controller);
  $('stop').hidden = !controller;
}

async function ask(text) {
  const user = { role: 'user', content: text };
  const shown = addMessage('user');
  if (attachedImage) {
    user.content = [{ type: 'text', text }, { type: 'image_url', image_url: { url: attachedImage } }];
    const image = document.createElement('img');
    image.src = attachedImage;
    image.alt = 'Your image';
    shown.append(image);
  }
  const question = document.createElement('p');
  question.textContent = text;
  shown.append(question);
  detach();

  const reply = addMessage('assistant');
  reply.dataset.state = 'streaming';
  const content = document.createElement('div');
  content.className = 'content';
  const stats = document.createElement('p');
  stats.className = 'stats';
  reply.append(content, stats);
  scrollToEnd();

  const controller = new AbortController();
  setRunning(controller);
  const answer = newAnswer();
  try {
    await streamChat(requestWith([...conversation, user]), answer, {
      signal: controller.signal,
      onText: (soFar) => {
        content.innerHTML = renderMarkdown(soFar);
        scrollToEnd();
      },
    });
    reply.dataset.state = 'done';
  } catch (error) {
    if (error.name !== 'AbortError') {
      reply.dataset.state = 'error';
      const message = document.createElement('p');
      message.className = 'error';
      message.textContent = error.message;
      content.append(message);
      setRunning(null);
      await handleRequestError(error);
      return;
    }
    reply.dataset.state = 'stopped';
  }
  setRunning(null);
  stats.textContent = formatStats(answer) + (reply.dataset.state === 'stopped' ? ' · stopped' : '');
  // A stopped answer stays in the history as far as it got, as the user saw it.
  conversation.push(user, { role: 'assistant', content: answer.text });
  scrollToEnd();
}

$('composer').addEventListener('submit', (event) => {
  event.preventDefault();
  const text = $('prompt').value.trim();
  if (running || !text) return;
  $('prompt').value = '';
  ask(text);
});
$('prompt').addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $('composer').requestSubmit();
  }
});
$('stop').addEventListener('click', () => running?.abort());
$('new-chat').addEventListener('click', () => {
  running?.abort();
  conversation.length = 0;
  $('messages').replaceChildren($('empty-hint'));
  $('empty-hint').hidden = false;
  detach();
});
$('image-input').addEventListener('change', (event) => attach(event.target.files[0]));
$('attachment-remove').addEventListener('click', detach);
document.addEventListener('paste', (event) => {
  const file = [...event.clipboardData.files].find((f) => f.type.startsWith('image/'));
  if (file) attach(file);
});
document.addEventListener('dragover', (event) => event.preventDefault());
document.addEventListener('drop', (event) => {
  event.preventDefault();
  attach(event.dataTransfer.files[0]);
});

// --- Views ---

const camera = setUpCamera({ requestWith, onRequestError: handleRequestError });

function showView(name) {
  const chat = name === 'chat';
  $('chat-view').hidden = !chat;
  $('camera-view').hidden = chat;
  $('tab-chat').setAttribute('aria-selected', String(chat));
  $('tab-camera').setAttribute('aria-selected', String(!chat));
  if (chat) camera.stop();
}
$('tab-chat').addEventListener('click', () => showView('chat'));
$('tab-camera').addEventListener('click', () => showView('camera'));

loadSettings();
connect();
