//! Requests per gRPC method and status code, and latency per unary method,
//! of the client listener: a tower layer around the whole server.
//!
//! The method label comes only from the known method table
//! (`auth::METHODS`), anything else (health checks, reflection, unknown
//! paths) is `other`, so a client cannot grow the number of series. The
//! code is the `grpc-status` the answer carries: in its headers when it is
//! trailers-only (an error before any message), else in its trailers (the
//! end of a unary answer or of a stream). An answer dropped before its
//! status (the client went away) counts as CANCELLED. Counters and
//! histograms are preallocated atomics: no lock on the request path.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use raftlock_store::metrics::{Histogram, HistogramSnapshot};

use crate::auth::METHODS;

/// The method label of paths outside the table.
pub(crate) const OTHER_METHOD: &str = "other";

/// gRPC status codes by number, as the gRPC spec names them.
pub(crate) const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
const CANCELLED: usize = 1;
const UNKNOWN: usize = 2;

/// Streaming methods: their time is the stream's life, not a latency, so
/// they get no histogram (a unit test checks this list against the
/// service descriptors).
pub(crate) const STREAMING: [&str; 3] = [
    "/raftlock.v1.Locks/Watch",
    "/raftlock.v1.Leases/KeepAlive",
    "/raftlock.v1.Admin/SaveSnapshot",
];

/// One method's numbers at a scrape.
#[derive(Debug, Clone)]
pub(crate) struct MethodSnapshot {
    /// Without the leading `/`: `raftlock.v1.Locks/Acquire`, or `other`.
    pub(crate) method: &'static str,
    /// (code name, requests), only codes seen.
    pub(crate) codes: Vec<(&'static str, u64)>,
    /// Unary methods that were called.
    pub(crate) latency: Option<HistogramSnapshot>,
}

/// The counters of every method in the table, plus `other`.
#[derive(Debug)]
pub(crate) struct GrpcMetrics {
    /// [method][code]; the last method is `other`.
    requests: Box<[[AtomicU64; CODES.len()]]>,
    /// Per method; `None` for streaming methods and `other`.
    latency: Box<[Option<Histogram>]>,
}

impl Default for GrpcMetrics {
    fn default() -> Self {
        GrpcMetrics {
            requests: (0..=METHODS.len())
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            latency: METHODS
                .iter()
                .map(|(m, _)| (!STREAMING.contains(m)).then(Histogram::default))
                .chain(std::iter::once(None))
                .collect(),
        }
    }
}

impl GrpcMetrics {
    fn method_index(path: &str) -> usize {
        METHODS
            .iter()
            .position(|(m, _)| *m == path)
            .unwrap_or(METHODS.len())
    }

    fn record(&self, method: usize, code: usize, started: Instant) {
        let code = if code < CODES.len() { code } else { UNKNOWN };
        self.requests[method][code].fetch_add(1, Relaxed);
        if let Some(h) = &self.latency[method] {
            h.observe(started.elapsed());
        }
    }

    /// Every method that was called, in table order, `other` last.
    pub(crate) fn snapshot(&self) -> Vec<MethodSnapshot> {
        let mut out = Vec::new();
        for (i, counts) in self.requests.iter().enumerate() {
            let codes: Vec<(&'static str, u64)> = counts
                .iter()
                .enumerate()
                .map(|(c, n)| (CODES[c], n.load(Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect();
            if codes.is_empty() {
                continue;
            }
            let method = match METHODS.get(i) {
                Some((path, _)) => path.trim_start_matches('/'),
                None => OTHER_METHOD,
            };
            out.push(MethodSnapshot {
                method,
                codes,
                latency: self.latency[i].as_ref().map(Histogram::snapshot),
            });
        }
        out
    }
}

/// The code in a `grpc-status` header or trailer.
fn status_of(headers: &http::HeaderMap) -> Option<usize> {
    let value = headers.get("grpc-status")?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(UNKNOWN),
    )
}

/// Wraps the client services; see the module doc.
#[derive(Debug, Clone)]
pub(crate) struct GrpcMetricsLayer(pub(crate) Arc<GrpcMetrics>);

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: Arc::clone(&self.0),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct GrpcMetricsService<S> {
    inner: S,
    metrics: Arc<GrpcMetrics>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
{
    type Response = http::Response<MeteredBody<RB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let pending = Pending {
            metrics: Arc::clone(&self.metrics),
            method: GrpcMetrics::method_index(request.uri().path()),
            started: Instant::now(),
            done: false,
        };
        ResponseFuture {
            inner: self.inner.call(request),
            pending: Some(pending),
        }
    }
}

/// A request whose status is not known yet. Dropped unfinished (the
/// answer was abandoned), it counts as CANCELLED.
#[derive(Debug)]
struct Pending {
    metrics: Arc<GrpcMetrics>,
    method: usize,
    started: Instant,
    done: bool,
}

impl Pending {
    fn finish(mut self, code: usize) {
        self.done = true;
        self.metrics.record(self.method, code, self.started);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            self.metrics.record(self.method, CANCELLED, self.started);
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of a metered request, on its way.
    pub(crate) struct ResponseFuture<F> {
        #[pin]
        inner: F,
        pending: Option<Pending>,
    }
}

impl<F, RB, E> std::future::Future for ResponseFuture<F>
where
    F: std::future::Future<Output = Result<http::Response<RB>, E>>,
{
    type Output = Result<http::Response<MeteredBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let pending = this.pending.take();
        Poll::Ready(match result {
            Ok(response) => {
                let pending = match (pending, status_of(response.headers())) {
                    // Trailers-only: the status is already known.
                    (Some(p), Some(code)) => {
                        p.finish(code);
                        None
                    }
                    (p, _) => p,
                };
                Ok(response.map(|inner| MeteredBody { inner, pending }))
            }
            Err(e) => {
                if let Some(p) = pending {
                    p.finish(UNKNOWN);
                }
                Err(e)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// An answer's body that records the status in its trailers.
    pub(crate) struct MeteredBody<B> {
        #[pin]
        inner: B,
        pending: Option<Pending>,
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(code) = f.trailers_ref().and_then(status_of)
                    && let Some(p) = this.pending.take()
                {
                    p.finish(code);
                }
            }
            // The body failed, or ended with no status at all.
            Some(Err(_)) | None => {
                if let Some(p) = this.pending.take() {
                    p.finish(UNKNOWN);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    /// The streaming list agrees with the services' descriptors.
    #[test]
    fn exactly_the_streaming_methods_have_no_latency_histogram() {
        let set = prost_types::FileDescriptorSet::decode(raftlock_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut streaming = Vec::new();
        for file in set.file.iter().filter(|f| f.package() == "raftlock.v1") {
            for service in &file.service {
                for method in &service.method {
                    if method.client_streaming() || method.server_streaming() {
                        streaming.push(format!(
                            "/{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
        streaming.sort();
        let mut listed: Vec<String> = STREAMING.iter().map(|s| s.to_string()).collect();
        listed.sort();
        assert_eq!(streaming, listed);
    }

    #[test]
    fn unknown_paths_and_codes_are_bounded() {
        let m = GrpcMetrics::default();
        let p = |path: &str| Pending {
            metrics: Arc::new(GrpcMetrics::default()),
            method: GrpcMetrics::method_index(path),
            started: Instant::now(),
            done: false,
        };
        assert_eq!(p("/x.Y/Z").method, METHODS.len());
        m.record(GrpcMetrics::method_index("/a/b"), 99, Instant::now());
        m.record(
            GrpcMetrics::method_index("/raftlock.v1.Locks/Acquire"),
            5,
            Instant::now(),
        );
        let snap = m.snapshot();
        assert_eq!(snap.len(), 2, "{snap:?}");
        assert_eq!(snap[0].method, "raftlock.v1.Locks/Acquire");
        assert_eq!(snap[0].codes, vec![("NOT_FOUND", 1)]);
        assert_eq!(snap[0].latency.as_ref().map(|h| h.count), Some(1));
        assert_eq!(snap[1].method, OTHER_METHOD);
        assert_eq!(snap[1].codes, vec![("UNKNOWN", 1)], "code 99 is UNKNOWN");
        assert!(snap[1].latency.is_none());
        // Dropped before its status: CANCELLED.
        let pending = p("/raftlock.v1.Locks/Watch");
        let metrics = Arc::clone(&pending.metrics);
        drop(pending);
        assert_eq!(metrics.snapshot()[0].codes, vec![("CANCELLED", 1)]);
    }
}
