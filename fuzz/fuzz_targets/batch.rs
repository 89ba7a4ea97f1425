//! Fuzz the FlowBatch reader: any bytes are verified or refused, never a
//! panic; what verifies re-encodes to a batch that decodes to the same flows.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wirefold_schema::{read_batch, BatchBuilder, BatchMeta};

fuzz_target!(|data: &[u8]| {
    if let Ok((meta, flows)) = read_batch(data) {
        let mut b = BatchBuilder::new();
        let again = b.build(&meta, &flows).to_vec();
        let (meta2, flows2) = read_batch(&again).expect("a re-encoded batch verifies");
        // Re-encoding writes the current schema version (a version-1 input becomes version 2).
        assert_eq!(meta2.schema_version, wirefold_schema::SCHEMA_VERSION);
        assert_eq!(BatchMeta { schema_version: 0, ..meta }, BatchMeta { schema_version: 0, ..meta2 });
        assert_eq!(flows.len(), flows2.len());
    }
});
