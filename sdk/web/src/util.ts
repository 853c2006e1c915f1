/** Small pure helpers shared by the provider (no I/O). */

/** A JSON value as it travels on the wire. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** JSON with object keys sorted, so that equal contexts give equal strings. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(value).sort()) {
      const v = (value as Record<string, unknown>)[k];
      if (v !== undefined) out[k] = sortKeys(v);
    }
    return out;
  }
  return value;
}

/** base64url (RFC 4648 §5) of the UTF-8 bytes of `text`, without padding. */
export function base64url(text: string): string {
  const bytes = new TextEncoder().encode(text);
  let binary = '';
  for (let i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i] as number);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/**
 * Reconnection delay for the `attempt`-th consecutive failure (0-based): exponential from
 * `initialMs`, capped at `maxMs`, with "equal jitter" (half fixed, half random) so that many
 * pages reconnecting after a relay restart do not arrive together.
 */
export function backoffDelay(attempt: number, initialMs: number, maxMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/** One flag's evaluated value as the stream and OFREP deliver it. */
export interface FlagValue {
  /** The value for this context. */
  value: Json;
  /** The variation served (its key, or its index as a string). */
  variant?: string;
  /** The OpenFeature reason (`TARGETING_MATCH`, `SPLIT`, `DEFAULT`, `DISABLED`, …). */
  reason?: string;
  /** Optional experiment data; exposures are sent only when the server provides it. */
  inExperiment?: boolean;
  /** The flag's version (for exposures). */
  flagVersion?: number;
  /** The index of the variation served (for exposures). */
  variationIndex?: number;
}

/** Keys whose value or variant differ between `before` and `after` (added and removed included). */
export function changedKeys(before: ReadonlyMap<string, FlagValue>, after: ReadonlyMap<string, FlagValue>): string[] {
  const out: string[] = [];
  for (const [key, next] of after) {
    const prev = before.get(key);
    if (!prev || prev.variant !== next.variant || canonicalJson(prev.value) !== canonicalJson(next.value)) out.push(key);
  }
  for (const key of before.keys()) if (!after.has(key)) out.push(key);
  return out.sort();
}

/** Reads a wire flag entry, or `undefined` when it is not an object with a `value`. */
export function parseFlagValue(raw: unknown): FlagValue | undefined {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw) || !('value' in raw)) return undefined;
  const r = raw as Record<string, unknown>;
  const meta = r['metadata'] !== null && typeof r['metadata'] === 'object' ? (r['metadata'] as Record<string, unknown>) : {};
  const out: FlagValue = { value: r['value'] as Json };
  if (typeof r['variant'] === 'string') out.variant = r['variant'];
  else if (typeof r['variant'] === 'number') out.variant = String(r['variant']);
  if (typeof r['reason'] === 'string') out.reason = r['reason'];
  const inExp = r['inExperiment'] ?? meta['inExperiment'];
  if (typeof inExp === 'boolean') out.inExperiment = inExp;
  const fv = r['flagVersion'] ?? meta['flagVersion'];
  if (typeof fv === 'number') out.flagVersion = fv;
  const vi = r['variationIndex'] ?? meta['variationIndex'];
  if (typeof vi === 'number') out.variationIndex = vi;
  return out;
}
