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
/// Password checks waiting or running at once, in all and per client address: past them a
/// request is answered 429 at once, so that a flood of wrong passwords from one host cannot
/// queue the scraper's check behind seconds of bcrypt.
const MAX_PENDING_CHECKS: usize = 8;
const MAX_PENDING_CHECKS_PER_CLIENT: usize = 1;

/// What the server went through, for the metrics and the summary.
#[derive(Debug, Default)]
pub struct ServerCounters {
    /// Accepts that failed (e.g. descriptors ran out); the server backed off and went on.
    pub accept_errors: AtomicU64,
    /// Connections closed at once because [`MAX_CONNECTIONS`] were open.
    pub refused_connections: AtomicU64,
    /// Requests refused for missing or wrong credentials.
    pub unauthorized: AtomicU64,
    /// Idle connections closed to make room for a new one at the limit.
    pub evicted_connections: AtomicU64,
    /// Requests answered 429: too many password checks pending.
    pub throttled: AtomicU64,
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
            "The /metrics server: accepts that failed (e.g. no descriptors left), connections refused at the limit, idle connections closed to make room for a new one, requests refused for credentials, requests answered 429 while password checks were pending.",
        );
        for (event, n) in [
            ("accept_error", &self.accept_errors),
            ("connection_refused", &self.refused_connections),
            ("connection_evicted", &self.evicted_connections),
            ("unauthorized", &self.unauthorized),
            ("throttled", &self.throttled),
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
    /// Verified against when the user is unknown, at the users' highest cost, so that timing
    /// does not tell which users exist.
    fake_hash: String,
    headers: Vec<(header::HeaderName, header::HeaderValue)>,
    auth_cache: Mutex<HashMap<(String, String), bool>>,
    /// Password checks pending, per client address.
    checking: Mutex<HashMap<std::net::IpAddr, usize>>,
    counters: Arc<ServerCounters>,
    /// Open connections, in the order they opened: whether a request came on each, and how to
    /// close it (the oldest that never sent one makes room for a new one at the limit).
    open: Mutex<std::collections::BTreeMap<u64, OpenConn>>,
}

struct OpenConn {
    served: Arc<std::sync::atomic::AtomicBool>,
    close: Arc<tokio::sync::Notify>,
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

/// `9464` or `:9464` binds loopback (a sensor's metrics are not for every network it sees);
/// `HOST:PORT` binds as given, a host name resolved (`0.0.0.0:9464` for every interface).
pub fn parse_listen(addr: &str) -> Result<String, String> {
    let a = addr.trim();
    if let Ok(port) = a.trim_start_matches(':').parse::<u16>() {
        return Ok(format!("127.0.0.1:{port}"));
    }
    if let Ok(s) = a.parse::<SocketAddr>() {
        return Ok(s.to_string());
    }
    use std::net::ToSocketAddrs;
    match a.to_socket_addrs().map(|mut it| it.next()) {
        Ok(Some(s)) => Ok(s.to_string()),
        _ => Err(format!(
            "--metrics {addr:?}: expected PORT or HOST:PORT (a host name that resolves)"
        )),
    }
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
        let cost = web
            .users
            .values()
            .filter_map(|h| h.parse::<bcrypt::HashParts>().ok())
            .map(|p| p.get_cost())
            .max()
            .unwrap_or(4);
        let fake_hash = if web.users.is_empty() {
            String::new()
        } else {
            bcrypt::hash("no such user", cost).map_err(|e| format!("--web-config: {e}"))?
        };
        let state = Arc::new(State {
            published: Arc::clone(&published),
            users: web.users,
            fake_hash,
            headers: web.headers,
            auth_cache: Mutex::new(HashMap::new()),
            checking: Mutex::new(HashMap::new()),
            counters: Arc::clone(&counters),
            open: Mutex::new(std::collections::BTreeMap::new()),
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
    let mut next_id = 0u64;
    loop {
        let (tcp, peer) = tokio::select! {
            biased;
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff = Duration::from_millis(10);
                    accepted
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
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(p) => Some(p),
            // At the limit: the oldest connection that never sent a request (held open, or
            // sending its head slowly) is closed to make room, so that idle connections held
            // open by anyone cannot lock the scraper out. One that sent a request is a client
            // (its response may still be on its way out); between requests it is closed after
            // the head timeout, and after a 401 at once.
            Err(_) if evict_idle(&state) => {
                let wait = Arc::clone(&permits).acquire_owned();
                tokio::time::timeout(Duration::from_millis(500), wait)
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Err(_) => None,
        };
        let Some(permit) = permit else {
            state
                .counters
                .refused_connections
                .fetch_add(1, Ordering::Relaxed);
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let id = next_id;
        next_id += 1;
        let served = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let close = Arc::new(tokio::sync::Notify::new());
        if let Ok(mut open) = state.open.lock() {
            open.insert(
                id,
                OpenConn {
                    served: Arc::clone(&served),
                    close: Arc::clone(&close),
                },
            );
        }
        let conn = Conn {
            state: Arc::clone(&state),
            peer: peer.ip(),
            served,
            stop: stop.clone(),
        };
        let (http, tls) = (Arc::clone(&http), tls.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let state = Arc::clone(&conn.state);
            let served = async move {
                match tls {
                    None => serve_connection(&http, TokioIo::new(tcp), conn).await,
                    Some(acceptor) => {
                        if let Ok(Ok(s)) =
                            tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                        {
                            serve_connection(&http, TokioIo::new(s), conn).await;
                        }
                    }
                }
            };
            tokio::select! {
                _ = served => {}
                _ = close.notified() => {}
            }
            if let Ok(mut open) = state.open.lock() {
                open.remove(&id);
            };
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

/// Closes the oldest open connection that never sent a request; false when there is none.
fn evict_idle(state: &State) -> bool {
    let Ok(open) = state.open.lock() else {
        return false;
    };
    let Some(c) = open.values().find(|c| !c.served.load(Ordering::Relaxed)) else {
        return false;
    };
    // Stored, so that a connection whose task has not reached its wait yet closes all the same.
    c.close.notify_one();
    state
        .counters
        .evicted_connections
        .fetch_add(1, Ordering::Relaxed);
    true
}

/// One connection: the server's state, the client's address, whether a request came on it.
struct Conn {
    state: Arc<State>,
    peer: std::net::IpAddr,
    served: Arc<std::sync::atomic::AtomicBool>,
    stop: watch::Receiver<bool>,
}

async fn serve_connection<I>(http: &http1::Builder, io: I, c: Conn)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let Conn {
        state,
        peer,
        served,
        mut stop,
    } = c;
    let service = service_fn(move |req| {
        let state = Arc::clone(&state);
        served.store(true, Ordering::Relaxed);
        async move { Ok::<_, Infallible>(handle(&state, peer, req).await) }
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

async fn handle(
    state: &Arc<State>,
    peer: std::net::IpAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let verdict = if state.users.is_empty() {
        Some(true)
    } else {
        authorized(state, peer, req.headers()).await
    };
    let mut resp = match verdict {
        Some(true) => metrics_response(state, &req),
        Some(false) => {
            state.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
            let mut r = plain(StatusCode::UNAUTHORIZED, "Unauthorized\n");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic"),
            );
            // Not kept open: a connection that sent a request is not evicted at the limit.
            r.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            r
        }
        None => {
            state.counters.throttled.fetch_add(1, Ordering::Relaxed);
            let mut r = plain(
                StatusCode::TOO_MANY_REQUESTS,
                "otwatch: too many password checks pending\n",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            r
        }
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
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "otwatch: see /metrics\n");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
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

/// Whether the request's credentials are a user's; `None` when too many checks are pending
/// (in all, or from this client) to start another: the request is answered 429.
async fn authorized(state: &Arc<State>, peer: std::net::IpAddr, h: &HeaderMap) -> Option<bool> {
    let Some((user, pass)) = basic_credentials(h) else {
        return Some(false);
    };
    let (hash, known) = match state.users.get(&user) {
        Some(hash) => (hash.clone(), true),
        None => (state.fake_hash.clone(), false),
    };
    let key = (user, pass.clone());
    if let Some(ok) = state
        .auth_cache
        .lock()
        .ok()
        .and_then(|c| c.get(&key).copied())
    {
        return Some(ok);
    }
    {
        let mut checking = state.checking.lock().ok()?;
        let all: usize = checking.values().sum();
        let mine = checking.entry(peer).or_default();
        if all >= MAX_PENDING_CHECKS || *mine >= MAX_PENDING_CHECKS_PER_CLIENT {
            return None;
        }
        *mine += 1;
    }
    // The verdict is remembered by the check itself, so that a client that gave up waiting
    // (the scraper's timeout) finds it when it asks again.
    let st = Arc::clone(state);
    tokio::task::spawn_blocking(move || {
        let ok = bcrypt::verify(pass, &hash).unwrap_or(false) && known;
        if let Ok(mut cache) = st.auth_cache.lock() {
            remember(&mut cache, key, ok);
        }
        if let Ok(mut checking) = st.checking.lock() {
            if let Some(n) = checking.get_mut(&peer) {
                *n -= 1;
                if *n == 0 {
                    checking.remove(&peer);
                }
            }
        }
        ok
    })
    .await
    .ok()
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
