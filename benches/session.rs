//! Per-statement cost of the session core on a pass-through statement: one `pgbench -S`
//! exchange (prepared: Bind/Execute/Sync, and simple: Query) framed, tracked and relayed,
//! without sockets; and the same with the audit on, its records built (redacted text,
//! keyed hashes) and released as the relay does, but not written (`cargo bench --bench
//! audit` measures the writing).

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use criterion::{Criterion, criterion_group, criterion_main};
use phigate::audit::{AuditKeys, Record};
use phigate::session::{Outbound, Session, SessionAudit};

mod common;
use common::{msg, round_trip};

fn responses(out: &mut BytesMut) {
    msg(out, b'D', b"\x00\x01\x00\x00\x00\x041234");
    msg(out, b'C', b"SELECT 1\0");
    msg(out, b'Z', b"I");
}

/// A session as phigate opens one, audited or not.
fn session(audited: bool) -> Session {
    let session = Session::new("phigate:bench".into(), String::new(), None);
    if !audited {
        return session;
    }
    session.with_audit(SessionAudit {
        keys: Arc::new(AuditKeys::from_seed(&[7; 32])),
        template: Arc::new(Record {
            session: Some(1_764_027_553_000_000),
            user: Some("dr.smith".into()),
            role: Some("clinician".into()),
            client_addr: Some("10.1.2.3".into()),
            application_name: Some("pgbench".into()),
            tls: Some(false),
            ..Record::default()
        }),
    })
}

/// `setup` (a Parse, say) once, then the round trip of `request` and `response`.
fn exchange(c: &mut Criterion, name: &str, audited: bool, setup: [&[u8]; 2], trip: [&[u8]; 2]) {
    let mut session = session(audited);
    let mut out = Outbound::default();
    round_trip(&mut session, &mut out, setup[0], setup[1]);
    c.bench_function(name, |b| {
        b.iter(|| round_trip(&mut session, &mut out, trip[0], trip[1]))
    });
}

fn bench(c: &mut Criterion) {
    let mut prepared = BytesMut::new();
    let mut bind = BytesMut::new();
    bind.put_slice(b"\0P0_1\0");
    bind.put_i16(1);
    bind.put_i16(1);
    bind.put_i16(1);
    bind.put_i32(4);
    bind.put_i32(4242);
    bind.put_i16(1);
    bind.put_i16(0);
    msg(&mut prepared, b'B', &bind);
    msg(&mut prepared, b'E', b"\0\0\0\0\0");
    msg(&mut prepared, b'S', b"");
    let mut prepared_resp = BytesMut::new();
    msg(&mut prepared_resp, b'2', b"");
    responses(&mut prepared_resp);
    // what pgbench sends once per connection: Parse, Describe, Sync
    let mut parse = BytesMut::new();
    msg(
        &mut parse,
        b'P',
        b"P0_1\0SELECT abalance FROM pgbench_accounts WHERE aid = $1;\0\0\x01\0\0\0\x17",
    );
    msg(&mut parse, b'D', b"SP0_1\0");
    msg(&mut parse, b'S', b"");
    let mut parse_resp = BytesMut::new();
    msg(&mut parse_resp, b'1', b"");
    msg(&mut parse_resp, b't', b"\0\x01\0\0\0\x17");
    msg(
        &mut parse_resp,
        b'T',
        b"\x00\x01abalance\0\0\0\0\0\0\0\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0",
    );
    msg(&mut parse_resp, b'Z', b"I");
    let setup: [&[u8]; 2] = [&parse, &parse_resp];
    let trip: [&[u8]; 2] = [&prepared, &prepared_resp];
    exchange(c, "session/pgbench-S prepared", false, setup, trip);
    exchange(c, "session/pgbench-S prepared, audited", true, setup, trip);

    let mut simple = BytesMut::new();
    msg(
        &mut simple,
        b'Q',
        b"SELECT abalance FROM pgbench_accounts WHERE aid = 4242;\0",
    );
    let mut simple_resp = BytesMut::new();
    msg(
        &mut simple_resp,
        b'T',
        b"\x00\x01abalance\0\0\0\0\0\0\0\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0",
    );
    responses(&mut simple_resp);
    let trip: [&[u8]; 2] = [&simple, &simple_resp];
    exchange(c, "session/pgbench-S simple", false, [b"", b""], trip);
    exchange(
        c,
        "session/pgbench-S simple, audited",
        true,
        [b"", b""],
        trip,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
