// Types of @vexil/node/openfeature: an OpenFeature provider for @openfeature/server-sdk.
import type {
  EvaluationContext,
  JsonValue,
  OpenFeatureEventEmitter,
  Provider,
  ResolutionDetails,
  TrackingEventDetails,
} from '@openfeature/server-sdk';
import type { Client, ClientOptions, ContextInput } from './index';

export declare class VexilProvider implements Provider {
  /** Over a client the application made (and closes). */
  constructor(client: Client);
  /** Starts a client the provider closes on shutdown. */
  constructor(sdkKey: string, options?: ClientOptions);
  readonly metadata: { readonly name: 'vexil' };
  readonly runsOn: 'server';
  readonly hooks: [];
  readonly events: OpenFeatureEventEmitter;
  /** The Vexil client evaluations go through. */
  readonly client: Client;
  initialize(context?: EvaluationContext): Promise<void>;
  onClose(): Promise<void>;
  resolveBooleanEvaluation(flagKey: string, defaultValue: boolean, context: EvaluationContext): Promise<ResolutionDetails<boolean>>;
  resolveStringEvaluation(flagKey: string, defaultValue: string, context: EvaluationContext): Promise<ResolutionDetails<string>>;
  resolveNumberEvaluation(flagKey: string, defaultValue: number, context: EvaluationContext): Promise<ResolutionDetails<number>>;
  resolveObjectEvaluation<T extends JsonValue>(flagKey: string, defaultValue: T, context: EvaluationContext): Promise<ResolutionDetails<T>>;
  track(trackingEventName: string, context: EvaluationContext, trackingEventDetails: TrackingEventDetails): void;
}

/** OpenFeature's evaluation context as a Vexil context. */
export declare function toVexilContext(context: EvaluationContext | undefined): ContextInput;
