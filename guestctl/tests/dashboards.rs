//! The dashboards/ directory: `promtool check rules` and `promtool test rules` (a unit test
//! for every alert, firing and quiet), the Grafana dashboard's structure (provisionable as
//! is: a datasource variable used by every panel, host, vm and mountpoint variables; a Fleet
//! row of recording rules and collapsed per-VM rows), and every
//! expression checked by `promtool` for syntax. That each expression returns data from real
//! agents is tests/prometheus.rs.

mod common;

use std::process::Command;

use common::{
    alert_as_bool, dashboard, dashboards_dir, label_names, panels, parse_rule_exprs, rule_exprs,
    substitute,
};

fn promtool(args: &[&str], cwd: &std::path::Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("promtool is installed (scripts/setup.sh installs prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    let dir = dashboards_dir().join("prometheus");
    let out = promtool(&["check", "rules", "rules.yml"], &dir);
    assert!(out.contains("SUCCESS: 17 rules found"), "{out}");
    let out = promtool(&["test", "rules", "rules.test.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
    promtool(&["check", "config", "prometheus.example.yml"], &dir);
    promtool(&["check", "config", "prometheus.sd.example.yml"], &dir);
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_unit_test() {
    let tests =
        std::fs::read_to_string(dashboards_dir().join("prometheus/rules.test.yml")).unwrap();
    let alerts: Vec<String> = rule_exprs()
        .into_iter()
        .filter(|e| e.alert)
        .map(|e| e.origin.trim_start_matches("alert ").to_string())
        .collect();
    assert_eq!(alerts.len(), 6, "{alerts:?}");
    for a in &alerts {
        let line = format!("alertname: {a}");
        let mut fires = false;
        let mut quiet = false;
        let mut rest = tests.as_str();
        while let Some(pos) = rest.find(&line) {
            let after = &rest[pos + line.len()..];
            let next = after.find("alertname:").unwrap_or(after.len());
            let block = &after[..next];
            if block.contains("exp_alerts: []") {
                quiet = true;
            } else if block.contains("exp_labels:") {
                fires = true;
            }
            rest = after;
        }
        assert!(fires && quiet, "{a}: fires={fires} quiet={quiet}");
    }
}

#[test]
fn dashboard_is_provisionable_with_its_variables() {
    let d = dashboard();
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(
        d.get("id").is_none() || d["id"].is_null(),
        "no fixed id: provisioning assigns one"
    );
    let vars = d["templating"]["list"].as_array().unwrap();
    let var = |n: &str| {
        vars.iter()
            .find(|v| v["name"] == n)
            .unwrap_or_else(|| panic!("no ${n}"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    for n in ["host", "vm", "mountpoint"] {
        assert_eq!(var(n)["type"], "query");
        assert_eq!(var(n)["includeAll"], true);
        assert_eq!(var(n)["allValue"], ".*");
        assert_eq!(var(n)["datasource"]["uid"], "${datasource}");
    }
    let mut titles = Vec::new();
    for p in panels(&d) {
        if p["type"] == "row" {
            continue;
        }
        titles.push(p["title"].as_str().unwrap().to_string());
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            let e = t["expr"].as_str().unwrap();
            assert!(
                e.contains("host=~\"$host\""),
                "{}: every query filters by $host: {e}",
                p["title"]
            );
            // Per-host recording rules have no vm label; everything else filters by $vm.
            assert!(
                e.contains("vm=~\"$vm\"") || e.contains("host:"),
                "{}: every per-VM query filters by $vm: {e}",
                p["title"]
            );
            assert_eq!(t["datasource"]["uid"], "${datasource}");
        }
    }
    // The panels the issue asks for.
    for want in [
        "Freezes per VM",
        "Freeze duration p50 / p99",
        "Freeze duration heatmap",
        "Frozen filesystems (and for how long)",
        "Writers blocked now",
        "Writer stall p99 by level",
        "Watchdog thaws",
        "Ping round trip",
        "Agent up",
        "eBPF observer",
        "RPC error rate",
        // Fleet size (issue 15): top-k and per-host panels over recording rules.
        "VMs up",
        "VMs down",
        "Slowest freezes: top 10 VMs by p99",
        "Most stalled writers: top 10 VMs",
        "Longest writer stalls: top 10 VMs by p99",
    ] {
        assert!(
            titles.iter().any(|t| t == want),
            "missing panel {want:?} in {titles:?}"
        );
    }
    // Panel ids are unique and grid positions do not overlap in the same row band.
    let mut ids: Vec<i64> = panels(&d)
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n);
    // At fleet size the landing view is the Fleet row, which reads recording rules only;
    // the per-VM rows are collapsed, so they query nothing until opened.
    let top: Vec<&serde_json::Value> = d["panels"].as_array().unwrap().iter().collect();
    assert_eq!(top[0]["title"], "Fleet");
    for p in top.iter().filter(|p| p["type"] != "row") {
        for t in p["targets"].as_array().unwrap() {
            let e = t["expr"].as_str().unwrap();
            assert!(
                e.contains("host:") || e.contains("vm:") || e.contains("vm_level:"),
                "{}: a Fleet panel reads recording rules: {e}",
                p["title"]
            );
        }
    }
    for r in top
        .iter()
        .filter(|p| p["type"] == "row" && p["title"] != "Fleet")
    {
        assert_eq!(r["collapsed"], true, "row {}", r["title"]);
        assert!(!r["panels"].as_array().unwrap().is_empty());
    }
}

#[test]
fn every_expression_is_valid_promql() {
    let exprs: Vec<_> = common::dashboard_exprs()
        .into_iter()
        .chain(rule_exprs())
        .collect();
    assert!(exprs.len() > 25, "{}", exprs.len());
    // promtool parses expressions when checking a rules file: write them all as recording
    // rules (alerts in their `bool` form) and let it check.
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = String::from("groups:\n  - name: all\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let q = if e.alert {
            alert_as_bool(&e.expr)
        } else {
            substitute(&e.expr)
        };
        yaml.push_str(&format!(
            "      - record: check:expr{i}\n        expr: {}\n",
            serde_json::to_string(&q).unwrap()
        ));
    }
    let f = dir.path().join("all.yml");
    std::fs::write(&f, yaml).unwrap();
    promtool(&["check", "rules", f.to_str().unwrap()], dir.path());
}

#[test]
fn expression_helpers() {
    assert_eq!(
        alert_as_bool("guest_agent_up == 0"),
        "guest_agent_up == bool 0"
    );
    assert_eq!(
        alert_as_bool("max by (vm) (x{a=\">\"}) > 0"),
        "max by (vm) (x{a=\">\"}) > bool 0"
    );
    assert_eq!(
        alert_as_bool("increase(x[5m]) >= 2"),
        "increase(x[5m]) >= bool 2"
    );
    assert_eq!(
        substitute("rate(x{vm=~\"$vm\", mountpoint=~\"$mountpoint\"}[$__rate_interval])"),
        "rate(x{vm=~\".+\", mountpoint=~\".+\"}[1m])"
    );
    assert_eq!(
        label_names("sum by (vm, le) (rate(x{vm=~\"a,b\", op=\"freeze\",code!=\"OK\"}[1m])) / on() sum without (mountpoint) (y{a=\"}\"})"),
        ["a", "code", "le", "mountpoint", "op", "vm"]
    );
    let rules = parse_rule_exprs(
        "groups:\n  - name: g\n    rules:\n      - record: a:b\n        expr: |\n          sum(x)\n            / sum(y)\n      - alert: A\n        expr: x > 1\n        for: 1m\n",
    );
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].expr, "sum(x) / sum(y)");
    assert!(!rules[0].alert);
    assert_eq!(rules[1].origin, "alert A");
    assert!(rules[1].alert);
}
