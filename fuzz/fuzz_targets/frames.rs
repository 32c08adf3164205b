//! The frame layer on arbitrary input: the first byte picks the direction
//! (high bit clear: frames a client reads from a server; set: frames the
//! embedded server reads from a client) and the rest goes to
//! `vuer_client::fuzzing`, whose first byte picks how the stream is cut
//! into reads. Nothing may panic, and memory must follow the bytes that
//! arrived (the entry points assert it).

#![no_main]

use libfuzzer_sys::fuzz_target;
use vuer_client::fuzzing::{client_to_server, server_to_client};

fuzz_target!(|input: &[u8]| {
    let Some((&direction, data)) = input.split_first() else {
        return;
    };
    if direction & 0x80 == 0 {
        server_to_client(data);
    } else {
        client_to_server(data);
    }
});
