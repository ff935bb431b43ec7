//! Our HTTP accept loop. `axum::serve` cannot bound what a client may hold:
//! here every connection gets a slot (503 beyond `max_connections`), its
//! request head a size, count and time limit (431, 431, closed), and its body
//! an idle limit. A client that sends a byte a minute holds one slot for at
//! most `header_timeout`; the others are served meanwhile.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, info, warn};

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    /// Request line and headers together.
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// From the first byte we wait for to the end of the headers; also how
    /// long a kept-alive connection may sit idle between requests.
    pub header_timeout: Duration,
    /// Longest wait for the next piece of a request body.
    pub body_idle_timeout: Duration,
    /// After shutdown, running requests get this long to finish.
    pub shutdown_grace: Duration,
}

/// ALPN: HTTP/2 first, then HTTP/1.1 (plain HTTP tells them apart by the
/// first bytes: h2c).
pub const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<Arc<crate::tls::Reloading>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_headers(limits.max_headers)
        // hyper-util exposes no separate head limit: a head that fills the
        // read buffer is answered 431. Bodies are read in pieces this big.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        // A peer that vanished without a FIN is noticed and its slot freed.
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Nagle off: a response written in pieces on a kept-alive connection
        // would wait ~40 ms for the client's delayed ACK.
        let _ = tcp.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn!(%peer, limit = limits.max_connections, "HTTP connection limit reached, answering 503");
            // A flood past the limit is dropped, not answered one by one;
            // over TLS a plain answer would be noise: the connection is closed.
            if tls.is_none() {
                if let Ok(turn) = refusing.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        refuse_busy(tcp).await;
                        drop(turn);
                    });
                }
            }
            continue;
        };
        let app = app.clone();
        let body_idle = limits.body_idle_timeout;
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let mut req = req.map(|b| Body::new(IdleLimited::new(b, body_idle)));
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req)
        });
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        let (builder, watcher, deadline) =
            (builder.clone(), graceful.watcher(), limits.header_timeout);
        tokio::spawn(async move {
            let _slot = slot;
            let ended = match acceptor {
                None => {
                    let io = TokioIo::new(FirstBytes::new(tcp, deadline));
                    watcher
                        .watch(builder.serve_connection(io, service).into_owned())
                        .await
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(deadline, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            crate::metrics::get().tls_failed("web");
                            info!(%peer, error = %e, "TLS handshake failed; connection closed");
                            return;
                        }
                        Err(_) => {
                            info!(%peer, "TLS handshake timed out; connection closed");
                            return;
                        }
                    };
                    let io = TokioIo::new(FirstBytes::new(stream, deadline));
                    watcher
                        .watch(builder.serve_connection(io, service).into_owned())
                        .await
                }
            };
            if let Err(e) = ended {
                debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    info!("HTTP listener stopped accepting; waiting for running requests");
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("HTTP requests still running after the grace period are dropped");
    }
    Ok(())
}

/// Connections past the limit being answered at once; more are closed.
const MAX_REFUSING: usize = 64;

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Retry-After: 2\r\nContent-Type: text/plain\r\nContent-Length: 62\r\nConnection: close\r\n\r\n\
Pons has reached web.limits.max_connections; try again in 2 s\n";

/// Past the connection limit: read (a bounded time and amount of) the
/// request so that closing does not reset it, then say why.
async fn refuse_busy(mut tcp: TcpStream) {
    let read_head = async {
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), read_head).await;
    let answer = async {
        let _ = tcp.write_all(BUSY).await;
        let _ = tcp.shutdown().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), answer).await;
}

/// The first bytes of a connection must come within `deadline`: hyper's own
/// header timeout starts only once it knows HTTP/1 from HTTP/2, and telling
/// them apart takes up to 24 bytes that it would wait for forever.
struct FirstBytes<S> {
    tcp: S,
    read: usize,
    timer: Pin<Box<Sleep>>,
}

const H2_PREFACE_LEN: usize = 24;

impl<S> FirstBytes<S> {
    fn new(tcp: S, deadline: Duration) -> FirstBytes<S> {
        FirstBytes {
            tcp,
            read: 0,
            timer: Box::pin(tokio::time::sleep(deadline)),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstBytes<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if polled.is_pending()
            && self.read < H2_PREFACE_LEN
            && self.timer.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
        }
        self.read += buf.filled().len() - before;
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstBytes<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// A request body whose next piece must come within `idle` of being asked
/// for. The clock runs only while the handler waits: a handler busy
/// elsewhere (e.g. with the PACS) does not count against the client.
struct IdleLimited {
    inner: Incoming,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    waiting: bool,
    stalled: bool,
}

impl IdleLimited {
    fn new(inner: Incoming, idle: Duration) -> IdleLimited {
        IdleLimited {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
            stalled: false,
        }
    }
}

impl HttpBody for IdleLimited {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.stalled {
            // The body ended with that error.
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.waiting = false;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if !this.waiting {
            this.waiting = true;
            let deadline = Instant::now() + this.idle;
            this.timer.as_mut().reset(deadline);
        }
        ready!(this.timer.as_mut().poll(cx));
        this.stalled = true;
        Poll::Ready(Some(Err(format!(
            "the request body stalled: nothing arrived for {} s (web.limits.body_idle_secs)",
            this.idle.as_secs()
        )
        .into())))
    }

    fn is_end_stream(&self) -> bool {
        self.stalled || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
