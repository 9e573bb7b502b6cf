//! The startup packet (and SSLRequest, CancelRequest, GSSENCRequest): never a panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use phigate::protocol::startup::split_startup;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = split_startup(&mut buf) {}
});
