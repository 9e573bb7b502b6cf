//! Malformed, truncated, oversized and out-of-order input: 08P01 and a closed connection,
//! never a panic or a hang, and other sessions are unaffected.

mod common;

use common::raw::{self, Raw, msg, query};
use common::{Options, start};

fn opts() -> Options {
    Options {
        listen_extra: "max_message_size = \"64KiB\"",
        ..Options::default()
    }
}

/// Sends `bytes` after login and returns everything received until the close.
async fn after_login(proxy: &common::Proxy, bytes: &[u8]) -> Vec<raw::Msg> {
    let mut r = Raw::login(proxy.addr, "alice", "alice-pw").await;
    r.send(bytes).await;
    r.until_closed().await
}

fn assert_08p01(msgs: &[raw::Msg]) {
    let last = msgs.last().expect("an error before the close");
    assert_eq!(last.0, b'E', "{msgs:?}");
    assert_eq!(
        raw::sqlstate(&last.1),
        "08P01",
        "{}",
        String::from_utf8_lossy(&last.1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_get_08p01_and_a_close() {
    let (_pg, proxy) = start(opts()).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unknown type", msg(b'?', b"")),
        // refused from the header, without waiting for the 32 KiB it announces
        ("unknown type, header only", vec![0, 0, 0, 0x80, 0]),
        ("password after login", msg(b'p', b"secret\0")),
        ("query without terminator", msg(b'Q', b"select 1")),
        ("truncated bind", msg(b'B', b"\0\0\0\x01")),
        (
            "bind with a huge parameter length",
            msg(b'B', b"\0\0\0\0\0\x01\x7f\xff\xff\xff\0\0"),
        ),
        ("describe of nothing", msg(b'D', b"Xfoo\0")),
        ("negative length", vec![b'Q', 0xff, 0xff, 0xff, 0xf0]),
        ("length below four", vec![b'Q', 0, 0, 0, 2]),
        ("oversized", {
            let mut v = vec![b'Q'];
            v.extend_from_slice(&(1_000_000i32).to_be_bytes());
            v
        }),
    ];
    for (name, bytes) in cases {
        let msgs = after_login(&proxy, &bytes).await;
        assert_08p01(&msgs);
        assert_eq!(msgs.len(), 1, "{name}: only the error, got {msgs:?}");
    }
    // A message just under the limit is fine, one just over is refused.
    let fits = query(&format!("select '{}'", "x".repeat(60_000)));
    let mut r = Raw::login(proxy.addr, "alice", "alice-pw").await;
    r.send(&fits).await;
    let (tag, _) = r.recv().await.unwrap();
    assert_eq!(tag, b'T');
    let too_big = query(&format!("select '{}'", "x".repeat(70_000)));
    assert_08p01(&after_login(&proxy, &too_big).await);
    assert!(proxy.metric("phigate_protocol_errors_total").await >= 10.0);
    proxy.alice().await.simple_query("select 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_error_waits_for_responses_already_in_flight() {
    let (_pg, proxy) = start(opts()).await;
    let mut bytes = query("select pg_sleep(0.3), 'first'");
    bytes.extend(msg(b'?', b""));
    let msgs = after_login(&proxy, &bytes).await;
    let tags: Vec<u8> = msgs.iter().map(|m| m.0).collect();
    assert_eq!(tags, b"TDCZE", "responses first, then the error");
    assert_08p01(&msgs);
    // The same with an unsynced extended-protocol pipeline: phigate flushes it first.
    let mut bytes = msg(b'P', b"\0select 1\0\0\0");
    bytes.extend(msg(b'B', b"\0\0\0\0\0\0\0\0"));
    bytes.extend(msg(b'E', b"\0\0\0\0\0"));
    bytes.extend(msg(b'C', b"Q\0"));
    let msgs = after_login(&proxy, &bytes).await;
    let tags: Vec<u8> = msgs.iter().map(|m| m.0).collect();
    assert_eq!(tags, b"12DCE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_session_does_not_wait_forever_for_the_server() {
    let (_pg, proxy) = start(opts()).await;
    let mut bytes = query("select pg_sleep(30)");
    bytes.extend(msg(b'?', b""));
    let started = std::time::Instant::now();
    let msgs = after_login(&proxy, &bytes).await;
    let tags: Vec<u8> = msgs.iter().map(|m| m.0).collect();
    // The statement's RowDescription may or may not have arrived; the session ends with an
    // error well before the statement would have finished.
    assert_eq!(tags.last(), Some(&b'E'), "{tags:?}");
    assert_eq!(raw::sqlstate(&msgs.last().unwrap().1), "08006");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_startup_packets_are_refused() {
    let (_pg, proxy) = start(opts()).await;
    for bytes in [
        vec![0, 0, 0, 4],                   // length below a startup packet
        vec![0x7f, 0, 0, 0],                // absurd length
        vec![0, 0, 0, 9, 0, 3, 0, 0, b'u'], // unterminated parameters
        vec![0, 0, 0, 8, 0, 2, 0, 0],       // protocol 2.0
        b"GET / HTTP/1.1\r\n\r\n".to_vec(), // not PostgreSQL at all
        vec![0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f, 0, 0, 0, 8], // bytes pipelined behind SSLRequest
    ] {
        let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(&bytes).await.unwrap();
        let mut reply = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            s.read_to_end(&mut reply),
        )
        .await
        .expect("no hang")
        .ok();
        assert!(
            reply.is_empty() || reply.contains(&b'E') || reply == b"N",
            "{bytes:?} -> {reply:?}"
        );
    }
    // An impossible startup length (node-postgres sends Terminate before its startup
    // packet when ended at once) is closed without a word, as PostgreSQL does.
    for bytes in [vec![b'X', 0, 0, 0, 4], vec![0x7f, 0, 0, 0]] {
        let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(&bytes).await.unwrap();
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            s.read_to_end(&mut reply),
        )
        .await
        .expect("no hang");
        assert!(reply.is_empty(), "{bytes:?} -> {reply:?}");
    }
    proxy.alice().await.simple_query("select 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_garbage_never_panics_or_hangs() {
    let (_pg, proxy) = start(opts()).await;
    let bystander = proxy.alice().await;
    // A deterministic generator, so failures reproduce.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..60 {
        let len = (next() % 300) as usize + 1;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Often start with a real message type, to get past the first check.
        if next() % 2 == 0 {
            bytes[0] = b"QPBDECSHdcfFX"[(next() % 13) as usize];
        }
        let mut r = Raw::login(proxy.addr, "alice", "alice-pw").await;
        r.send(&bytes).await;
        r.send(&query("select 1")).await;
        // Either the garbage was (by chance) acceptable, or an error and a close; the
        // client must get an answer or a close within the timeout (recv panics on a hang).
        while let Some((tag, body)) = r.recv().await {
            if tag == b'E' && raw::sqlstate(&body) == "08P01" {
                assert!(r.recv().await.is_none(), "closed after a protocol error");
                break;
            }
            if tag == b'Z' {
                break;
            }
        }
        bystander
            .simple_query("select 1")
            .await
            .expect("other sessions are unaffected");
    }
}

/// A fast-path FunctionCall names its function by OID, out of the firewall's sight: only
/// the large-object functions may run this way. A call to set_config is refused (42501)
/// and the session goes on (phigate's settings cannot be read back through phigate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_path_calls_other_than_large_objects_are_refused() {
    let (_pg, proxy) = start(opts()).await;
    let mut r = Raw::login(proxy.addr, "alice", "alice-pw").await;
    let mut body = Vec::new();
    body.extend_from_slice(&2078u32.to_be_bytes()); // set_config
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&3i16.to_be_bytes());
    for arg in ["phigate.role", "admin", "false"] {
        body.extend_from_slice(&(arg.len() as i32).to_be_bytes());
        body.extend_from_slice(arg.as_bytes());
    }
    body.extend_from_slice(&0i16.to_be_bytes());
    r.send(&msg(b'F', &body)).await;
    let error = r.recv().await.unwrap();
    assert_eq!(error.0, b'E');
    assert_eq!(raw::sqlstate(&error.1), "42501");
    assert_eq!(r.recv().await.unwrap().0, b'Z');
    r.send(&query("select current_setting('phigate.role')"))
        .await;
    let error = r.recv().await.unwrap();
    assert_eq!(raw::sqlstate(&error.1), "42501");
    assert_eq!(r.recv().await.unwrap().0, b'Z');
    r.send(&query("select 'still open'")).await;
    let mut values = Vec::new();
    while let Some(m) = r.recv().await {
        if m.0 == b'D' {
            values.push(String::from_utf8_lossy(&m.1[6..]).into_owned());
        }
        if m.0 == b'Z' {
            break;
        }
    }
    assert_eq!(values, ["still open"]);
}
