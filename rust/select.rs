//! Selection: which samples of the stream are kept, before any image is decoded.
//!
//! - **Subset**: a sample is kept iff a seeded 64-bit hash of its key falls below
//!   `fraction · 2^64`. The 1% subset is inside the 10% one (same hash, lower bar), and the
//!   choice depends only on the key and `subset_seed`: the same pairs on every run, machine and
//!   worker count.
//! - **Metadata filters** (off by default: the paper shows CLIP-score filtering trades cultural
//!   diversity for Western benchmarks): a minimum per-sample score (`{"clip_score": 0.28}`, as
//!   img2dataset and DataComp write such columns), and a drop on flag values
//!   (`{"NSFW": ["NSFW", "UNSURE"]}`).
//! - **Exact dedup**: a 64-bit xxh3 of the image bytes; a repeated image is dropped. The set is
//!   bounded: at `capacity` hashes it starts a new generation and keeps the previous one, so
//!   memory stays under two full generations (about 9 bytes a hash plus the table's slack) and
//!   duplicates are caught within the last `capacity`..`2·capacity` images.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use serde_json::{Map, Value};

use crate::rng::seed_for;
use crate::stats::{Counter, Stats};

/// Keys of the dedup set are already uniform 64-bit hashes: hashing them again is wasted work,
/// so the set uses this pass-through hasher (std has none; the crates that do are one line of
/// this each).
#[derive(Default)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type HashSet64 = HashSet<u64, BuildHasherDefault<PassThrough>>;

/// A bounded set of 64-bit hashes, in two generations.
pub struct DedupSet {
    capacity: usize,
    current: HashSet64,
    previous: HashSet64,
}

impl DedupSet {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self { capacity, current: HashSet64::default(), previous: HashSet64::default() }
    }

    /// `true` if `h` is new (and records it), `false` if it was seen.
    pub fn insert(&mut self, h: u64) -> bool {
        if self.previous.contains(&h) || !self.current.insert(h) {
            return false;
        }
        if self.current.len() >= self.capacity {
            self.previous = std::mem::take(&mut self.current);
        }
        true
    }

    /// Bytes held by the tables (slots × (8 bytes + 1 control byte)).
    pub fn memory_bytes(&self) -> usize {
        (self.current.capacity() + self.previous.capacity()) * 9
    }

    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub use crate::config::SelectOptions;

/// The exact-dedup hash of an image: xxh3-64 of its encoded bytes (also what `prepare --dedup`
/// groups by).
pub fn content_hash(image: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(image)
}

/// Is `key` in the subset of this fraction?
pub fn in_subset(key: &str, fraction: f64, seed: u64) -> bool {
    if fraction >= 1.0 {
        return true;
    }
    (seed_for(seed, key) as f64) < fraction * 18_446_744_073_709_551_616.0
}

/// `drop_if`'s one comparison rule, for tar `json` and Parquet columns alike:
/// - a string matches a listed value when equal to it ignoring ASCII case and surrounding
///   whitespace (`" NSFW"`, `"nsfw"` and `"NSFW"` are one value);
/// - a boolean as `true`/`false` (same rule); a number equal in value to a listed number
///   (`1`, `1.0` and `"1"` listed are one value), else as JSON writes it;
/// - a list matches when any of its elements does (`["NSFW"]`, a Parquet list column);
/// - `null`, an object, a nested list, or a value the reader could not decode (an Arrow type
///   with no comparison, see `table.rs`) cannot be told apart from a match: `Err`, and the
///   pair is dropped (fail closed), counted with the reason;
/// - a field absent from the pair's metadata passes (nothing tagged it).
///
/// `Ok(Some(v))`: matched, as `v`; `Ok(None)`: no match.
pub fn drop_match(value: &Value, listed: &[String]) -> Result<Option<String>, &'static str> {
    fn scalar(v: &Value, listed: &[String]) -> Result<Option<String>, &'static str> {
        let text = match v {
            Value::String(s) => s.trim().to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => {
                let x = n.as_f64();
                let hit = listed.iter().any(|l| l.trim().parse::<f64>().ok().zip(x).is_some_and(|(a, b)| a == b));
                if hit {
                    return Ok(Some(n.to_string()));
                }
                n.to_string()
            }
            Value::Null => return Err("null"),
            Value::Object(_) => return Err("not a value it can compare (an object, or a type the reader cannot decode)"),
            Value::Array(_) => return Err("a nested list"),
        };
        Ok(listed.iter().any(|l| l.trim().eq_ignore_ascii_case(&text)).then_some(text))
    }
    match value {
        Value::Array(items) => {
            for item in items {
                if let Some(hit) = scalar(item, listed)? {
                    return Ok(Some(hit));
                }
            }
            Ok(None)
        }
        v => scalar(v, listed),
    }
}

/// The selection stage: one per stream (the dedup set is its state).
pub struct Selector {
    cfg: SelectOptions,
    dedup: Option<DedupSet>,
}

impl Selector {
    pub fn new(cfg: SelectOptions) -> Self {
        let dedup = cfg.dedup.then(|| DedupSet::new(cfg.dedup_capacity));
        Self { cfg, dedup }
    }

    /// A new shard begins: exact dedup is within a shard (the same decisions on every layout).
    pub fn start_shard(&mut self) {
        if let Some(set) = self.dedup.as_mut() {
            *set = DedupSet::new(self.cfg.dedup_capacity);
        }
    }

    /// Keep the sample? Counts the reason when not. `meta_ok = false` says the sample's
    /// metadata was unreadable: a metadata filter then fails closed (the sample is dropped,
    /// counted), for a filter that cannot read its field must not let the sample through.
    pub fn keep(&mut self, key: &str, shard: &str, meta: &Map<String, Value>, meta_ok: bool, image: &[u8], stats: &Stats) -> bool {
        self.keep_hashed(key, shard, meta, meta_ok, || content_hash(image), stats)
    }

    /// [`keep`](Self::keep) with the image's hash given (a sample known from the shard index,
    /// whose bytes are not read): computed only when exact dedup needs it.
    pub fn keep_hashed(
        &mut self,
        key: &str,
        shard: &str,
        meta: &Map<String, Value>,
        meta_ok: bool,
        hash: impl FnOnce() -> u64,
        stats: &Stats,
    ) -> bool {
        if let Some(f) = self.cfg.subset {
            if !in_subset(key, f, self.cfg.subset_seed) {
                stats.incr(Counter::OutOfSubset);
                return false;
            }
        }
        if !meta_ok && (!self.cfg.min_score.is_empty() || !self.cfg.drop_if.is_empty()) {
            stats.problem(Counter::Filtered, shard, key, "the json is unreadable, so the metadata filters cannot pass it");
            return false;
        }
        for (field, min) in &self.cfg.min_score {
            let score = meta.get(field).and_then(Value::as_f64);
            if score.is_none_or(|s| s < *min || s.is_nan()) {
                stats.problem(Counter::Filtered, shard, key, format!("{field} = {score:?} is under {min} (or missing)"));
                return false;
            }
        }
        for (field, values) in &self.cfg.drop_if {
            let Some(value) = meta.get(field) else { continue };
            match drop_match(value, values) {
                Ok(None) => {}
                Ok(Some(v)) => {
                    stats.problem(Counter::Filtered, shard, key, format!("{field} = {v:?}"));
                    return false;
                }
                Err(what) => {
                    let why = format!("{field} is {what}: drop_if cannot tell whether it matches, so the pair is dropped");
                    stats.problem(Counter::Filtered, shard, key, why);
                    return false;
                }
            }
        }
        if let Some(set) = self.dedup.as_mut() {
            if !set.insert(hash()) {
                stats.problem(Counter::Duplicate, shard, key, "the same image bytes came earlier in the stream");
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_are_nested_deterministic_and_sized() {
        let keys: Vec<String> = (0..200_000).map(|i| format!("{i:09}")).collect();
        let one: Vec<&String> = keys.iter().filter(|k| in_subset(k, 0.01, 0)).collect();
        let ten: HashSet<&String> = keys.iter().filter(|k| in_subset(k, 0.10, 0)).collect();
        assert!(one.iter().all(|k| ten.contains(k)), "1% ⊂ 10%");
        assert!((one.len() as f64 / 2000.0 - 1.0).abs() < 0.1, "{}", one.len());
        assert!((ten.len() as f64 / 20_000.0 - 1.0).abs() < 0.03, "{}", ten.len());
        let again: Vec<&String> = keys.iter().filter(|k| in_subset(k, 0.01, 0)).collect();
        assert_eq!(one, again);
        let other: Vec<&String> = keys.iter().filter(|k| in_subset(k, 0.01, 1)).collect();
        assert_ne!(one, other, "another subset seed, another subset");
    }

    #[test]
    fn dedup_set_is_bounded_in_two_generations() {
        let mut s = DedupSet::new(1000);
        assert!(s.insert(1) && !s.insert(1));
        for h in 2..=1000 {
            assert!(s.insert(h));
        }
        // The first generation is full and kept as "previous": still a duplicate.
        assert!(!s.insert(5));
        for h in 1001..=2000 {
            assert!(s.insert(h));
        }
        // Two generations later, hash 5 is forgotten: memory stays bounded.
        assert!(s.insert(5));
        assert!(s.len() <= 2000);
    }

    #[test]
    fn memory_per_million_hashes() {
        let mut s = DedupSet::new(2_000_000);
        for h in 0..1_000_000u64 {
            s.insert(h.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        }
        let mb = s.memory_bytes() as f64 / 1e6;
        println!("dedup set: {mb:.1} MB for 1M hashes");
        assert!(mb < 20.0, "{mb}");
    }

    #[test]
    fn filters_and_reasons() {
        let stats = Stats::new();
        let cfg = SelectOptions {
            min_score: [("clip_score".to_string(), 0.28)].into(),
            drop_if: [("NSFW".to_string(), vec!["NSFW".to_string(), "true".to_string()])].into(),
            dedup: true,
            dedup_capacity: 100,
            ..Default::default()
        };
        let mut sel = Selector::new(cfg);
        let meta = |j: &str| serde_json::from_str::<Map<String, Value>>(j).unwrap();
        assert!(sel.keep("a", "s", &meta(r#"{"clip_score": 0.3}"#), true, b"A", &stats));
        assert!(!sel.keep("b", "s", &meta(r#"{"clip_score": 0.2}"#), true, b"B", &stats));
        assert!(!sel.keep("c", "s", &meta(r#"{}"#), true, b"C", &stats));
        assert!(!sel.keep("d", "s", &meta(r#"{"clip_score": 0.5, "NSFW": "nsfw"}"#), true, b"D", &stats));
        assert!(!sel.keep("e", "s", &meta(r#"{"clip_score": 0.5, "NSFW": true}"#), true, b"E", &stats));
        assert!(sel.keep("f", "s", &meta(r#"{"clip_score": 0.5, "NSFW": "UNLIKELY"}"#), true, b"F", &stats));
        assert!(!sel.keep("g", "s", &meta(r#"{"clip_score": 0.5}"#), true, b"A", &stats), "same bytes as a");
        assert_eq!(stats.get(Counter::Filtered), 4);
        // One comparison rule; what it cannot compare fails closed.
        for (value, kept) in [
            (Some(r#"["NSFW"]"#), false),
            (Some(r#"["UNLIKELY", "nsfw "]"#), false),
            (Some(r#"" NSFW""#), false),
            (Some("null"), false),
            (Some(r#"{"v": "NSFW"}"#), false),
            (Some(r#"[["NSFW"]]"#), false),
            (Some(r#"{"unreadable": "Timestamp(Second, None)"}"#), false),
            (Some(r#"["UNLIKELY"]"#), true),
            (Some("[]"), true),
            (Some(r#""UNSURE""#), true),
            (None, true),
        ] {
            let json = match value {
                Some(v) => format!(r#"{{"clip_score": 0.5, "NSFW": {v}}}"#),
                None => r#"{"clip_score": 0.5}"#.to_string(),
            };
            assert_eq!(sel.keep(&json, "s", &meta(&json), true, json.as_bytes(), &stats), kept, "{json}");
        }
        assert_eq!(drop_match(&serde_json::json!(1.0), &["1".into()]), Ok(Some("1.0".into())));
        assert_eq!(drop_match(&serde_json::json!(2), &["1".into()]), Ok(None));
        assert_eq!(stats.get(Counter::Duplicate), 1);
    }
}
