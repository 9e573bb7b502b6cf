//! What the session benches share: protocol messages as bytes, and one client/server
//! round trip through the session core as the relay drives it, without sockets.

use std::hint::black_box;
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use phigate::protocol::frame::split_frame;
use phigate::session::{Outbound, Session};

/// Appends a message: its tag, its length and `body`.
pub fn msg(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
}

/// One round trip: `request` from the client, `response` from the server. Raw bytes in,
/// as the driver sees them: framing is part of the cost. A held message's records are
/// taken and reported written (seqs counted here), as the relay does after its append.
pub fn round_trip(session: &mut Session, out: &mut Outbound, request: &[u8], response: &[u8]) {
    let now = Instant::now();
    let mut input = BytesMut::from(request);
    while let Some(f) = split_frame(&mut input, 1 << 28).expect("frame") {
        session.on_frontend(f, now, out);
        if !out.gated.is_empty() {
            let seqs = (0..out.gated.len() as u64).collect();
            black_box(out.gated.drain(..).count());
            session.audited(Ok(seqs), now, out);
        }
    }
    let mut input = BytesMut::from(response);
    while let Some(f) = split_frame(&mut input, 1 << 30).expect("frame") {
        session.on_backend(f, now, out);
    }
    black_box(&out.client);
    black_box(out.audit.drain(..).count());
    out.client.clear();
    out.upstream.clear();
    out.events.clear();
}
