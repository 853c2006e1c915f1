//! Authentication of analytics events (`POST /events/v1/bulk`) from browsers and apps, shared
//! by the server and relays: client-side keys in `Authorization` or `?key=`, origins checked.

use axum::http::HeaderMap;
use axum::http::header::ORIGIN;
use axum::response::Response;
use vexil_schema::stream::EnvironmentId;

use crate::client::{ClientKeyTable, origin_refused, query_param};
use crate::http::{authorization_key, unauthorized};

/// Who sends a batch to `POST /events/v1/bulk` (server and relay alike): see
/// [`events_caller`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventsCaller<'a> {
    /// A client-side key whose environment allows the request's origin.
    Client {
        /// The environment the key belongs to.
        env: EnvironmentId,
        /// The key (for the per-key rate limit).
        key: &'a str,
    },
    /// A server-side SDK key in `Authorization`, sent without `Origin` (not from a browser):
    /// for the caller's own SDK-key authentication.
    Sdk(&'a str),
}

/// Authenticates an analytics events request. A client-side key comes in `Authorization`,
/// or in the query as `?key=` (`navigator.sendBeacon` cannot set headers) and must be
/// allowed for the `Origin`; a server-side key is accepted in `Authorization` only and never
/// from a browser (a request with `Origin`): 403 without `Access-Control-Allow-Origin`.
/// No key at all is 401.
pub fn events_caller<'a>(
    table: &ClientKeyTable,
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Result<EventsCaller<'a>, Box<Response>> {
    let origin = headers.get(ORIGIN).and_then(|v| v.to_str().ok());
    let header_key = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(authorization_key);
    let query_key = query
        .and_then(|q| query_param(q, "key"))
        .filter(|k| !k.is_empty());
    let Some(key) = header_key.or(query_key) else {
        return Err(Box::new(unauthorized()));
    };
    if table.lookup(key).is_some() {
        let env = table.authenticate(key, origin)?;
        return Ok(EventsCaller::Client { env, key });
    }
    if origin.is_some() {
        return Err(Box::new(origin_refused()));
    }
    match header_key {
        Some(k) => Ok(EventsCaller::Sdk(k)),
        // A server-side key in a URL would end up in logs: refused.
        None => Err(Box::new(unauthorized())),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderValue, StatusCode};

    use super::*;
    use crate::auth::hash_sdk_key;
    use crate::client::ClientEnv;

    #[test]
    fn events_take_client_keys_from_header_or_query_and_sdk_keys_from_servers_only() {
        let t = ClientKeyTable::new();
        let env = EnvironmentId::parse("p/e").unwrap();
        t.set_environment(
            &env,
            ClientEnv {
                key_hashes: vec![hash_sdk_key("vxc_1")],
                allowed_origins: vec!["https://a.example".into()],
            },
        );
        let headers = |auth: Option<&str>, origin: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(a) = auth {
                h.insert(
                    axum::http::header::AUTHORIZATION,
                    HeaderValue::from_str(a).unwrap(),
                );
            }
            if let Some(o) = origin {
                h.insert(ORIGIN, HeaderValue::from_str(o).unwrap());
            }
            h
        };
        let client = EventsCaller::Client {
            env: env.clone(),
            key: "vxc_1",
        };
        let h = headers(Some("Bearer vxc_1"), Some("https://a.example"));
        assert_eq!(events_caller(&t, &h, None).unwrap(), client);
        let h = headers(None, Some("https://a.example"));
        assert_eq!(
            events_caller(&t, &h, Some("x=1&key=vxc_1")).unwrap(),
            client
        );
        let status = |r: Result<EventsCaller<'_>, Box<Response>>| r.unwrap_err().status();
        let h = headers(None, Some("https://b.example"));
        assert_eq!(
            status(events_caller(&t, &h, Some("key=vxc_1"))),
            StatusCode::FORBIDDEN
        );
        let h = headers(Some("vxs_server"), Some("https://a.example"));
        assert_eq!(status(events_caller(&t, &h, None)), StatusCode::FORBIDDEN);
        let h = headers(Some("vxs_server"), None);
        assert_eq!(
            events_caller(&t, &h, None).unwrap(),
            EventsCaller::Sdk("vxs_server")
        );
        let h = headers(None, None);
        assert_eq!(
            status(events_caller(&t, &h, Some("key=vxs_server"))),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(events_caller(&t, &h, None)),
            StatusCode::UNAUTHORIZED
        );
    }
}
