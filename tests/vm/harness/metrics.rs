//! The agent's Prometheus metrics as the host gets them (from `guestctl proxy`, which scrapes
//! the guest's /metrics port over vsock), read back sample by sample.

use std::io::{Read, Write};

use super::error::{Result, VmError};

/// The agent's default /metrics vsock port in a guest.
pub const METRICS_PORT: u32 = 2696;

/// Sends `GET path` (HTTP/1.0) on a connected stream and returns the body of a 200 answer.
pub fn http_get_on<S: Read + Write>(mut stream: S, what: &str, path: &str) -> Result<String> {
    let io = |e| VmError::io(what.to_string(), e);
    stream
        .write_all(
            format!("GET {path} HTTP/1.0\r\nHost: guest\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .map_err(io)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(io)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| VmError::Protocol(format!("{what}: no HTTP header in {response:?}")))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(VmError::Protocol(format!("{what}: {status}")));
    }
    Ok(body.to_string())
}

/// The value of the sample `name{labels}` in Prometheus text, where every `label="value"` pair
/// in `labels` must be present on the sample (others may be too).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (metric, rest) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            return None;
        }
        let all = labels
            .iter()
            .all(|(k, v)| rest.split(',').any(|p| p == format!("{k}=\"{v}\"")));
        all.then(|| value.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_once(answer: &'static str) -> std::os::unix::net::UnixStream {
        let (client, mut server) = std::os::unix::net::UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let mut req = [0u8; 256];
            let n = server.read(&mut req).unwrap();
            assert!(req[..n].starts_with(b"GET /metrics HTTP/1.0\r\n"));
            server.write_all(answer.as_bytes()).unwrap();
        });
        client
    }

    #[test]
    fn http_answers_are_checked() {
        let ok = serve_once("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nx 1\n");
        assert_eq!(http_get_on(ok, "t", "/metrics").unwrap(), "x 1\n");
        let err = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n");
        let e = http_get_on(err, "t", "/metrics").unwrap_err().to_string();
        assert!(e.contains("503"), "{e}");
    }

    #[test]
    fn samples_are_found_by_name_and_labels() {
        let t = "# HELP x y\n\
                 guest_fs_blocked_writers{mountpoint=\"/data\"} 2\n\
                 guest_fs_freeze_duration_seconds_sum{fstype=\"ext4\",mountpoint=\"/data\"} 1.5\n\
                 guest_ebpf_up 1\n";
        assert_eq!(sample(t, "guest_ebpf_up", &[]), Some(1.0));
        assert_eq!(
            sample(t, "guest_fs_blocked_writers", &[("mountpoint", "/data")]),
            Some(2.0)
        );
        assert_eq!(
            sample(
                t,
                "guest_fs_freeze_duration_seconds_sum",
                &[("mountpoint", "/data")]
            ),
            Some(1.5)
        );
        assert_eq!(
            sample(t, "guest_fs_blocked_writers", &[("mountpoint", "/x")]),
            None
        );
        assert_eq!(sample(t, "guest_fs", &[]), None);
    }
}
