//! The agent's Prometheus metrics as the host gets them: scraped over vsock (GET /metrics on the
//! guest's metrics port through the hybrid socket, the path `guestctl proxy` takes) and read
//! back sample by sample.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::error::{Result, VmError};

/// The agent's default /metrics vsock port in a guest.
pub const METRICS_PORT: u32 = 2696;

/// Bound on reading an answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// GETs `path` from guest vsock port `port` through the hybrid socket `uds`; returns the body
/// of a 200 answer.
pub fn http_get(uds: &Path, port: u32, path: &str) -> Result<String> {
    let what = format!("GET {path} on guest port {port} via {}", uds.display());
    let io = |e| VmError::io(what.clone(), e);
    let mut stream = UnixStream::connect(uds).map_err(io)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(io)?;
    // Read the reply byte by byte: what follows it is the guest's.
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while reply.last() != Some(&b'\n') && reply.len() < 64 {
        match stream.read(&mut byte).map_err(io)? {
            0 => break,
            _ => reply.push(byte[0]),
        }
    }
    let reply = String::from_utf8_lossy(&reply);
    if !reply.starts_with("OK ") {
        return Err(VmError::Protocol(format!(
            "{what}: hybrid vsock handshake answered {reply:?}"
        )));
    }
    http_get_on(stream, &what, path)
}

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
