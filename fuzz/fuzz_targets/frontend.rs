//! Frontend messages (first byte: the type; the rest: the body) decoded as phigate
//! decodes them, and the backend messages phigate inspects: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phigate::protocol::frame::Frame;
use phigate::protocol::message::{
    Frontend, decode_command_tag, decode_error_fields, decode_parameter_status,
    decode_ready_status,
};

fuzz_target!(|data: &[u8]| {
    let Some((&tag, body)) = data.split_first() else {
        return;
    };
    let frame = Frame::new(tag, body);
    let _ = Frontend::decode(&frame);
    let _ = decode_error_fields(body);
    let _ = decode_ready_status(body);
    let _ = decode_command_tag(body);
    let _ = decode_parameter_status(body);
});
