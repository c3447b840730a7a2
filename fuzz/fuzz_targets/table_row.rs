//! Arbitrary Parquet-like rows (the columns as pyarrow hands them to the core: key, image,
//! caption, metadata) through the row rules: never a panic, and every sample well formed. The
//! Arrow import itself (`table.rs`) sits behind the Python feature and is exercised by the tests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use std::sync::Arc;
use webli_io::sample::{row_to_sample, TableRow};
use webli_io::stats::Stats;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |b| *b == 0);
    let key = parts.next().map(|b| String::from_utf8_lossy(b).into_owned()).filter(|k| !k.is_empty());
    let image = parts.next().map(|b| b.to_vec());
    let text = parts.next().map(|b| String::from_utf8_lossy(b).into_owned());
    let meta: Map<String, Value> = parts.next().and_then(|b| serde_json::from_slice(b).ok()).unwrap_or_default();
    let flags = data.last().copied().unwrap_or(0);
    let row = TableRow {
        key: if flags & 1 == 0 { key } else { None },
        image: if flags & 2 == 0 { image.map(Into::into) } else { None },
        text: if flags & 4 == 0 { text } else { None },
        meta,
    };
    let stats = Stats::new();
    let shard: Arc<str> = Arc::from("fuzz.parquet");
    if let Some(s) = row_to_sample(row, u64::from(flags), &shard, &stats) {
        assert!(!s.image.is_empty() && !s.text.trim().is_empty() && !s.key.is_empty());
    }
});
