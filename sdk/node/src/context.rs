//! JavaScript values → [`vexil_sdk::Context`].
//!
//! A context is `{ key?, kind?, attributes? }`, the wire form every Vexil component uses. The
//! conversion is lenient, because evaluation never throws: a non-string `key` or `kind` is
//! used as its string form when it is a number and ignored otherwise; attributes that have
//! no JSON form (functions, symbols, `undefined`) are skipped. The wrapper passes `{}` for
//! anything that is not an object, which evaluates as an anonymous context.
//!
//! [`NativeContext`] is a context converted once, for code that evaluates many flags for
//! the same user: evaluations then skip the conversion entirely.

use napi::bindgen_prelude::{ClassInstance, Either, Object};
use napi_derive::napi;
use serde_json::Value;
use vexil_sdk::Context;

/// What the evaluation methods accept: a prepared context or a plain object.
pub(crate) type ContextArg<'a> = Either<ClassInstance<'a, NativeContext>, Object<'a>>;

/// Runs `f` with the context `arg` stands for.
#[inline]
pub(crate) fn with<R>(arg: ContextArg<'_>, f: impl FnOnce(&Context) -> R) -> R {
    match arg {
        Either::A(prepared) => f(&prepared.ctx),
        Either::B(object) => f(&from_object(&object)),
    }
}

/// Builds a context from a plain object, leniently (see the module's documentation).
pub(crate) fn from_object(object: &Object<'_>) -> Context {
    let mut ctx = Context::anonymous();
    if let Some(key) = string_field(object, "key") {
        ctx.set_key(Some(key));
    }
    if let Some(kind) = string_field(object, "kind") {
        ctx.set_kind(Some(kind));
    }
    set_attributes(&mut ctx, object);
    ctx
}

/// A string property, or a number's string form; `None` for anything else.
fn string_field(object: &Object<'_>, name: &str) -> Option<String> {
    match object.get::<Value>(name) {
        Ok(Some(Value::String(s))) => Some(s),
        Ok(Some(Value::Number(n))) => Some(n.to_string()),
        _ => None,
    }
}

/// Copies the object's `attributes` into `ctx`: in one conversion when every value has a
/// JSON form, one by one (skipping those without) otherwise. Anything but a plain object
/// (an array, a string…) carries no attributes.
fn set_attributes(ctx: &mut Context, object: &Object<'_>) {
    match object.get::<Value>("attributes") {
        Ok(Some(Value::Object(map))) => {
            for (name, value) in map {
                ctx.set(name, value);
            }
        }
        Ok(_) => {}
        Err(_) => {
            let Ok(Some(attributes)) = object.get::<Object<'_>>("attributes") else {
                return;
            };
            for name in Object::keys(&attributes).unwrap_or_default() {
                if let Ok(Some(value)) = attributes.get::<Value>(&name) {
                    ctx.set(name, value);
                }
            }
        }
    }
}

/// A context converted once, for evaluating many flags for the same user or request:
/// `new Context({ key, kind, attributes })`. Immutable.
#[napi(js_name = "Context")]
#[derive(Debug)]
pub struct NativeContext {
    /// The converted context.
    ctx: Context,
}

#[napi]
impl NativeContext {
    /// Converts `{ key?, kind?, attributes? }` (leniently, like every evaluation does).
    #[napi(constructor)]
    pub fn new(context: Option<Object<'_>>) -> Self {
        Self {
            ctx: context
                .as_ref()
                .map(from_object)
                .unwrap_or_else(Context::anonymous),
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
