//! Cancel keys: clients get the upstream backend's process id (it is no secret, and
//! applications compare it with `pg_backend_pid()` and NOTIFY's sender) with phigate's own
//! secret; a CancelRequest carrying such a key is forwarded to the upstream backend with the
//! server's secret. Unknown keys are dropped.

use std::time::Duration;

use bytes::BytesMut;
use dashmap::DashMap;
use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::protocol::build;
use crate::upstream::{UpstreamTarget, open_stream};

/// The key phigate gave a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ClientKey {
    /// process id
    pub pid: i32,
    /// secret
    pub secret: i32,
}

/// Live sessions' keys, client key to upstream key.
#[derive(Default)]
pub(crate) struct CancelRegistry {
    map: DashMap<ClientKey, (i32, Vec<u8>)>,
}

impl CancelRegistry {
    /// Registers an upstream key and returns the client key for it: the same process id,
    /// a fresh secret.
    pub(crate) fn register(&self, upstream: (i32, Vec<u8>)) -> ClientKey {
        let mut rng = rand::rng();
        loop {
            let key = ClientKey {
                pid: upstream.0,
                secret: rng.random(),
            };
            if let dashmap::Entry::Vacant(v) = self.map.entry(key) {
                v.insert(upstream);
                return key;
            }
        }
    }

    /// Forgets a session's key.
    pub(crate) fn unregister(&self, key: ClientKey) {
        self.map.remove(&key);
    }

    /// Forwards a client's CancelRequest upstream when its key is known.
    pub async fn cancel(&self, target: &UpstreamTarget, pid: i32, secret: &[u8]) {
        let Ok(secret) = <[u8; 4]>::try_from(secret) else {
            return;
        };
        let key = ClientKey {
            pid,
            secret: i32::from_be_bytes(secret),
        };
        let Some(upstream) = self.map.get(&key).map(|e| e.value().clone()) else {
            tracing::debug!("cancel request with an unknown key dropped");
            return;
        };
        let mut msg = BytesMut::new();
        build::cancel_request(upstream.0, &upstream.1, &mut msg);
        match open_stream(target).await {
            Ok(mut s) => {
                if let Err(e) = s.write_all(&msg).await {
                    tracing::warn!(error = %e, "could not forward a cancel request");
                    return;
                }
                let _ = s.shutdown().await;
                taken(&mut s).await;
            }
            Err(e) => tracing::warn!(error = %e, "could not forward a cancel request"),
        }
    }
}

/// How long a forwarded cancel request waits for the server to close its connection.
const TAKEN_WITHIN: Duration = Duration::from_secs(10);

/// Waits until the server closes the cancel connection, which it does once it has signalled
/// the backend. Only then is the client's connection closed: libpq waits for that close
/// before it sends its next statement, so a cancel that arrived later could stop that
/// statement instead of the one the client meant.
async fn taken(s: &mut (impl AsyncRead + Unpin)) {
    let mut sink = [0u8; 64];
    let drained = async {
        while let Ok(n) = s.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    if tokio::time::timeout(TAKEN_WITHIN, drained).await.is_err() {
        tracing::warn!("the server did not close a forwarded cancel request's connection");
    }
}
