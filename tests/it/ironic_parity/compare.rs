//! Comparing what Ironic answered with what ironboot answered, and holding the result against
//! the reviewed list of intentional differences (`tests/parity/differences.toml`).
//!
//! Both answers are normalised first (each server's own base URL, timestamps, query order,
//! captured ids, the JSON string inside `error_message`), then compared: status; the set of keys
//! at every level; the JSON type of every value; scalar values unless a rule says the value may
//! legitimately differ (`loose`: type only) or must not be looked at (`ignore`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::{Map, Value};

/// What one server answered to one step (an HTTP request or a client command).
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// HTTP status, or a client command's exit code.
    pub status: u16,
    /// The compared headers, lower-case names.
    pub headers: BTreeMap<String, String>,
    pub body: Value,
    /// Something to show next to a status difference (an error message, stderr).
    pub note: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Different status codes (the bodies are not compared then).
    Status,
    /// A compared header differs or is absent on one side.
    Header,
    /// Ironic has the key, ironboot does not.
    Missing,
    /// ironboot has a key Ironic does not.
    Extra,
    /// Different JSON types.
    Type,
    /// Different scalar values.
    Value,
    /// Arrays of different lengths.
    Length,
    /// A wait for a stable state timed out on ironboot only (or on Ironic only).
    Wait,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Kind::Status => "status",
            Kind::Header => "header",
            Kind::Missing => "missing",
            Kind::Extra => "extra",
            Kind::Type => "type",
            Kind::Value => "value",
            Kind::Length => "length",
            Kind::Wait => "wait",
        };
        f.write_str(s)
    }
}

#[derive(Debug, Clone)]
pub struct Diff {
    pub request: String,
    /// JSON pointer into the body, or `header:<name>`, or `status`.
    pub pointer: String,
    pub kind: Kind,
    pub ironic: String,
    pub ironboot: String,
}

/// Pointer globs (`*` matches anything, `/` included) that relax the comparison.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Compare only the JSON type here, and look no deeper.
    #[serde(default)]
    pub loose: Vec<String>,
    /// Do not compare at all.
    #[serde(default)]
    pub ignore: Vec<String>,
}

impl Rules {
    pub fn merged(&self, other: &Rules) -> Rules {
        Rules {
            loose: self.loose.iter().chain(&other.loose).cloned().collect(),
            ignore: self.ignore.iter().chain(&other.ignore).cloned().collect(),
        }
    }
    fn is_loose(&self, pointer: &str) -> bool {
        self.loose.iter().any(|p| glob(p, pointer))
    }
    fn is_ignored(&self, pointer: &str) -> bool {
        self.ignore.iter().any(|p| glob(p, pointer))
    }
}

/// `*` matches any run of characters (including none and `/`); everything else is literal.
pub fn glob(pattern: &str, s: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), s.as_bytes());
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// How one server's values are normalised before comparing.
pub struct Normaliser<'a> {
    /// The server's own base URL (`http://127.0.0.1:PORT`), shown as `<base>`.
    pub base: &'a str,
    /// Captured values (ids the server generated), shown as `${name}`.
    pub vars: &'a BTreeMap<String, String>,
}

impl Normaliser<'_> {
    pub fn value(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.string(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.value(x)).collect()),
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, x) in m {
                    // Ironic nests its fault as a JSON document inside a string.
                    let x = match (k.as_str(), x) {
                        ("error_message", Value::String(s)) => serde_json::from_str::<Value>(s)
                            .ok()
                            .filter(Value::is_object)
                            .unwrap_or_else(|| x.clone()),
                        _ => x.clone(),
                    };
                    out.insert(k.clone(), self.value(&x));
                }
                Value::Object(out)
            }
            other => other.clone(),
        }
    }

    pub fn string(&self, s: &str) -> String {
        if is_timestamp(s) {
            return "<timestamp>".into();
        }
        if let Some((name, _)) = self.vars.iter().find(|(_, v)| v.as_str() == s) {
            return format!("${{{name}}}");
        }
        // Captured ids inside links and Location headers, too (ids are long and unique, so a
        // substring match cannot hit by accident).
        let mut owned = s.to_string();
        for (name, v) in self.vars.iter().filter(|(_, v)| v.len() >= 16) {
            if owned.contains(v.as_str()) {
                owned = owned.replace(v.as_str(), &format!("${{{name}}}"));
            }
        }
        let s = owned.as_str();
        // A proxy may say the scheme is https: still this server's own address.
        let https_base = self.base.replacen("http://", "https://", 1);
        if let Some(rest) = s.strip_prefix(https_base.as_str()) {
            return format!("https:<base>{}", sort_query(rest));
        }
        match s.strip_prefix(self.base) {
            Some(rest) => format!("<base>{}", sort_query(rest)),
            None if s.starts_with("http://") || s.starts_with("https://") => sort_query(s),
            None => s.to_string(),
        }
    }
}

/// Query parameters in sorted order, so `?a=1&b=2` and `?b=2&a=1` compare equal.
fn sort_query(url: &str) -> String {
    match url.split_once('?') {
        None => url.to_string(),
        Some((path, query)) => {
            let mut pairs: Vec<&str> = query.split('&').collect();
            pairs.sort_unstable();
            format!("{path}?{}", pairs.join("&"))
        }
    }
}

/// Ironic's timestamp form, `YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00` (other forms stay as they are,
/// so a format difference shows).
fn is_timestamp(s: &str) -> bool {
    let Some(rest) = s.strip_suffix("+00:00") else {
        return false;
    };
    let b = rest.as_bytes();
    if b.len() < 19 {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && (b.len() == 19 || (b[19] == b'.' && b.len() > 20 && digits(20..b.len())))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A short rendering of a value for the report.
pub fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 160 {
        format!("{}…", s.chars().take(160).collect::<String>())
    } else {
        s
    }
}

/// The headers compared on every answer.
pub const COMPARED_HEADERS: &[&str] = &[
    "x-openstack-ironic-api-version",
    "x-openstack-ironic-api-minimum-version",
    "x-openstack-ironic-api-maximum-version",
    "location",
];

/// Compares two normalised answers to the step `request`.
pub fn compare(request: &str, ironic: &Answer, ironboot: &Answer, rules: &Rules) -> Vec<Diff> {
    let mut out = Vec::new();
    let mut push = |pointer: String, kind: Kind, a: String, b: String| {
        out.push(Diff {
            request: request.to_string(),
            pointer,
            kind,
            ironic: a,
            ironboot: b,
        })
    };
    if ironic.status != ironboot.status {
        push(
            "status".into(),
            Kind::Status,
            format!("{} {}", ironic.status, ironic.note),
            format!("{} {}", ironboot.status, ironboot.note),
        );
        return out;
    }
    for h in COMPARED_HEADERS {
        let pointer = format!("header:{h}");
        if rules.is_ignored(&pointer) {
            continue;
        }
        let (a, b) = (ironic.headers.get(*h), ironboot.headers.get(*h));
        if a != b {
            let show = |x: Option<&String>| x.cloned().unwrap_or_else(|| "(absent)".into());
            push(pointer, Kind::Header, show(a), show(b));
        }
    }
    walk(
        "",
        &ironic.body,
        &ironboot.body,
        rules,
        &mut |p, k, a, b| push(p, k, a, b),
    );
    out
}

fn walk(
    pointer: &str,
    a: &Value,
    b: &Value,
    rules: &Rules,
    push: &mut dyn FnMut(String, Kind, String, String),
) {
    if rules.is_ignored(pointer) {
        return;
    }
    if type_name(a) != type_name(b) {
        push(
            pointer.to_string(),
            Kind::Type,
            format!("{} {}", type_name(a), show(a)),
            format!("{} {}", type_name(b), show(b)),
        );
        return;
    }
    if rules.is_loose(pointer) {
        return;
    }
    match (a, b) {
        (Value::Object(ma), Value::Object(mb)) => {
            for (k, va) in ma {
                let p = format!("{pointer}/{}", escape(k));
                match mb.get(k) {
                    Some(vb) => walk(&p, va, vb, rules, push),
                    None if rules.is_ignored(&p) => {}
                    None => push(p, Kind::Missing, show(va), "(absent)".into()),
                }
            }
            for (k, vb) in mb {
                let p = format!("{pointer}/{}", escape(k));
                if !ma.contains_key(k) && !rules.is_ignored(&p) {
                    push(p, Kind::Extra, "(absent)".into(), show(vb));
                }
            }
        }
        (Value::Array(xa), Value::Array(xb)) => {
            if xa.len() != xb.len() {
                push(
                    pointer.to_string(),
                    Kind::Length,
                    format!("{} items", xa.len()),
                    format!("{} items", xb.len()),
                );
            }
            match (keys(xa), keys(xb)) {
                (Some(ka), Some(kb)) => walk_keyed(pointer, (xa, &ka), (xb, &kb), rules, push),
                _ => {
                    for (i, (va, vb)) in xa.iter().zip(xb).enumerate() {
                        walk(&format!("{pointer}/{i}"), va, vb, rules, push);
                    }
                }
            }
        }
        _ if a != b => push(pointer.to_string(), Kind::Value, show(a), show(b)),
        _ => {}
    }
}

/// The identity of each item when every item is an object naming one (`uuid`, else `hostname`,
/// else `name`): lists of resources are then compared item by item whatever their positions,
/// so one missing node does not shift every comparison after it.
fn keys(items: &[Value]) -> Option<Vec<String>> {
    if items.is_empty() {
        return None;
    }
    ["uuid", "hostname", "name"].iter().find_map(|k| {
        items
            .iter()
            .map(|v| v.get(*k).and_then(Value::as_str).map(String::from))
            .collect::<Option<Vec<String>>>()
    })
}

fn walk_keyed(
    pointer: &str,
    (xa, ka): (&[Value], &[String]),
    (xb, kb): (&[Value], &[String]),
    rules: &Rules,
    push: &mut dyn FnMut(String, Kind, String, String),
) {
    for (i, (va, k)) in xa.iter().zip(ka).enumerate() {
        let p = format!("{pointer}/{i}");
        match kb.iter().position(|x| x == k) {
            Some(j) => walk(&p, va, &xb[j], rules, push),
            None => push(p, Kind::Missing, format!("item {k}"), "(absent)".into()),
        }
    }
    for (j, k) in kb.iter().enumerate() {
        if !ka.contains(k) {
            push(
                format!("{pointer}/{j}"),
                Kind::Extra,
                "(absent)".into(),
                format!("item {k}"),
            );
        }
    }
    // Same items, same order: sorting is part of the contract.
    let common_a: Vec<&String> = ka.iter().filter(|k| kb.contains(k)).collect();
    let common_b: Vec<&String> = kb.iter().filter(|k| ka.contains(k)).collect();
    if common_a != common_b {
        push(
            format!("{pointer}#order"),
            Kind::Value,
            format!("{common_a:?}"),
            format!("{common_b:?}"),
        );
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// One reviewed, intentional difference.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listed {
    /// Step id glob (`api:node-create-*`, `cli:*`, ...).
    pub request: String,
    /// Pointer glob (default: any).
    #[serde(default = "any")]
    pub pointer: String,
    /// Kind of difference (default: any).
    pub kind: Option<Kind>,
    pub reason: String,
}

fn any() -> String {
    "*".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DifferencesFile {
    #[serde(default)]
    pub difference: Vec<Listed>,
}

impl Listed {
    fn matches(&self, d: &Diff) -> bool {
        glob(&self.request, &d.request)
            && glob(&self.pointer, &d.pointer)
            && self.kind.is_none_or(|k| k == d.kind)
    }
}

/// The verdict over all steps: what is not listed, and which listed entries no longer occur.
pub struct Verdict {
    pub unlisted: Vec<Diff>,
    pub stale: Vec<Listed>,
    pub listed_hits: usize,
}

/// Holds `diffs` against the listed differences whose request glob starts with `scope`
/// (`api:`, `cli:`, `sdk:`), so each test answers only for its own entries.
pub fn judge(diffs: &[Diff], listed: &[Listed], scope: &str) -> Verdict {
    let mine: Vec<&Listed> = listed
        .iter()
        .filter(|l| l.request.starts_with(scope))
        .collect();
    let mut hits = vec![0usize; mine.len()];
    let mut unlisted = Vec::new();
    for d in diffs {
        match mine.iter().position(|l| l.matches(d)) {
            Some(i) => hits[i] += 1,
            None => unlisted.push(d.clone()),
        }
    }
    Verdict {
        stale: mine
            .iter()
            .zip(&hits)
            .filter(|(_, h)| **h == 0)
            .map(|(l, _)| (*l).clone())
            .collect(),
        listed_hits: hits.iter().sum(),
        unlisted,
    }
}

/// `/nodes/3/traits/0` → `/nodes/*/traits/*`, to group a difference across list items.
fn generalise(pointer: &str) -> String {
    pointer
        .split('/')
        .map(|seg| {
            if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
                "*"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The report: a summary grouped by (kind, pointer) with the steps it occurs in, then every
/// difference per step, then the stale entries.
pub fn report(title: &str, steps: usize, verdict: &Verdict) -> String {
    let mut r = String::new();
    let _ = writeln!(
        r,
        "==== {title}: {steps} steps compared; {} unlisted difference(s), {} listed (intentional) difference(s) seen, {} stale listed entr(y/ies) ====",
        verdict.unlisted.len(),
        verdict.listed_hits,
        verdict.stale.len()
    );
    let mut groups: BTreeMap<(Kind, String, String), Vec<&Diff>> = BTreeMap::new();
    for d in &verdict.unlisted {
        let key_detail = match d.kind {
            Kind::Status => format!("{} vs {}", status_code(&d.ironic), status_code(&d.ironboot)),
            Kind::Missing | Kind::Extra => String::new(),
            _ => String::new(),
        };
        groups
            .entry((d.kind, generalise(&d.pointer), key_detail))
            .or_default()
            .push(d);
    }
    let _ = writeln!(r, "\n---- summary (kind, pointer: count, steps) ----");
    for ((kind, pointer, detail), ds) in &groups {
        let mut ids: Vec<&str> = ds.iter().map(|d| d.request.as_str()).collect();
        ids.dedup();
        let shown: Vec<&str> = ids.iter().take(8).copied().collect();
        let more = if ids.len() > 8 {
            format!(" (+{} more)", ids.len() - 8)
        } else {
            String::new()
        };
        let _ = writeln!(
            r,
            "[{kind}] {pointer} {detail}: {} × in {}{more}\n      e.g. ironic={}  ironboot={}",
            ds.len(),
            shown.join(", "),
            ds[0].ironic,
            ds[0].ironboot
        );
    }
    let _ = writeln!(r, "\n---- every unlisted difference, by step ----");
    let mut last = "";
    for d in &verdict.unlisted {
        if d.request != last {
            let _ = writeln!(r, "{}:", d.request);
            last = &d.request;
        }
        let _ = writeln!(
            r,
            "    [{}] {}: ironic={}  ironboot={}",
            d.kind, d.pointer, d.ironic, d.ironboot
        );
    }
    if !verdict.stale.is_empty() {
        let _ = writeln!(
            r,
            "\n---- listed differences that no longer occur (remove them) ----"
        );
        for l in &verdict.stale {
            let _ = writeln!(
                r,
                "request={} pointer={} kind={:?}: {}",
                l.request, l.pointer, l.kind, l.reason
            );
        }
    }
    r
}

fn status_code(s: &str) -> &str {
    s.split_whitespace().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("api:node-*", "api:node-create-1"));
        assert!(glob(
            "*/driver_internal_info",
            "/nodes/0/driver_internal_info"
        ));
        assert!(!glob(
            "*/driver_internal_info",
            "/nodes/0/driver_internal_info/x"
        ));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b", "aXXbc"));
    }

    #[test]
    fn timestamps_and_urls_normalise() {
        let vars = BTreeMap::from([("n".to_string(), "u-1".to_string())]);
        let n = Normaliser {
            base: "http://127.0.0.1:9",
            vars: &vars,
        };
        assert_eq!(n.string("2026-12-05T21:35:53.222696+00:00"), "<timestamp>");
        assert_eq!(n.string("2026-12-05T21:35:53Z"), "2026-12-05T21:35:53Z");
        assert_eq!(
            n.string("http://127.0.0.1:9/v1/nodes?limit=1&a=2"),
            "<base>/v1/nodes?a=2&limit=1"
        );
        assert_eq!(n.string("u-1"), "${n}");
        let body = n.value(&json!({"error_message": "{\"faultcode\": \"Client\"}"}));
        assert_eq!(body, json!({"error_message": {"faultcode": "Client"}}));
    }

    #[test]
    fn differences_are_found_and_judged() {
        let a = Answer {
            status: 200,
            body: json!({"x": 1, "gone": true, "list": [1, 2], "msg": "a"}),
            ..Default::default()
        };
        let b = Answer {
            status: 200,
            body: json!({"x": 2, "new": null, "list": [1], "msg": "b"}),
            ..Default::default()
        };
        let rules = Rules {
            loose: vec!["/msg".into()],
            ignore: vec![],
        };
        let d = compare("api:t", &a, &b, &rules);
        let kinds: Vec<(Kind, &str)> = d.iter().map(|d| (d.kind, d.pointer.as_str())).collect();
        assert_eq!(
            kinds,
            vec![
                (Kind::Missing, "/gone"),
                (Kind::Length, "/list"),
                (Kind::Value, "/x"),
                (Kind::Extra, "/new"),
            ]
        );
        let listed = vec![
            Listed {
                request: "api:t".into(),
                pointer: "/new".into(),
                kind: Some(Kind::Extra),
                reason: "r".into(),
            },
            Listed {
                request: "api:never".into(),
                pointer: "*".into(),
                kind: None,
                reason: "r".into(),
            },
        ];
        let v = judge(&d, &listed, "api:");
        assert_eq!(v.unlisted.len(), 3);
        assert_eq!(v.listed_hits, 1);
        assert_eq!(v.stale.len(), 1);
    }
}
