//! The /metrics HTTP server: hyper on a one-thread tokio runtime of its own, so a scrape never
//! waits for the capture thread and the capture thread never waits for a scraper.
//!
//! It is reachable from the network, so everything a client controls is bounded: request head
//! size and header count (431 beyond), time to send the head, the life of a connection, TLS
//! handshake time, and the number of connections at once (further ones are closed at once). An
//! accept that fails because descriptors ran out backs off and tries again instead of ending
//! the server. TLS and basic auth come from an exporter-toolkit web config
//! ([`super::web_config`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{watch, Semaphore};

use super::web_config::WebConfig;
use super::{encode_openmetrics, encode_text, Published};
use super::{CONTENT_TYPE_OPENMETRICS, CONTENT_TYPE_TEXT};

/// Connections served at once; more are closed as they arrive.
/// Each costs a task and at most two head buffers, not a thread.
pub const MAX_CONNECTIONS: usize = 256;
/// Request head (request line and headers) at most, bytes.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
const MAX_HEADERS: usize = 32;
/// Time a client has to send its request head (also the idle limit between requests).
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection is closed after this long, however busy.
const CONNECTION_LIFE: Duration = Duration::from_secs(60);
/// Successful and failed password checks remembered (bcrypt is slow on purpose).
const AUTH_CACHE: usize = 100;
/// Verified against when the user is unknown, so timing does not tell which users exist.
const FAKE_HASH: &str = "$2b$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

/// What the server went through, for the metrics and the summary.
#[derive(Debug, Default)]
pub struct ServerCounters {
    /// Accepts that failed (e.g. descriptors ran out); the server backed off and went on.
    pub accept_errors: AtomicU64,
    /// Connections closed at once because [`MAX_CONNECTIONS`] were open.
    pub refused_connections: AtomicU64,
    /// Requests refused for missing or wrong credentials.
    pub unauthorized: AtomicU64,
    /// Set when the server stopped serving before the run ended: the run fails.
    pub failed: Mutex<Option<String>>,
    /// The sensor's name, a label of these series as of every other.
    pub sensor: std::sync::OnceLock<String>,
}

impl ServerCounters {
    fn family(&self) -> super::Family {
        let mut f = super::Family::new(
            "otwatch_metrics_server_events_total",
            super::MetricKind::Counter,
            "The /metrics server: accepts that failed (e.g. no descriptors left), connections refused at the limit, requests refused for credentials.",
        );
        for (event, n) in [
            ("accept_error", &self.accept_errors),
            ("connection_refused", &self.refused_connections),
            ("unauthorized", &self.unauthorized),
        ] {
            f.push(
                vec![("event", event.to_string())],
                n.load(Ordering::Relaxed) as f64,
            );
        }
        if let Some(s) = self.sensor.get() {
            super::label_all(std::slice::from_mut(&mut f), s);
        }
        f
    }
}

struct State {
    published: Published,
    users: std::collections::BTreeMap<String, String>,
    headers: Vec<(header::HeaderName, header::HeaderValue)>,
    auth_cache: Mutex<HashMap<(String, String), bool>>,
    counters: Arc<ServerCounters>,
}

/// Serves `/metrics` on its own thread until the server is dropped.
pub struct MetricsServer {
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Option<watch::Sender<bool>>,
    pub published: Published,
    pub addr: SocketAddr,
    pub tls: bool,
    pub counters: Arc<ServerCounters>,
}

/// `9464` or `:9464` binds loopback; `host:port` binds as given.
pub fn parse_listen(addr: &str) -> Result<String, String> {
    let a = addr.trim();
    if let Ok(port) = a.trim_start_matches(':').parse::<u16>() {
        return Ok(format!("127.0.0.1:{port}"));
    }
    a.parse::<SocketAddr>()
        .map(|s| s.to_string())
        .map_err(|_| format!("--metrics {addr:?}: expected PORT or HOST:PORT"))
}

impl MetricsServer {
    /// Binds now (so a taken port is an error before any input is read), then serves from a
    /// thread of its own.
    pub fn start(addr: &str, web: Option<WebConfig>) -> Result<MetricsServer, String> {
        let listen = parse_listen(addr)?;
        let listener = std::net::TcpListener::bind(&listen)
            .map_err(|e| format!("--metrics {listen}: cannot listen: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("--metrics {listen}: {e}"))?;
        let bound = listener
            .local_addr()
            .map_err(|e| format!("--metrics {listen}: {e}"))?;
        let web = web.unwrap_or_default();
        let published: Published = Arc::new(Mutex::new(Vec::new()));
        let counters = Arc::new(ServerCounters::default());
        let state = Arc::new(State {
            published: Arc::clone(&published),
            users: web.users,
            headers: web.headers,
            auth_cache: Mutex::new(HashMap::new()),
            counters: Arc::clone(&counters),
        });
        let tls = web.tls.map(tokio_rustls::TlsAcceptor::from);
        let is_tls = tls.is_some();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            // bcrypt checks run one at a time off the reactor.
            .max_blocking_threads(1)
            .build()
            .map_err(|e| format!("--metrics: cannot start its runtime: {e}"))?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let thread_counters = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name("otwatch-metrics".into())
            .spawn(move || {
                if let Err(e) = runtime.block_on(serve(listener, state, tls, stop_rx)) {
                    if let Ok(mut f) = thread_counters.failed.lock() {
                        *f = Some(e);
                    }
                }
            })
            .map_err(|e| format!("--metrics: cannot start its thread: {e}"))?;
        Ok(MetricsServer {
            thread: Some(thread),
            stop: Some(stop_tx),
            published,
            addr: bound,
            tls: is_tls,
            counters,
        })
    }

    /// Replaces the published families, unless a scrape is reading them right now (the next
    /// publication will do).
    pub fn publish(&self, families: Vec<super::Family>) {
        if let Ok(mut p) = self.published.try_lock() {
            *p = families;
        }
    }

    /// Replaces the published families, waiting for a scrape in progress (end of run).
    pub fn publish_final(&self, families: Vec<super::Family>) {
        if let Ok(mut p) = self.published.lock() {
            *p = families;
        }
    }

    /// Why the server stopped serving before the end of the run, if it did.
    pub fn failure(&self) -> Option<String> {
        let failed = self.counters.failed.lock().ok().and_then(|f| f.clone());
        failed.or_else(|| {
            self.thread
                .as_ref()
                .is_some_and(|t| t.is_finished())
                .then(|| "the metrics server thread ended".to_string())
        })
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    state: Arc<State>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(2 * MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    let http = Arc::new(http);
    let mut backoff = Duration::from_millis(10);
    loop {
        let tcp = tokio::select! {
            biased;
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    backoff = Duration::from_millis(10);
                    tcp
                }
                Err(e) => {
                    use std::io::ErrorKind::*;
                    if matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted | WouldBlock) {
                        continue;
                    }
                    // Out of descriptors or memory: wait for some to come back, never give up.
                    state.counters.accept_errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            state
                .counters
                .refused_connections
                .fetch_add(1, Ordering::Relaxed);
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (state, http, tls, stop) = (
            Arc::clone(&state),
            Arc::clone(&http),
            tls.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(&http, TokioIo::new(tcp), state, stop).await,
                Some(acceptor) => {
                    if let Ok(Ok(s)) =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                    {
                        serve_connection(&http, TokioIo::new(s), state, stop).await;
                    }
                }
            }
        });
    }
    drop(listener);
    // Connections still open got the stop signal: each finishes the response in flight (the
    // last scrape of a run), then closes. Every permit back means every connection is done.
    let _ = tokio::time::timeout(
        Duration::from_secs(3),
        permits.acquire_many(MAX_CONNECTIONS as u32),
    )
    .await;
    Ok(())
}

async fn serve_connection<I>(
    http: &http1::Builder,
    io: I,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(handle(&state, req).await) }
    });
    let conn = http.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.changed() => {}
        _ = tokio::time::sleep(CONNECTION_LIFE) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let mut resp = if !state.users.is_empty() && !authorized(state, req.headers()).await {
        state.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
        let mut r = plain(StatusCode::UNAUTHORIZED, "Unauthorized\n");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic"),
        );
        r
    } else {
        metrics_response(state, &req)
    };
    for (k, v) in &state.headers {
        resp.headers_mut().insert(k.clone(), v.clone());
    }
    resp
}

fn metrics_response(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "otwatch: see /metrics\n");
    }
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "otwatch: see /metrics\n");
    }
    let openmetrics = req.headers().get_all(header::ACCEPT).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.contains("application/openmetrics-text"))
    });
    let body = match state.published.lock() {
        Ok(mut f) => {
            // The server's own counters, as of this scrape.
            f.push(state.counters.family());
            let body = if openmetrics {
                encode_openmetrics(&f)
            } else {
                encode_text(&f)
            };
            f.pop();
            body
        }
        Err(_) => String::new(),
    };
    let ctype = if openmetrics {
        CONTENT_TYPE_OPENMETRICS
    } else {
        CONTENT_TYPE_TEXT
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    r
}

fn basic_credentials(h: &HeaderMap) -> Option<(String, String)> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let (u, p) = std::str::from_utf8(&raw).ok()?.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

async fn authorized(state: &State, h: &HeaderMap) -> bool {
    let Some((user, pass)) = basic_credentials(h) else {
        return false;
    };
    let (hash, known) = match state.users.get(&user) {
        Some(hash) => (hash.clone(), true),
        None => (FAKE_HASH.to_owned(), false),
    };
    let key = (user, pass.clone());
    if let Some(ok) = state
        .auth_cache
        .lock()
        .ok()
        .and_then(|c| c.get(&key).copied())
    {
        return ok;
    }
    let verified =
        tokio::task::spawn_blocking(move || bcrypt::verify(pass, &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
    let ok = verified && known;
    if let Ok(mut cache) = state.auth_cache.lock() {
        remember(&mut cache, key, ok);
    }
    ok
}

/// Remembers a check's verdict, at most `AUTH_CACHE` of them. A full cache makes room by
/// forgetting a refused pair before an accepted one: a flood of wrong passwords must not evict
/// the scraper's own credentials, which would cost it a bcrypt check (behind the flood's) again.
fn remember(cache: &mut HashMap<(String, String), bool>, key: (String, String), ok: bool) {
    if cache.len() >= AUTH_CACHE && !cache.contains_key(&key) {
        let victim = cache
            .iter()
            .find(|(_, &accepted)| !accepted)
            .or_else(|| cache.iter().next())
            .map(|(k, _)| k.clone());
        if let Some(k) = victim {
            cache.remove(&k);
        }
    }
    cache.insert(key, ok);
}

#[cfg(test)]
mod auth_tests {
    use super::*;

    /// A full cache makes room by forgetting a refused pair: the accepted ones all stay, however
    /// many refused ones come.
    #[test]
    fn refused_pairs_are_forgotten_before_accepted_ones() {
        let mut cache = HashMap::new();
        let pair = |i: usize| ("user".to_string(), format!("pass{i}"));
        for i in 0..AUTH_CACHE - 1 {
            remember(&mut cache, pair(i), true);
        }
        for i in AUTH_CACHE..AUTH_CACHE + 50 {
            remember(&mut cache, pair(i), false);
            assert_eq!(cache.len(), AUTH_CACHE);
            assert!(
                (0..AUTH_CACHE - 1).all(|a| cache.get(&pair(a)) == Some(&true)),
                "an accepted pair was forgotten"
            );
        }
    }
}
