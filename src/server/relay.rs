//! The I/O driver of an authenticated session: moves bytes between the sockets and the
//! [`Session`] state machine, and keeps its clocks (idle timeout, maximum lifetime).

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::stream::Stream;
use crate::metrics::Metrics;
use crate::protocol::build::{self, PgError};
use crate::protocol::frame::split_frame;
use crate::session::{Event, Outbound, Phase, Session};

/// The largest backend message: PostgreSQL's own limit is 1 GiB.
const UPSTREAM_MESSAGE_LIMIT: usize = (1 << 30) + 1024;
/// Stop reading a side while this much is queued for the other.
const HIGH_WATER: usize = 1 << 20;
/// Read buffers keep this much room; a buffer grown past `SHRINK_ABOVE` by a large message
/// is released once empty, so an idle session holds little memory.
const READ_CHUNK: usize = 8 << 10;
const SHRINK_ABOVE: usize = 256 << 10;
/// Time allowed to deliver the last messages of a closing session.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Session limits.
pub(super) struct Limits {
    pub max_message_size: usize,
    pub idle_timeout: Duration,
    pub lifetime_ends: Instant,
}

/// A session's two connections and the bytes already read from each.
pub(super) struct Ends {
    pub client: Stream,
    pub client_buf: BytesMut,
    pub upstream: Stream,
    pub upstream_buf: BytesMut,
}

fn keep_room(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > SHRINK_ABOVE {
        *buf = BytesMut::with_capacity(READ_CHUNK);
    } else if buf.capacity() - buf.len() < READ_CHUNK / 2 {
        buf.reserve(READ_CHUNK);
    }
}

fn release(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > SHRINK_ABOVE {
        *buf = BytesMut::new();
    }
}

/// Relays until either side closes or the session ends.
pub(super) async fn relay(ends: Ends, mut session: Session, limits: Limits, metrics: &Metrics) {
    let Ends {
        client,
        mut client_buf,
        upstream,
        mut upstream_buf,
    } = ends;
    let (mut client_r, mut client_w) = tokio::io::split(client);
    let (mut upstream_r, mut upstream_w) = tokio::io::split(upstream);
    let mut out = Outbound::default();
    let mut client_unflushed = false;
    let mut upstream_unflushed = false;
    let mut last_activity = Instant::now();
    // Messages already buffered during login.
    let mut pending_input = !client_buf.is_empty() || !upstream_buf.is_empty();

    loop {
        if pending_input {
            pending_input = false;
            let now = std::time::Instant::now();
            drain_client(&mut client_buf, &mut session, &mut out, &limits, now);
            drain_upstream(&mut upstream_buf, &mut session, &mut out, now);
        }
        for event in out.events.drain(..) {
            match event {
                Event::Statement { kind, elapsed } => metrics.statement(kind, elapsed),
                Event::ProtocolViolation => metrics.protocol_errors.inc(),
            }
        }
        if session.phase() == Phase::Closed {
            break;
        }
        let open = session.phase() == Phase::Open;
        let idle = open && !session.awaiting_upstream();
        let idle_deadline = last_activity + limits.idle_timeout;
        keep_room(&mut client_buf);
        keep_room(&mut upstream_buf);

        tokio::select! {
            r = write_or_flush(&mut client_w, &out.client), if !out.client.is_empty() || client_unflushed => match r {
                Ok(Written::Bytes(n)) => {
                    out.client.advance(n);
                    metrics.client_bytes_out.inc_by(n as u64);
                    client_unflushed = true;
                    release(&mut out.client);
                }
                Ok(Written::Flushed) => client_unflushed = false,
                Err(_) => return close_upstream(&mut upstream_w, out.upstream).await,
            },
            r = write_or_flush(&mut upstream_w, &out.upstream), if !out.upstream.is_empty() || upstream_unflushed => match r {
                Ok(Written::Bytes(n)) => {
                    out.upstream.advance(n);
                    metrics.upstream_bytes_out.inc_by(n as u64);
                    upstream_unflushed = true;
                    release(&mut out.upstream);
                }
                Ok(Written::Flushed) => upstream_unflushed = false,
                Err(_) => upstream_lost(&mut session, &mut out, metrics),
            },
            r = client_r.read_buf(&mut client_buf), if open && out.upstream.len() < HIGH_WATER => match r {
                Ok(n) if n > 0 => {
                    metrics.client_bytes_in.inc_by(n as u64);
                    last_activity = Instant::now();
                    drain_client(&mut client_buf, &mut session, &mut out, &limits, std::time::Instant::now());
                }
                // The client went away: its upstream session ends too (an open transaction
                // is rolled back by the server).
                _ => {
                    build::terminate(&mut out.upstream);
                    return close_upstream(&mut upstream_w, out.upstream).await;
                }
            },
            r = upstream_r.read_buf(&mut upstream_buf), if out.client.len() < HIGH_WATER => match r {
                Ok(n) if n > 0 => {
                    metrics.upstream_bytes_in.inc_by(n as u64);
                    last_activity = Instant::now();
                    drain_upstream(&mut upstream_buf, &mut session, &mut out, std::time::Instant::now());
                }
                _ => upstream_lost(&mut session, &mut out, metrics),
            },
            () = tokio::time::sleep_until(idle_deadline), if idle => {
                metrics.idle_timeouts.inc();
                let in_tx = session.tx_status() != b'I';
                let err = PgError::fatal("57P05", format!(
                    "terminating connection due to idle timeout ({}){}",
                    humantime::format_duration(limits.idle_timeout),
                    if in_tx { "; the open transaction was rolled back" } else { "" },
                ))
                .with_hint("reconnect to continue");
                end_session(&mut session, &mut out, &err);
            },
            () = tokio::time::sleep_until(limits.lifetime_ends), if idle => {
                let err = PgError::fatal("57P01", "terminating connection: the session reached its maximum lifetime")
                    .with_hint("reconnect to continue");
                end_session(&mut session, &mut out, &err);
            },
        }
    }
    // Deliver what is left (the last responses, a FATAL error), then close both sides.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if !out.client.is_empty() {
            let _ = client_w.write_all(&out.client).await;
        }
        let _ = client_w.flush().await;
        let _ = client_w.shutdown().await;
    })
    .await;
    close_upstream(&mut upstream_w, out.upstream).await;
}

enum Written {
    Bytes(usize),
    Flushed,
}

/// Writes some of `buf`, or flushes when it is empty. Cancel-safe: a write that has not
/// completed has consumed nothing.
async fn write_or_flush<W: AsyncWrite + Unpin>(w: &mut W, buf: &[u8]) -> std::io::Result<Written> {
    if buf.is_empty() {
        return w.flush().await.map(|()| Written::Flushed);
    }
    match w.write(buf).await? {
        0 => Err(std::io::ErrorKind::WriteZero.into()),
        n => Ok(Written::Bytes(n)),
    }
}

fn end_session(session: &mut Session, out: &mut Outbound, err: &PgError) {
    session.terminate(err, out);
    build::terminate(&mut out.upstream);
}

fn upstream_lost(session: &mut Session, out: &mut Outbound, metrics: &Metrics) {
    metrics.upstream_errors.inc();
    tracing::warn!("upstream connection lost");
    session.fail_upstream(
        PgError::fatal("08006", "the connection to the database server was lost").with_hint(
            "the statement in progress may or may not have completed; reconnect and check",
        ),
        out,
    );
    out.upstream.clear();
}

async fn close_upstream<W: AsyncWrite + Unpin>(w: &mut W, rest: BytesMut) {
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if !rest.is_empty() {
            let _ = w.write_all(&rest).await;
        }
        let _ = w.shutdown().await;
    })
    .await;
}

fn drain_client(
    buf: &mut BytesMut,
    session: &mut Session,
    out: &mut Outbound,
    limits: &Limits,
    now: std::time::Instant,
) {
    while session.phase() == Phase::Open {
        match split_frame(buf, limits.max_message_size) {
            Ok(Some(frame)) => session.on_frontend(frame, now, out),
            Ok(None) => break,
            Err(e) => {
                buf.clear();
                session.protocol_violation(&e, out);
            }
        }
    }
}

fn drain_upstream(
    buf: &mut BytesMut,
    session: &mut Session,
    out: &mut Outbound,
    now: std::time::Instant,
) {
    while session.phase() != Phase::Closed {
        match split_frame(buf, UPSTREAM_MESSAGE_LIMIT) {
            Ok(Some(frame)) => session.on_backend(frame, now, out),
            Ok(None) => break,
            Err(e) => {
                buf.clear();
                session.fail_upstream(
                    PgError::fatal("08P01", format!("upstream protocol violation: {e}")),
                    out,
                );
            }
        }
    }
}
