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
    /// Where the sample starts in the shard: the byte after the previous sample's last member
    /// (so any header of its own, a long-name or pax header included, lies inside), and where
    /// it ends (its last member's data, padded to the 512-byte block). What the shard index
    /// records, so that a reader can seek to a sample and read it alone.
    pub offset: u64,
    pub end: u64,
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
pub fn read_samples<R: Read>(reader: R, shard: &str, max_member_bytes: u64, stats: &Stats, emit: impl FnMut(RawSample) -> bool) {
    read_samples_from(reader, 0, shard, max_member_bytes, stats, emit)
}

/// [`read_samples`] of a reader that starts at byte `base` of the shard (a seek to a sample's
/// offset, from the shard index): the offsets the samples carry are the shard's.
pub fn read_samples_from<R: Read>(
    reader: R,
    base: u64,
    shard: &str,
    max_member_bytes: u64,
    stats: &Stats,
    mut emit: impl FnMut(RawSample) -> bool,
) {
    let mut tracked = EndTracker { inner: reader, bytes: 0, tail: [0xff; 512], filled: 0 };
    let Some((last, last_end)) = read_entries(&mut tracked, base, shard, max_member_bytes, stats, &mut emit) else { return };
    // The archive ended without an error: a whole tar ends with a zero block. Without one the
    // file was cut at a header boundary (or is empty): the rest is lost, and the last sample
    // may be missing members (its json, say), so it is left out too, and named.
    let pending = !last.members.is_empty() || last.skipped;
    if pending {
        stats.incr(Counter::SamplesRead);
    }
    let dropped = if pending && !last.skipped {
        format!("; its last sample {:?} may be incomplete and is left out", last.key)
    } else {
        String::new()
    };
    if tracked.bytes == 0 {
        stats.problem(Counter::TruncatedTar, shard, "", "the shard is empty (0 bytes)");
    } else if !tracked.ended_with_zero_block() || tracked.bytes < last_end - base + 512 {
        // No zero block, or the zeros are the last member's own data (a file cut right after
        // a member that ends in 512 zero bytes): the end-of-archive block comes after it.
        let at = tracked.bytes;
        stats.problem(
            Counter::TruncatedTar,
            shard,
            &last.key,
            format!("the shard ends at byte {at} without the tar end-of-archive blocks{dropped}"),
        );
    } else if pending && !last.skipped {
        emit(last);
    }
}

/// A reader that remembers how many bytes it gave and the last 512 of them, to tell a tar that
/// ended with its end-of-archive zero block from one cut at a header boundary.
struct EndTracker<R> {
    inner: R,
    bytes: u64,
    tail: [u8; 512],
    filled: usize,
}

impl<R: Read> Read for EndTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        let got = &buf[..n];
        if got.len() >= 512 {
            self.tail.copy_from_slice(&got[got.len() - 512..]);
        } else {
            self.tail.rotate_left(got.len());
            self.tail[512 - got.len()..].copy_from_slice(got);
        }
        self.filled = (self.filled + n).min(512);
        Ok(n)
    }
}

impl<R> EndTracker<R> {
    fn ended_with_zero_block(&self) -> bool {
        self.filled == 512 && self.tail.iter().all(|&b| b == 0)
    }
}

/// The entries of a tar, grouped into samples and emitted, but for the last one: it is returned,
/// with the end of the last member read (a shard offset), when the archive ended without an
/// error and the consumer is still there (`None` otherwise).
fn read_entries<R: Read>(
    reader: R,
    base: u64,
    shard: &str,
    max_member_bytes: u64,
    stats: &Stats,
    emit: &mut impl FnMut(RawSample) -> bool,
) -> Option<(RawSample, u64)> {
    let mut archive = ::tar::Archive::new(reader);
    // Raw entries: the tar crate would read a GNU long-name or pax header whole into memory,
    // however many bytes it claims (an 8 GiB claim grew a reader to GBs before the first
    // sample). Here each such header is bounded by `MAX_HEADER_BYTES` before it is read, and
    // applied to the next member as the crate would apply it.
    let entries = match archive.entries() {
        Ok(e) => e.raw(true),
        Err(e) => {
            stats.problem(Counter::UnreadableShard, shard, "", e.to_string());
            return None;
        }
    };
    // Bytes held by the sample being grouped: one key with endless members cannot grow without
    // bound (the sample is skipped past `max_member_bytes` in all).
    let mut held = 0u64;
    let mut current = RawSample { offset: base, end: base, ..Default::default() };
    // The end of the last member read, of any sample: where the next sample starts.
    let mut last_end = base;
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
    // What the extension headers before a member said of it (long name, pax path and size).
    let mut pending = Extensions::default();
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                // A short or garbage header. The tar crate reports both as errors; an
                // unexpected EOF is a truncated shard, anything else a corrupt one.
                let counter = if crate::remote::is_changed(&e) {
                    Counter::ShardChanged
                } else if is_eof(&e) {
                    Counter::TruncatedTar
                } else {
                    Counter::CorruptTar
                };
                damaged(stats, shard, &current, counter, e.to_string());
                return None;
            }
        };
        let kind = entry.header().entry_type();
        if let Some(what) = extension_kind(kind) {
            let size = entry.size();
            if size > MAX_HEADER_BYTES {
                let why = format!("a {what} header claims {size} bytes (limit {MAX_HEADER_BYTES}): refused unread");
                damaged(stats, shard, &current, Counter::CorruptTar, why);
                return None;
            }
            if !(kind.is_gnu_longname() || kind.is_pax_local_extensions()) {
                continue; // a long link name or a global pax header: skipped, never held
            }
            let mut data = Vec::with_capacity(size as usize);
            if let Err(e) = entry.read_to_end(&mut data) {
                damaged(stats, shard, &current, Counter::TruncatedTar, e.to_string());
                return None;
            }
            if let Err(why) = pending.add(kind, data, size) {
                damaged(stats, shard, &current, Counter::CorruptTar, why);
                return None;
            }
            continue;
        }
        let ext = std::mem::take(&mut pending);
        if let Some(claimed) = ext.size.filter(|&s| s != entry.size()) {
            // Two sizes for one member: parsers that trust either would see different archives.
            let why = format!("a pax header gives {claimed} bytes for a member whose header says {}", entry.size());
            damaged(stats, shard, &current, Counter::CorruptTar, why);
            return None;
        }
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = match ext.path {
            Some(p) => String::from_utf8_lossy(&p).into_owned(),
            None => String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
        };
        let Some((key, ext)) = split_key(&path) else { continue };
        let (key, ext) = (key.to_string(), ext.to_ascii_lowercase());
        if key != current.key {
            if !flush(&mut current, stats) {
                return None;
            }
            held = 0;
            current.offset = last_end;
        }
        current.key = key;
        let size = entry.size();
        last_end = base + entry.raw_file_position() + size.div_ceil(512) * 512;
        current.end = last_end;
        if current.skipped {
            continue; // the rest of a sample already skipped: not held in memory
        }
        if current.members.iter().any(|(e, _)| *e == ext) {
            // `img.0001.jpg`, `img.0002.jpg`, ...: webdataset's key rule puts them all under key
            // `img`. The first is kept; each repeat is counted, never dropped silently.
            stats.problem(Counter::RepeatedMember, shard, &current.key, format!("member {path:?}: a second .{ext} for this key"));
            continue;
        }
        held += size;
        if size > max_member_bytes || held > max_member_bytes {
            stats.problem(
                Counter::MemberTooLarge,
                shard,
                &current.key,
                format!("member {path:?} has {size} bytes, its sample {held} (limit {max_member_bytes})"),
            );
            // Skip the whole sample: its other members are useless without this one.
            current.skipped = true;
            current.members.clear();
            continue;
        }
        let mut data = Vec::with_capacity(size as usize);
        let read = entry.read_to_end(&mut data);
        if read.is_err() || (data.len() as u64) < size {
            // The shard ends inside this member: drop the partial sample.
            let (counter, why) = match read {
                Err(e) if crate::remote::is_changed(&e) => (Counter::ShardChanged, e.to_string()),
                Err(e) => (Counter::TruncatedTar, e.to_string()),
                Ok(_) => (Counter::TruncatedTar, format!("member {path:?} cut at {} of {size} bytes", data.len())),
            };
            stats.problem(counter, shard, &current.key, why);
            return None;
        }
        // `KEY.txt.gz`: webdataset's convention for a compressed member; the sample sees it as
        // `KEY.txt`, decompressed (bounded by what is left of the sample's allowance).
        let (ext, data) = match ext.strip_suffix(".gz") {
            Some(inner) if !inner.is_empty() => match gunzip_member(&data, max_member_bytes.saturating_sub(held - size)) {
                Ok(plain) => {
                    held = held - size + plain.len() as u64;
                    (inner.to_string(), plain)
                }
                Err(why) => {
                    let counter = if why.starts_with("over") { Counter::MemberTooLarge } else { Counter::CorruptMember };
                    stats.problem(counter, shard, &current.key, format!("member {path:?}: {why}"));
                    current.skipped = true;
                    current.members.clear();
                    continue;
                }
            },
            _ => (ext, data),
        };
        if current.members.iter().any(|(e, _)| *e == ext) {
            stats.problem(Counter::RepeatedMember, shard, &current.key, format!("member {path:?}: a second .{ext} for this key"));
            continue;
        }
        current.members.push((ext, data));
    }
    Some((current, last_end))
}

/// A gzip member's content, refused past `limit` bytes (a gzip bomb costs at most the limit).
fn gunzip_member(data: &[u8], limit: u64) -> Result<Vec<u8>, String> {
    let mut plain = Vec::new();
    let mut reader = flate2::read::MultiGzDecoder::new(data).take(limit.saturating_add(1));
    reader.read_to_end(&mut plain).map_err(|e| format!("does not decompress as gzip ({e})"))?;
    if plain.len() as u64 > limit {
        return Err(format!("over the member size limit once decompressed ({limit} bytes)"));
    }
    Ok(plain)
}

/// Extension headers (GNU long names, pax records) larger than this are refused unread: a real
/// one holds a path and a few numbers, and one claiming gigabytes is an attack on memory.
pub const MAX_HEADER_BYTES: u64 = 1 << 20;

/// The extension header kinds, named for messages; `None` for a member of its own.
fn extension_kind(kind: ::tar::EntryType) -> Option<&'static str> {
    if kind.is_gnu_longname() {
        Some("GNU long-name")
    } else if kind.is_gnu_longlink() {
        Some("GNU long-link")
    } else if kind.is_pax_local_extensions() {
        Some("pax")
    } else if kind.is_pax_global_extensions() {
        Some("pax global")
    } else {
        None
    }
}

/// What the extension headers before a member say of it, applied as the tar crate applies them
/// (the long name first, then the pax path; the pax size must agree with the header's).
#[derive(Default)]
struct Extensions {
    path: Option<Vec<u8>>,
    long_name: bool,
    size: Option<u64>,
}

impl Extensions {
    fn add(&mut self, kind: ::tar::EntryType, data: Vec<u8>, size: u64) -> Result<(), String> {
        if (data.len() as u64) < size {
            return Err(format!("an extension header cut at {} of {size} bytes", data.len()));
        }
        if kind.is_gnu_longname() {
            if self.long_name {
                return Err("two GNU long-name headers for one member".into());
            }
            let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            self.path = Some(data[..end].to_vec());
            self.long_name = true;
            return Ok(());
        }
        for record in ::tar::PaxExtensions::new(&data) {
            let record = record.map_err(|e| format!("an unreadable pax header: {e}"))?;
            match record.key() {
                Ok("path") if !self.long_name => self.path = Some(record.value_bytes().to_vec()),
                Ok("size") => {
                    let size = record.value().ok().and_then(|v| v.parse().ok());
                    self.size = Some(size.ok_or_else(|| format!("a pax size {:?} that is not a number", record.value_bytes()))?);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The shard is damaged at this point: count it, and leave out the sample being grouped, for
/// members that came after the damage (its json, say) may be missing; name it.
fn damaged(stats: &Stats, shard: &str, current: &RawSample, counter: Counter, why: String) {
    let pending = !current.members.is_empty() && !current.skipped;
    if pending || current.skipped {
        stats.incr(Counter::SamplesRead);
    }
    let left_out =
        if pending { format!("; the sample before it, {:?}, may be incomplete and is left out", current.key) } else { String::new() };
    stats.problem(counter, shard, &current.key, format!("{why}{left_out}"));
}

/// Count the samples (member groups) of a local tar shard from its headers alone, seeking over
/// the data. Stops quietly at a damaged header (the stream will count the damage when it reads).
pub fn count_samples(path: &str) -> std::io::Result<u64> {
    if crate::source::is_gzip(path) {
        // No seeking in a compressed stream: read it through (counting only).
        let stats = Stats::new();
        let mut n = 0u64;
        read_samples(crate::source::open_shard(path)?, path, DEFAULT_MAX_MEMBER_BYTES, &stats, |_| {
            n += 1;
            true
        });
        return Ok(n);
    }
    let file = std::fs::File::open(path)?;
    let mut archive = ::tar::Archive::new(std::io::BufReader::new(file));
    let mut count = 0u64;
    let mut last = String::new();
    let mut pending = Extensions::default();
    for entry in archive.entries_with_seek()?.raw(true) {
        let Ok(mut entry) = entry else { break };
        let kind = entry.header().entry_type();
        if extension_kind(kind).is_some() {
            if entry.size() > MAX_HEADER_BYTES {
                break; // refused unread, as the stream refuses it
            }
            if kind.is_gnu_longname() || kind.is_pax_local_extensions() {
                let mut data = Vec::new();
                if entry.read_to_end(&mut data).is_err() || pending.add(kind, data, entry.size()).is_err() {
                    break;
                }
            }
            continue;
        }
        let ext = std::mem::take(&mut pending);
        if !kind.is_file() {
            continue;
        }
        let path = String::from_utf8_lossy(&ext.path.unwrap_or_else(|| entry.path_bytes().into_owned())).into_owned();
        if let Some((key, _)) = split_key(&path) {
            if key != last {
                count += 1;
                last = key.to_string();
            }
        }
    }
    Ok(count)
}

/// Did the shard end early (cut, or a remote read that gave up), rather than hold garbage?
fn is_eof(e: &std::io::Error) -> bool {
    let msg = e.to_string();
    matches!(e.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::TimedOut)
        || msg.contains("unexpected EOF")
        || msg.contains("failed to read entire block")
        // remote.rs: a read given up after its retries (a stall, the minimum rate, a reset)
        || msg.contains(" attempt")
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

    fn gz(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_members_are_read_decompressed_under_their_inner_extension() {
        let (cap, meta) = (gz(b"a caption"), gz(br#"{"x": 1}"#));
        let t = make_tar(&[
            ("0001.jpg", b"img1"),
            ("0001.txt.gz", &cap),
            ("0001.json.gz", &meta),
            ("0002.jpg", b"i"),
            ("0002.txt.gz", b"not gzip"),
        ]);
        let (s, stats) = read_all(&t);
        assert_eq!(s.len(), 1, "the sample with a member that does not decompress is skipped");
        assert_eq!(s[0].members[1], ("txt".to_string(), b"a caption".to_vec()));
        assert_eq!(s[0].members[2], ("json".to_string(), br#"{"x": 1}"#.to_vec()));
        assert_eq!(stats.get(Counter::CorruptMember), 1);
        // A bomb: 64 MiB of zeros in a few KB, against a 1 MiB allowance.
        let bomb = gz(&vec![0u8; 64 << 20]);
        let t = make_tar(&[("0001.jpg", b"img1"), ("0001.txt.gz", &bomb)]);
        let stats = Stats::new();
        let mut n = 0;
        read_samples(&t[..], "t.tar", 1 << 20, &stats, |_| {
            n += 1;
            true
        });
        assert_eq!((n, stats.get(Counter::MemberTooLarge)), (0, 1));
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
        for cut in [t.len() - 1024 - 300, 512 * 5 + 10] {
            let (s, stats) = read_all(&t[..cut]);
            // `a` is whole (the next key began); `b`, cut, is left out.
            assert_eq!(s.len(), 1, "cut at {cut}");
            assert_eq!(s[0].key, "a", "cut at {cut}");
            assert_eq!(s[0].members.len(), 2);
            assert_eq!(stats.get(Counter::TruncatedTar), 1, "cut at {cut}");
        }
        // Cut inside the header after `a`: nothing shows that `a` was whole (its json might
        // have come next), so it is left out too, and named: fail closed, never silent.
        let (s, stats) = read_all(&t[..512 * 4 + 100]);
        assert!(s.is_empty());
        assert_eq!(stats.get(Counter::TruncatedTar), 1);
        assert!(stats.problems()[0].message.contains("\"a\", may be incomplete and is left out"), "{:?}", stats.problems());
    }

    #[test]
    fn a_cut_at_a_header_boundary_or_an_empty_shard_is_truncated() {
        let t = make_tar(&[("a.txt", b"x"), ("a.jpg", b"y"), ("b.txt", b"z"), ("b.jpg", b"w")]);
        let (s, stats) = read_all(&t);
        assert_eq!((s.len(), stats.get(Counter::TruncatedTar)), (2, 0), "a whole tar");
        for cut in [1024, 2048, 3072] {
            // Each member is one header block and one data block: these cuts fall between them.
            let (_, stats) = read_all(&t[..cut]);
            assert_eq!(stats.get(Counter::TruncatedTar), 1, "cut at {cut}");
        }
        let (s, stats) = read_all(&[]);
        assert!(s.is_empty());
        assert_eq!(stats.get(Counter::TruncatedTar), 1);
        assert!(stats.problems()[0].message.contains("empty"));
    }

    #[test]
    fn repeated_members_are_counted_and_a_sample_is_bounded() {
        let t = make_tar(&[("img.0001.jpg", b"1"), ("img.0001.txt", b"a"), ("img.0002.jpg", b"2"), ("img.0002.txt", b"b")]);
        let (s, stats) = read_all(&t);
        // webdataset's rule: the key is `img`, extensions `0001.jpg`, ...: all distinct here
        // (the sample rules count the second image and caption, see sample.rs).
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].members.len(), 4);
        let t = make_tar(&[("a.jpg", b"1"), ("a.txt", b"x"), ("a.jpg", b"2"), ("a.jpg", b"3"), ("b.jpg", b"4")]);
        let (s, stats2) = read_all(&t);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].get("jpg"), Some(&b"1"[..]));
        assert_eq!(stats2.get(Counter::RepeatedMember), 2);
        assert_eq!(stats.get(Counter::RepeatedMember), 0);
        // Many members under one key: skipped once over the limit, not held in memory.
        let chunk = vec![5u8; 400];
        let names: Vec<String> = (0..50).map(|i| format!("k.m{i}.bin")).collect();
        let members: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), chunk.as_slice())).collect();
        let t = make_tar(&members);
        let stats = Stats::new();
        let mut out = Vec::new();
        read_samples(&t[..], "t.tar", 4000, &stats, |s| {
            out.push(s);
            true
        });
        assert!(out.is_empty());
        assert_eq!(stats.get(Counter::MemberTooLarge), 1);
    }

    #[test]
    fn garbage_header_is_corrupt() {
        let mut t = make_tar(&[("a.txt", b"x"), ("a.jpg", b"y"), ("b.txt", b"z")]);
        // Overwrite the third header (after two 1-block members) with garbage.
        for byte in &mut t[2048..2048 + 512] {
            *byte = 0x5a;
        }
        let (s, stats) = read_all(&t);
        // `a` is left out with the damage: a corrupt header may have hidden more of its members.
        assert!(s.is_empty());
        assert_eq!(stats.get(Counter::CorruptTar), 1);
        assert!(stats.problems()[0].message.contains("left out"));
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

    /// One raw entry: a header of `kind` claiming `claim` bytes, then `data` padded to a block.
    fn raw_entry(name: &str, kind: u8, claim: u64, data: &[u8]) -> Vec<u8> {
        let mut h = ::tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_entry_type(::tar::EntryType::new(kind));
        h.set_size(claim);
        h.set_mode(0o644);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out
    }

    fn pax_record(key: &str, value: &str) -> Vec<u8> {
        let body = format!(" {key}={value}\n");
        let mut n = body.len() + 1;
        while format!("{n}{body}").len() != n {
            n += 1;
        }
        format!("{n}{body}").into_bytes()
    }

    #[test]
    fn extension_headers_are_bounded_and_applied() {
        // A long name (GNU `L`) and a pax path apply to the next member, as the tar crate does.
        let long = format!("{}/0001", "d".repeat(150));
        let mut t = raw_entry("././@LongLink", b'L', long.len() as u64 + 5, format!("{long}.jpg").as_bytes());
        t.extend(raw_entry("short.jpg", b'0', 3, b"img"));
        let pax = pax_record("path", &format!("{long}.txt"));
        t.extend(raw_entry("PaxHeaders/x", b'x', pax.len() as u64, &pax));
        t.extend(raw_entry("other.txt", b'0', 3, b"cap"));
        t.extend([0u8; 1024]);
        let (s, stats) = read_all(&t);
        assert_eq!(s.len(), 1, "{:?}", stats.problems());
        assert_eq!(s[0].key, long);
        assert_eq!((s[0].get("jpg"), s[0].get("txt")), (Some(&b"img"[..]), Some(&b"cap"[..])));

        // A long-name or pax header claiming 8 GiB is refused before a byte of it is held:
        // the sample before it is whole and kept out (the damage may hide its members), counted.
        for kind in [b'L', b'x', b'g', b'K'] {
            let mut t = make_tar(&[("a.jpg", b"1"), ("a.txt", b"x")]);
            t.truncate(t.len() - 1024);
            t.extend(raw_entry("././@LongLink", kind, 8 << 30, b"aaaa"));
            let (s, stats) = read_all(&t);
            assert!(s.is_empty(), "{}", kind as char);
            assert_eq!(stats.get(Counter::CorruptTar), 1, "{}", kind as char);
            assert!(stats.problems()[0].message.contains("claims 8589934592 bytes"), "{:?}", stats.problems());
        }

        // A pax size that disagrees with the member's header: two readings of one archive.
        let pax = pax_record("size", "9");
        let mut t = raw_entry("PaxHeaders/x", b'x', pax.len() as u64, &pax);
        t.extend(raw_entry("a.jpg", b'0', 3, b"img"));
        t.extend([0u8; 1024]);
        let (s, stats) = read_all(&t);
        assert!(s.is_empty());
        assert_eq!(stats.get(Counter::CorruptTar), 1);
    }

    #[test]
    fn a_cut_after_a_member_ending_in_zeros_is_truncated() {
        // The last 512 bytes the reader saw are zeros, but they are the member's own data.
        let zeros = vec![0u8; 1024];
        let t = make_tar(&[("a.jpg", b"1"), ("a.txt", b"x"), ("b.bin", &zeros), ("b.txt", b"y"), ("c.jpg", b"2")]);
        let cut = 512 * 2 * 2 + 512 + 1024;
        let (s, stats) = read_all(&t[..cut]);
        assert_eq!(s.len(), 1, "a is whole; b may be incomplete and is left out");
        assert_eq!(stats.get(Counter::TruncatedTar), 1, "{:?}", stats.problems());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.tar");
        std::fs::write(&p, &t).unwrap();
        assert_eq!(count_samples(p.to_str().unwrap()).unwrap(), 3);
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
