//! Per-statement cost of the session core on a pass-through statement: one `pgbench -S`
//! exchange (prepared: Bind/Execute/Sync, and simple: Query) framed, tracked and relayed,
//! without sockets.

use std::hint::black_box;
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use criterion::{Criterion, criterion_group, criterion_main};
use phigate::protocol::frame::split_frame;
use phigate::session::{Outbound, Session};

fn msg(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
}

fn responses(out: &mut BytesMut) {
    msg(out, b'D', b"\x00\x01\x00\x00\x00\x041234");
    msg(out, b'C', b"SELECT 1\0");
    msg(out, b'Z', b"I");
}

fn exchange(c: &mut Criterion, name: &str, request: &[u8], response: &[u8]) {
    let mut session = Session::new("phigate:bench".into(), String::new(), None);
    let mut out = Outbound::default();
    // Raw bytes in, as the driver sees them: framing is part of the cost.
    c.bench_function(name, |b| {
        b.iter(|| {
            let now = Instant::now();
            let mut input = BytesMut::from(request);
            while let Some(f) = split_frame(&mut input, 1 << 28).unwrap() {
                session.on_frontend(f, now, &mut out);
            }
            let mut input = BytesMut::from(response);
            while let Some(f) = split_frame(&mut input, 1 << 30).unwrap() {
                session.on_backend(f, now, &mut out);
            }
            black_box(&out.client);
            out.client.clear();
            out.upstream.clear();
            out.events.clear();
        })
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
    exchange(c, "session/pgbench-S prepared", &prepared, &prepared_resp);

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
    exchange(c, "session/pgbench-S simple", &simple, &simple_resp);
}

criterion_group!(benches, bench);
criterion_main!(benches);
