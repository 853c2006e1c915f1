import {
  ErrorCode,
  OpenFeatureEventEmitter,
  ProviderEvents,
  StandardResolutionReasons,
  type EvaluationContext,
  type JsonValue,
  type Logger,
  type Provider,
  type ResolutionDetails,
  type TrackingEventDetails,
} from '@openfeature/web-sdk';
import { EventSender, type EventsOptions } from './events.js';
import { backoffDelay, base64url, canonicalJson, changedKeys, parseFlagValue, type FlagValue, type Json } from './util.js';

/** The part of the `EventSource` constructor the provider uses (injectable for tests). */
export type EventSourceConstructor = new (url: string) => EventSource;

/** Options of {@link VexilWebProvider}. */
export interface VexilWebProviderOptions {
  /** Base URL of a Vexil relay or server, e.g. `https://flags.example.com`. */
  baseUrl: string;
  /** The environment's client-side key (`vxc_…`): public, read-only, safe to ship in a page. */
  clientKey: string;
  /** Stream with `EventSource` (default `true`); when `false`, poll OFREP bulk every {@link pollIntervalMs}. */
  streaming?: boolean;
  /** Polling period when not streaming, in ms (default 30 000). */
  pollIntervalMs?: number;
  /** First reconnection delay after a stream failure, in ms (default 500). */
  initialBackoffMs?: number;
  /** Longest reconnection delay, in ms (default 30 000). */
  maxBackoffMs?: number;
  /** How long `initialize` waits for the first values before failing (default 5 000 ms). */
  initTimeoutMs?: number;
  /**
   * Where the last values are kept for the next page load: a `Storage` (default `localStorage`
   * when available) or `false` for none.
   */
  cache?: Storage | false;
  /** Analytics events (`track`, exposures) to `/events/v1/bulk`; `false` turns them off. */
  events?: EventsOptions | false;
  /** `fetch` to use (default the global one). */
  fetch?: typeof fetch;
  /** `EventSource` to use (default the global one; without one the provider polls). */
  eventSource?: EventSourceConstructor;
}

interface CacheEntry {
  version: number;
  flags: Record<string, FlagValue>;
}

const CACHE_PREFIX = 'vexil:v1:';

/**
 * An OpenFeature web provider for Vexil: streams this context's evaluated client-side flag
 * values from `/client/v1/stream`, falls back to OFREP bulk evaluation, and keeps the last
 * values in `localStorage` for the next page load.
 */
export class VexilWebProvider implements Provider {
  /** Provider metadata. */
  readonly metadata = { name: 'vexil-web' } as const;
  /** The OpenFeature paradigm: static context, evaluated on the client. */
  readonly runsOn = 'client' as const;
  /** Events towards the OpenFeature SDK (`Ready`, `ConfigurationChanged`, `Stale`, `Error`). */
  readonly events = new OpenFeatureEventEmitter();

  private readonly opts: Required<Omit<VexilWebProviderOptions, 'events' | 'cache' | 'eventSource' | 'fetch'>>;
  private readonly fetchFn: typeof fetch;
  private readonly EventSourceCtor: EventSourceConstructor | undefined;
  private readonly storage: Storage | undefined;
  private readonly sender: EventSender | undefined;

  private flags = new Map<string, FlagValue>();
  private version = -1;
  private fresh = false;
  private stale = false;
  private etag: string | undefined;
  private context: EvaluationContext = {};
  private source: EventSource | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private attempt = 0;
  private generation = 0;
  private waiters: Array<() => void> = [];
  private closed = false;

  /** Creates the provider; nothing connects until OpenFeature calls {@link initialize}. */
  constructor(options: VexilWebProviderOptions) {
    if (!options.clientKey.startsWith('vxc_')) {
      throw new Error('VexilWebProvider needs a client-side key (vxc_…); never ship a server-side SDK key to a browser');
    }
    this.opts = {
      baseUrl: options.baseUrl.replace(/\/+$/, ''),
      clientKey: options.clientKey,
      streaming: options.streaming ?? true,
      pollIntervalMs: options.pollIntervalMs ?? 30_000,
      initialBackoffMs: options.initialBackoffMs ?? 500,
      maxBackoffMs: options.maxBackoffMs ?? 30_000,
      initTimeoutMs: options.initTimeoutMs ?? 5_000,
    };
    const f = options.fetch ?? (typeof fetch === 'function' ? fetch : undefined);
    if (!f) throw new Error('VexilWebProvider needs fetch');
    this.fetchFn = f.bind(globalThis) as typeof fetch;
    this.EventSourceCtor = options.eventSource ?? (typeof EventSource === 'function' ? EventSource : undefined);
    this.storage = options.cache === false ? undefined : (options.cache ?? defaultStorage());
    if (options.events !== false) {
      this.sender = new EventSender(this.opts.baseUrl, this.opts.clientKey, this.fetchFn, options.events ?? {});
    }
  }

  /** Loads cached values, connects, and resolves once values are known (cached or fresh). */
  async initialize(context?: EvaluationContext): Promise<void> {
    this.sender?.start();
    await this.switchContext(context ?? {});
  }

  /** Reconnects for the new context; resolves once its values are known. */
  async onContextChange(_old: EvaluationContext, next: EvaluationContext): Promise<void> {
    await this.switchContext(next);
  }

  /** Stops streaming and polling and flushes pending events. */
  async onClose(): Promise<void> {
    this.closed = true;
    this.disconnect();
    await this.sender?.close();
  }

  /** Sends a custom event (`track`) to `/events/v1/bulk`. */
  track(name: string, context: EvaluationContext, details: TrackingEventDetails): void {
    this.sender?.custom(name, context, typeof details?.value === 'number' ? details.value : undefined);
  }

  /** Resolves a boolean flag from the values held. */
  resolveBooleanEvaluation(key: string, def: boolean, ctx: EvaluationContext, logger: Logger): ResolutionDetails<boolean> {
    return this.resolve(key, def, 'boolean', ctx, logger);
  }
  /** Resolves a string flag from the values held. */
  resolveStringEvaluation(key: string, def: string, ctx: EvaluationContext, logger: Logger): ResolutionDetails<string> {
    return this.resolve(key, def, 'string', ctx, logger);
  }
  /** Resolves a number flag from the values held. */
  resolveNumberEvaluation(key: string, def: number, ctx: EvaluationContext, logger: Logger): ResolutionDetails<number> {
    return this.resolve(key, def, 'number', ctx, logger);
  }
  /** Resolves an object (JSON) flag from the values held. */
  resolveObjectEvaluation<T extends JsonValue>(key: string, def: T, ctx: EvaluationContext, logger: Logger): ResolutionDetails<T> {
    return this.resolve(key, def, 'object', ctx, logger);
  }

  private resolve<T>(key: string, def: T, type: 'boolean' | 'string' | 'number' | 'object', ctx: EvaluationContext, _logger: Logger): ResolutionDetails<T> {
    const flag = this.flags.get(key);
    if (!flag) {
      return { value: def, reason: StandardResolutionReasons.ERROR, errorCode: ErrorCode.FLAG_NOT_FOUND, errorMessage: `flag ${JSON.stringify(key)} is not a client-side flag of this environment` };
    }
    const actual = flag.value === null ? 'null' : Array.isArray(flag.value) ? 'object' : typeof flag.value;
    if (actual !== type) {
      return { value: def, reason: StandardResolutionReasons.ERROR, errorCode: ErrorCode.TYPE_MISMATCH, errorMessage: `flag ${JSON.stringify(key)} is a ${actual}, not a ${type}` };
    }
    if (this.sender && flag.inExperiment && flag.flagVersion !== undefined && flag.variationIndex !== undefined) {
      this.sender.exposure(key, flag.flagVersion, this.version, flag.variationIndex, ctx);
    }
    const out: ResolutionDetails<T> = {
      value: flag.value as T,
      reason: this.fresh ? (flag.reason ?? StandardResolutionReasons.UNKNOWN) : StandardResolutionReasons.CACHED,
      flagMetadata: { environmentVersion: this.version },
    };
    if (flag.variant !== undefined) out.variant = flag.variant;
    return out;
  }

  // ---- connection management ----

  private async switchContext(context: EvaluationContext): Promise<void> {
    this.disconnect();
    this.generation++;
    this.context = context;
    this.attempt = 0;
    this.fresh = false;
    this.etag = undefined;
    const cached = this.readCache();
    if (cached) {
      this.apply(cached.version, new Map(Object.entries(cached.flags)), false);
    } else {
      this.flags = new Map();
      this.version = -1;
    }
    const ready = cached ? Promise.resolve() : this.waitFresh();
    this.connect();
    await ready;
  }

  private waitFresh(): Promise<void> {
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(t);
        resolve();
      };
      const t = setTimeout(() => {
        // OpenFeature marks the provider ERROR; the connection keeps trying and the first
        // values emit READY (see markFresh).
        this.waiters = this.waiters.filter((w) => w !== done);
        this.stale = true;
        reject(new Error(`no flag values from ${this.opts.baseUrl} within ${this.opts.initTimeoutMs} ms`));
      }, this.opts.initTimeoutMs);
      this.waiters.push(done);
    });
  }

  private connect(): void {
    if (this.closed) return;
    const gen = this.generation;
    if (!this.opts.streaming || !this.EventSourceCtor) {
      void this.poll(gen);
      return;
    }
    const url = `${this.opts.baseUrl}/client/v1/stream?key=${encodeURIComponent(this.opts.clientKey)}&context=${base64url(canonicalJson(this.context))}`;
    const es = new this.EventSourceCtor(url);
    this.source = es;
    es.addEventListener('put', (e) => this.onFrame(gen, (e as MessageEvent).data, false));
    es.addEventListener('patch', (e) => this.onFrame(gen, (e as MessageEvent).data, true));
    es.onerror = () => {
      if (gen !== this.generation || this.source !== es) return;
      // The browser would retry on its own at a fixed pace; back off with jitter instead,
      // and meanwhile ask OFREP bulk so that values stay current when streaming is blocked.
      es.close();
      this.source = undefined;
      void this.fallback(gen);
      this.schedule(gen, () => this.connect());
    };
  }

  private onFrame(gen: number, data: unknown, patch: boolean): void {
    if (gen !== this.generation || typeof data !== 'string') return;
    let body: unknown;
    try {
      body = JSON.parse(data);
    } catch {
      return;
    }
    if (body === null || typeof body !== 'object') return;
    const b = body as { version?: unknown; flags?: unknown; removed?: unknown };
    const version = typeof b.version === 'number' ? b.version : this.version;
    const next = patch ? new Map(this.flags) : new Map<string, FlagValue>();
    if (b.flags !== null && typeof b.flags === 'object') {
      for (const [k, raw] of Object.entries(b.flags as Record<string, unknown>)) {
        const v = parseFlagValue(raw);
        if (v) next.set(k, v);
      }
    }
    if (patch && Array.isArray(b.removed)) for (const k of b.removed) if (typeof k === 'string') next.delete(k);
    this.attempt = 0;
    this.apply(version, next, true);
  }

  private async poll(gen: number): Promise<void> {
    await this.fallback(gen);
    if (gen === this.generation && !this.closed) {
      this.timer = setTimeout(() => void this.poll(gen), this.opts.pollIntervalMs);
    }
  }

  /** One OFREP bulk evaluation; `true` when values (or a 304) came back. */
  private async fallback(gen: number): Promise<boolean> {
    try {
      const headers: Record<string, string> = {
        Authorization: `Bearer ${this.opts.clientKey}`,
        'Content-Type': 'application/json',
      };
      if (this.etag) headers['If-None-Match'] = this.etag;
      const res = await this.fetchFn(`${this.opts.baseUrl}/ofrep/v1/evaluate/flags`, {
        method: 'POST',
        headers,
        body: JSON.stringify({ context: this.context }),
      });
      if (gen !== this.generation) return false;
      if (res.status === 304) {
        this.markFresh();
        return true;
      }
      if (!res.ok) throw new Error(`OFREP bulk answered ${res.status}`);
      const body = (await res.json()) as { flags?: unknown; metadata?: { environmentVersion?: unknown } };
      if (gen !== this.generation) return false;
      const next = new Map<string, FlagValue>();
      if (Array.isArray(body.flags)) {
        for (const item of body.flags as Array<Record<string, unknown>>) {
          const v = parseFlagValue(item);
          if (v && typeof item['key'] === 'string') next.set(item['key'], v);
        }
      }
      this.etag = res.headers.get('ETag') ?? undefined;
      const ev = body.metadata?.environmentVersion;
      this.apply(typeof ev === 'number' ? ev : this.version, next, true);
      return true;
    } catch (err) {
      if (gen === this.generation && !this.stale && this.fresh) {
        this.stale = true;
        this.events.emit(ProviderEvents.Stale, { message: `cannot reach ${this.opts.baseUrl}: ${String(err)}` });
      }
      return false;
    }
  }

  private schedule(gen: number, f: () => void): void {
    const delay = backoffDelay(this.attempt++, this.opts.initialBackoffMs, this.opts.maxBackoffMs);
    this.timer = setTimeout(() => {
      if (gen === this.generation) f();
    }, delay);
  }

  private apply(version: number, next: Map<string, FlagValue>, fresh: boolean): void {
    const changed = changedKeys(this.flags, next);
    const wasFresh = this.fresh;
    const initializing = this.waiters.length > 0;
    this.flags = next;
    this.version = version;
    if (fresh) {
      this.writeCache();
      this.markFresh();
    }
    // Values that came from the cache become fresh without changing: no event for those.
    if (changed.length > 0 && (wasFresh || !initializing)) {
      this.events.emit(ProviderEvents.ConfigurationChanged, { flagsChanged: changed });
    }
  }

  private markFresh(): void {
    this.fresh = true;
    if (this.stale) {
      this.stale = false;
      this.events.emit(ProviderEvents.Ready);
    }
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private disconnect(): void {
    this.source?.close();
    this.source = undefined;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  // ---- cache ----

  private cacheKey(): string {
    return `${CACHE_PREFIX}${this.opts.baseUrl}|${this.opts.clientKey}|${canonicalJson(this.context)}`;
  }

  private readCache(): CacheEntry | undefined {
    try {
      const raw = this.storage?.getItem(this.cacheKey());
      if (!raw) return undefined;
      const entry = JSON.parse(raw) as CacheEntry;
      return typeof entry.version === 'number' && entry.flags && typeof entry.flags === 'object' ? entry : undefined;
    } catch {
      return undefined;
    }
  }

  private writeCache(): void {
    try {
      const entry: CacheEntry = { version: this.version, flags: Object.fromEntries(this.flags) };
      this.storage?.setItem(this.cacheKey(), JSON.stringify(entry));
    } catch {
      // Storage full or forbidden (private mode): the cache is an optimisation only.
    }
  }
}

function defaultStorage(): Storage | undefined {
  try {
    return typeof localStorage === 'undefined' ? undefined : localStorage;
  } catch {
    return undefined;
  }
}

export type { Json };
