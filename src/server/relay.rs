//! The I/O driver of an authenticated session: moves bytes between the sockets and the
//! [`Session`] state machine, and keeps its clocks (idle timeout, maximum lifetime).
//!
//! It is one hand-written poll loop over both connections: write what is queued, read what
//! has arrived, feed it to the session, and repeat until nothing can make progress. No
//! locks (the streams are not split), one task per session, and the timers are re-armed only
//! when they fire, so the hot path is syscalls and the session core. A statement's record
//! is written before the statement is forwarded; its outcome's record once the reply is on
//! its way to the client, so that record's cost is not part of the statement's latency.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};

use crate::audit::{AuditError, Auditor};
use crate::metrics::Metrics;
use crate::net::stream::Stream;
use crate::protocol::build::{self, PgError};
use crate::protocol::frame::{split_client_frame, split_frame};
use crate::session::{Event, Outbound, Phase, Session};

/// The largest backend message: PostgreSQL's own limit is 1 GiB.
const UPSTREAM_MESSAGE_LIMIT: usize = (1 << 30) + 1024;
/// Stop reading a side while this much is queued for the other.
const HIGH_WATER: usize = 1 << 20;
/// Reads go through a per-thread scratch buffer of this size and only what arrived is
/// kept, so an idle session holds no read buffer of its own (issue 14: memory per idle
/// session); a buffer grown past `SHRINK_ABOVE` by a large message is released once empty.
const READ_CHUNK: usize = 64 << 10;
const SHRINK_ABOVE: usize = 16 << 10;
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

/// The held message's audit records, appended, waiting for the sync that makes them
/// durable (`fsync` mode).
struct AuditWait {
    seqs: Vec<u64>,
    durable: Pin<Box<dyn Future<Output = Result<(), AuditError>> + Send>>,
}

/// How the relay loop ended.
enum End {
    /// The session closed (Terminate, FATAL, upstream lost): flush and close both sides.
    Closed,
    /// The client is gone: end the upstream session.
    ClientGone,
}

/// Bytes moved since the counters were last published.
#[derive(Default)]
struct Counters {
    client_in: u64,
    client_out: u64,
    upstream_in: u64,
    upstream_out: u64,
}

struct Relay<'a> {
    client: Stream,
    upstream: Stream,
    client_buf: BytesMut,
    upstream_buf: BytesMut,
    /// boxed: it is moved through the connection's futures, and each would keep a copy of
    /// its room (memory per idle session)
    session: Box<Session>,
    out: Outbound,
    limits: Limits,
    metrics: &'a Metrics,
    auditor: Option<Arc<Auditor>>,
    audit_wait: Option<AuditWait>,
    client_unflushed: bool,
    upstream_unflushed: bool,
    last_activity: Instant,
    idle_timer: Pin<Box<Sleep>>,
    lifetime_timer: Pin<Box<Sleep>>,
    /// Both timers were polled and hold the task's waker: until one fires, asking whether
    /// it has is enough (a poll registers the waker again, on every idle moment).
    timers_armed: bool,
    counters: Counters,
}

/// Reads what `stream` has (up to [`READ_CHUNK`]) and appends it to `buf`; `Ready(Ok(0))`
/// at the end of the stream.
fn poll_read_into(
    stream: &mut Stream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; READ_CHUNK]);
    }
    SCRATCH.with_borrow_mut(|scratch| {
        let mut read = tokio::io::ReadBuf::new(scratch);
        match Pin::new(stream).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                buf.extend_from_slice(read.filled());
                Poll::Ready(Ok(read.filled().len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
}

fn release(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > SHRINK_ABOVE {
        *buf = BytesMut::new();
    }
}

/// Writes as much of `buf` as the socket takes, then flushes. `Ready(Err)` when the peer is
/// gone; `Pending` when the socket is full (the waker is registered).
fn poll_send(
    stream: &mut Stream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    unflushed: &mut bool,
    sent: &mut u64,
    progress: &mut bool,
) -> Poll<io::Result<()>> {
    while !buf.is_empty() {
        match Pin::new(&mut *stream).poll_write(cx, buf) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                *sent += n as u64;
                *unflushed = true;
                *progress = true;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
    release(buf);
    if *unflushed {
        match Pin::new(&mut *stream).poll_flush(cx) {
            Poll::Ready(Ok(())) => *unflushed = false,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
    Poll::Ready(Ok(()))
}

impl Relay<'_> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        loop {
            if self.session.phase() == Phase::Closed {
                return Poll::Ready(End::Closed);
            }
            let mut progress = false;
            if let Poll::Ready(Err(_)) = poll_send(
                &mut self.client,
                cx,
                &mut self.out.client,
                &mut self.client_unflushed,
                &mut self.counters.client_out,
                &mut progress,
            ) {
                return Poll::Ready(End::ClientGone);
            }
            if let Poll::Ready(Err(_)) = poll_send(
                &mut self.upstream,
                cx,
                &mut self.out.upstream,
                &mut self.upstream_unflushed,
                &mut self.counters.upstream_out,
                &mut progress,
            ) {
                self.upstream_lost();
                continue;
            }
            // Bookkeeping waits until the replies are on their way.
            self.take_events();
            if !self.out.audit.is_empty() {
                self.write_audit(self.last_activity.into_std());
            }
            if let Some(wait) = &mut self.audit_wait
                && let Poll::Ready(result) = wait.durable.as_mut().poll(cx)
            {
                let seqs = std::mem::take(&mut wait.seqs);
                self.audit_wait = None;
                let now = Instant::now().into_std();
                self.session
                    .audited(result.map(|()| seqs), now, &mut self.out);
                self.write_audit(now);
                self.drain_client(now);
                progress = true;
            }
            if self.session.phase() == Phase::Open
                && !self.session.holding()
                && self.out.upstream.len() < HIGH_WATER
            {
                match poll_read_into(&mut self.client, cx, &mut self.client_buf) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        self.counters.client_in += n as u64;
                        self.last_activity = Instant::now();
                        self.drain_client(self.last_activity.into_std());
                        progress = true;
                    }
                    Poll::Ready(_) => return Poll::Ready(End::ClientGone),
                    Poll::Pending => {}
                }
            }
            if self.out.client.len() < HIGH_WATER {
                match poll_read_into(&mut self.upstream, cx, &mut self.upstream_buf) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        self.counters.upstream_in += n as u64;
                        self.last_activity = Instant::now();
                        self.drain_upstream(self.last_activity.into_std());
                        progress = true;
                    }
                    Poll::Ready(_) => {
                        self.upstream_lost();
                        progress = true;
                    }
                    Poll::Pending => {}
                }
            }
            // Every source polled above that had nothing registered our waker.
            if !progress && !self.poll_timers(cx) {
                return Poll::Pending;
            }
        }
    }

    /// The idle and lifetime clocks run only while the server owes the client nothing.
    /// Timers are re-armed when they fire, not on every message. True when a timer ended
    /// the session.
    fn poll_timers(&mut self, cx: &mut Context<'_>) -> bool {
        if self.session.phase() == Phase::Closing {
            return self.poll_closing(cx);
        }
        if self.session.phase() != Phase::Open
            || self.session.awaiting_upstream()
            || self.session.holding()
        {
            return false;
        }
        if self.timers_armed && !self.idle_timer.is_elapsed() && !self.lifetime_timer.is_elapsed() {
            return false;
        }
        while self.idle_timer.as_mut().poll(cx).is_ready() {
            let deadline = self.last_activity + self.limits.idle_timeout;
            if Instant::now() < deadline {
                self.idle_timer.as_mut().reset(deadline);
                continue;
            }
            self.metrics.idle_timeouts.inc();
            let in_tx = self.session.tx_status() != b'I';
            let err = PgError::fatal(
                "57P05",
                format!(
                    "terminating connection due to idle timeout ({}){}",
                    humantime::format_duration(self.limits.idle_timeout),
                    if in_tx {
                        "; the open transaction was rolled back"
                    } else {
                        ""
                    },
                ),
            )
            .with_hint("reconnect to continue");
            self.end_session(&err);
            return true;
        }
        if self.lifetime_timer.as_mut().poll(cx).is_ready() {
            let err = PgError::fatal(
                "57P01",
                "terminating connection: the session reached its maximum lifetime",
            )
            .with_hint("reconnect to continue");
            self.end_session(&err);
            return true;
        }
        self.timers_armed = true;
        false
    }

    /// A FATAL error is queued behind responses the server still owes. Wait for them, but
    /// not forever: after `CLOSE_GRACE` without a byte from the server, end the session.
    fn poll_closing(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = self.last_activity + CLOSE_GRACE;
        if self.idle_timer.deadline() != deadline {
            self.idle_timer.as_mut().reset(deadline);
        }
        if self.idle_timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.session.fail_upstream(
            PgError::fatal("08006", "the database server did not finish the statements sent before a protocol violation")
                .with_hint("the connection is closed; reconnect"),
            &mut self.out,
        );
        true
    }

    fn end_session(&mut self, err: &PgError) {
        self.session.terminate(err, &mut self.out);
        self.write_audit(Instant::now().into_std());
        build::terminate(&mut self.out.upstream);
    }

    /// Appends the session's audit records. Records a held message waits for are handed
    /// to the operating system first; in `fsync` mode the message stays held until they
    /// are synced (the wait is polled with the sockets), otherwise it is released at once.
    fn write_audit(&mut self, now: std::time::Instant) {
        loop {
            for record in self.out.audit.drain(..) {
                if let Some(a) = &self.auditor
                    && let Err(e) = a.append(record, false)
                {
                    tracing::error!(error = %e, "audit log unwritable: a statement's outcome is not recorded");
                }
            }
            if self.out.gated.is_empty() {
                return;
            }
            let records = std::mem::take(&mut self.out.gated);
            let Some(auditor) = &self.auditor else {
                self.session.audited(Ok(Vec::new()), now, &mut self.out);
                continue;
            };
            // Only the last is gated: its write hands everything before it to the OS too.
            let last = records.len().saturating_sub(1);
            let mut seqs = Vec::with_capacity(records.len());
            let appended = records
                .into_iter()
                .enumerate()
                .try_for_each(|(i, r)| auditor.append(r, i == last).map(|seq| seqs.push(seq)));
            match (appended, seqs.last()) {
                (Ok(()), Some(&last)) if auditor.syncs_each_statement() => {
                    let durable = Box::pin(auditor.durable(last));
                    self.audit_wait = Some(AuditWait { seqs, durable });
                    return;
                }
                (Ok(()), _) => self.session.audited(Ok(seqs), now, &mut self.out),
                (Err(e), _) => self.session.audited(Err(e), now, &mut self.out),
            }
        }
    }

    fn take_events(&mut self) {
        for event in self.out.events.drain(..) {
            match event {
                Event::Statement { kind, elapsed } => self.metrics.statement(kind, elapsed),
                Event::ProtocolViolation => self.metrics.protocol_errors.inc(),
                Event::Refused(code) => self.metrics.refused(code),
                Event::RowCap { user, role, hourly } => {
                    self.metrics.row_cap(&role, hourly);
                    let cap = if hourly {
                        "max_rows_per_hour"
                    } else {
                        "max_rows"
                    };
                    tracing::warn!(%user, %role, cap, "bulk-read guard stopped a statement");
                }
                Event::BreakGlass => {
                    self.metrics.break_glass.inc();
                    // The reason is free text and may name a patient: it goes to the audit
                    // log only.
                    tracing::warn!(
                        "break-glass declared: row policies and masks lifted for a session (reason in the audit log)"
                    );
                }
            }
        }
    }

    fn upstream_lost(&mut self) {
        self.metrics.upstream_errors.inc();
        tracing::warn!("upstream connection lost");
        self.session.fail_upstream(
            PgError::fatal("08006", "the connection to the database server was lost").with_hint(
                "the statement in progress may or may not have completed; reconnect and check",
            ),
            &mut self.out,
        );
        self.out.upstream.clear();
    }

    /// Feeds every complete message to the session; `now` is when the bytes arrived.
    fn drain_client(&mut self, now: std::time::Instant) {
        while self.session.phase() == Phase::Open && !self.session.holding() {
            match split_client_frame(&mut self.client_buf, self.limits.max_message_size) {
                Ok(Some(frame)) => {
                    self.session.on_frontend(frame, now, &mut self.out);
                    self.write_audit(now);
                }
                Ok(None) => break,
                Err(e) => {
                    self.client_buf.clear();
                    self.session.protocol_violation(&e, &mut self.out);
                }
            }
        }
        release(&mut self.client_buf);
    }

    /// Feeds every complete message to the session; `now` is when the bytes arrived.
    fn drain_upstream(&mut self, now: std::time::Instant) {
        while self.session.phase() != Phase::Closed {
            match split_frame(&mut self.upstream_buf, UPSTREAM_MESSAGE_LIMIT) {
                Ok(Some(frame)) => {
                    self.session.on_backend(frame, now, &mut self.out);
                    // An outcome's record waits until the reply is on its way (`poll`);
                    // only a record that holds a message is written at once.
                    if !self.out.gated.is_empty() {
                        self.write_audit(now);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.upstream_buf.clear();
                    self.session.fail_upstream(
                        PgError::fatal("08P01", format!("upstream protocol violation: {e}")),
                        &mut self.out,
                    );
                }
            }
        }
        release(&mut self.upstream_buf);
    }

    fn flush_counters(&mut self) {
        let c = std::mem::take(&mut self.counters);
        self.metrics.client_bytes_in.inc_by(c.client_in);
        self.metrics.client_bytes_out.inc_by(c.client_out);
        self.metrics.upstream_bytes_in.inc_by(c.upstream_in);
        self.metrics.upstream_bytes_out.inc_by(c.upstream_out);
    }
}

/// Relays until either side closes or the session ends. Returns the upstream connection
/// instead of closing it when the client ended the session with the upstream session at
/// rest (see [`Session::upstream_reusable`]).
pub(super) async fn relay(
    ends: Ends,
    session: Box<Session>,
    limits: Limits,
    metrics: &Metrics,
    auditor: Option<Arc<Auditor>>,
) -> Option<Stream> {
    let now = Instant::now();
    let mut relay = Relay {
        client: ends.client,
        upstream: ends.upstream,
        client_buf: ends.client_buf,
        upstream_buf: ends.upstream_buf,
        session,
        out: Outbound::default(),
        idle_timer: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
        lifetime_timer: Box::pin(tokio::time::sleep_until(limits.lifetime_ends)),
        timers_armed: false,
        limits,
        metrics,
        auditor,
        audit_wait: None,
        client_unflushed: false,
        upstream_unflushed: false,
        last_activity: now,
        counters: Counters::default(),
    };
    // Messages already buffered during login.
    relay.drain_client(now.into_std());
    relay.drain_upstream(now.into_std());
    // Byte counters are published every second and at the end, not per message.
    let mut publish = tokio::time::interval(Duration::from_secs(1));
    let end = loop {
        tokio::select! {
            biased;
            end = poll_fn(|cx| relay.poll(cx)) => break end,
            _ = publish.tick() => relay.flush_counters(),
        }
    };
    relay.take_events();
    // Outcomes are recorded; a message still held never ran and is not.
    relay.out.gated.clear();
    relay.write_audit(Instant::now().into_std());
    relay.flush_counters();
    let reusable = matches!(end, End::Closed)
        && relay.session.upstream_reusable()
        && relay.upstream_buf.is_empty()
        && relay.out.upstream.is_empty();
    let Relay {
        mut client,
        mut upstream,
        mut out,
        ..
    } = relay;
    if let End::ClientGone = end {
        // Its upstream session ends too (an open transaction is rolled back by the server).
        out.client.clear();
        build::terminate(&mut out.upstream);
    }
    // Deliver what is left (the last responses, a FATAL error), then close both sides.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if !out.client.is_empty() {
            let _ = client.write_all(&out.client).await;
        }
        let _ = client.shutdown().await;
    })
    .await;
    if reusable {
        return Some(upstream);
    }
    close(&mut upstream, &out.upstream).await;
    None
}

async fn close<W: AsyncWrite + Unpin>(w: &mut W, rest: &[u8]) {
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if !rest.is_empty() {
            let _ = w.write_all(rest).await;
        }
        let _ = w.shutdown().await;
    })
    .await;
}
