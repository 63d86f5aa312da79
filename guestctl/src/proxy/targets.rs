//! The VMs the proxy scrapes: `NAME=SPEC` from `--target` flags and from a targets file.
//!
//! SPEC is one of
//! * `URI` or `http+URI`: GET /metrics over the stream to URI (the agent's
//!   `--metrics-listen`), optionally followed by `,ping=URI` naming the agent's gRPC endpoint
//!   for the ping round-trip series;
//! * `grpc+URI`: the `GetMetrics` RPC on the agent's gRPC endpoint (no second port needed),
//!   which also serves the pings.
//!
//! URI is any connect URI: `vsock://CID:PORT`, `hvsock:///vm.sock:PORT`, `unix:///PATH`,
//! `tcp://HOST:PORT`. A targets file holds `NAME=SPEC` lines (`#` comments and blank lines
//! ignored), or JSON: an object `{"NAME": "SPEC", ...}` or an array of
//! `{"name": "NAME", "target": "SPEC"}`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use guest_transport::ConnectUri;
use serde::Deserialize;

/// How a guest's metrics are fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsSource {
    /// HTTP GET /metrics over a stream to the URI.
    Http(ConnectUri),
    /// The GetMetrics RPC on the agent's gRPC endpoint.
    Grpc(ConnectUri),
}

/// One VM to scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The `vm` label value.
    pub name: String,
    /// Where its metrics come from.
    pub metrics: MetricsSource,
    /// The agent's gRPC endpoint for pings, if known.
    pub ping: Option<ConnectUri>,
}

/// Why a target spec or file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Not `NAME=SPEC`.
    #[error("bad target {0:?}: expected NAME=URI, NAME=http+URI[,ping=URI] or NAME=grpc+URI")]
    Syntax(String),
    /// The name is not usable as a label value we want.
    #[error("bad VM name {0:?}: use letters, digits, '.', '_', '-' and ':' (1 to 128 characters)")]
    Name(String),
    /// A URI in the spec does not parse.
    #[error("target {name}: {source}")]
    Uri {
        /// The target.
        name: String,
        /// The parse error.
        #[source]
        source: guest_transport::UriError,
    },
    /// `,ping=` given together with `grpc+`.
    #[error("target {0}: grpc+ targets ping their own endpoint; drop ,ping=")]
    PingWithGrpc(String),
    /// Two targets share a name.
    #[error("VM name {0:?} is used by two targets")]
    Duplicate(String),
    /// The file could not be read.
    #[error("cannot read targets file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is JSON but not in one of the accepted shapes.
    #[error("targets file {path}: bad JSON: {reason}")]
    Json {
        /// The file.
        path: String,
        /// serde's message.
        reason: String,
    },
    /// A line of the file is bad.
    #[error("targets file {path} line {line}: {source}")]
    Line {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        #[source]
        source: Box<TargetError>,
    },
}

/// True for a usable VM name: letters, digits, '.', '_', '-' and ':', 1 to 128 characters.
pub fn valid_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

impl Target {
    /// Builds a target from a name and a SPEC.
    pub fn new(name: &str, spec: &str) -> Result<Self, TargetError> {
        let name = name.trim();
        let spec = spec.trim();
        if !valid_name(name) {
            return Err(TargetError::Name(name.to_string()));
        }
        let uri = |s: &str| {
            s.parse::<ConnectUri>().map_err(|source| TargetError::Uri {
                name: name.to_string(),
                source,
            })
        };
        let (spec, ping) = match spec.rsplit_once(",ping=") {
            Some((s, p)) => (s, Some(uri(p)?)),
            None => (spec, None),
        };
        let (metrics, ping) = if let Some(rest) = spec.strip_prefix("grpc+") {
            if ping.is_some() {
                return Err(TargetError::PingWithGrpc(name.to_string()));
            }
            let u = uri(rest)?;
            (MetricsSource::Grpc(u.clone()), Some(u))
        } else {
            let rest = spec.strip_prefix("http+").unwrap_or(spec);
            (MetricsSource::Http(uri(rest)?), ping)
        };
        Ok(Target {
            name: name.to_string(),
            metrics,
            ping,
        })
    }
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, spec) = s
            .split_once('=')
            .ok_or_else(|| TargetError::Syntax(s.to_string()))?;
        Target::new(name, spec)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.metrics {
            MetricsSource::Grpc(u) => write!(f, "{}=grpc+{u}", self.name),
            MetricsSource::Http(u) => {
                write!(f, "{}={u}", self.name)?;
                if let Some(p) = &self.ping {
                    write!(f, ",ping={p}")?;
                }
                Ok(())
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonTargets {
    Map(BTreeMap<String, String>),
    List(Vec<JsonTarget>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonTarget {
    name: String,
    target: String,
}

/// Parses the contents of a targets file (`path` is for messages).
pub fn parse_file(path: &str, text: &str) -> Result<Vec<Target>, TargetError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let parsed: JsonTargets = serde_json::from_str(text).map_err(|e| TargetError::Json {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
        let pairs: Vec<(String, String)> = match parsed {
            JsonTargets::Map(m) => m.into_iter().collect(),
            JsonTargets::List(l) => l.into_iter().map(|t| (t.name, t.target)).collect(),
        };
        let targets = pairs
            .iter()
            .map(|(n, s)| Target::new(n, s))
            .collect::<Result<Vec<_>, _>>()?;
        return check_unique(targets);
    }
    let mut targets = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        targets.push(line.parse().map_err(|e| TargetError::Line {
            path: path.to_string(),
            line: i + 1,
            source: Box::new(e),
        })?);
    }
    check_unique(targets)
}

/// Reads and parses a targets file (blocking; call from a blocking context or at start).
pub fn load_file(path: &Path) -> Result<Vec<Target>, TargetError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TargetError::Read {
        path: shown.clone(),
        source,
    })?;
    parse_file(&shown, &text)
}

/// Fails when two targets share a name.
pub fn check_unique(targets: Vec<Target>) -> Result<Vec<Target>, TargetError> {
    let mut seen = std::collections::HashSet::new();
    for t in &targets {
        if !seen.insert(t.name.as_str()) {
            return Err(TargetError::Duplicate(t.name.clone()));
        }
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_display() {
        let cases = [
            ("a=tcp://127.0.0.1:9100", "a=tcp://127.0.0.1:9100"),
            ("a=http+vsock://3:2696", "a=vsock://3:2696"),
            (
                "b=hvsock:///run/vm.sock:2696,ping=hvsock:///run/vm.sock:2695",
                "b=hvsock:///run/vm.sock:2696,ping=hvsock:///run/vm.sock:2695",
            ),
            ("c=grpc+unix:///run/a.sock", "c=grpc+unix:///run/a.sock"),
            (" d = tcp://h:1 ", "d=tcp://h:1"),
        ];
        for (spec, shown) in cases {
            let t: Target = spec.parse().unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(t.to_string(), shown);
        }
        let g: Target = "c=grpc+unix:///run/a.sock".parse().unwrap();
        assert!(matches!(g.metrics, MetricsSource::Grpc(_)));
        assert_eq!(g.ping, Some("unix:///run/a.sock".parse().unwrap()));
        let h: Target = "a=tcp://127.0.0.1:9100".parse().unwrap();
        assert_eq!(h.ping, None);
    }

    #[test]
    fn bad_specs_say_why() {
        let cases = [
            ("novalue", "expected NAME=URI"),
            ("=tcp://h:1", "bad VM name"),
            ("a b=tcp://h:1", "bad VM name"),
            ("a=ftp://h:1", "unknown scheme"),
            ("a=grpc+unix:///x,ping=unix:///y", "drop ,ping="),
            ("a=tcp://h:1,ping=bogus", "has no scheme"),
        ];
        for (spec, want) in cases {
            let e = spec.parse::<Target>().expect_err(spec).to_string();
            assert!(e.contains(want), "{spec}: {e}");
        }
    }

    #[test]
    fn files_as_lines_or_json() {
        let lines = "# vms\n\nvm1=tcp://127.0.0.1:1\nvm2=grpc+unix:///run/b.sock\n";
        let t = parse_file("f", lines).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].name, "vm2");
        let map = r#"{"vm1": "tcp://127.0.0.1:1", "vm2": "grpc+unix:///b.sock"}"#;
        assert_eq!(parse_file("f", map).unwrap().len(), 2);
        let list = r#"[{"name": "vm1", "target": "tcp://127.0.0.1:1"}]"#;
        assert_eq!(parse_file("f", list).unwrap()[0].name, "vm1");
        let e = parse_file("f", "vm1=tcp://h:1\nbroken\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("targets file f line 2"), "{e}");
        let e = parse_file("f", "a=tcp://h:1\na=tcp://h:2").unwrap_err();
        assert!(matches!(e, TargetError::Duplicate(_)), "{e}");
        assert!(matches!(
            parse_file("f", r#"[{"name": "a"}]"#),
            Err(TargetError::Json { .. })
        ));
        assert!(matches!(
            load_file(Path::new("/nonexistent/targets")),
            Err(TargetError::Read { .. })
        ));
    }
}
