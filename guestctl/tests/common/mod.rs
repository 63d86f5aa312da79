//! Shared by the dashboard tests: where dashboards/ is, and every PromQL expression in the
//! Grafana dashboard and the Prometheus rules, in a form Prometheus' HTTP API can evaluate.

#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;

use serde_json::Value;

/// `<workspace>/dashboards`.
pub fn dashboards_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("guestctl/ has a parent")
        .join("dashboards")
}

/// One expression and where it came from.
#[derive(Debug, Clone)]
pub struct Expr {
    /// e.g. `panel "Freezes per VM" A` or `alert GuestAgentDown`.
    pub origin: String,
    /// The expression as written.
    pub expr: String,
    /// An alerting rule (its comparison filters series out).
    pub alert: bool,
}

/// The dashboard JSON.
pub fn dashboard() -> Value {
    let path = dashboards_dir().join("grafana/guest-agent.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn collect_panels<'a>(panels: &'a [Value], out: &mut Vec<&'a Value>) {
    for p in panels {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            collect_panels(inner, out);
        }
    }
}

/// Every panel, rows' nested panels included.
pub fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    collect_panels(d["panels"].as_array().expect("panels"), &mut out);
    out
}

/// Every PromQL expression of the dashboard: panel targets, and the metric selector inside
/// each `label_values(SELECTOR, label)` variable query.
pub fn dashboard_exprs() -> Vec<Expr> {
    let d = dashboard();
    let mut out = Vec::new();
    for p in panels(&d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push(Expr {
                    origin: format!(
                        "panel {:?} {}",
                        p["title"].as_str().unwrap_or("?"),
                        t["refId"]
                    ),
                    expr: e.to_string(),
                    alert: false,
                });
            }
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        let q = v["query"]["query"].as_str().or_else(|| v["query"].as_str());
        if let (Some("query"), Some(q)) = (v["type"].as_str(), q) {
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(sel, _)| sel.trim().to_string())
                .unwrap_or_else(|| {
                    panic!(
                        "variable {} query {q:?} is not label_values(SELECTOR, LABEL)",
                        v["name"]
                    )
                });
            out.push(Expr {
                origin: format!("variable {}", v["name"]),
                expr: inner,
                alert: false,
            });
        }
    }
    out
}

/// Every `expr:` of rules.yml with its `record:`/`alert:` name. The file's layout is the
/// usual one (`- record:`/`- alert:` then `expr:` inline or as a `|` block).
pub fn rule_exprs() -> Vec<Expr> {
    let path = dashboards_dir().join("prometheus/rules.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    parse_rule_exprs(&text)
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// See [`rule_exprs`].
pub fn parse_rule_exprs(text: &str) -> Vec<Expr> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut name = String::new();
    let mut alert = false;
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].trim_start().trim_start_matches("- ");
        if let Some(n) = t.strip_prefix("record:") {
            name = format!("record {}", n.trim());
            alert = false;
        } else if let Some(n) = t.strip_prefix("alert:") {
            name = format!("alert {}", n.trim());
            alert = true;
        } else if let Some(v) = t.strip_prefix("expr:") {
            let v = v.trim();
            let expr = if v == "|" || v == ">" || v == "|-" || v == ">-" {
                let base = indent(lines[i]);
                let mut body = Vec::new();
                while i + 1 < lines.len()
                    && (lines[i + 1].trim().is_empty() || indent(lines[i + 1]) > base)
                {
                    i += 1;
                    body.push(lines[i].trim());
                }
                body.join(" ").trim().to_string()
            } else {
                v.to_string()
            };
            out.push(Expr {
                origin: name.clone(),
                expr,
                alert,
            });
        }
        i += 1;
    }
    out
}

/// Replaces Grafana's variables: `$host`/`$vm`/`$mountpoint` by `.+` (every value, like the
/// dashboard's All, but the label must exist, so a misspelt label name in a matcher selects
/// nothing), the interval macros by fixed durations.
pub fn substitute(expr: &str) -> String {
    expr.replace("${host}", ".+")
        .replace("$host", ".+")
        .replace("${vm}", ".+")
        .replace("$vm", ".+")
        .replace("${mountpoint}", ".+")
        .replace("$mountpoint", ".+")
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "5m")
}

/// An alert expression `Q <op> T` as `Q <op> bool T`: 0/1 for every series of Q, so "returns
/// data" means Q's metric and label names are right whether or not the alert fires.
pub fn alert_as_bool(expr: &str) -> String {
    let bytes = expr.as_bytes();
    let mut depth = 0i32;
    let mut last = None;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'(' | b'{' | b'[' => depth += 1,
            b')' | b'}' | b']' => depth -= 1,
            b'"' => {
                // Skip a quoted string (label values may hold operators).
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'>' | b'<' | b'=' | b'!' if depth == 0 => {
                let two = bytes.get(i + 1) == Some(&b'=');
                let is_op = match bytes[i] {
                    b'=' => two,
                    b'!' => two,
                    _ => true,
                };
                if is_op {
                    let len = if two { 2 } else { 1 };
                    last = Some(i + len);
                    i += len;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    let at =
        last.unwrap_or_else(|| panic!("alert expression {expr:?} has no top-level comparison"));
    format!("{} bool{}", &expr[..at], &expr[at..])
}

/// Every label name an expression uses: in `by (...)` / `without (...)` clauses and on the
/// left of label matchers inside `{...}`.
pub fn label_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for kw in ["by (", "without ("] {
        let mut rest = expr;
        while let Some(pos) = rest.find(kw) {
            let after = &rest[pos + kw.len()..];
            let end = after.find(')').unwrap_or(after.len());
            out.extend(
                after[..end]
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
            rest = &after[end..];
        }
    }
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let mut i = 0;
        let b = after.as_bytes();
        let mut name_start = 0;
        while i < b.len() && b[i] != b'}' {
            match b[i] {
                b'"' => {
                    i += 1;
                    while i < b.len() && b[i] != b'"' {
                        if b[i] == b'\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                    name_start = i + 1;
                }
                b'=' | b'!' => {
                    let name = after[name_start..i].trim().trim_start_matches(',').trim();
                    if !name.is_empty() {
                        out.push(name.to_string());
                    }
                    while i < b.len() && b[i] != b'"' {
                        i += 1;
                    }
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
        rest = &after[i.min(after.len())..];
    }
    out.sort();
    out.dedup();
    out
}
