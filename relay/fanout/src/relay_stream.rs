//! The relay stream, `GET /relay/v1/stream`: every environment a relay key is scoped to, on
//! one SSE connection, resumable with a [`RelayCursor`] as `Last-Event-ID`.
//!
//! The control plane mounts [`relay_router`] with its database-backed [`RelayAuth`]; an edge
//! relay mounts the same router for the relays chained below it. Everything is served from
//! the [`Hub`]: each environment of the stream is a hub subscription (so resume, ordering,
//! lag handling and drain are the SDK stream's), and each SDK frame is rewrapped as its relay
//! event by concatenating pre-encoded bytes; only the `id` (the connection's cursor) is
//! written per connection. SDK key hashes come from the hub's key registry
//! ([`Hub::set_environment_keys`]).
//!
//! # What a connection sends
//!
//! 1. `env-remove` for every environment of the client's cursor that is out of scope;
//! 2. `keys` for every environment in scope (an empty list if none are registered), all
//!    before any versioned event, so a receiver that has seen a versioned event knows the
//!    whole scope;
//! 3. per environment, as the SDK stream would: nothing if the cursor's version is current,
//!    a replay of the missing `env-patch`/`env-delete` events if the ring still holds them,
//!    else an `env-put`. An environment in scope that has no state in the hub yet gets its
//!    `env-put` as soon as it has one;
//! 4. then every change as it is published, a `keys` event whenever an environment's key set
//!    changes, `env-remove` when an environment is removed or leaves the scope, and a
//!    keep-alive comment every [`crate::HubConfig::keep_alive`].
//!
//! Every versioned event's `id` is the cursor after the event: the version of every
//! environment the receiver holds. The relay key is authenticated again on
//! [`Hub::notify_relay_scopes_changed`] and every
//! [`RelayStreamConfig::reauthenticate_every`]: a revoked key ends the stream, a changed scope
//! adds or removes environments. The stream ends when the hub drains (spread over the drain
//! window like SDK streams), or when it falls behind repeatedly (the relay reconnects with
//! its cursor and gets a replay or `env-put`s).

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use metrics::{counter, gauge};
use tokio::sync::watch;
use tokio_stream::StreamMap;
use vexil_schema::stream::{EnvironmentId, RelayCursor, SdkKeyHash, event, parse_version};

use crate::auth::AuthError;
use crate::frame::{self, Frame, KEEP_ALIVE};
use crate::http::{
    LAST_EVENT_ID, X_ACCEL_BUFFERING, auth_error, not_serving, sdk_key, unauthorized,
};
use crate::hub::{Catalog, Hub, NotServing};
use crate::metrics::{RELAY_STREAM_EVENTS_SENT, RELAY_STREAMS, SubscriberGauge};

/// Path of the relay stream.
pub const RELAY_STREAM_PATH: &str = "/relay/v1/stream";

/// Maps a relay key (from the `Authorization` header, `<key>` or `Bearer <key>`) to the
/// environments it may stream.
///
/// [`AuthError::Unauthorized`] answers 401, [`AuthError::Forbidden`] 403 and
/// [`AuthError::Unavailable`] 503. While a stream is open, `Unauthorized` or `Forbidden` on
/// re-authentication ends it; `Unavailable` keeps the last scope.
pub trait RelayAuth: Clone + Send + Sync + 'static {
    /// The environments `relay_key` may stream, or why not.
    fn authenticate(
        &self,
        relay_key: &str,
    ) -> impl Future<Output = Result<BTreeSet<EnvironmentId>, AuthError>> + Send;
}

/// Any cloneable synchronous function is a [`RelayAuth`].
impl<F> RelayAuth for F
where
    F: Fn(&str) -> Result<BTreeSet<EnvironmentId>, AuthError> + Clone + Send + Sync + 'static,
{
    fn authenticate(
        &self,
        relay_key: &str,
    ) -> impl Future<Output = Result<BTreeSet<EnvironmentId>, AuthError>> + Send {
        std::future::ready(self(relay_key))
    }
}

/// Tuning of the relay stream endpoint.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RelayStreamConfig {
    /// How often an open stream authenticates its relay key again, in case the key was
    /// revoked or its scope changed without [`Hub::notify_relay_scopes_changed`].
    pub reauthenticate_every: Duration,
}

impl Default for RelayStreamConfig {
    fn default() -> Self {
        Self {
            reauthenticate_every: Duration::from_secs(60),
        }
    }
}

impl RelayStreamConfig {
    /// Sets [`RelayStreamConfig::reauthenticate_every`] (at least 1 ms).
    pub fn reauthenticate_every(mut self, interval: Duration) -> Self {
        self.reauthenticate_every = interval.max(Duration::from_millis(1));
        self
    }
}

#[derive(Debug, Clone)]
struct RelayState<A> {
    hub: Hub,
    auth: A,
    config: RelayStreamConfig,
}

/// The relay stream route `GET /relay/v1/stream`, authenticated by `auth` and served from
/// `hub`, with the default [`RelayStreamConfig`]. Keep body timeouts off this route.
pub fn relay_router<A: RelayAuth>(hub: Hub, auth: A) -> Router {
    relay_router_with(hub, auth, RelayStreamConfig::default())
}

/// [`relay_router`] with an explicit configuration.
pub fn relay_router_with<A: RelayAuth>(hub: Hub, auth: A, config: RelayStreamConfig) -> Router {
    Router::new()
        .route(RELAY_STREAM_PATH, get(stream::<A>))
        .with_state(RelayState { hub, auth, config })
}

async fn stream<A: RelayAuth>(State(s): State<RelayState<A>>, headers: HeaderMap) -> Response {
    let retry_after = s.hub.config().retry_after;
    let Some(key) = sdk_key(&headers) else {
        return unauthorized();
    };
    if s.hub.is_draining() {
        return not_serving(NotServing::ShuttingDown, retry_after);
    }
    let scope = match s.auth.authenticate(key).await {
        Ok(scope) => scope,
        Err(e) => return auth_error(e, retry_after),
    };
    let cursor = match headers.get(LAST_EVENT_ID).map(|v| v.to_str()) {
        None => RelayCursor::new(),
        Some(Ok(id)) => id.parse().unwrap_or_else(|e| {
            tracing::debug!(error = %e, "malformed relay Last-Event-ID; sending full state");
            RelayCursor::new()
        }),
        Some(Err(_)) => RelayCursor::new(),
    };
    let key = key.to_owned();
    let mut conn = Connection::new(s.hub, s.auth, s.config, scope, cursor);
    let initial = match conn.open() {
        Ok(frames) => frames,
        Err(e) => return not_serving(e, retry_after),
    };
    tracing::info!(
        environments = conn.scope.len(),
        pending = conn.pending.len(),
        "relay stream opened"
    );
    let body = Body::from_stream(conn.run(key, initial).map(Ok::<_, Infallible>));
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (X_ACCEL_BUFFERING, HeaderValue::from_static("no")),
        ],
        body,
    )
        .into_response()
}

/// What one environment's subscription yields inside a relay stream.
enum Item {
    /// An SDK frame (or keep-alive) of the environment.
    Frame(Bytes),
    /// The subscription ended.
    End,
}

/// One relay stream's state.
struct Connection<A> {
    hub: Hub,
    auth: A,
    config: RelayStreamConfig,
    /// Environments the key may stream.
    scope: BTreeSet<EnvironmentId>,
    /// What the receiver holds: the `id` of the next versioned event.
    cursor: RelayCursor,
    /// One hub subscription per environment in scope that has a state.
    subs: StreamMap<EnvironmentId, BoxStream<'static, Item>>,
    /// Environments in scope with no state in the hub yet.
    pending: BTreeSet<EnvironmentId>,
    /// The key set last sent per environment (sorted), to send only changes.
    sent_keys: HashMap<EnvironmentId, Vec<SdkKeyHash>>,
    /// The client-side keys and origins last sent per environment.
    sent_client: HashMap<EnvironmentId, crate::client::ClientEnv>,
    /// Each environment id as a JSON string, to splice into events.
    env_json: HashMap<EnvironmentId, Bytes>,
    catalog: watch::Receiver<Catalog>,
    ticket: u32,
}

/// Why a relay stream stops.
#[derive(Debug)]
enum Stop {
    Draining,
    Revoked,
    Lagging,
    Encode,
}

impl<A: RelayAuth> Connection<A> {
    fn new(
        hub: Hub,
        auth: A,
        config: RelayStreamConfig,
        scope: BTreeSet<EnvironmentId>,
        client: RelayCursor,
    ) -> Self {
        // Watch before reading any state, so that no change after this point goes unseen.
        let mut catalog = hub.catalog();
        catalog.borrow_and_update();
        let ticket = hub.ticket();
        Self {
            hub,
            auth,
            config,
            scope,
            cursor: client,
            subs: StreamMap::new(),
            pending: BTreeSet::new(),
            sent_keys: HashMap::new(),
            sent_client: HashMap::new(),
            env_json: HashMap::new(),
            catalog,
            ticket,
        }
    }

    /// The frames that open the stream (steps 1 and 2 of the module docs) and the
    /// subscriptions that produce step 3.
    fn open(&mut self) -> Result<Vec<Bytes>, NotServing> {
        let mut out = Vec::new();
        let gone: Vec<_> = self
            .cursor
            .0
            .keys()
            .filter(|env| !self.scope.contains(*env))
            .cloned()
            .collect();
        for env in gone {
            self.cursor.remove(&env);
            out.push(self.remove_frame(&env).map_err(|_| NotServing::NotReady)?);
        }
        let scope: Vec<_> = self.scope.iter().cloned().collect();
        for env in &scope {
            out.push(self.keys_frame(env).map_err(|_| NotServing::NotReady)?);
        }
        for env in scope {
            self.subscribe(env)?;
        }
        Ok(out)
    }

    /// Subscribes to `env` from the receiver's version, or marks it pending.
    fn subscribe(&mut self, env: EnvironmentId) -> Result<(), NotServing> {
        match self.hub.subscribe_relay(&env, self.cursor.get(&env)) {
            Ok(sub) => {
                self.pending.remove(&env);
                let stream = sub
                    .map(Item::Frame)
                    .chain(futures::stream::once(async { Item::End }))
                    .boxed();
                self.subs.insert(env, stream);
                Ok(())
            }
            Err(NotServing::NotReady) => {
                self.pending.insert(env);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn run(self, key: String, initial: Vec<Bytes>) -> impl futures::Stream<Item = Bytes> {
        let mut conn = self;
        async_stream::stream! {
            let _gauge = SubscriberGauge::enter(&gauge!(RELAY_STREAMS));
            let sent = counter!(RELAY_STREAM_EVENTS_SENT);
            for f in initial {
                sent.increment(1);
                yield f;
            }
            let keep_alive = conn.hub.config().keep_alive;
            let mut keep_alive = tokio::time::interval_at(
                tokio::time::Instant::now() + keep_alive,
                keep_alive,
            );
            let every = conn.config.reauthenticate_every;
            let mut reauth = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            reauth.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut scopes_seen = conn.catalog.borrow().scopes;
            let stop = loop {
                let mut out = Vec::new();
                tokio::select! {
                    item = conn.subs.next(), if !conn.subs.is_empty() => {
                        let Some((env, item)) = item else { continue };
                        let result = match item {
                            Item::Frame(bytes) => conn.translate(&env, &bytes).map(|f| out.extend(f)),
                            Item::End => conn.ended(&env, &mut out),
                        };
                        if let Err(stop) = result {
                            break stop;
                        }
                    }
                    changed = conn.catalog.changed() => {
                        if changed.is_err() {
                            break Stop::Draining; // the hub is gone
                        }
                        let catalog = *conn.catalog.borrow_and_update();
                        if conn.hub.is_draining() {
                            if conn.hub.must_close(conn.ticket) {
                                break Stop::Draining;
                            }
                            continue;
                        }
                        if catalog.scopes != scopes_seen {
                            scopes_seen = catalog.scopes;
                            if let Err(stop) = conn.reauthenticate(&key, &mut out).await {
                                break stop;
                            }
                        }
                        if let Err(stop) = conn.refresh(&mut out) {
                            break stop;
                        }
                    }
                    _ = reauth.tick() => {
                        if let Err(stop) = conn.reauthenticate(&key, &mut out).await {
                            break stop;
                        }
                        if let Err(stop) = conn.refresh(&mut out) {
                            break stop;
                        }
                    }
                    _ = keep_alive.tick() => out.push(Bytes::from_static(KEEP_ALIVE)),
                }
                for f in out {
                    if f.first() != Some(&b':') {
                        sent.increment(1);
                    }
                    yield f;
                }
            };
            match stop {
                Stop::Draining => tracing::debug!("relay stream closed: draining"),
                Stop::Revoked => tracing::warn!("relay stream closed: the relay key is no longer valid"),
                Stop::Lagging => tracing::info!("relay stream closed: the relay keeps falling behind"),
                Stop::Encode => tracing::error!("relay stream closed: an event could not be encoded"),
            }
        }
    }

    /// Rewraps one SDK frame of `env` as its relay event (`None` for keep-alives, which the
    /// connection sends itself).
    fn translate(&mut self, env: &EnvironmentId, bytes: &Bytes) -> Result<Option<Bytes>, Stop> {
        let Some((name, id, data)) = frame::split(bytes) else {
            return Ok(None); // a keep-alive comment
        };
        let Some(version) = parse_version(id) else {
            tracing::error!(environment = %env, id, "SDK frame with a non-numeric id");
            return Err(Stop::Encode);
        };
        let relay_event = match name {
            event::PUT => event::ENV_PUT,
            event::PATCH => event::ENV_PATCH,
            event::DELETE => event::ENV_DELETE,
            other => {
                tracing::error!(environment = %env, event = other, "unexpected SDK event");
                return Err(Stop::Encode);
            }
        };
        self.cursor.set(env.clone(), version);
        let cursor = self.cursor.to_string();
        let env_json = self.env_json(env);
        let encoded = if relay_event == event::ENV_PUT {
            Frame::encode(
                relay_event,
                &cursor,
                &[
                    b"{\"environment\":",
                    &env_json,
                    b",\"snapshot\":",
                    &data,
                    b"}",
                ],
            )
        } else {
            // `{"version":…}` becomes `{"environment":"p/e","version":…}`.
            let Some(rest) = data.strip_prefix(b"{") else {
                return Err(Stop::Encode);
            };
            Frame::encode(
                relay_event,
                &cursor,
                &[b"{\"environment\":", &env_json, b",", rest],
            )
        };
        match encoded {
            Ok(f) => Ok(Some(f.bytes().clone())),
            Err(e) => {
                tracing::error!(environment = %env, error = %e, "relay event encoding failed");
                Err(Stop::Encode)
            }
        }
    }

    /// `env`'s subscription ended: the hub is draining, the environment was removed, or this
    /// connection fell behind.
    fn ended(&mut self, env: &EnvironmentId, out: &mut Vec<Bytes>) -> Result<(), Stop> {
        if self.hub.is_draining() {
            return Err(Stop::Draining);
        }
        if self.hub.version(env).is_some() {
            return Err(Stop::Lagging);
        }
        // Removed from the hub (deleted upstream). It may come back while in scope.
        self.cursor.remove(env);
        out.push(self.remove_frame(env)?);
        self.sent_keys.remove(env);
        self.sent_client.remove(env);
        if self.scope.contains(env) {
            self.pending.insert(env.clone());
        }
        Ok(())
    }

    /// Authenticates the key again and applies a changed scope.
    async fn reauthenticate(&mut self, key: &str, out: &mut Vec<Bytes>) -> Result<(), Stop> {
        let scope = match self.auth.authenticate(key).await {
            Ok(scope) => scope,
            Err(AuthError::Unavailable) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "relay key refused on re-authentication");
                return Err(Stop::Revoked);
            }
        };
        if scope == self.scope {
            return Ok(());
        }
        let removed: Vec<_> = self.scope.difference(&scope).cloned().collect();
        let added: Vec<_> = scope.difference(&self.scope).cloned().collect();
        tracing::info!(
            added = added.len(),
            removed = removed.len(),
            "relay scope changed"
        );
        self.scope = scope;
        for env in removed {
            self.subs.remove(&env);
            self.pending.remove(&env);
            self.sent_keys.remove(&env);
            self.sent_client.remove(&env);
            self.cursor.remove(&env);
            out.push(self.remove_frame(&env)?);
        }
        for env in &added {
            out.push(self.keys_frame(env)?);
        }
        for env in added {
            self.subscribe(env).map_err(|_| Stop::Draining)?;
        }
        Ok(())
    }

    /// Sends changed key sets and subscribes to pending environments that now have a state.
    fn refresh(&mut self, out: &mut Vec<Bytes>) -> Result<(), Stop> {
        let scope: Vec<_> = self.scope.iter().cloned().collect();
        for env in &scope {
            let mut keys = self.hub.keys().environment_keys(env);
            keys.sort_unstable();
            let client = self.hub.client_keys().environment(env);
            if self.sent_keys.get(env) != Some(&keys) || self.sent_client.get(env) != Some(&client)
            {
                out.push(self.keys_frame(env)?);
            }
        }
        let pending: Vec<_> = self.pending.iter().cloned().collect();
        for env in pending {
            self.subscribe(env).map_err(|_| Stop::Draining)?;
        }
        Ok(())
    }

    fn env_json(&mut self, env: &EnvironmentId) -> Bytes {
        self.env_json
            .entry(env.clone())
            .or_insert_with(|| {
                // An `EnvironmentId` is validated key characters and one `/`: no escaping.
                Bytes::from(format!("\"{env}\""))
            })
            .clone()
    }

    /// The `keys` event of `env` (no `id`), recording what was sent.
    fn keys_frame(&mut self, env: &EnvironmentId) -> Result<Bytes, Stop> {
        let mut keys = self.hub.keys().environment_keys(env);
        keys.sort_unstable();
        let client = self.hub.client_keys().environment(env);
        let payload = vexil_schema::stream::EnvKeys {
            environment: env.clone(),
            sdk_key_hashes: keys.clone(),
            client_key_hashes: client.key_hashes.clone(),
            allowed_origins: client.allowed_origins.clone(),
        };
        self.sent_client.insert(env.clone(), client);
        let json = serde_json::to_vec(&payload).map_err(|_| Stop::Encode)?;
        self.sent_keys.insert(env.clone(), keys);
        encode_without_id(event::KEYS, &json)
    }

    /// The `env-remove` event of `env`, with the current cursor as its id.
    fn remove_frame(&mut self, env: &EnvironmentId) -> Result<Bytes, Stop> {
        let env_json = self.env_json(env);
        Frame::encode(
            event::ENV_REMOVE,
            &self.cursor.to_string(),
            &[b"{\"environment\":", &env_json, b"}"],
        )
        .map(|f| f.bytes().clone())
        .map_err(|_| Stop::Encode)
    }
}

/// `event: NAME\ndata: JSON\n\n`: an event that leaves the receiver's last event id alone.
fn encode_without_id(name: &str, json: &[u8]) -> Result<Bytes, Stop> {
    if json.iter().any(|&b| b == b'\n' || b == b'\r') {
        return Err(Stop::Encode);
    }
    let mut buf = Vec::with_capacity(json.len() + name.len() + 16);
    buf.extend_from_slice(b"event: ");
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b"\ndata: ");
    buf.extend_from_slice(json);
    buf.extend_from_slice(b"\n\n");
    Ok(buf.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_events_carry_no_id() {
        let f = encode_without_id("keys", br#"{"a":1}"#).unwrap();
        assert_eq!(f.as_ref(), b"event: keys\ndata: {\"a\":1}\n\n");
        assert!(encode_without_id("keys", b"{\n}").is_err());
    }
}
