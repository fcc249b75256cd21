// Live camera: ask about the newest frame, show the answer over the video, and take the next frame the
// moment the answer ends. Frames are captured only when the model is free, so none ever waits in a
// queue and every answer is about what the camera saw when it was asked.
import { answerStats, newAnswer, streamChat } from './api.js';

const $ = (id) => document.getElementById(id);
// Frames larger than the model's input only cost encoding and upload time.
const MAX_FRAME_SIDE = 1024;
const FRAMES_LISTED = 50;

export function setUpCamera({ requestWith, onRequestError }) {
  const video = $('camera-video');
  const overlay = $('camera-answer');
  const canvas = document.createElement('canvas');
  let session = null;  // { stream, controller, startedAt, answered } while running

  async function openCamera() {
    if (!navigator.mediaDevices?.getUserMedia)
      throw new Error('This browser gives no camera here: open the page over https:// or from localhost.');
    const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    video.srcObject = stream;
    if (video.readyState < HTMLMediaElement.HAVE_CURRENT_DATA)
      await new Promise((resolve) => video.addEventListener('loadeddata', resolve, { once: true }));
    return stream;
  }

  // The frame on screen now, as a JPEG data URL.
  function captureFrame() {
    const scale = Math.min(1, MAX_FRAME_SIDE / Math.max(video.videoWidth, video.videoHeight));
    canvas.width = Math.round(video.videoWidth * scale);
    canvas.height = Math.round(video.videoHeight * scale);
    canvas.getContext('2d').drawImage(video, 0, 0, canvas.width, canvas.height);
    return canvas.toDataURL('image/jpeg', 0.85);
  }

  function showStats(current, answer) {
    const { ttftMs } = answerStats(answer);
    const minutes = (performance.now() - current.startedAt) / 60000;
    const perMinute = current.answered / minutes;
    $('camera-stats').textContent = `Last frame: TTFT ${ttftMs === null ? '–' : `${Math.round(ttftMs)} ms`} · ` +
      `${current.answered} frame${current.answered === 1 ? '' : 's'} answered · ${perMinute.toFixed(1)} frames/min`;
  }

  // One entry per answered frame; its request's start and end times (ms, the page's clock) let anyone
  // check that requests never overlap.
  function listFrame(answer) {
    const item = document.createElement('li');
    item.dataset.sentAt = answer.startedAt.toFixed(1);
    item.dataset.endedAt = answer.endedAt.toFixed(1);
    const { ttftMs } = answerStats(answer);
    item.textContent = `${ttftMs === null ? '–' : Math.round(ttftMs)} ms TTFT · ${answer.text}`;
    $('camera-frames').prepend(item);
    $('camera-frames').querySelectorAll(`li:nth-child(n+${FRAMES_LISTED + 1})`).forEach((old) => old.remove());
  }

  async function loop(current) {
    while (session === current) {
      const prompt = $('camera-prompt').value.trim() || $('camera-prompt').defaultValue;
      const frame = captureFrame();
      const answer = newAnswer();
      try {
        await streamChat(requestWith([{ role: 'user', content: [
          { type: 'text', text: prompt }, { type: 'image_url', image_url: { url: frame } }] }]), answer, {
          signal: current.controller.signal,
          onText: (soFar) => {
            overlay.textContent = soFar;
            overlay.hidden = false;
          },
        });
      } catch (error) {
        if (error.name === 'AbortError') return;
        overlay.textContent = error.message;
        overlay.hidden = false;
        stop();
        await onRequestError(error);
        return;
      }
      current.answered++;
      listFrame(answer);
      showStats(current, answer);
    }
  }

  async function start() {
    const button = $('camera-toggle');
    button.disabled = true;
    try {
      const stream = await openCamera();
      session = { stream, controller: new AbortController(), startedAt: performance.now(), answered: 0 };
      button.textContent = 'Stop';
      loop(session);
    } catch (error) {
      overlay.textContent = `Camera: ${error.message}`;
      overlay.hidden = false;
    } finally {
      button.disabled = false;
    }
  }

  function stop() {
    if (!session) return;
    session.controller.abort();
    session.stream.getTracks().forEach((track) => track.stop());
    video.srcObject = null;
    session = null;
    $('camera-toggle').textContent = 'Start';
  }

  $('camera-controls').addEventListener('submit', (event) => {
    event.preventDefault();
    if (session) stop();
    else start();
  });
  return { stop };
}
