// Fakes of the browser APIs the provider uses (EventSource, fetch, Storage), driven by tests.

/** A Storage backed by a Map. */
export class MemoryStorage {
  #m = new Map();
  get length() { return this.#m.size; }
  key(i) { return [...this.#m.keys()][i] ?? null; }
  getItem(k) { return this.#m.has(k) ? this.#m.get(k) : null; }
  setItem(k, v) { this.#m.set(k, String(v)); }
  removeItem(k) { this.#m.delete(k); }
  clear() { this.#m.clear(); }
}

/** Returns an EventSource class whose instances the test drives, and a way to await the next one. */
export function fakeEventSource() {
  const instances = [];
  let waiters = [];
  class FakeEventSource {
    constructor(url) {
      this.url = url;
      this.listeners = new Map();
      this.closed = false;
      this.onerror = null;
      instances.push(this);
      const w = waiters;
      waiters = [];
      for (const f of w) f(this);
    }
    addEventListener(type, f) {
      if (!this.listeners.has(type)) this.listeners.set(type, []);
      this.listeners.get(type).push(f);
    }
    close() { this.closed = true; }
    /** Delivers an SSE event. */
    emit(type, data) {
      for (const f of this.listeners.get(type) ?? []) f({ data: JSON.stringify(data) });
    }
    /** The connection fails. */
    fail() { this.onerror?.({}); }
  }
  return {
    EventSource: FakeEventSource,
    instances,
    next: () => new Promise((resolve) => waiters.push(resolve)),
  };
}

/** A fetch that records requests and answers with `respond(url, init)` (default 503). */
export function fakeFetch(respond = () => new Response('', { status: 503 })) {
  const calls = [];
  let waiters = [];
  const f = async (url, init = {}) => {
    calls.push({ url: String(url), init });
    const w = waiters;
    waiters = [];
    for (const r of w) r(calls[calls.length - 1]);
    return respond(String(url), init);
  };
  return { fetch: f, calls, next: () => new Promise((resolve) => waiters.push(resolve)) };
}

/** An OFREP bulk response. */
export function ofrep(flags, version, etag) {
  return new Response(JSON.stringify({ flags, metadata: { environmentVersion: version } }), {
    status: 200,
    headers: { 'Content-Type': 'application/json', ...(etag ? { ETag: etag } : {}) },
  });
}

/** Resolves with the next event of `type` from a provider. */
export function nextEvent(provider, type) {
  return new Promise((resolve) => {
    const h = (d) => {
      provider.events.removeHandler(type, h);
      resolve(d);
    };
    provider.events.addHandler(type, h);
  });
}
