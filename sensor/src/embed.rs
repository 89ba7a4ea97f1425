//! The embed stage's glue: a finished flow as the model's [`FlowSummary`]
//! and as the wire format's [`FlowRec`].
use crate::flow::{EndReason, FinishedFlow};
use crate::wire::TunnelKind;
use wirefold_embeddings::features::{byte_entropy, extract_with, FlowContext, FlowSummary, F, SPLT};
use wirefold_inspect::app::App;
use wirefold_schema::FlowRec;

/// The numbers the feature vector is computed from.
pub fn summary(ff: &FinishedFlow) -> FlowSummary {
    let f = &ff.flow;
    let (fs, rs) = (f.fwd.size(), f.rev.size());
    let (fi, ri) = (f.fwd.iat(), f.rev.iat());
    let c = &f.tcp.flag_counts; // by bit: FIN=0 SYN=1 RST=2 PSH=3 ACK=4
    let dst_port = ff.key.oriented(f.initiator_is_lo).dport;
    FlowSummary {
        duration_s: f.last_ns.saturating_sub(f.first_ns) as f64 / 1e9,
        fwd_packets: f.fwd.packets,
        fwd_bytes: f.fwd.bytes,
        fwd_payload: f.fwd.payload_bytes,
        rev_packets: f.rev.packets,
        rev_bytes: f.rev.bytes,
        rev_payload: f.rev.payload_bytes,
        fwd_size: [fs.mean, fs.std, fs.max],
        rev_size: [rs.mean, rs.std, rs.max],
        fwd_iat: [fi.mean, fi.std],
        rev_iat: [ri.mean, ri.std],
        syn: c[1],
        fin: c[0],
        rst: c[2],
        psh: c[3],
        ack: c[4],
        proto: ff.key.proto,
        dst_port: if matches!(ff.key.proto, 1 | 58) { 0 } else { dst_port },
    }
}

/// What the first packets, inspection and host context say of a flow.
pub fn context(ff: &FinishedFlow) -> FlowContext {
    let f = &ff.flow;
    let mut c = FlowContext::default();
    for i in 0..(f.splt_n as usize).min(SPLT) {
        c.splt_bytes[i] = f.splt_bytes[i] as i32;
        c.splt_gap_ms[i] = f.splt_gap_ms(i);
    }
    let h = &f.host;
    c.host = [h.src_flows as f32, h.src_peers as f32, h.src_ports as f32, h.dst_flows as f32, h.dst_peers as f32];
    if let Some(m) = ff.meta.as_deref() {
        c.sketch = m.sketch_stats();
        c.app = [App::Tls, App::Quic, App::Dns, App::Http, App::Ssh].map(|a| m.app.0 == a);
        if let Some(d) = &m.dns {
            let name = d.qname.as_bytes();
            c.dns_qname_len = name.len() as u32;
            c.dns_label_max = name.split(|&b| b == b'.').map(|l| l.len()).max().unwrap_or(0) as u32;
            c.dns_qname_entropy = byte_entropy(name);
            c.dns_qtype = d.qtype;
            c.dns_rcode = d.rcode;
        }
        if let Some(t) = &m.tls {
            c.tls_sni = !t.sni.is_empty();
            c.tls_13 = t.max_version >= 0x0304;
        }
        if let Some(h) = &m.http {
            c.http_status = h.status.unwrap_or(0);
        }
    }
    c
}

/// The feature row of a flow.
pub fn features(ff: &FinishedFlow) -> [f32; F] {
    let mut row = [0f32; F];
    extract_with(&summary(ff), &context(ff), &mut row);
    row
}

/// The wire-format record of a flow.
pub fn flow_rec(ff: &FinishedFlow, embedding: [i8; 32], score: f32) -> FlowRec {
    let k = &ff.key;
    let f = &ff.flow;
    let o = k.oriented(f.initiator_is_lo);
    let (src, sport, dst, dport) = (o.src, o.sport, o.dst, o.dport);
    let icmp = matches!(k.proto, 1 | 58);
    FlowRec {
        ip_version: k.ip_version,
        src,
        dst,
        src_port: if icmp { 0 } else { sport },
        dst_port: if icmp { (f.icmp_type as u16) << 8 | f.icmp_code as u16 } else { dport },
        proto: k.proto,
        vlan: (k.vlan_count > 0).then_some(k.vlans[0]),
        more_vlans: k.vlan_count.saturating_sub(1),
        tunnel: match f.tunnel {
            TunnelKind::None => wirefold_schema::tunnel::NONE,
            TunnelKind::Gre => wirefold_schema::tunnel::GRE,
            TunnelKind::Vxlan => wirefold_schema::tunnel::VXLAN,
            TunnelKind::IpInIp => wirefold_schema::tunnel::IPIP,
            TunnelKind::GtpU => wirefold_schema::tunnel::GTPU,
            TunnelKind::Geneve => wirefold_schema::tunnel::GENEVE,
        },
        first_ns: f.first_ns,
        last_ns: f.last_ns,
        fwd_packets: f.fwd.packets.min(u32::MAX as u64) as u32,
        rev_packets: f.rev.packets.min(u32::MAX as u64) as u32,
        fwd_bytes: f.fwd.bytes,
        rev_bytes: f.rev.bytes,
        tcp_flags: f.tcp.fwd_flags | f.tcp.rev_flags,
        end_reason: ff.reason as u8,
        score,
        embedding,
    }
}

/// The wire-format inspection facts of a flow at `index` in its batch
/// (`None` when inspection learned nothing).
pub fn flow_info(ff: &FinishedFlow, index: u32) -> Option<wirefold_schema::FlowInfoRec> {
    let m = ff.meta.as_deref()?;
    let app = wirefold_schema::APPS.iter().position(|a| *a == m.app.0.name()).unwrap_or(0) as u8;
    let i = wirefold_schema::FlowInfoRec {
        index,
        app,
        server_name: m.tls.map(|t| t.sni.as_str().to_string()).unwrap_or_default(),
        ja4: m.tls.map(|t| t.ja4.as_str().to_string()).unwrap_or_default(),
        dns_qname: m.dns.map(|d| d.qname.as_str().to_string()).unwrap_or_default(),
        http_host: m.http.map(|h| h.host.as_str().to_string()).unwrap_or_default(),
    };
    (!i.is_empty()).then_some(i)
}

/// The end reason's wire value, for readers.
pub fn end_reason_from_wire(v: u8) -> Option<EndReason> {
    EndReason::ALL.get(v as usize).copied()
}
