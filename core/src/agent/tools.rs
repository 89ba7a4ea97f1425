//! The tools: their JSON Schemas (arguments and structured results) and
//! what they do.
use super::nn::{emb_of, Metric};
use super::{wall_ns, Agent, AgentLimits, Deadline, Proposal, Scope, ToolError};
use crate::admin::AdminCommand;
use crate::gates::{GateEngine, GatesConfig, ShadowReport, ShadowRun, ShadowState};
use rusqlite::types::Value as Sql;
use rusqlite::Connection;
use serde_json::{json, Value};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use wirefold_schema::FlowRec;

/// Longest a proposal call waits for a live evaluation (ms).
const MAX_WAIT_MS: u64 = 60_000;

/// A comparison's counts and examples, as the tools report them.
fn report_json(r: &ShadowReport) -> Value {
    let examples: Vec<Value> = r
        .examples
        .iter()
        .map(|x| {
            json!({"sensor_id": x.sensor, "seq": x.seq, "idx": x.idx, "score": x.score as f64,
                "live": x.live.name(), "proposed": x.proposed.name(),
                "proposed_gate": x.proposed_held.as_ref().map(|h| h.0), "proposed_reason": x.proposed_held.as_ref().map(|h| h.1.clone())})
        })
        .collect();
    json!({
        "live": {"promoted": r.live_promoted, "held": r.live_held},
        "proposed": {"promoted": r.proposed_promoted, "held": r.proposed_held},
        "newly_promoted": r.newly_promoted, "newly_held": r.newly_held, "examples": examples,
    })
}

/// A live shadow run as the tools report it.
fn shadow_json(run: &ShadowRun) -> Value {
    let r = &run.report;
    let decided: Vec<Value> = r.decided.iter().map(|(s, q)| json!({"sensor_id": s, "seq": q})).collect();
    let mut v = report_json(r);
    v["base_version"] = json!(run.base_version);
    v["status"] = json!(run.state.name());
    v["evaluation"] = json!({"method": "live shadow: the proposed configuration decides each new stored batch beside the live one, from a copy of the live gates' state",
        "batches": r.batches, "batches_wanted": run.want, "flows": r.flows, "batches_decided": decided});
    v
}

/// The live shadow run of proposal `id`, waiting up to `wait_ms` for it to finish.
async fn shadow_status(agent: &Arc<Agent>, id: u64, wait_ms: u64) -> Result<Value, ToolError> {
    let until = std::time::Instant::now() + std::time::Duration::from_millis(wait_ms.min(MAX_WAIT_MS));
    loop {
        let v = agent.on_store(move |_, p| p.shadow(id).map(|r| (r.state, shadow_json(r)))).await?;
        let Some((state, v)) = v else {
            return Err(ToolError::NotFound(format!(
                "proposal_id: no live evaluation of proposal {id} (applied, or pushed out by newer proposals)"
            )));
        };
        if state != ShadowState::Running || std::time::Instant::now() >= until {
            return Ok(v);
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// A tool as listed by `tools/list`.
#[derive(Debug, Clone)]
pub struct ToolDef {
    /// Its name.
    pub name: &'static str,
    /// What it does.
    pub description: String,
    /// Whether it needs the `mutate` scope.
    pub mutate: bool,
    /// Whether it changes nothing.
    pub read_only: bool,
    /// JSON Schema of the arguments.
    pub input: Value,
    /// JSON Schema of the structured result.
    pub output: Value,
}

fn obj(props: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
}

fn nullable(t: &str) -> Value {
    json!({"type": [t, "null"]})
}

fn time_props(p: &mut serde_json::Map<String, Value>) {
    p.insert(
        "since_ns".into(),
        json!({"type": "integer", "minimum": 0, "description": "flows whose last packet is at or after this (Unix ns); default: no bound"}),
    );
    p.insert(
        "until_ns".into(),
        json!({"type": "integer", "minimum": 0, "description": "flows whose last packet is before this (Unix ns); default: no bound"}),
    );
    p.insert(
        "sensor".into(),
        json!({"type": "string", "minLength": 1, "maxLength": 64, "description": "one sensor id"}),
    );
}

fn limit_prop(l: &AgentLimits, default: u32) -> Value {
    json!({"type": "integer", "minimum": 1, "maximum": l.max_rows, "description": format!("rows at most (default {default}, at most {} per call)", l.max_rows)})
}

fn flow_row_schema(extra: &[(&str, Value)]) -> Value {
    let mut p = json!({
        "sensor_id": {"type": "string"}, "seq": {"type": "integer"}, "idx": {"type": "integer"},
        "src": {"type": "string"}, "dst": {"type": "string"},
        "src_port": {"type": "integer"}, "dst_port": {"type": "integer"}, "proto": {"type": "integer"},
        "first_ns": {"type": "integer"}, "last_ns": {"type": "integer"},
        "fwd_packets": {"type": "integer"}, "fwd_bytes": {"type": "integer"},
        "rev_packets": {"type": "integer"}, "rev_bytes": {"type": "integer"},
        "score": {"type": "number"},
        "verdict": {"type": ["string", "null"], "enum": ["promoted", "held", null]},
        "gate": nullable("string"), "reason": nullable("string"),
        "app": {"type": "string"}, "server_name": nullable("string"), "ja4": nullable("string"),
        "dns_qname": nullable("string"), "http_host": nullable("string"),
        "community_id": nullable("string"),
    });
    let m = p.as_object_mut().expect("object");
    for (k, v) in extra {
        m.insert(k.to_string(), v.clone());
    }
    let req: Vec<String> = m.keys().cloned().collect();
    json!({"type": "object", "properties": p, "required": req})
}

/// Every tool, with the limits' caps in its schemas.
pub fn tools(l: &AgentLimits) -> Vec<ToolDef> {
    let mut t = Vec::new();
    let flow_row = flow_row_schema(&[]);
    t.push(ToolDef {
        name: "list_sensors",
        description: "List the sensors the core knows, with their state (live, stale, offline), last sequence number, last contact and counts.".into(),
        mutate: false,
        read_only: true,
        input: obj(json!({}), &[]),
        output: obj(
            json!({"sensors": {"type": "array", "items": {"type": "object", "required": ["sensor_id", "state", "last_seq", "last_contact_ns", "batches", "flows"],
                "properties": {"sensor_id": {"type": "string"}, "state": {"type": "string", "enum": ["live", "stale", "offline"]},
                "last_seq": {"type": "integer"}, "last_contact_ns": {"type": "integer"}, "batches": {"type": "integer"}, "flows": {"type": "integer"}}}},
                "truncated": {"type": "boolean"}}),
            &["sensors", "truncated"],
        ),
    });
    let mut qp = serde_json::Map::new();
    time_props(&mut qp);
    qp.insert("addr".into(), json!({"type": "string", "minLength": 2, "maxLength": 64, "description": "an IPv4/IPv6 address or CIDR (e.g. 10.0.0.0/8); matches source or destination"}));
    qp.insert(
        "port".into(),
        json!({"type": "integer", "minimum": 0, "maximum": 65535, "description": "source or destination port"}),
    );
    qp.insert(
        "proto".into(),
        json!({"type": "integer", "minimum": 0, "maximum": 255, "description": "IP protocol number (6 TCP, 17 UDP)"}),
    );
    qp.insert(
        "decision".into(),
        json!({"type": "string", "enum": ["promoted", "held"], "description": "the gates' verdict"}),
    );
    qp.insert("min_score".into(), json!({"type": "number", "description": "score at least this"}));
    qp.insert(
        "app".into(),
        json!({"type": "string", "enum": ["unknown", "tls", "quic", "dns", "http", "ssh"], "description": "the flow's app label"}),
    );
    qp.insert("server_name".into(), json!({"type": "string", "minLength": 1, "maxLength": 255, "description": "TLS/QUIC server name; a leading '*.' matches any subdomain"}));
    qp.insert(
        "ja4".into(),
        json!({"type": "string", "minLength": 1, "maxLength": 64, "description": "JA4 fingerprint, exactly"}),
    );
    qp.insert(
        "community_id".into(),
        json!({"type": "string", "minLength": 3, "maxLength": 64, "description": "Community ID v1 (as Zeek, Suricata and the sensor's records carry it), e.g. 1:LQU9qZlK+B5F3KDmev6m5PMibrg=; hashed per row, so bound the window with since_ns/until_ns"}),
    );
    qp.insert("limit".into(), limit_prop(l, 100));
    t.push(ToolDef {
        name: "query_flows",
        description: "Query stored flows, newest first (by last packet time): time range, sensor, address or CIDR, port, protocol, the gates' decision, minimum score, app, server name, JA4, row cap.".into(),
        mutate: false,
        read_only: true,
        input: json!({"type": "object", "properties": qp, "required": [], "additionalProperties": false}),
        output: obj(json!({"flows": {"type": "array", "items": flow_row.clone()}, "truncated": {"type": "boolean"}}), &["flows", "truncated"]),
    });
    let mut tp = serde_json::Map::new();
    time_props(&mut tp);
    tp.insert("by".into(), json!({"type": "string", "enum": ["src", "dst"], "description": "group by source (default) or destination address"}));
    tp.insert("limit".into(), limit_prop(l, 10));
    t.push(ToolDef {
        name: "top_talkers",
        description: "Addresses with the most bytes (both directions) over a window, with flow and packet counts.".into(),
        mutate: false,
        read_only: true,
        input: json!({"type": "object", "properties": tp, "required": [], "additionalProperties": false}),
        output: obj(
            json!({"by": {"type": "string"}, "talkers": {"type": "array", "items": {"type": "object", "required": ["addr", "flows", "bytes", "packets"],
                "properties": {"addr": {"type": "string"}, "flows": {"type": "integer"}, "bytes": {"type": "integer"}, "packets": {"type": "integer"}}}}}),
            &["by", "talkers"],
        ),
    });
    let mut ap = serde_json::Map::new();
    time_props(&mut ap);
    ap.insert("min_score".into(), json!({"type": "number", "description": "score at least this"}));
    ap.insert("limit".into(), limit_prop(l, 20));
    let anomaly = flow_row_schema(&[
        ("shadow", json!({"type": ["string", "null"]})),
        ("shadow_reason", nullable("string")),
        ("config_version", nullable("integer")),
    ]);
    t.push(ToolDef {
        name: "recent_anomalies",
        description: "The highest-scoring flows in a window, with their gates' decision, deciding gate and reason."
            .into(),
        mutate: false,
        read_only: true,
        input: json!({"type": "object", "properties": ap, "required": [], "additionalProperties": false}),
        output: obj(json!({"flows": {"type": "array", "items": anomaly}}), &["flows"]),
    });
    let mut sp = serde_json::Map::new();
    time_props(&mut sp);
    sp.insert("flow".into(), obj(json!({"sensor_id": {"type": "string"}, "seq": {"type": "integer", "minimum": 0}, "idx": {"type": "integer", "minimum": 0}}), &["sensor_id", "seq", "idx"]));
    sp.insert("vector".into(), json!({"type": "array", "items": {"type": "integer", "minimum": -128, "maximum": 127}, "minItems": 32, "maxItems": 32, "description": "a 32-value int8 embedding"}));
    sp.insert("metric".into(), json!({"type": "string", "enum": ["l1", "l2"], "description": "l1 (default, the novelty gate's) or squared l2"}));
    sp.insert("k".into(), json!({"type": "integer", "minimum": 1, "maximum": l.max_rows.min(1000), "description": "neighbours (default 10)"}));
    t.push(ToolDef {
        name: "similar_flows",
        description: "Nearest neighbours of a stored flow's int8 embedding (`flow`) or of a given 32-value vector (`vector`), within a time range and optionally one sensor: brute force over an in-memory packed copy of the stored embeddings.".into(),
        mutate: false,
        read_only: true,
        input: json!({"type": "object", "properties": sp, "required": [], "additionalProperties": false}),
        output: obj(
            json!({"metric": {"type": "string"}, "query": {"type": "array", "items": {"type": "integer"}}, "scanned": {"type": "integer"},
                "indexed": {"type": "integer"},
                "neighbours": {"type": "array", "items": {"type": "object", "required": ["sensor_id", "seq", "idx", "distance", "score", "last_ns"],
                    "properties": {"sensor_id": {"type": "string"}, "seq": {"type": "integer"}, "idx": {"type": "integer"}, "distance": {"type": "integer"},
                    "score": {"type": "number"}, "last_ns": {"type": "integer"}}}}}),
            &["metric", "query", "scanned", "indexed", "neighbours"],
        ),
    });
    t.push(ToolDef {
        name: "gate_status",
        description: "The gates: configuration version, every gate's mode and parameters, version history, each sensor's budget left, reservoir, drift values and alerts; and this agent's own call and mutation budget left.".into(),
        mutate: false,
        read_only: true,
        input: obj(json!({}), &[]),
        output: obj(
            json!({"version": {"type": "integer"}, "config": {"type": "object"}, "describe": {"type": "string"},
                "history": {"type": "array", "items": {"type": "object", "required": ["version", "cause"], "properties": {"version": {"type": "integer"}, "cause": {"type": "string"}}}},
                "sensors": {"type": "array", "items": {"type": "object", "required": ["sensor", "budget_remaining", "drift_alerted"],
                    "properties": {"sensor": {"type": "string"}, "budget_remaining": {"type": "integer"}, "drift_alerted": {"type": "boolean"},
                    "drift_psi_ref_max": {"type": ["number", "null"]}, "drift_top_share": {"type": ["number", "null"]}}}},
                "ledger": {"type": "object"},
                "agent": {"type": "object", "required": ["calls_available", "mutations_left_this_hour"],
                    "properties": {"calls_available": {"type": "number"}, "mutations_left_this_hour": {"type": "integer"}}}}),
            &["version", "config", "describe", "history", "sensors", "ledger", "agent"],
        ),
    });
    t.push(ToolDef {
        name: "explain_decision",
        description: "Why a flow was promoted or held: the flow, its decisions row (verdict, deciding gate, reason, shadow gates, configuration version), that version's cause, and the ledger entries behind it (its promotion or sampled hold entry, its batch entry, the configuration entry).".into(),
        mutate: false,
        read_only: true,
        input: obj(json!({"sensor_id": {"type": "string", "minLength": 1, "maxLength": 64}, "seq": {"type": "integer", "minimum": 0}, "idx": {"type": "integer", "minimum": 0}}), &["sensor_id", "seq", "idx"]),
        output: obj(
            json!({"flow": flow_row.clone(),
                "decision": {"type": ["object", "null"]},
                "config": {"type": ["object", "null"]},
                "ledger_entries": {"type": "array", "items": {"type": "object", "required": ["seq", "kind", "time_ns", "body"],
                    "properties": {"seq": {"type": "integer"}, "kind": {"type": "string"}, "time_ns": {"type": "integer"}, "body": {"type": "object"}}}}}),
            &["flow", "decision", "config", "ledger_entries"],
        ),
    });
    t.push(ToolDef {
        name: "verify_ledger",
        description: "Verify the audit ledger's hash chain against the head the database records; names the first bad entry.".into(),
        mutate: false,
        read_only: true,
        input: obj(json!({}), &[]),
        output: obj(
            json!({"ok": {"type": "boolean"}, "entries": {"type": "integer"}, "head_seq": {"type": "integer"}, "head_hash": {"type": "string"},
                "error": nullable("string"), "path": {"type": "string"}}),
            &["ok", "entries", "head_seq", "head_hash", "error", "path"],
        ),
    });
    t.push(ToolDef {
        name: "metrics_snapshot",
        description: "The core's Prometheus metrics now, parsed into samples (name, labels, value); `prefix` keeps only names starting with it.".into(),
        mutate: false,
        read_only: true,
        input: obj(json!({"prefix": {"type": "string", "maxLength": 128}}), &[]),
        output: obj(
            json!({"samples": {"type": "array", "items": {"type": "object", "required": ["name", "labels", "value"],
                "properties": {"name": {"type": "string"}, "labels": {"type": "object", "additionalProperties": {"type": "string"}}, "value": {"type": "number"}}}}}),
            &["samples"],
        ),
    });
    let gate_enum = json!({"type": "string", "enum": ["score", "novelty", "burst", "budget", "drift"]});
    let report = |extra: Value, req: &[&str]| {
        let mut props = json!({"proposal_id": {"type": "integer"}, "change": {"type": "string"}, "base_version": {"type": "integer"},
            "status": {"type": "string", "enum": ["evaluating", "done", "stale"], "description": "evaluating: the live shadow run has not yet seen its batches; stale: the live configuration changed first"},
            "evaluation": {"type": "object", "required": ["method", "batches", "batches_wanted", "flows"], "properties": {"method": {"type": "string"}, "batches": {"type": "integer"}, "batches_wanted": {"type": "integer"}, "flows": {"type": "integer"},
                "batches_decided": {"type": "array", "items": {"type": "object", "required": ["sensor_id", "seq"], "properties": {"sensor_id": {"type": "string"}, "seq": {"type": "integer"}}}}}},
            "live": {"type": "object", "required": ["promoted", "held"], "properties": {"promoted": {"type": "integer"}, "held": {"type": "integer"}}},
            "proposed": {"type": "object", "required": ["promoted", "held"], "properties": {"promoted": {"type": "integer"}, "held": {"type": "integer"}}},
            "newly_promoted": {"type": "integer"}, "newly_held": {"type": "integer"},
            "examples": {"type": "array", "items": {"type": "object", "required": ["sensor_id", "seq", "idx", "score", "live", "proposed"],
                "properties": {"sensor_id": {"type": "string"}, "seq": {"type": "integer"}, "idx": {"type": "integer"}, "score": {"type": "number"},
                "live": {"type": "string"}, "proposed": {"type": "string"}, "proposed_gate": nullable("string"), "proposed_reason": nullable("string")}}}});
        if let (Some(p), Some(e)) = (props.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        let mut r = vec![
            "proposal_id",
            "change",
            "base_version",
            "status",
            "evaluation",
            "live",
            "proposed",
            "newly_promoted",
            "newly_held",
            "examples",
        ];
        r.extend_from_slice(req);
        obj(props, &r)
    };
    t.push(ToolDef {
        name: "propose_gate_change",
        description: format!("Propose one gate change (`gates.<gate>.<key> = <value>`, e.g. a mode or the score threshold). With `over: \"live\"` (the default) the proposed configuration runs in shadow beside the live one, from a copy of the live gates' state, over the next `batches` stored batches (default 20, at most {m}); the call returns at once (or after up to `wait_ms`) with status `evaluating`, and `proposal_status` reports the difference once it is `done`. With `over: \"stored\"` the last `batches` stored batches are replayed at once through two fresh engines, the live configuration and the proposed one. Changes nothing; returns a proposal id for apply_proposal.", m = l.max_shadow_batches),
        mutate: false,
        read_only: true,
        input: obj(
            json!({"gate": gate_enum, "key": {"type": "string", "minLength": 1, "maxLength": 32, "description": "mode, threshold, min_distance, per_window, ..."},
                "value": {"type": ["string", "number", "boolean"], "description": "the new value (modes: enforce, shadow, off)"},
                "batches": {"type": "integer", "minimum": 1, "maximum": l.max_shadow_batches},
                "over": {"type": "string", "enum": ["live", "stored"], "description": "live (default): shadow the next batches; stored: replay the last ones"},
                "wait_ms": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_MS, "description": "live: wait up to this long for the evaluation to finish (default 0)"}}),
            &["gate", "key", "value"],
        ),
        output: report(json!({}), &[]),
    });
    t.push(ToolDef {
        name: "proposal_status",
        description: "A proposal's evaluation so far: for a live proposal, the batches its shadow run has decided beside the live gates and what it would have promoted or held differently; `done` once it has seen the batches it asked for.".into(),
        mutate: false,
        read_only: true,
        input: obj(json!({"proposal_id": {"type": "integer", "minimum": 1},
            "wait_ms": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_MS, "description": "wait up to this long for the evaluation to finish (default 0)"}}), &["proposal_id"]),
        output: report(json!({}), &[]),
    });
    t.push(ToolDef {
        name: "apply_proposal",
        description: "Apply a proposal (mutate scope): through the same path as the admin `set`, a new configuration version and a ledger entry. Refused while a live proposal is still evaluating (with a retry hint) and when the configuration changed since the proposal was made. Counts against the agent's mutation budget.".into(),
        mutate: true,
        read_only: false,
        input: obj(json!({"proposal_id": {"type": "integer", "minimum": 1}}), &["proposal_id"]),
        output: obj(
            json!({"proposal_id": {"type": "integer"}, "change": {"type": "string"}, "version": {"type": "integer"}, "changed": {"type": "boolean"}}),
            &["proposal_id", "change", "version", "changed"],
        ),
    });
    t.push(ToolDef {
        name: "rollback_gates",
        description: "Restore an earlier configuration version as a new version (mutate scope; the admin `rollback` path). Counts against the agent's mutation budget.".into(),
        mutate: true,
        read_only: false,
        input: obj(json!({"version": {"type": "integer", "minimum": 1}}), &["version"]),
        output: obj(json!({"version": {"type": "integer"}, "restored": {"type": "integer"}}), &["version", "restored"]),
    });
    t
}

fn addr_text(b: &[u8]) -> String {
    match b.len() {
        4 => std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string(),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            std::net::Ipv6Addr::from(a).to_string()
        }
        _ => b.iter().map(|x| format!("{x:02x}")).collect(),
    }
}

/// An address or CIDR as the range of stored address blobs it covers.
pub fn cidr_range(s: &str) -> Result<(Vec<u8>, Vec<u8>), String> {
    let (a, bits) = match s.split_once('/') {
        Some((a, b)) => (a, Some(b.parse::<u32>().map_err(|_| format!("addr: prefix length '{b}' is not a number"))?)),
        None => (s, None),
    };
    let ip: std::net::IpAddr = a.parse().map_err(|_| format!("addr: '{s}' is not an IP address or CIDR"))?;
    let bytes: Vec<u8> = match ip {
        std::net::IpAddr::V4(v) => v.octets().to_vec(),
        std::net::IpAddr::V6(v) => v.octets().to_vec(),
    };
    let total = bytes.len() as u32 * 8;
    let bits = bits.unwrap_or(total);
    if bits > total {
        return Err(format!("addr: prefix length {bits} is longer than {total}"));
    }
    let mut lo = bytes.clone();
    let mut hi = bytes;
    for i in 0..total {
        if i >= bits {
            let (byte, bit) = ((i / 8) as usize, 7 - (i % 8));
            lo[byte] &= !(1 << bit);
            hi[byte] |= 1 << bit;
        }
    }
    Ok((lo, hi))
}

fn int(a: &Value, k: &str) -> Option<i64> {
    a.get(k).and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
}

fn window(a: &Value) -> (i64, i64) {
    (int(a, "since_ns").unwrap_or(0), int(a, "until_ns").unwrap_or(i64::MAX))
}

fn limit(a: &Value, l: &AgentLimits, default: u32) -> i64 {
    int(a, "limit").unwrap_or(default as i64).clamp(1, l.max_rows as i64)
}

/// Register the SQL functions the tools' queries use on a reader connection:
/// `community_id(src_ip, dst_ip, src_port, dst_port, proto)`, the flow's
/// Community ID v1 with `seed`, computed from the stored tuple (as the
/// sensor computes it for its records: initiator first; for ICMP and
/// ICMPv6 the stored `dst_port` is `type << 8 | code`). NULL for a row whose
/// addresses are not both IPv4 or both IPv6. The core stores no copy: the
/// tuple is the truth, and the batch carries no extra bytes for it.
pub fn register_functions(c: &Connection, seed: u16) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    use wirefold_inspect::community_id::{community_id, FlowTuple};
    c.create_scalar_function(
        "community_id",
        5,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        move |ctx| {
            let src = ctx.get_raw(0).as_blob_or_null().ok().flatten().unwrap_or(&[]);
            let dst = ctx.get_raw(1).as_blob_or_null().ok().flatten().unwrap_or(&[]);
            let (sport, dport, proto) =
                (ctx.get::<i64>(2)? as u16, ctx.get::<i64>(3)? as u16, ctx.get::<i64>(4)? as u8);
            let (sp, dp) = match proto {
                1 | 58 => (dport >> 8, dport & 0xff),
                _ => (sport, dport),
            };
            let t = FlowTuple { proto, src, dst, src_port: sp, dst_port: dp };
            Ok(community_id(seed, &t).ok().map(|c| c.as_str().to_string()))
        },
    )
}

const FLOW_COLS: &str =
    "f.sensor_id, f.seq, f.idx, f.src_ip, f.dst_ip, f.src_port, f.dst_port, f.proto, f.first_ns, f.last_ns,
    f.fwd_packets, f.fwd_bytes, f.rev_packets, f.rev_bytes, f.score, f.verdict, f.gate, f.reason,
    i.app, i.server_name, i.ja4, i.dns_qname, i.http_host,
    community_id(f.src_ip, f.dst_ip, f.src_port, f.dst_port, f.proto)";

/// The join that brings a flow's inspection facts (schema version 3; none for older sensors).
const INFO_JOIN: &str = " LEFT JOIN flow_info i ON i.sensor_id = f.sensor_id AND i.seq = f.seq AND i.idx = f.idx";

fn flow_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<serde_json::Map<String, Value>> {
    let src: Vec<u8> = r.get(3)?;
    let dst: Vec<u8> = r.get(4)?;
    let v = json!({
        "sensor_id": r.get::<_, String>(0)?, "seq": r.get::<_, i64>(1)?, "idx": r.get::<_, i64>(2)?,
        "src": addr_text(&src), "dst": addr_text(&dst), "src_port": r.get::<_, i64>(5)?, "dst_port": r.get::<_, i64>(6)?,
        "proto": r.get::<_, i64>(7)?, "first_ns": r.get::<_, i64>(8)?, "last_ns": r.get::<_, i64>(9)?,
        "fwd_packets": r.get::<_, i64>(10)?, "fwd_bytes": r.get::<_, i64>(11)?, "rev_packets": r.get::<_, i64>(12)?,
        "rev_bytes": r.get::<_, i64>(13)?, "score": r.get::<_, f64>(14)?, "verdict": r.get::<_, Option<String>>(15)?,
        "gate": r.get::<_, Option<String>>(16)?, "reason": r.get::<_, Option<String>>(17)?,
        "app": r.get::<_, Option<String>>(18)?.unwrap_or_else(|| "unknown".into()),
        "server_name": r.get::<_, Option<String>>(19)?, "ja4": r.get::<_, Option<String>>(20)?,
        "dns_qname": r.get::<_, Option<String>>(21)?, "http_host": r.get::<_, Option<String>>(22)?,
        "community_id": r.get::<_, Option<String>>(23)?,
    });
    match v {
        Value::Object(m) => Ok(m),
        _ => unreachable!(),
    }
}

/// The SQL and parameters of `query_flows` (public so tests and the
/// benchmark can run the same question directly).
pub fn query_flows_sql(a: &Value, l: &AgentLimits) -> Result<(String, Vec<Sql>), String> {
    let (since, until) = window(a);
    let mut sql = format!(
        "SELECT {FLOW_COLS} FROM flows f{INFO_JOIN}
         WHERE f.last_ns >= ? AND f.last_ns < ?"
    );
    let mut p = vec![Sql::Integer(since), Sql::Integer(until)];
    if let Some(s) = a.get("sensor").and_then(|v| v.as_str()) {
        // `+` keeps the planner on the time index: rows come out in
        // `last_ns DESC` order and the scan stops at the limit, where the
        // primary key (sensor first) would sort every flow of the sensor.
        sql.push_str(" AND +f.sensor_id = ?");
        p.push(Sql::Text(s.into()));
    }
    if let Some(s) = a.get("addr").and_then(|v| v.as_str()) {
        let (lo, hi) = cidr_range(s)?;
        let n = lo.len() as i64;
        sql.push_str(" AND ((length(f.src_ip) = ? AND f.src_ip BETWEEN ? AND ?) OR (length(f.dst_ip) = ? AND f.dst_ip BETWEEN ? AND ?))");
        p.extend([
            Sql::Integer(n),
            Sql::Blob(lo.clone()),
            Sql::Blob(hi.clone()),
            Sql::Integer(n),
            Sql::Blob(lo),
            Sql::Blob(hi),
        ]);
    }
    if let Some(port) = int(a, "port") {
        sql.push_str(" AND (f.src_port = ? OR f.dst_port = ?)");
        p.extend([Sql::Integer(port), Sql::Integer(port)]);
    }
    if let Some(proto) = int(a, "proto") {
        sql.push_str(" AND f.proto = ?");
        p.push(Sql::Integer(proto));
    }
    if let Some(d) = a.get("decision").and_then(|v| v.as_str()) {
        // `+` keeps the planner on the time index (the verdict has two values).
        sql.push_str(" AND +f.verdict = ?");
        p.push(Sql::Text(d.into()));
    }
    if let Some(m) = a.get("min_score").and_then(|v| v.as_f64()) {
        sql.push_str(" AND f.score >= ?");
        p.push(Sql::Real(m));
    }
    if let Some(x) = a.get("app").and_then(|v| v.as_str()) {
        sql.push_str(" AND coalesce(i.app, 'unknown') = ?");
        p.push(Sql::Text(x.into()));
    }
    if let Some(x) = a.get("server_name").and_then(|v| v.as_str()) {
        match x.strip_prefix("*.") {
            Some(base) => {
                sql.push_str(" AND (i.server_name = ? OR i.server_name LIKE ? ESCAPE '\\')");
                let esc = base.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
                p.extend([Sql::Text(base.into()), Sql::Text(format!("%.{esc}"))]);
            }
            None => {
                sql.push_str(" AND i.server_name = ?");
                p.push(Sql::Text(x.into()));
            }
        }
    }
    if let Some(x) = a.get("ja4").and_then(|v| v.as_str()) {
        sql.push_str(" AND i.ja4 = ?");
        p.push(Sql::Text(x.into()));
    }
    if let Some(x) = a.get("community_id").and_then(|v| v.as_str()) {
        // Computed per row from the stored tuple (see `register_functions`):
        // the other filters and the time window bound the rows it hashes.
        sql.push_str(" AND community_id(f.src_ip, f.dst_ip, f.src_port, f.dst_port, f.proto) = ?");
        p.push(Sql::Text(x.into()));
    }
    sql.push_str(" ORDER BY f.last_ns DESC, f.sensor_id, f.seq, f.idx LIMIT ?");
    p.push(Sql::Integer(limit(a, l, 100) + 1));
    Ok((sql, p))
}

fn query_flows(c: &Connection, a: &Value, l: &AgentLimits) -> Result<(Value, u64), ToolError> {
    let (sql, p) = query_flows_sql(a, l).map_err(ToolError::Invalid)?;
    let lim = limit(a, l, 100) as usize;
    let mut q = c.prepare_cached(&sql)?;
    let rows = q.query_map(rusqlite::params_from_iter(p), flow_row)?;
    let mut flows: Vec<Value> = rows.map(|r| r.map(Value::Object)).collect::<rusqlite::Result<_>>()?;
    let truncated = flows.len() > lim;
    flows.truncate(lim);
    let n = flows.len() as u64;
    Ok((json!({"flows": flows, "truncated": truncated}), n))
}

fn list_sensors(c: &Connection, l: &AgentLimits) -> Result<(Value, u64), ToolError> {
    let mut q = c.prepare_cached(
        "SELECT sensor_id, state, last_seq, last_contact_ns, batches, flows FROM sensors ORDER BY sensor_id LIMIT ?1",
    )?;
    let rows = q.query_map([l.max_rows as i64 + 1], |r| {
        Ok(json!({"sensor_id": r.get::<_, String>(0)?, "state": r.get::<_, String>(1)?, "last_seq": r.get::<_, i64>(2)?,
            "last_contact_ns": r.get::<_, i64>(3)?, "batches": r.get::<_, i64>(4)?, "flows": r.get::<_, i64>(5)?}))
    })?;
    let mut v: Vec<Value> = rows.collect::<rusqlite::Result<_>>()?;
    let truncated = v.len() > l.max_rows as usize;
    v.truncate(l.max_rows as usize);
    let n = v.len() as u64;
    Ok((json!({"sensors": v, "truncated": truncated}), n))
}

/// The SQL and parameters of `top_talkers`.
pub fn top_talkers_sql(a: &Value, l: &AgentLimits) -> (String, Vec<Sql>) {
    let (since, until) = window(a);
    let col = if a.get("by").and_then(|v| v.as_str()) == Some("dst") { "dst_ip" } else { "src_ip" };
    let mut sql = format!(
        "SELECT {col}, COUNT(*), SUM(fwd_bytes + rev_bytes), SUM(fwd_packets + rev_packets) FROM flows WHERE last_ns >= ? AND last_ns < ?"
    );
    let mut p = vec![Sql::Integer(since), Sql::Integer(until)];
    if let Some(s) = a.get("sensor").and_then(|v| v.as_str()) {
        sql.push_str(" AND sensor_id = ?");
        p.push(Sql::Text(s.into()));
    }
    sql.push_str(&format!(" GROUP BY {col} ORDER BY 3 DESC, 2 DESC, {col} LIMIT ?"));
    p.push(Sql::Integer(limit(a, l, 10)));
    (sql, p)
}

fn top_talkers(c: &Connection, a: &Value, l: &AgentLimits) -> Result<(Value, u64), ToolError> {
    let (sql, p) = top_talkers_sql(a, l);
    let mut q = c.prepare_cached(&sql)?;
    let rows = q.query_map(rusqlite::params_from_iter(p), |r| {
        let b: Vec<u8> = r.get(0)?;
        Ok(json!({"addr": addr_text(&b), "flows": r.get::<_, i64>(1)?, "bytes": r.get::<_, i64>(2)?, "packets": r.get::<_, i64>(3)?}))
    })?;
    let v: Vec<Value> = rows.collect::<rusqlite::Result<_>>()?;
    let n = v.len() as u64;
    let by = if a.get("by").and_then(|v| v.as_str()) == Some("dst") { "dst" } else { "src" };
    Ok((json!({"by": by, "talkers": v}), n))
}

/// The SQL and parameters of `recent_anomalies`.
pub fn anomalies_sql(a: &Value, l: &AgentLimits) -> (String, Vec<Sql>) {
    let (since, until) = window(a);
    let mut sql = format!(
        "SELECT {FLOW_COLS}, f.shadow, f.shadow_reason, f.config_version FROM flows f
        {INFO_JOIN}
         WHERE f.last_ns >= ? AND f.last_ns < ?"
    );
    let mut p = vec![Sql::Integer(since), Sql::Integer(until)];
    if let Some(s) = a.get("sensor").and_then(|v| v.as_str()) {
        sql.push_str(" AND f.sensor_id = ?");
        p.push(Sql::Text(s.into()));
    }
    if let Some(m) = a.get("min_score").and_then(|v| v.as_f64()) {
        sql.push_str(" AND f.score >= ?");
        p.push(Sql::Real(m));
    }
    sql.push_str(" ORDER BY f.score DESC, f.last_ns DESC, f.sensor_id, f.seq, f.idx LIMIT ?");
    p.push(Sql::Integer(limit(a, l, 20)));
    (sql, p)
}

fn anomalies(c: &Connection, a: &Value, l: &AgentLimits) -> Result<(Value, u64), ToolError> {
    let (sql, p) = anomalies_sql(a, l);
    let mut q = c.prepare_cached(&sql)?;
    let rows = q.query_map(rusqlite::params_from_iter(p), |r| {
        let mut m = flow_row(r)?;
        m.insert("shadow".into(), json!(r.get::<_, Option<String>>(24)?));
        m.insert("shadow_reason".into(), json!(r.get::<_, Option<String>>(25)?));
        m.insert("config_version".into(), json!(r.get::<_, Option<i64>>(26)?));
        Ok(Value::Object(m))
    })?;
    let v: Vec<Value> = rows.collect::<rusqlite::Result<_>>()?;
    let n = v.len() as u64;
    Ok((json!({"flows": v}), n))
}

fn similar(agent: &Agent, c: &Connection, d: &Deadline, a: &Value) -> Result<(Value, u64), ToolError> {
    let metric = if a.get("metric").and_then(|v| v.as_str()) == Some("l2") { Metric::L2 } else { Metric::L1 };
    let k = int(a, "k").unwrap_or(10).clamp(1, 1000) as usize;
    let (since, until) = window(a);
    let mut ix = agent.nn.lock().unwrap_or_else(|p| p.into_inner());
    ix.refresh(c, d)?;
    let (q, exclude) = match (a.get("flow"), a.get("vector")) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(ToolError::Invalid(
                "give exactly one of `flow` (a stored flow) and `vector` (32 integers)".into(),
            ))
        }
        (Some(f), None) => {
            let s = f.get("sensor_id").and_then(|v| v.as_str()).unwrap_or("");
            let (seq, idx) = (int(f, "seq").unwrap_or(-1), int(f, "idx").unwrap_or(-1));
            let pos = ix
                .find(s, seq, idx as u32)
                .ok_or_else(|| ToolError::NotFound(format!("flow: no stored flow {s}/{seq}/{idx}")))?;
            (ix.embedding(pos), Some(pos))
        }
        (None, Some(v)) => {
            let vals: Vec<i64> =
                v.as_array().map(|x| x.iter().filter_map(|e| e.as_i64()).collect()).unwrap_or_default();
            let mut e = [0i8; 32];
            for (d, s) in e.iter_mut().zip(&vals) {
                *d = *s as i8;
            }
            (e, None)
        }
    };
    let sensor = match a.get("sensor").and_then(|v| v.as_str()) {
        Some(s) => match ix.sensor_index(s) {
            Some(i) => Some(i),
            None => {
                return Ok((
                    json!({"metric": if metric == Metric::L1 { "l1" } else { "l2" }, "query": q.to_vec(), "scanned": 0, "indexed": ix.len(), "neighbours": []}),
                    0,
                ))
            }
        },
        None => None,
    };
    let (hits, scanned) = ix.search(&q, k, metric, since, until, sensor, exclude);
    let n: Vec<Value> = hits
        .iter()
        .map(|h| {
            let (key, t, score) = ix.at(h.pos);
            json!({"sensor_id": ix.sensor_name(key.sensor), "seq": key.seq, "idx": key.idx, "distance": h.distance, "score": score as f64, "last_ns": t})
        })
        .collect();
    let rows = n.len() as u64;
    Ok((
        json!({"metric": if metric == Metric::L1 { "l1" } else { "l2" }, "query": q.to_vec(), "scanned": scanned, "indexed": ix.len(), "neighbours": n}),
        rows,
    ))
}

fn explain(c: &Connection, d: &Deadline, ledger: &std::path::Path, a: &Value) -> Result<(Value, u64), ToolError> {
    let s = a.get("sensor_id").and_then(|v| v.as_str()).unwrap_or("").to_string();
    let (seq, idx) = (int(a, "seq").unwrap_or(0), int(a, "idx").unwrap_or(0));
    let sql = format!(
        "SELECT {FLOW_COLS}, f.shadow, f.shadow_reason, f.config_version FROM flows f
        {INFO_JOIN}
         WHERE f.sensor_id = ?1 AND f.seq = ?2 AND f.idx = ?3"
    );
    let mut q = c.prepare_cached(&sql)?;
    let mut rows = q.query(rusqlite::params![s, seq, idx])?;
    let Some(r) = rows.next()? else {
        return Err(ToolError::NotFound(format!("no stored flow {s}/{seq}/{idx}")));
    };
    let flow = flow_row(r)?;
    let version: Option<i64> = r.get(26)?;
    let decision = match flow.get("verdict") {
        Some(Value::String(v)) => json!({"verdict": v, "gate": flow["gate"], "reason": flow["reason"],
            "shadow": r.get::<_, Option<String>>(24)?, "shadow_reason": r.get::<_, Option<String>>(25)?, "config_version": version}),
        _ => Value::Null,
    };
    drop(rows);
    let config = match version {
        Some(v) => c
            .query_row("SELECT cause FROM gate_config WHERE version = ?1", [v], |r| r.get::<_, String>(0))
            .map(|cause| json!({"version": v, "cause": cause}))
            .unwrap_or(Value::Null),
        None => Value::Null,
    };
    // The ledger entries behind it: scan the file (prefiltered by substring).
    use std::io::BufRead;
    let mut entries = Vec::new();
    let f =
        std::fs::File::open(ledger).map_err(|e| ToolError::Internal(format!("ledger {}: {e}", ledger.display())))?;
    let sensor_pat = format!("\"sensor\":{}", Value::String(s.clone()));
    let batch_pat = format!("\"batch\":{seq}");
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        if n % 8192 == 0 {
            d.check()?;
        }
        let Ok(line) = line else { break };
        let cfg_line = version.is_some() && line.contains("\"kind\":\"config\"");
        if !(cfg_line || (line.contains(&sensor_pat) && line.contains(&batch_pat))) {
            continue;
        }
        let Ok(e) = serde_json::from_str::<Value>(&line) else { continue };
        let body = &e["body"];
        let kind = e["kind"].as_str().unwrap_or("");
        let keep = match kind {
            "config" => body["version"].as_i64() == version,
            "batch" => body["sensor"] == s.as_str() && body["batch"].as_i64() == Some(seq),
            "promotion" | "hold" => {
                body["sensor"] == s.as_str() && body["batch"].as_i64() == Some(seq) && body["idx"].as_i64() == Some(idx)
            }
            _ => false,
        };
        if keep {
            entries.push(json!({"seq": e["seq"], "kind": kind, "time_ns": e["time_ns"], "body": body}));
        }
    }
    let n = entries.len() as u64 + 1;
    Ok((json!({"flow": flow, "decision": decision, "config": config, "ledger_entries": entries}), n))
}

/// Parse Prometheus text into samples.
pub fn parse_exposition(text: &str, prefix: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (head, value) = match line.rfind(' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => continue,
        };
        let Ok(v) = value.parse::<f64>() else { continue };
        if !v.is_finite() {
            continue;
        }
        let (name, labels) = match head.find('{') {
            Some(i) => (&head[..i], &head[i + 1..head.len().saturating_sub(1)]),
            None => (head, ""),
        };
        if !name.starts_with(prefix) {
            continue;
        }
        let mut m = serde_json::Map::new();
        let mut rest = labels;
        while let Some(eq) = rest.find("=\"") {
            let k = rest[..eq].trim_start_matches(',').trim();
            let after = &rest[eq + 2..];
            let mut end = 0;
            let mut val = String::new();
            let mut chars = after.char_indices();
            while let Some((i, ch)) = chars.next() {
                match ch {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            val.push(if n == 'n' { '\n' } else { n });
                        }
                    }
                    '"' => {
                        end = i;
                        break;
                    }
                    c => val.push(c),
                }
            }
            m.insert(k.to_string(), Value::String(val));
            rest = &after[(end + 1).min(after.len())..];
        }
        out.push(json!({"name": name, "labels": m, "value": v}));
    }
    out
}

fn load_flows(c: &Connection, sensor: &str, seq: i64) -> rusqlite::Result<(Vec<FlowRec>, Vec<Option<String>>)> {
    let mut q = c.prepare_cached(
        "SELECT f.ip_version, f.src_ip, f.dst_ip, f.src_port, f.dst_port, f.proto, f.vlan, f.first_ns, f.last_ns,
                f.fwd_packets, f.fwd_bytes, f.rev_packets, f.rev_bytes, f.tcp_flags, f.end_reason, f.score, f.embedding, f.verdict
         FROM flows f
         WHERE f.sensor_id = ?1 AND f.seq = ?2 ORDER BY f.idx",
    )?;
    let rows = q.query_map(rusqlite::params![sensor, seq], |r| {
        let mut f = FlowRec { ip_version: r.get(0)?, ..Default::default() };
        let s: Vec<u8> = r.get(1)?;
        let d: Vec<u8> = r.get(2)?;
        f.src[..s.len().min(16)].copy_from_slice(&s[..s.len().min(16)]);
        f.dst[..d.len().min(16)].copy_from_slice(&d[..d.len().min(16)]);
        f.src_port = r.get(3)?;
        f.dst_port = r.get(4)?;
        f.proto = r.get(5)?;
        f.vlan = r.get(6)?;
        f.first_ns = r.get::<_, i64>(7)? as u64;
        f.last_ns = r.get::<_, i64>(8)? as u64;
        f.fwd_packets = r.get(9)?;
        f.fwd_bytes = r.get::<_, i64>(10)? as u64;
        f.rev_packets = r.get(11)?;
        f.rev_bytes = r.get::<_, i64>(12)? as u64;
        f.tcp_flags = r.get(13)?;
        f.end_reason = r.get(14)?;
        f.score = r.get::<_, f64>(15)? as f32;
        f.embedding = emb_of(r.get_ref(16)?.as_blob().unwrap_or(&[]));
        Ok((f, r.get::<_, Option<String>>(17)?))
    })?;
    let v: Vec<(FlowRec, Option<String>)> = rows.collect::<rusqlite::Result<_>>()?;
    Ok(v.into_iter().unzip())
}

/// Replay the last `n` stored batches through the live and the proposed
/// configuration (fresh engines, same batches, same order).
fn replay(c: &Connection, d: &Deadline, live: GatesConfig, proposed: GatesConfig, n: i64) -> Result<Value, ToolError> {
    let mut q = c.prepare_cached("SELECT sensor_id, seq FROM batches ORDER BY stored_ns DESC, seq DESC LIMIT ?1")?;
    let mut batches: Vec<(String, i64)> =
        q.query_map([n], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
    batches.reverse();
    let (mut el, mut ep) = (GateEngine::new(live), GateEngine::new(proposed));
    let mut report = ShadowReport::default();
    for (s, seq) in &batches {
        d.check()?;
        let (flows, _stored) = load_flows(c, s, *seq)?;
        let (dl, dp) = (el.decide(s, &flows), ep.decide(s, &flows));
        report.merge(crate::gates::shadow::compare(s, *seq as u64, &flows, &dl, &dp));
    }
    let mut v = report_json(&report);
    v["status"] = json!("done");
    v["evaluation"] = json!({"method": "replay of the last stored batches through fresh engines", "batches": report.batches,
        "batches_wanted": n, "flows": report.flows});
    Ok(v)
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn parse_json(s: &str) -> Result<Value, ToolError> {
    serde_json::from_str(s).map_err(|e| ToolError::Internal(format!("bad answer from the gates: {e}")))
}

/// Run a tool whose arguments passed its schema. Returns the structured
/// result and the rows it holds.
pub async fn run(
    agent: &Arc<Agent>,
    who: &str,
    _scope: Scope,
    tool: &str,
    a: Value,
) -> Result<(Value, u64), ToolError> {
    let l = agent.limits().clone();
    match tool {
        "list_sensors" => agent.read(move |c, _| list_sensors(c, &l)).await,
        "query_flows" => agent.read(move |c, _| query_flows(c, &a, &l)).await,
        "top_talkers" => agent.read(move |c, _| top_talkers(c, &a, &l)).await,
        "recent_anomalies" => agent.read(move |c, _| anomalies(c, &a, &l)).await,
        "similar_flows" => {
            let me = agent.clone();
            agent.read(move |c, d| similar(&me, c, d, &a)).await
        }
        "explain_decision" => {
            let path = agent.ledger.clone();
            agent.read(move |c, d| explain(c, d, &path, &a)).await
        }
        "verify_ledger" => {
            let path = agent.ledger.clone();
            let r = agent
                .on_store(move |s, _| {
                    let head = s.ledger_head();
                    (head.map_err(|e| e.to_string()), path.clone())
                })
                .await?;
            let (head, path) = r;
            let head = head.map_err(ToolError::Internal)?;
            let p2 = path.clone();
            // The head is read on the store thread, after which the file holds at least it;
            // verify stops at that head's entry (later entries are the next calls').
            let rep = tokio::task::spawn_blocking(move || verify_upto(&p2, head.as_ref()))
                .await
                .map_err(|e| ToolError::Internal(e.to_string()))?;
            let p = path.display().to_string();
            Ok(match rep {
                Ok(r) => (
                    json!({"ok": true, "entries": r.entries, "head_seq": r.head.seq, "head_hash": r.head.hash, "error": null, "path": p}),
                    1,
                ),
                Err(e) => (
                    json!({"ok": false, "entries": 0, "head_seq": 0, "head_hash": "", "error": e.to_string(), "path": p}),
                    1,
                ),
            })
        }
        "metrics_snapshot" => {
            let prefix = a.get("prefix").and_then(|v| v.as_str()).unwrap_or("").to_string();
            let mut text = agent.counters.exposition().encode();
            text.push_str(&format!(
                "wirefold_core_agent_unauthenticated_total {}\nwirefold_core_agent_tls_failures_total {}\n",
                agent.unauthenticated.load(Relaxed),
                agent.tls_failures.load(Relaxed)
            ));
            let s = parse_exposition(&text, &prefix);
            let n = s.len() as u64;
            Ok((json!({"samples": s}), n))
        }
        "gate_status" => {
            let show =
                agent.on_store(|s, p| p.admin(s, AdminCommand::Show, wall_ns())).await?.map_err(ToolError::Internal)?;
            let mut v = parse_json(&show)?;
            let calls = {
                let m = agent.buckets.lock().unwrap_or_else(|p| p.into_inner());
                m.get(who).map_or(l.burst, |b| (b.level + b.at.elapsed().as_secs_f64() * l.calls_per_s).min(l.burst))
            };
            let used = {
                let m = agent.mutations.lock().unwrap_or_else(|p| p.into_inner());
                m.get(who).map_or(0, |q| q.iter().filter(|t| t.elapsed().as_secs() < 3600).count())
            };
            v["agent"] = json!({"calls_available": calls, "mutations_left_this_hour": (l.mutations_per_hour as usize).saturating_sub(used)});
            let n = v["sensors"].as_array().map_or(0, |s| s.len()) as u64;
            Ok((v, n))
        }
        "propose_gate_change" => {
            let gate = a["gate"].as_str().unwrap_or("").to_string();
            let key = a["key"].as_str().unwrap_or("").to_string();
            let value = value_text(&a["value"]);
            let n = int(&a, "batches").unwrap_or(20).clamp(1, l.max_shadow_batches as i64);
            let (version, live) = agent.on_store(|_, p| (p.version(), p.engine().config().clone())).await?;
            let proposed = live.with_field(&gate, &key, &value).map_err(|e| ToolError::Invalid(e.to_string()))?;
            if proposed == live {
                return Err(ToolError::Invalid(format!(
                    "gates.{gate}.{key} is already {value}: the proposal changes nothing"
                )));
            }
            let id = agent.next_proposal.fetch_add(1, Relaxed);
            let live_run = a["over"].as_str() != Some("stored");
            let mut r = if live_run {
                let started = agent.on_store(move |_, p| {
                    if p.version() != version {
                        return Err(format!("the configuration moved to version {} while proposing", p.version()));
                    }
                    p.start_shadow(id, n as u64, proposed)
                });
                started.await?.map_err(|why| ToolError::Refused { why, retry_after_ms: Some(1000) })?;
                shadow_status(agent, id, int(&a, "wait_ms").unwrap_or(0) as u64).await?
            } else {
                agent.read(move |c, d| replay(c, d, live, proposed, n)).await?
            };
            let change = format!("gates.{gate}.{key} = {value}");
            agent.proposals.lock().unwrap_or_else(|p| p.into_inner()).insert(
                id,
                Proposal { agent: who.to_string(), gate, key, value, base_version: version, live: live_run },
            );
            r["proposal_id"] = json!(id);
            r["change"] = json!(change);
            r["base_version"] = json!(version);
            Ok((r, 1))
        }
        "proposal_status" => {
            let id = int(&a, "proposal_id").unwrap_or(0) as u64;
            let p = agent
                .proposals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
                .cloned()
                .ok_or_else(|| ToolError::NotFound(format!("proposal_id: no open proposal {id}")))?;
            if !p.live {
                return Err(ToolError::Invalid(format!(
                    "proposal_id: proposal {id} was evaluated over stored batches when it was made; its result was the propose call's answer"
                )));
            }
            let mut r = shadow_status(agent, id, int(&a, "wait_ms").unwrap_or(0) as u64).await?;
            r["proposal_id"] = json!(id);
            r["change"] = json!(format!("gates.{}.{} = {}", p.gate, p.key, p.value));
            Ok((r, 1))
        }
        "apply_proposal" => {
            let id = int(&a, "proposal_id").unwrap_or(0) as u64;
            let p = agent
                .proposals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
                .cloned()
                .ok_or_else(|| ToolError::NotFound(format!("proposal_id: no open proposal {id}")))?;
            let change = format!("gates.{}.{}", p.gate, p.key);
            let (gate, key, value, base) = (p.gate.clone(), p.key.clone(), p.value.clone(), p.base_version);
            let actor = format!("agent:{who}");
            let live_run = p.live;
            let r = agent
                .on_store(move |s, pr| {
                    if live_run {
                        match pr.shadow(id).map(|r| (r.state, r.report.batches, r.want)) {
                            Some((ShadowState::Running, seen, want)) => {
                                return Err(ToolError::Refused {
                                    why: format!("proposal {id} is still being evaluated: {seen} of {want} batches decided in shadow; see proposal_status"),
                                    retry_after_ms: Some(1000),
                                })
                            }
                            Some((ShadowState::Done, _, _)) => {}
                            Some((ShadowState::Stale, _, _)) | None => {
                                return Err(ToolError::Refused {
                                    why: format!("proposal {id}'s evaluation no longer holds (the configuration changed, or it was pushed out): propose again"),
                                    retry_after_ms: None,
                                })
                            }
                        }
                    }
                    if pr.version() != base {
                        return Err(ToolError::Refused {
                            why: format!(
                                "the configuration is now version {} but the proposal was evaluated against version {base}: propose again",
                                pr.version()
                            ),
                            retry_after_ms: None,
                        });
                    }
                    let _ = actor;
                    let r = pr.admin(s, AdminCommand::Set { gate, key, value }, wall_ns()).map_err(ToolError::Invalid);
                    if r.is_ok() {
                        pr.end_shadow(id);
                    }
                    r
                })
                .await??;
            agent.proposals.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            let v = parse_json(&r)?;
            Ok((
                json!({"proposal_id": id, "change": format!("{change} = {}", p.value), "version": v["version"], "changed": v["changed"]}),
                1,
            ))
        }
        "rollback_gates" => {
            let version = int(&a, "version").unwrap_or(0) as u64;
            let r = agent
                .on_store(move |s, p| p.admin(s, AdminCommand::Rollback { version }, wall_ns()))
                .await?
                .map_err(ToolError::Invalid)?;
            let v = parse_json(&r)?;
            Ok((json!({"version": v["version"], "restored": v["restored"]}), 1))
        }
        other => Err(ToolError::Invalid(format!("unknown tool '{other}'"))),
    }
}

/// [`crate::ledger::verify`] up to an expected head: the chain is checked
/// from the start to the entry with the head's seq, which must carry the
/// head's hash (entries appended since are not this call's concern).
fn verify_upto(
    path: &std::path::Path,
    head: Option<&crate::ledger::LedgerHead>,
) -> Result<crate::ledger::VerifyReport, crate::ledger::LedgerError> {
    let Some(h) = head else { return crate::ledger::verify(path, None) };
    use std::io::{BufRead, Write};
    // Copy the first h.seq lines to a temporary file and verify that against the head.
    let f = std::fs::File::open(path)
        .map_err(|e| crate::ledger::LedgerError::Io { path: path.display().to_string(), error: e })?;
    let tmp = std::env::temp_dir().join(format!("wirefold-ledger-verify-{}-{}", std::process::id(), wall_ns()));
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&tmp)
            .map_err(|e| crate::ledger::LedgerError::Io { path: tmp.display().to_string(), error: e })?,
    );
    let mut r = std::io::BufReader::new(f);
    let mut line = String::new();
    for _ in 0..h.seq {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let _ = out.write_all(line.as_bytes());
    }
    drop(out);
    let rep = crate::ledger::verify(&tmp, Some(h));
    let _ = std::fs::remove_file(&tmp);
    rep
}
