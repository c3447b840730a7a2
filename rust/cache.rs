//! A local cache of remote shards (`cache_dir=`): a remote shard read to its end is kept as a
//! file, and later reads of it (the next epoch, another run, another worker) open that file
//! instead of the network. Bounded by `cache_max_bytes`: after each new file, the least recently
//! used ones are removed until the folder fits.
//!
//! The bytes kept are the bytes served (a `.tar.gz` stays compressed). A file appears under its
//! final name only once complete (written as `.partial-…`, then renamed), so a reader never
//! opens half a shard, and processes sharing the folder need no lock: the last rename wins, and
//! both copies were the same bytes. Written by hand: no crate caches a streamed read this way
//! (object stores' caches work on whole objects or ranges, not a stream being read).
//!
//! The folder is the cache's own: a folder that already holds other files is refused (the
//! stream's construction says so), the marker `.webli-io-cache` says it is one, and eviction
//! removes only the cache's own entries (`<16 hex digits>-<name>`, their sidecars, and partial
//! files of processes that are gone), never a file it did not write. Nothing in it is trusted
//! blindly: a shard is kept only when its length is known and all of it was read (a body
//! without `Content-Length` cut short is not "whole"), its sidecar `.<entry>.meta` records its
//! length and xxh3 hash, and a cached copy whose length or hash no longer matches is removed and
//! read from the network again. The key is the URL without its signature (a presigned URL's
//! changing query is one entry) plus the endpoint it is read from (staging and production are
//! two). Without `cache_max_bytes` the cache keeps a tenth of its disk free.

use std::fs::{self, File};
use std::io::{self, Read, Write};
#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;
use std::time::SystemTime;

/// The file that marks a folder as a webli-io cache.
pub const MARKER: &str = ".webli-io-cache";
/// A partial file older than this, or of a process that is gone, is a killed run's: removed.
const STALE_PARTIAL: std::time::Duration = std::time::Duration::from_secs(3600);
/// Without `cache_max_bytes`, eviction keeps at least this share of the disk free.
const KEEP_FREE: f64 = 0.10;
/// Query parameters that sign a URL rather than name an object (S3 presigned, GCS signed, Azure
/// SAS): left out of the cache key.
const SIGNATURE_PARAMS: [&str; 16] = [
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-date",
    "x-amz-expires",
    "x-amz-security-token",
    "x-amz-signedheaders",
    "x-amz-algorithm",
    "x-goog-signature",
    "x-goog-credential",
    "x-goog-date",
    "x-goog-expires",
    "x-goog-signedheaders",
    "x-goog-algorithm",
    "signature",
    "expires",
    "sig",
];

/// Is a folder entry one of the cache's own (an entry, its sidecar, a partial file, the marker)?
pub fn is_own_name(name: &str) -> bool {
    let entry = name.strip_prefix('.').and_then(|n| n.strip_suffix(".meta")).unwrap_or(name);
    let hex16 = |n: &str| n.len() > 17 && n.as_bytes()[16] == b'-' && n[..16].bytes().all(|b| b.is_ascii_hexdigit());
    name == MARKER || name.starts_with(".partial-") || hex16(entry)
}

/// Can `dir` be used as a cache: missing, empty, marked, or holding only the cache's own names?
/// Else why not (a folder of the user's files, whose oldest ones eviction would remove).
pub fn check_dir(dir: &std::path::Path) -> Result<(), String> {
    let Ok(entries) = fs::read_dir(dir) else { return Ok(()) };
    if dir.join(MARKER).exists() {
        return Ok(());
    }
    let foreign: Vec<String> =
        entries.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| !is_own_name(n)).take(3).collect();
    if foreign.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} is not a webli-io cache and holds other files ({}): its oldest files would be removed to make room; give an empty or new folder",
        dir.display(),
        foreign.join(", ")
    ))
}

/// The URL as the cache keys it: without the query parameters that only sign it.
fn key_of(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else { return url.to_string() };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| {
            let k = kv.split('=').next().unwrap_or("").to_ascii_lowercase();
            !SIGNATURE_PARAMS.contains(&k.as_str()) && !matches!(k.as_str(), "se" | "sp" | "sv" | "sr" | "st" | "skoid" | "sktid" | "spr")
        })
        .collect();
    if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// Where an object-store URL is read from, when the environment points it elsewhere.
fn endpoint_of(url: &str) -> String {
    let vars: &[&str] = if url.starts_with("s3://") {
        &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
    } else if url.starts_with("gs://") {
        &["STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_STORAGE_ENDPOINT"]
    } else if url.starts_with("az://") || url.starts_with("abfs") {
        &["AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ENDPOINT"]
    } else {
        &[]
    };
    vars.iter().filter_map(|v| std::env::var(v).ok()).collect::<Vec<_>>().join("|")
}

fn hash_file(file: &mut File) -> io::Result<u64> {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(h.digest());
        }
        h.update(&buf[..n]);
    }
}

/// What a kept entry's sidecar records.
fn sidecar_of(path: &std::path::Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.meta"))
}

/// The length of a body as its server announced it (None: not known).
pub trait BodyLen {
    fn body_len(&self) -> Option<u64>;
}

impl<T: AsRef<[u8]>> BodyLen for io::Cursor<T> {
    fn body_len(&self) -> Option<u64> {
        Some(self.get_ref().as_ref().len() as u64)
    }
}

/// Bytes read past the tar's end-of-archive to reach the end of the object (tar writers pad to
/// a 10 KiB record); a reader dropped further from the end leaves nothing in the cache.
const DRAIN_LIMIT: u64 = 1 << 20;

#[derive(Clone, Debug)]
pub struct Cache {
    dir: PathBuf,
    max_bytes: Option<u64>,
}

impl Cache {
    pub fn new(dir: impl Into<PathBuf>, max_bytes: Option<u64>) -> Self {
        Self { dir: dir.into(), max_bytes }
    }

    /// The cache file of `url`: a hash of its key and endpoint (unique) and the URL's last part
    /// (for people).
    pub fn path_for(&self, url: &str) -> PathBuf {
        let base: String = url
            .rsplit('/')
            .next()
            .unwrap_or("")
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
            .take(80)
            .collect();
        let key = format!("{}\n{}", key_of(url), endpoint_of(url));
        self.dir.join(format!("{:016x}-{base}", xxhash_rust::xxh3::xxh3_64(key.as_bytes())))
    }

    /// The cached copy of `url`, opened (and marked as just used), if there is one and it is
    /// still the bytes that were kept (length and hash, from its sidecar); a copy that is not is
    /// removed, and the shard is read from the network.
    pub fn get(&self, url: &str) -> Option<File> {
        use std::io::{Seek, SeekFrom};
        let path = self.path_for(url);
        let mut file = File::open(&path).ok()?;
        let meta: serde_json::Value = fs::read(sidecar_of(&path)).ok().and_then(|b| serde_json::from_slice(&b).ok())?;
        let (len, hash) = (meta.get("len").and_then(|v| v.as_u64()), meta.get("hash").and_then(|v| v.as_str()).map(str::to_string));
        let whole = file.metadata().ok().map(|m| m.len()) == len
            && hash_file(&mut file).ok().map(|h| format!("{h:016x}")) == hash
            && file.seek(SeekFrom::Start(0)).is_ok();
        if !whole {
            let _ = fs::remove_file(&path);
            let _ = fs::remove_file(sidecar_of(&path));
            return None;
        }
        let _ = file.set_modified(SystemTime::now());
        Some(file)
    }

    /// `remote`, with what is read from it written to the cache as it goes.
    pub fn tee<R: Read + BodyLen>(&self, url: &str, remote: R) -> io::Result<Tee<R>> {
        fs::create_dir_all(&self.dir)?;
        check_dir(&self.dir).map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e))?;
        if !self.dir.join(MARKER).exists() {
            fs::write(self.dir.join(MARKER), b"A webli-io cache of remote shards (cache_dir=): its files are removed as it needs.\n")?;
        }
        let final_path = self.path_for(url);
        let name = final_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let nonce = xxhash_rust::xxh3::xxh3_64(format!("{:?}{:?}", std::time::Instant::now(), std::thread::current().id()).as_bytes());
        let tmp = self.dir.join(format!(".partial-{}-{nonce:x}-{name}", std::process::id()));
        let file = fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        Ok(Tee {
            inner: remote,
            file: Some(file),
            tmp,
            final_path,
            cache: self.clone(),
            at_end: false,
            written: 0,
            hash: Default::default(),
        })
    }

    /// Remove the least recently used entries until the folder holds at most `max_bytes` of
    /// shards (without it: until a tenth of the disk is free), and the partial files of runs that
    /// were killed. Only the cache's own names are ever removed.
    fn evict(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(m) = e.metadata() else { continue };
            if !m.is_file() || !is_own_name(&name) || name == MARKER || (name.starts_with('.') && name.ends_with(".meta")) {
                continue;
            }
            let modified = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if name.starts_with(".partial-") {
                if stale_partial(&name, modified) {
                    let _ = fs::remove_file(e.path());
                }
                continue;
            }
            files.push((modified, m.len(), e.path()));
        }
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        for (_, len, path) in files {
            let over = match self.max_bytes {
                Some(max) => total > max,
                None => free_share(&self.dir).is_some_and(|f| f < KEEP_FREE),
            };
            if !over {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                let _ = fs::remove_file(sidecar_of(&path));
                total -= len;
            }
        }
    }
}

/// A partial file of a process that is gone, or older than an hour: a killed run's.
fn stale_partial(name: &str, modified: SystemTime) -> bool {
    let old = modified.elapsed().is_ok_and(|age| age > STALE_PARTIAL);
    let pid: Option<i32> = name.strip_prefix(".partial-").and_then(|r| r.split('-').next()).and_then(|p| p.parse().ok());
    // SAFETY: kill with signal 0 only asks whether the process exists; it sends nothing.
    let gone =
        pid.is_some_and(|p| p > 0 && unsafe { libc::kill(p, 0) } != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH));
    old || gone
}

/// The share of the cache's disk that is free.
fn free_share(dir: &std::path::Path) -> Option<f64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: a valid NUL-terminated path and a zeroed statvfs the call fills in.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 || st.f_blocks == 0 {
        return None;
    }
    Some(st.f_bavail as f64 / st.f_blocks as f64)
}

/// A reader that copies what it reads into a cache file, kept when the end is reached and all
/// of the announced length was read.
pub struct Tee<R: Read + BodyLen> {
    inner: R,
    file: Option<File>,
    tmp: PathBuf,
    final_path: PathBuf,
    cache: Cache,
    at_end: bool,
    written: u64,
    hash: xxhash_rust::xxh3::Xxh3,
}

impl<R: Read + BodyLen> Tee<R> {
    fn finish(&mut self) {
        let Some(mut file) = self.file.take() else { return };
        // Only a body whose length was announced and read to it: without Content-Length a cut
        // connection looks like an end, and half a shard would be kept as whole.
        let whole = self.at_end && self.inner.body_len() == Some(self.written);
        let meta = serde_json::json!({"len": self.written, "hash": format!("{:016x}", self.hash.digest())});
        let side = sidecar_of(&self.final_path);
        let side_tmp = self.tmp.with_extension("meta-partial");
        let kept = whole
            && file.flush().is_ok()
            && fs::write(&side_tmp, meta.to_string()).is_ok()
            && fs::rename(&self.tmp, &self.final_path).is_ok()
            && fs::rename(&side_tmp, &side).is_ok();
        if kept {
            self.cache.evict();
        } else {
            let _ = fs::remove_file(&self.tmp);
            let _ = fs::remove_file(&side_tmp);
        }
    }
}

impl<R: Read + BodyLen> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.at_end = true;
        }
        self.written += n as u64;
        self.hash.update(&buf[..n]);
        if let Some(f) = self.file.as_mut() {
            if f.write_all(&buf[..n]).is_err() {
                // A full disk costs the cache, never the stream.
                self.file = None;
                let _ = fs::remove_file(&self.tmp);
            }
        }
        Ok(n)
    }
}

impl<R: Read + BodyLen> Drop for Tee<R> {
    fn drop(&mut self) {
        if self.file.is_some() && !self.at_end {
            // The tar reader stops at the end-of-archive blocks; the object's end (padding) is
            // a few KiB further: read it, so that a whole shard is kept.
            let mut sink = [0u8; 64 << 10];
            let mut drained = 0u64;
            while drained < DRAIN_LIMIT {
                match self.read(&mut sink) {
                    Ok(0) => break,
                    Ok(n) => drained += n as u64,
                    Err(_) => break,
                }
            }
        }
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_partial(path: &Path) -> bool {
        path.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".partial-"))
    }

    #[test]
    fn a_stream_read_to_its_end_is_kept_and_one_cut_short_is_not() {
        let dir = tempfile::tempdir().unwrap();
        // A bound of its own: without one, eviction keeps a tenth of the disk free, and on a
        // machine whose disk is fuller than that the cache rightly keeps nothing.
        let cache = Cache::new(dir.path(), Some(1 << 40));
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut t = cache.tee("s3://b/x.tar", io::Cursor::new(&data[..])).unwrap();
        let mut head = vec![0u8; 1000];
        t.read_exact(&mut head).unwrap();
        drop(t); // within the drain limit: read on to the end, and kept
        assert_eq!(fs::read(cache.path_for("s3://b/x.tar")).unwrap(), data);
        let big: Vec<u8> = vec![7u8; (DRAIN_LIMIT * 3) as usize];
        let mut t = cache.tee("s3://b/big.tar", io::Cursor::new(&big[..])).unwrap();
        t.read_exact(&mut head).unwrap();
        drop(t); // too far from the end: nothing kept, no partial file left
        assert!(cache.get("s3://b/big.tar").is_none());
        assert!(fs::read_dir(dir.path()).unwrap().all(|e| !is_partial(&e.unwrap().path())));
    }

    #[test]
    fn the_limit_removes_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path(), Some(250));
        for name in ["a", "b"] {
            io::copy(&mut cache.tee(name, io::Cursor::new([1u8; 100])).unwrap(), &mut io::sink()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(cache.get("a").is_some()); // a is now the most recent
        std::thread::sleep(std::time::Duration::from_millis(20));
        io::copy(&mut cache.tee("c", io::Cursor::new([1u8; 100])).unwrap(), &mut io::sink()).unwrap();
        assert!(cache.get("b").is_none(), "b was the least recently used");
        assert!(cache.get("a").is_some() && cache.get("c").is_some());
    }

    #[test]
    fn only_its_own_names_and_a_body_of_unknown_length_is_not_kept() {
        assert!(is_own_name("0123456789abcdef-shard.tar") && is_own_name(".0123456789abcdef-shard.tar.meta"));
        assert!(is_own_name(MARKER) && is_own_name(".partial-1-2-x"));
        assert!(!is_own_name("notes.txt") && !is_own_name("model.pt") && !is_own_name("0123-x"));
        assert_eq!(key_of("https://h/s.tar?X-Amz-Signature=1&X-Amz-Date=2&versionId=7"), "https://h/s.tar?versionId=7");
        struct Unknown(io::Cursor<Vec<u8>>);
        impl Read for Unknown {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                self.0.read(b)
            }
        }
        impl BodyLen for Unknown {
            fn body_len(&self) -> Option<u64> {
                None
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path(), Some(1 << 40));
        io::copy(&mut cache.tee("u", Unknown(io::Cursor::new(vec![1u8; 100]))).unwrap(), &mut io::sink()).unwrap();
        assert!(cache.get("u").is_none(), "no announced length: never kept as whole");
        let user = tempfile::tempdir().unwrap();
        fs::write(user.path().join("notes.txt"), b"mine").unwrap();
        assert!(check_dir(user.path()).is_err() && Cache::new(user.path(), Some(1)).tee("x", io::Cursor::new([0u8; 4])).is_err());
    }
}
