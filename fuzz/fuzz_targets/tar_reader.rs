//! Arbitrary bytes as a shard: the tar reader and the sample rules must never panic, and every
//! sample they emit must be well formed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use webli_io::sample::to_sample;
use webli_io::stats::Stats;
use webli_io::tar::read_samples;

fuzz_target!(|data: &[u8]| {
    let stats = Stats::new();
    let shard: Arc<str> = Arc::from("fuzz.tar");
    read_samples(data, "fuzz.tar", 1 << 20, &stats, |raw| {
        assert!(!raw.key.is_empty() || !raw.members.is_empty());
        if let Some(s) = to_sample(raw, &shard, &stats, &[]) {
            assert!(!s.image.is_empty());
            assert!(!s.text.is_empty());
        }
        true
    });
});
