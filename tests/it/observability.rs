//! The operator pack (deploy/prometheus/alerts.yml, deploy/grafana/offgrid.json)
//! against the contract: every metric it names is one of SPEC §7, the required
//! alerts exist, every runbook link lands on a section of docs/operations.md,
//! and the running daemons really export every SPEC §7 metric.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

/// The metric names of SPEC §7, copied verbatim. If SPEC §7 changes, change
/// this list in the same commit (and the daemons, and the pack).
const SPEC_METRICS: &[&str] = &[
    "spoold_ingest_total",
    "spoold_ingest_duration_seconds",
    "spoold_spool_events",
    "spoold_spool_bytes",
    "spoold_spool_oldest_pending_seconds",
    "spoold_commit_duration_seconds",
    "spoold_commit_batch_events",
    "spoold_forward_events_total",
    "spoold_forward_batches_total",
    "spoold_forward_retries_total",
    "spoold_ledger_up",
    "spoold_dead_letters",
    "spoold_disk_free_bytes",
    "spoold_disk_free_inodes",
    "ledgerd_events_total",
    "ledgerd_batch_duration_seconds",
    "ledgerd_store_up",
];

/// Metrics offgrid exports beyond SPEC §7 (an addition, not a rename): the
/// configured spool limits, so alert rules need no numbers copied from
/// spoold.toml (docs/operations.md, Monitoring).
const ADDED_METRICS: &[&str] = &[
    "spoold_spool_bytes_max",
    "spoold_spool_events_max",
    "spoold_disk_free_bytes_min",
    "spoold_disk_free_inodes_min",
    "spoold_forward_timeouts_total",
    "spoold_forward_wire_bytes_total",
];

/// The histograms among them (SPEC §7 says "histogram" for the spoold ones;
/// `ledgerd_batch_duration_seconds` is one too), which also have
/// `_bucket`, `_sum` and `_count` series.
const SPEC_HISTOGRAMS: &[&str] = &[
    "spoold_ingest_duration_seconds",
    "spoold_commit_duration_seconds",
    "spoold_commit_batch_events",
    "ledgerd_batch_duration_seconds",
];

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// Identifiers in a PromQL expression that name offgrid metrics.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("spoold_") || t.starts_with("ledgerd_"))
        .map(str::to_owned)
        .collect()
}

/// The SPEC §7 metric a series name belongs to, if any.
fn spec_metric(series: &str) -> Option<&'static str> {
    if let Some(m) = SPEC_METRICS.iter().chain(ADDED_METRICS).find(|m| **m == series) {
        return Some(m);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = series.strip_suffix(suffix)?;
        SPEC_HISTOGRAMS.iter().find(|h| **h == base).copied()
    })
}

/// Recording rules (`offgrid:…`) an expression uses.
fn recording_rules(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("offgrid:"))
        .map(str::to_owned)
        .collect()
}

/// GitHub-style anchors of the markdown headings in `text`.
fn anchors(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

struct Rule {
    alert: Option<String>,
    record: Option<String>,
    expr: String,
    raw: Yaml,
}

fn rules() -> Vec<Rule> {
    let doc: Yaml = serde_yaml::from_str(&read("deploy/prometheus/alerts.yml")).unwrap();
    let groups = doc["groups"].as_sequence().expect("groups: a list");
    assert!(!groups.is_empty());
    let mut out = Vec::new();
    for g in groups {
        assert!(g["name"].as_str().is_some_and(|n| !n.is_empty()), "group without a name");
        for r in g["rules"].as_sequence().expect("rules: a list") {
            out.push(Rule {
                alert: r["alert"].as_str().map(str::to_owned),
                record: r["record"].as_str().map(str::to_owned),
                expr: r["expr"].as_str().expect("every rule has an expr").to_owned(),
                raw: r.clone(),
            });
        }
    }
    out
}

#[test]
fn alert_rules_use_only_spec_metrics_and_link_real_runbooks() {
    let rules = rules();
    let ops_anchors = anchors(&read("docs/operations.md"));
    let recorded: BTreeSet<String> = rules.iter().filter_map(|r| r.record.clone()).collect();
    let mut names = BTreeSet::new();
    for r in &rules {
        assert!(r.alert.is_some() != r.record.is_some(), "a rule is an alert or a recording rule: {:?}", r.raw);
        for m in metric_names(&r.expr) {
            assert!(spec_metric(&m).is_some(), "{m} (in {:?}) is not a SPEC §7 metric", r.expr);
            names.insert(m);
        }
        for rec in recording_rules(&r.expr) {
            if r.record.as_deref() != Some(rec.as_str()) {
                assert!(recorded.contains(&rec), "{rec} is used but not recorded in alerts.yml");
            }
        }
        let Some(alert) = &r.alert else { continue };
        let severity = r.raw["labels"]["severity"].as_str();
        assert!(matches!(severity, Some("page" | "ticket")), "{alert}: severity {severity:?}");
        assert!(r.raw["for"].as_str().is_some(), "{alert}: no `for`");
        assert!(r.raw["annotations"]["summary"].as_str().is_some(), "{alert}: no summary");
        let runbook = r.raw["annotations"]["runbook"].as_str().unwrap_or_else(|| panic!("{alert}: no runbook"));
        let anchor = runbook
            .strip_prefix("docs/operations.md#")
            .unwrap_or_else(|| panic!("{alert}: runbook {runbook} is not in docs/operations.md"));
        assert!(ops_anchors.contains(anchor), "{alert}: docs/operations.md has no section #{anchor}");
    }
    assert!(names.len() >= 8, "the alerts cover the spool, disk, forwarding and ledger: {names:?}");
}

#[test]
fn the_required_alerts_exist() {
    let rules = rules();
    let alert_with = |needle: &str| -> &Rule {
        rules
            .iter()
            .find(|r| r.alert.is_some() && r.expr.contains(needle))
            .unwrap_or_else(|| panic!("no alert on {needle:?}"))
    };
    let ledger_down = alert_with("spoold_ledger_up == 0");
    assert_eq!(ledger_down.raw["for"].as_str(), Some("5m"), "ledger down > 5 min");
    alert_with("spoold_spool_oldest_pending_seconds > 600");
    let filling = alert_with("spoold_spool_bytes");
    assert!(filling.expr.contains("0.8 *") && filling.expr.contains("spoold_spool_events"), "80 % of bytes or events");
    let disk = alert_with("spoold_disk_free_bytes <");
    assert!(disk.expr.contains("spoold_disk_free_inodes"), "disk bytes and inodes");
    alert_with("spoold_dead_letters > 0");
    alert_with("ledgerd_store_up == 0");
    // Down or absent daemons, and every refusal code of the ingest API.
    alert_with(r#"up{job="spoold"} == 0"#);
    alert_with(r#"absent(up{job="spoold"})"#);
    alert_with(r#"up{job="ledgerd"} == 0"#);
    alert_with(r#"absent(up{job="ledgerd"})"#);
    for code in [
        "spool_full", "insufficient_storage", "shutting_down", "storage_failed", "storage_error", "unauthorized",
        "invalid_json", "invalid_event", "id_conflict", "too_large", "unsupported_media_type", "timeout", "invalid_request",
    ] {
        alert_with(code);
    }
    // No limit is copied into the rules: they compare with the exported ones.
    assert!(filling.expr.contains("spoold_spool_bytes_max") && filling.expr.contains("spoold_spool_events_max"));
    assert!(disk.expr.contains("spoold_disk_free_bytes_min") && disk.expr.contains("spoold_disk_free_inodes_min"));
    assert!(rules.iter().all(|r| r.record.is_none()), "no recording rule holds a copied limit");
}

/// Every runbook's "You see" paragraph names at least one alert, and every
/// alert it names is defined in alerts.yml.
#[test]
fn every_runbook_you_see_names_real_alerts() {
    let alerts: BTreeSet<String> = rules().iter().filter_map(|r| r.alert.clone()).collect();
    let ops = read("docs/operations.md");
    let mut seen = 0;
    for para in ops.split("\n\n").filter(|p| p.starts_with("**You see:**")) {
        seen += 1;
        let named: Vec<&str> = para
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|t| t.chars().next().is_some_and(|c| c.is_ascii_uppercase()) && t.chars().all(|c| c.is_ascii_alphanumeric()))
            .collect();
        assert!(!named.is_empty(), "a \"You see\" names no alert: {para}");
        for n in named {
            assert!(alerts.contains(n), "\"You see\" names {n}, which alerts.yml does not define: {para}");
        }
    }
    assert!(seen >= 8, "runbooks with a \"You see\": {seen}");
}

/// Where promtool is: `OFFGRID_PROMTOOL`, then `promtool` on PATH, then the
/// copy scripts/test.sh unpacks from Debian's `prometheus` package.
fn promtool() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("OFFGRID_PROMTOOL") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::process::Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success());
    if on_path {
        return Some(PathBuf::from("promtool"));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo_file("target"));
    let unpacked = target.join("tools/prometheus/usr/bin/promtool");
    unpacked.exists().then_some(unpacked)
}

/// `promtool check rules` and `promtool test rules` on the shipped rules: every
/// alert fires in one case and stays quiet in another (alerts_test.yml).
#[test]
fn alert_rules_pass_promtool_tests() {
    let Some(promtool) = promtool() else {
        assert!(std::env::var_os("CI").is_none(), "promtool is required when CI is set (scripts/test.sh installs it)");
        println!("SKIPPED alert_rules_pass_promtool_tests: promtool not found (set OFFGRID_PROMTOOL or run scripts/test.sh)");
        return;
    };
    for args in [["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]] {
        let out = std::process::Command::new(&promtool)
            .args(args)
            .current_dir(repo_file("deploy/prometheus"))
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every alert has a firing and a quiet case.
    let tests = read("deploy/prometheus/alerts_test.yml");
    for alert in rules().iter().filter_map(|r| r.alert.clone()) {
        for kind in ["fires", "quiet"] {
            assert!(tests.contains(&format!("# {alert}: {kind}\n")), "alerts_test.yml has no {kind} case for {alert}");
        }
    }
}

fn collect_exprs(v: &Json, out: &mut Vec<String>) {
    match v {
        Json::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Json::String(s)) => out.push(s.clone()),
                    ("query", Json::String(s)) | ("definition", Json::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Json::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

#[test]
fn dashboard_uses_only_spec_metrics_and_shows_all_of_them() {
    let dash: Json = serde_json::from_str(&read("deploy/grafana/offgrid.json")).unwrap();
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(dash["uid"], "offgrid");
    let panels = dash["panels"].as_array().unwrap();
    let ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len(), "panel ids are unique");
    for p in panels {
        assert!(p["gridPos"]["w"].as_u64().is_some(), "panel {} has no gridPos", p["title"]);
        if p["type"] != "row" {
            assert!(!p["targets"].as_array().unwrap().is_empty(), "panel {} has no query", p["title"]);
        }
    }
    let mut exprs = Vec::new();
    collect_exprs(&dash, &mut exprs);
    let recorded: BTreeSet<String> = rules().iter().filter_map(|r| r.record.clone()).collect();
    let mut shown = BTreeSet::new();
    for e in &exprs {
        for m in metric_names(e) {
            let spec = spec_metric(&m).unwrap_or_else(|| panic!("{m} (in {e:?}) is not a SPEC §7 metric"));
            shown.insert(spec);
        }
        for rec in recording_rules(e) {
            assert!(recorded.contains(&rec), "dashboard uses {rec}, which alerts.yml does not record");
        }
    }
    let missing: Vec<_> = SPEC_METRICS.iter().filter(|m| !shown.contains(*m)).collect();
    assert!(missing.is_empty(), "SPEC §7 metrics without a panel: {missing:?}");
}

/// The metric family a SPEC name is exported under: counters are declared
/// without `_total` in the `# TYPE` line (OpenMetrics).
fn family(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}

fn assert_exports(text: &str, prefix: &str) {
    for m in SPEC_METRICS.iter().filter(|m| m.starts_with(prefix)) {
        let declared = text.lines().any(|l| l.starts_with(&format!("# TYPE {} ", family(m))));
        assert!(declared, "/metrics does not declare {m}:\n{text}");
    }
}

#[tokio::test]
async fn running_daemons_export_every_spec_metric() {
    let spoold = test_support::spoold::Spoold::start(Default::default()).await.unwrap();
    let text = reqwest::get(spoold.url("/metrics")).await.unwrap().text().await.unwrap();
    assert_exports(&text, "spoold_");
    // The configured limits, with the values of the config (defaults here).
    for (name, value) in [
        ("spoold_spool_bytes_max", 10u64 << 30),
        ("spoold_spool_events_max", 50_000_000),
        ("spoold_disk_free_bytes_min", 1 << 30),
        ("spoold_disk_free_inodes_min", 100_000),
    ] {
        assert!(text.lines().any(|l| l == format!("{name} {value}")), "/metrics lacks {name} {value}:\n{text}");
    }
    let ledgerd = test_support::ledgerd::Ledgerd::start().await.unwrap();
    let text = reqwest::get(format!("{}/metrics", ledgerd.url)).await.unwrap().text().await.unwrap();
    assert_exports(&text, "ledgerd_");
}

#[test]
fn helpers_find_metric_names_and_anchors() {
    assert_eq!(
        metric_names(r#"rate(spoold_ingest_total{result="spool_full"}[5m]) > on() offgrid:x:config"#),
        vec!["spoold_ingest_total"]
    );
    assert_eq!(spec_metric("spoold_commit_duration_seconds_bucket"), Some("spoold_commit_duration_seconds"));
    assert_eq!(spec_metric("spoold_spool_bytes_bucket"), None);
    assert_eq!(spec_metric("spoold_made_up"), None);
    assert!(anchors("## Runbook: ledger database down\n").contains("runbook-ledger-database-down"));
}
