//! Language labels: read from each sample's metadata and normalised to one code system.
//!
//! The paper takes the page's language tag; shards carry it in their `json` under names such as
//! `language`, `lang` or `content-language` (the fields tried, in order, are configurable), and
//! `webli-io prepare` writes fastText LID there for samples that had none. Tags are reduced to
//! their primary language subtag, lower-cased, as ISO 639-1 where one exists:
//!
//! - BCP-47 region/script subtags are dropped: `en-US` → `en`, `zh_Hans_CN` → `zh`;
//! - deprecated and alternative codes are mapped: `iw` → `he`, `in` → `id`, `ji` → `yi`,
//!   `jw` → `jv`, `mo` → `ro`; Tagalog `tl` (what fastText and many pages say) → `fil`
//!   (Filipino, the paper's label);
//! - common ISO 639-2/3 three-letter codes map to their two-letter form (`eng` → `en`,
//!   `heb` → `he`, `swa`/`swh` → `sw`, `mri`/`mao` → `mi`, `tgl` → `fil`, ...);
//! - a missing, empty, malformed or undetermined tag (`und`, `zxx`, `mul`, `xx`) is `und`:
//!   its own bucket, never an error.

use serde_json::{Map, Value};

/// The fields of a sample's `json` tried in order for its language.
pub use crate::config::DEFAULT_LANG_FIELDS;

const ALIASES: &[(&str, &str)] = &[
    ("iw", "he"),
    ("in", "id"),
    ("ji", "yi"),
    ("jw", "jv"),
    ("mo", "ro"),
    ("tl", "fil"),
    ("eng", "en"),
    ("fra", "fr"),
    ("fre", "fr"),
    ("deu", "de"),
    ("ger", "de"),
    ("spa", "es"),
    ("por", "pt"),
    ("ita", "it"),
    ("nld", "nl"),
    ("dut", "nl"),
    ("rus", "ru"),
    ("ukr", "uk"),
    ("pol", "pl"),
    ("tur", "tr"),
    ("ara", "ar"),
    ("fas", "fa"),
    ("per", "fa"),
    ("hin", "hi"),
    ("ben", "bn"),
    ("tel", "te"),
    ("tam", "ta"),
    ("urd", "ur"),
    ("mar", "mr"),
    ("guj", "gu"),
    ("heb", "he"),
    ("swa", "sw"),
    ("swh", "sw"),
    ("mri", "mi"),
    ("mao", "mi"),
    ("tgl", "fil"),
    ("zho", "zh"),
    ("chi", "zh"),
    ("cmn", "zh"),
    ("jpn", "ja"),
    ("kor", "ko"),
    ("vie", "vi"),
    ("tha", "th"),
    ("ind", "id"),
    ("msa", "ms"),
    ("may", "ms"),
    ("ell", "el"),
    ("gre", "el"),
    ("ces", "cs"),
    ("cze", "cs"),
    ("swe", "sv"),
    ("dan", "da"),
    ("fin", "fi"),
    ("nor", "no"),
    ("nob", "no"),
    ("nb", "no"),
    ("hun", "hu"),
    ("ron", "ro"),
    ("rum", "ro"),
];

const UNDETERMINED: &[&str] = &["und", "zxx", "mul", "mis", "xx", "unknown", "none", "null"];

/// Normalise a language tag (see the module docs); `und` when it cannot be read.
pub fn normalize_lang(tag: &str) -> String {
    // A content-language header may list several: take the first.
    let first = tag.split([',', ';']).next().unwrap_or("").trim();
    let primary = first.split(['-', '_']).next().unwrap_or("").to_ascii_lowercase();
    if primary.len() < 2 || primary.len() > 3 || !primary.bytes().all(|b| b.is_ascii_lowercase()) {
        return "und".into();
    }
    if UNDETERMINED.contains(&primary.as_str()) {
        return "und".into();
    }
    ALIASES.iter().find(|(a, _)| *a == primary).map_or(primary, |(_, b)| b.to_string())
}

/// The normalised language of a sample from the first of `fields` present in its metadata.
pub fn sample_lang(meta: &Map<String, Value>, fields: &[String]) -> String {
    for f in fields {
        if let Some(Value::String(tag)) = meta.get(f) {
            return normalize_lang(tag);
        }
    }
    "und".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_tags() {
        for (tag, want) in [
            ("en", "en"),
            ("en-US", "en"),
            ("EN_gb", "en"),
            ("zh-Hans-CN", "zh"),
            ("iw", "he"),
            ("he-IL", "he"),
            ("tl", "fil"),
            ("fil", "fil"),
            ("eng", "en"),
            ("swh", "sw"),
            ("mri", "mi"),
            ("und", "und"),
            ("", "und"),
            ("  ", "und"),
            ("x", "und"),
            ("english", "und"),
            ("12", "und"),
            ("de, en;q=0.8", "de"),
            ("zxx", "und"),
        ] {
            assert_eq!(normalize_lang(tag), want, "{tag:?}");
        }
    }

    #[test]
    fn reads_the_first_field_present() {
        let fields: Vec<String> = DEFAULT_LANG_FIELDS.iter().map(|s| s.to_string()).collect();
        let m: Map<String, Value> = serde_json::from_str(r#"{"lang": "bn", "content-language": "en"}"#).unwrap();
        assert_eq!(sample_lang(&m, &fields), "bn");
        let m: Map<String, Value> = serde_json::from_str(r#"{"language": 7}"#).unwrap();
        assert_eq!(sample_lang(&m, &fields), "und");
        assert_eq!(sample_lang(&Map::new(), &fields), "und");
    }
}
