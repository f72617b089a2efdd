//! A real HTTP/2 server over TLS on 127.0.0.1 (hyper's, ALPN `h2` only), whose every answer
//! waits before its head: a far link. It counts TCP connections and the streams open at
//! once, so a test can show many requests in flight over one connection.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct State {
    routes: Mutex<HashMap<String, Bytes>>,
    delay: Mutex<Duration>,
    connections: AtomicU64,
    requests: AtomicU64,
    open_streams: AtomicU64,
    max_open_streams: AtomicU64,
}

pub struct H2Server {
    addr: SocketAddr,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl H2Server {
    /// Serves HTTP/2 only over `acceptor` (which must offer `h2`), each answer after `delay`.
    pub fn start(acceptor: tokio_rustls::TlsAcceptor, delay: Duration) -> H2Server {
        let (runtime, listener, addr) = super::loopback_listener();
        let state = Arc::new(State::default());
        *state.delay.lock().unwrap() = delay;
        let accept_state = state.clone();
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accept_state.connections.fetch_add(1, Ordering::SeqCst);
                let (state, acceptor) = (accept_state.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .max_concurrent_streams(1000)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                });
            }
        });
        H2Server {
            addr,
            state,
            runtime: Some(runtime),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    pub fn route(&self, path: &str, body: impl Into<Bytes>) {
        self.state
            .routes
            .lock()
            .unwrap()
            .insert(path.to_string(), body.into());
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// The most requests (streams) being answered at once, over all connections.
    pub fn max_concurrent_streams(&self) -> u64 {
        self.state.max_open_streams.load(Ordering::SeqCst)
    }
}

impl Drop for H2Server {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn answer(state: &State, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let open = super::PeakGuard::new(&state.open_streams, &state.max_open_streams);
    let delay = *state.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let body = state
        .routes
        .lock()
        .unwrap()
        .get(request.uri().path())
        .cloned();
    drop(open);
    match body {
        Some(body) => Response::new(Full::new(body)),
        None => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::new()))
            .expect("a valid response"),
    }
}
