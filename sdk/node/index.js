'use strict';
// @vexil/node: Vexil's Rust SDK as a Node.js addon. This file is the public API; the native
// class does the work (evaluation, streaming, last-known-good file, events) on the SDK's own
// thread. Evaluation never throws: any problem returns the caller's default with an ERROR
// reason.
const { NativeClient, NativeContext } = require('./native');

/** The options the native client understands (anything else is a mistake worth a TypeError). */
const OPTIONS = new Set([
  'baseUrl',
  'lastKnownGood',
  'offline',
  'file',
  'fileWatchIntervalMs',
  'pollIntervalMs',
  'reconnectInitialDelayMs',
  'reconnectMaxDelayMs',
  'initTimeoutMs',
  'connectTimeoutMs',
  'closeTimeoutMs',
  'sendEvents',
  'eventsFlushIntervalMs',
  'eventsCapacity',
]);

const DEFAULT_INIT_TIMEOUT_MS = 5000;

function checkOptions(options) {
  if (options === undefined || options === null) return {};
  if (typeof options !== 'object') throw new TypeError('options must be an object');
  const out = {};
  for (const [name, value] of Object.entries(options)) {
    if (!OPTIONS.has(name)) throw new TypeError(`unknown option ${JSON.stringify(name)}`);
    if (value === undefined) continue;
    if (name.endsWith('Ms') || name === 'eventsCapacity') {
      if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
        throw new TypeError(`${name} must be a non-negative integer`);
      }
    } else if (name === 'offline' || name === 'sendEvents') {
      if (typeof value !== 'boolean') throw new TypeError(`${name} must be a boolean`);
    } else if (typeof value !== 'string') {
      throw new TypeError(`${name} must be a string`);
    }
    out[name] = value;
  }
  return out;
}

/** Why a client is not ready: `code` is `TIMED_OUT`, `FAILED` or `CLOSED`. */
class InitError extends Error {
  constructor(code, message) {
    super(message || code);
    this.name = 'InitError';
    this.code = code;
  }
}

/**
 * A context as the JSON text the native side reads (one string crosses the boundary rather
 * than one call per property). Anything but an object is an anonymous context; attributes
 * that cannot be serialised (cycles, BigInts) are skipped. Throws only when reading the
 * object throws (a hostile getter or proxy).
 */
function contextJson(ctx) {
  if (typeof ctx !== 'object' || ctx === null) return '{}';
  try {
    return JSON.stringify(ctx);
  } catch {
    return salvagedJson(ctx);
  }
}

/** `JSON.stringify` failed on the whole context: keep every part that serialises. */
function salvagedJson(ctx) {
  const parts = [];
  const add = (name, value) => {
    try {
      const json = JSON.stringify(value);
      if (json !== undefined) parts.push(`${JSON.stringify(name)}:${json}`);
    } catch {
      // Skipped: no JSON form.
    }
  };
  add('key', ctx.key);
  add('kind', ctx.kind);
  const attributes = ctx.attributes;
  if (typeof attributes === 'object' && attributes !== null) {
    const inner = [];
    for (const name of Object.keys(attributes)) {
      try {
        const json = JSON.stringify(attributes[name]);
        if (json !== undefined) inner.push(`${JSON.stringify(name)}:${json}`);
      } catch {
        // Skipped: no JSON form.
      }
    }
    parts.push(`"attributes":{${inner.join(',')}}`);
  }
  return `{${parts.join(',')}}`;
}

/**
 * Contexts seen recently, by their JSON text: `null` after the first sighting, the converted
 * context from the second on. Requests usually evaluate several flags for one user; from the
 * second evaluation on, only `JSON.stringify` and a lookup remain of the conversion. Bounded:
 * emptied when full.
 *
 * Adaptive: remembering a context costs about as much as converting it once (hashing its
 * text, the map entry, the garbage it keeps alive), which only pays when contexts recur. So
 * the hits are counted over windows of PROBE_WINDOW lookups; while fewer than one in
 * RARE_HITS hit (every context new, e.g. a user per request), only one call in PROBE_EVERY
 * consults the map, and the others go straight to the native conversion. The sampled calls
 * keep measuring, so recurring contexts switch the map back on within a window or two.
 */
const RECENT_MAX = 1024;
const recent = new Map();
const PROBE_WINDOW = 256;
const RARE_HITS = 8;
const PROBE_EVERY = 16;

/**
 * Whether a cache is worth consulting (or filling) on this call: always while at least one
 * lookup in RARE_HITS hits over a window of PROBE_WINDOW counted lookups, else on one call in
 * PROBE_EVERY (which keeps measuring, so that a cache becoming useful is noticed).
 */
class Adaptive {
  lookups = 0;
  hits = 0;
  every = 1;
  countdown = 0;

  /** Whether to use the cache on this call (count the outcome with `counted` if so). */
  use() {
    if (this.every === 1) return true;
    if (this.countdown > 0) {
      this.countdown -= 1;
      return false;
    }
    this.countdown = this.every - 1;
    return true;
  }

  /** Counts one lookup; re-decides how often to use the cache at a window's end. */
  counted(hit) {
    if (hit) this.hits += 1;
    if (++this.lookups < PROBE_WINDOW) return;
    this.every = this.hits * RARE_HITS < this.lookups ? PROBE_EVERY : 1;
    this.lookups = 0;
    this.hits = 0;
  }
}
const byText = new Adaptive();

/**
 * The converted context (a NativeContext) when this context's JSON text was seen recently,
 * else the JSON text, for the call to convert.
 */
function lookupJson(ctx) {
  const json = contextJson(ctx);
  if (!byText.use()) return json;
  const known = recent.get(json);
  if (known) {
    byText.counted(true);
    return known;
  }
  if (known === null) {
    byText.counted(true);
    const prepared = new NativeContext(json);
    recent.set(json, prepared);
    return prepared;
  }
  byText.counted(false);
  if (recent.size >= RECENT_MAX) recent.clear();
  recent.set(json, null);
  return json;
}

/**
 * Conversions by context object, for code that evaluates several flags with the same object:
 * a hit costs a shallow comparison, not even `JSON.stringify`. An entry is used only while the
 * object still holds exactly what it was converted from: the same `key` and `kind` (strings,
 * numbers or absent), the same `attributes` object with the same own names and the same
 * primitive values. Contexts with object or array attributes are not remembered here (a change
 * inside them could not be seen without reading them whole).
 */
const byObject = new WeakMap();
/** Whether objects come back often enough to be remembered (see `Adaptive`). */
const byObjectUse = new Adaptive();

function isPrimitive(v) {
  return v === undefined || v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean';
}

/** The attribute names and values of `attributes` when all are primitive, else null. */
function primitiveAttributes(attributes) {
  if (attributes === undefined) return { names: [], values: [] };
  if (typeof attributes !== 'object' || attributes === null) return null;
  const names = Object.keys(attributes);
  const values = new Array(names.length);
  for (let i = 0; i < names.length; i++) {
    const v = attributes[names[i]];
    if (!isPrimitive(v)) return null;
    values[i] = v;
  }
  return { names, values };
}

/** Whether `ctx` still holds what entry `e` was made from. */
function unchanged(e, ctx) {
  if (e.key !== ctx.key || e.kind !== ctx.kind) return false;
  const attributes = ctx.attributes;
  if (e.attributes !== attributes) return false;
  if (attributes === undefined) return true;
  const names = Object.keys(attributes);
  if (names.length !== e.names.length) return false;
  for (let i = 0; i < names.length; i++) {
    if (names[i] !== e.names[i] || attributes[names[i]] !== e.values[i]) return false;
  }
  return true;
}

/**
 * The converted context for object `ctx` (a NativeContext), or its JSON text for the call to
 * convert: remembered by object, then by JSON text, converted once from the second use on.
 */
function lookup(ctx) {
  if (typeof ctx !== 'object' || ctx === null) return lookupJson(ctx);
  const e = byObject.get(ctx);
  const hit = e !== undefined && unchanged(e, ctx);
  byObjectUse.counted(hit);
  if (hit) return e.native;
  const c = lookupJson(ctx);
  // Remembering an object (a WeakMap entry) costs about a conversion: worth it only while
  // objects come back (not with a fresh, equal object per call).
  if (typeof c !== 'string' && isPrimitive(ctx.key) && isPrimitive(ctx.kind) && byObjectUse.use()) {
    const attrs = primitiveAttributes(ctx.attributes);
    if (attrs !== null) {
      byObject.set(ctx, { key: ctx.key, kind: ctx.kind, attributes: ctx.attributes, ...attrs, native: c });
    }
  }
  return c;
}

const NATIVE = Symbol('vexil.native');

/**
 * A context converted once, for evaluating many flags for the same user or request: every
 * method accepts it in place of a plain object and then skips the conversion. Immutable:
 * later changes to the object it was made from are not seen.
 */
class Context {
  constructor(context) {
    Object.defineProperty(this, NATIVE, { value: new NativeContext(contextJson(context)) });
  }

  /** The context key, or null. */
  get key() {
    return this[NATIVE].key ?? null;
  }

  /** The context kind, or null. */
  get kind() {
    return this[NATIVE].kind ?? null;
  }
}

/** A detail for `value` with an error reason (the native side was never reached). */
function errorDetail(value, errorKind, errorCode) {
  return {
    value,
    variation: null,
    variationName: null,
    reason: { kind: 'ERROR', errorKind },
    openfeatureReason: 'ERROR',
    errorCode,
    inExperiment: false,
    split: false,
  };
}
const notFound = (value) => errorDetail(value, 'FLAG_NOT_FOUND', 'FLAG_NOT_FOUND');
// A context whose properties throw when read (a getter or a proxy): the one thing the native
// conversion cannot get past.
const invalidContext = (value) => errorDetail(value, 'INVALID_CONTEXT', 'INVALID_CONTEXT');

/** A detail carrying `value` in place of the one the native side used. */
function withValue(detail, value) {
  detail.value = value;
  return detail;
}

// Open clients are closed when the process exits (pending events sent, the last-known-good
// file written); the registry holds them weakly, so that it never keeps one alive.
const open = new Set();
const forget = new FinalizationRegistry((ref) => open.delete(ref));
let exitHook = false;
function register(client) {
  const ref = new WeakRef(client);
  open.add(ref);
  forget.register(client, ref, ref);
  if (!exitHook) {
    exitHook = true;
    process.on('exit', () => {
      for (const r of open) r.deref()?.close();
    });
  }
  return ref;
}

class Client {
  #native;
  #ref;
  #closed = false;
  #initTimeoutMs;

  /**
   * Starts a client at once (connecting in the background); see `Client.init` to wait for
   * its flags. Throws a TypeError on invalid options and an Error on an unusable SDK key or
   * base URL.
   */
  constructor(sdkKey, options) {
    if (typeof sdkKey !== 'string') throw new TypeError('sdkKey must be a string');
    const opts = checkOptions(options);
    this.#initTimeoutMs = opts.initTimeoutMs ?? DEFAULT_INIT_TIMEOUT_MS;
    this.#native = new NativeClient(sdkKey, opts);
    this.#ref = register(this);
  }

  /**
   * Starts a client and waits for its flags, up to `initTimeoutMs` (default 5 s). Resolves with
   * the client once it is ready, or when the time is up (it then serves the last-known-good
   * file if there is one, the callers' defaults otherwise, and keeps trying: see `status()`).
   * Rejects on invalid options, and with an `InitError` when the data source gave up (e.g.
   * the SDK key was refused); the client is closed then.
   */
  static async init(sdkKey, options) {
    const client = new Client(sdkKey, options);
    const outcome = await client.#native.waitForInitialization(client.#initTimeoutMs);
    if (outcome.ok || outcome.error === 'TIMED_OUT') return client;
    client.close();
    throw new InitError(outcome.error, outcome.message);
  }

  /**
   * Waits for the client to be ready; rejects with an `InitError` (`TIMED_OUT`, `FAILED`,
   * `CLOSED`) otherwise. On `TIMED_OUT` the client keeps trying in the background.
   */
  async waitForInitialization(timeoutMs = this.#initTimeoutMs) {
    if (!Number.isInteger(timeoutMs) || timeoutMs < 0) {
      throw new TypeError('timeoutMs must be a non-negative integer');
    }
    const outcome = await this.#native.waitForInitialization(Math.min(timeoutMs, 0xffffffff));
    if (!outcome.ok) throw new InitError(outcome.error, outcome.message);
  }

  /** A boolean flag's value for `context`, or `defaultValue`. */
  boolVariation(flagKey, context, defaultValue) {
    if (typeof flagKey !== 'string') return defaultValue;
    try {
      if (typeof defaultValue === 'boolean') {
        const c = context instanceof Context ? context[NATIVE] : lookup(context);
        return typeof c === 'string'
          ? this.#native.boolVariation(flagKey, c, defaultValue)
          : this.#native.boolVariationPrepared(flagKey, c, defaultValue);
      }
      const d = this.#call('boolDetail', flagKey, context, false);
      return d.reason.kind === 'ERROR' ? defaultValue : d.value;
    } catch {
      return defaultValue;
    }
  }

  /** A string flag's value for `context`, or `defaultValue`. */
  stringVariation(flagKey, context, defaultValue) {
    if (typeof flagKey !== 'string') return defaultValue;
    try {
      if (typeof defaultValue === 'string') {
        const c = context instanceof Context ? context[NATIVE] : lookup(context);
        return typeof c === 'string'
          ? this.#native.stringVariation(flagKey, c, defaultValue)
          : this.#native.stringVariationPrepared(flagKey, c, defaultValue);
      }
      const d = this.#call('stringDetail', flagKey, context, '');
      return d.reason.kind === 'ERROR' ? defaultValue : d.value;
    } catch {
      return defaultValue;
    }
  }

  /** A number flag's value for `context`, or `defaultValue`. */
  numberVariation(flagKey, context, defaultValue) {
    if (typeof flagKey !== 'string') return defaultValue;
    try {
      if (typeof defaultValue === 'number') {
        const c = context instanceof Context ? context[NATIVE] : lookup(context);
        return typeof c === 'string'
          ? this.#native.numberVariation(flagKey, c, defaultValue)
          : this.#native.numberVariationPrepared(flagKey, c, defaultValue);
      }
      const d = this.#call('numberDetail', flagKey, context, 0);
      return d.reason.kind === 'ERROR' ? defaultValue : d.value;
    } catch {
      return defaultValue;
    }
  }

  /** Any flag's value as JSON (a fresh copy), or `defaultValue` (returned as is). */
  jsonVariation(flagKey, context, defaultValue) {
    if (typeof flagKey !== 'string') return defaultValue;
    try {
      const d = this.#call('jsonDetail', flagKey, context);
      return d.reason.kind === 'ERROR' ? defaultValue : d.value;
    } catch {
      return defaultValue;
    }
  }

  /** `boolVariation` with the variation and the reason. */
  boolVariationDetail(flagKey, context, defaultValue) {
    return this.#detail('boolDetail', 'boolean', false, flagKey, context, defaultValue);
  }

  /** `stringVariation` with the variation and the reason. */
  stringVariationDetail(flagKey, context, defaultValue) {
    return this.#detail('stringDetail', 'string', '', flagKey, context, defaultValue);
  }

  /** `numberVariation` with the variation and the reason. */
  numberVariationDetail(flagKey, context, defaultValue) {
    return this.#detail('numberDetail', 'number', 0, flagKey, context, defaultValue);
  }

  /** `jsonVariation` with the variation and the reason. */
  jsonVariationDetail(flagKey, context, defaultValue) {
    if (typeof flagKey !== 'string') return notFound(defaultValue);
    try {
      const d = this.#call('jsonDetail', flagKey, context);
      return d.reason.kind === 'ERROR' ? withValue(d, defaultValue) : d;
    } catch {
      return invalidContext(defaultValue);
    }
  }

  /** `method` (or its `*Prepared` twin for a prepared context) with `rest` after the context. */
  #call(method, flagKey, context, ...rest) {
    const c = context instanceof Context ? context[NATIVE] : lookup(context);
    return typeof c === 'string'
      ? this.#native[method](flagKey, c, ...rest)
      : this.#native[`${method}Prepared`](flagKey, c, ...rest);
  }

  #detail(method, type, placeholder, flagKey, context, defaultValue) {
    if (typeof flagKey !== 'string') return notFound(defaultValue);
    try {
      if (typeof defaultValue === type) {
        return this.#call(method, flagKey, context, defaultValue);
      }
      const d = this.#call(method, flagKey, context, placeholder);
      return d.reason.kind === 'ERROR' ? withValue(d, defaultValue) : d;
    } catch {
      return invalidContext(defaultValue);
    }
  }

  /**
   * Every flag evaluated for `context`: `{ valid, version, flags: { key: detail } }` (the
   * details in the wire form, snake_case, as the server's APIs send them). Records no events.
   */
  allFlags(context) {
    try {
      return context instanceof Context
        ? this.#native.allFlagsPrepared(context[NATIVE])
        : this.#native.allFlags(contextJson(context));
    } catch {
      return { valid: false, version: null, flags: {} };
    }
  }

  /**
   * Records a custom event for `context` (e.g. `"purchase"`), with an optional numeric
   * `value`; sent with the next flush. Never throws: an invalid event is counted in
   * `status().events.invalid` and dropped.
   */
  track(eventKey, context, value) {
    if (typeof eventKey !== 'string') return;
    try {
      const v = typeof value === 'number' ? value : undefined;
      if (context instanceof Context) {
        this.#native.trackPrepared(eventKey, context[NATIVE], v);
      } else {
        this.#native.track(eventKey, contextJson(context), v);
      }
    } catch {
      // A context whose properties throw when read: nothing to record.
    }
  }

  /** Sends queued events now rather than at the next interval. */
  flush() {
    this.#native.flush();
  }

  /** `{ state, version, origin, lastError, since, events }`. */
  status() {
    return this.#native.status();
  }

  /** Whether flags are being served (from upstream or the last-known-good file). */
  get initialized() {
    return this.#native.initialized;
  }

  /**
   * Calls `listener({ version, keys, origin })` after every update that changed some flag's
   * result (on the main thread; it never keeps the process alive). An exception in it is
   * reported as a process warning. Returns a function that removes the listener.
   */
  onFlagChange(listener) {
    if (typeof listener !== 'function') throw new TypeError('listener must be a function');
    const id = this.#native.onFlagChange((change) => {
      try {
        listener(change);
      } catch (e) {
        process.emitWarning(`a Vexil flag-change listener threw: ${e && e.stack ? e.stack : e}`);
      }
    });
    return () => this.#native.removeListener(id);
  }

  /**
   * Calls `listener(status)` each time the client's state changes from the one it had when
   * the listener was added: `ready` → `stale` when the stream is lost (the flags held are
   * still served), back to `ready` once reconnected, `failed` when the data source gave up
   * (e.g. the SDK key was refused), `offline` once closed. Quick successive changes may be
   * coalesced into the latest. On the main thread; it never keeps the process alive. An
   * exception in it is reported as a process warning. Returns a function that removes it.
   */
  onStatusChange(listener) {
    if (typeof listener !== 'function') throw new TypeError('listener must be a function');
    const id = this.#native.onStatusChange((status) => {
      try {
        listener(status);
      } catch (e) {
        process.emitWarning(`a Vexil status listener threw: ${e && e.stack ? e.stack : e}`);
      }
    });
    return () => this.#native.removeListener(id);
  }

  /**
   * Stops the background work: writes a pending last-known-good snapshot and sends pending
   * events first (up to `closeTimeoutMs`). Evaluations keep working on the flags held. Safe to
   * call twice; called for every open client when the process exits.
   */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    open.delete(this.#ref);
    forget.unregister(this.#ref);
    this.#native.close();
  }
}

module.exports = { Client, Context, InitError };
