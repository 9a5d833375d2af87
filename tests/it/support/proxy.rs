//! A TCP proxy on loopback that the test controls, put between hosts and PostgreSQL:
//! it forwards every connection to the database and, when told, resets them all or
//! one of them, refuses new ones, delays what it forwards, or lets a transaction's
//! `COMMIT` through and cuts the connection before its answer comes back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Debug, Default)]
struct Shared {
    /// Live connections by number; aborting one's task resets both of its sockets.
    live: Mutex<HashMap<u64, JoinHandle<()>>>,
    accepted: AtomicU64,
    refusing: AtomicBool,
    /// Microseconds each chunk waits before it is forwarded, in either direction.
    delay_us: AtomicU64,
    /// Commits still to make and then cut off from their answer.
    commits_to_cut: AtomicU64,
    commits_cut: AtomicU64,
}

/// A `COMMIT` as a simple query: `Q`, the length of what follows, the text and a NUL.
const COMMIT: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";
/// How long a commit is given to be made before its connection is cut.
const COMMIT_TIME: Duration = Duration::from_millis(100);

/// A proxy listening on `127.0.0.1:<port>` in front of `upstream`; stops when dropped,
/// resetting every connection it holds.
#[derive(Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    upstream: String,
    shared: Arc<Shared>,
    acceptor: JoinHandle<()>,
}

impl Proxy {
    /// A proxy in front of `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("bound");
        let shared = Arc::new(Shared::default());
        let acceptor = tokio::spawn(accept(listener, upstream.to_owned(), shared.clone()));
        Proxy { addr, upstream: upstream.to_owned(), shared, acceptor }
    }

    /// `url` with its database server replaced by this proxy.
    pub fn route(&self, url: &str) -> String {
        assert!(url.contains(&self.upstream), "{url} does not go to {}", self.upstream);
        url.replacen(&self.upstream, &self.addr.to_string(), 1)
    }

    /// Resets every live connection (both sides see `ECONNRESET`); how many there were.
    pub fn cut_all(&self) -> usize {
        let cut: Vec<JoinHandle<()>> = lock(&self.shared.live).drain().map(|(_, task)| task).collect();
        cut.iter().for_each(JoinHandle::abort);
        cut.len()
    }

    /// Resets the live connection `pick` chooses among `live` (an index below it);
    /// whether there was one to cut.
    pub fn cut_one(&self, pick: impl FnOnce(usize) -> usize) -> bool {
        let mut live = lock(&self.shared.live);
        let mut numbers: Vec<u64> = live.keys().copied().collect();
        if numbers.is_empty() {
            return false;
        }
        numbers.sort_unstable();
        let chosen = numbers[pick(numbers.len()) % numbers.len()];
        live.remove(&chosen).is_some_and(|task| {
            task.abort();
            true
        })
    }

    /// While on, every new connection is reset as soon as it is made, as a database
    /// that is down would refuse it.
    pub fn set_refusing(&self, refusing: bool) {
        self.shared.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Every chunk forwarded from now on, either way, waits `delay` first.
    pub fn set_delay(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.shared.delay_us.store(micros, Ordering::SeqCst);
    }

    /// The next `count` commits, on any connection, are forwarded and made, and then
    /// their connection is cut before the answer comes back: the host cannot know
    /// whether its transaction was committed (it was).
    pub fn cut_after_commits(&self, count: u64) {
        self.shared.commits_to_cut.store(count, Ordering::SeqCst);
    }

    /// Commits cut off from their answer so far.
    pub fn commits_cut(&self) -> u64 {
        self.shared.commits_cut.load(Ordering::SeqCst)
    }

    /// Connections accepted so far (refused ones included).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections being forwarded now.
    pub fn live(&self) -> usize {
        lock(&self.shared.live).len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut_all();
    }
}

async fn accept(listener: TcpListener, upstream: String, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors, say: let the connections end before accepting more.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let number = shared.accepted.fetch_add(1, Ordering::SeqCst);
        // A zero linger makes closing a socket send RST: what a crashed server's peer sees.
        let _ = client.set_zero_linger();
        if shared.refusing.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let mut live = lock(&shared.live);
        let task = tokio::spawn(forward(client, upstream.clone(), shared.clone(), number));
        live.insert(number, task);
    }
}

/// Forwards one connection both ways until either side closes or the test cuts it.
async fn forward(client: TcpStream, upstream: String, shared: Arc<Shared>, number: u64) {
    if let Ok(server) = TcpStream::connect(&upstream).await {
        let _ = server.set_zero_linger();
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        // Set once a commit went through that must not be answered.
        let mute = AtomicBool::new(false);
        tokio::select! {
            () = pump(client_read, server_write, &shared, Direction::ToServer(&mute)) => {}
            () = pump(server_read, client_write, &shared, Direction::ToClient(&mute)) => {}
        }
    }
    lock(&shared.live).remove(&number);
}

/// Which way a pump forwards, and the connection's mute flag.
#[derive(Clone, Copy)]
enum Direction<'a> {
    ToServer(&'a AtomicBool),
    ToClient(&'a AtomicBool),
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: &Shared,
    direction: Direction<'_>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let chunk = &buffer[..read];
        let delay = shared.delay_us.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_micros(delay)).await;
        }
        let cut_after = match direction {
            Direction::ToServer(mute) => {
                let commits = chunk.windows(COMMIT.len()).any(|window| window == COMMIT);
                let cut = commits
                    && shared
                        .commits_to_cut
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1))
                        .is_ok();
                if cut {
                    mute.store(true, Ordering::SeqCst);
                }
                cut
            }
            // Whatever the server says once the commit is muted never arrives.
            Direction::ToClient(mute) if mute.load(Ordering::SeqCst) => continue,
            Direction::ToClient(_) => false,
        };
        if to.write_all(chunk).await.is_err() {
            return;
        }
        if cut_after {
            tokio::time::sleep(COMMIT_TIME).await;
            shared.commits_cut.fetch_add(1, Ordering::SeqCst);
            return;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
