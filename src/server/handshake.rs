//! A client connection from its first byte to an authenticated user: SSL/GSS negotiation,
//! the startup packet, and SCRAM-SHA-256 against the users file.

use std::net::SocketAddr;

use base64::Engine;
use bytes::BytesMut;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Shared;
use super::scram::{Channel, ScramError, ScramExchange, decoy_verifier};
use crate::net::stream::Stream;
use crate::protocol::ProtocolError;
use crate::protocol::build::{self, PgError};
use crate::protocol::frame::{Frame, split_frame};
use crate::protocol::message::decode_sasl_initial_response;
use crate::protocol::startup::{StartupPacket, split_startup};

/// What a new connection turned out to be.
pub(super) enum Opened {
    /// an authenticated client
    Session(Box<Accepted>),
    /// a cancel request; its connection is closed once the request is forwarded
    Cancel {
        /// process id
        pid: i32,
        /// secret
        secret: Vec<u8>,
        /// the client's connection, kept open until then (a client may wait for its close)
        stream: Stream,
    },
    /// the client went away or was refused (it has been told why)
    Closed,
}

/// An authenticated client.
pub(super) struct Accepted {
    pub stream: Stream,
    /// bytes the client sent after its last authentication message
    pub buf: BytesMut,
    pub user: String,
    pub role: String,
    /// startup parameters other than user and database
    pub params: Vec<(String, String)>,
}

/// Password and SASL messages are small; PostgreSQL uses the same bound.
const AUTH_MESSAGE_LIMIT: usize = 10_000;

async fn read_more(stream: &mut Stream, buf: &mut BytesMut) -> std::io::Result<bool> {
    Ok(stream.read_buf(buf).await? > 0)
}

async fn refuse(stream: &mut Stream, err: PgError) -> Opened {
    let mut out = BytesMut::new();
    err.encode(&mut out);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
    Opened::Closed
}

/// [`refuse`], recorded in the audit log with the user the client claimed (none before
/// its startup packet).
async fn refuse_recorded(
    mut stream: Stream,
    err: PgError,
    (peer, user): (SocketAddr, Option<&str>),
    shared: &Shared,
) -> Opened {
    refused(shared, peer, (user, stream.is_tls()), &err).await;
    refuse(&mut stream, err).await
}

/// Runs the handshake on a fresh connection.
pub(super) async fn accept(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
) -> std::io::Result<Opened> {
    let mut stream = Stream::Plain(tcp);
    let mut buf = BytesMut::with_capacity(1024);
    let mut negotiated_tls = false;
    let mut negotiated_gss = false;
    let (major, minor, params) = loop {
        let packet = loop {
            match split_startup(&mut buf) {
                Ok(Some(p)) => break p,
                Ok(None) if read_more(&mut stream, &mut buf).await? => {}
                Ok(None) => return Ok(Opened::Closed),
                // An impossible length: PostgreSQL closes without a word (a client that
                // sends Terminate before its startup packet gets no error to trip on).
                Err(e @ (ProtocolError::BadLength(_) | ProtocolError::TooLarge { .. })) => {
                    tracing::debug!(%peer, error = %e, "invalid length of startup packet");
                    return Ok(Opened::Closed);
                }
                Err(e) => {
                    return Ok(
                        refuse_recorded(stream, protocol_error(&e), (peer, None), shared).await,
                    );
                }
            }
        };
        match packet {
            StartupPacket::SslRequest if !negotiated_tls && buf.is_empty() => {
                negotiated_tls = true;
                let Some(acceptor) = &shared.tls else {
                    stream.write_all(b"N").await?;
                    continue;
                };
                stream.write_all(b"S").await?;
                let Stream::Plain(tcp) = stream else {
                    return Ok(Opened::Closed);
                };
                match acceptor.accept(tcp).await {
                    Ok(tls) => stream = Stream::ServerTls(Box::new(tls)),
                    Err(e) => {
                        // a revoked or expired client certificate ends here, among others
                        let why = PgError::fatal("28000", format!("TLS handshake failed: {e}"));
                        refused(shared, peer, (None, true), &why).await;
                        return Ok(Opened::Closed);
                    }
                }
            }
            StartupPacket::GssEncRequest
                if !negotiated_gss && !negotiated_tls && buf.is_empty() =>
            {
                negotiated_gss = true;
                stream.write_all(b"N").await?;
            }
            StartupPacket::Cancel { pid, secret } => {
                return Ok(Opened::Cancel {
                    pid,
                    secret,
                    stream,
                });
            }
            StartupPacket::Startup {
                major,
                minor,
                params,
            } => break (major, minor, params),
            // A repeated negotiation, or bytes pipelined behind an SSLRequest (they would
            // bypass encryption): refuse.
            _ => {
                let e = ProtocolError::Malformed {
                    what: "SSL/GSS negotiation",
                };
                return Ok(refuse_recorded(stream, protocol_error(&e), (peer, None), shared).await);
            }
        }
    };
    startup(stream, buf, major, minor, params, peer, shared).await
}

/// Records a connection refused before its session started: why, from where, and the
/// user it claimed.
pub(super) async fn refused(
    shared: &Shared,
    peer: SocketAddr,
    (user, tls): (Option<&str>, bool),
    why: &PgError,
) {
    tracing::info!(%peer, user, code = why.code, reason = %why.message, "connection refused");
    let record = crate::audit::Record {
        user: user.map(Into::into),
        client_addr: Some(peer.ip().to_string().into()),
        tls: Some(tls),
        decision: Some(crate::audit::Decision::Denied),
        sqlstate: Some(why.code.to_owned()),
        detail: Some(why.message.clone()),
        ..crate::audit::Record::default()
    };
    let _ = shared
        .audit(record, crate::audit::Kind::ConnectionRefused)
        .await;
}

fn protocol_error(e: &ProtocolError) -> PgError {
    PgError::fatal("08P01", format!("protocol violation: {e}"))
}

async fn startup(
    stream: Stream,
    mut buf: BytesMut,
    major: u16,
    minor: u16,
    params: Vec<(String, String)>,
    peer: SocketAddr,
    shared: &Shared,
) -> std::io::Result<Opened> {
    let user = match admit((major, minor), &params, stream.is_tls(), &shared.config) {
        Ok(user) => user,
        Err(e) => {
            let claimed = StartupPacket::param(&params, "user");
            return Ok(refuse_recorded(stream, e, (peer, claimed), shared).await);
        }
    };
    let mut out = BytesMut::new();
    let unsupported: Vec<String> = params
        .iter()
        .filter(|(k, _)| k.starts_with("_pq_."))
        .map(|(k, _)| k.clone())
        .collect();
    if minor > 0 || !unsupported.is_empty() {
        build::negotiate_protocol_version(unsupported, &mut out);
    }
    let (stream, role) = match authenticate(stream, &mut buf, out, &user, peer, shared).await? {
        Ok(done) => done,
        Err(ended) => return Ok(ended),
    };
    let rest = params
        .into_iter()
        .filter(|(k, _)| {
            !matches!(k.as_str(), "user" | "database" | "replication") && !k.starts_with("_pq_.")
        })
        .collect();
    Ok(Opened::Session(Box::new(Accepted {
        stream,
        buf,
        user,
        role,
        params: rest,
    })))
}

/// The startup packet's checks before authentication: protocol 3, TLS when required, a
/// user name, no replication, the database phigate serves. Returns the user name.
fn admit(
    (major, minor): (u16, u16),
    params: &[(String, String)],
    tls: bool,
    config: &crate::config::Config,
) -> Result<String, PgError> {
    let param = |name| StartupPacket::param(params, name);
    if major != 3 {
        return Err(PgError::fatal(
            "0A000",
            format!("unsupported frontend protocol {major}.{minor}: phigate speaks 3.0"),
        ));
    }
    if config.listen.require_tls && !tls {
        return Err(
            PgError::fatal("28000", "phigate accepts only TLS connections")
                .with_hint("connect with sslmode=require (or stricter)"),
        );
    }
    let Some(user) = param("user").map(str::to_owned) else {
        return Err(PgError::fatal(
            "28000",
            "no user name in the startup packet",
        ));
    };
    if param("replication").is_some_and(|r| !matches!(r, "false" | "off" | "no" | "0")) {
        return Err(PgError::fatal(
            "0A000",
            "replication connections are not supported through phigate",
        ));
    }
    let database = &config.upstream.database;
    if let Some(db) = param("database").filter(|d| *d != database) {
        return Err(PgError::fatal(
            "3D000",
            format!("database \"{db}\" is not served by this phigate"),
        )
        .with_hint(format!("connect to database \"{database}\"")));
    }
    Ok(user)
}

/// SCRAM-SHA-256 (`out` holds what is still to be sent before the first challenge).
/// Unknown users run the same exchange against a decoy verifier. Returns the stream and
/// the user's role, or how the connection ended.
async fn authenticate(
    mut stream: Stream,
    buf: &mut BytesMut,
    mut out: BytesMut,
    user: &str,
    peer: SocketAddr,
    shared: &Shared,
) -> std::io::Result<Result<(Stream, String), Opened>> {
    let policies = shared.policies();
    let known = policies.user(user).cloned();
    if let Some(u) = known.as_ref().filter(|u| u.auth.needs_certificate()) {
        if let Err(why) = check_certificate(&stream, u) {
            return Ok(Err(login_failed(stream, user, peer, &why, shared).await));
        }
        if !u.auth.needs_password() {
            build::authentication_ok(&mut out);
            stream.write_all(&out).await?;
            return Ok(Ok((stream, u.role.clone())));
        }
    }
    let verifier = known
        .as_ref()
        .and_then(|u| u.scram.clone())
        .unwrap_or_else(|| decoy_verifier(&shared.decoy_secret, user));
    // channel binding is offered on TLS, when the certificate defines its data
    let end_point = shared.tls_end_point.as_deref().filter(|_| stream.is_tls());
    let mechanisms: &[&str] = match end_point {
        Some(_) => &["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"],
        None => &["SCRAM-SHA-256"],
    };
    build::authentication_sasl(mechanisms, &mut out);
    stream.write_all(&out).await?;
    out.clear();
    let Some(first) = read_auth_message(&mut stream, buf).await? else {
        return Ok(Err(Opened::Closed));
    };
    let (plus, first) = match sasl_initial(&first, mechanisms) {
        Ok(chosen) => chosen,
        Err(e) => return Ok(Err(refuse(&mut stream, e).await)),
    };
    let channel = match end_point {
        Some(data) => Channel::Offered { data, plus },
        None => Channel::Unavailable,
    };
    let nonce: [u8; 18] = rand::rng().random();
    let nonce = base64::engine::general_purpose::STANDARD.encode(nonce);
    let exchange = match ScramExchange::start(verifier, &first, &nonce, channel) {
        Ok((exchange, server_first)) => {
            build::authentication_sasl_continue(server_first.as_bytes(), &mut out);
            stream.write_all(&out).await?;
            out.clear();
            exchange
        }
        Err(e) => {
            return Ok(Err(
                login_failed(stream, user, peer, &e.into(), shared).await
            ));
        }
    };
    let Some(fin) = read_auth_message(&mut stream, buf).await? else {
        return Ok(Err(Opened::Closed));
    };
    let (server_final, entry) = match (exchange.finish(fin.body()), known) {
        (Ok(server_final), Some(u)) => (server_final, u),
        (Ok(_), None) => {
            let why = LoginError::Scram(ScramError::BadProof);
            let failed = login_failed(stream, user, peer, &why, shared).await;
            return Ok(Err(failed));
        }
        (Err(e), _) => {
            return Ok(Err(
                login_failed(stream, user, peer, &e.into(), shared).await
            ));
        }
    };
    build::authentication_sasl_final(server_final.as_bytes(), &mut out);
    build::authentication_ok(&mut out);
    stream.write_all(&out).await?;
    Ok(Ok((stream, entry.role)))
}

/// Reads one password-family message; `None` when the client hung up (psql does so to
/// prompt for a password, so it is not a failed login).
async fn read_auth_message(
    stream: &mut Stream,
    buf: &mut BytesMut,
) -> std::io::Result<Option<Frame>> {
    loop {
        match split_frame(buf, AUTH_MESSAGE_LIMIT) {
            Ok(Some(f)) if f.tag() == b'p' => return Ok(Some(f)),
            Ok(Some(f)) => {
                let e = ProtocolError::UnexpectedType(f.tag());
                refuse(stream, protocol_error(&e)).await;
                return Ok(None);
            }
            Ok(None) => {
                if !read_more(stream, buf).await? {
                    return Ok(None);
                }
            }
            Err(e) => {
                refuse(stream, protocol_error(&e)).await;
                return Ok(None);
            }
        }
    }
}

/// The client's SASLInitialResponse: whether it chose SCRAM-SHA-256-PLUS, and its data.
fn sasl_initial(frame: &Frame, offered: &[&str]) -> Result<(bool, Vec<u8>), PgError> {
    match decode_sasl_initial_response(frame.body()) {
        Ok((m, data)) if offered.contains(&m) => Ok((m.ends_with("-PLUS"), data.to_vec())),
        Ok((other, _)) => Err(PgError::fatal(
            "28000",
            format!("SASL mechanism {other} is not offered"),
        )
        .with_hint(format!("use {}", offered.join(" or ")))),
        Err(e) => Err(protocol_error(&e)),
    }
}

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
enum LoginError {
    /// the SCRAM exchange failed
    #[error(transparent)]
    Scram(#[from] ScramError),
    /// the user needs a client certificate naming them
    #[error("{0}")]
    Certificate(String),
}

impl LoginError {
    /// What the client is told (the same for every password failure).
    fn answer(&self, user: &str) -> PgError {
        match self {
            Self::Scram(_) => PgError::fatal(
                "28P01",
                format!("password authentication failed for user \"{user}\""),
            ),
            Self::Certificate(_) => PgError::fatal(
                "28000",
                format!("certificate authentication failed for user \"{user}\""),
            )
            .with_hint(
                "connect over TLS with a client certificate that names this user (sslcert, sslkey)",
            ),
        }
    }
}

async fn login_failed(
    mut stream: Stream,
    user: &str,
    peer: SocketAddr,
    why: &LoginError,
    shared: &Shared,
) -> Opened {
    shared.metrics.auth_failures.inc();
    tracing::warn!(%peer, user, reason = %why, "login failed");
    let pause = shared.throttle.failed(peer.ip(), std::time::Instant::now());
    let record = crate::audit::Record {
        user: Some(user.into()),
        client_addr: Some(peer.ip().to_string().into()),
        tls: Some(stream.is_tls()),
        decision: Some(crate::audit::Decision::Denied),
        sqlstate: Some(why.answer(user).code.into()),
        detail: Some(format!(
            "{why}; throttled: answered after {} ms",
            pause.as_millis()
        )),
        ..crate::audit::Record::default()
    };
    let _ = shared.audit(record, crate::audit::Kind::AuthFailure).await;
    tokio::time::sleep(pause).await;
    refuse(&mut stream, why.answer(user)).await
}

/// Checks the client certificate a user's `auth` asks for: the TLS handshake verified it
/// (chain, dates, revocation); it must name the user.
fn check_certificate(stream: &Stream, user: &crate::policy::User) -> Result<(), LoginError> {
    let Some(cert) = stream.peer_certificate() else {
        return Err(LoginError::Certificate("no client certificate".into()));
    };
    let names = crate::net::tls::certificate_names(cert);
    if names.contains(&user.certificate_name) {
        Ok(())
    } else {
        Err(LoginError::Certificate(format!(
            "the client certificate names {names:?}, not {:?}",
            user.certificate_name
        )))
    }
}
