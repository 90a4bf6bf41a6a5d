//! A small TCP proxy for the HA tests, standing in for an L4 load balancer in front of the
//! instances (or for the network between one instance and PostgreSQL). Each new connection
//! goes to the next live backend (round-robin, or the backend a client address is pinned to),
//! skipping backends marked down and backends that refuse; bytes are copied both ways until
//! either side closes. A backend can be marked down, which also cuts its open connections:
//! a dead instance behind a balancer, or (for a proxy in front of PostgreSQL) a partition.
//! While every backend is down or refusing, new connections are accepted and closed at once.
//!
//! It runs on its own small tokio runtime, so synchronous tests (and the real-client
//! harness) can use it; it depends on nothing but tokio, so other test crates can include
//! this file alone (`#[path = "ha_cluster/proxy.rs"] mod proxy;`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// One place connections can go.
struct Backend {
    addr: SocketAddr,
    up: AtomicBool,
    /// Connections open to this backend now.
    live: AtomicUsize,
    /// Connections ever made to this backend.
    total: AtomicUsize,
    /// Bumped to cut every connection open to this backend.
    cut: watch::Sender<u64>,
}

#[derive(Default)]
struct Shared {
    backends: Mutex<Vec<Arc<Backend>>>,
    next: AtomicUsize,
    pins: Mutex<HashMap<IpAddr, usize>>,
    /// Where connections go first while it is up, whatever their source.
    preferred: Mutex<Option<usize>>,
}

impl Shared {
    /// The backends to try for a client at `peer`, in order: its pinned one (if any), then
    /// round-robin from the next in turn. Down backends are left out.
    fn order(&self, peer: IpAddr) -> Vec<Arc<Backend>> {
        let backends = self.backends.lock().unwrap().clone();
        let count = backends.len();
        if count == 0 {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
        let pinned = self.pins.lock().unwrap().get(&peer).copied();
        let pinned = pinned.or(*self.preferred.lock().unwrap());
        let mut order: Vec<usize> = pinned.into_iter().filter(|i| *i < count).collect();
        order.extend(
            (0..count)
                .map(|k| (start + k) % count)
                .filter(|i| Some(*i) != pinned),
        );
        order
            .into_iter()
            .map(|i| backends[i].clone())
            .filter(|b| b.up.load(Ordering::SeqCst))
            .collect()
    }
}

/// Decrements a backend's live count when a forwarded connection ends.
struct LiveGuard(Arc<Backend>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct Proxy {
    addr: SocketAddr,
    control: ProxyControl,
    runtime: Option<tokio::runtime::Runtime>,
}

/// The switches of a proxy, cloneable into other threads (e.g. a loadgen restart hook).
#[derive(Clone)]
pub struct ProxyControl {
    shared: Arc<Shared>,
}

impl std::ops::Deref for Proxy {
    type Target = ProxyControl;
    fn deref(&self) -> &ProxyControl {
        &self.control
    }
}

impl Proxy {
    /// A proxy on a free loopback port, with no backends yet (see `add_backend`).
    pub fn start() -> Proxy {
        Proxy::start_on("127.0.0.1:0".parse().unwrap())
    }

    /// A proxy listening on `listen` (port 0: a free one).
    pub fn start_on(listen: SocketAddr) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-proxy")
            .enable_all()
            .build()
            .expect("a runtime for the proxy");
        let listener = runtime
            .block_on(TcpListener::bind(listen))
            .unwrap_or_else(|e| panic!("the proxy cannot listen on {listen}: {e}"));
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let serving = shared.clone();
        runtime.spawn(async move {
            while let Ok((client, peer)) = listener.accept().await {
                tokio::spawn(handle(serving.clone(), client, peer.ip()));
            }
        });
        Proxy {
            addr,
            control: ProxyControl { shared },
            runtime: Some(runtime),
        }
    }

    /// A proxy on a free loopback port forwarding to `backends`.
    pub fn to(backends: &[SocketAddr]) -> Proxy {
        let proxy = Proxy::start();
        for backend in backends {
            proxy.add_backend(*backend);
        }
        proxy
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://` and the proxy's address.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The switches, for another thread.
    pub fn control(&self) -> ProxyControl {
        self.control.clone()
    }
}

impl ProxyControl {
    /// Adds a backend (up); returns its index.
    pub fn add_backend(&self, addr: SocketAddr) -> usize {
        let mut backends = self.shared.backends.lock().unwrap();
        backends.push(Arc::new(Backend {
            addr,
            up: AtomicBool::new(true),
            live: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
            cut: watch::Sender::new(0),
        }));
        backends.len() - 1
    }

    fn backend(&self, index: usize) -> Arc<Backend> {
        self.shared.backends.lock().unwrap()[index].clone()
    }

    /// Marks backend `index` down (no new connections go there) and cuts the connections
    /// open to it; returns how many were cut.
    pub fn set_down(&self, index: usize) -> usize {
        let backend = self.backend(index);
        backend.up.store(false, Ordering::SeqCst);
        let open = backend.live.load(Ordering::SeqCst);
        backend.cut.send_modify(|generation| *generation += 1);
        open
    }

    /// Marks backend `index` up again.
    pub fn set_up(&self, index: usize) {
        self.backend(index).up.store(true, Ordering::SeqCst);
    }

    /// Connections open to backend `index` now.
    pub fn live(&self, index: usize) -> usize {
        self.backend(index).live.load(Ordering::SeqCst)
    }

    /// Connections ever forwarded to backend `index`.
    pub fn total(&self, index: usize) -> usize {
        self.backend(index).total.load(Ordering::SeqCst)
    }

    /// Sends every connection from `client` to backend `index` while it is up (a sticky
    /// session, e.g. to put two real clients on different instances).
    pub fn pin(&self, client: IpAddr, index: usize) {
        self.shared.pins.lock().unwrap().insert(client, index);
    }
}

impl ProxyControl {
    /// Sends every connection to backend `index` while it is up, the others only when it
    /// is down or refuses (an active/passive balancer).
    pub fn prefer(&self, index: usize) {
        *self.shared.preferred.lock().unwrap() = Some(index);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Not `drop`: that would block, which panics inside an async test.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Connects `client` to the first backend that is up and accepts, then copies bytes both
/// ways until either side closes or the backend is cut.
async fn handle(shared: Arc<Shared>, mut client: TcpStream, peer: IpAddr) {
    for backend in shared.order(peer) {
        // Subscribed before connecting, so a cut during the connect is not missed.
        let mut cut = backend.cut.subscribe();
        let Ok(mut server) = TcpStream::connect(backend.addr).await else {
            continue;
        };
        if !backend.up.load(Ordering::SeqCst) || cut.has_changed().unwrap_or(true) {
            continue;
        }
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        backend.live.fetch_add(1, Ordering::SeqCst);
        backend.total.fetch_add(1, Ordering::SeqCst);
        let _live = LiveGuard(backend.clone());
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
            _ = cut.changed() => {}
        }
        return;
    }
    // Nowhere to go: `client` is closed as it drops.
}
