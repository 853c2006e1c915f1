import type { EvaluationContext } from '@openfeature/web-sdk';

/** Options of analytics event delivery to `/events/v1/bulk`. */
export interface EventsOptions {
  /** How often queued events are sent, in ms (default 10 000). */
  flushIntervalMs?: number;
  /** Events held at most; older ones are dropped beyond it (default 1 000). */
  maxQueue?: number;
  /** Send as soon as this many events are queued (default 100). */
  batchSize?: number;
}

/** `schema/src/events.rs` wire format version. */
const SCHEMA_VERSION = 1;
const SDK_NAME = 'vexil-web';
const SDK_VERSION = '0.1.0';

type WireEvent = Record<string, string | number>;

/**
 * Queues `custom` and `exposure` events and sends them in batches with `fetch(…, {keepalive})`
 * (retried on failure), and with `navigator.sendBeacon` when the page is hidden or unloaded
 * (`visibilitychange`, `pagehide`).
 */
export class EventSender {
  private queue: WireEvent[] = [];
  private inflight = false;
  private readonly exposed = new Set<string>();
  private timer: ReturnType<typeof setInterval> | undefined;
  private readonly instanceId = randomId();
  private readonly flushIntervalMs: number;
  private readonly maxQueue: number;
  private readonly batchSize: number;
  private readonly onHide = (): void => {
    if (typeof document === 'undefined' || document.visibilityState === 'hidden') this.flush(true);
  };

  constructor(
    private readonly baseUrl: string,
    private readonly clientKey: string,
    private readonly fetchFn: typeof fetch,
    options: EventsOptions,
  ) {
    this.flushIntervalMs = options.flushIntervalMs ?? 10_000;
    this.maxQueue = options.maxQueue ?? 1_000;
    this.batchSize = options.batchSize ?? 100;
  }

  /** Starts the periodic flush and the page-hide hooks. */
  start(): void {
    if (this.timer !== undefined) return;
    this.timer = setInterval(() => this.flush(false), this.flushIntervalMs);
    if (typeof addEventListener === 'function') {
      addEventListener('pagehide', this.onHide);
      addEventListener('visibilitychange', this.onHide);
    }
  }

  /** Stops and sends what is queued. */
  async close(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    if (typeof removeEventListener === 'function') {
      removeEventListener('pagehide', this.onHide);
      removeEventListener('visibilitychange', this.onHide);
    }
    await this.flush(false);
  }

  /** Queues a `custom` event; ignored without a targeting key (the wire format needs one). */
  custom(eventKey: string, context: EvaluationContext, value: number | undefined): void {
    const key = context.targetingKey;
    if (!key) return;
    const e: WireEvent = { kind: 'custom', time: Date.now(), event_key: eventKey, context_key: key, context_kind: contextKind(context) };
    if (value !== undefined && Number.isFinite(value)) e['value'] = value;
    this.push(e);
  }

  /** Queues an `exposure`, once per context × flag × variation. */
  exposure(flagKey: string, flagVersion: number, environmentVersion: number, variation: number, context: EvaluationContext): void {
    const key = context.targetingKey;
    if (!key) return;
    const kind = contextKind(context);
    const dedup = `${kind}\u0000${key}\u0000${flagKey}\u0000${variation}`;
    if (this.exposed.has(dedup)) return;
    this.exposed.add(dedup);
    this.push({ kind: 'exposure', time: Date.now(), flag_key: flagKey, flag_version: flagVersion, environment_version: Math.max(0, environmentVersion), variation, context_key: key, context_kind: kind });
  }

  /**
   * Sends the queue. Normally with `fetch(…, {keepalive})` and the key in `Authorization`;
   * a batch that fails (network, 429, 5xx) goes back to the front of the queue for the next
   * flush. When the page is being hidden or unloaded (`unloading`), with
   * `navigator.sendBeacon`: a `text/plain` body (no CORS preflight, which an unloading page
   * may not outlive) and the key in the query (a beacon cannot set headers).
   */
  flush(unloading: boolean): Promise<void> {
    if (this.queue.length === 0 || (this.inflight && !unloading)) return Promise.resolve();
    const events = this.queue;
    this.queue = [];
    const body = JSON.stringify({ schema_version: SCHEMA_VERSION, sdk: { name: SDK_NAME, version: SDK_VERSION, instance_id: this.instanceId }, events });
    if (unloading && typeof navigator !== 'undefined' && typeof navigator.sendBeacon === 'function') {
      const url = `${this.baseUrl}/events/v1/bulk?key=${encodeURIComponent(this.clientKey)}`;
      try {
        if (navigator.sendBeacon(url, new Blob([body], { type: 'text/plain' }))) return Promise.resolve();
      } catch {
        // Fall through to fetch.
      }
    }
    this.inflight = true;
    let sent: Promise<Response>;
    try {
      sent = this.fetchFn(`${this.baseUrl}/events/v1/bulk`, {
        method: 'POST',
        keepalive: true,
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${this.clientKey}`, 'X-Vexil-Event-Schema': String(SCHEMA_VERSION) },
        body,
      });
    } catch (err) {
      sent = Promise.reject(err);
    }
    return sent.then(
      (res) => {
        this.inflight = false;
        // 429 and 5xx are worth retrying; other refusals (a bad key, a refused origin) are not.
        if (res.status === 429 || res.status >= 500) this.requeue(events);
      },
      () => {
        this.inflight = false;
        this.requeue(events);
      },
    );
  }

  /** Puts a failed batch back in front of what was queued since, within `maxQueue`. */
  private requeue(events: WireEvent[]): void {
    this.queue = events.concat(this.queue);
    if (this.queue.length > this.maxQueue) this.queue.splice(0, this.queue.length - this.maxQueue);
  }

  private push(e: WireEvent): void {
    this.queue.push(e);
    if (this.queue.length > this.maxQueue) this.queue.splice(0, this.queue.length - this.maxQueue);
    if (this.queue.length >= this.batchSize) void this.flush(false);
  }
}

function contextKind(context: EvaluationContext): string {
  return typeof context['kind'] === 'string' && context['kind'] !== '' ? context['kind'] : 'user';
}

function randomId(): string {
  if (typeof crypto !== 'undefined' && typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  return `${Date.now().toString(16)}-${Math.random().toString(16).slice(2)}`;
}
