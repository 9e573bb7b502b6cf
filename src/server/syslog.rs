//! Streams the audit log to a syslog collector (`[audit.syslog]`): every record, as RFC
//! 5424 over TCP (TLS as configured), framed by octet counting, from a thread of its own.
//!
//! At least once: the chained files are the backlog. A cursor file beside them holds the
//! last seq handed to the collector's connection; a restart resumes after it, and every
//! reconnection first resends the last [`RESEND`] records, which a connection that died
//! may have swallowed (TCP accepts writes the collector never reads). Collectors keep one
//! copy per seq (the structured data carries it). The sink never slows sessions: it reads
//! what the log has written.

use std::io::{self, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConnection, StreamOwned};

use crate::audit::{Auditor, Reader, SyslogBody, syslog_message};
use crate::config::{Config, Syslog, SyslogFormat, UpstreamTls};
use crate::metrics::Metrics;
use crate::net::tls;

/// Records resent after every reconnection.
const RESEND: u64 = 5_000;
/// The longest pause between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the log is looked at when nothing new was found.
const POLL: Duration = Duration::from_millis(100);

enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// What the sink needs, resolved at start-up.
struct Sink {
    address: String,
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls_pki_types::ServerName<'static>,
    )>,
    body: SyslogBody,
    dir: PathBuf,
    cursor_file: PathBuf,
    auditor: Arc<Auditor>,
    metrics: Arc<Metrics>,
}

/// Starts the sink when `[audit.syslog]` is configured (and the log is on).
pub(super) fn start(
    config: &Config,
    auditor: Option<&Arc<Auditor>>,
    metrics: &Arc<Metrics>,
) -> Result<(), super::ServerError> {
    let (Some(s), Some(auditor)) = (&config.audit.syslog, auditor) else {
        return Ok(());
    };
    let dir = config.audit_dir();
    let sink = Sink {
        tls: collector_tls(s)?,
        address: s.address.clone(),
        body: match s.format {
            SyslogFormat::Stored => SyslogBody::Stored,
            SyslogFormat::Ocsf => SyslogBody::Ocsf,
        },
        cursor_file: dir.join("syslog.cursor"),
        dir,
        auditor: auditor.clone(),
        metrics: metrics.clone(),
    };
    std::thread::Builder::new()
        .name("phigate-syslog".into())
        .spawn(move || sink.run())
        .map_err(|e| {
            super::ServerError::Config(format!("audit.syslog: cannot start its thread: {e}"))
        })?;
    Ok(())
}

fn collector_tls(
    s: &Syslog,
) -> Result<
    Option<(
        Arc<rustls::ClientConfig>,
        rustls_pki_types::ServerName<'static>,
    )>,
    tls::TlsError,
> {
    if s.tls == UpstreamTls::Disable {
        return Ok(None);
    }
    let host = s
        .address
        .rsplit_once(':')
        .map_or(s.address.as_str(), |(h, _)| h);
    let name = tls::server_name(s.server_name.as_deref().unwrap_or(host))?;
    let ca = s.ca_file.as_ref().map(|c| c.relative());
    let config = tls::client_config(s.tls == UpstreamTls::VerifyFull, ca.as_deref())?;
    Ok(Some((config, name)))
}

fn read_cursor(file: &Path) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

fn write_cursor(file: &Path, seq: u64) -> io::Result<()> {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, format!("{seq}\n"))?;
    std::fs::rename(&tmp, file)
}

impl Sink {
    fn run(self) {
        let mut reader = Reader::new(&self.dir, read_cursor(&self.cursor_file));
        let mut backoff = Duration::from_millis(100);
        loop {
            let sent = read_cursor(&self.cursor_file);
            match self.connect() {
                Ok(mut conn) => {
                    backoff = Duration::from_millis(100);
                    reader.rewind(sent.saturating_sub(RESEND));
                    if let Err(e) = self.pump(&mut conn, &mut reader) {
                        tracing::warn!(collector = %self.address, error = %e, "syslog collector connection lost; reconnecting");
                    }
                }
                Err(e) => {
                    tracing::warn!(collector = %self.address, error = %e, "cannot reach the syslog collector; retrying");
                    self.report(sent);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn connect(&self) -> io::Result<Conn> {
        let tcp = TcpStream::connect(&self.address)?;
        tcp.set_nodelay(true)?;
        tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(match &self.tls {
            None => Conn::Plain(tcp),
            Some((config, name)) => {
                let conn = ClientConnection::new(config.clone(), name.clone())
                    .map_err(io::Error::other)?;
                Conn::Tls(Box::new(StreamOwned::new(conn, tcp)))
            }
        })
    }

    /// Sends what the log holds beyond the reader, batch by batch, until a write fails.
    fn pump(&self, conn: &mut Conn, reader: &mut Reader) -> io::Result<()> {
        loop {
            let batch = reader.next_batch().map_err(io::Error::other)?;
            if batch.is_empty() {
                self.report(read_cursor(&self.cursor_file));
                std::thread::sleep(POLL);
                continue;
            }
            let mut bytes = Vec::new();
            for (line, record) in &batch {
                if let Some(m) = syslog_message(record, line, self.body) {
                    bytes.extend_from_slice(&m);
                }
            }
            conn.write_all(&bytes)?;
            conn.flush()?;
            let sent = reader.after().max(read_cursor(&self.cursor_file));
            write_cursor(&self.cursor_file, sent)?;
            self.report(sent);
        }
    }

    /// The records behind: written to the log, not yet sent.
    fn report(&self, sent: u64) {
        let written = self.auditor.last_seq();
        let behind = written.saturating_sub(sent);
        self.metrics
            .audit_syslog_behind
            .set(i64::try_from(behind).unwrap_or(i64::MAX));
    }
}
