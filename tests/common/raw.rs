//! A minimal wire-protocol client for sending what real drivers never send.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
    /// the process id of BackendKeyData, once logged in
    pub backend_pid: Option<i32>,
    /// the secret of BackendKeyData, once logged in
    pub backend_secret: Option<[u8; 4]>,
}

/// One message: type byte and body.
pub type Msg = (u8, Vec<u8>);

pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// SSLRequest.
pub const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A protocol 3.0 startup packet for `user` on database ehr.
pub fn startup_packet(user: &str) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_i32(196_608);
    for (k, v) in [("user", user), ("database", "ehr")] {
        body.put_slice(k.as_bytes());
        body.put_u8(0);
        body.put_slice(v.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut pkt = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    pkt.extend_from_slice(&body);
    pkt
}

/// A CancelRequest for the key (`pid`, `secret`).
pub fn cancel_request(pid: i32, secret: [u8; 4]) -> Vec<u8> {
    let mut pkt = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
    pkt.extend_from_slice(&pid.to_be_bytes());
    pkt.extend_from_slice(&secret);
    pkt
}

pub fn query(sql: &str) -> Vec<u8> {
    let mut b = sql.as_bytes().to_vec();
    b.push(0);
    msg(b'Q', &b)
}

impl Raw {
    /// Connects and sends a startup packet for `user` on database ehr.
    pub async fn startup(addr: std::net::SocketAddr, user: &str) -> Raw {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut raw = Raw {
            stream,
            buf: BytesMut::new(),
            backend_pid: None,
            backend_secret: None,
        };
        raw.send(&startup_packet(user)).await;
        raw
    }

    /// Connects and logs in with SCRAM; returns after the first ReadyForQuery.
    pub async fn login(addr: std::net::SocketAddr, user: &str, password: &str) -> Raw {
        let mut raw = Raw::startup(addr, user).await;
        let (tag, _) = raw.recv().await.expect("auth request");
        assert_eq!(tag, b'R');
        let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend_from_slice(&(scram.message().len() as i32).to_be_bytes());
        body.extend_from_slice(scram.message());
        raw.send(&msg(b'p', &body)).await;
        let (_, cont) = raw.recv().await.expect("SASLContinue");
        scram.update(&cont[4..]).unwrap();
        raw.send(&msg(b'p', scram.message())).await;
        loop {
            match raw.recv().await {
                Some((b'Z', _)) => return raw,
                Some((b'K', body)) => {
                    raw.backend_pid = body
                        .get(..4)
                        .map(|p| i32::from_be_bytes([p[0], p[1], p[2], p[3]]));
                    raw.backend_secret = body.get(4..8).and_then(|s| s.try_into().ok());
                }
                Some((b'E', body)) => panic!("login failed: {}", String::from_utf8_lossy(&body)),
                Some(_) => {}
                None => panic!("closed during login"),
            }
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        // The peer may already have closed; tests look at what comes back.
        let _ = self.stream.write_all(bytes).await;
    }

    /// The next message, or None when the connection closed. Panics after 10 s: the
    /// proxy must never leave a client hanging.
    pub async fn recv(&mut self) -> Option<Msg> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if self.buf.len() >= 5 {
                    let len =
                        i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                            as usize;
                    if self.buf.len() > len {
                        let m = self.buf.split_to(len + 1);
                        return Some((m[0], m[5..].to_vec()));
                    }
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("phigate left the client hanging")
    }

    /// Every message until the connection closes.
    pub async fn until_closed(&mut self) -> Vec<Msg> {
        let mut v = Vec::new();
        while let Some(m) = self.recv().await {
            v.push(m);
        }
        v
    }
}

/// The SQLSTATE in an ErrorResponse body.
pub fn sqlstate(body: &[u8]) -> String {
    body.split(|b| *b == 0)
        .find_map(|f| f.strip_prefix(b"C"))
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_default()
}
