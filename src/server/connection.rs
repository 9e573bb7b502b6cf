//! One client connection: the connection limit, the handshake (TLS, authentication, or a
//! cancel request), then the session: its upstream login with phigate's own settings, its
//! audit records, and the relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::cancel::ClientKey;
use super::handshake::{self, Accepted, Opened};
use super::{Shared, relay};
use crate::audit::{Kind, Record};
use crate::net::stream::Stream;
use crate::policy::PolicySet;
use crate::policy::session_key::SessionKey;
use crate::protocol::build::{self, PgError};
use crate::session::{Guard, Session, SessionAudit};
use crate::sql::Subject;
use crate::upstream;

/// Serves one accepted TCP connection to its end.
pub(super) async fn serve(mut tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let Ok(_permit) = shared.connections.clone().try_acquire_owned() else {
        let mut out = BytesMut::new();
        let error = PgError::fatal("53300", "sorry, too many clients already");
        error.encode(&mut out);
        let _ = tcp.write_all(&out).await;
        handshake::refused(&shared, peer, (None, false), &error).await;
        return;
    };
    // The handshake's and the upstream login's futures are boxed: they are large and
    // short-lived, and in place they would set the size of every session's task for its
    // whole life (memory per idle session).
    let opened = tokio::time::timeout(
        shared.config.listen.auth_timeout,
        Box::pin(handshake::accept(tcp, peer, &shared)),
    )
    .await;
    match opened {
        Ok(Ok(Opened::Session(accepted))) => session(*accepted, peer, &shared).await,
        Ok(Ok(Opened::Cancel {
            pid,
            secret,
            stream,
        })) => {
            shared.cancels.cancel(&shared.upstream, pid, &secret).await;
            drop(stream);
        }
        Ok(Ok(Opened::Closed)) => {}
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "connection failed during startup"),
        Err(_) => tracing::info!(%peer, "authentication timed out"),
    }
}

/// Sends a FATAL error to a client whose session will not start.
async fn send_fatal(stream: &mut (impl AsyncWriteExt + Unpin), error: PgError) {
    let mut out = BytesMut::new();
    error.encode(&mut out);
    let _ = stream.write_all(&out).await;
}

/// The upstream `options` startup parameter: the client's settings as phigate parsed them,
/// then phigate's own for the session (`phigate.role`, `phigate.user.<attribute>`), which
/// PostgreSQL applies last.
fn session_options(
    policies: &PolicySet,
    key: &SessionKey,
    (user, role): (&str, &str),
    client: &[(String, String)],
) -> String {
    let mut own = vec![("phigate.role".to_owned(), key.sign("phigate.role", role))];
    if let Some(u) = policies.user(user) {
        for (name, value) in &u.attributes {
            if let Some(text) = crate::policy::setting_text(value) {
                let name = format!("phigate.user.{name}");
                let tagged = key.sign(&name, &text);
                own.push((name, tagged));
            }
        }
    }
    crate::policy::settings::encode_options(
        client
            .iter()
            .chain(&own)
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )
}

/// Runs an authenticated client's session: opens its upstream session, records its
/// start, greets the client and relays until either side ends.
async fn session(accepted: Accepted, peer: SocketAddr, shared: &Shared) {
    let Accepted {
        mut stream,
        buf,
        user,
        role,
        params,
    } = accepted;
    let client_app = crate::protocol::startup::StartupPacket::param(&params, "application_name")
        .unwrap_or_default()
        .to_owned();
    let client_settings = match client_settings(params) {
        Ok(s) => s,
        Err(refusal) => return send_fatal(&mut stream, refusal).await,
    };
    let who = (user.as_str(), role.as_str());
    let upstream_app = upstream_app_name(&user, &client_app);
    let Some((mut connected, pool_key)) = Box::pin(open_upstream(
        shared,
        &mut stream,
        peer,
        who,
        (&upstream_app, &client_settings),
    ))
    .await
    else {
        return;
    };
    let template = session_template(shared, who, peer, &client_app, stream.is_tls());
    if shared
        .audit(Record::clone(&template), Kind::SessionStart)
        .await
        .is_err()
    {
        let refusal = PgError::fatal(
            "58030",
            "the audit log cannot be written; no session can start",
        );
        return send_fatal(&mut stream, refusal).await;
    }
    let guard = guard(shared, who, connected.backend_key.0);
    let names = (upstream_app, client_app);
    let mut session = new_session(shared, guard, names, &client_settings, &template);
    let key = shared.cancels.register(connected.backend_key.clone());
    let out = greeting(&mut session, &connected.parameters, &key);
    // what only the start needed is not held for the session's life (the server's
    // parameters are, when the upstream session may be kept for another client)
    drop(client_settings);
    if shared.config.upstream.pool_size == 0 {
        connected.parameters = Vec::new();
    }
    let mut left = None;
    if stream.write_all(&out).await.is_ok() {
        drop(out);
        tracing::info!(%peer, user, role, tls = stream.is_tls(), "session started");
        let ends = relay::Ends {
            client: stream,
            client_buf: buf,
            upstream: connected.stream,
            upstream_buf: std::mem::take(&mut connected.leftover),
        };
        left = run(shared, ends, session, &role).await;
        let _ = shared
            .audit(Record::clone(&template), Kind::SessionEnd)
            .await;
        tracing::info!(%peer, user, "session ended");
    }
    shared.cancels.unregister(key);
    // kept for the next client of the same login, or ended when the pool has no room
    if let Some(stream) = left {
        let connected = upstream::Connected {
            stream,
            ..connected
        };
        let timeout = shared.upstream.connect_timeout;
        shared.pool.give_back(pool_key, connected, timeout).await;
    }
}

/// The fields every audit record of a session carries.
fn session_template(
    shared: &Shared,
    (user, role): (&str, &str),
    peer: SocketAddr,
    client_app: &str,
    tls: bool,
) -> Arc<Record> {
    Arc::new(Record {
        session: Some(shared.session_ids.fetch_add(1, Ordering::Relaxed)),
        user: Some(user.into()),
        role: Some(role.into()),
        client_addr: Some(peer.ip().to_string().into()),
        application_name: Some(client_app.into()),
        tls: Some(tls),
        ..Record::default()
    })
}

/// What a client is told once its session is open: the server's parameters (as the
/// session shows them), phigate's cancel key for it, and ReadyForQuery.
fn greeting(session: &mut Session, parameters: &[(String, String)], key: &ClientKey) -> BytesMut {
    let mut out = BytesMut::new();
    for (name, value) in parameters {
        build::parameter_status(name, session.observe_parameter(name, value), &mut out);
    }
    build::backend_key_data(key.pid, key.secret, &mut out);
    build::ready_for_query(b'I', &mut out);
    out
}

/// The session core for `guard`: the start-up search path, and its records built on
/// `template` when the audit log is on.
fn new_session(
    shared: &Shared,
    guard: Guard,
    (upstream_app, client_app): (String, String),
    client_settings: &[(String, String)],
    template: &Arc<Record>,
) -> Box<Session> {
    let mut session = Session::new(upstream_app, client_app, Some(guard));
    if let Some((_, path)) = client_settings
        .iter()
        .rev()
        .find(|(k, _)| k.eq_ignore_ascii_case("search_path"))
    {
        session = session.with_search_path(path);
    }
    if let Some(auditor) = &shared.auditor {
        session = session.with_audit(SessionAudit {
            keys: auditor.keys().clone(),
            template: template.clone(),
        });
    }
    Box::new(session)
}

/// The settings of a client's startup packet as PostgreSQL parses them (re-encoded for
/// the upstream login, so no spelling can reach phigate's own settings, which travel in
/// the same packet and which RESET ALL / DISCARD ALL restore).
fn client_settings(params: Vec<(String, String)>) -> Result<Vec<(String, String)>, PgError> {
    let client_params: Vec<(String, String)> = params
        .into_iter()
        .filter(|(k, _)| k != "application_name")
        .collect();
    crate::policy::settings::startup_settings(&client_params)
        .map_err(|e| PgError::fatal(e.code(), e.to_string()).with_hint(e.hint()))
}

/// `application_name` upstream: `phigate:<user>` or `phigate:<user>/<client's name>`.
fn upstream_app_name(user: &str, client_app: &str) -> String {
    if client_app.is_empty() {
        format!("phigate:{user}")
    } else {
        format!("phigate:{user}/{client_app}")
    }
}

/// Logs in upstream for the client's session, or takes an upstream session another client
/// left with the same login; returns it with the pool's key for that login. On failure the
/// client is told (without the service login's details) and `None` is returned.
async fn open_upstream(
    shared: &Shared,
    stream: &mut Stream,
    peer: SocketAddr,
    (user, role): (&str, &str),
    (upstream_app, client_settings): (&str, &[(String, String)]),
) -> Option<(upstream::Connected, String)> {
    let options = session_options(
        &shared.policies(),
        &shared.session_key,
        (user, role),
        client_settings,
    );
    let extra = [
        ("application_name", upstream_app),
        ("options", options.as_str()),
    ];
    let key = upstream::Pool::key(&extra);
    if let Some(kept) = shared.pool.take(&key).await {
        shared.metrics.upstream_reused.inc();
        return Some((kept, key));
    }
    match upstream::connect(&shared.upstream, &extra).await {
        Ok(c) => {
            shared.metrics.upstream_logins.inc();
            Some((c, key))
        }
        Err(e) => {
            shared.metrics.upstream_errors.inc();
            tracing::error!(%peer, user, error = %e, "could not open the upstream session");
            let mut out = BytesMut::new();
            e.client_error().encode(&mut out);
            let _ = stream.write_all(&out).await;
            let _ = stream.shutdown().await;
            None
        }
    }
}

/// What the session enforces for `user` in `role`.
fn guard(shared: &Shared, (user, role): (&str, &str), backend_pid: i32) -> Guard {
    Guard {
        enforcement: shared.enforcement.clone(),
        subject: Subject {
            user: Arc::from(user),
            role: Arc::from(role),
            emergency: false,
        },
        break_glass_for: shared.config.session.break_glass_duration,
        session_key: shared.session_key.clone(),
        backend_pid,
        started: (std::time::Instant::now(), std::time::SystemTime::now()),
        budgets: shared.budgets.clone(),
        delegation: shared
            .policies()
            .user(user)
            .and_then(|u| u.delegate.clone()),
    }
}

/// Relays the session under its limits (the role's idle timeout), counted in the metrics;
/// returns the upstream connection when the client left it at rest (its Terminate was
/// not forwarded: the pool keeps or ends it).
async fn run(
    shared: &Shared,
    ends: relay::Ends,
    session: Box<Session>,
    role: &str,
) -> Option<Stream> {
    shared.metrics.sessions_active.inc();
    shared.metrics.sessions_total.inc();
    let idle_timeout = shared
        .policies()
        .role(role)
        .and_then(|r| r.idle_timeout)
        .unwrap_or(shared.config.session.idle_timeout);
    let limits = relay::Limits {
        max_message_size: shared.config.listen.max_message_size,
        idle_timeout,
        lifetime_ends: tokio::time::Instant::now() + shared.config.session.max_lifetime,
    };
    let auditor = shared.auditor.clone();
    let left = relay::relay(ends, session, limits, &shared.metrics, auditor).await;
    shared.metrics.sessions_active.dec();
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_options_carry_role_and_attributes_escaped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("roles.toml"), "[roles.\"night nurse\"]\n").unwrap();
        let users = dir.path().join("users.toml");
        crate::policy::add_user(&users, "ann", "night nurse", "pw").unwrap();
        let text = std::fs::read_to_string(&users).unwrap();
        std::fs::write(
            &users,
            text.replace(
                "[users.ann]\n",
                "[users.ann]\nattributes = { clinic_id = 3, ward = 'B 2\\x' }\n",
            ),
        )
        .unwrap();
        let policies = PolicySet::load(dir.path()).unwrap();
        let client = vec![("work_mem".to_owned(), "4MB".to_owned())];
        let key = SessionKey::from_bytes([1; 32]);
        let options = session_options(&policies, &key, ("ann", "night nurse"), &client);
        let parsed = crate::policy::settings::split_options(&options);
        let tagged = |name: &str, value: &str| format!("{name}={}", key.sign(name, value));
        assert_eq!(
            parsed,
            [
                "-c".to_owned(),
                "work_mem=4MB".to_owned(),
                "-c".to_owned(),
                tagged("phigate.role", "night nurse"),
                "-c".to_owned(),
                tagged("phigate.user.clinic_id", "3"),
                "-c".to_owned(),
                tagged("phigate.user.ward", "B 2\\x"),
            ]
        );
    }
}
