//! Upstream sessions kept for reuse, as PgBouncer's session mode keeps its server
//! connections: a client session that ends cleanly (Terminate, outside a transaction, with
//! every answer delivered) leaves its upstream session behind. phigate resets it with
//! `DISCARD ALL` and keeps it for the next client whose login would send exactly the same
//! startup parameters: the same user, role and attributes (tagged), the same client
//! settings and application_name. A connection storm then costs no backend process per
//! client.
//!
//! When sessions run on one runtime per thread, a kept session is handed only to the
//! thread that kept it (its socket belongs to that thread's runtime). It is checked for a closed socket or an unexpected message before it
//! is handed out, and is closed after `idle_for` unused.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

use super::connect::Connected;
use crate::protocol::backend::{Backend, decode_parameter_status};
use crate::protocol::build;
use crate::protocol::frame::split_frame;

/// The largest message a reset may answer with.
const RESET_MESSAGE_LIMIT: usize = 1 << 20;

/// Kept sessions by thread (when they stay on theirs) and login key.
type Kept = HashMap<(Option<ThreadId>, String), Vec<Idle>>;

/// Kept upstream sessions, by thread and startup parameters.
pub struct Pool {
    idle: Mutex<Kept>,
    /// sessions run on one runtime per thread: a kept session stays on its thread
    per_thread: AtomicBool,
    /// how many may be kept in all (0: none)
    size: usize,
    /// how long one is kept unused
    idle_for: Duration,
}

struct Idle {
    connected: Connected,
    since: Instant,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("size", &self.size)
            .field("idle_for", &self.idle_for)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool keeping at most `size` sessions, each for at most `idle_for` unused.
    pub fn new(size: usize, idle_for: Duration) -> Self {
        Self {
            idle: Mutex::new(HashMap::new()),
            per_thread: AtomicBool::new(false),
            size,
            idle_for,
        }
    }

    /// The key of a login that sends `extra` startup parameters.
    pub fn key(extra: &[(&str, &str)]) -> String {
        let mut key = String::new();
        for (name, value) in extra {
            key.push_str(name);
            key.push('\0');
            key.push_str(value);
            key.push('\0');
        }
        key
    }

    /// From now on, a kept session is handed only to the thread that kept it (sessions
    /// run on one single-threaded runtime per thread).
    pub fn per_thread(&self) {
        self.per_thread.store(true, Ordering::Relaxed);
    }

    /// The map's key for a login with `key` on this thread.
    fn slot(&self, key: String) -> (Option<ThreadId>, String) {
        let thread = (self.per_thread.load(Ordering::Relaxed)).then(|| std::thread::current().id());
        (thread, key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A kept session for a login with `key` on this thread, still open and quiet.
    pub async fn take(&self, key: &str) -> Option<Connected> {
        if self.size == 0 {
            return None;
        }
        let me = self.slot(key.to_owned());
        loop {
            let idle = {
                let mut idle = self.lock();
                let kept = idle.get_mut(&me)?;
                let found = kept.pop();
                if kept.is_empty() {
                    idle.remove(&me);
                }
                found?
            };
            let mut connected = idle.connected;
            if idle.since.elapsed() < self.idle_for && quiet(&mut connected).await {
                return Some(connected);
            }
        }
    }

    /// Resets a session a client left cleanly and keeps it for a login with `key`;
    /// ends it instead (Terminate) when the reset fails or the pool is full, or keeps
    /// none. `timeout` bounds the reset.
    pub async fn give_back(&self, key: String, mut connected: Connected, timeout: Duration) {
        self.expire();
        let room = self.size > 0 && self.lock().values().map(Vec::len).sum::<usize>() < self.size;
        let reset = room
            && tokio::time::timeout(timeout, reset(&mut connected))
                .await
                .is_ok_and(|r| r.is_ok());
        if !reset {
            let mut bye = BytesMut::new();
            build::terminate(&mut bye);
            let _ = tokio::time::timeout(timeout, connected.stream.write_all(&bye)).await;
            return;
        }
        let me = self.slot(key);
        self.lock().entry(me).or_default().push(Idle {
            connected,
            since: Instant::now(),
        });
    }

    /// Closes the sessions kept longer than `idle_for` (their sockets are dropped).
    pub fn expire(&self) {
        let idle_for = self.idle_for;
        self.lock().retain(|_, kept| {
            kept.retain(|i| i.since.elapsed() < idle_for);
            !kept.is_empty()
        });
    }
}

/// True when nothing arrived on the kept session (a closed socket, or a message the
/// server sent on its own, such as a FATAL termination, means it is not reusable).
async fn quiet(connected: &mut Connected) -> bool {
    std::future::poll_fn(|cx| {
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        Poll::Ready(
            Pin::new(&mut connected.stream)
                .poll_read(cx, &mut buf)
                .is_pending(),
        )
    })
    .await
}

/// Why a kept session could not be reset.
#[derive(Debug)]
struct ResetFailed;

/// `DISCARD ALL` (which also resets every setting to the login's own, and with them the
/// tagged ones), read to its ReadyForQuery; the parameters the server reports as reset
/// replace the login's.
async fn reset(connected: &mut Connected) -> Result<(), ResetFailed> {
    let mut out = BytesMut::new();
    build::query("DISCARD ALL", &mut out);
    connected
        .stream
        .write_all(&out)
        .await
        .map_err(|_| ResetFailed)?;
    let buf = &mut connected.leftover;
    loop {
        let Some(frame) = split_frame(buf, RESET_MESSAGE_LIMIT).map_err(|_| ResetFailed)? else {
            if connected
                .stream
                .read_buf(buf)
                .await
                .map_err(|_| ResetFailed)?
                == 0
            {
                return Err(ResetFailed);
            }
            continue;
        };
        match Backend::decode(&frame).map_err(|_| ResetFailed)? {
            Backend::ParameterStatus(body) => {
                let (name, value) = decode_parameter_status(body).map_err(|_| ResetFailed)?;
                match connected.parameters.iter_mut().find(|(n, _)| n == name) {
                    Some((_, v)) => value.clone_into(v),
                    None => connected
                        .parameters
                        .push((name.to_owned(), value.to_owned())),
                }
            }
            Backend::ReadyForQuery(b'I') if buf.is_empty() => return Ok(()),
            Backend::CommandComplete(_) | Backend::Other => {}
            _ => return Err(ResetFailed),
        }
    }
}
