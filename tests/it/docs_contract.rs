//! docs/contract.md against the code. Nothing here is a hand-written list:
//!
//! - **config keys** are read from the real binaries' config parsers: a TOML
//!   file with an unknown key in a table makes the parser (serde,
//!   `deny_unknown_fields`) name every key that table accepts, so probing each
//!   table in turn walks the whole key tree of `spoold` and `ledgerd`;
//! - **metrics** are scraped from a running spoold forwarding to a running
//!   ledgerd (names, types, label names);
//! - **routes** are read from the two routers' source (`daemon/src/api.rs`,
//!   `crates/ledger/src/server.rs`), then each documented route is called on
//!   the running daemons;
//! - **spoolctl verbs** come from `spoolctl --help`.
//!
//! Each is compared both ways with the tables of docs/contract.md, and the
//! example configs must carry every key. A key, metric or route added to the
//! code without a line in the contract (or the reverse) fails here.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use test_support::ledgerd::{Ledgerd, NODE_TOKEN};
use test_support::spoold::{Spoold, SpooldOptions, TEST_TOKEN};

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

// ---------------------------------------------------------------------------
// Reading the contract's tables.

/// The table rows (cells, trimmed) under the heading whose text starts with
/// `heading`, up to the next heading of the same or a higher level.
fn table_rows(doc: &str, heading: &str) -> Vec<Vec<String>> {
    let mut level = None;
    let mut rows = Vec::new();
    for line in doc.lines() {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if hashes > 0 && line[hashes..].starts_with(' ') {
            match level {
                None if line[hashes..].trim().starts_with(heading) => {
                    level = Some(hashes);
                    continue;
                }
                Some(l) if hashes <= l => break,
                _ => {}
            }
        }
        if level.is_none() || !line.starts_with('|') {
            continue;
        }
        let cells: Vec<String> = line.trim().trim_matches('|').split('|').map(|c| c.trim().to_owned()).collect();
        // Header and separator rows.
        if cells.iter().all(|c| c.chars().all(|ch| ch == '-' || ch == ':')) || rows.is_empty() && !cells[0].starts_with('`') {
            continue;
        }
        rows.push(cells);
    }
    assert!(level.is_some(), "docs/contract.md has no heading {heading:?}");
    assert!(!rows.is_empty(), "docs/contract.md: no table under {heading:?}");
    rows
}

/// The `backticked` parts of a cell.
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

fn first_ticked(cell: &str) -> String {
    ticked(cell).into_iter().next().unwrap_or_else(|| panic!("no `name` in table cell {cell:?}"))
}

/// Prints both sides and fails when they differ.
fn same(what: &str, in_code: &BTreeSet<String>, in_docs: &BTreeSet<String>) {
    same_as(what, in_code, in_docs, "docs/contract.md")
}

fn same_as(what: &str, in_code: &BTreeSet<String>, in_docs: &BTreeSet<String>, docs: &str) {
    let missing: Vec<_> = in_code.difference(in_docs).collect();
    let stale: Vec<_> = in_docs.difference(in_code).collect();
    println!("{what}: {} in code, {} in {docs}", in_code.len(), in_docs.len());
    assert!(
        missing.is_empty() && stale.is_empty(),
        "{what}: in the code but not in {docs}: {missing:?}; in {docs} but not in the code: {stale:?}"
    );
}

// ---------------------------------------------------------------------------
// Config keys, from the real parsers.

const PROBE: &str = "zz_contract_probe";

/// The keys the table `table` (dotted; "" for the top level) of `bin`'s config
/// accepts, or `None` when `table` is not a table (a leaf key).
fn table_fields(bin: &str, dir: &std::path::Path, table: &str) -> Option<Vec<String>> {
    let text = if table.is_empty() { format!("{PROBE} = 1\n") } else { format!("[{table}]\n{PROBE} = 1\n") };
    let path = dir.join("probe.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(test_support::bin_path(bin))
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{bin} must refuse a config with an unknown key, exit 2: {stderr}");
    let marker = format!("unknown field `{PROBE}`, ");
    let rest = &stderr[stderr.find(&marker)? + marker.len()..];
    if rest.starts_with("there are no fields") {
        return Some(Vec::new());
    }
    // serde: "expected `a`", "expected `a` or `b`", "expected one of `a`, `b`, `c`".
    let mut rest = rest
        .strip_prefix("expected ")
        .unwrap_or_else(|| panic!("{bin}: unexpected error shape: {stderr}"));
    rest = rest.strip_prefix("one of ").unwrap_or(rest);
    let mut names = Vec::new();
    loop {
        let r = rest.strip_prefix('`').unwrap_or_else(|| panic!("{bin}: unexpected error shape: {stderr}"));
        let end = r.find('`').unwrap();
        names.push(r[..end].to_owned());
        rest = &r[end + 1..];
        match [", ", " or "].iter().find_map(|sep| rest.strip_prefix(sep)) {
            Some(r) => rest = r,
            None => break,
        }
    }
    Some(names)
}

/// Every leaf key of `bin`'s config, dotted (`limits.body_bytes_max`).
fn config_keys(bin: &str) -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = BTreeSet::new();
    let mut tables = vec![String::new()];
    while let Some(table) = tables.pop() {
        let fields = table_fields(bin, dir.path(), &table).unwrap_or_else(|| panic!("{bin}: [{table}] is not a table"));
        for f in fields {
            let key = if table.is_empty() { f } else { format!("{table}.{f}") };
            assert!(key.matches('.').count() < 4, "{bin}: config nested deeper than expected at {key}");
            if table_fields(bin, dir.path(), &key).is_some() {
                tables.push(key);
            } else {
                keys.insert(key);
            }
        }
    }
    keys
}

/// The leaf keys of a TOML document, dotted.
fn toml_keys(prefix: &str, v: &toml::Value, out: &mut BTreeSet<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                toml_keys(&key, v, out);
            }
        }
        _ => {
            out.insert(prefix.to_owned());
        }
    }
}

/// Keys shown commented out (`# tls_cert = "…"`), for those without a default
/// that an example cannot set for real (a path that must exist).
fn commented_keys(text: &str) -> BTreeSet<String> {
    let mut table = String::new();
    let mut out = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            table = line.trim_matches(|c| c == '[' || c == ']').trim().to_owned();
        } else if let Some(rest) = line.strip_prefix('#') {
            if let Some((k, _)) = rest.split_once('=') {
                let k = k.trim();
                if !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                    out.insert(if table.is_empty() { k.to_owned() } else { format!("{table}.{k}") });
                }
            }
        }
    }
    out
}

#[test]
fn config_keys_match_the_contract_and_the_examples() {
    let doc = read("docs/contract.md");
    for (bin, heading, example) in [
        ("spoold", "spoold keys", "daemon/spoold.example.toml"),
        ("ledgerd", "ledgerd keys", "daemon/ledgerd.example.toml"),
    ] {
        let in_code = config_keys(bin);
        let in_docs: BTreeSet<String> = table_rows(&doc, heading).iter().map(|r| first_ticked(&r[0])).collect();
        same(&format!("{bin} config keys"), &in_code, &in_docs);
        let mut in_example = BTreeSet::new();
        let text = read(example);
        let v: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{example}: {e}"));
        toml_keys("", &v, &mut in_example);
        in_example.extend(commented_keys(&text));
        same_as(&format!("{bin} config keys"), &in_code, &in_example, example);
    }
}

// ---------------------------------------------------------------------------
// Metrics, from running daemons.

/// Metric families of an OpenMetrics scrape: documented name → (type, label
/// names seen on its series). Counters are named with their `_total` suffix.
fn scrape_families(text: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, ty) = (it.next().unwrap().to_owned(), it.next().unwrap().to_owned());
            types.insert(name, ty);
        }
    }
    let mut out: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for (name, ty) in &types {
        let doc_name = if ty == "counter" && !name.ends_with("_total") { format!("{name}_total") } else { name.clone() };
        out.insert(doc_name, (ty.clone(), BTreeSet::new()));
    }
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let series = line.split(['{', ' ']).next().unwrap();
        // The family is the longest TYPE name the series name starts with.
        let family = types.keys().filter(|f| series.starts_with(f.as_str())).max_by_key(|f| f.len());
        let family = family.unwrap_or_else(|| panic!("series {series} has no # TYPE line"));
        let ty = &types[family];
        let doc_name = if ty == "counter" && !family.ends_with("_total") { format!("{family}_total") } else { family.clone() };
        if let (Some(a), Some(b)) = (line.find('{'), line.find('}')) {
            for pair in line[a + 1..b].split(',').filter(|p| !p.is_empty()) {
                let label = pair.split('=').next().unwrap().trim();
                if label != "le" {
                    out.get_mut(&doc_name).unwrap().1.insert(label.to_owned());
                }
            }
        }
    }
    out
}

fn doc_metrics(doc: &str, heading: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    table_rows(doc, heading)
        .iter()
        .map(|r| (first_ticked(&r[0]), (r[1].clone(), ticked(&r[2]).into_iter().collect())))
        .collect()
}

fn compare_metrics(daemon: &str, scraped: &BTreeMap<String, (String, BTreeSet<String>)>, documented: &BTreeMap<String, (String, BTreeSet<String>)>) {
    same(
        &format!("{daemon} metrics"),
        &scraped.keys().cloned().collect(),
        &documented.keys().cloned().collect(),
    );
    for (name, (ty, labels)) in scraped {
        let (doc_ty, doc_labels) = &documented[name];
        assert_eq!(ty, doc_ty, "{name}: exported as a {ty}, documented as a {doc_ty}");
        assert_eq!(labels, doc_labels, "{name}: exported with labels {labels:?}, documented with {doc_labels:?}");
    }
}

#[tokio::test]
async fn metrics_and_routes_match_the_contract() {
    let doc = read("docs/contract.md");
    let ledger = Ledgerd::start().await.unwrap();
    let spoold = Spoold::start(SpooldOptions::default().forward_to(&ledger.url, NODE_TOKEN)).await.unwrap();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();

    // One event through both daemons, so that every labelled family has a series.
    let id = "contract-1";
    let r = client
        .post(spoold.url("/v1/events"))
        .bearer_auth(TEST_TOKEN)
        .json(&test_support::events::spec_example(id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let deadline = Instant::now() + Duration::from_secs(20);
    while ledger.get_event(id).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the event never reached the ledger:\n{}", spoold.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Metrics. The forwarder counts a batch after the ledger's answer, which can
    // come after the event is readable at the ledger: scrape until every
    // documented label has a series (or 10 s passed), then compare.
    for (daemon, url, heading) in [
        ("spoold", spoold.url("/metrics"), "spoold metrics"),
        ("ledgerd", format!("{}/metrics", ledger.url), "ledgerd metrics"),
    ] {
        let documented = doc_metrics(&doc, heading);
        let deadline = Instant::now() + Duration::from_secs(10);
        let scraped = loop {
            let text = client.get(&url).send().await.unwrap().text().await.unwrap();
            let scraped = scrape_families(&text);
            let complete = documented
                .iter()
                .all(|(name, (_, labels))| labels.is_empty() || scraped.get(name).is_none_or(|(_, l)| !l.is_empty()));
            if complete || Instant::now() > deadline {
                break scraped;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        compare_metrics(daemon, &scraped, &documented);
    }

    // Routes: the routers' source against the contract's route tables ...
    for (daemon, source, heading) in [
        ("spoold", "daemon/src/api.rs", "2. Ingest API"),
        ("ledgerd", "crates/ledger/src/server.rs", "3. Ledger API"),
    ] {
        let in_code = router_routes(&read(source));
        let in_docs: BTreeSet<String> = documented_routes(&doc, heading).into_iter().map(|(m, p)| format!("{m} {p}")).collect();
        same(&format!("{daemon} routes (router in {source})"), &in_code, &in_docs);
    }

    // ... and each documented route really is served by its method.
    for (m, p) in documented_routes(&doc, "2. Ingest API") {
        let url = spoold.url(&p);
        let r = send(&client, &m, &url, TEST_TOKEN).await;
        assert!(![404, 405].contains(&r.status().as_u16()), "spoold {m} {p}: {}", r.status());
        // Another method is refused with 405 naming the documented one.
        let other = if m == "GET" { "POST" } else { "GET" };
        let r = send(&client, other, &url, TEST_TOKEN).await;
        assert_eq!(r.status().as_u16(), 405, "spoold {other} {p}");
        assert_eq!(r.headers()["allow"], m.as_str(), "spoold {other} {p}: Allow");
    }
    for (m, p) in documented_routes(&doc, "3. Ledger API") {
        let url = format!("{}{}", ledger.url, p.replace("{id}", id));
        let r = send(&client, &m, &url, test_support::ledgerd::ADMIN_TOKEN).await;
        assert!(![404, 405].contains(&r.status().as_u16()), "ledgerd {m} {p}: {}", r.status());
        let other = if m == "GET" { "POST" } else { "GET" };
        let r = send(&client, other, &url, test_support::ledgerd::ADMIN_TOKEN).await;
        assert_eq!(r.status().as_u16(), 405, "ledgerd {other} {p}");
        assert_eq!(r.headers()["allow"], m.as_str(), "ledgerd {other} {p}: Allow");
    }
}

async fn send(client: &reqwest::Client, method: &str, url: &str, token: &str) -> reqwest::Response {
    let b = match method {
        "GET" => client.get(url),
        "POST" => client.post(url).header("content-type", "application/json").body("{}"),
        m => panic!("no test for method {m}"),
    };
    b.bearer_auth(token).send().await.unwrap()
}

/// (method, path) of each row of the route table in section `heading`;
/// path parameters as `{id}`.
fn documented_routes(doc: &str, heading: &str) -> Vec<(String, String)> {
    // The route table is the first table of the section.
    table_rows(doc, heading)
        .into_iter()
        .filter_map(|r| {
            let t = ticked(&r[0]).into_iter().next()?;
            let (m, p) = t.split_once(' ')?;
            (m.chars().all(|c| c.is_ascii_uppercase()) && p.starts_with('/')).then(|| (m.to_owned(), p.to_owned()))
        })
        .collect()
}

/// The routes a router's source matches, as "METHOD /path" (a prefix match
/// `starts_with("/v1/events/")` is the route `/v1/events/{id}`). Two shapes
/// are understood: `(Method::GET, "/path") =>` (ledgerd) and
/// `"/path" => match *req.method() { Method::POST => …` (spoold). The `/v1/`
/// prefix check in front of authentication is not a route, nor are the paths
/// a 405 answer names (they are matched without a method).
fn router_routes(src: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let lines: Vec<&str> = src.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let code = line.split("//").next().unwrap();
        for (start, lit) in string_literals(code) {
            if !lit.starts_with('/') || lit == "/v1/" || lit == "/v1" {
                continue;
            }
            let before = code[..start - 1].trim_end();
            let after = code[start + lit.len() + 1..].trim_start();
            let method_before = before
                .rsplit_once("(Method::")
                .map(|(_, m)| m.split(|c: char| !c.is_ascii_uppercase()).next().unwrap().to_owned());
            if before.ends_with("starts_with(") {
                // A prefix route: its method is in the tuple pattern of the arm.
                let m = method_before.unwrap_or_else(|| panic!("prefix route {lit} without a method on its line"));
                out.insert(format!("{m} {lit}{{id}}"));
            } else if after.starts_with(") =>") || after.starts_with(")=>") {
                let m = method_before.unwrap_or_else(|| panic!("route {lit} without a method"));
                out.insert(format!("{m} {lit}"));
            } else if after.starts_with("=>") && after.contains("req.method()") {
                // spoold: the methods are the arms of the inner match, up to its `_ =>`.
                for l in &lines[i + 1..] {
                    if l.trim_start().starts_with("_ =>") {
                        break;
                    }
                    if let Some((_, m)) = l.split_once("Method::") {
                        out.insert(format!("{} {lit}", m.split(|c: char| !c.is_ascii_uppercase()).next().unwrap()));
                    }
                }
            }
        }
    }
    assert!(!out.is_empty(), "no route found in the router source: did its shape change?");
    out
}

/// The string literals of one line of Rust, with the byte offset of each
/// literal's first character (after the opening quote).
fn string_literals(line: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'"' {
            let start = i + 1;
            let mut j = start;
            while j < b.len() && b[j] != b'"' {
                if b[j] == b'\\' {
                    j += 1;
                }
                j += 1;
            }
            if j < b.len() {
                out.push((start, line[start..j].to_owned()));
            }
            i = j + 1;
        } else {
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// spoolctl verbs, from its clap definition.

#[test]
fn spoolctl_verbs_match_the_contract() {
    let out = Command::new(test_support::bin_path("spoolctl")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let in_code: BTreeSet<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|v| v != "help")
        .collect();
    let doc = read("docs/contract.md");
    let in_docs: BTreeSet<String> = table_rows(&doc, "6. spoolctl")
        .iter()
        .flat_map(|r| ticked(&r[0]))
        .filter_map(|t| t.split_whitespace().next().map(str::to_owned))
        .collect();
    same("spoolctl verbs", &in_code, &in_docs);
}
