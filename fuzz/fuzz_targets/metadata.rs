//! Arbitrary bytes as a sample's `json` and caption: the sample rules (NaN repair, nesting),
//! the language fields and the metadata filters must never panic, and filters must fail
//! closed when the metadata is unreadable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use webli_io::config::SelectOptions;
use webli_io::lang::{normalize_lang, sample_lang};
use webli_io::sample::to_sample;
use webli_io::select::Selector;
use webli_io::stats::Stats;
use webli_io::tar::RawSample;

fuzz_target!(|data: &[u8]| {
    // The first byte splits the input into a caption and a json member.
    let split = data.first().map_or(0, |b| *b as usize).min(data.len().saturating_sub(1));
    let (caption, json) = data.get(1..).map_or((&[][..], &[][..]), |d| d.split_at(split.min(d.len())));
    let raw = RawSample {
        key: "k".into(),
        members: vec![("jpg".into(), b"\xff\xd8".to_vec()), ("txt".into(), caption.to_vec()), ("json".into(), json.to_vec())],
        skipped: false,
        ..Default::default()
    };
    let stats = Stats::new();
    let shard: Arc<str> = Arc::from("fuzz.tar");
    let Some(sample) = to_sample(raw, &shard, &stats, &[]) else { return };
    let fields: Vec<String> = ["language", "lang", "content-language"].iter().map(|s| s.to_string()).collect();
    let lang = sample_lang(&sample.meta, &fields);
    assert_eq!(normalize_lang(&lang), lang, "normalised labels are fixed points");
    let cfg = SelectOptions {
        min_score: [("clip_score".to_string(), 0.3)].into(),
        drop_if: [("NSFW".to_string(), vec!["NSFW".to_string(), "true".to_string()])].into(),
        dedup: true,
        ..Default::default()
    };
    let mut sel = Selector::new(cfg);
    let kept = sel.keep(&sample.key, "fuzz.tar", &sample.meta, sample.meta_ok, &sample.image, &stats);
    if !sample.meta_ok {
        assert!(!kept, "unreadable metadata must not pass a filter");
    }
    if kept {
        let score = sample.meta.get("clip_score").and_then(|v| v.as_f64());
        assert!(score.is_some_and(|s| s >= 0.3));
    }
});
