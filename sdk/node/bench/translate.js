'use strict';
// Vexil's flag model → LaunchDarkly's and Unleash's, for the benchmark flags: a JavaScript
// port of loadtest/peers (src/launchdarkly.rs, src/unleash.rs), whose module documentation
// explains each mapping. Only what the benchmark fixtures use; anything else throws.
//
// One difference is left as it is: each vendor buckets with its own hash (LaunchDarkly SHA-1,
// Unleash murmur3, Vexil xxh3), so a rollout may put the context in another slice. The cost
// of an evaluation does not depend on the slice; the Rust peers align seeds for their
// agreement tests, which latency does not need.

const LD_OPS = {
  in: 'in', starts_with: 'startsWith', ends_with: 'endsWith', contains: 'contains',
  matches: 'matches', lt: 'lessThan', lte: 'lessThanOrEqual', gt: 'greaterThan',
  gte: 'greaterThanOrEqual', before: 'before', after: 'after', semver_eq: 'semVerEqual',
  semver_lt: 'semVerLessThan', semver_gt: 'semVerGreaterThan', segment_match: 'segmentMatch',
};

function ldOp(op) {
  if (!(op in LD_OPS)) throw new Error(`LaunchDarkly: unsupported operator ${op}`);
  return LD_OPS[op];
}

function ldServe(serve) {
  if ('variation' in serve) return { variation: serve.variation };
  const r = serve.rollout;
  const rollout = { variations: r.variations.map((w) => ({ variation: w.variation, weight: w.weight })) };
  if (r.experiment) rollout.kind = 'experiment';
  if (r.bucket_by) rollout.bucketBy = r.bucket_by;
  return { rollout };
}

function ldClauses(clauses) {
  return clauses.map((c) => ({
    contextKind: 'user',
    // A segment_match clause ignores its attribute; LaunchDarkly still parses it.
    attribute: c.op === 'segment_match' ? 'key' : c.attribute,
    op: ldOp(c.op),
    values: c.values,
    negate: Boolean(c.negate),
  }));
}

/** A Vexil flag as LaunchDarkly flag JSON. */
function ldFlag(flag) {
  return {
    key: flag.key,
    version: flag.version ?? 1,
    on: flag.on,
    offVariation: flag.off_variation,
    variations: flag.variations.map((v) => v.value),
    targets: (flag.targets ?? []).map((t) => ({ values: t.values, variation: t.variation })),
    contextTargets: [],
    prerequisites: (flag.prerequisites ?? []).map((p) => ({ key: p.key, variation: p.variation })),
    rules: (flag.rules ?? []).map((r) => ({ id: r.id, clauses: ldClauses(r.clauses), trackEvents: false, ...ldServe(r.serve) })),
    fallthrough: ldServe(flag.fallthrough),
    salt: flag.salt || flag.key,
    trackEvents: false,
    trackEventsFallthrough: false,
    clientSide: false,
  };
}

/** A Vexil segment as LaunchDarkly segment JSON. */
function ldSegment(segment) {
  return {
    key: segment.key,
    version: segment.version ?? 1,
    included: segment.included ?? [],
    excluded: segment.excluded ?? [],
    includedContexts: [],
    excludedContexts: [],
    rules: (segment.rules ?? []).map((r) => {
      if (r.weight !== undefined) throw new Error('LaunchDarkly: weighted segment rules are not ported');
      return { id: r.id, clauses: ldClauses(r.clauses) };
    }),
    salt: segment.salt || segment.key,
    unbounded: false,
  };
}

/** A Vexil context as a LaunchDarkly context (kind `user` by default). */
function ldContext(ctx) {
  return { kind: ctx.kind ?? 'user', key: ctx.key, ...(ctx.attributes ?? {}) };
}

// --- Unleash -------------------------------------------------------------------------

const RESERVED = new Set(['userId', 'sessionId', 'environment', 'appName', 'currentTime', 'remoteAddress', 'properties']);

function field(attribute) {
  if (attribute === 'key') return 'userId';
  if (RESERVED.has(attribute)) throw new Error(`Unleash: attribute ${attribute} is reserved`);
  return attribute;
}

function semverParts(v) {
  const m = /^(\d+)\.(\d+)\.(\d+)$/.exec(v);
  if (!m) throw new Error(`Unleash: version ${v} is not ported`);
  return m.slice(1).map(Number);
}

function semverCmp(a, b) {
  const x = semverParts(a);
  const y = semverParts(b);
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i] - y[i];
  return 0;
}

/** One clause as an Unleash constraint; "any operand" reduces to one for ordered operators. */
function constraint(c) {
  const base = { contextName: field(c.attribute), inverted: Boolean(c.negate), caseInsensitive: false };
  const strings = () => c.values.map(String);
  const pick = (max) => c.values.reduce((b, v) => (b === undefined || (max ? v > b : v < b) ? v : b), undefined);
  const version = (max) => c.values.reduce((b, v) => (b === undefined || (max ? semverCmp(v, b) > 0 : semverCmp(v, b) < 0) ? v : b), undefined);
  switch (c.op) {
    case 'in': return { ...base, operator: 'IN', values: strings() };
    case 'starts_with': return { ...base, operator: 'STR_STARTS_WITH', values: strings() };
    case 'ends_with': return { ...base, operator: 'STR_ENDS_WITH', values: strings() };
    case 'contains': return { ...base, operator: 'STR_CONTAINS', values: strings() };
    // x < any(v) ⇔ x < max(v); x > any(v) ⇔ x > min(v).
    case 'lt': return { ...base, operator: 'NUM_LT', value: String(pick(true)) };
    case 'lte': return { ...base, operator: 'NUM_LTE', value: String(pick(true)) };
    case 'gt': return { ...base, operator: 'NUM_GT', value: String(pick(false)) };
    case 'gte': return { ...base, operator: 'NUM_GTE', value: String(pick(false)) };
    case 'semver_lt': return { ...base, operator: 'SEMVER_LT', value: version(true) };
    case 'semver_gt': return { ...base, operator: 'SEMVER_GT', value: version(false) };
    default: throw new Error(`Unleash: unsupported operator ${c.op}`);
  }
}

function variants(serve) {
  if ('variation' in serve) {
    return { variants: [{ name: String(serve.variation), weight: 1000, stickiness: 'default' }], stickiness: 'default' };
  }
  const r = serve.rollout;
  const stickiness = r.bucket_by ? field(r.bucket_by) : 'userId';
  return {
    stickiness,
    variants: r.variations.map((w) => {
      if (w.weight % 100 !== 0) throw new Error('Unleash: weights have 0.1 % steps');
      return { name: String(w.variation), weight: w.weight / 100, stickiness };
    }),
  };
}

/**
 * A Vexil snapshot as Unleash features and segments; `shapes` says how to read each flag
 * back (`boolean`: `isEnabled`; `variants`: `getVariant`, variant names are variation indexes).
 */
function unleashSnapshot(snapshot) {
  const segments = [];
  const disjuncts = new Map();
  const segmentIds = (key) => {
    if (disjuncts.has(key)) return disjuncts.get(key);
    const s = snapshot.segments.find((x) => x.key === key);
    if (!s) return [];
    const alternatives = [];
    if (s.included?.length) {
      alternatives.push([{ contextName: 'userId', operator: 'IN', values: s.included, inverted: false, caseInsensitive: false }]);
    }
    for (const rule of s.rules ?? []) {
      const cs = [];
      if (s.excluded?.length) {
        cs.push({ contextName: 'userId', operator: 'NOT_IN', values: s.excluded, inverted: false, caseInsensitive: false });
      }
      for (const c of rule.clauses) cs.push(constraint(c));
      alternatives.push(cs);
    }
    const ids = alternatives.map((constraints) => {
      segments.push({ id: segments.length + 1, constraints });
      return segments.length;
    });
    disjuncts.set(key, ids);
    return ids;
  };
  const features = [];
  const shapes = {};
  for (const flag of snapshot.flags) {
    const simple =
      flag.kind === 'boolean' && !flag.targets?.length && !flag.rules?.length &&
      'variation' in flag.fallthrough && flag.variations[flag.fallthrough.variation]?.value === true &&
      flag.variations[flag.off_variation]?.value === false;
    if (simple) {
      features.push({
        name: flag.key, type: 'release', enabled: flag.on, project: 'default', impressionData: false,
        strategies: [{ name: 'default', parameters: {}, constraints: [] }],
      });
      shapes[flag.key] = 'boolean';
      continue;
    }
    const groupId = flag.salt || flag.key;
    const strategies = [];
    const push = (constraints, segs, serve) => {
      const v = variants(serve);
      strategies.push({
        name: 'flexibleRollout', sortOrder: strategies.length,
        parameters: { rollout: '100', stickiness: v.stickiness, groupId },
        constraints, segments: segs, variants: v.variants,
      });
    };
    for (const t of flag.targets ?? []) {
      push([{ contextName: 'userId', operator: 'IN', values: t.values, inverted: false, caseInsensitive: false }], [], { variation: t.variation });
    }
    for (const rule of flag.rules ?? []) {
      const constraints = [];
      let combos = [[]];
      for (const c of rule.clauses) {
        if (c.op !== 'segment_match') {
          constraints.push(constraint(c));
          continue;
        }
        const choices = c.values.flatMap((k) => segmentIds(k));
        combos = combos.flatMap((combo) => choices.map((id) => [...combo, id]));
      }
      for (const combo of combos) push(constraints, combo, rule.serve);
    }
    push([], [], flag.fallthrough);
    features.push({
      name: flag.key, type: flag.fallthrough.rollout?.experiment ? 'experiment' : 'release',
      enabled: flag.on, project: 'default', impressionData: false, strategies, variants: [],
    });
    shapes[flag.key] = 'variants';
  }
  return { features, segments, shapes };
}

/** A Vexil context as an Unleash context: the key is `userId`, attributes are properties. */
function unleashContext(ctx) {
  const properties = {};
  for (const [k, v] of Object.entries(ctx.attributes ?? {})) properties[field(k)] = String(v);
  return { userId: ctx.key, properties };
}

module.exports = { ldFlag, ldSegment, ldContext, unleashSnapshot, unleashContext };
