//! The deframer and an established channel's reader on arbitrary bytes, split arbitrarily.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nullport_protocol::{Deframer, fuzzing};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let (mut _sender, mut receiver) = fuzzing::channel_pair();
    let mut deframer = Deframer::new(65_535);
    let mut out = Vec::new();
    let mut input = rest;
    loop {
        loop {
            match deframer.next_message() {
                Ok(Some(m)) => {
                    if receiver.open(m, &mut out).is_err() {
                        assert!(out.is_empty(), "bytes delivered from forged input");
                        return;
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        if input.is_empty() {
            let _ = deframer.finish();
            return;
        }
        let n = deframer.push(&input[..chunk.min(input.len())]);
        input = &input[n..];
    }
});
