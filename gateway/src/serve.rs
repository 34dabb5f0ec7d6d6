//! Serving a router to clients that may be slow, idle or too many: a connection must send each
//! request head within `header_read_timeout` of opening or of the previous answer (so this also
//! ends idle keep-alive connections), is closed once no byte moved either way for
//! `idle_timeout` (a stalled request body, an answer nobody reads), and past `connections_max`
//! open connections a new one is answered 503 and closed at once. A connection asked to close
//! gets [`CLOSE_GRACE`] to finish its answer and is then dropped. Nothing waits without a bound.
//!
//! HTTP/1.1 only: the public API sits behind a proxy or a browser that speaks it, and h2c's
//! preface and pings would escape the header timer. axum's own `serve` has none of these
//! knobs, so this is hyper's HTTP/1 connection with them set; the peer address reaches
//! handlers as [`ConnectInfo`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt as _;

/// Limits on client connections.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    pub header_read_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub connections_max: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            connections_max: 10_000,
        }
    }
}

/// Connections being refused at once at most; past it a new one is closed without an answer.
const REFUSING_MAX: usize = 256;
/// Longest the answer to a refused connection may take.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest a connection asked to close (idle, or the server stopping) may take to finish the
/// answer it is writing; then it is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Longest a graceful shutdown waits for open connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

const REFUSAL: &str = "{\"type\":\"/problems/overloaded\",\"title\":\"Overloaded\",\"status\":503,\
\"detail\":\"this server has as many connections open as it takes; retry after the delay in Retry-After\"}";

/// Serves `app` on `listener` until `shutdown` resolves, then lets open connections finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: Options,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let connections_max = options.connections_max.max(1);
    let open = Arc::new(Semaphore::new(connections_max));
    let refusing = Arc::new(Semaphore::new(REFUSING_MAX));
    let (stop, stopped) = watch::channel(false);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(options.header_read_timeout_secs.max(1)));
    let builder = Arc::new(builder);
    let idle = Duration::from_secs(options.idle_timeout_secs.max(1));
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: wait, go on.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            metrics::counter!("holdfast_http_connections_refused_total").increment(1);
            if let Ok(refusing) = Arc::clone(&refusing).try_acquire_owned() {
                tokio::spawn(async move {
                    let _refusing = refusing;
                    let _ = tokio::time::timeout(REFUSE_TIMEOUT, refuse(stream)).await;
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = Arc::clone(&builder);
        let stopped = stopped.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(&builder, stream, peer, app, idle, stopped).await;
        });
    }
    let _ = stop.send(true);
    let all = u32::try_from(connections_max).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, open.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period");
    }
    Ok(())
}

async fn serve_connection(
    builder: &http1::Builder,
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    idle: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let stream = Activity::new(stream);
    let (opened, last) = (stream.opened, Arc::clone(&stream.last));
    let service = app.map_request(move |mut request: axum::http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    let connection =
        builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    let mut connection = pin!(connection);
    let mut closing = false;
    let grace = tokio::time::sleep(Duration::MAX);
    let mut grace = pin!(grace);
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                return;
            }
            () = idle_for(opened, &last, idle), if !closing => {
                metrics::counter!("holdfast_http_connections_idle_closed_total").increment(1);
                closing = true;
                connection.as_mut().graceful_shutdown();
                grace.as_mut().reset(Instant::now() + CLOSE_GRACE);
            }
            _ = stopped.wait_for(|s| *s), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
                grace.as_mut().reset(Instant::now() + CLOSE_GRACE);
            }
            () = grace.as_mut(), if closing => {
                // An answer nobody reads, or a request body that never comes: drop it.
                tracing::debug!(%peer, "connection dropped after the close grace period");
                return;
            }
        }
    }
}

/// Resolves once nothing was read or written for `idle` (`last`: milliseconds after `opened`).
async fn idle_for(opened: Instant, last: &AtomicU64, idle: Duration) {
    loop {
        let deadline = opened + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// Answers a connection past the bound with a 503 and closes it.
async fn refuse(mut stream: TcpStream) {
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{REFUSAL}",
        REFUSAL.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A stream that records when it last moved a byte (milliseconds after it was opened).
struct Activity {
    inner: TcpStream,
    opened: Instant,
    last: Arc<AtomicU64>,
}

impl Activity {
    fn new(inner: TcpStream) -> Self {
        Self {
            inner,
            opened: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl AsyncRead for Activity {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl AsyncWrite for Activity {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
