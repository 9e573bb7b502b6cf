//! Connecting and logging in to the upstream PostgreSQL server.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::scram::{SaltCache, ScramClient};
use crate::net::stream::Stream;
use crate::protocol::ProtocolError;
use crate::protocol::backend::{Authentication, Backend, decode_data_row, decode_parameter_status};
use crate::protocol::build::{self, PgError};
use crate::protocol::frame::{Frame, split_frame};

/// Where and how to reach the upstream server (resolved from the configuration once).
#[derive(Clone)]
pub struct UpstreamTarget {
    /// host:port
    pub address: String,
    /// database name
    pub database: String,
    /// service login
    pub user: String,
    /// its password, when the server asks for one
    pub password: Option<String>,
    /// TLS settings, when enabled
    pub tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    /// time allowed to connect and log in
    pub connect_timeout: Duration,
    /// the SCRAM salted password of the service login, derived once per server salt
    pub(crate) salted: Arc<SaltCache>,
}

impl std::fmt::Debug for UpstreamTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTarget")
            .field("address", &self.address)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Why the upstream session could not be opened.
#[derive(Debug, Error)]
pub enum UpstreamError {
    /// TCP or TLS failure.
    #[error("cannot reach {address}: {cause}")]
    Io {
        /// the upstream address
        address: String,
        /// the failure
        cause: std::io::Error,
    },
    /// The server does not accept TLS although the configuration requires it.
    #[error("{0} does not accept TLS (upstream.tls requires it)")]
    NoTls(String),
    /// connect + login took longer than `upstream.connect_timeout`.
    #[error("timed out connecting to {0}")]
    Timeout(String),
    /// The server refused the session with an ErrorResponse.
    #[error("the database server answered: {message} ({code})")]
    Refused {
        /// SQLSTATE
        code: String,
        /// the server's message
        message: String,
    },
    /// The server asked for something phigate cannot do (an auth method, a password that
    /// is not configured) or broke the protocol.
    #[error("upstream login: {0}")]
    Login(String),
    /// A file the configuration names for the upstream (a password file) cannot be read.
    #[error("{key}: {path}: {cause}")]
    File {
        /// the configuration key
        key: &'static str,
        /// the file
        path: String,
        /// why
        cause: std::io::Error,
    },
    /// The upstream TLS settings are unusable.
    #[error(transparent)]
    Tls(#[from] crate::net::tls::TlsError),
    /// The configuration (or a connection URL) lacks what the work needs.
    #[error("{0}")]
    Config(String),
    /// Native row-level security does not back the row policies.
    #[error("row policies: {0}")]
    NativePolicies(String),
}

impl From<ProtocolError> for UpstreamError {
    fn from(e: ProtocolError) -> Self {
        UpstreamError::Login(e.to_string())
    }
}

impl UpstreamError {
    /// The error a client sees. The service login's own problems are not the client's:
    /// they are reported as 08006 without the server's details.
    pub(crate) fn client_error(&self) -> PgError {
        match self {
            UpstreamError::Refused { code, message } if !code.starts_with("28") => {
                PgError::fatal(known_code(code), format!("upstream: {message}"))
            }
            _ => PgError::fatal("08006", "phigate could not open a session on the database server")
                .with_hint("the database server is unreachable or refused phigate's service login; see phigate's log"),
        }
    }
}

/// Relays the server's SQLSTATE when it is one phigate expects, else 08006.
fn known_code(code: &str) -> &'static str {
    match code {
        "53300" => "53300",
        "57P03" => "57P03",
        "3D000" => "3D000",
        "53000" => "53000",
        _ => "08006",
    }
}

/// An open, logged-in upstream session.
pub struct Connected {
    /// the connection
    pub stream: Stream,
    /// ParameterStatus values the server reported at login
    pub parameters: Vec<(String, String)>,
    /// the server's BackendKeyData: process id and secret
    pub backend_key: (i32, Vec<u8>),
    /// bytes read past the first ReadyForQuery (normally none)
    pub leftover: BytesMut,
}

const LOGIN_MESSAGE_LIMIT: usize = 1 << 20;

/// Opens a TCP (and, when configured, TLS) connection to the target.
pub async fn open_stream(target: &UpstreamTarget) -> Result<Stream, UpstreamError> {
    let io = |cause| UpstreamError::Io {
        address: target.address.clone(),
        cause,
    };
    let tcp = TcpStream::connect(&target.address).await.map_err(io)?;
    tcp.set_nodelay(true).map_err(io)?;
    let Some((config, name)) = &target.tls else {
        return Ok(Stream::Plain(tcp));
    };
    let mut tcp = tcp;
    let mut req = BytesMut::new();
    build::ssl_request(&mut req);
    tcp.write_all(&req).await.map_err(io)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(io)?;
    if answer[0] != b'S' {
        return Err(UpstreamError::NoTls(target.address.clone()));
    }
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name.clone(), tcp)
        .await
        .map_err(io)?;
    Ok(Stream::ClientTls(Box::new(tls)))
}

/// Connects and logs in, sending `extra` startup parameters (application_name, client
/// settings) after user and database.
pub async fn connect(
    target: &UpstreamTarget,
    extra: &[(&str, &str)],
) -> Result<Connected, UpstreamError> {
    tokio::time::timeout(target.connect_timeout, login(target, extra))
        .await
        .map_err(|_| UpstreamError::Timeout(target.address.clone()))?
}

async fn login(
    target: &UpstreamTarget,
    extra: &[(&str, &str)],
) -> Result<Connected, UpstreamError> {
    let mut stream = open_stream(target).await?;
    let io = |cause| UpstreamError::Io {
        address: target.address.clone(),
        cause,
    };
    let mut params = vec![
        ("user", target.user.as_str()),
        ("database", target.database.as_str()),
    ];
    params.extend_from_slice(extra);
    let mut out = BytesMut::new();
    build::startup(&params, &mut out);
    stream.write_all(&out).await.map_err(io)?;

    let mut buf = BytesMut::with_capacity(4096);
    let mut scram: Option<ScramClient> = None;
    let mut parameters = Vec::new();
    let mut backend_key = None;
    loop {
        let frame = loop {
            if let Some(f) = split_frame(&mut buf, LOGIN_MESSAGE_LIMIT)? {
                break f;
            }
            if stream.read_buf(&mut buf).await.map_err(io)? == 0 {
                return Err(UpstreamError::Login(
                    "server closed the connection during login".into(),
                ));
            }
        };
        let mut reply = BytesMut::new();
        match Backend::decode(&frame)? {
            Backend::Authentication(auth) => authenticate(target, auth, &mut scram, &mut reply)?,
            Backend::ParameterStatus(body) => {
                let (k, v) = decode_parameter_status(body)?;
                parameters.push((k.to_owned(), v.to_owned()));
            }
            Backend::BackendKeyData(pid, secret) => backend_key = Some((pid, secret.to_vec())),
            Backend::Error(f) => {
                return Err(UpstreamError::Refused {
                    code: f.code.to_owned(),
                    message: f.message.to_owned(),
                });
            }
            Backend::ReadyForQuery(_) => {
                let backend_key = backend_key
                    .ok_or_else(|| UpstreamError::Login("server sent no BackendKeyData".into()))?;
                return Ok(Connected {
                    stream,
                    parameters,
                    backend_key,
                    leftover: buf,
                });
            }
            // NoticeResponse, NegotiateProtocolVersion
            Backend::Other if matches!(frame.tag(), b'N' | b'v') => {}
            _ => return Err(ProtocolError::UnexpectedType(frame.tag()).into()),
        }
        if !reply.is_empty() {
            stream.write_all(&reply).await.map_err(io)?;
        }
    }
}

fn authenticate(
    target: &UpstreamTarget,
    auth: Authentication<'_>,
    scram: &mut Option<ScramClient>,
    reply: &mut BytesMut,
) -> Result<(), UpstreamError> {
    let password = || {
        target.password.as_deref().ok_or_else(|| {
            UpstreamError::Login(
                "the server asks for a password; set upstream.password_file".into(),
            )
        })
    };
    match auth {
        Authentication::Ok => {}
        Authentication::CleartextPassword => {
            let mut p = password()?.as_bytes().to_vec();
            p.push(0);
            build::password_message(&p, reply);
        }
        Authentication::Md5Password(salt) => {
            let hash = postgres_protocol::authentication::md5_hash(
                target.user.as_bytes(),
                password()?.as_bytes(),
                salt,
            );
            let mut p = hash.into_bytes();
            p.push(0);
            build::password_message(&p, reply);
        }
        Authentication::Sasl(offered) => {
            if !offered.contains(&"SCRAM-SHA-256") {
                return Err(UpstreamError::Login(format!(
                    "no supported SASL mechanism in {offered:?}"
                )));
            }
            let client = ScramClient::new(password()?);
            build::sasl_initial_response("SCRAM-SHA-256", client.first().as_bytes(), reply);
            *scram = Some(client);
        }
        Authentication::SaslContinue(data) => {
            let client = scram
                .as_mut()
                .ok_or_else(|| UpstreamError::Login("SASLContinue before SASL".into()))?;
            let response = client
                .respond(data, &target.salted)
                .map_err(|e| UpstreamError::Login(format!("SCRAM: {}", e.0)))?;
            build::password_message(response.as_bytes(), reply);
        }
        Authentication::SaslFinal(data) => {
            let client = scram
                .take()
                .ok_or_else(|| UpstreamError::Login("SASLFinal before SASL".into()))?;
            client
                .finish(data)
                .map_err(|e| UpstreamError::Login(format!("SCRAM server signature: {}", e.0)))?;
        }
        Authentication::Unsupported(code) => {
            return Err(UpstreamError::Login(format!(
                "unsupported authentication method {code}"
            )));
        }
    }
    Ok(())
}

impl Connected {
    fn io(cause: std::io::Error) -> UpstreamError {
        UpstreamError::Io {
            address: "upstream".into(),
            cause,
        }
    }

    async fn next_frame(&mut self) -> Result<Frame, UpstreamError> {
        loop {
            if let Some(f) = split_frame(&mut self.leftover, LOGIN_MESSAGE_LIMIT)? {
                return Ok(f);
            }
            if self
                .stream
                .read_buf(&mut self.leftover)
                .await
                .map_err(Self::io)?
                == 0
            {
                return Err(UpstreamError::Login("server closed the connection".into()));
            }
        }
    }

    /// Reads up to ReadyForQuery: the rows as text, or the first error.
    async fn finish_query(&mut self) -> Result<Vec<Vec<Option<String>>>, UpstreamError> {
        let mut rows = Vec::new();
        let mut failure = None;
        loop {
            let frame = self.next_frame().await?;
            match Backend::decode(&frame)? {
                Backend::DataRow(body) => {
                    let row = decode_data_row(body)?
                        .into_iter()
                        .map(|v| v.map(|v| String::from_utf8_lossy(v).into_owned()))
                        .collect();
                    rows.push(row);
                }
                Backend::Error(f) => {
                    failure.get_or_insert(UpstreamError::Refused {
                        code: f.code.to_owned(),
                        message: f.message.to_owned(),
                    });
                }
                // a COPY FROM STDIN this session did not expect: end it
                Backend::CopyIn => {
                    let mut out = BytesMut::new();
                    build::copy_fail("unexpected COPY", &mut out);
                    self.send(&out).await?;
                }
                Backend::ReadyForQuery(_) => return failure.map_or(Ok(rows), Err),
                _ => {}
            }
        }
    }

    async fn send(&mut self, messages: &[u8]) -> Result<(), UpstreamError> {
        self.stream.write_all(messages).await.map_err(Self::io)
    }

    /// Runs one simple query on a session opened by phigate itself (never a client's) and
    /// returns its rows as text.
    pub(crate) async fn query_text(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, UpstreamError> {
        let mut out = BytesMut::new();
        build::query(sql, &mut out);
        self.send(&out).await?;
        self.finish_query().await
    }
}
