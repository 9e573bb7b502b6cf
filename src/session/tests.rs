use super::*;
use bytes::BufMut;
use std::time::Instant;

/// One fixed instant, so that elapsed times are exactly zero.
fn t0() -> Instant {
    static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *T0.get_or_init(Instant::now)
}

fn fe(tag: u8, body: &[u8]) -> Frame {
    Frame::new(tag, body)
}

fn session() -> (Session, Outbound) {
    (
        Session::new("phigate:bob/app".into(), "app".into(), None),
        Outbound::default(),
    )
}

fn parse() -> Frame {
    fe(b'P', b"\0select 1\0\0\0")
}
fn bind() -> Frame {
    fe(b'B', b"\0\0\0\0\0\0\0\0")
}
fn execute() -> Frame {
    fe(b'E', b"\0\0\0\0\0")
}
fn sync() -> Frame {
    fe(b'S', b"")
}
fn rfq(s: u8) -> Frame {
    fe(b'Z', &[s])
}
fn error() -> Frame {
    fe(b'E', b"SERROR\0VERROR\0C42P01\0Mboom\0\0")
}
fn complete(tag: &str) -> Frame {
    let mut b = tag.as_bytes().to_vec();
    b.push(0);
    fe(b'C', &b)
}

/// The server's answer to Parse, Bind, Execute and Sync of `select 1`.
fn answer_select_1(s: &mut Session, out: &mut Outbound) {
    for f in [
        fe(b'1', b""),
        fe(b'2', b""),
        complete("SELECT 1"),
        rfq(b'I'),
    ] {
        s.on_backend(f, t0(), out);
    }
}

/// The tags of the messages in `buf`.
fn tags(buf: &mut BytesMut) -> Vec<u8> {
    let mut v = Vec::new();
    while let Some(f) = crate::protocol::frame::split_frame(buf, usize::MAX >> 1).unwrap() {
        v.push(f.tag());
    }
    v
}

#[test]
fn pipelined_extended_query_is_tracked_until_ready_for_query() {
    let (mut s, mut out) = session();
    for f in [parse(), bind(), execute(), sync()] {
        s.on_frontend(f, t0(), &mut out);
    }
    assert_eq!(tags(&mut out.upstream), b"PBES");
    assert!(s.awaiting_upstream());
    for f in [fe(b'1', b""), fe(b'2', b""), complete("SELECT 1")] {
        s.on_backend(f, t0(), &mut out);
        assert!(s.awaiting_upstream());
    }
    s.on_backend(rfq(b'I'), t0(), &mut out);
    assert!(!s.awaiting_upstream());
    assert_eq!(tags(&mut out.client), b"12CZ");
    assert_eq!(out.events.len(), 1);
}

#[test]
fn messages_without_sync_or_flush_leave_the_session_idle() {
    let (mut s, mut out) = session();
    s.on_frontend(parse(), t0(), &mut out);
    assert!(!s.awaiting_upstream(), "nothing is owed before a Flush");
    s.on_frontend(fe(b'H', b""), t0(), &mut out);
    assert!(s.awaiting_upstream());
    s.on_backend(fe(b'1', b""), t0(), &mut out);
    assert!(!s.awaiting_upstream());
}

#[test]
fn an_error_skips_to_the_next_sync() {
    let (mut s, mut out) = session();
    for f in [parse(), bind(), execute(), sync(), parse(), sync()] {
        s.on_frontend(f, t0(), &mut out);
    }
    s.on_backend(error(), t0(), &mut out); // Parse failed: Bind and Execute are skipped
    s.on_backend(rfq(b'I'), t0(), &mut out);
    assert!(
        s.awaiting_upstream(),
        "the second Parse and Sync are still owed"
    );
    s.on_backend(fe(b'1', b""), t0(), &mut out);
    s.on_backend(rfq(b'I'), t0(), &mut out);
    assert!(!s.awaiting_upstream());
    assert_eq!(
        out.events[0],
        Event::Statement {
            kind: CommandKind::Failed,
            elapsed: Duration::ZERO
        }
    );
}

#[test]
fn sync_pipelined_before_copy_data_is_ignored_like_postgres_does() {
    // tokio-postgres sends Bind, Execute, Sync, waits for CopyInResponse, streams the
    // data, then sends CopyDone and another Sync. PostgreSQL ignores the first Sync.
    let (mut s, mut out) = session();
    for f in [bind(), execute(), sync()] {
        s.on_frontend(f, t0(), &mut out);
    }
    s.on_backend(fe(b'2', b""), t0(), &mut out);
    s.on_backend(fe(b'G', b"\0\0\0"), t0(), &mut out);
    assert!(!s.awaiting_upstream(), "the server waits for COPY data");
    s.on_frontend(fe(b'd', b"1\n"), t0(), &mut out);
    s.on_frontend(fe(b'c', b""), t0(), &mut out);
    s.on_frontend(sync(), t0(), &mut out);
    assert!(s.awaiting_upstream());
    s.on_backend(complete("COPY 1"), t0(), &mut out);
    s.on_backend(rfq(b'I'), t0(), &mut out);
    assert!(
        !s.awaiting_upstream(),
        "one ReadyForQuery settles the whole exchange"
    );
}

#[test]
fn copy_data_sent_before_copy_in_response_is_accounted() {
    let (mut s, mut out) = session();
    s.on_frontend(fe(b'Q', b"copy t from stdin\0"), t0(), &mut out);
    s.on_frontend(fe(b'd', b"1\n"), t0(), &mut out);
    s.on_frontend(fe(b'c', b""), t0(), &mut out);
    s.on_backend(fe(b'G', b"\0\0\0"), t0(), &mut out);
    assert!(s.awaiting_upstream());
    s.on_backend(complete("COPY 1"), t0(), &mut out);
    s.on_backend(rfq(b'I'), t0(), &mut out);
    assert!(!s.awaiting_upstream());
}

#[test]
fn a_fatal_error_waits_for_earlier_responses() {
    let (mut s, mut out) = session();
    s.on_frontend(fe(b'Q', b"select 1\0"), t0(), &mut out);
    s.on_frontend(fe(b'?', b""), t0(), &mut out);
    assert_eq!(s.phase(), Phase::Closing);
    assert!(
        out.client.is_empty(),
        "the error must not overtake the query's response"
    );
    s.on_frontend(fe(b'Q', b"select 2\0"), t0(), &mut out);
    assert_eq!(tags(&mut out.upstream), b"Q", "nothing more is forwarded");
    s.on_backend(complete("SELECT 1"), t0(), &mut out);
    s.on_backend(rfq(b'I'), t0(), &mut out);
    assert_eq!(s.phase(), Phase::Closed);
    let mut client = out.client.clone();
    assert_eq!(tags(&mut client), b"CZE");
}

#[test]
fn a_fatal_error_flushes_unsynced_messages() {
    let (mut s, mut out) = session();
    s.on_frontend(parse(), t0(), &mut out);
    s.on_frontend(fe(b'B', b"garbage"), t0(), &mut out);
    assert_eq!(tags(&mut out.upstream), b"PH");
    s.on_backend(fe(b'1', b""), t0(), &mut out);
    assert_eq!(s.phase(), Phase::Closed);
    assert_eq!(tags(&mut out.client), b"1E");
}

#[test]
fn application_name_is_shown_as_the_client_set_it() {
    let (mut s, mut out) = session();
    let mut body = BytesMut::new();
    body.put_slice(b"application_name\0phigate:bob/app\0");
    s.on_backend(fe(b'S', &body), t0(), &mut out);
    let f = crate::protocol::frame::split_frame(&mut out.client, 1 << 20)
        .unwrap()
        .unwrap();
    assert_eq!(f.body(), b"application_name\0app\0");
    s.on_backend(fe(b'S', b"application_name\0other\0"), t0(), &mut out);
    let f = crate::protocol::frame::split_frame(&mut out.client, 1 << 20)
        .unwrap()
        .unwrap();
    assert_eq!(f.body(), b"application_name\0other\0");
}

#[test]
fn upstream_fatal_closes_the_session() {
    let (mut s, mut out) = session();
    s.on_frontend(fe(b'Q', b"select pg_sleep(10)\0"), t0(), &mut out);
    s.on_backend(
        fe(b'E', b"SFATAL\0VFATAL\0C57P01\0Mterminating\0\0"),
        t0(),
        &mut out,
    );
    assert_eq!(s.phase(), Phase::Closed);
    assert_eq!(tags(&mut out.client), b"E");
}

#[test]
fn malformed_upstream_message_fails_the_session() {
    let (mut s, mut out) = session();
    s.on_backend(fe(b'Z', b"?"), t0(), &mut out);
    assert_eq!(s.phase(), Phase::Closed);
    assert_eq!(tags(&mut out.client), b"E");
}

#[test]
fn transaction_status_follows_ready_for_query() {
    let (mut s, mut out) = session();
    s.on_frontend(fe(b'Q', b"begin\0"), t0(), &mut out);
    s.on_backend(complete("BEGIN"), t0(), &mut out);
    s.on_backend(rfq(b'T'), t0(), &mut out);
    assert_eq!(s.tx_status(), b'T');
    assert_eq!(
        out.events,
        vec![Event::Statement {
            kind: CommandKind::Transaction,
            elapsed: Duration::ZERO
        }]
    );
}

#[test]
fn masks_show_only_what_the_role_may_see() {
    use crate::policy::MaskKind;
    assert_eq!(
        crate::encryption::mask(MaskKind::Last4, "123-45-6789"),
        "***-**-6789"
    );
    assert_eq!(crate::encryption::mask(MaskKind::Last4, "abc"), "abc");
    assert_eq!(
        crate::encryption::mask(MaskKind::Year, "1912-06-23"),
        "1912"
    );
    assert_eq!(
        crate::encryption::mask(MaskKind::Year, "2020-01-02 03:04:05+00"),
        "2020"
    );
    assert_eq!(
        crate::encryption::mask(MaskKind::Year, "0044-03-15 BC"),
        "0044 BC"
    );
    assert_eq!(
        crate::encryption::mask(MaskKind::Redact, "Ada Lovelace"),
        "***"
    );
}

/// An error in the extended protocol that arrives before the client's Sync: the messages
/// the client sends after it, up to that Sync, are skipped by the server and owed nothing
/// (issue 11: the queue once kept them, and later responses, a refusal's among them, were
/// matched to the wrong statements).
#[test]
fn messages_after_an_early_error_up_to_sync_are_owed_nothing() {
    let (mut s, mut out) = session();
    for f in [parse(), bind(), execute(), fe(b'H', b"")] {
        s.on_frontend(f, t0(), &mut out);
    }
    for f in [fe(b'1', b""), fe(b'2', b""), error()] {
        s.on_backend(f, t0(), &mut out);
    }
    // the rest of the pipeline arrives after the error
    for f in [bind(), execute(), bind(), execute(), sync()] {
        s.on_frontend(f, t0(), &mut out);
    }
    s.on_frontend(fe(b'Q', b"select 1\0"), t0(), &mut out);
    s.on_backend(rfq(b'I'), t0(), &mut out);
    assert!(s.awaiting_upstream(), "the simple query is still owed");
    for f in [complete("SELECT 1"), rfq(b'I')] {
        s.on_backend(f, t0(), &mut out);
    }
    assert!(!s.awaiting_upstream());
    assert_eq!(tags(&mut out.client), b"12EZCZ");
}

fn audited_session() -> (Session, Outbound) {
    let audit = SessionAudit {
        keys: Arc::new(AuditKeys::from_seed(&[7; 32])),
        template: Arc::new(Record {
            user: Some("bob".into()),
            ..Record::default()
        }),
    };
    let (s, out) = session();
    (s.with_audit(audit), out)
}

#[test]
fn a_statement_is_held_until_its_audit_record_is_written() {
    let (mut s, mut out) = audited_session();
    s.on_frontend(fe(b'Q', b"select 'secret'\0"), t0(), &mut out);
    assert!(s.holding());
    assert!(out.upstream.is_empty(), "forwarded before it was audited");
    assert_eq!(out.gated.len(), 1);
    let begin = out.gated.pop().unwrap();
    assert_eq!(begin.statement.as_deref(), Some("select ?"));
    assert_eq!(begin.user.as_deref(), Some("bob"));
    // Nothing more is taken from the client while the message is held.
    s.on_frontend(fe(b'Q', b"select 2\0"), t0(), &mut out);
    assert!(out.gated.is_empty() && out.upstream.is_empty());
    s.audited(Ok(vec![41]), t0(), &mut out);
    assert!(!s.holding());
    assert_eq!(tags(&mut out.upstream), b"Q");
    s.on_backend(complete("SELECT 1"), t0(), &mut out);
    s.on_backend(rfq(b'I'), t0(), &mut out);
    assert_eq!(out.audit.len(), 1);
    assert_eq!(out.audit[0].begin, Some(41));
    assert_eq!(out.audit[0].rows, Some(1));
}

#[test]
fn an_unwritable_audit_log_refuses_through_the_refusal_path() {
    let (mut s, mut out) = audited_session();
    s.on_frontend(fe(b'Q', b"select 1\0"), t0(), &mut out);
    let unwritable = crate::audit::AuditError::Io {
        path: "audit".into(),
        cause: std::io::Error::other("disk full"),
    };
    s.audited(Err(unwritable), t0(), &mut out);
    assert_eq!(out.events, [Event::Refused("58030")]);
    let sent = out.upstream.split();
    assert!(
        String::from_utf8_lossy(&sent).contains("phigate refusal"),
        "the refusal statement runs in its place"
    );
    // PostgreSQL raises the refusal; the client sees 58030 in protocol order.
    let raised = fe(b'E', b"SERROR\0VERROR\0CP0001\0Mphigate refusal\0\0");
    s.on_backend(raised, t0(), &mut out);
    s.on_backend(rfq(b'I'), t0(), &mut out);
    let shown = String::from_utf8_lossy(&out.client).into_owned();
    assert!(shown.contains("58030"), "{shown}");
    assert!(
        out.audit.is_empty(),
        "a statement that did not run has no outcome"
    );
}

/// Parse of statement "s" with `sql`.
fn parse_named(sql: &str) -> Frame {
    let mut body = b"s\0".to_vec();
    body.extend_from_slice(sql.as_bytes());
    body.extend_from_slice(b"\0\0\0");
    fe(b'P', &body)
}

fn bind_named() -> Frame {
    fe(b'B', b"\0s\0\0\0\0\0\0\0")
}

/// The statement text the held Execute's record names; the Execute is then released.
fn executed_text(s: &mut Session, out: &mut Outbound) -> String {
    s.on_frontend(execute(), t0(), out);
    let text = out
        .gated
        .pop()
        .and_then(|r| r.statement)
        .unwrap_or_default();
    s.audited(Ok(vec![1]), t0(), out);
    text
}

/// A name prepared again after SQL deallocated it (DEALLOCATE, DISCARD ALL): PostgreSQL
/// accepts the Parse, and the new statement is the one bound, pipelined or not; a Bind
/// after a Sync that follows the unanswered Parse is refused (it may bind the old one).
#[test]
fn a_name_prepared_again_is_the_new_statement_once_postgres_accepts_it() {
    let (mut s, mut out) = audited_session();
    s.on_frontend(parse_named("select 1"), t0(), &mut out);
    s.on_frontend(sync(), t0(), &mut out);
    s.on_backend(fe(b'1', b""), t0(), &mut out);
    s.on_backend(rfq(b'I'), t0(), &mut out);
    // DEALLOCATE s (by SQL) happened; the client prepares s again and binds at once
    s.on_frontend(parse_named("select 2"), t0(), &mut out);
    s.on_frontend(bind_named(), t0(), &mut out);
    assert_eq!(executed_text(&mut s, &mut out), "select ?");
    assert_eq!(out.gated.len(), 0);
    // a Sync between the Parse and the Bind: refused until the Parse is answered
    s.on_frontend(sync(), t0(), &mut out);
    out.events.clear();
    s.on_frontend(bind_named(), t0(), &mut out);
    assert_eq!(out.events, [Event::Refused("0A000")]);
    s.on_frontend(sync(), t0(), &mut out);
    answer_select_1(&mut s, &mut out);
    // the refusal's hidden completions and error, then the last Sync
    for f in [fe(b'1', b""), fe(b'2', b""), fe(b'3', b"")] {
        s.on_backend(f, t0(), &mut out);
    }
    let raised = fe(b'E', b"SERROR\0VERROR\0CP0001\0Mphigate refusal\0\0");
    s.on_backend(raised, t0(), &mut out);
    s.on_backend(rfq(b'I'), t0(), &mut out);
    s.on_backend(rfq(b'I'), t0(), &mut out);
    // answered: the new statement holds the name
    s.on_frontend(bind_named(), t0(), &mut out);
    let portal = s.registry.portal("").and_then(|p| p.audited.clone());
    assert_eq!(portal.map(|t| t.values.clone()), Some(vec![b"2".to_vec()]));
}

#[test]
fn terminate_at_rest_leaves_the_upstream_session_reusable_and_is_not_forwarded() {
    let terminate = || fe(b'X', b"");
    // straight after login, and after an answered extended query
    let (mut s, mut out) = session();
    s.on_frontend(terminate(), t0(), &mut out);
    assert!(s.upstream_reusable());
    assert!(out.upstream.is_empty());
    let (mut s, mut out) = session();
    for f in [parse(), bind(), execute(), sync()] {
        s.on_frontend(f, t0(), &mut out);
    }
    answer_select_1(&mut s, &mut out);
    out.upstream.clear();
    s.on_frontend(terminate(), t0(), &mut out);
    assert!(s.upstream_reusable());
    assert!(out.upstream.is_empty());

    // not at rest: the Terminate goes upstream, which ends the server's session
    let not_at_rest: [(&[Frame], &[Frame]); 3] = [
        // answered (Flush), but the server is mid-way through the extended protocol
        (
            &[parse(), bind(), execute(), fe(b'H', b"")],
            &[fe(b'1', b""), fe(b'2', b""), complete("SELECT 1")],
        ),
        // inside a transaction
        (&[fe(b'Q', b"begin\0")], &[complete("BEGIN"), rfq(b'T')]),
        // a response still owed
        (&[fe(b'Q', b"select 1\0")], &[]),
    ];
    for (sent, answers) in not_at_rest {
        let (mut s, mut out) = session();
        for f in sent {
            s.on_frontend(f.clone(), t0(), &mut out);
        }
        for f in answers {
            s.on_backend(f.clone(), t0(), &mut out);
        }
        out.upstream.clear();
        s.on_frontend(terminate(), t0(), &mut out);
        assert!(!s.upstream_reusable());
        assert_eq!(tags(&mut out.upstream), b"X");
    }
}
