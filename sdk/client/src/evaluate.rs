//! The evaluation API of [`Client`]: typed variations, their `*_detail` twins and
//! `all_flags`.
//!
//! Every method reads the current compiled snapshot through one lock-free `ArcSwap` load and
//! evaluates it with `vexil-eval`; none blocks, performs I/O or panics. Only what the return
//! type needs is allocated: `bool_variation`, `number_variation` and `int_variation`
//! allocate nothing; `string_variation` allocates the returned `String`. When the client has
//! no flags yet, the caller's default is returned with `ERROR(CLIENT_NOT_READY)`.
//!
//! With events on, each evaluation (except through `all_flags`) is also counted for the
//! summary, and one in an experiment records an exposure (see [`crate::events`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use vexil_eval::{CompiledSnapshot, Evaluation};
use vexil_schema::{Context, ErrorKind};

use crate::client::Client;
use crate::detail::{AllFlags, EvaluationDetail};

impl Client {
    /// Evaluates `flag_key` with `f`, or returns `not_ready()` when there are no flags.
    #[inline]
    fn with_eval<R>(
        &self,
        flag_key: &str,
        ctx: &Context,
        f: impl FnOnce(&CompiledSnapshot, Evaluation<'_>) -> R,
        not_ready: impl FnOnce() -> R,
    ) -> R {
        let guard = self.store().load();
        match guard.as_ref() {
            Some(snapshot) => f(snapshot, self.evaluate_in(snapshot, flag_key, ctx)),
            None => not_ready(),
        }
    }

    /// Evaluates `flag_key` in `snapshot`, recording the evaluation for events when they
    /// are on (a summary count; an exposure when in an experiment).
    #[inline]
    fn evaluate_in<'a>(
        &self,
        snapshot: &'a Arc<CompiledSnapshot>,
        flag_key: &str,
        ctx: &Context,
    ) -> Evaluation<'a> {
        let (pos, e) = snapshot.evaluate_indexed(flag_key, ctx);
        if let Some(events) = self.events() {
            events.evaluated(snapshot, pos, &e, flag_key, ctx);
        }
        e
    }

    /// A boolean flag's value for `ctx`, or `default` if the flag is missing, not boolean,
    /// malformed, or the client has no flags yet. Allocation-free.
    #[inline]
    pub fn bool_variation(&self, flag_key: &str, ctx: &Context, default: bool) -> bool {
        self.with_eval(flag_key, ctx, |_, e| e.as_bool(default).value, || default)
    }

    /// Whether a boolean flag is on for `ctx`: [`Client::bool_variation`] with default
    /// `false`.
    #[inline]
    pub fn is_enabled(&self, flag_key: &str, ctx: &Context) -> bool {
        self.bool_variation(flag_key, ctx, false)
    }

    /// A string flag's value for `ctx`, or `default`.
    pub fn string_variation(&self, flag_key: &str, ctx: &Context, default: &str) -> String {
        self.with_eval(
            flag_key,
            ctx,
            |_, e| e.as_str(default).value.to_owned(),
            || default.to_owned(),
        )
    }

    /// A number flag's value for `ctx` (any JSON number), or `default`. Allocation-free.
    #[inline]
    pub fn number_variation(&self, flag_key: &str, ctx: &Context, default: f64) -> f64 {
        self.with_eval(flag_key, ctx, |_, e| e.as_f64(default).value, || default)
    }

    /// A number flag's value for `ctx` as an integer, or `default` (also when the value has
    /// a fractional part or does not fit an `i64`). Allocation-free.
    #[inline]
    pub fn int_variation(&self, flag_key: &str, ctx: &Context, default: i64) -> i64 {
        self.with_eval(flag_key, ctx, |_, e| e.as_i64(default).value, || default)
    }

    /// Any flag's value for `ctx` as JSON, or `default` on error. Clones the served value.
    pub fn json_variation(&self, flag_key: &str, ctx: &Context, default: Value) -> Value {
        let guard = self.store().load();
        match guard
            .as_ref()
            .and_then(|s| self.evaluate_in(s, flag_key, ctx).value)
        {
            Some(v) => v.clone(),
            None => default,
        }
    }

    /// [`Client::bool_variation`] with the variation and reason.
    pub fn bool_variation_detail(
        &self,
        flag_key: &str,
        ctx: &Context,
        default: bool,
    ) -> EvaluationDetail<bool> {
        self.with_eval(
            flag_key,
            ctx,
            |s, e| {
                EvaluationDetail::from_typed(
                    e.as_bool(default),
                    std::convert::identity,
                    s,
                    flag_key,
                )
            },
            || EvaluationDetail::error(default, ErrorKind::ClientNotReady),
        )
    }

    /// [`Client::string_variation`] with the variation and reason.
    pub fn string_variation_detail(
        &self,
        flag_key: &str,
        ctx: &Context,
        default: &str,
    ) -> EvaluationDetail<String> {
        self.with_eval(
            flag_key,
            ctx,
            |s, e| EvaluationDetail::from_typed(e.as_str(default), str::to_owned, s, flag_key),
            || EvaluationDetail::error(default.to_owned(), ErrorKind::ClientNotReady),
        )
    }

    /// [`Client::number_variation`] with the variation and reason.
    pub fn number_variation_detail(
        &self,
        flag_key: &str,
        ctx: &Context,
        default: f64,
    ) -> EvaluationDetail<f64> {
        self.with_eval(
            flag_key,
            ctx,
            |s, e| {
                EvaluationDetail::from_typed(e.as_f64(default), std::convert::identity, s, flag_key)
            },
            || EvaluationDetail::error(default, ErrorKind::ClientNotReady),
        )
    }

    /// [`Client::int_variation`] with the variation and reason.
    pub fn int_variation_detail(
        &self,
        flag_key: &str,
        ctx: &Context,
        default: i64,
    ) -> EvaluationDetail<i64> {
        self.with_eval(
            flag_key,
            ctx,
            |s, e| {
                EvaluationDetail::from_typed(e.as_i64(default), std::convert::identity, s, flag_key)
            },
            || EvaluationDetail::error(default, ErrorKind::ClientNotReady),
        )
    }

    /// [`Client::json_variation`] with the variation and reason.
    pub fn json_variation_detail(
        &self,
        flag_key: &str,
        ctx: &Context,
        default: Value,
    ) -> EvaluationDetail<Value> {
        let guard = self.store().load();
        let Some(s) = guard.as_ref() else {
            return EvaluationDetail::error(default, ErrorKind::ClientNotReady);
        };
        let e = self.evaluate_in(s, flag_key, ctx);
        match e.value {
            Some(v) => EvaluationDetail::from_parts(
                v.clone(),
                e.variation,
                e.reason,
                e.in_experiment,
                e.split,
                s,
                flag_key,
            ),
            None => {
                EvaluationDetail::from_parts(default, None, e.reason, false, false, s, flag_key)
            }
        }
    }

    /// Every flag evaluated for `ctx`, with values as JSON. A flag whose evaluation fails
    /// (e.g. malformed) is listed with a `null` value and its error reason. Empty and not
    /// [valid](AllFlags::is_valid) when the client has no flags yet.
    pub fn all_flags(&self, ctx: &Context) -> AllFlags {
        let Some(snapshot) = self.store().snapshot() else {
            return AllFlags::new(None, BTreeMap::new());
        };
        let flags = snapshot
            .flag_keys()
            .map(|key| {
                let e = snapshot.evaluate(key, ctx);
                let detail = EvaluationDetail::from_parts(
                    e.value.cloned().unwrap_or(Value::Null),
                    e.variation,
                    e.reason,
                    e.in_experiment,
                    e.split,
                    &snapshot,
                    key,
                );
                (key.to_owned(), detail)
            })
            .collect();
        AllFlags::new(Some(snapshot.version()), flags)
    }
}
