//! Cost of the audit log per statement: the begin record (written to the OS before the
//! statement is forwarded, `group` durability) and the end record (buffered), as a session
//! writes them, and the parts of a record: sealing (JSON, SHA-256, HMAC) and value hashes.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use std::sync::Arc;

use phigate::audit::{
    AuditKeys, AuditLog, Auditor, Decision, Durability, Kind, LogOptions, Record,
};

fn template() -> Record {
    Record {
        session: Some(1_764_027_553_000_000),
        user: Some("dr.smith".into()),
        role: Some("clinician".into()),
        client_addr: Some("10.1.2.3".into()),
        application_name: Some("pgbench".into()),
        tls: Some(true),
        ..Record::default()
    }
}

fn audit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let auditor = Auditor::open(
        &dir.path().join("audit"),
        &dir.path().join("audit.ed25519"),
        LogOptions {
            instance: "bench".into(),
            segment_bytes: 64 << 20,
            checkpoint_every: 10_000,
            durability: Durability::Group,
        },
        Duration::from_secs(10),
    )
    .expect("audit log");
    let begin = {
        let mut r = template();
        r.kind = Some(Kind::Statement);
        r.statement = Some("SELECT abalance FROM pgbench_accounts WHERE aid = $1".into());
        r.values = vec![auditor.value_hash(b"4242")];
        r.decision = Some(Decision::Allowed);
        r
    };
    // as sessions write it: nothing its begin record holds
    let end = {
        let mut r = Record {
            session: template().session,
            ..Record::default()
        };
        r.kind = Some(Kind::StatementEnd);
        r.rows = Some(1);
        r.duration_us = Some(120);
        r.decision = Some(Decision::Allowed);
        r
    };
    c.bench_function("audit/statement (begin written, end buffered)", |b| {
        b.iter(|| {
            let seq = auditor.append(begin.clone(), true).expect("begin");
            let mut e = end.clone();
            e.begin = Some(seq);
            black_box(auditor.append(e, false).expect("end"))
        })
    });
    // what building costs (JSON, hashes, MAC chain) without a write per record: both
    // records buffered in a log of its own, written out 64 KiB at a time, with no lock
    // and no syncer
    let mut log = AuditLog::open(
        &dir.path().join("built"),
        Arc::new(AuditKeys::from_seed(&[7; 32])),
        LogOptions {
            instance: "bench".into(),
            segment_bytes: 1 << 40,
            checkpoint_every: 10_000,
            durability: Durability::Group,
        },
    )
    .expect("audit log");
    c.bench_function("audit/statement built (both buffered)", |b| {
        b.iter(|| {
            let seq = log.append(begin.clone(), false).expect("begin");
            let mut e = end.clone();
            e.begin = Some(seq);
            black_box(log.append(e, false).expect("end"))
        })
    });
    c.bench_function("audit/value hash", |b| {
        b.iter(|| black_box(auditor.value_hash(black_box(b"123-45-6789"))))
    });
    let _ = auditor.close();
}

criterion_group!(benches, audit);
criterion_main!(benches);
