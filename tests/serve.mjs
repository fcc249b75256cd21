// Starts the real `fastvlm serve` on a free port for the Node tests (tests/server, tests/webui) and resolves
// once it listens, with the port and base URL read from its own "listening on" line.
import { spawn } from 'node:child_process';

export function startServer(bin, model, ...extra) {
  const server = spawn(bin, ['serve', '-m', model, '--port', '0', '--threads', '1', '--dtype', 'f32', ...extra],
                       { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let seen = '';
    server.stdout.on('data', (data) => {
      seen += data;
      const match = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(seen);
      if (match) resolve({ server, port: Number(match[1]), url: `http://127.0.0.1:${match[1]}` });
    });
    server.on('exit', (code) => reject(new Error(`fastvlm serve exited with ${code} before listening: ${seen}`)));
  });
}
