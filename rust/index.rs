//! The shard index: what a reader needs to know a tar shard's samples without reading them.
//!
//! One small JSON file per shard, `<stem>.index.json` (`shard-000001.tar` →
//! `shard-000001.index.json`), beside the shard or in a folder of its own (`index=`), written by
//! `webli-io index` and `webli-io prepare`. Per sample that the stream's sample rule keeps
//! (`sample.rs`): its number among the shard's member groups, its key, where its bytes start and
//! end in the shard, the xxh3 hash of its image bytes (exact dedup) and the metadata fields that
//! selection reads (the language fields, and the filter fields named when indexing). That is what
//! lets a stream
//!
//! - count each shard's samples, selected or not, for `equal_batches`, without reading them;
//! - resume by seeking: the samples a resume passes over are known from the index alone
//!   ("phantoms": they go through selection, the mixture and the shuffle buffer exactly as read
//!   samples do, so the stream's order is unchanged), and a reader opens its shard at the first
//!   sample it has to deliver (a file seek, HTTP `Range`, an object store's ranged GET); a sample
//!   still in the shuffle buffer is read alone, by its byte range, when it is delivered.
//!
//! An index is checked against its shard before it is trusted: the shard's size and validator
//! (local: modification time; remote: ETag or Last-Modified) must be those it was built from, and
//! every seek checks that the sample found there has the key the index says. A stale or damaged
//! index is counted (`index_stale`, `index_unusable`) and the shard is read as if it had none:
//! slower, never wrong. The columns are plain arrays so that the format stays readable by any
//! tool (MosaicML streaming's `index.json` and DALI's `wds2idx` files are the models).

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::remote::{is_remote, redact, stat_remote};
use crate::sample::to_sample;
use crate::select::content_hash;
use crate::stats::{Counter, Stats};

/// The `format` field of a shard index.
pub const INDEX_FORMAT: &str = "webli-io shard index";
/// The version this build writes and reads.
pub const INDEX_VERSION: u32 = 1;
/// A shard index's file name ends so.
pub const INDEX_SUFFIX: &str = ".index.json";
/// The folder summary (`index.json`): every indexed shard's sample count and size, so that a
/// count without selection loads one file, not one per shard.
pub const SUMMARY_NAME: &str = "index.json";
/// An index file larger than this is refused (a shard of 10k samples indexes to ~1.5 MB).
const MAX_INDEX_BYTES: u64 = 1 << 30;

/// Per sample kept by the sample rule, in shard order: one column each.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexedSamples {
    /// Its number among the shard's member groups (samples that fail the sample rule have a
    /// number too, and no entry): what resume positions and exclusions count.
    pub index: Vec<u64>,
    pub key: Vec<String>,
    /// Byte offset of its first header in the shard (after the previous sample's last member).
    pub offset: Vec<u64>,
    /// Byte offset just past its last member's data (padded to the 512-byte block).
    pub end: Vec<u64>,
    /// xxh3-64 of its image bytes (what exact dedup compares).
    pub hash: Vec<u64>,
    /// `false` when its `json` was unreadable (metadata filters then fail closed).
    pub meta_ok: Vec<bool>,
    /// The indexed metadata fields it has (see [`ShardIndex::fields`]).
    pub meta: Vec<Map<String, Value>>,
}

/// The index of one tar shard (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardIndex {
    pub format: String,
    pub version: u32,
    /// The shard it was built from (a URL without its query string).
    pub shard: String,
    /// The shard's size in bytes, as stored.
    pub size: u64,
    /// Local: `mtime:<nanoseconds>`; remote: the ETag (else Last-Modified) the server gave.
    pub validator: Option<String>,
    /// Member groups read (what `samples_read` counts and `equal_batches` divides without
    /// selection).
    pub samples_read: u64,
    /// The shard was read to a clean end (no cut, no damaged header).
    pub complete: bool,
    /// Byte offsets are those of the stored file (not gzip-compressed): a reader can seek.
    pub seekable: bool,
    /// The metadata fields kept per sample (the language fields and the filter fields named).
    pub fields: Vec<String>,
    pub samples: IndexedSamples,
}

impl ShardIndex {
    /// Samples with an entry (those the sample rule keeps).
    pub fn len(&self) -> usize {
        self.samples.key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.key.is_empty()
    }

    /// Can a stream select with this index alone? It must hold every field selection reads.
    pub fn covers(&self, fields: &[String]) -> bool {
        fields.iter().all(|f| self.fields.contains(f))
    }

    /// Structure and ranges (an index file is read from disk or a server: checked, not trusted).
    pub fn check(&self) -> Result<(), String> {
        if self.format != INDEX_FORMAT {
            return Err(format!("not a webli-io shard index (format {:?})", self.format));
        }
        if self.version != INDEX_VERSION {
            return Err(format!(
                "index version {}, this webli-io reads version {INDEX_VERSION}: rebuild it with `webli-io index`",
                self.version
            ));
        }
        let s = &self.samples;
        let n = s.key.len();
        if [s.index.len(), s.offset.len(), s.end.len(), s.hash.len(), s.meta_ok.len(), s.meta.len()].iter().any(|&l| l != n) {
            return Err("its columns have different lengths".into());
        }
        for i in 0..n {
            let ordered = i == 0 || (s.index[i] > s.index[i - 1] && s.offset[i] >= s.end[i - 1]);
            if !ordered || s.end[i] <= s.offset[i] || s.end[i] > self.size || s.index[i] >= self.samples_read {
                return Err(format!("sample {i} ({:?}) has an impossible place in the shard", s.key[i]));
            }
        }
        Ok(())
    }
}

/// A shard's stem: its file name without `.tar`, `.tar.gz`, `.tgz` (a URL's query left out).
fn stem(shard: &str) -> &str {
    let path = shard.split(['?', '#']).next().unwrap_or(shard);
    let name = path.rsplit('/').next().unwrap_or(path);
    for ext in [".tar.gz", ".tgz", ".tar"] {
        if let Some(s) = name.strip_suffix(ext) {
            return s;
        }
    }
    name
}

/// The file name of `shard`'s index.
pub fn index_name(shard: &str) -> String {
    format!("{}{INDEX_SUFFIX}", stem(shard))
}

/// `name` in folder `dir` (a local folder or a URL prefix).
fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Where `shard`'s index is: in `dir` when given, else beside the shard. None where there is no
/// "beside": a `pipe:` shard, a URL with a query string (a presigned URL: give `index=`).
pub fn index_location(shard: &str, dir: Option<&str>) -> Option<String> {
    if let Some(dir) = dir {
        return Some(join(dir, &index_name(shard)));
    }
    if shard.starts_with("pipe:") || (is_remote(shard) && shard.contains('?')) {
        return None;
    }
    let parent = match shard.rfind('/') {
        Some(i) => &shard[..=i],
        None => "",
    };
    Some(format!("{parent}{}", index_name(shard)))
}

/// Where the folder summary of `shard`'s index folder is.
pub fn summary_location(shard: &str, dir: Option<&str>) -> Option<String> {
    let ix = index_location(shard, dir)?;
    let parent = match ix.rfind('/') {
        Some(i) => &ix[..=i],
        None => "",
    };
    Some(format!("{parent}{SUMMARY_NAME}"))
}

/// A shard's size and validator as it is now (local: size and modification time; remote: a
/// HEAD request).
pub fn shard_identity(shard: &str) -> std::io::Result<(u64, Option<String>)> {
    if is_remote(shard) {
        return stat_remote(shard);
    }
    let meta = std::fs::metadata(shard)?;
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| format!("mtime:{}", d.as_nanos()));
    Ok((meta.len(), mtime))
}

/// Read `shard` once and index it; `fields`: metadata fields to keep per sample (the language
/// fields are always kept). The problems met (a cut, a bad header) are counted in `stats`; the
/// index then says `complete: false`, and holds the samples before the damage, as the stream
/// reads them.
pub fn build(shard: &str, fields: &[String], max_member_bytes: u64, stats: &Stats) -> Result<ShardIndex, String> {
    if shard.starts_with("pipe:") {
        return Err(format!("{shard}: a pipe: shard cannot be indexed (it has no place to seek to)"));
    }
    let (size, validator) = shard_identity(shard).map_err(|e| format!("{}: {e}", redact(shard)))?;
    let seekable = !(if is_remote(shard) { shard.ends_with(".gz") || shard.ends_with(".tgz") } else { crate::source::is_gzip(shard) });
    let reader = crate::source::open_shard(shard).map_err(|e| format!("{}: {e}", redact(shard)))?;
    let mut keep: Vec<String> = crate::config::DEFAULT_LANG_FIELDS.iter().map(|s| s.to_string()).collect();
    for f in fields {
        if !keep.contains(f) {
            keep.push(f.clone());
        }
    }
    let name: Arc<str> = Arc::from(shard);
    let mut s = IndexedSamples::default();
    let mut i = 0u64;
    let read_before = stats.get(Counter::SamplesRead);
    let before = (stats.get(Counter::TruncatedTar), stats.get(Counter::CorruptTar), stats.get(Counter::UnreadableShard));
    crate::tar::read_samples(reader, shard, max_member_bytes, stats, |raw| {
        let (offset, end) = (raw.offset, raw.end);
        if let Some(sample) = to_sample(raw, &name, stats, &[]) {
            s.index.push(i);
            s.offset.push(offset);
            s.end.push(end);
            s.hash.push(content_hash(&sample.image));
            s.meta_ok.push(sample.meta_ok);
            s.meta.push(keep.iter().filter_map(|f| sample.meta.get(f).map(|v| (f.clone(), v.clone()))).collect());
            s.key.push(sample.key);
        }
        i += 1;
        true
    });
    let after = (stats.get(Counter::TruncatedTar), stats.get(Counter::CorruptTar), stats.get(Counter::UnreadableShard));
    let index = ShardIndex {
        format: INDEX_FORMAT.into(),
        version: INDEX_VERSION,
        shard: redact(shard),
        size,
        validator,
        // Member groups, as `count_samples` counts them from the headers (skipped ones too);
        // `index` numbers only the groups the tar reader hands on, as the stream does.
        samples_read: (stats.get(Counter::SamplesRead) - read_before).max(i),
        complete: before == after,
        seekable,
        fields: keep,
        samples: s,
    };
    Ok(index)
}

/// Load and check the index file at `location` (a local path or a URL). `Ok(None)`: there is
/// none (not an error: the shard is read).
pub fn load(location: &str) -> Result<Option<ShardIndex>, String> {
    let reader = match crate::source::open_shard(location) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", redact(location))),
    };
    let mut bytes = Vec::new();
    reader.take(MAX_INDEX_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("{}: {e}", redact(location)))?;
    if bytes.len() as u64 > MAX_INDEX_BYTES {
        return Err(format!("{}: over {MAX_INDEX_BYTES} bytes", redact(location)));
    }
    let index: ShardIndex = serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", redact(location)))?;
    index.check().map_err(|e| format!("{}: {e}", redact(location)))?;
    Ok(Some(index))
}

/// The folder summary: per indexed shard (by file name), its size and member groups.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub format: String,
    pub version: u32,
    pub shards: HashMap<String, SummaryEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SummaryEntry {
    pub samples_read: u64,
    pub size: u64,
    pub validator: Option<String>,
    /// Samples with an index entry (those the sample rule keeps): what a resume without
    /// selection passes over a shard by, without loading its index.
    #[serde(default)]
    pub samples: Option<u64>,
}

/// The key of a shard in a summary: its file name (a URL's query left out).
pub fn summary_key(shard: &str) -> String {
    let path = shard.split(['?', '#']).next().unwrap_or(shard);
    path.rsplit('/').next().unwrap_or(path).to_string()
}

/// The index files a stream can use, found and loaded once each, lazily: a reader loads only
/// the indexes of the shards it reads (and only when it resumes), a count those of the shards it
/// counts.
pub struct IndexSet {
    /// `index=`: the folder holding them; None: beside each shard.
    pub dir: Option<String>,
    loaded: Mutex<HashMap<String, Option<Arc<ShardIndex>>>>,
    summaries: Mutex<HashMap<String, Option<Arc<Summary>>>>,
    /// Shards whose index was checked against them (once each: a remote check is a HEAD).
    checked: Mutex<std::collections::HashSet<String>>,
}

impl IndexSet {
    pub fn new(dir: Option<String>) -> Self {
        Self { dir, loaded: Mutex::new(HashMap::new()), summaries: Mutex::new(HashMap::new()), checked: Mutex::new(Default::default()) }
    }

    /// `shard`'s index, if there is one and it is usable; with `check`, only if the shard is
    /// still what it was indexed from (size, validator; a HEAD request for a remote shard).
    /// A damaged or stale index is counted with its reason and not used.
    pub fn get(&self, shard: &str, check: bool, stats: &Stats) -> Option<Arc<ShardIndex>> {
        let location = index_location(shard, self.dir.as_deref())?;
        let cached = self.loaded.lock().unwrap_or_else(|e| e.into_inner()).get(shard).cloned();
        let index = match cached {
            Some(ix) => ix,
            None => {
                let ix = match load(&location) {
                    Ok(ix) => ix.map(Arc::new),
                    Err(e) => {
                        stats.problem(Counter::IndexUnusable, shard, "", format!("the shard index is not used: {e}"));
                        None
                    }
                };
                self.loaded.lock().unwrap_or_else(|e| e.into_inner()).insert(shard.to_string(), ix.clone());
                ix
            }
        }?;
        if check && !self.checked.lock().unwrap_or_else(|e| e.into_inner()).contains(shard) {
            let now = shard_identity(shard);
            let same = match &now {
                Ok((size, validator)) => {
                    *size == index.size && (validator.is_none() || index.validator.is_none() || *validator == index.validator)
                }
                Err(_) => false,
            };
            if !same {
                let was = format!("{} bytes, {}", index.size, index.validator.as_deref().unwrap_or("no validator"));
                let is = match now {
                    Ok((size, v)) => format!("{size} bytes, {}", v.as_deref().unwrap_or("no validator")),
                    Err(e) => e.to_string(),
                };
                stats.problem(Counter::IndexStale, shard, "", format!("the shard changed since it was indexed ({was}; now {is}): read without its index; rebuild it with `webli-io index`"));
                // Not used from now on: later lookups find it missing.
                self.loaded.lock().unwrap_or_else(|e| e.into_inner()).insert(shard.to_string(), None);
                return None;
            }
            self.checked.lock().unwrap_or_else(|e| e.into_inner()).insert(shard.to_string());
        }
        Some(index)
    }

    /// `shard`'s entry in its folder's summary (loaded once per folder).
    fn summary_entry(&self, shard: &str) -> Option<SummaryEntry> {
        let location = summary_location(shard, self.dir.as_deref())?;
        let cached = self.summaries.lock().unwrap_or_else(|e| e.into_inner()).get(&location).cloned();
        let summary = match cached {
            Some(s) => s,
            None => {
                let s = load_summary(&location).map(Arc::new);
                self.summaries.lock().unwrap_or_else(|e| e.into_inner()).insert(location, s.clone());
                s
            }
        };
        summary?.shards.get(&summary_key(shard)).cloned()
    }

    /// The member groups of `shard` from its folder's summary, else from its own index.
    pub fn samples_read(&self, shard: &str, stats: &Stats) -> Option<u64> {
        if let Some(entry) = self.summary_entry(shard) {
            return Some(entry.samples_read);
        }
        self.get(shard, false, stats).map(|ix| ix.samples_read)
    }

    /// The samples `shard` has index entries for, from the folder summary alone; a local shard
    /// is checked against the summary's size first (a remote one when its index is loaded: a
    /// resume that passes a whole remote shard by its count trusts the summary for it).
    pub fn samples(&self, shard: &str) -> Option<u64> {
        let entry = self.summary_entry(shard)?;
        if !is_remote(shard) {
            let (size, validator) = shard_identity(shard).ok()?;
            if size != entry.size || (validator.is_some() && entry.validator.is_some() && validator != entry.validator) {
                return None;
            }
        }
        entry.samples
    }
}

fn load_summary(location: &str) -> Option<Summary> {
    let reader = crate::source::open_shard(location).ok()?;
    let mut bytes = Vec::new();
    reader.take(MAX_INDEX_BYTES).read_to_end(&mut bytes).ok()?;
    let s: Summary = serde_json::from_slice(&bytes).ok()?;
    (s.format == "webli-io index summary" && s.version == INDEX_VERSION).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::tests::make_tar;

    #[test]
    fn names_and_places() {
        assert_eq!(index_name("/d/shard-01.tar"), "shard-01.index.json");
        assert_eq!(index_name("https://h/x/s.tar.gz?sig=1"), "s.index.json");
        assert_eq!(index_location("/d/s.tar", None).unwrap(), "/d/s.index.json");
        assert_eq!(index_location("s3://b/p/s.tar", Some("/ix")).unwrap(), "/ix/s.index.json");
        assert_eq!(index_location("http://h/s.tar?X-Amz-Signature=1", None), None);
        assert_eq!(index_location("pipe:cat s.tar", None), None);
        assert_eq!(summary_location("/d/s.tar", None).unwrap(), "/d/index.json");
    }

    #[test]
    fn offsets_cut_a_shard_into_samples_that_read_alone() {
        let tar = make_tar(&[
            ("a.jpg", b"A1"),
            ("a.txt", b"cap a"),
            ("b.txt", b"no image"),
            ("c.jpg", b"C3"),
            ("c.txt", b"cap c"),
            ("c.json", br#"{"language": "fr", "score": 0.5, "other": 1}"#),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.tar");
        std::fs::write(&path, &tar).unwrap();
        let p = path.to_string_lossy();
        let ix = build(&p, &["score".into()], 1 << 20, &Stats::new()).unwrap();
        ix.check().unwrap();
        assert_eq!(ix.samples.key, ["a", "c"]);
        assert_eq!(ix.samples.index, [0, 2]);
        assert_eq!(ix.samples_read, 3);
        assert!(ix.complete && ix.seekable);
        assert_eq!(ix.samples.meta[1].get("score"), Some(&serde_json::json!(0.5)));
        assert!(ix.samples.meta[1].get("other").is_none());
        assert_eq!(ix.samples.hash[0], content_hash(b"A1"));
        // Each range holds exactly its sample.
        for (k, (o, e)) in ix.samples.offset.iter().zip(&ix.samples.end).enumerate() {
            let part = std::io::Cursor::new(tar[*o as usize..*e as usize].to_vec()).chain(std::io::repeat(0).take(1024));
            let mut got = Vec::new();
            crate::tar::read_samples_from(part, *o, "s", 1 << 20, &Stats::new(), |r| {
                got.push(r.key);
                true
            });
            assert_eq!(got, [ix.samples.key[k].clone()]);
        }
        let mut bad = ix.clone();
        bad.samples.end[0] = bad.size + 1;
        assert!(bad.check().is_err());
        bad = ix.clone();
        bad.samples.hash.pop();
        assert!(bad.check().is_err());
    }
}
