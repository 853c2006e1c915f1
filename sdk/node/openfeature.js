'use strict';
// An OpenFeature provider for `@openfeature/server-sdk`, over a Vexil `Client`: applications
// written against the vendor-neutral API evaluate Vexil flags in process. Reasons and error
// codes come from the Rust SDK's one mapping (`openfeatureReason`, `errorCode` of a detail).
const {
  ErrorCode,
  OpenFeatureEventEmitter,
  ProviderEvents,
  ProviderFatalError,
  GeneralError,
} = require('@openfeature/server-sdk');
const { Client } = require('./index');

/**
 * OpenFeature's evaluation context → a Vexil context: the targeting key is the key, a string
 * `kind` the kind, every other field an attribute (dates as ISO 8601 strings, which is what
 * the `before`/`after` operators read); a field named `key` is ignored, the targeting key
 * being the only key.
 */
function toVexilContext(ctx) {
  const out = { attributes: {} };
  if (!ctx) return out;
  for (const [name, value] of Object.entries(ctx)) {
    if (name === 'targetingKey') {
      if (typeof value === 'string') out.key = value;
    } else if (name === 'kind' && typeof value === 'string') {
      out.kind = value;
    } else if (name !== 'key' && value !== undefined) {
      out.attributes[name] = toJson(value);
    }
  }
  return out;
}

function toJson(value) {
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value)) return value.map(toJson);
  if (value !== null && typeof value === 'object') {
    const o = {};
    for (const [k, v] of Object.entries(value)) if (v !== undefined) o[k] = toJson(v);
    return o;
  }
  return value;
}

/** A Vexil detail → OpenFeature resolution details. */
function resolution(d) {
  if (d.reason.kind === 'ERROR') {
    return {
      value: d.value,
      reason: 'ERROR',
      errorCode: d.errorCode ?? 'GENERAL',
      errorMessage: errorMessage(d),
    };
  }
  const out = {
    value: d.value,
    variant: d.variationName ?? (d.variation === null ? undefined : String(d.variation)),
    reason: d.openfeatureReason,
  };
  if (d.inExperiment) out.flagMetadata = { inExperiment: true };
  return out;
}

function errorMessage(d) {
  switch (d.reason.errorKind) {
    case 'FLAG_NOT_FOUND':
      return 'no such flag in this environment';
    case 'MALFORMED':
      return "the flag's configuration is malformed; see the SDK's logs";
    case 'WRONG_TYPE':
      return 'the flag serves another type';
    case 'CLIENT_NOT_READY':
      return 'the Vexil client has no flags yet';
    case 'INVALID_CONTEXT':
      return 'the evaluation context could not be read';
    default:
      return String(d.reason.errorKind);
  }
}

/**
 * The provider event a client state stands for: `ready` → READY, `stale` (stream lost, the
 * last-known flags served) → STALE, `failed` (the data source gave up, e.g. a refused SDK
 * key) → ERROR; `initializing` and `offline` (closed) → none.
 */
const EVENT_OF_STATE = {
  ready: ProviderEvents.Ready,
  stale: ProviderEvents.Stale,
  failed: ProviderEvents.Error,
};

class VexilProvider {
  metadata = { name: 'vexil' };
  runsOn = 'server';
  hooks = [];
  events = new OpenFeatureEventEmitter();
  #client;
  #owned;
  #unsubscribe;
  /**
   * The readiness OpenFeature last heard of (a `ProviderEvents` value): null until
   * `initialize` settles (the SDK reports that outcome itself), then only changes are emitted.
   */
  #reported = null;

  /**
   * `new VexilProvider(client)` over a `Client` the application made (and closes), or
   * `new VexilProvider(sdkKey, options)`, which starts one the provider closes on shutdown.
   */
  constructor(clientOrSdkKey, options) {
    if (clientOrSdkKey instanceof Client) {
      this.#client = clientOrSdkKey;
      this.#owned = false;
    } else {
      this.#client = new Client(clientOrSdkKey, options);
      this.#owned = true;
    }
    const offChanges = this.#client.onFlagChange((change) => {
      this.events.emit(ProviderEvents.ConfigurationChanged, {
        flagsChanged: change.keys,
        message: `version ${change.version}`,
      });
    });
    const offStatus = this.#client.onStatusChange((status) => this.#statusChanged(status));
    this.#unsubscribe = () => {
      offChanges();
      offStatus();
    };
  }

  /** The Vexil client evaluations go through. */
  get client() {
    return this.#client;
  }

  /** Emits the event for the client's new state, unless OpenFeature already has it. */
  #statusChanged(status) {
    const event = EVENT_OF_STATE[status.state];
    if (event === undefined || this.#reported === null || event === this.#reported) return;
    this.#reported = event;
    if (event === ProviderEvents.Error) {
      // The SDK will not retry: OpenFeature's fatal error.
      this.events.emit(event, {
        message: status.lastError ?? 'the data source gave up',
        errorCode: ErrorCode.PROVIDER_FATAL,
      });
    } else if (event === ProviderEvents.Stale) {
      this.events.emit(event, {
        message: `serving the last-known flags: ${status.lastError ?? 'upstream unreachable'}`,
      });
    } else {
      this.events.emit(event, { message: 'flags current' });
    }
  }

  /**
   * Waits for the client's flags. Resolves once it is ready, or serves the last-known-good
   * file; fails with a fatal error when the data source gave up (a refused SDK key), and with
   * a general error on timeout without any flags (`READY` is emitted when they arrive).
   * From then on the client's state changes become events: `STALE` when the stream is lost,
   * `READY` when it is back, `ERROR` (fatal) when the SDK key is refused later.
   */
  async initialize() {
    try {
      await this.#client.waitForInitialization();
      this.#reported = ProviderEvents.Ready;
    } catch (e) {
      if (e.code === 'TIMED_OUT' && this.#client.initialized) {
        // Serving the last-known-good file: usable, and READY once upstream answers.
        this.#reported = ProviderEvents.Stale;
        return;
      }
      this.#reported = ProviderEvents.Error;
      if (e.code === 'FAILED') throw new ProviderFatalError(e.message);
      throw new GeneralError(e.message);
    } finally {
      // A state reached while waiting, and not yet reported as such.
      this.#statusChanged(this.#client.status());
    }
  }

  async onClose() {
    this.#unsubscribe();
    if (this.#owned) this.#client.close();
  }

  resolveBooleanEvaluation(flagKey, defaultValue, context) {
    return Promise.resolve(
      resolution(this.#client.boolVariationDetail(flagKey, toVexilContext(context), defaultValue)),
    );
  }

  resolveStringEvaluation(flagKey, defaultValue, context) {
    return Promise.resolve(
      resolution(this.#client.stringVariationDetail(flagKey, toVexilContext(context), defaultValue)),
    );
  }

  resolveNumberEvaluation(flagKey, defaultValue, context) {
    return Promise.resolve(
      resolution(this.#client.numberVariationDetail(flagKey, toVexilContext(context), defaultValue)),
    );
  }

  resolveObjectEvaluation(flagKey, defaultValue, context) {
    return Promise.resolve(
      resolution(this.#client.jsonVariationDetail(flagKey, toVexilContext(context), defaultValue)),
    );
  }

  /** OpenFeature tracking → `Client.track`, with `trackingEventDetails.value` as the value. */
  track(trackingEventName, context, trackingEventDetails) {
    this.#client.track(trackingEventName, toVexilContext(context), trackingEventDetails?.value);
  }
}

module.exports = { VexilProvider, toVexilContext };
