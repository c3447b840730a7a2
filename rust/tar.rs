//! Tar shard → raw samples: members grouped by key, as webdataset groups them.
//!
//! A member `dir/abc.seg.jpg` has key `dir/abc` and extension `seg.jpg` (the key ends at the first
//! dot of the file name, webdataset's rule); consecutive members with the same key form one
//! sample. Reading stops at the first damaged header or short member: the samples before it are
//! kept, the damaged one is dropped, and the shard is counted as truncated or corrupt.

use std::io::Read;

use crate::stats::{Counter, Stats};

/// The members of one sample, as read from the shard: `(extension, bytes)` pairs.
#[derive(Debug, Clone, Default)]
pub struct RawSample {
    pub key: String,
    /// Extensions are lower-cased (`JPG` → `jpg`).
    pub members: Vec<(String, Vec<u8>)>,
    /// Set when a member was skipped (and counted): the sample is not emitted.
    pub skipped: bool,
}

impl RawSample {
    pub fn get(&self, ext: &str) -> Option<&[u8]> {
        self.members.iter().find(|(e, _)| e == ext).map(|(_, b)| b.as_slice())
    }
}

/// Split a member path into `(key, extension)` by webdataset's rule; `None` for names with no
/// extension and for webdataset's own `__key__`-style entries.
pub fn split_key(path: &str) -> Option<(&str, &str)> {
    let name_start = path.rfind('/').map_or(0, |i| i + 1);
    let name = &path[name_start..];
    if name.starts_with("__") || name.starts_with('.') {
        return None;
    }
    let dot = name.find('.')?;
    let ext = &name[dot + 1..];
    if ext.is_empty() {
        return None;
    }
    Some((&path[..name_start + dot], ext))
}

/// Members larger than this are skipped (counted), so one absurd member cannot exhaust memory.
pub use crate::config::DEFAULT_MAX_MEMBER_BYTES;

/// Read all samples of one tar stream, calling `emit` for each, in shard order. Returns when the
/// shard ends, is damaged, or `emit` returns `false` (the consumer has gone away).
pub fn read_samples<R: Read>(reader: R, shard: &str, max_member_bytes: u64, stats: &Stats, mut emit: impl FnMut(RawSample) -> bool) {
    let mut archive = ::tar::Archive::new(reader);
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => {
            stats.problem(Counter::UnreadableShard, shard, "", e.to_string());
            return;
        }
    };
    let mut current = RawSample::default();
    let mut flush = |current: &mut RawSample, stats: &Stats| -> bool {
        if current.members.is_empty() && !current.skipped {
            return true;
        }
        stats.incr(Counter::SamplesRead);
        let sample = std::mem::take(current);
        if sample.skipped {
            return true;
        }
        emit(sample)
    };
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                // A short or garbage header. The tar crate reports both as errors; an
                // unexpected EOF is a truncated shard, anything else a corrupt one.
                let counter = if is_eof(&e) { Counter::TruncatedTar } else { Counter::CorruptTar };
                stats.problem(counter, shard, &current.key, e.to_string());
                // The pending sample was complete (its members all read in full): keep it.
                flush(&mut current, stats);
                return;
            }
        };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = match entry.path() {
            Ok(p) => p.to_string_lossy().into_owned(),
            Err(_) => String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
        };
        let Some((key, ext)) = split_key(&path) else { continue };
        let (key, ext) = (key.to_string(), ext.to_ascii_lowercase());
        if key != current.key && !flush(&mut current, stats) {
            return;
        }
        current.key = key;
        let size = entry.size();
        if size > max_member_bytes {
            stats.problem(
                Counter::MemberTooLarge,
                shard,
                &current.key,
                format!("member {path:?} has {size} bytes (limit {max_member_bytes})"),
            );
            // Skip the whole sample: its other members are useless without this one.
            current.skipped = true;
            continue;
        }
        let mut data = Vec::with_capacity(size as usize);
        let read = entry.read_to_end(&mut data);
        if read.is_err() || (data.len() as u64) < size {
            // The shard ends inside this member: drop the partial sample.
            let why = match read {
                Err(e) => e.to_string(),
                Ok(_) => format!("member {path:?} cut at {} of {size} bytes", data.len()),
            };
            stats.problem(Counter::TruncatedTar, shard, &current.key, why);
            return;
        }
        current.members.push((ext, data));
    }
    flush(&mut current, stats);
}

/// Count the samples (member groups) of a local tar shard from its headers alone, seeking over
/// the data. Stops quietly at a damaged header (the stream will count the damage when it reads).
pub fn count_samples(path: &str) -> std::io::Result<u64> {
    let file = std::fs::File::open(path)?;
    let mut archive = ::tar::Archive::new(std::io::BufReader::new(file));
    let mut count = 0u64;
    let mut last = String::new();
    for entry in archive.entries_with_seek()? {
        let Ok(entry) = entry else { break };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if let Some((key, _)) = split_key(&path) {
            if key != last {
                count += 1;
                last = key.to_string();
            }
        }
    }
    Ok(count)
}

fn is_eof(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::UnexpectedEof
        || e.to_string().contains("unexpected EOF")
        || e.to_string().contains("failed to read entire block")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Write a tar with the given `(name, bytes)` members, as webdataset's TarWriter does.
    pub(crate) fn make_tar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = ::tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = ::tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn read_all(bytes: &[u8]) -> (Vec<RawSample>, Stats) {
        let stats = Stats::new();
        let mut out = Vec::new();
        read_samples(bytes, "t.tar", DEFAULT_MAX_MEMBER_BYTES, &stats, |s| {
            out.push(s);
            true
        });
        (out, stats)
    }

    #[test]
    fn splits_keys_like_webdataset() {
        assert_eq!(split_key("a/b/000001.jpg"), Some(("a/b/000001", "jpg")));
        assert_eq!(split_key("x.seg.png"), Some(("x", "seg.png")));
        assert_eq!(split_key("a.b/c.txt"), Some(("a.b/c", "txt")));
        assert_eq!(split_key("noext"), None);
        assert_eq!(split_key("__key__"), None);
    }

    #[test]
    fn groups_consecutive_members() {
        let t =
            make_tar(&[("0001.jpg", b"img1"), ("0001.txt", b"cap1"), ("0001.json", b"{}"), ("0002.JPG", b"img2"), ("0002.txt", b"cap2")]);
        let (s, stats) = read_all(&t);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].key, "0001");
        assert_eq!(s[0].members.len(), 3);
        assert_eq!(s[1].get("jpg"), Some(&b"img2"[..]));
        assert_eq!(stats.get(Counter::SamplesRead), 2);
    }

    #[test]
    fn truncated_tar_keeps_earlier_samples() {
        let big = vec![7u8; 5000];
        let t = make_tar(&[("a.txt", b"x"), ("a.jpg", b"y"), ("b.txt", b"z"), ("b.jpg", &big)]);
        for cut in [t.len() - 1024 - 300, 512 * 5 + 10, 512 * 4 + 100] {
            let (s, stats) = read_all(&t[..cut]);
            // `a` is whole; `b` is kept only with the members read in full (never its cut jpg),
            // and the sample rules then count it as missing its image.
            assert_eq!(s[0].key, "a", "cut at {cut}");
            assert_eq!(s[0].members.len(), 2);
            assert!(s.len() == 1 || (s.len() == 2 && s[1].get("jpg").is_none()), "cut at {cut}");
            assert_eq!(stats.get(Counter::TruncatedTar), 1, "cut at {cut}");
        }
    }

    #[test]
    fn garbage_header_is_corrupt() {
        let mut t = make_tar(&[("a.txt", b"x"), ("a.jpg", b"y"), ("b.txt", b"z")]);
        // Overwrite the third header (after two 1-block members) with garbage.
        for byte in &mut t[2048..2048 + 512] {
            *byte = 0x5a;
        }
        let (s, stats) = read_all(&t);
        assert_eq!(s.len(), 1);
        assert_eq!(stats.get(Counter::CorruptTar), 1);
    }

    #[test]
    fn counts_samples_from_headers() {
        let t = make_tar(&[("a.jpg", &[1u8; 3000]), ("a.txt", b"x"), ("b.jpg", b"y"), ("c.txt", b"z"), ("c.json", b"{}")]);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.tar");
        std::fs::write(&p, &t).unwrap();
        assert_eq!(count_samples(p.to_str().unwrap()).unwrap(), 3);
        std::fs::write(&p, &t[..1024]).unwrap();
        assert_eq!(count_samples(p.to_str().unwrap()).unwrap(), 1);
    }

    #[test]
    fn oversized_member_is_skipped() {
        let t = make_tar(&[("a.txt", b"x"), ("a.jpg", &[1u8; 2000]), ("b.txt", b"z"), ("b.jpg", b"j")]);
        let stats = Stats::new();
        let mut out = Vec::new();
        read_samples(&t[..], "t.tar", 1000, &stats, |s| {
            out.push(s);
            true
        });
        assert_eq!(stats.get(Counter::MemberTooLarge), 1);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key, "b");
        assert_eq!(out[0].get("jpg"), Some(&b"j"[..]));
    }
}
