//! Frontend messages (first byte: the type; the rest: the body) decoded as phigate
//! decodes them, and the backend messages phigate inspects: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phigate::protocol::backend::Backend;
use phigate::protocol::frame::Frame;
use phigate::protocol::message::Frontend;

fuzz_target!(|data: &[u8]| {
    let Some((&tag, body)) = data.split_first() else {
        return;
    };
    let frame = Frame::new(tag, body);
    let _ = Frontend::decode(&frame);
    let _ = Backend::decode(&frame);
    let _ = phigate::protocol::backend::decode_parameter_status(body);
});
