//! The server side every protocol's simulator shares: a listener with a deep
//! accept queue, a cap on connections served at once, counters, and a stop
//! that ends the listener and every connection. What a connection is served
//! is the protocol's.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

/// Faults a simulator injects for tests, the same for every protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Faults {
    /// Added before every batch of replies.
    pub latency: Duration,
    /// Every Nth request gets no reply (0: never).
    pub drop_every: u64,
    /// Close each connection after it has served N requests (0: never).
    pub disconnect_after: u64,
    /// Every Nth reply is malformed (0: never).
    pub malformed_every: u64,
    /// A connection that sends nothing for this long is closed (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Connections served at once; one more is accepted and closed at once.
    pub max_connections: usize,
}

/// Default idle timeout: long enough for any test or benchmark pause, short
/// enough that abandoned connections do not pile up.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default connection cap: above the benchmark's 10,000 idle connections, below
/// what exhausts a raised descriptor limit (about 9 KB of memory each).
pub const MAX_CONNECTIONS: usize = 20_000;

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency: Duration::ZERO,
            drop_every: 0,
            disconnect_after: 0,
            malformed_every: 0,
            idle_timeout: Some(IDLE_TIMEOUT),
            max_connections: MAX_CONNECTIONS,
        }
    }
}

impl Faults {
    /// Whether request number `n` (from 1) goes unanswered.
    pub fn drops(&self, n: u64) -> bool {
        self.drop_every > 0 && n.is_multiple_of(self.drop_every)
    }

    /// Whether reply number `n` (from 1) is sent malformed.
    pub fn malforms(&self, n: u64) -> bool {
        self.malformed_every > 0 && n.is_multiple_of(self.malformed_every)
    }

    /// Whether a connection that served `served` requests is closed now.
    pub fn disconnects(&self, served: u64) -> bool {
        self.disconnect_after > 0 && served >= self.disconnect_after
    }

    /// Reads more of a connection's requests into `input`: `false` when the
    /// connection ended, failed, or stayed idle past the timeout (counted).
    pub async fn read(&self, socket: &mut TcpStream, input: &mut bytes::BytesMut, stats: &SimulatorStats) -> bool {
        use tokio::io::AsyncReadExt;
        let read = socket.read_buf(input);
        let read = match self.idle_timeout {
            Some(idle) => match tokio::time::timeout(idle, read).await {
                Ok(read) => read,
                Err(_) => {
                    stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
            },
            None => read.await,
        };
        matches!(read, Ok(n) if n > 0)
    }

    /// Writes a batch of replies after the configured latency; `false` when the connection failed.
    pub async fn write(&self, socket: &mut TcpStream, output: &mut Vec<u8>) -> bool {
        use tokio::io::AsyncWriteExt;
        if output.is_empty() {
            return true;
        }
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let written = socket.write_all(output).await.is_ok();
        output.clear();
        written
    }
}

/// Counters for tests and the CLI.
#[derive(Debug, Default)]
pub struct SimulatorStats {
    pub requests: AtomicU64,
    /// Connections accepted so far.
    pub connections: AtomicU64,
    /// Connections open now.
    pub open: AtomicUsize,
    /// Connections closed at once because the cap was reached.
    pub refused: AtomicU64,
    /// Connections closed for being idle.
    pub idle_closed: AtomicU64,
}

/// A running simulator; dropping it or calling `stop` ends its listener and connections.
pub struct Simulator {
    local_addr: std::net::SocketAddr,
    stop: watch::Sender<bool>,
    stats: Arc<SimulatorStats>,
}

impl Simulator {
    /// Binds `addr` (port 0 picks a free port) and, on the current tokio runtime,
    /// serves each accepted connection with `serve` while fewer than
    /// `max_connections` are open (one more is closed at once).
    pub async fn serve<F, Fut>(addr: &str, max_connections: usize, serve: F) -> std::io::Result<Simulator>
    where
        F: Fn(TcpStream, Arc<SimulatorStats>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = listen(addr).await?;
        let local_addr = listener.local_addr()?;
        let stats = Arc::new(SimulatorStats::default());
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(accept_loop(listener, max_connections, stats.clone(), stopped, serve));
        Ok(Simulator { local_addr, stop, stats })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> &SimulatorStats {
        &self.stats
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Changes when the simulator stops: for tasks of its own beside the connections (a UDP socket).
    pub fn stopped(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Load tests open thousands of connections at once: a deep accept queue keeps
/// their handshakes from being dropped (and retried a second later) while the
/// accept loop catches up. The kernel caps the depth at `somaxconn`.
const LISTEN_BACKLOG: u32 = 65_535;

async fn listen(addr: &str) -> std::io::Result<TcpListener> {
    let mut last_error = None;
    for address in tokio::net::lookup_host(addr).await? {
        let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        // As std and tokio do: on Unix only, where it just allows rebinding over TIME_WAIT.
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        match socket.bind(address).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error
        .unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, "no address to listen on")))
}

async fn accept_loop<F, Fut>(
    listener: TcpListener,
    max_connections: usize,
    stats: Arc<SimulatorStats>,
    mut stopped: watch::Receiver<bool>,
    serve: F,
) where
    F: Fn(TcpStream, Arc<SimulatorStats>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            accepted = listener.accept() => {
                let Ok((socket, _)) = accepted else {
                    // Out of descriptors or similar: back off briefly rather than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                if stats.open.load(Ordering::Relaxed) >= max_connections {
                    // Closing at once tells the client, where leaving it in the backlog would hang it.
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    drop(socket);
                    continue;
                }
                let _ = socket.set_nodelay(true);
                stats.connections.fetch_add(1, Ordering::Relaxed);
                stats.open.fetch_add(1, Ordering::Relaxed);
                let served = serve(socket, stats.clone());
                let stats = stats.clone();
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    // Stopping wins over a request that arrives at the same time: a stopped simulator answers nothing.
                    tokio::select! {
                        biased;
                        _ = stopped.changed() => {}
                        _ = served => {}
                    }
                    stats.open.fetch_sub(1, Ordering::Relaxed);
                });
            }
        }
    }
}
