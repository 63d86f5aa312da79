//! The Prometheus text exposition format (0.0.4): a parser into metric families and a
//! writer, so the proxy can add a `vm` label to every guest sample and merge the families of
//! many guests into one well-formed exposition (each family's HELP and TYPE once, its samples
//! together).
//!
//! Grammar handled (what `promtool check metrics` accepts): `# HELP name text` (text escapes
//! `\\` and `\n`), `# TYPE name counter|gauge|histogram|summary|untyped`, other comments and
//! blank lines ignored, samples `name{label="value",...} value [timestamp]` with label value
//! escapes `\\`, `\"` and `\n` and an optional trailing comma. A sample belongs to the family
//! named by the preceding HELP/TYPE when its name is the family name or, for histograms and
//! summaries, the family name plus `_bucket`, `_sum` or `_count`; otherwise it starts an
//! untyped family of its own.

#[cfg(test)]
use std::fmt::Write as _;

/// Why a guest's exposition was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// A metric type from `# TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// Monotonic counter.
    Counter,
    /// Gauge.
    Gauge,
    /// Histogram (`_bucket`, `_sum`, `_count`).
    Histogram,
    /// Summary (quantiles, `_sum`, `_count`).
    Summary,
    /// No type given.
    Untyped,
}

impl MetricType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "summary" => MetricType::Summary,
            "untyped" => MetricType::Untyped,
            _ => return None,
        })
    }

    /// The keyword in `# TYPE`.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Summary => "summary",
            MetricType::Untyped => "untyped",
        }
    }

    fn suffixes(self) -> &'static [&'static str] {
        match self {
            MetricType::Histogram => &["_bucket", "_sum", "_count"],
            MetricType::Summary => &["_sum", "_count"],
            _ => &[],
        }
    }
}

/// Label pairs in order, values unescaped.
pub type Labels = Vec<(String, String)>;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Sample name (family name, possibly with a suffix).
    pub name: String,
    /// Labels in their original order (unescaped values).
    pub labels: Labels,
    /// The value as written (validated as a float, `NaN`, `+Inf`, `-Inf`).
    pub value: String,
    /// Optional timestamp in ms, as written.
    pub timestamp: Option<String>,
}

/// A metric family: its metadata and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Family name.
    pub name: String,
    /// Unescaped HELP text, if any.
    pub help: Option<String>,
    /// TYPE (untyped when none).
    pub kind: MetricType,
    /// Samples in order.
    pub samples: Vec<Sample>,
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    is_name_start(c) || c.is_ascii_digit()
}

/// True for a valid metric name.
pub fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if is_name_start(c)) && chars.all(is_name_char)
}

/// True for a valid label name (no colons).
pub fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn valid_value(s: &str) -> bool {
    matches!(s, "NaN" | "+Inf" | "-Inf" | "Inf") || s.parse::<f64>().is_ok()
}

fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('\\') => out.push('\\'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Escapes HELP text for output.
pub fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Escapes a label value for output.
#[cfg(test)]
pub fn escape_label_value(s: &str) -> String {
    let mut out = String::new();
    push_escaped_label_value(&mut out, s);
    out
}

/// Parses `name{labels} value [ts]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(|c: char| !is_name_char(c)).unwrap_or(line.len());
    let name = &line[..name_end];
    if !valid_metric_name(name) {
        return Err(format!("bad metric name in {line:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, remaining) = parse_labels(after)?;
        labels = parsed;
        rest = remaining;
    }
    let mut fields = rest.split_whitespace();
    let value = fields
        .next()
        .ok_or_else(|| format!("no value in {line:?}"))?;
    if !valid_value(value) {
        return Err(format!("bad value {value:?}"));
    }
    let timestamp = fields.next().map(str::to_string);
    if let Some(ts) = &timestamp {
        if ts.parse::<i64>().is_err() {
            return Err(format!("bad timestamp {ts:?}"));
        }
    }
    if fields.next().is_some() {
        return Err(format!("trailing text in {line:?}"));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value: value.to_string(),
        timestamp,
    })
}

/// Parses the labels after `{`, returning them and the text after `}`.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels: Labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let eq = s.find('=').ok_or("label without '='")?;
        let name = s[..eq].trim();
        if !valid_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        if labels.iter().any(|(n, _)| n == name) {
            return Err(format!("duplicate label {name:?}"));
        }
        s = s[eq + 1..].trim_start();
        let body = s
            .strip_prefix('"')
            .ok_or_else(|| format!("label {name:?} value is not quoted"))?;
        let mut value = String::new();
        let mut chars = body.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("unterminated value of label {name:?}")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, c)) => {
                        return Err(format!("bad escape \\{c} in label {name:?}"));
                    }
                    None => return Err(format!("unterminated value of label {name:?}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((name.to_string(), value));
        s = body[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err(format!("expected ',' or '}}' after label {name:?}"));
        }
    }
}

/// Which family a sample named `name` belongs to, given the current one.
fn belongs(family: &Family, name: &str) -> bool {
    name == family.name
        || family
            .kind
            .suffixes()
            .iter()
            .any(|suffix| name.strip_prefix(family.name.as_str()) == Some(suffix))
}

/// Parses a whole exposition into families, in order of first appearance.
pub fn parse(text: &str) -> Result<Vec<Family>, ParseError> {
    let mut families: Vec<Family> = Vec::new();
    let mut current: Option<usize> = None;
    let find_or_add = |families: &mut Vec<Family>, name: &str| -> usize {
        if let Some(i) = families.iter().position(|f| f.name == name) {
            return i;
        }
        families.push(Family {
            name: name.to_string(),
            help: None,
            kind: MetricType::Untyped,
            samples: Vec::new(),
        });
        families.len() - 1
    };
    for (i, raw) in text.lines().enumerate() {
        let err = |reason: String| ParseError {
            line: i + 1,
            reason,
        };
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim_start();
            let (keyword, rest) = comment.split_once(' ').unwrap_or((comment, ""));
            if keyword != "HELP" && keyword != "TYPE" {
                continue;
            }
            let rest = rest.trim_start();
            let (name, arg) = rest.split_once(' ').unwrap_or((rest, ""));
            if !valid_metric_name(name) {
                return Err(err(format!("bad metric name {name:?} in {keyword}")));
            }
            let idx = find_or_add(&mut families, name);
            let fam = &mut families[idx];
            if keyword == "HELP" {
                if fam.help.is_some() {
                    return Err(err(format!("second HELP for {name}")));
                }
                fam.help = Some(unescape_help(arg));
            } else {
                if !fam.samples.is_empty() {
                    return Err(err(format!("TYPE for {name} after its samples")));
                }
                fam.kind = MetricType::parse(arg.trim())
                    .ok_or_else(|| err(format!("unknown type {arg:?} for {name}")))?;
            }
            current = Some(idx);
            continue;
        }
        let sample = parse_sample(line).map_err(err)?;
        let idx = match current {
            Some(c) if belongs(&families[c], &sample.name) => c,
            _ => {
                let idx = find_or_add(&mut families, &sample.name);
                current = Some(idx);
                idx
            }
        };
        families[idx].samples.push(sample);
    }
    Ok(families)
}

/// Writes one family (HELP, TYPE, samples) in the text format.
#[cfg(test)]
pub fn write_family(out: &mut String, f: &Family) {
    if let Some(help) = &f.help {
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(help));
    }
    let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
    for s in &f.samples {
        write_sample(out, s);
    }
}

/// Appends a label value escaped, without allocating when nothing needs escaping.
fn push_escaped_label_value(out: &mut String, v: &str) {
    if !v.contains(['\\', '"', '\n']) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Writes one sample line.
pub fn write_sample(out: &mut String, s: &Sample) {
    out.push_str(&s.name);
    if !s.labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in s.labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            push_escaped_label_value(out, v);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&s.value);
    if let Some(ts) = &s.timestamp {
        out.push(' ');
        out.push_str(ts);
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: &str = r#"# HELP guest_fs_frozen Whether the filesystem is frozen now (1) or not (0).
# TYPE guest_fs_frozen gauge
guest_fs_frozen{mountpoint="/data",fstype="ext4"} 1
guest_fs_frozen{mountpoint="/var/lib/x",fstype="xfs"} 0
# HELP guest_fs_freeze_duration_seconds How long a filesystem stayed frozen.\nSecond line with a \\ backslash.
# TYPE guest_fs_freeze_duration_seconds histogram
guest_fs_freeze_duration_seconds_bucket{mountpoint="/data",le="0.1"} 3
guest_fs_freeze_duration_seconds_bucket{mountpoint="/data",le="+Inf"} 4
guest_fs_freeze_duration_seconds_sum{mountpoint="/data"} 0.75
guest_fs_freeze_duration_seconds_count{mountpoint="/data"} 4
# a free comment
untyped_thing 7 1700000000000
# TYPE guest_ping_requests_total counter
guest_ping_requests_total 12
weird{path="a \"quoted\" \\ back\nslash",} NaN
"#;

    #[test]
    fn parses_families_types_help_and_samples() {
        let fams = parse(AGENT).unwrap();
        let names: Vec<&str> = fams.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "guest_fs_frozen",
                "guest_fs_freeze_duration_seconds",
                "untyped_thing",
                "guest_ping_requests_total",
                "weird"
            ]
        );
        assert_eq!(fams[0].kind, MetricType::Gauge);
        assert_eq!(fams[0].samples.len(), 2);
        assert_eq!(
            fams[0].samples[1].labels,
            [
                ("mountpoint".to_string(), "/var/lib/x".to_string()),
                ("fstype".to_string(), "xfs".to_string())
            ]
        );
        let h = &fams[1];
        assert_eq!(h.kind, MetricType::Histogram);
        assert_eq!(h.samples.len(), 4);
        assert_eq!(
            h.help.as_deref(),
            Some("How long a filesystem stayed frozen.\nSecond line with a \\ backslash.")
        );
        assert_eq!(fams[2].kind, MetricType::Untyped);
        assert_eq!(
            fams[2].samples[0].timestamp.as_deref(),
            Some("1700000000000")
        );
        assert_eq!(fams[3].kind, MetricType::Counter);
        let w = &fams[4].samples[0];
        assert_eq!(w.labels[0].1, "a \"quoted\" \\ back\nslash");
        assert_eq!(w.value, "NaN");
    }

    #[test]
    fn write_round_trips() {
        let fams = parse(AGENT).unwrap();
        let mut out = String::new();
        for f in &fams {
            write_family(&mut out, f);
        }
        assert_eq!(parse(&out).unwrap(), fams);
        assert!(
            out.contains(r#"weird{path="a \"quoted\" \\ back\nslash"} NaN"#),
            "{out}"
        );
        assert!(out.contains("# HELP guest_fs_freeze_duration_seconds How long a filesystem stayed frozen.\\nSecond line with a \\\\ backslash.\n"));
    }

    #[test]
    fn rejects_malformed_lines() {
        let bad = [
            ("1abc 1", "bad metric name"),
            ("x{a=\"1\" 2", "expected ','"),
            ("x{a=1} 2", "not quoted"),
            ("x{a=\"1} 2", "unterminated"),
            ("x{a=\"\\q\"} 2", "bad escape"),
            ("x{a=\"1\",a=\"2\"} 2", "duplicate label"),
            ("x{1a=\"1\"} 2", "bad label name"),
            ("x", "no value"),
            ("x one", "bad value"),
            ("x 1 notatime", "bad timestamp"),
            ("x 1 2 3", "trailing text"),
            ("# TYPE x frobnicator", "unknown type"),
            ("# HELP x a\n# HELP x b", "second HELP"),
            ("x 1\n# TYPE x gauge", "after its samples"),
        ];
        for (text, want) in bad {
            let e = parse(text).expect_err(text);
            assert!(e.reason.contains(want), "{text:?}: {e}");
        }
        assert_eq!(parse("ok 1\nx{").unwrap_err().line, 2);
    }

    #[test]
    fn samples_outside_the_current_family_start_their_own() {
        let fams = parse("# TYPE a counter\na 1\nb 2\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 1\nh_total 3\n").unwrap();
        let names: Vec<&str> = fams.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "h", "h_total"]);
        assert_eq!(fams[2].samples.len(), 2);
    }

    #[test]
    fn names_and_escapes() {
        assert!(valid_metric_name("a:b_c9"));
        assert!(!valid_metric_name("9a"));
        assert!(!valid_metric_name(""));
        assert!(valid_label_name("_x1"));
        assert!(!valid_label_name("a:b"));
        assert_eq!(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
    }
}
