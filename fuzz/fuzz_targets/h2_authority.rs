//! The HTTP/2 `:authority` rewriter on unix/vsock connections reads bytes from any local
//! client: it must never panic, and its output must not depend on how the bytes arrive
//! (one read or many small ones), errors included.
#![no_main]

use guest_transport::authority::{AuthorityRewriter, PREFACE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, body)) = data.split_first() else {
        return;
    };
    // Mostly HTTP/2 (so frames and HPACK get exercised), sometimes anything.
    let mut input = Vec::new();
    if chunk & 0x80 == 0 {
        input.extend_from_slice(PREFACE);
    }
    input.extend_from_slice(body);

    let mut whole = AuthorityRewriter::new();
    let whole_result = whole.feed(&input);

    let mut split = AuthorityRewriter::new();
    let mut split_result = Ok(());
    for part in input.chunks(usize::from(chunk & 0x7f).max(1)) {
        split_result = split.feed(part);
        if split_result.is_err() {
            break;
        }
    }
    assert_eq!(whole_result, split_result);
    if whole_result.is_ok() {
        assert_eq!(whole.output(), split.output());
        assert_eq!(whole.rewritten(), split.rewritten());
    }
});
