//! Shard specs → shard paths → byte streams.
//!
//! A spec is a path, a glob (`data/*.tar`), a brace pattern (`data/shard-{000000..000009}.tar`,
//! `data/{train,extra}-0.tar`), as webdataset and img2dataset name their shards, or a folder of
//! shards (an img2dataset output folder: its side files are not shards, see [`is_side_file`]). Brace expansion
//! is written by hand: it is a few dozen lines, and the crates that do it either pull in a parser
//! framework or do not keep the zero padding of numeric ranges that shard names rely on.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::cache::Cache;
use crate::remote::{is_remote, open_remote, RetryPolicy};

/// Why a shard spec could not be resolved. Its `Display` names the problem and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceError {
    /// A brace pattern that does not parse.
    BadPattern { spec: String, why: String },
    /// A path (after expansion) that does not exist.
    Missing { path: String },
    /// A glob that matched no file.
    NoMatch { spec: String },
    /// A `pipe:` spec (a shell command) without the caller's consent.
    PipeNotAllowed { spec: String },
    /// A path that exists but is not a regular file (a FIFO, a device).
    NotAFile { path: String },
    /// A folder that holds no shard file.
    EmptyFolder { path: String },
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceError::BadPattern { spec, why } => {
                write!(f, "bad shard pattern {spec:?}: {why} (use e.g. 'shard-{{000000..000009}}.tar' or '{{a,b}}.tar')")
            }
            SourceError::Missing { path } => write!(f, "shard not found: {path:?} (check the path, or the range of the brace pattern)"),
            SourceError::NoMatch { spec } => write!(f, "no shard matches the glob {spec:?}"),
            SourceError::EmptyFolder { path } => write!(
                f,
                "the folder {path:?} holds no shard ({}): give shard files, a glob, or a folder of shards",
                SHARD_SUFFIXES.join(", ")
            ),
            SourceError::NotAFile { path } => write!(f, "{path:?} is not a regular file (a FIFO or a device): shards are files"),
            SourceError::PipeNotAllowed { spec } => write!(
                f,
                "{spec:?} is a pipe: shard, which runs a shell command: pass allow_pipe=True (or set {ALLOW_PIPE_ENV}=1) \
                 if you mean to run it"
            ),
        }
    }
}

impl std::error::Error for SourceError {}

/// Expand every `{a,b,c}` list and `{000..123}` numeric range of `pattern`, left to right.
/// Ranges keep the width of a zero-padded start (`{08..10}` → `08 09 10`) and may count down.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>, String> {
    let Some(open) = pattern.find('{') else {
        if pattern.contains('}') {
            return Err("'}' without '{'".into());
        }
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..].find('}').map(|i| open + i).ok_or_else(|| "'{' without '}'".to_string())?;
    let body = &pattern[open + 1..close];
    if body.contains('{') {
        return Err("nested braces are not supported".into());
    }
    let prefix = &pattern[..open];
    let rest = expand_braces(&pattern[close + 1..])?;
    let alternatives: Vec<String> = if let Some((a, b)) = body.split_once("..") {
        let (start, end): (u64, u64) = match (a.parse(), b.parse()) {
            (Ok(s), Ok(e)) => (s, e),
            _ => return Err(format!("range {{{body}}} must be two non-negative integers")),
        };
        let width = if a.len() > 1 && a.starts_with('0') { a.len() } else { 0 };
        let count = start.abs_diff(end) + 1;
        if count > 100_000_000 {
            return Err(format!("range {{{body}}} has {count} items"));
        }
        let values: Box<dyn Iterator<Item = u64>> = if start <= end { Box::new(start..=end) } else { Box::new((end..=start).rev()) };
        values.map(|v| format!("{v:0width$}")).collect()
    } else if body.contains(',') {
        body.split(',').map(str::to_string).collect()
    } else {
        return Err(format!("{{{body}}} is neither a list 'a,b' nor a range 'start..end'"));
    };
    let mut out = Vec::with_capacity(alternatives.len() * rest.len());
    for alt in &alternatives {
        for r in &rest {
            out.push(format!("{prefix}{alt}{r}"));
        }
    }
    Ok(out)
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The environment switch that allows `pipe:` shards without `allow_pipe=True`.
pub const ALLOW_PIPE_ENV: &str = "WEBLI_IO_ALLOW_PIPE";

/// May `pipe:` specs run? The caller's `allow_pipe`, or the environment switch.
pub fn pipe_allowed(allow_pipe: bool) -> bool {
    allow_pipe || std::env::var(ALLOW_PIPE_ENV).is_ok_and(|v| v == "1")
}

/// A local path as a shard name that can never be taken for a URL or a command: a file found by
/// a glob that is named `pipe:rm -rf ~;.tar` or `http:x.tar` becomes `./pipe:rm -rf ~;.tar`.
fn local_name(path: String) -> String {
    if is_remote(&path) {
        format!("./{path}")
    } else {
        path
    }
}

/// The names a folder's shard files end with (a folder given as a spec means these files in it).
pub const SHARD_SUFFIXES: [&str; 4] = [".tar", ".tar.gz", ".tgz", ".parquet"];

/// A file img2dataset writes beside its shards, which is not a shard: `00000_stats.json` (the
/// shard's download counts) and, beside a tar shard `00000.tar`, `00000.parquet` (that shard's
/// metadata without the images). A glob and a folder take neither (`out/*` is the whole output
/// of an img2dataset run); named one by one they are read as what they are.
pub fn is_side_file(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    if name.ends_with("_stats.json") {
        return true;
    }
    match name.strip_suffix(".parquet") {
        Some(stem) => [".tar", ".tar.gz", ".tgz"].iter().any(|ext| path.with_file_name(format!("{stem}{ext}")).is_file()),
        None => false,
    }
}

/// The shards of a folder, sorted: its regular files whose names end with one of
/// [`SHARD_SUFFIXES`], side files left out ([`is_side_file`]); not its subfolders.
fn folder_shards(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.to_string_lossy();
            p.is_file() && SHARD_SUFFIXES.iter().any(|s| name.ends_with(s)) && !is_side_file(p)
        })
        .map(|p| local_name(p.to_string_lossy().into_owned()))
        .collect();
    found.sort();
    found
}

/// Resolve shard specs to a list of existing shard paths, in the order given (globs sorted).
///
/// Every local path must exist: a training run that silently skips a missing shard has lost
/// data. Remote URLs are taken as given; one that cannot be read is counted when its turn comes.
/// A `pipe:` spec runs a shell command: only with `allow_pipe` (see [`pipe_allowed`]); names
/// found by a glob are always local paths, never URLs or commands.
pub fn resolve_shards(specs: &[String], allow_pipe: bool) -> Result<Vec<String>, SourceError> {
    let mut out = Vec::new();
    for spec in specs {
        let expanded = expand_braces(spec).map_err(|why| SourceError::BadPattern { spec: spec.clone(), why })?;
        for path in expanded {
            if path.starts_with("pipe:") && !pipe_allowed(allow_pipe) {
                return Err(SourceError::PipeNotAllowed { spec: path });
            }
            if is_remote(&path) {
                // Listing a bucket is not done here: give the names (brace patterns expand).
                out.push(path);
            } else if is_glob(&path) {
                let mut matched: Vec<String> = glob::glob(&path)
                    .map_err(|e| SourceError::BadPattern { spec: spec.clone(), why: e.to_string() })?
                    .filter_map(Result::ok)
                    .filter(|p| p.is_file() && !is_side_file(p))
                    .map(|p| local_name(p.to_string_lossy().into_owned()))
                    .collect();
                if matched.is_empty() {
                    return Err(SourceError::NoMatch { spec: path });
                }
                matched.sort();
                out.extend(matched);
            } else if Path::new(&path).is_file() {
                out.push(local_name(path));
            } else if Path::new(&path).is_dir() {
                let found = folder_shards(Path::new(&path));
                if found.is_empty() {
                    return Err(SourceError::EmptyFolder { path });
                }
                out.extend(found);
            } else if Path::new(&path).exists() {
                return Err(SourceError::NotAFile { path });
            } else {
                return Err(SourceError::Missing { path });
            }
        }
    }
    Ok(out)
}

/// Open a shard for streaming: a local file, or a remote URL (`http(s)://`, `s3://`, `gs://`,
/// `pipe:`; see `remote.rs`), read as it arrives and resumed where a connection drops.
pub fn open_shard(path: &str) -> std::io::Result<Box<dyn Read + Send>> {
    open_shard_counted(path, None).map(|(r, _)| r)
}

/// [`open_shard`], with a counter of the reconnections a remote shard needed; with a `cache`,
/// a remote shard is read from there when it holds it, and kept there once read whole.
pub fn open_shard_counted(path: &str, cache: Option<&Cache>) -> std::io::Result<(Box<dyn Read + Send>, Arc<AtomicU64>)> {
    let retries = Arc::new(AtomicU64::new(0));
    if is_remote(path) {
        if let Some(file) = cache.and_then(|c| c.get(path)) {
            return Ok((gunzip_if_gzip(BufReader::with_capacity(1 << 20, file))?, retries));
        }
        let remote = open_remote(path, RetryPolicy::from_env(), retries.clone())?;
        let remote: Box<dyn Read + Send> = match cache {
            // A cache that cannot be written to costs the cache, never the shard.
            Some(c) => match c.tee(path, remote) {
                Ok(t) => Box::new(t),
                Err(_) => Box::new(open_remote(path, RetryPolicy::from_env(), retries.clone())?),
            },
            None => Box::new(remote),
        };
        let mut r = BufReader::with_capacity(1 << 20, remote);
        // Connect now (with the retries), so that a shard that cannot be reached at all is
        // reported as unreadable, with the reason, not as an empty or truncated tar.
        r.fill_buf()?;
        return Ok((gunzip_if_gzip(r)?, retries));
    }
    let file = File::open(path)?;
    Ok((gunzip_if_gzip(BufReader::with_capacity(1 << 20, file))?, retries))
}

/// Bytes `start..end` of an uncompressed shard (`end`: None to its end), for a reader that seeks
/// by the shard index: a local file seeks, a cached remote shard too, an http(s) shard asks with
/// `Range`, an object-store shard with a ranged GET; `validator`: the ETag the shard index was
/// built from, on which every such read is conditional (`If-Match`). Not through the cache's tee (it keeps only
/// shards read whole); the counter tells the reconnections.
pub fn open_shard_at(
    path: &str,
    start: u64,
    end: Option<u64>,
    validator: Option<&str>,
    cache: Option<&Cache>,
) -> std::io::Result<(Box<dyn Read + Send>, Arc<AtomicU64>)> {
    use std::io::{Seek, SeekFrom};
    let retries = Arc::new(AtomicU64::new(0));
    let len = end.map_or(u64::MAX, |e| e.saturating_sub(start));
    let local = if is_remote(path) { cache.and_then(|c| c.get(path)) } else { Some(File::open(path)?) };
    if let Some(mut file) = local {
        file.seek(SeekFrom::Start(start))?;
        return Ok((Box::new(BufReader::with_capacity(1 << 16, file).take(len)), retries));
    }
    let validator = validator.map(str::to_string);
    let remote = crate::remote::open_remote_at(path, start, end, validator, RetryPolicy::from_env(), retries.clone())?;
    let mut r = BufReader::with_capacity(1 << 16, remote);
    r.fill_buf()?;
    Ok((Box::new(r), retries))
}

/// The stream itself, or its decompression when it starts with gzip's magic bytes (a `.tar.gz`
/// shard; found by content, not by name).
fn gunzip_if_gzip<R: BufRead + Send + 'static>(mut r: R) -> std::io::Result<Box<dyn Read + Send>> {
    if r.fill_buf()?.starts_with(&[0x1f, 0x8b]) {
        return Ok(Box::new(BufReader::with_capacity(1 << 20, flate2::bufread::MultiGzDecoder::new(r))));
    }
    Ok(Box::new(r))
}

/// Does the local file at `path` hold gzip-compressed data?
pub fn is_gzip(path: &str) -> bool {
    let mut magic = [0u8; 2];
    File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == [0x1f, 0x8b]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_numeric_ranges_with_padding() {
        let v = expand_braces("s-{000008..000011}.tar").unwrap();
        assert_eq!(v, ["s-000008.tar", "s-000009.tar", "s-000010.tar", "s-000011.tar"]);
        assert_eq!(expand_braces("{3..1}").unwrap(), ["3", "2", "1"]);
        assert_eq!(expand_braces("{9..10}").unwrap(), ["9", "10"]);
    }

    #[test]
    fn an_img2dataset_folder_gives_its_shards_not_its_side_files() {
        let dir = std::env::temp_dir().join(format!("webli-side-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in
            ["00000.tar", "00000.parquet", "00000_stats.json", "00001.tar", "00001.parquet", "00001_stats.json", "t.parquet", "notes.txt"]
        {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        let d = dir.to_string_lossy().into_owned();
        let names = |spec: String| -> Vec<String> {
            resolve_shards(&[spec], false).unwrap().iter().map(|p| p.rsplit('/').next().unwrap().to_string()).collect()
        };
        assert_eq!(names(d.clone()), ["00000.tar", "00001.tar", "t.parquet"]);
        assert_eq!(names(format!("{d}/*")), ["00000.tar", "00001.tar", "notes.txt", "t.parquet"], "a glob: only side files out");
        assert_eq!(names(format!("{d}/00000.parquet")), ["00000.parquet"], "named: read as what it is");
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let err = resolve_shards(&[empty.to_string_lossy().into_owned()], false).unwrap_err();
        assert!(matches!(err, SourceError::EmptyFolder { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn expands_lists_and_products() {
        let v = expand_braces("{a,b}/x-{0..1}.tar").unwrap();
        assert_eq!(v, ["a/x-0.tar", "a/x-1.tar", "b/x-0.tar", "b/x-1.tar"]);
        assert_eq!(expand_braces("plain.tar").unwrap(), ["plain.tar"]);
    }

    #[test]
    fn rejects_bad_patterns() {
        assert!(expand_braces("a-{0..x}.tar").is_err());
        assert!(expand_braces("a-{0..3.tar").is_err());
        assert!(expand_braces("a-{abc}.tar").is_err());
        assert!(expand_braces("a-{{0..1}}.tar").is_err());
        assert!(expand_braces("a-}.tar").is_err());
    }

    #[test]
    fn resolves_and_reports_missing() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3 {
            std::fs::write(dir.path().join(format!("s-{i:02}.tar")), b"").unwrap();
        }
        let d = dir.path().to_string_lossy();
        let got = resolve_shards(&[format!("{d}/s-{{00..02}}.tar")], false).unwrap();
        assert_eq!(got.len(), 3);
        let got = resolve_shards(&[format!("{d}/s-*.tar")], false).unwrap();
        assert_eq!(got.len(), 3);
        assert!(got[0].ends_with("s-00.tar") && got[2].ends_with("s-02.tar"));
        let err = resolve_shards(&[format!("{d}/s-{{00..03}}.tar")], false).unwrap_err();
        assert!(matches!(err, SourceError::Missing { ref path } if path.ends_with("s-03.tar")));
        assert!(err.to_string().contains("s-03.tar"));
        let err = resolve_shards(&[format!("{d}/none-*.tar")], false).unwrap_err();
        assert!(matches!(err, SourceError::NoMatch { .. }));
    }
}
