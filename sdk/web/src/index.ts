/**
 * `@vexil/web`: Vexil feature flags in the browser, as an OpenFeature web provider.
 *
 * @packageDocumentation
 */
export { VexilWebProvider, type VexilWebProviderOptions, type EventSourceConstructor } from './provider.js';
export type { EventsOptions } from './events.js';
export type { FlagValue, Json } from './util.js';
export { backoffDelay, base64url, canonicalJson, changedKeys } from './util.js';
