//! Every parser that sees network bytes: must never panic on any input.
#![no_main]

use imapgate::proto::{args, command, literal, response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = command::parse_command_line(data);
    let _ = command::leading_tag(data);
    let _ = literal::announced_literal(data);
    let _ = response::classify(data);
    let _ = response::filter_capability_line(data);
    let _ = args::login_args(data);
    let _ = args::authenticate_args(data);
    let _ = args::id_args(data);
    let _ = imapgate::proxy_protocol::parse_v1(data);
    if let Some((fixed, block)) = data.split_first_chunk::<16>() {
        let _ = imapgate::proxy_protocol::v2_len(fixed);
        let _ = imapgate::proxy_protocol::parse_v2(fixed, block);
    }
});
