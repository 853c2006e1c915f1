'use strict';
// Real `vexil-server` and `vexil-relay` processes for the end-to-end test: the binaries cargo
// built (VEXIL_SERVER_BIN / VEXIL_RELAY_BIN, or CARGO_TARGET_DIR's debug build), the server on
// a fresh SQLite file, the admin API over real HTTP, and child Node processes.
const { spawn, spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { REPO } = require('./helpers');

/** The longest any single wait may take. */
const WAIT_MS = 30_000;

function binary(env, name) {
  const target = process.env.CARGO_TARGET_DIR
    ? path.resolve(REPO, process.env.CARGO_TARGET_DIR)
    : path.join(REPO, 'target');
  const file = process.env[env] || path.join(target, 'debug', name);
  if (!fs.existsSync(file)) {
    throw new Error(
      `${file} does not exist: build it with \`cargo build -p vexil-server -p vexil-relay\` ` +
        `(same CARGO_TARGET_DIR), or set ${env}`,
    );
  }
  return file;
}

/** A free TCP port on 127.0.0.1 (so that a restarted relay can listen where it did). */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * A child process whose output is kept (the last lines, shown when a test fails) and watched:
 * `waitFor(regex)` resolves with the first match.
 */
class Proc {
  constructor(name, file, env) {
    this.name = name;
    this.lines = [];
    this.watchers = [];
    this.child = spawn(file, [], {
      env: { ...process.env, NO_COLOR: '1', RUST_LOG: 'info,sqlx=warn,tower_http=warn', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.exited = new Promise((resolve) => this.child.on('exit', resolve));
    for (const stream of [this.child.stdout, this.child.stderr]) {
      let rest = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk) => {
        const parts = (rest + chunk).split('\n');
        rest = parts.pop();
        for (const line of parts) this.#line(line);
      });
    }
  }

  #line(line) {
    this.lines.push(line);
    if (this.lines.length > 200) this.lines.shift();
    this.watchers = this.watchers.filter(({ re, resolve }) => {
      const m = line.match(re);
      if (m) resolve(m);
      return !m;
    });
  }

  waitFor(re, what) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${this.name}: no ${what} within ${WAIT_MS} ms; output:\n${this.logs()}`)),
        WAIT_MS,
      );
      this.exited.then((code) =>
        reject(new Error(`${this.name} exited (${code}) before ${what}; output:\n${this.logs()}`)),
      );
      this.watchers.push({
        re,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
      });
    });
  }

  logs() {
    return this.lines.join('\n');
  }

  /** SIGKILL, and waits for the exit. */
  async kill() {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.exited;
  }
}

/** The control plane on a fresh SQLite database in `dir`, with its admin token. */
class Server {
  static async start(dir) {
    const s = new Server();
    s.token = `vxa_${crypto.randomBytes(24).toString('hex')}`;
    s.proc = new Proc('vexil-server', binary('VEXIL_SERVER_BIN', 'vexil-server'), {
      VEXIL_LISTEN: '127.0.0.1:0',
      VEXIL_DATABASE_URL: (s.db = path.join(dir, 'vexil.db')),
      VEXIL_BOOTSTRAP_TOKEN: s.token,
    });
    const m = await s.proc.waitFor(/listening on (http:\/\/\S+)/, 'listening line');
    s.url = m[1];
    return s;
  }

  /** `method path` as admin; asserts the status and returns the JSON body. */
  async api(method, p, body, status) {
    const res = await fetch(`${this.url}${p}`, {
      method,
      headers: { authorization: `Bearer ${this.token}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(WAIT_MS),
    });
    const text = await res.text();
    if (status !== undefined && res.status !== status) {
      throw new Error(`${method} ${p}: ${res.status} (expected ${status}): ${text}`);
    }
    return text ? JSON.parse(text) : null;
  }

  kill() {
    return this.proc.kill();
  }
}

/** An edge relay in front of `upstream`, listening on `port` (kept across restarts). */
class Relay {
  static async start(upstream, relayKey, port) {
    const r = new Relay();
    r.url = `http://127.0.0.1:${port}`;
    r.proc = new Proc('vexil-relay', binary('VEXIL_RELAY_BIN', 'vexil-relay'), {
      VEXIL_UPSTREAM_URL: upstream,
      VEXIL_RELAY_KEY: relayKey,
      VEXIL_LISTEN: `127.0.0.1:${port}`,
      VEXIL_METRICS: 'false',
      VEXIL_UPSTREAM_BACKOFF_INITIAL: '50ms',
      VEXIL_UPSTREAM_BACKOFF_MAX: '500ms',
      VEXIL_DRAIN_WINDOW: '100ms',
    });
    await r.proc.waitFor(/vexil relay listening/, 'listening line');
    return r;
  }

  /**
   * Waits until the relay serves `sdkKey`'s snapshot: it holds its environments and knows
   * the key (a relay learns key hashes from upstream, and refuses keys it has not seen yet).
   * Polls at 20 ms, as long as it takes and no longer than the deadline.
   */
  async waitServes(sdkKey) {
    const deadline = Date.now() + WAIT_MS;
    let last = '';
    while (Date.now() < deadline) {
      try {
        const res = await fetch(`${this.url}/sdk/v1/snapshot`, {
          headers: { authorization: sdkKey },
          signal: AbortSignal.timeout(WAIT_MS),
        });
        if (res.status === 200) return;
        last = `${res.status} ${await res.text()}`;
      } catch (e) {
        last = String(e);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`the relay did not serve the SDK key in time (${last}); output:\n${this.proc.logs()}`);
  }

  kill() {
    return this.proc.kill();
  }
}

/**
 * Runs `script` with a fresh `node` in the package's directory; resolves with its exit code
 * and output (rejecting if it runs longer than the deadline).
 */
function runNode(script, env = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script], {
      cwd: path.resolve(__dirname, '..'),
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the child process did not exit within ${WAIT_MS} ms; output:\n${out}`));
    }, WAIT_MS);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

/**
 * The first column of every row `sql` selects from the SQLite database `db` (the server's),
 * one value a line: read with the `sqlite3` shell, or Python's `sqlite3` module where the
 * shell is not installed (node 20 has no SQLite of its own).
 */
function sqlite(db, sql) {
  const py = 'import sqlite3,sys\nfor r in sqlite3.connect(sys.argv[1]).execute(sys.argv[2]): print(r[0])';
  let r = spawnSync('sqlite3', [db, sql], { encoding: 'utf8', timeout: WAIT_MS });
  if (r.error?.code === 'ENOENT') r = spawnSync('python3', ['-c', py, db, sql], { encoding: 'utf8', timeout: WAIT_MS });
  if (r.error) throw new Error(`neither sqlite3 nor python3 could run: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`reading ${db} failed (${r.status}): ${r.stderr}`);
  return r.stdout.split('\n').filter((l) => l !== '');
}

module.exports = { Server, Relay, freePort, runNode, sqlite, WAIT_MS };
