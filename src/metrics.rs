//! The Prometheus registry and the admin HTTP endpoint (`/metrics`, `/healthz`, `/readyz`).

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::session::CommandKind;

/// phigate's metrics. Label values are resolved once, so the hot path only touches atomics.
pub struct Metrics {
    registry: Registry,
    /// sessions currently open
    pub sessions_active: IntGauge,
    /// sessions opened since start
    pub sessions_total: IntCounter,
    statements: Vec<(CommandKind, IntCounter)>,
    /// statement latency, forward to completion
    pub statement_seconds: Histogram,
    /// failed client logins
    pub auth_failures: IntCounter,
    /// bytes received from clients
    pub client_bytes_in: IntCounter,
    /// bytes sent to clients
    pub client_bytes_out: IntCounter,
    /// bytes received from the upstream server
    pub upstream_bytes_in: IntCounter,
    /// bytes sent to the upstream server
    pub upstream_bytes_out: IntCounter,
    /// failed upstream connections and upstream connections lost mid-session
    pub upstream_errors: IntCounter,
    /// client sessions that logged in upstream (no kept session fitted)
    pub upstream_logins: IntCounter,
    /// client sessions given a kept upstream session (`upstream.pool_size`)
    pub upstream_reused: IntCounter,
    /// sessions ended by the idle timeout
    pub idle_timeouts: IntCounter,
    /// client protocol violations
    pub protocol_errors: IntCounter,
    /// emergencies declared (break-glass)
    pub break_glass: IntCounter,
    refusals: IntCounterVec,
    row_caps: IntCounterVec,
    /// audit records written
    pub audit_records: IntCounter,
    /// time from handing a statement's audit record to the log until the log holds it
    pub audit_write_seconds: Histogram,
    /// audit records in the log not yet sent to the syslog collector
    pub audit_syslog_behind: IntGauge,
}

/// The counter of each statement kind.
fn by_kind(counters: &IntCounterVec) -> Vec<(CommandKind, IntCounter)> {
    CommandKind::ALL
        .iter()
        .map(|k| (*k, counters.with_label_values(&[k.label()])))
        .collect()
}

/// The bulk-read guard's stops, by role and cap.
fn row_caps(registry: &Registry) -> IntCounterVec {
    let opts = Opts::new(
        "phigate_row_cap_stops_total",
        "Statements the bulk-read guard stopped, by role and by cap (statement: max_rows, hour: max_rows_per_hour)",
    );
    register(
        registry,
        IntCounterVec::new(opts, &["role", "cap"]).expect("valid metric"),
    )
}

/// Registers `c` in `registry` and returns it.
fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique and valid");
    c
}

/// The latency histograms: (audit write, statement).
fn histograms(registry: &Registry) -> (Histogram, Histogram) {
    let histogram = |name: &str, help: &str, start: f64| {
        let buckets = prometheus::exponential_buckets(start, 4.0, 10).expect("valid buckets");
        let opts = HistogramOpts::new(name, help).buckets(buckets);
        register(registry, Histogram::with_opts(opts).expect("valid metric"))
    };
    (
        histogram(
            "phigate_audit_write_seconds",
            "Time to write a statement's audit record (the audit lag a statement waits for)",
            0.000_005,
        ),
        histogram(
            "phigate_statement_duration_seconds",
            "Statement latency through phigate",
            0.0001,
        ),
    )
}

impl Metrics {
    /// A fresh registry with every phigate metric registered.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            register(
                &registry,
                IntCounter::new(name, help).expect("valid metric"),
            )
        };
        let vec = |name: &str, help: &str, label: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            register(&registry, c)
        };
        let (audit_write_seconds, statement_seconds) = histograms(&registry);
        let gauge = |name: &str, help: &str| {
            register(&registry, IntGauge::new(name, help).expect("valid metric"))
        };
        let upstream = vec(
            "phigate_upstream_sessions_total",
            "Upstream sessions client sessions started on: a new login, or a kept one reused",
            "source",
        );
        let statements = by_kind(&vec(
            "phigate_statements_total",
            "Statements completed, by kind",
            "kind",
        ));
        Self {
            refusals: vec(
                "phigate_refusals_total",
                "Statements phigate refused, by SQLSTATE",
                "sqlstate",
            ),
            row_caps: row_caps(&registry),
            audit_write_seconds,
            statement_seconds,
            audit_records: counter("phigate_audit_records_total", "Audit records written"),
            statements,
            sessions_active: gauge("phigate_sessions_active", "Client sessions currently open"),
            audit_syslog_behind: gauge(
                "phigate_audit_syslog_behind",
                "Audit records not yet sent to the syslog collector",
            ),
            sessions_total: counter("phigate_sessions_total", "Client sessions opened"),
            auth_failures: counter("phigate_auth_failures_total", "Failed client logins"),
            client_bytes_in: counter(
                "phigate_client_bytes_received_total",
                "Bytes received from clients",
            ),
            client_bytes_out: counter("phigate_client_bytes_sent_total", "Bytes sent to clients"),
            upstream_bytes_in: counter(
                "phigate_upstream_bytes_received_total",
                "Bytes received from PostgreSQL",
            ),
            upstream_bytes_out: counter(
                "phigate_upstream_bytes_sent_total",
                "Bytes sent to PostgreSQL",
            ),
            upstream_errors: counter(
                "phigate_upstream_errors_total",
                "Upstream connection failures",
            ),
            upstream_logins: upstream.with_label_values(&["login"]),
            upstream_reused: upstream.with_label_values(&["reused"]),
            idle_timeouts: counter(
                "phigate_idle_timeouts_total",
                "Sessions ended by the idle timeout",
            ),
            protocol_errors: counter(
                "phigate_protocol_errors_total",
                "Client protocol violations",
            ),
            break_glass: counter(
                "phigate_break_glass_total",
                "Emergencies declared (SET phigate.break_glass)",
            ),
            registry,
        }
    }

    /// Counts a completed statement.
    pub fn statement(&self, kind: CommandKind, elapsed: Duration) {
        if let Some((_, c)) = self.statements.iter().find(|(k, _)| *k == kind) {
            c.inc();
        }
        self.statement_seconds.observe(elapsed.as_secs_f64());
    }

    /// Counts a statement phigate refused.
    pub fn refused(&self, sqlstate: &str) {
        self.refusals.with_label_values(&[sqlstate]).inc();
    }

    /// Counts a statement of `role` the bulk-read guard stopped: past its own cap, or
    /// with the hour's budget spent (`hourly`).
    pub fn row_cap(&self, role: &str, hourly: bool) {
        let cap = if hourly { "hour" } else { "statement" };
        self.row_caps.with_label_values(&[role, cap]).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "could not encode metrics");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves the admin endpoint on `listener` until the task is dropped. `/readyz` answers 200
/// only while a TCP connection to `upstream` succeeds.
pub(crate) async fn serve_admin(listener: TcpListener, metrics: Arc<Metrics>, upstream: String) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            if let Err(e) =
                tokio::time::timeout(Duration::from_secs(10), answer(stream, &metrics, &upstream))
                    .await
            {
                tracing::debug!(error = %e, "admin request timed out");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, metrics: &Metrics, upstream: &str) {
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
        if len == buf.len() {
            return;
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_owned()),
        ("GET", "/readyz") => {
            let probe =
                tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(upstream)).await;
            if matches!(probe, Ok(Ok(_))) {
                ("200 OK", "text/plain", "ready\n".to_owned())
            } else {
                (
                    "503 Service Unavailable",
                    "text/plain",
                    "upstream unreachable\n".to_owned(),
                )
            }
        }
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
