//! HTTP plumbing shared by the streaming and polling sources: endpoints, headers, status
//! classification, and the adapter that lets `eventsource-client` run on `reqwest`.
//!
//! eventsource-client 0.18 brings no HTTP client of its own, only a transport trait
//! (`launchdarkly_sdk_transport::HttpTransport`). Implementing it over `reqwest` gives both
//! sources one connection pool, one TLS stack (rustls) and one set of timeouts, instead of a
//! second hyper stack for the stream alone.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use launchdarkly_sdk_transport::{
    ByteStream, HttpTransport, Request, Response, ResponseFuture, TransportError,
};
use reqwest::Url;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::status::DataSourceError;

/// Path of the SSE stream, relative to the base URL.
pub(crate) const STREAM_PATH: &str = "sdk/v1/stream";
/// Path of the snapshot endpoint, relative to the base URL.
pub(crate) const SNAPSHOT_PATH: &str = "sdk/v1/snapshot";

/// The `User-Agent` every request carries.
pub(crate) const USER_AGENT: &str = concat!("vexil-rust-sdk/", env!("CARGO_PKG_VERSION"));

/// What the network sources need to reach upstream.
#[derive(Clone)]
pub(crate) struct Upstream {
    pub(crate) http: reqwest::Client,
    /// The base URL, ending with `/`.
    pub(crate) base_url: Url,
    /// The `Authorization` header value.
    pub(crate) authorization: Arc<str>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the SDK key.
        f.debug_struct("Upstream")
            .field("base_url", &self.base_url.as_str())
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// `path` resolved against the base URL.
    pub(crate) fn endpoint(&self, path: &str) -> Url {
        // Joining a relative path of fixed ASCII segments onto a valid base cannot fail; the
        // fallback keeps that an invariant rather than a panic.
        self.base_url
            .join(path)
            .unwrap_or_else(|_| self.base_url.clone())
    }
}

/// Parses and normalises a base URL: `http` or `https`, no query or fragment, path ending
/// with `/` so that endpoint paths append to it.
pub(crate) fn parse_base_url(s: &str) -> Result<Url, String> {
    let mut url = Url::parse(s.trim()).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme must be http or https, not {:?}",
            url.scheme()
        ));
    }
    if url.cannot_be_a_base() || url.host_str().is_none() {
        return Err("must be an absolute URL with a host".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// The error for an HTTP status that is not a success. 401 and 403 are fatal; 400, 408,
/// 429 and 5xx are retried; any other status means the client is misconfigured (e.g. a
/// wrong base URL) and is fatal.
pub(crate) fn status_error(status: u16, url: &Url, detail: Option<String>) -> DataSourceError {
    match status {
        401 => DataSourceError::Unauthorized,
        403 => DataSourceError::Forbidden {
            detail: detail
                .unwrap_or_else(|| "no reason given".to_owned())
                .into(),
        },
        _ => DataSourceError::HttpStatus {
            status,
            url: url.as_str().into(),
            retryable: matches!(status, 400 | 408 | 429 | 500..=599),
        },
    }
}

/// `Retry-After` in seconds (the HTTP-date form is ignored), capped at an hour.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(3600)))
}

/// The `detail` of an RFC 9457 problem body, if the body is one.
pub(crate) fn problem_detail(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(v.get("detail")?.as_str()?.to_owned())
}

/// Reads at most `limit` bytes of an error body, giving up after `timeout`.
pub(crate) async fn read_error_body(
    mut body: ByteStream,
    limit: usize,
    timeout: Duration,
) -> Vec<u8> {
    let mut out = Vec::new();
    let read = async {
        while let Some(Ok(chunk)) = body.next().await {
            let room = limit.saturating_sub(out.len());
            out.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if out.len() >= limit {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(timeout, read).await;
    out
}

/// `eventsource-client`'s transport, implemented with `reqwest`.
#[derive(Clone)]
pub(crate) struct ReqwestTransport {
    pub(crate) http: reqwest::Client,
}

impl HttpTransport for ReqwestTransport {
    fn request(&self, request: Request<Option<Bytes>>) -> ResponseFuture {
        let http = self.http.clone();
        let send = async move {
            let (parts, body) = request.into_parts();
            let mut builder = http
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers);
            if let Some(body) = body {
                builder = builder.body(body);
            }
            let response = builder.send().await.map_err(TransportError::new)?;
            let status = response.status();
            let headers = response.headers().clone();
            let body: ByteStream = Box::pin(SyncStream::new(
                response.bytes_stream().map_err(TransportError::new),
            ));
            let mut out = Response::new(body);
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            Ok(out)
        };
        Box::pin(SyncFuture::new(send))
    }
}

// The transport's futures and streams must be `Sync`; reqwest's are only `Send`. They are
// only ever polled through `&mut`, so a `Mutex` reached with `get_mut` (no locking at all)
// makes them `Sync` without `unsafe`.

struct SyncFuture<F>(Mutex<Pin<Box<F>>>);

impl<F> SyncFuture<F> {
    fn new(f: F) -> Self {
        Self(Mutex::new(Box::pin(f)))
    }
}

impl<F: std::future::Future> std::future::Future for SyncFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let inner = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        inner.as_mut().poll(cx)
    }
}

struct SyncStream<S>(Mutex<Pin<Box<S>>>);

impl<S> SyncStream<S> {
    fn new(s: S) -> Self {
        Self(Mutex::new(Box::pin(s)))
    }
}

impl<S: Stream> Stream for SyncStream<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let inner = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        inner.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalised_and_checked() {
        assert_eq!(
            parse_base_url("http://localhost:8080").unwrap().as_str(),
            "http://localhost:8080/"
        );
        let prefixed = parse_base_url("https://flags.example.com/vexil").unwrap();
        assert_eq!(prefixed.as_str(), "https://flags.example.com/vexil/");
        assert_eq!(
            prefixed.join(STREAM_PATH).unwrap().as_str(),
            "https://flags.example.com/vexil/sdk/v1/stream"
        );
        for bad in [
            "",
            "localhost:8080",
            "ftp://x/",
            "http://x/?a=1",
            "http://x/#f",
            "mailto:a@b",
        ] {
            assert!(parse_base_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn statuses_are_classified() {
        let url = Url::parse("http://x/").unwrap();
        assert_eq!(status_error(401, &url, None), DataSourceError::Unauthorized);
        assert!(matches!(
            status_error(403, &url, Some("key disabled".into())),
            DataSourceError::Forbidden { detail } if &*detail == "key disabled"
        ));
        for (status, fatal) in [
            (400, false),
            (404, true),
            (408, false),
            (410, true),
            (429, false),
            (500, false),
            (503, false),
        ] {
            assert_eq!(
                status_error(status, &url, None).is_fatal(),
                fatal,
                "{status}"
            );
        }
    }

    #[test]
    fn retry_after_reads_seconds_only() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, "5".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(5)));
        h.insert(RETRY_AFTER, "999999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3600)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn problem_details_are_extracted() {
        assert_eq!(
            problem_detail(br#"{"type":"about:blank","status":403,"detail":"disabled"}"#),
            Some("disabled".into())
        );
        assert_eq!(problem_detail(b"<html>"), None);
    }
}
