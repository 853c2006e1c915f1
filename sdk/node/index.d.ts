// Types of @vexil/node. The implementation is index.js over the native addon.

/** A JSON value, as flags serve and attributes hold them. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/**
 * Who or what flags are evaluated for: the wire form every Vexil component uses. A context
 * without a key is anonymous (rollouts and targets need a key). Attributes without a JSON form
 * (functions, symbols, `undefined`) are skipped; dates are compared as ISO 8601 strings.
 */
export interface ContextInput {
  key?: string;
  kind?: string;
  attributes?: { [name: string]: JsonValue };
}

/**
 * A context converted once, for evaluating many flags for the same user or request: every
 * evaluation method accepts it in place of a plain object and then skips the conversion.
 */
export declare class Context {
  constructor(context?: ContextInput);
  readonly key: string | null;
  readonly kind: string | null;
}

export type ContextArg = ContextInput | Context;

/** Why a flag has its value. */
export interface Reason {
  kind: 'OFF' | 'TARGET_MATCH' | 'RULE_MATCH' | 'FALLTHROUGH' | 'PREREQUISITE_FAILED' | 'ERROR';
  /** `RULE_MATCH`: the zero-based index of the rule. */
  ruleIndex?: number;
  /** `RULE_MATCH`: the rule's id. */
  ruleId?: string;
  /** `PREREQUISITE_FAILED`: the first prerequisite that failed. */
  prerequisiteKey?: string;
  /** `ERROR`: what went wrong; the caller's default was returned. */
  errorKind?: 'FLAG_NOT_FOUND' | 'MALFORMED' | 'WRONG_TYPE' | 'CLIENT_NOT_READY' | 'INVALID_CONTEXT';
}

/** A flag's value for a context, and why. */
export interface EvaluationDetail<T> {
  /** The value served, or the caller's default when `reason.kind` is `ERROR`. */
  value: T;
  /** The index of the variation served; `null` when the default was returned. */
  variation: number | null;
  /** The variation's name, if it has one. */
  variationName: string | null;
  reason: Reason;
  /** OpenFeature's reason: `STATIC`, `DEFAULT`, `TARGETING_MATCH`, `SPLIT`, `DISABLED` or `ERROR`. */
  openfeatureReason: string;
  /** OpenFeature's error code when `reason.kind` is `ERROR`. */
  errorCode: 'FLAG_NOT_FOUND' | 'PARSE_ERROR' | 'TYPE_MISMATCH' | 'PROVIDER_NOT_READY' | 'INVALID_CONTEXT' | null;
  /** Whether the value came from an experiment (and counts as an exposure). */
  inExperiment: boolean;
  /** Whether the value came from a weighted rollout. */
  split: boolean;
}

export interface ClientOptions {
  /** The server's or relay's base URL. Default `http://127.0.0.1:8080`. */
  baseUrl?: string;
  /** Persist the flags received to this file, and serve it when upstream is unreachable at start. */
  lastKnownGood?: string;
  /** Connect to nothing: serve the last-known-good file, else the callers' defaults. */
  offline?: boolean;
  /** Read flags from this snapshot file (as `GET /sdk/v1/snapshot` serves it) instead of the network. */
  file?: string;
  /** With `file`: re-read it when it changes, checked this often. */
  fileWatchIntervalMs?: number;
  /** Poll the snapshot endpoint this often instead of streaming. */
  pollIntervalMs?: number;
  /** Streaming: the first delay between reconnection attempts (doubling, with jitter). Default 1000. */
  reconnectInitialDelayMs?: number;
  /** Streaming: the longest delay between reconnection attempts. Default 30000. */
  reconnectMaxDelayMs?: number;
  /** How long `Client.init` waits, and after how long the last-known-good file is served. Default 5000. */
  initTimeoutMs?: number;
  /** Time limit for establishing a connection. Default 10000. */
  connectTimeoutMs?: number;
  /** How long closing waits for pending writes and events. Default 5000. */
  closeTimeoutMs?: number;
  /** Send analytics events (exposures, `track`, summaries). Default true. */
  sendEvents?: boolean;
  /** How often events are sent. Default 5000. */
  eventsFlushIntervalMs?: number;
  /** The most events queued (the oldest are dropped beyond it). Default 10000. */
  eventsCapacity?: number;
}

export interface EventStats {
  recorded: number;
  queued: number;
  dropped: number;
  sent: number;
  failed: number;
  invalid: number;
}

export interface Status {
  state: 'initializing' | 'ready' | 'stale' | 'offline' | 'failed';
  /** The environment version served, if any. */
  version: number | null;
  /** Where the flags served come from. */
  origin: 'upstream' | 'last_known_good' | 'file' | 'test_data' | 'custom' | null;
  /** The latest data source problem, cleared once ready again. */
  lastError: string | null;
  /** When `state` last changed, in milliseconds since the Unix epoch. */
  since: number;
  events: EventStats;
}

export interface FlagChange {
  /** The environment version after the update. */
  version: number;
  /** The flags whose result may differ for some context, sorted. */
  keys: string[];
  origin: string;
}

/** Every flag for one context; details in the wire form (snake_case), as the server's APIs send them. */
export interface AllFlags {
  valid: boolean;
  version: number | null;
  flags: {
    [key: string]: {
      value: JsonValue;
      variation: number | null;
      variation_name: string | null;
      reason: { kind: string; [field: string]: unknown };
      in_experiment: boolean;
      split: boolean;
    };
  };
}

/** Why a client is not ready. */
export declare class InitError extends Error {
  readonly code: 'TIMED_OUT' | 'FAILED' | 'CLOSED';
}

/**
 * A Vexil client: evaluates flags in process with Vexil's Rust SDK, kept current over SSE on
 * the SDK's own thread. Create one per process and share it. Evaluation never throws.
 */
export declare class Client {
  /** Starts a client at once; see `Client.init`. Throws on invalid options, key or URL. */
  constructor(sdkKey: string, options?: ClientOptions);
  /**
   * Starts a client and waits up to `initTimeoutMs` for its flags; resolves on timeout too (the
   * client then serves the last-known-good file or the defaults, and keeps trying). Rejects
   * with an `InitError` when the data source gave up (e.g. a refused SDK key).
   */
  static init(sdkKey: string, options?: ClientOptions): Promise<Client>;
  /** Waits for flags; rejects with an `InitError` otherwise. */
  waitForInitialization(timeoutMs?: number): Promise<void>;

  boolVariation(flagKey: string, context: ContextArg, defaultValue: boolean): boolean;
  stringVariation(flagKey: string, context: ContextArg, defaultValue: string): string;
  numberVariation(flagKey: string, context: ContextArg, defaultValue: number): number;
  jsonVariation<T = JsonValue>(flagKey: string, context: ContextArg, defaultValue: T): JsonValue | T;

  boolVariationDetail(flagKey: string, context: ContextArg, defaultValue: boolean): EvaluationDetail<boolean>;
  stringVariationDetail(flagKey: string, context: ContextArg, defaultValue: string): EvaluationDetail<string>;
  numberVariationDetail(flagKey: string, context: ContextArg, defaultValue: number): EvaluationDetail<number>;
  jsonVariationDetail<T = JsonValue>(
    flagKey: string,
    context: ContextArg,
    defaultValue: T,
  ): EvaluationDetail<JsonValue | T>;

  /** Every flag evaluated for `context` (records no events). */
  allFlags(context: ContextArg): AllFlags;
  /** Records a custom event, with an optional numeric value; never throws. */
  track(eventKey: string, context: ContextArg, value?: number): void;
  /** Sends queued events now. */
  flush(): void;
  status(): Status;
  /** Whether flags are being served (from upstream or the last-known-good file). */
  readonly initialized: boolean;
  /** Calls `listener` after every update that changed some flag; returns a function removing it. */
  onFlagChange(listener: (change: FlagChange) => void): () => void;
  /**
   * Calls `listener` each time the client's state changes (`ready` → `stale` when the stream is
   * lost, back to `ready`, `failed` when the SDK key is refused…); returns a function removing it.
   */
  onStatusChange(listener: (status: Status) => void): () => void;
  /** Stops the background work, sending pending events and writing the last-known-good file first. */
  close(): void;
}
