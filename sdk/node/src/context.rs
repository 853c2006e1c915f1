//! Contexts from JavaScript: `{ key?, kind?, attributes? }`, the wire form every Vexil
//! component uses, handed over as the JSON text `JSON.stringify` made of it.
//!
//! One string crosses the boundary instead of one Node-API call per property and value (each
//! costs more than the whole evaluation); V8's `JSON.stringify` and serde then do the work at
//! native speed. The conversion is lenient, because evaluation never throws: a non-string `key`
//! or `kind` is used as its string form when it is a number and ignored otherwise; `attributes`
//! that are not an object carry nothing; text that does not parse is an anonymous context.
//! (`JSON.stringify` already leaves out functions, symbols and `undefined`, and writes dates as
//! ISO 8601 strings; the wrapper skips attributes it cannot serialise, such as cycles.)
//!
//! [`NativeContext`] is a context converted once, for code that evaluates many flags for
//! the same user: the `*_prepared` methods then skip the conversion entirely.

use napi_derive::napi;
use serde::Deserialize;
use serde_json::{Map, Value};
use vexil_sdk::Context;

/// Runs `f` with the context the JSON text `json` stands for.
#[inline]
pub(crate) fn with<R>(json: &str, f: impl FnOnce(&Context) -> R) -> R {
    f(&from_json(json))
}

/// The fields a context is read from; anything else in the object is ignored.
#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    key: Option<Value>,
    #[serde(default)]
    kind: Option<Value>,
    #[serde(default)]
    attributes: Option<Value>,
}

/// A string, or a number's string form; `None` for anything else.
fn text(v: Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// Builds a context from JSON text, leniently (see the module's documentation).
pub(crate) fn from_json(json: &str) -> Context {
    // The schema's own reader sorts and indexes the attributes once: the common case.
    if let Ok(ctx) = serde_json::from_str::<Context>(json) {
        return ctx;
    }
    let mut ctx = Context::anonymous();
    let Ok(wire) = serde_json::from_str::<Wire>(json) else {
        return ctx;
    };
    if let Some(key) = text(wire.key) {
        ctx.set_key(Some(key));
    }
    if let Some(kind) = text(wire.kind) {
        ctx.set_kind(Some(kind));
    }
    if let Some(Value::Object(attributes)) = wire.attributes {
        set_attributes(&mut ctx, attributes);
    }
    ctx
}

fn set_attributes(ctx: &mut Context, attributes: Map<String, Value>) {
    for (name, value) in attributes {
        ctx.set(name, value);
    }
}

/// A context converted once, for evaluating many flags for the same user or request. The
/// JavaScript `Context` class holds one, made from `JSON.stringify` of its argument. Immutable.
#[napi]
#[derive(Debug)]
pub struct NativeContext {
    /// The converted context.
    ctx: Context,
}

impl NativeContext {
    /// The converted context.
    pub(crate) fn get(&self) -> &Context {
        &self.ctx
    }
}

#[napi]
impl NativeContext {
    /// Converts the JSON text of `{ key?, kind?, attributes? }` (leniently, like every
    /// evaluation does).
    #[napi(constructor)]
    pub fn new(json: String) -> Self {
        Self {
            ctx: from_json(&json),
        }
    }

    /// The context key, if it has one.
    #[napi(getter)]
    pub fn key(&self) -> Option<String> {
        self.ctx.key().map(str::to_owned)
    }

    /// The context kind, if it has one.
    #[napi(getter)]
    pub fn kind(&self) -> Option<String> {
        self.ctx.kind().map(str::to_owned)
    }
}
