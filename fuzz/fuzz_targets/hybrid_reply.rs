//! The hybrid vsock reply parser (`OK <port>\n`) must never panic, and accept only replies
//! that really are `OK` followed by a number.
#![no_main]

use guest_transport::hybrid::parse_connect_reply;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(port) = parse_connect_reply(data) {
        let text = std::str::from_utf8(data).expect("accepted reply must be UTF-8");
        assert!(text.starts_with("OK "), "accepted {text:?}");
        assert!(text.contains(&port.to_string()), "accepted {text:?} as {port}");
    }
});
