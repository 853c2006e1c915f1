//! `@vexil/node`'s native half: a Node-API addon over [`vexil_sdk::Client`], so that Node.js
//! evaluates flags with the very engine, streaming, backoff, last-known-good file and event
//! pipeline the Rust SDK has, rather than a second implementation that could drift.
//!
//! The JavaScript wrapper (`sdk/node/index.js`) is the public API; this crate exports two classes:
//! `NativeClient`, whose methods the wrapper calls with arguments it has already checked, and
//! `NativeContext` (`Context` in JavaScript), a context converted once for many evaluations;
//! every evaluation method has a `*_prepared` twin taking one.
//!
//! Layout: `options` turns the wrapper's options into a [`vexil_sdk::ClientBuilder`];
//! `context` builds [`vexil_sdk::Context`]s from JavaScript values; `detail` shapes results
//! (evaluation details, status, flag changes) as JavaScript objects; this file holds the class.
//!
//! Threads: the SDK's work runs on its own background thread and runtime; nothing here
//! schedules work on Node's event loop while idle. Waiting for initialisation runs on a
//! short-lived thread that settles a promise; flag-change callbacks reach JavaScript through
//! thread-safe functions created *weak*, so that they never keep the process alive.

mod context;
mod detail;
mod options;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use napi::bindgen_prelude::Object;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status};
use napi_derive::napi;
use serde_json::Value;
use vexil_sdk::{Client, ListenerId};

pub use context::NativeContext;
use detail::{
    BoolDetail, FlagChangeJs, InitOutcome, JsonDetail, NumberDetail, StatusJs, StringDetail,
};
pub use options::ClientOptions;

/// A flag-change callback: called with one argument, never keeps the process alive.
type ChangeCallback = ThreadsafeFunction<FlagChangeJs, (), FlagChangeJs, Status, false, true>;
/// A status callback: the same, with the new status.
type StatusCallback = ThreadsafeFunction<StatusJs, (), StatusJs, Status, false, true>;

/// The native client: one [`vexil_sdk::Client`] (its background thread, store and data
/// source). The wrapper holds one per `Client`; closing it, or garbage collection of the
/// wrapper, stops the background work.
#[napi]
#[derive(Debug)]
pub struct NativeClient {
    /// The SDK client; clones share everything.
    client: Client,
    /// The SDK's listener ids by the numbers handed to JavaScript (the SDK's ids are opaque).
    listeners: Mutex<HashMap<u32, ListenerId>>,
    /// The next number handed out for a listener.
    next_listener: AtomicU32,
}

impl NativeClient {
    /// Hands out the number JavaScript knows listener `sdk_id` by.
    fn remember(&self, sdk_id: ListenerId) -> u32 {
        let id = self.next_listener.fetch_add(1, Ordering::Relaxed);
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, sdk_id);
        id
    }
}

#[napi]
impl NativeClient {
    /// Builds and starts a client. Throws (with the SDK's message) on an invalid SDK key or
    /// base URL, or when the background thread cannot start: configuration errors, never
    /// evaluation ones.
    #[napi(constructor)]
    pub fn new(sdk_key: String, options: Option<ClientOptions>) -> napi::Result<Self> {
        let builder = options::builder(sdk_key, options.unwrap_or_default());
        let client = builder
            .build()
            .map_err(|e| napi::Error::new(Status::InvalidArg, e.to_string()))?;
        Ok(Self {
            client,
            listeners: Mutex::default(),
            next_listener: AtomicU32::new(1),
        })
    }

    /// Waits up to `timeout_ms` for the client to be ready, on a short-lived thread; the
    /// promise always resolves, with `{ ok: true }` or the reason it is not ready (the wrapper
    /// decides what to reject).
    #[napi(ts_return_type = "Promise<InitOutcome>")]
    pub fn wait_for_initialization<'env>(
        &self,
        env: &'env Env,
        timeout_ms: u32,
    ) -> napi::Result<Object<'env>> {
        let (deferred, promise) = env.create_deferred()?;
        let client = self.client.clone();
        let timeout = Duration::from_millis(u64::from(timeout_ms));
        std::thread::Builder::new()
            .name("vexil-node-init".into())
            .spawn(move || {
                let outcome = match client.wait_for_initialization_blocking(timeout) {
                    Ok(()) => InitOutcome::ready(),
                    Err(e) => InitOutcome::from_error(&e),
                };
                deferred.resolve(move |_| Ok(outcome));
            })
            .map_err(|e| napi::Error::from_reason(format!("could not start a thread: {e}")))?;
        Ok(promise)
    }

    /// [`Client::bool_variation`].
    #[napi]
    pub fn bool_variation(&self, flag: String, ctx: String, default: bool) -> bool {
        context::with(&ctx, |c| self.client.bool_variation(&flag, c, default))
    }

    /// [`Client::string_variation`].
    #[napi]
    pub fn string_variation(&self, flag: String, ctx: String, default: String) -> String {
        context::with(&ctx, |c| self.client.string_variation(&flag, c, &default))
    }

    /// [`Client::number_variation`].
    #[napi]
    pub fn number_variation(&self, flag: String, ctx: String, default: f64) -> f64 {
        context::with(&ctx, |c| self.client.number_variation(&flag, c, default))
    }

    /// [`Client::json_variation_detail`] without the default: the wrapper substitutes its own
    /// default (returned as is, not copied) when `reason.kind` is `ERROR`.
    #[napi]
    pub fn json_detail(&self, flag: String, ctx: String) -> JsonDetail {
        context::with(&ctx, |c| {
            JsonDetail::from(self.client.json_variation_detail(&flag, c, Value::Null))
        })
    }

    /// [`Client::bool_variation_detail`].
    #[napi]
    pub fn bool_detail(&self, flag: String, ctx: String, default: bool) -> BoolDetail {
        context::with(&ctx, |c| {
            BoolDetail::from(self.client.bool_variation_detail(&flag, c, default))
        })
    }

    /// [`Client::string_variation_detail`].
    #[napi]
    pub fn string_detail(&self, flag: String, ctx: String, default: String) -> StringDetail {
        context::with(&ctx, |c| {
            StringDetail::from(self.client.string_variation_detail(&flag, c, &default))
        })
    }

    /// [`Client::number_variation_detail`].
    #[napi]
    pub fn number_detail(&self, flag: String, ctx: String, default: f64) -> NumberDetail {
        context::with(&ctx, |c| {
            NumberDetail::from(self.client.number_variation_detail(&flag, c, default))
        })
    }

    /// [`Client::all_flags`], as `{ valid, version, flags: { key: detail } }`.
    #[napi(ts_return_type = "AllFlagsJs")]
    pub fn all_flags(&self, ctx: String) -> Value {
        context::with(&ctx, |c| {
            serde_json::to_value(self.client.all_flags(c)).unwrap_or(Value::Null)
        })
    }

    /// [`Client::track`], or [`Client::track_value`] when `value` is given.
    #[napi]
    pub fn track(&self, event_key: String, ctx: String, value: Option<f64>) {
        context::with(&ctx, |c| match value {
            Some(v) => self.client.track_value(&event_key, c, v),
            None => self.client.track(&event_key, c),
        });
    }

    /// `bool_variation` with a prepared context.
    #[napi]
    pub fn bool_variation_prepared(
        &self,
        flag: String,
        ctx: &NativeContext,
        default: bool,
    ) -> bool {
        self.client.bool_variation(&flag, ctx.get(), default)
    }

    /// `string_variation` with a prepared context.
    #[napi]
    pub fn string_variation_prepared(
        &self,
        flag: String,
        ctx: &NativeContext,
        default: String,
    ) -> String {
        self.client.string_variation(&flag, ctx.get(), &default)
    }

    /// `number_variation` with a prepared context.
    #[napi]
    pub fn number_variation_prepared(
        &self,
        flag: String,
        ctx: &NativeContext,
        default: f64,
    ) -> f64 {
        self.client.number_variation(&flag, ctx.get(), default)
    }

    /// `json_detail` with a prepared context.
    #[napi]
    pub fn json_detail_prepared(&self, flag: String, ctx: &NativeContext) -> JsonDetail {
        JsonDetail::from(
            self.client
                .json_variation_detail(&flag, ctx.get(), Value::Null),
        )
    }

    /// `bool_detail` with a prepared context.
    #[napi]
    pub fn bool_detail_prepared(
        &self,
        flag: String,
        ctx: &NativeContext,
        default: bool,
    ) -> BoolDetail {
        BoolDetail::from(self.client.bool_variation_detail(&flag, ctx.get(), default))
    }

    /// `string_detail` with a prepared context.
    #[napi]
    pub fn string_detail_prepared(
        &self,
        flag: String,
        ctx: &NativeContext,
        default: String,
    ) -> StringDetail {
        StringDetail::from(
            self.client
                .string_variation_detail(&flag, ctx.get(), &default),
        )
    }

    /// `number_detail` with a prepared context.
    #[napi]
    pub fn number_detail_prepared(
        &self,
        flag: String,
        ctx: &NativeContext,
        default: f64,
    ) -> NumberDetail {
        NumberDetail::from(
            self.client
                .number_variation_detail(&flag, ctx.get(), default),
        )
    }

    /// `all_flags` with a prepared context.
    #[napi(ts_return_type = "AllFlagsJs")]
    pub fn all_flags_prepared(&self, ctx: &NativeContext) -> Value {
        serde_json::to_value(self.client.all_flags(ctx.get())).unwrap_or(Value::Null)
    }

    /// `track` with a prepared context.
    #[napi]
    pub fn track_prepared(&self, event_key: String, ctx: &NativeContext, value: Option<f64>) {
        match value {
            Some(v) => self.client.track_value(&event_key, ctx.get(), v),
            None => self.client.track(&event_key, ctx.get()),
        }
    }

    /// [`Client::flush`].
    #[napi]
    pub fn flush(&self) {
        self.client.flush();
    }

    /// [`Client::status`].
    #[napi]
    pub fn status(&self) -> StatusJs {
        StatusJs::from(self.client.status())
    }

    /// Whether flags are being served (from upstream or the last-known-good file).
    #[napi(getter)]
    pub fn initialized(&self) -> bool {
        self.client.is_initialized()
    }

    /// Calls `callback` with `{ version, keys, origin }` after every update that changed some
    /// flag's result. The callback runs on Node's main thread; it does not keep the process
    /// alive. Returns an id for [`NativeClient::remove_listener`].
    #[napi(ts_args_type = "callback: (change: FlagChangeJs) => void")]
    pub fn on_flag_change(&self, callback: ChangeCallback) -> u32 {
        let sdk_id = self.client.on_flag_change(move |change| {
            // Queued for the main thread; fails only once the environment is shutting down.
            let _ = callback.call(
                FlagChangeJs::from(change),
                ThreadsafeFunctionCallMode::NonBlocking,
            );
        });
        self.remember(sdk_id)
    }

    /// Calls `callback` with the new status (`{ state, origin, lastError, … }`) each time the
    /// client's state changes (`ready` → `stale` when the stream is lost, back to `ready`,
    /// `failed` when the SDK key is refused…), on Node's main thread; it does not keep the
    /// process alive. Returns an id for [`NativeClient::remove_listener`].
    #[napi(ts_args_type = "callback: (status: StatusJs) => void")]
    pub fn on_status_change(&self, callback: StatusCallback) -> u32 {
        let sdk_id = self.client.on_status_change(move |status| {
            // Queued for the main thread; fails only once the environment is shutting down.
            let _ = callback.call(
                StatusJs::from(status.clone()),
                ThreadsafeFunctionCallMode::NonBlocking,
            );
        });
        self.remember(sdk_id)
    }

    /// Removes a flag-change or status listener; `false` if it was not registered.
    #[napi]
    pub fn remove_listener(&self, id: u32) -> bool {
        let sdk_id = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        // The SDK's ids are unique across both kinds: at most one of these finds it.
        sdk_id.is_some_and(|sdk_id| {
            self.client.remove_flag_change_listener(sdk_id)
                || self.client.remove_status_listener(sdk_id)
        })
    }

    /// [`Client::close`]: stops the data source, writes a pending last-known-good snapshot and
    /// sends pending events (waiting up to the close timeout). Evaluations keep working on the
    /// flags held.
    #[napi]
    pub fn close(&self) {
        self.client.close();
    }
}
