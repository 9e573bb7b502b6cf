//! Framing: any bytes, as a client or a server sends them, split into messages under a
//! size limit; never a panic, and every frame is exactly what its length field says.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use phigate::protocol::frame::{HEADER_LEN, split_client_frame, split_frame};

fuzz_target!(|data: &[u8]| {
    for client in [true, false] {
        let mut buf = BytesMut::from(data);
        loop {
            let before = buf.len();
            let next = if client {
                split_client_frame(&mut buf, 1 << 16)
            } else {
                split_frame(&mut buf, 1 << 16)
            };
            match next {
                Ok(Some(frame)) => {
                    assert!(frame.raw().len() >= HEADER_LEN);
                    assert_eq!(before - buf.len(), frame.raw().len());
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
});
