//! The session core fed any sequence of client and server messages (in any order the
//! bytes say), with analysis, encryption and audit on: never a panic, and a held message
//! is always released.
//!
//! Input: chunks of `[direction, tag, len_hi, len_lo, body...]`; direction 0 is the
//! client, 1 the server, 2 the audit log writing the held message's records (even tag)
//! or failing to (odd tag).
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use phigate::audit::{AuditKeys, Record};
use phigate::policy::session_key::SessionKey;
use phigate::policy::{Delegation, WithoutEndUser};
use phigate::protocol::frame::Frame;
use phigate::session::{Guard, Outbound, Phase, Session, SessionAudit};
use phigate_fuzz::{enforcement, subject};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let guard = Guard {
        enforcement: enforcement(),
        subject: subject(),
        break_glass_for: Duration::from_secs(60),
        session_key: Arc::new(SessionKey::from_bytes([1; 32])),
        backend_pid: 7,
        started: (now, SystemTime::UNIX_EPOCH),
        budgets: Arc::new(phigate::policy::RowBudgets::new(now)),
        // inputs with an odd first byte are a delegating service's sessions (joy is an end user)
        delegation: data.first().filter(|b| *b & 1 == 1).map(|_| Delegation {
            comment: Some("db_user".into()),
            application_name: Some("app:{user}".into()),
            set: true,
            without_end_user: WithoutEndUser::Service,
        }),
    };
    let audit = SessionAudit {
        keys: Arc::new(AuditKeys::from_seed(&[2; 32])),
        template: Arc::new(Record::default()),
    };
    let mut session =
        Session::new("phigate:carol".into(), String::new(), Some(guard)).with_audit(audit);
    let mut out = Outbound::default();
    let mut seq = 0u64;
    let mut rest = data;
    while rest.len() >= 4 && session.phase() != Phase::Closed {
        let (direction, tag) = (rest[0] % 3, rest[1]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]])).min(rest.len() - 4);
        let body = &rest[4..4 + len];
        rest = &rest[4 + len..];
        let frame = Frame::new(tag, body);
        match direction {
            0 => session.on_frontend(frame, now, &mut out),
            1 => session.on_backend(frame, now, &mut out),
            _ => release(&mut session, &mut out, &mut seq, tag % 2 == 0, now),
        }
        out.audit.clear();
        out.client.clear();
        out.upstream.clear();
        out.events.clear();
    }
    release(&mut session, &mut out, &mut seq, true, now);
});

/// The driver's answer to a held message: its records written (with seqs) or not.
fn release(session: &mut Session, out: &mut Outbound, seq: &mut u64, written: bool, now: Instant) {
    if !session.holding() {
        return;
    }
    let records = std::mem::take(&mut out.gated);
    if written {
        let seqs = records
            .iter()
            .map(|_| {
                *seq += 1;
                *seq
            })
            .collect();
        session.audited(Ok(seqs), now, out);
    } else {
        let unwritable = phigate::audit::AuditError::Io {
            path: "audit".into(),
            cause: std::io::Error::other("full"),
        };
        session.audited(Err(unwritable), now, out);
    }
    assert!(!session.holding());
}
