//! A stream's shard list, held compactly: a remote brace pattern such as
//! `s3://b/webli-{00000000..12499999}.tar` is one run of numbers (a prefix, a suffix, a range),
//! not 12.5 M strings. A list of 12.5 M names cost 1.9 GB in every process and a 413 MB pickle
//! to every spawned DataLoader worker; as runs it is a few bytes, name `i` is made on demand,
//! and a name's place is found by parsing it.
//!
//! Only remote patterns become runs (their names are taken as given, no listing); local patterns
//! and globs are resolved to the files that exist, one name each, as [`resolve_shards`] does.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::remote::is_remote;
use crate::source::{expand_braces, resolve_shards, SourceError};

/// Names `prefix{start ± k}suffix` for `k` in `0..count`, the number zero-padded to `width`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    pub prefix: String,
    pub suffix: String,
    pub start: u64,
    pub count: u64,
    pub down: bool,
    pub width: usize,
}

impl Range {
    fn name(&self, k: u64) -> String {
        let v = if self.down { self.start - k } else { self.start + k };
        format!("{}{v:0w$}{}", self.prefix, self.suffix, w = self.width)
    }

    /// `k` such that `name(k) == name`, if the name is one of this run's.
    fn find(&self, name: &str) -> Option<u64> {
        let digits = name.strip_prefix(self.prefix.as_str())?.strip_suffix(self.suffix.as_str())?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let v: u64 = digits.parse().ok()?;
        let k = if self.down { self.start.checked_sub(v)? } else { v.checked_sub(self.start)? };
        (k < self.count && self.name(k) == name).then_some(k)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Run {
    One(String),
    Range(Range),
}

impl Run {
    fn len(&self) -> u64 {
        match self {
            Run::One(_) => 1,
            Run::Range(r) => r.count,
        }
    }
}

/// The shard list: runs, and the cumulative count at the end of each (for `get` by bisection).
#[derive(Debug, Default)]
pub struct ShardNames {
    runs: Vec<Run>,
    ends: Vec<u64>,
    /// Single names' places, made on the first `index_of` (a list of single names is O(n) anyway).
    ones: OnceLock<HashMap<String, u64>>,
}

impl Clone for ShardNames {
    fn clone(&self) -> Self {
        Self::from_runs(self.runs.clone())
    }
}

impl PartialEq for ShardNames {
    fn eq(&self, other: &Self) -> bool {
        self.runs == other.runs
    }
}

/// `pattern` as runs when it is a remote name whose last brace group is a numeric range (the
/// groups before it expanded: usually none); `None` for any other pattern.
fn compact(pattern: &str) -> Result<Option<Vec<Run>>, String> {
    if !is_remote(pattern) || pattern.starts_with("pipe:") {
        return Ok(None);
    }
    let (Some(open), Some(close)) = (pattern.rfind('{'), pattern.rfind('}')) else { return Ok(None) };
    if close < open {
        return Ok(None);
    }
    let body = &pattern[open + 1..close];
    let Some((a, b)) = body.split_once("..") else { return Ok(None) };
    let (Ok(start), Ok(end)) = (a.parse::<u64>(), b.parse::<u64>()) else { return Ok(None) };
    let suffix = &pattern[close + 1..];
    if suffix.contains(['{', '}']) {
        return Ok(None);
    }
    let width = if a.len() > 1 && a.starts_with('0') { a.len() } else { 0 };
    let count = start.abs_diff(end) + 1;
    let prefixes = expand_braces(&pattern[..open])?;
    Ok(Some(
        prefixes
            .into_iter()
            .map(|prefix| Run::Range(Range { prefix, suffix: suffix.to_string(), start, count, down: end < start, width }))
            .collect(),
    ))
}

impl ShardNames {
    pub fn from_runs(runs: Vec<Run>) -> Self {
        let mut total = 0u64;
        let ends = runs
            .iter()
            .map(|r| {
                total += r.len();
                total
            })
            .collect();
        Self { runs, ends, ones: OnceLock::new() }
    }

    pub fn from_names(names: Vec<String>) -> Self {
        Self::from_runs(names.into_iter().map(Run::One).collect())
    }

    /// Resolve shard specs as [`resolve_shards`] does, keeping remote numeric ranges as runs.
    pub fn resolve(specs: &[String], allow_pipe: bool) -> Result<Self, SourceError> {
        let mut runs = Vec::new();
        for spec in specs {
            match compact(spec).map_err(|why| SourceError::BadPattern { spec: spec.clone(), why })? {
                Some(r) => runs.extend(r),
                None => runs.extend(resolve_shards(std::slice::from_ref(spec), allow_pipe)?.into_iter().map(Run::One)),
            }
        }
        Ok(Self::from_runs(runs))
    }

    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    pub fn len(&self) -> usize {
        self.ends.last().copied().unwrap_or(0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Name `i` (`i < len`).
    pub fn get(&self, i: usize) -> Option<String> {
        let i = i as u64;
        let r = self.ends.partition_point(|&e| e <= i);
        let run = self.runs.get(r)?;
        let first = if r == 0 { 0 } else { self.ends[r - 1] };
        Some(match run {
            Run::One(name) => name.clone(),
            Run::Range(range) => range.name(i - first),
        })
    }

    /// The place of `name` in the list (its first, for a name given twice), if it is there.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        let ones = self.ones.get_or_init(|| {
            let mut m = HashMap::new();
            let mut at = 0u64;
            for run in &self.runs {
                if let Run::One(n) = run {
                    m.entry(n.clone()).or_insert(at);
                }
                at += run.len();
            }
            m
        });
        let mut found = ones.get(name).copied();
        let mut first = 0u64;
        for (run, &end) in self.runs.iter().zip(&self.ends) {
            if found.is_some_and(|f| f < first) {
                break;
            }
            if let Run::Range(r) = run {
                if let Some(k) = r.find(name) {
                    found = Some(found.map_or(first + k, |f| f.min(first + k)));
                    break;
                }
            }
            first = end;
        }
        found.map(|f| f as usize)
    }

    /// Every name, in order (O(n): for what needs them all, e.g. counting).
    pub fn iter(&self) -> impl Iterator<Item = String> + '_ {
        self.runs.iter().flat_map(|run| -> Box<dyn Iterator<Item = String> + '_> {
            match run {
                Run::One(n) => Box::new(std::iter::once(n.clone())),
                Run::Range(r) => Box::new((0..r.count).map(move |k| r.name(k))),
            }
        })
    }

    /// Does any name satisfy `f`? A run's names share their prefix and suffix, so a test of
    /// the suffix (a Parquet extension, say) looks at one name per run.
    pub fn any_by_run(&self, f: impl Fn(&str) -> bool) -> bool {
        self.runs.iter().any(|run| match run {
            Run::One(n) => f(n),
            Run::Range(r) => r.count > 0 && f(&r.name(0)),
        })
    }

    /// A digest of the names joined by newlines (xxh3-128): what a resume state is bound to.
    pub fn digest(&self) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for (i, name) in self.iter().enumerate() {
            if i > 0 {
                h.update(b"\n");
            }
            h.update(name.as_bytes());
        }
        format!("{:032x}", h.digest128())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(specs: &[&str]) -> ShardNames {
        ShardNames::resolve(&specs.iter().map(|s| s.to_string()).collect::<Vec<_>>(), false).unwrap()
    }

    #[test]
    fn remote_ranges_are_runs_that_give_the_expanded_names() {
        for spec in ["s3://b/x-{0000..0999}.tar", "https://h/{a,b}/s{7..12}.tar", "gs://b/{10..3}.tar", "s3://b/{1,2}.tar"] {
            let list = names(&[spec]);
            let want = expand_braces(spec).unwrap();
            assert_eq!(list.len(), want.len(), "{spec}");
            assert_eq!(list.iter().collect::<Vec<_>>(), want, "{spec}");
            for (i, n) in want.iter().enumerate() {
                assert_eq!(list.get(i).as_deref(), Some(n.as_str()));
                assert_eq!(list.index_of(n), Some(i), "{n}");
            }
            assert_eq!(list.get(want.len()), None);
            assert_eq!(ShardNames::from_names(want).digest(), list.digest(), "the digest is that of the names");
        }
        let big = names(&["s3://b/webli-{00000000..12499999}.tar"]);
        assert_eq!(big.len(), 12_500_000);
        assert_eq!(big.runs().len(), 1);
        assert_eq!(big.get(12_499_999).as_deref(), Some("s3://b/webli-12499999.tar"));
        assert_eq!(big.index_of("s3://b/webli-00000042.tar"), Some(42));
        assert_eq!(big.index_of("s3://b/webli-42.tar"), None, "not this width");
        assert_eq!(big.index_of("s3://b/webli-12500000.tar"), None);
    }

    #[test]
    fn mixed_lists_keep_their_order_and_first_places() {
        let list = names(&["http://h/a.tar", "s3://b/{1..3}.tar", "s3://b/2.tar"]);
        assert_eq!(list.len(), 5);
        assert_eq!(list.index_of("s3://b/2.tar"), Some(2), "the first place of a name given twice");
        assert_eq!(list.index_of("http://h/a.tar"), Some(0));
        assert!(list.any_by_run(|n| n.ends_with(".tar")));
        assert!(!list.any_by_run(|n| n.ends_with(".parquet")));
    }
}
