//! Raw members → a sample: key, image bytes, caption, parsed metadata.
//!
//! The rules (also in the README):
//! - image: the first member with extension `jpg`, `jpeg`, `png`, `webp`, `gif`, `bmp` (also as
//!   the last part of a dotted extension, e.g. `seg.jpg`); none → skipped (`missing_image`), zero
//!   bytes → skipped (`empty_image`). The format is detected from the bytes, not the name, so a
//!   PNG named `.jpg` still decodes.
//! - caption: the `txt` member (or `text`, `caption`), trimmed; else the `caption` field of the
//!   `json`; neither → skipped (`missing_caption`). Invalid UTF-8 is repaired (U+FFFD) and counted.
//! - meta: the `json` member parsed; one that does not parse or is not an object is replaced by
//!   `{}` and counted (`bad_json`): the pair itself is still good.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::stats::{Counter, Stats};
use crate::tar::RawSample;

pub const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "webp", "gif", "bmp"];
const TEXT_EXTENSIONS: [&str; 3] = ["txt", "text", "caption"];

/// The encoded bytes of an image: owned (read from a tar member) or a view into a buffer owned
/// elsewhere and shared without a copy (a Parquet column imported through the Arrow C data
/// interface: the batch stays alive as long as any view of it).
#[derive(Clone)]
pub enum ImageBytes {
    Owned(Vec<u8>),
    Shared { buffer: Arc<dyn AsRef<[u8]> + Send + Sync>, start: usize, end: usize },
}

impl Default for ImageBytes {
    fn default() -> Self {
        ImageBytes::Owned(Vec::new())
    }
}

impl std::ops::Deref for ImageBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ImageBytes::Owned(v) => v,
            ImageBytes::Shared { buffer, start, end } => &(**buffer).as_ref()[*start..*end],
        }
    }
}

impl From<Vec<u8>> for ImageBytes {
    fn from(v: Vec<u8>) -> Self {
        ImageBytes::Owned(v)
    }
}

impl std::fmt::Debug for ImageBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if matches!(self, ImageBytes::Owned(_)) { "owned" } else { "shared" };
        write!(f, "ImageBytes({} bytes, {kind})", self.len())
    }
}

/// One row of a table shard (Parquet), before the sample rules: what the columns held.
#[derive(Debug, Default)]
pub struct TableRow {
    pub key: Option<String>,
    pub image: Option<ImageBytes>,
    pub text: Option<String>,
    pub meta: Map<String, Value>,
}

/// Reads a table shard (Parquet) row by row: `emit` gets each row, in order, and returns `false`
/// to stop. Problems (an unreadable file, a column of the wrong type) are counted on `stats`.
pub trait TableReader: Send + Sync {
    fn read(&self, shard: &str, stats: &Stats, emit: &mut dyn FnMut(TableRow) -> bool);
}

impl std::fmt::Debug for dyn TableReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TableReader")
    }
}

/// Is `shard` a table shard (read by a [`TableReader`]) rather than a tar?
pub fn is_table_shard(shard: &str) -> bool {
    let path = shard.split(['?', '#']).next().unwrap_or(shard);
    path.ends_with(".parquet") || path.ends_with(".pq")
}

/// A row of a table shard → a [`Sample`], by the same rules as tar members (missing image, empty
/// image, missing or empty caption: skipped and counted). `index` names a row without a key.
pub fn row_to_sample(row: TableRow, index: u64, shard_name: &Arc<str>, stats: &Stats) -> Option<Sample> {
    let key = row.key.unwrap_or_else(|| format!("{index:09}"));
    let shard: &str = shard_name;
    let Some(image) = row.image else {
        stats.problem(Counter::MissingImage, shard, &key, "no image in this row (null or no image column)");
        return None;
    };
    if image.is_empty() {
        stats.problem(Counter::EmptyImage, shard, &key, "image has zero bytes");
        return None;
    }
    let text = row.text.or_else(|| row.meta.get("caption").and_then(Value::as_str).map(str::to_string));
    let text = text.map(|t| t.trim().to_string()).unwrap_or_default();
    if text.is_empty() {
        stats.problem(Counter::MissingCaption, shard, &key, "no caption (null or empty)");
        return None;
    }
    Some(Sample {
        key,
        shard: shard_name.clone(),
        index,
        seq: 0,
        image,
        text,
        meta: row.meta,
        lang: String::from("und"),
        copy: 0,
        meta_ok: true,
        extras: Vec::new(),
        span: None,
    })
}

/// One image–text pair, not yet decoded.
#[derive(Debug, Clone)]
pub struct Sample {
    pub key: String,
    /// The shard the sample came from.
    pub shard: Arc<str>,
    /// Its place among the samples (member groups) of that shard, from 0.
    pub index: u64,
    /// Its place in the stream after the shuffle buffer, from 0 (resume positions count these).
    pub seq: u64,
    pub image: ImageBytes,
    pub text: String,
    pub meta: Map<String, Value>,
    /// The normalised language (see `lang.rs`), `und` when unknown.
    pub lang: String,
    /// Which copy of the sample this is: 0 for the sample itself, 1.. for the extra copies a
    /// mixture makes (a resume excludes exactly the copies consumed).
    pub copy: u32,
    /// `false` when the sample's `json` was unreadable: metadata filters then fail closed.
    pub meta_ok: bool,
    /// The members named by `extra_members`: `(requested extension, bytes)`.
    pub extras: Vec<(String, Vec<u8>)>,
    /// A sample known from the shard index alone, not read (a resume passes over it): where its
    /// bytes lie in the shard, `(offset, end)`. Its image, caption and extras are empty until
    /// it is read there ("hydrated"), if it is delivered at all. None: read from the shard.
    pub span: Option<(u64, u64)>,
}

impl Sample {
    /// A sample of just an image under `key` (no shard, caption or metadata): one image decoded
    /// outside a stream, as `decode_resize` and the decode benchmark do.
    pub fn of_image(key: &str, image: Vec<u8>) -> Self {
        Sample {
            key: key.into(),
            shard: "".into(),
            index: 0,
            seq: 0,
            image: image.into(),
            text: String::new(),
            meta: Map::new(),
            lang: String::new(),
            copy: 0,
            meta_ok: true,
            extras: Vec::new(),
            span: None,
        }
    }
}

fn last_ext(ext: &str) -> &str {
    ext.rsplit('.').next().unwrap_or(ext)
}

/// Turn raw members into a [`Sample`], or count why not (`None`). Members whose extension (whole,
/// or its last part) is in `extra` are kept in `Sample::extras` too.
pub fn to_sample(raw: RawSample, shard_name: &Arc<str>, stats: &Stats, extra: &[String]) -> Option<Sample> {
    let shard: &str = shard_name;
    let key = raw.key;
    let mut image: Option<Vec<u8>> = None;
    let mut text: Option<Vec<u8>> = None;
    let mut json: Option<Vec<u8>> = None;
    // A second image or caption under one key (`img.0001.jpg`, `img.0002.jpg` share the key
    // `img`): the first is used, every other one is counted, never dropped silently.
    let mut repeated: Vec<String> = Vec::new();
    let mut extras: Vec<(String, Vec<u8>)> = Vec::new();
    for (ext, bytes) in raw.members {
        let last = last_ext(&ext);
        if let Some(want) = extra.iter().find(|w| **w == ext || **w == last) {
            if !extras.iter().any(|(w, _)| w == want) {
                extras.push((want.clone(), bytes.clone()));
            }
        }
        if IMAGE_EXTENSIONS.contains(&last) {
            if image.is_none() {
                image = Some(bytes);
            } else {
                repeated.push(ext);
            }
        } else if TEXT_EXTENSIONS.contains(&last) {
            if text.is_none() {
                text = Some(bytes);
            } else {
                repeated.push(ext);
            }
        } else if json.is_none() && last == "json" {
            json = Some(bytes);
        }
    }
    if !repeated.is_empty() {
        stats.add(Counter::RepeatedMember, repeated.len() as u64 - 1);
        let shown: Vec<&str> = repeated.iter().take(5).map(|s| s.as_str()).collect();
        let more = if repeated.len() > 5 { format!(" and {} more", repeated.len() - 5) } else { String::new() };
        stats.problem(
            Counter::RepeatedMember,
            shard,
            &key,
            format!("{} more image or caption members under one key, not used: {}{more}", repeated.len(), shown.join(", ")),
        );
    }
    let mut meta_ok = true;
    let meta = match json {
        None => Map::new(),
        Some(bytes) => match parse_meta(&bytes) {
            Ok((m, repaired)) => {
                if repaired {
                    stats.problem(Counter::BadJson, shard, &key, "json has NaN or Infinity (Python's json.dumps default): read as null");
                }
                m
            }
            Err(why) => {
                meta_ok = false;
                stats.problem(Counter::BadJson, shard, &key, why);
                Map::new()
            }
        },
    };
    let Some(image) = image else {
        stats.problem(Counter::MissingImage, shard, &key, "no image member (jpg, jpeg, png, webp, gif, bmp)");
        return None;
    };
    if image.is_empty() {
        stats.problem(Counter::EmptyImage, shard, &key, "image member has zero bytes");
        return None;
    }
    let text = match text {
        Some(bytes) => match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => {
                stats.problem(Counter::InvalidUtf8Caption, shard, &key, "caption is not valid UTF-8; invalid bytes replaced");
                String::from_utf8_lossy(e.as_bytes()).into_owned()
            }
        },
        None => match meta.get("caption") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                stats.problem(Counter::MissingCaption, shard, &key, "no txt member and no 'caption' in json");
                return None;
            }
        },
    };
    let text = text.trim().to_string();
    if text.is_empty() {
        stats.problem(Counter::MissingCaption, shard, &key, "caption is empty");
        return None;
    }
    Some(Sample {
        key,
        shard: shard_name.clone(),
        index: 0,
        seq: 0,
        image: image.into(),
        text,
        meta,
        lang: String::from("und"),
        copy: 0,
        meta_ok,
        extras,
        span: None,
    })
}

/// A sample's `json` as a map. Python's `json.dumps` writes `NaN`, `Infinity` and `-Infinity`
/// by default, which JSON does not allow: outside strings they are read as `null` (the second
/// value says so) rather than losing the whole metadata. Nesting is bounded by serde_json (128).
fn parse_meta(bytes: &[u8]) -> Result<(Map<String, Value>, bool), String> {
    let as_map = |v: Value| match v {
        Value::Object(m) => Ok(m),
        other => Err(format!("json is not an object: {}", kind(&other))),
    };
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => as_map(v).map(|m| (m, false)),
        Err(e) => {
            let repaired = replace_non_finite(bytes);
            match repaired.as_deref().map(serde_json::from_slice::<Value>) {
                Some(Ok(v)) => as_map(v).map(|m| (m, true)),
                _ => Err(format!("json does not parse: {e}")),
            }
        }
    }
}

/// `bytes` with the tokens `NaN`, `Infinity`, `-Infinity` outside strings replaced by `null`;
/// `None` when there is none.
fn replace_non_finite(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    let (mut i, mut in_string, mut changed) = (0, false, false);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            out.push(b);
            if b == b'\\' && i + 1 < bytes.len() {
                out.push(bytes[i + 1]);
                i += 1;
            } else if b == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
        }
        let rest = &bytes[i..];
        if let Some(token) = [&b"-Infinity"[..], b"Infinity", b"NaN"].into_iter().find(|t| rest.starts_with(t)) {
            out.extend_from_slice(b"null");
            i += token.len();
            changed = true;
            continue;
        }
        out.push(b);
        i += 1;
    }
    changed.then_some(out)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(key: &str, members: &[(&str, &[u8])]) -> RawSample {
        RawSample {
            key: key.into(),
            members: members.iter().map(|(e, b)| (e.to_string(), b.to_vec())).collect(),
            skipped: false,
            ..Default::default()
        }
    }

    #[test]
    fn builds_a_sample() {
        let st = Stats::new();
        let s = to_sample(raw("k", &[("jpg", b"I"), ("txt", b" a cat \n"), ("json", br#"{"lang":"en"}"#)]), &"s".into(), &st, &[]).unwrap();
        assert_eq!(s.text, "a cat");
        assert_eq!(s.meta["lang"], "en");
        assert_eq!(&s.image[..], b"I");
    }

    #[test]
    fn extra_members_are_carried_by_whole_or_last_extension() {
        let st = Stats::new();
        let members: [(&str, &[u8]); 5] = [("jpg", b"I"), ("txt", b"x"), ("cls", b"7"), ("seg.png", b"P"), ("other", b"o")];
        let want = ["cls".to_string(), "png".to_string(), "npy".to_string()];
        let s = to_sample(raw("k", &members), &"s".into(), &st, &want).unwrap();
        assert_eq!(s.extras, [("cls".to_string(), b"7".to_vec()), ("png".to_string(), b"P".to_vec())]);
        let s = to_sample(raw("k", &members), &"s".into(), &st, &["seg.png".into()]).unwrap();
        assert_eq!(s.extras, [("seg.png".to_string(), b"P".to_vec())]);
    }

    #[test]
    fn caption_falls_back_to_json() {
        let st = Stats::new();
        let s = to_sample(raw("k", &[("webp", b"I"), ("json", br#"{"caption":"hola"}"#)]), &"s".into(), &st, &[]).unwrap();
        assert_eq!(s.text, "hola");
    }

    #[test]
    fn counts_each_reason() {
        let st = Stats::new();
        assert!(to_sample(raw("a", &[("txt", b"x")]), &"s".into(), &st, &[]).is_none());
        assert!(to_sample(raw("b", &[("jpg", b"")]), &"s".into(), &st, &[]).is_none());
        assert!(to_sample(raw("c", &[("png", b"I")]), &"s".into(), &st, &[]).is_none());
        assert!(to_sample(raw("d", &[("png", b"I"), ("txt", b"  ")]), &"s".into(), &st, &[]).is_none());
        let s = to_sample(raw("e", &[("png", b"I"), ("txt", b"ok\xff"), ("json", b"{nope")]), &"s".into(), &st, &[]).unwrap();
        assert_eq!(s.text, "ok\u{fffd}");
        assert!(s.meta.is_empty());
        assert_eq!(st.get(Counter::MissingImage), 1);
        assert_eq!(st.get(Counter::EmptyImage), 1);
        assert_eq!(st.get(Counter::MissingCaption), 2);
        assert_eq!(st.get(Counter::InvalidUtf8Caption), 1);
        assert_eq!(st.get(Counter::BadJson), 1);
        assert_eq!(st.problems()[0].key, "a");
        // 3 pairs named img.000N.{jpg,txt}: one key; 2 more images and 2 more captions counted.
        let members: [(&str, &[u8]); 6] =
            [("0001.jpg", b"1"), ("0001.txt", b"a"), ("0002.jpg", b"2"), ("0002.txt", b"b"), ("0003.jpg", b"3"), ("0003.txt", b"c")];
        let s = to_sample(raw("img", &members), &"s".into(), &st, &[]).unwrap();
        assert_eq!((s.text.as_str(), &*s.image), ("a", &b"1"[..]));
        assert_eq!(st.get(Counter::RepeatedMember), 4);
    }

    #[test]
    fn json_with_nan_keeps_its_other_fields_and_filters_fail_closed() {
        let st = Stats::new();
        let json = br#"{"score": NaN, "hi": -Infinity, "NSFW": "NSFW", "note": "NaN in a string stays"}"#;
        let s = to_sample(raw("a", &[("jpg", b"I"), ("txt", b"x"), ("json", json)]), &"s".into(), &st, &[]).unwrap();
        assert!(s.meta_ok);
        assert_eq!(s.meta["NSFW"], "NSFW");
        assert!(s.meta["score"].is_null() && s.meta["hi"].is_null());
        assert_eq!(s.meta["note"], "NaN in a string stays");
        assert_eq!(st.get(Counter::BadJson), 1, "the repair is counted");
        let bad = to_sample(raw("b", &[("jpg", b"I"), ("txt", b"x"), ("json", b"{\"NSFW\": ")]), &"s".into(), &st, &[]).unwrap();
        assert!(!bad.meta_ok);
        let cfg = crate::config::SelectOptions { drop_if: [("NSFW".to_string(), vec!["NSFW".to_string()])].into(), ..Default::default() };
        let mut sel = crate::select::Selector::new(cfg);
        assert!(!sel.keep("a", "s", &s.meta, s.meta_ok, b"I", &st), "the NSFW flag survives the NaN");
        assert!(!sel.keep("b", "s", &bad.meta, bad.meta_ok, b"J", &st), "unreadable json: the filter fails closed");
        let mut none = crate::select::Selector::new(Default::default());
        assert!(none.keep("b", "s", &bad.meta, bad.meta_ok, b"J", &st), "no filter: kept with meta = {{}}");
    }
}
