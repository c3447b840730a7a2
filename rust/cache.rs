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

use std::fs::{self, File};
use std::io::{self, Read, Write};
#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;
use std::time::SystemTime;

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

    /// The cache file of `url`: a hash (unique) and the URL's last part (for people).
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
        self.dir.join(format!("{:016x}-{base}", xxhash_rust::xxh3::xxh3_64(url.as_bytes())))
    }

    /// The cached copy of `url`, opened (and marked as just used), if there is one.
    pub fn get(&self, url: &str) -> Option<File> {
        let file = File::open(self.path_for(url)).ok()?;
        let _ = file.set_modified(SystemTime::now());
        Some(file)
    }

    /// `remote`, with what is read from it written to the cache as it goes.
    pub fn tee<R: Read>(&self, url: &str, remote: R) -> io::Result<Tee<R>> {
        fs::create_dir_all(&self.dir)?;
        let final_path = self.path_for(url);
        let name = final_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let nonce = xxhash_rust::xxh3::xxh3_64(format!("{:?}{:?}", std::time::Instant::now(), std::thread::current().id()).as_bytes());
        let tmp = self.dir.join(format!(".partial-{}-{nonce:x}-{name}", std::process::id()));
        let file = File::create(&tmp)?;
        Ok(Tee { inner: remote, file: Some(file), tmp, final_path, cache: self.clone(), at_end: false })
    }

    /// Remove the least recently used files until the folder holds at most `max_bytes`.
    fn evict(&self) {
        let Some(max) = self.max_bytes else { return };
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with(".partial-"))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                m.is_file().then(|| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= max {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }
}

/// A reader that copies what it reads into a cache file, kept when the end is reached.
pub struct Tee<R: Read> {
    inner: R,
    file: Option<File>,
    tmp: PathBuf,
    final_path: PathBuf,
    cache: Cache,
    at_end: bool,
}

impl<R: Read> Tee<R> {
    fn finish(&mut self) {
        let Some(mut file) = self.file.take() else { return };
        let kept = self.at_end && file.flush().is_ok() && fs::rename(&self.tmp, &self.final_path).is_ok();
        if kept {
            self.cache.evict();
        } else {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.at_end = true;
        }
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

impl<R: Read> Drop for Tee<R> {
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
        let cache = Cache::new(dir.path(), None);
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut t = cache.tee("s3://b/x.tar", &data[..]).unwrap();
        let mut head = vec![0u8; 1000];
        t.read_exact(&mut head).unwrap();
        drop(t); // within the drain limit: read on to the end, and kept
        assert_eq!(fs::read(cache.path_for("s3://b/x.tar")).unwrap(), data);
        let big: Vec<u8> = vec![7u8; (DRAIN_LIMIT * 3) as usize];
        let mut t = cache.tee("s3://b/big.tar", &big[..]).unwrap();
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
            io::copy(&mut cache.tee(name, &[1u8; 100][..]).unwrap(), &mut io::sink()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(cache.get("a").is_some()); // a is now the most recent
        std::thread::sleep(std::time::Duration::from_millis(20));
        io::copy(&mut cache.tee("c", &[1u8; 100][..]).unwrap(), &mut io::sink()).unwrap();
        assert!(cache.get("b").is_none(), "b was the least recently used");
        assert!(cache.get("a").is_some() && cache.get("c").is_some());
    }
}
