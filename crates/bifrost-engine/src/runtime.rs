//! The runtime-thread driver: one tokio task per link owns the socket and the
//! [`Session`], and calls reach it through a channel. Serial lines use it (their
//! inter-frame timing must not depend on a busy JavaScript thread), as do
//! platforms without the event-loop driver and users who ask for isolation.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bifrost_core::{Error, ErrorCode, Result};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::link::{Framing, Link, LinkConfig, Stats};
use crate::session::{Completion, Driver, Job, Outcome, Session};

/// A byte stream a link can run over (TCP socket, serial port, ...).
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

pub type BoxStream = Box<dyn Stream>;
pub type ConnectFuture = Pin<Box<dyn Future<Output = Result<BoxStream>> + Send>>;

/// Opens a new connection; called again on every reconnect.
pub type Connector = Box<dyn Fn() -> ConnectFuture + Send + Sync>;

/// Connects to `addr` (`host:port`) with `TCP_NODELAY` set. A host name that does
/// not resolve is `ENOTFOUND`; each resolved address is tried in turn.
pub async fn tcp_connect(addr: &str) -> Result<tokio::net::TcpStream> {
    let resolved = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| Error::new(ErrorCode::NotFound, format!("cannot resolve {addr}: {e}")))?;
    let mut last = Error::new(ErrorCode::NotFound, format!("{addr} resolves to no address"));
    for address in resolved {
        match tokio::net::TcpStream::connect(address).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => {
                last = Error::from(e);
                last.message = format!("connect to {addr}: {}", last.message);
            }
        }
    }
    Err(last)
}

/// A [`Connector`] for [`tcp_connect`].
pub fn tcp_connector(addr: String) -> Connector {
    Box::new(move || {
        let addr = addr.clone();
        Box::pin(async move { Ok(Box::new(tcp_connect(&addr).await?) as BoxStream) })
    })
}

/// Bounds a connection attempt by the link's connect timeout.
pub async fn within<S>(limit: Duration, attempt: impl Future<Output = Result<S>>) -> Result<S> {
    tokio::time::timeout(limit, attempt)
        .await
        .unwrap_or_else(|_| Err(Error::timeout(format!("connect timed out after {} ms", limit.as_millis()))))
}

enum Command<F: Framing> {
    Run(Box<dyn Job<F>>, Option<Duration>, Box<dyn Completion>),
    Close(Box<dyn Completion>),
}

/// A handle to one link's task. The task ends on `close` or when the last handle is dropped.
pub struct RuntimeDriver<F: Framing> {
    commands: mpsc::UnboundedSender<Command<F>>,
    stats: Arc<Stats>,
}

impl<F> RuntimeDriver<F>
where
    F: Framing + Send + 'static,
    F::Request: Send,
    F::Reply: Send,
{
    /// Spawns the link's task on the current runtime and connects once (with the
    /// protocol's set-up), so a wrong address fails here rather than on the first call.
    pub async fn open(framing: F, config: LinkConfig, connector: Connector) -> Result<Self> {
        let link = Link::new(framing, config, Instant::now());
        let stats = link.stats().clone();
        let (commands, receiver) = mpsc::unbounded_channel();
        let (opened, first_connect) = oneshot::channel();
        let task = Task {
            session: Session::new(link),
            connector,
            stream: None,
            connecting: None,
            opened: Some(opened),
            read_chunk: MIN_READ_CHUNK,
        };
        tokio::spawn(task.serve(receiver));
        first_connect.await.map_err(|_| Error::closed("the connection was closed"))??;
        Ok(RuntimeDriver { commands, stats })
    }
}

impl<F: Framing> Driver<F> for RuntimeDriver<F> {
    fn run(&self, job: Box<dyn Job<F>>, timeout: Option<Duration>, done: Box<dyn Completion>) {
        if let Err(mpsc::error::SendError(Command::Run(_, _, done))) =
            self.commands.send(Command::Run(job, timeout, done))
        {
            done.complete(Outcome::Closed);
        }
    }

    fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    fn close(&self, done: Box<dyn Completion>) {
        if let Err(mpsc::error::SendError(Command::Close(done))) = self.commands.send(Command::Close(done)) {
            done.complete(Outcome::Closed);
        }
    }
}

struct Task<F: Framing> {
    session: Session<F>,
    connector: Connector,
    stream: Option<BoxStream>,
    connecting: Option<ConnectFuture>,
    /// `open` waits for the first connection to be set up, or to fail.
    opened: Option<oneshot::Sender<Result<()>>>,
    /// Room made free before each read: doubles while reads fill it, so busy links read in few syscalls.
    read_chunk: usize,
}

impl<F: Framing> Task<F> {
    async fn serve(mut self, mut commands: mpsc::UnboundedReceiver<Command<F>>) {
        loop {
            let wants = self.session.poll(Instant::now());
            if let Some(outcome) = self.opened.is_some().then(|| self.session.link().opened()).flatten() {
                self.opened.take().map(|opened| opened.send(outcome));
            }
            if wants.disconnect {
                self.stream = None;
            }
            if wants.connect {
                let limit = self.session.link().config().connect_timeout;
                self.connecting = Some(Box::pin(within(limit, (self.connector)())));
            }
            self.flush(wants.wake_at).await;
            let reading = self.stream.is_some();
            let connecting = self.connecting.is_some();
            let Task { session, stream, connecting: attempt, read_chunk, .. } = &mut self;
            tokio::select! {
                command = commands.recv() => {
                    let Some(command) = command else { break };
                    // Take what is already queued too, so one write carries many requests.
                    let mut next = Some(command);
                    while let Some(command) = next {
                        match command {
                            Command::Run(job, timeout, done) => self.session.run(Instant::now(), job, timeout, done),
                            Command::Close(done) => {
                                self.farewell().await;
                                self.shutdown(&mut commands);
                                done.complete(Outcome::Closed);
                                return;
                            }
                        }
                        next = commands.try_recv().ok();
                    }
                },
                read = read_some(stream, session.read_buf(), read_chunk), if reading => {
                    let now = Instant::now();
                    match read {
                        Ok(0) => self.lost(now, Error::conn_reset("the device closed the connection")),
                        Ok(_) => self.session.received(now),
                        Err(e) => self.lost(now, Error::conn_reset(format!("connection lost: {e}"))),
                    }
                },
                attempt = finish_connect(attempt), if connecting => self.connected(attempt),
                _ = sleep_until(wants.wake_at), if wants.wake_at.is_some() => {}
            }
        }
        self.shutdown(&mut commands);
    }

    fn lost(&mut self, now: Instant, error: Error) {
        self.stream = None;
        self.session.lost(now, error);
    }

    fn connected(&mut self, attempt: Result<BoxStream>) {
        self.connecting = None;
        let now = Instant::now();
        match attempt {
            Ok(stream) => {
                self.stream = Some(stream);
                self.session.connected(now);
            }
            Err(e) => self.session.connect_failed(now, e),
        }
    }

    /// Writes what the link encoded. A device that stops reading must not hold
    /// the task past the requests' deadlines.
    async fn flush(&mut self, wake_at: Option<Instant>) {
        let Some(stream) = self.stream.as_mut() else { return };
        let outgoing = self.session.outgoing();
        if outgoing.is_empty() {
            return;
        }
        let len = outgoing.len();
        let limit = wake_at.unwrap_or_else(|| Instant::now() + self.session.link().config().request_timeout);
        let written = tokio::time::timeout_at(limit.into(), stream.write_all(outgoing)).await;
        let now = Instant::now();
        match written {
            Ok(Ok(())) => self.session.wrote(len, now),
            Ok(Err(e)) => self.lost(now, Error::conn_reset(format!("write failed: {e}"))),
            Err(_) => self.lost(now, Error::timeout("the device stopped reading requests")),
        }
    }

    /// Writes the protocol's farewell, giving a slow socket a moment, never more.
    async fn farewell(&mut self) {
        let farewell = self.session.farewell();
        if let (Some(stream), false) = (self.stream.as_mut(), farewell.is_empty()) {
            let _ = tokio::time::timeout(Duration::from_millis(100), stream.write_all(&farewell)).await;
        }
    }

    fn shutdown(&mut self, commands: &mut mpsc::UnboundedReceiver<Command<F>>) {
        let now = Instant::now();
        self.stream = None;
        self.connecting = None;
        self.session.close(now);
        commands.close();
        while let Ok(command) = commands.try_recv() {
            match command {
                Command::Run(job, timeout, done) => self.session.run(now, job, timeout, done),
                Command::Close(done) => done.complete(Outcome::Closed),
            }
        }
        if let Some(opened) = self.opened.take() {
            let _ = opened.send(Err(Error::closed("the connection was closed")));
        }
    }
}

async fn finish_connect(connecting: &mut Option<ConnectFuture>) -> Result<BoxStream> {
    match connecting {
        Some(attempt) => attempt.as_mut().await,
        None => std::future::pending().await,
    }
}

const MIN_READ_CHUNK: usize = 512;
const MAX_READ_CHUNK: usize = 16 * 1024;

async fn read_some(stream: &mut Option<BoxStream>, buf: &mut BytesMut, chunk: &mut usize) -> std::io::Result<usize> {
    match stream {
        Some(stream) => {
            if buf.capacity() - buf.len() < *chunk / 2 {
                buf.reserve(*chunk);
            }
            let room = buf.capacity() - buf.len();
            let n = stream.read_buf(buf).await?;
            if n == room {
                *chunk = (*chunk * 2).min(MAX_READ_CHUNK);
            }
            Ok(n)
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
