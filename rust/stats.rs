//! Counters for everything the pipeline reads, yields and drops, by reason.
//!
//! Bad input never crashes the stream and is never dropped silently: every skipped or repaired
//! sample bumps one counter here, and the first few problems are kept with their shard, key and
//! message so a user can see *which* sample was bad and why.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// One counter of the pipeline. The names (see [`Counter::name`]) are the keys of
/// `WebLIStream.stats()` in Python.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum Counter {
    /// Shards opened for reading.
    ShardsOpened,
    /// Samples (members grouped by key) read from shards.
    SamplesRead,
    /// Samples delivered in batches.
    SamplesYielded,
    /// Batches delivered.
    BatchesYielded,
    // --- samples skipped, by reason ---
    /// A sample with no image member (`jpg`, `jpeg`, `png`, `webp`, ...).
    MissingImage,
    /// A sample with neither a `txt` member nor a `caption` in its `json`.
    MissingCaption,
    /// A zero-byte image member.
    EmptyImage,
    /// Image bytes the decoder rejects (truncated, bad CRC, garbage).
    CorruptImage,
    /// Image bytes in a format the decoder does not know.
    UnsupportedImage,
    /// An image whose header declares more pixels than `max_pixels` (decompression bomb).
    TooLarge,
    /// A tar member larger than the member size limit.
    MemberTooLarge,
    /// A gzip-compressed member (`KEY.txt.gz`, `KEY.json.gz`, as webdataset writes them) that
    /// does not decompress: its sample is skipped (its other members are useless without it).
    CorruptMember,
    /// A member its sample cannot use: an extension the sample already has, or a second image
    /// or caption (`img.0001.jpg`, `img.0002.jpg` share the key `img`): the first is kept,
    /// each other one counted.
    RepeatedMember,
    /// A panic inside the decoder or resizer, caught for that sample alone.
    Panic,
    /// Not in the requested subset (`subset=`).
    OutOfSubset,
    /// The same image bytes came earlier in the stream (exact dedup).
    Duplicate,
    /// Dropped by a filter: score, flag, image side or aspect ratio.
    Filtered,
    /// A near-duplicate (perceptual fingerprint) of an image earlier in the stream.
    NearDuplicate,
    /// A near-duplicate of an evaluation image in the blocklist (decontamination).
    Blocklisted,
    // --- shard-level problems (the rest of the shard is lost, earlier samples are kept) ---
    /// The shard ended in the middle of a member or header.
    TruncatedTar,
    /// The shard has a header that is not a valid tar header.
    CorruptTar,
    /// The shard could not be opened or read.
    UnreadableShard,
    /// A remote shard that changed while it was read, or since it was indexed (another ETag, a
    /// 412 to `If-Match`, a range that does not start where it was asked): the rest of it is
    /// not read, so no sample is spliced from two versions.
    ShardChanged,
    /// A table shard (Parquet) failed part-way (a bad row group, no image column).
    CorruptTable,
    // --- remote shards ---
    /// A remote read that failed and was resumed (HTTP Range from the byte reached).
    RemoteRetry,
    // --- samples repaired and kept ---
    /// `json` that does not parse, or is not an object: the sample is kept with `meta = {}`.
    BadJson,
    /// A caption that is not valid UTF-8: kept, invalid bytes replaced by U+FFFD.
    InvalidUtf8Caption,
    // --- language rebalancing ---
    /// Extra copies of samples emitted to reach the mixture.
    MixtureRepeated,
    /// Samples left out to reach the mixture (the thinned-out majority).
    MixtureDropped,
    // --- equal batches ---
    /// Samples repeated to fill a reader's share of an epoch (`equal_batches`), after its
    /// shards ran out of samples that decode and pass the filters.
    Padded,
    /// A reader that could not fill its share: not one of its samples decodes and passes the
    /// filters (the stream raises an error naming the shards).
    PadFailed,
    /// A resume position beyond the end of the reader's stream: the state does not belong to
    /// these shards and settings (the stream raises an error).
    ResumePastEnd,
    // --- the shard index ---
    /// Samples a resume passed over by the shard index, known without reading them.
    IndexPassed,
    /// A shard index not used: the shard changed since it was indexed (size, mtime, ETag), or a
    /// seek found another sample than the index says. The shard is read without it.
    IndexStale,
    /// A shard index not used: damaged, of another version, or unreadable.
    IndexUnusable,
    // --- time spent per stage, in nanoseconds of CPU time of the threads doing it (summed over
    // threads; `CLOCK_THREAD_CPUTIME_ID` on Linux, so a descheduled or blocked thread adds
    // nothing; wall time elsewhere) ---
    /// Reading shards: I/O, tar headers, grouping, sample rules (not time blocked on a full queue).
    NsRead,
    /// Decoding images.
    NsDecode,
    /// Resizing images.
    NsResize,
    /// Assembling batches.
    NsBatch,
}

impl Counter {
    pub const ALL: [Counter; 39] = [
        Counter::ShardsOpened,
        Counter::SamplesRead,
        Counter::SamplesYielded,
        Counter::BatchesYielded,
        Counter::MissingImage,
        Counter::MissingCaption,
        Counter::EmptyImage,
        Counter::CorruptImage,
        Counter::UnsupportedImage,
        Counter::TooLarge,
        Counter::MemberTooLarge,
        Counter::CorruptMember,
        Counter::RepeatedMember,
        Counter::Panic,
        Counter::OutOfSubset,
        Counter::Duplicate,
        Counter::Filtered,
        Counter::NearDuplicate,
        Counter::Blocklisted,
        Counter::TruncatedTar,
        Counter::CorruptTar,
        Counter::UnreadableShard,
        Counter::ShardChanged,
        Counter::CorruptTable,
        Counter::RemoteRetry,
        Counter::BadJson,
        Counter::InvalidUtf8Caption,
        Counter::MixtureRepeated,
        Counter::MixtureDropped,
        Counter::Padded,
        Counter::PadFailed,
        Counter::ResumePastEnd,
        Counter::IndexPassed,
        Counter::IndexStale,
        Counter::IndexUnusable,
        Counter::NsRead,
        Counter::NsDecode,
        Counter::NsResize,
        Counter::NsBatch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Counter::ShardsOpened => "shards_opened",
            Counter::SamplesRead => "samples_read",
            Counter::SamplesYielded => "samples_yielded",
            Counter::BatchesYielded => "batches_yielded",
            Counter::MissingImage => "skipped_missing_image",
            Counter::MissingCaption => "skipped_missing_caption",
            Counter::EmptyImage => "skipped_empty_image",
            Counter::CorruptImage => "skipped_corrupt_image",
            Counter::UnsupportedImage => "skipped_unsupported_image",
            Counter::TooLarge => "skipped_too_large",
            Counter::MemberTooLarge => "skipped_member_too_large",
            Counter::CorruptMember => "skipped_corrupt_member",
            Counter::RepeatedMember => "skipped_repeated_member",
            Counter::Panic => "skipped_panic",
            Counter::OutOfSubset => "skipped_out_of_subset",
            Counter::Duplicate => "skipped_duplicate",
            Counter::Filtered => "skipped_filtered",
            Counter::NearDuplicate => "skipped_near_duplicate",
            Counter::Blocklisted => "skipped_blocklisted",
            Counter::TruncatedTar => "shard_truncated",
            Counter::CorruptTar => "shard_corrupt",
            Counter::UnreadableShard => "shard_unreadable",
            Counter::ShardChanged => "shard_changed",
            Counter::CorruptTable => "shard_table_corrupt",
            Counter::RemoteRetry => "remote_retries",
            Counter::BadJson => "repaired_bad_json",
            Counter::InvalidUtf8Caption => "repaired_invalid_utf8_caption",
            Counter::MixtureRepeated => "mixture_repeated",
            Counter::MixtureDropped => "mixture_dropped",
            Counter::Padded => "samples_padded",
            Counter::PadFailed => "equal_batches_unfilled",
            Counter::ResumePastEnd => "resume_past_end",
            Counter::IndexPassed => "index_passed",
            Counter::IndexStale => "index_stale",
            Counter::IndexUnusable => "index_unusable",
            Counter::NsRead => "ns_read",
            Counter::NsDecode => "ns_decode",
            Counter::NsResize => "ns_resize",
            Counter::NsBatch => "ns_batch",
        }
    }
}

/// One recorded problem: which shard and sample, the counter it bumped, and the message.
#[derive(Clone, Debug)]
pub struct Problem {
    pub counter: Counter,
    pub shard: String,
    pub key: String,
    pub message: String,
}

/// How many problems are kept with their details (the counters count all of them).
pub const MAX_PROBLEMS: usize = 100;

/// Thread-safe counters, shared by all stages of one pipeline.
#[derive(Debug)]
pub struct Stats {
    counts: [AtomicU64; Counter::ALL.len()],
    problems: Mutex<Vec<Problem>>,
    /// An error no other shard or attempt can mend (credentials refused, a wrong region): the
    /// first one, which ends the stream with it rather than count every shard unreadable.
    fatal: Mutex<Option<String>>,
}

/// A problem's shard and message as they may be shown: a shard given as a presigned URL carries
/// its secret in the query string, so the shard is named without it and the message loses it too
/// (secrets never reach a message or a log).
fn redacted(original: &str, message: String) -> (String, String) {
    let shard = if crate::remote::is_remote(original) { crate::remote::redact(original) } else { original.to_string() };
    let mut message = message.trim().to_string();
    if shard != original {
        message = message.replace(original, &shard);
        if let Some((_, query)) = original.split_once('?').filter(|(_, q)| !q.is_empty()) {
            message = message.replace(query, "<redacted>");
        }
    }
    (shard, message)
}

impl Default for Stats {
    fn default() -> Self {
        Self { counts: std::array::from_fn(|_| AtomicU64::new(0)), problems: Mutex::new(Vec::new()), fatal: Mutex::new(None) }
    }
}

impl Stats {
    pub fn new() -> Self {
        Self::default()
    }

    /// Record an error that ends the stream (the first one is kept), counted as `counter`.
    pub fn set_fatal(&self, counter: Counter, shard: &str, message: String) {
        self.problem(counter, shard, "", message.clone());
        let mut fatal = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
        if fatal.is_none() {
            let (shard, message) = redacted(shard, message);
            *fatal = Some(format!("{shard}: {message}"));
        }
    }

    /// The error that ended the stream, if one did (shard named, secrets redacted).
    pub fn fatal(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn add(&self, counter: Counter, n: u64) {
        self.counts[counter as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn incr(&self, counter: Counter) {
        self.add(counter, 1);
    }

    /// Count a problem and keep its details (the first [`MAX_PROBLEMS`] only).
    pub fn problem(&self, counter: Counter, shard: &str, key: &str, message: impl Into<String>) {
        self.incr(counter);
        let mut problems = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        if problems.len() < MAX_PROBLEMS {
            let (shard, message) = redacted(shard, message.into());
            problems.push(Problem { counter, shard, key: key.to_string(), message });
        }
    }

    /// Add this thread's CPU time since `start` to a stage's `Ns*` counter.
    pub fn time(&self, counter: Counter, start: CpuStamp) {
        self.add(counter, start.elapsed_ns());
    }

    pub fn get(&self, counter: Counter) -> u64 {
        self.counts[counter as usize].load(Ordering::Relaxed)
    }

    /// All counters as `(name, value)`, in a fixed order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        Counter::ALL.iter().map(|&c| (c.name(), self.get(c))).collect()
    }

    pub fn problems(&self) -> Vec<Problem> {
        self.problems.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn stage_time_is_cpu_time_not_waiting() {
        // A thread that sleeps (as a descheduled or blocked one waits) adds no stage time;
        // one that computes does.
        let t = CpuStamp::now();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(t.elapsed_ns() < 50_000_000, "{} ns of CPU while asleep", t.elapsed_ns());
        let t = CpuStamp::now();
        let mut x = 0u64;
        let wall = std::time::Instant::now();
        while wall.elapsed() < std::time::Duration::from_millis(20) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        assert!(t.elapsed_ns() > 0, "{x}");
    }

    #[test]
    fn the_fatal_reason_is_its_own_even_when_the_problem_list_is_full() {
        let stats = Stats::new();
        for i in 0..MAX_PROBLEMS + 5 {
            stats.problem(Counter::CorruptImage, "s.tar", &i.to_string(), "bad");
        }
        stats.set_fatal(
            Counter::UnreadableShard,
            "https://h/x.tar?X-Amz-Signature=SECRET",
            "HTTP 403 for https://h/x.tar?X-Amz-Signature=SECRET".into(),
        );
        let why = stats.fatal().unwrap();
        assert!(why.contains("HTTP 403") && !why.contains("SECRET") && !why.contains(": bad"), "{why}");
    }

    #[test]
    fn counts_and_keeps_problems() {
        let s = Stats::new();
        s.incr(Counter::SamplesRead);
        s.add(Counter::SamplesRead, 2);
        for i in 0..(MAX_PROBLEMS + 5) {
            s.problem(Counter::CorruptImage, "a.tar", &format!("k{i}"), "bad");
        }
        assert_eq!(s.get(Counter::SamplesRead), 3);
        assert_eq!(s.get(Counter::CorruptImage), (MAX_PROBLEMS + 5) as u64);
        assert_eq!(s.problems().len(), MAX_PROBLEMS);
        let snap = s.snapshot();
        assert_eq!(snap.len(), Counter::ALL.len());
        assert!(snap.contains(&("skipped_corrupt_image", (MAX_PROBLEMS + 5) as u64)));
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Counter::ALL.len());
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "Counter::ALL must follow the enum order");
        }
    }
}

/// A point in this thread's CPU time: what the per-stage counters measure. On Linux it is
/// `CLOCK_THREAD_CPUTIME_ID` (the time the thread ran, not the time it waited to be scheduled
/// or blocked on a queue, so `ns_decode` per image is the decoder's cost even on a busy
/// machine); elsewhere a monotonic wall clock.
#[derive(Clone, Copy, Debug)]
pub struct CpuStamp(u64);

impl CpuStamp {
    pub fn now() -> Self {
        CpuStamp(thread_cpu_ns())
    }

    /// Nanoseconds of this thread's CPU time since the stamp (taken on the same thread).
    pub fn elapsed_ns(self) -> u64 {
        thread_cpu_ns().saturating_sub(self.0)
    }
}

#[cfg(target_os = "linux")]
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the pointer it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu_ns() -> u64 {
    use std::sync::OnceLock;
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
}
