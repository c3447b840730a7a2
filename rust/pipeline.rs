//! Runs the stages on threads with bounded channels, in a deterministic order.
//!
//! ```text
//! reader thread:   shards → tar → sample → shuffle buffer ──(bounded)──┐
//! batcher thread:  chunks of samples → decode+resize on a pool of       │
//!                  `num_threads` (order kept) → batch ──(prefetch)──► next_batch()
//! ```
//! For a fixed config (shards, seed, batch size) the batches are the same on every run, whatever
//! the number of threads: the shuffle runs on one thread, and the parallel decode keeps the
//! order of its input. Dropping the [`Pipeline`] closes the channels, which stops both threads;
//! `Drop` joins them, so no thread outlives its stream.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use rayon::prelude::*;

use crate::batch::{assemble, Batch, Tile};
use crate::config::{bit_is_set, DecodeDevice, DecodeOptions, Interpolation, ResizeMode, Settings};
use crate::decode::{check_pixels, decode_oriented, exif, is_jpeg, jpeg, jpeg_is_complete, DecodeError, Request};
use crate::fingerprint::{fingerprint, Fingerprint};
use crate::index::{index_location, IndexSet, ShardIndex};
use crate::lang::normalize_lang;
use crate::lang::sample_lang;
use crate::neardup::{FrozenIndex, HashIndex};
use crate::rebalance::{MixtureConfig, Rebalancer, Target};
use crate::remote::is_remote;
use crate::resize::{crop_box, flips, hflip, min_scale, resize_into};
use crate::rng::{seed_for, SplitMix64};
use crate::sample::{is_table_shard, row_to_sample, to_sample, Sample, TableReader};
use crate::select::Selector;
use crate::source::{open_shard_at, open_shard_counted};
use crate::stats::{Counter, CpuStamp, Stats};
use crate::tar::read_samples_from;

/// What one reader does this epoch: its part of the work, decided by the layout (which reader
/// of how many, which epoch, where a resume starts). Not settings: the same settings give every
/// reader its own plan.
#[derive(Clone, Debug, Default)]
pub struct ReaderPlan {
    /// Seed of this reader's sample shuffle (mixes the stream's seed, the epoch and the reader).
    pub shuffle_seed: u64,
    /// Seed of what is decided per sample (random crops, mixture copies): the stream's seed and
    /// the epoch only, so the same sample gets the same crop and copies on every layout.
    pub sample_seed: u64,
    /// Decode threads.
    pub num_threads: usize,
    /// Resume: drop the first `skip` samples of the shuffled stream before decoding them.
    pub skip: u64,
    /// Resume after a change of layout: per shard path, a bitmap of sample indices (bit `i` of
    /// byte `i / 8`) already consumed; they are dropped before the shuffle buffer.
    pub exclude: HashMap<String, Vec<u8>>,
    /// Deliver exactly this many samples, then stop (0: no limit). With `cycle`, a stream that
    /// runs out is padded by reading its shards again, then by repeating what it has, so every
    /// DDP rank can be given the same number of batches.
    pub limit: u64,
    /// When the shards run out, read them again (another shuffle each pass); use with `limit`.
    pub cycle: bool,
    /// With `limit` and without `cycle`: a stream whose shards run out before the limit is
    /// padded by repeating its last good samples, no shard read twice (`equal_batches="drop"`,
    /// whose share is at most what its own shards hold: short only when samples fail to decode).
    pub pad: bool,
    /// With `cycle`: when a whole pass over this reader's shards gives nothing (all of it fails
    /// to decode or is filtered out), pad from these instead (the epoch's other shards).
    pub fallback_shards: Vec<String>,
    /// Know the samples of every shard that has a shard index from the index alone, never
    /// reading them: a replay or a count, which need keys and places, not bytes.
    pub phantom: bool,
}

/// A stream to run: the shards of one reader, the settings (whole), the reader's plan, and the
/// resources the settings named, loaded (a blocklist, the manifest's counts, a Parquet reader).
#[derive(Clone)]
pub struct Job {
    pub shards: Vec<String>,
    pub settings: Arc<Settings>,
    pub plan: ReaderPlan,
    pub blocklist: Option<Arc<FrozenIndex>>,
    /// Raw language counts from the manifest (exact mixture rates); None: estimated online.
    pub mixture_counts: Option<HashMap<String, u64>>,
    /// Reads table shards (`.parquet`); set by the Python bindings (pyarrow). None: such shards
    /// are counted as unreadable.
    pub table_reader: Option<Arc<dyn TableReader>>,
    /// The shard index files (`index=`, else beside the shards), loaded lazily, once each.
    pub index: Arc<IndexSet>,
}

impl Job {
    /// The remote-shard cache (`cache_dir=`), when one is set: one place that makes it.
    fn cache(&self) -> Option<crate::cache::Cache> {
        let run = &self.settings.run;
        run.cache_dir.as_ref().map(|d| crate::cache::Cache::new(d, run.cache_max_bytes))
    }

    /// A job over `shards` with these settings and a plan of one thread and no resume.
    pub fn new(shards: Vec<String>, settings: Settings) -> Self {
        Self::shared(shards, Arc::new(settings))
    }

    /// [`Job::new`] with settings already shared (the stream's one value, not a copy).
    pub fn shared(shards: Vec<String>, settings: Arc<Settings>) -> Self {
        let plan = ReaderPlan { shuffle_seed: settings.read.seed, sample_seed: settings.read.seed, num_threads: 1, ..Default::default() };
        let index = Arc::new(IndexSet::new(settings.run.index.clone()));
        Self { shards, settings, plan, blocklist: None, mixture_counts: None, table_reader: None, index }
    }

    fn validate(&self) -> Result<(), String> {
        self.settings.validate().map_err(|e| e.to_string())?;
        if self.plan.num_threads == 0 || self.plan.num_threads > 1024 {
            return Err(format!("num_threads must be between 1 and 1024, not {}", self.plan.num_threads));
        }
        if self.plan.cycle && self.plan.limit == 0 {
            return Err("cycle needs a limit (it would never end)".into());
        }
        Ok(())
    }

    /// The rebalancing stage's configuration, when a mixture is set.
    fn mixture(&self) -> Option<MixtureConfig> {
        let m = &self.settings.mixture;
        let target = match (&m.mixture, m.mixture_temperature) {
            (Some(shares), _) => Target::Shares(shares.iter().map(|(l, p)| (normalize_lang(l), *p)).collect()),
            (None, Some(t)) => Target::Temperature(t),
            (None, None) => return None,
        };
        let counts = self.mixture_counts.as_ref().map(|c| {
            let mut n: HashMap<String, u64> = HashMap::new();
            for (l, v) in c {
                *n.entry(normalize_lang(l)).or_default() += v;
            }
            n
        });
        Some(MixtureConfig { target, counts, window: m.mixture_window })
    }
}

/// A running stream of batches.
pub struct Pipeline {
    rx: Option<Receiver<Batch>>,
    stats: Arc<Stats>,
    threads: Vec<JoinHandle<()>>,
    /// Live decode threads: rayon's pool lets its threads exit after it is dropped, so `Drop`
    /// waits on this count to be sure no thread outlives the stream.
    pool_alive: Arc<(Mutex<usize>, Condvar)>,
}

impl Pipeline {
    /// Validate `job` and start the reader and batcher threads.
    pub fn start(job: Job) -> Result<Self, String> {
        job.validate()?;
        let cfg = Arc::new(job);
        let stats = Arc::new(Stats::new());
        let (sample_tx, sample_rx) = bounded::<Sample>((cfg.settings.batch.batch_size * 2).clamp(64, 1 << 16));
        let (batch_tx, batch_rx) = bounded::<Batch>(cfg.settings.run.prefetch);
        // What the batcher made of the samples it took: the reader stops cycling when the
        // batcher tried a long run of samples and made no tile of them.
        let made = Arc::new(Progress::default());
        // Counted up front: a thread may run its start handler after `build` returns.
        let pool_alive = Arc::new((Mutex::new(cfg.plan.num_threads), Condvar::new()));
        let on_exit = pool_alive.clone();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.plan.num_threads)
            .thread_name(|i| format!("webli-decode-{i}"))
            .exit_handler(move |_| {
                let mut n = on_exit.0.lock().unwrap_or_else(|e| e.into_inner());
                *n = n.saturating_sub(1);
                on_exit.1.notify_all();
            })
            .build()
            .map_err(|e| format!("cannot start {} decode threads: {e}", cfg.plan.num_threads))?;
        let reader = {
            let (cfg, stats, made) = (cfg.clone(), stats.clone(), made.clone());
            std::thread::Builder::new()
                .name("webli-reader".into())
                .spawn(move || {
                    // A panic here (a bug, not bad data: that is caught per shard) must not end
                    // the epoch silently: it is counted and named.
                    if catch_unwind(AssertUnwindSafe(|| read_loop(&cfg, &stats, Some(&made), |s| sample_tx.send(s).is_ok()))).is_err() {
                        stats.problem(Counter::Panic, cfg.shards.first().map_or("", |s| s.as_str()), "", "panic on the reader thread");
                    }
                })
                .map_err(|e| e.to_string())?
        };
        let batcher = {
            let (cfg, stats) = (cfg.clone(), stats.clone());
            std::thread::Builder::new()
                .name("webli-batcher".into())
                .spawn(move || {
                    // However it ends (its share delivered, the consumer gone, a panic), the
                    // reader waiting on its progress must learn it.
                    struct Ended<'a>(&'a Progress);
                    impl Drop for Ended<'_> {
                        fn drop(&mut self) {
                            self.0.ended.store(true, Ordering::Release);
                        }
                    }
                    let _ended = Ended(&made);
                    batch_loop(&cfg, &stats, pool, sample_rx, batch_tx, &made)
                })
                .map_err(|e| e.to_string())?
        };
        Ok(Self { rx: Some(batch_rx), stats, threads: vec![reader, batcher], pool_alive })
    }

    /// The next batch, or `None` at the end of the stream. Blocks until one is ready.
    pub fn next_batch(&mut self) -> Option<Batch> {
        let batch = self.rx.as_ref()?.recv().ok()?;
        Some(self.delivered(batch))
    }

    /// Count a batch as it is handed over, not when prepared: prefetched batches never
    /// consumed don't count.
    fn delivered(&self, batch: Batch) -> Batch {
        self.stats.add(Counter::SamplesYielded, batch.len() as u64);
        self.stats.incr(Counter::BatchesYielded);
        batch
    }

    /// [`next_batch`](Self::next_batch), waiting at most `wait`: `Err(())` when nothing came in
    /// time (the caller checks for Ctrl-C and asks again).
    #[allow(clippy::result_unit_err)]
    pub fn next_batch_within(&mut self, wait: Duration) -> Result<Option<Batch>, ()> {
        let Some(rx) = self.rx.as_ref() else { return Ok(None) };
        match rx.recv_timeout(wait) {
            Ok(batch) => Ok(Some(self.delivered(batch))),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(()),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Ok(None),
        }
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }
}

/// How long `Drop` waits for the threads: a reader blocked on a stalled server is left to end
/// on its own (its next send fails; the read timeout bounds the wait) rather than holding up
/// `break`, `close()` or garbage collection.
const DROP_WAIT: Duration = Duration::from_secs(1);

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.rx.take();
        let deadline = Instant::now() + DROP_WAIT;
        for t in self.threads.drain(..) {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if t.is_finished() {
                let _ = t.join();
            } // else: detached; it ends when its blocking read returns
        }
        // The batcher owned the pool and has ended: its threads are on their way out.
        let (lock, cv) = &*self.pool_alive;
        let mut n = lock.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = Instant::now().max(deadline) + Duration::from_millis(500);
        while *n > 0 && Instant::now() < deadline {
            n = cv.wait_timeout(n, Duration::from_millis(20)).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

/// Read every shard in order, number the samples, pass them through the shuffle buffer, and
/// hand them to `sink` (which returns `false` to stop). Samples listed in `plan.exclude` are
/// dropped before the shuffle; the first `plan.skip` samples after it are dropped unsent.
/// When cycling, `made` (the batcher's progress) ends the cycle once the batcher has tried two
/// passes' worth of samples since the last pass ended and made no tile of them: a reader whose
/// samples all fail to decode, or are all filtered, cannot spin forever. (Only samples the
/// batcher has tried count: a consumer that stops for a while leaves samples of a small pass
/// waiting in the channel, untried, and that says nothing about them.)
pub fn read_loop(cfg: &Job, stats: &Stats, made: Option<&Progress>, mut sink: impl FnMut(Sample) -> bool) {
    let gate = Gate { skip: cfg.plan.skip, emitted: AtomicU64::new(0), all: cfg.plan.phantom };
    let seq = || gate.emitted.load(Ordering::Acquire);
    let sent = AtomicU64::new(0);
    let mut emit = |mut s: Sample| -> bool {
        s.seq = gate.emitted.fetch_add(1, Ordering::AcqRel);
        if s.seq < cfg.plan.skip {
            return true;
        }
        // A sample known from the index alone, now delivered: read it, by its byte range.
        if s.span.is_some() && !cfg.plan.phantom && !hydrate(cfg, &mut s, stats) {
            return true;
        }
        sent.fetch_add(1, Ordering::Relaxed);
        sink(s)
    };
    let mut rebalancer = cfg.mixture().map(|m| Rebalancer::new(m, cfg.plan.sample_seed));
    let past_end = |seq: u64| {
        if seq < cfg.plan.skip {
            let shard = cfg.shards.first().map_or("", |s| s.as_str());
            let message =
                format!("the resume position ({} samples consumed) is past the end of this reader's stream ({seq})", cfg.plan.skip);
            stats.problem(Counter::ResumePastEnd, shard, "", message);
        }
    };
    let mut made_before = (0, 0);
    let mut shards: &[String] = &cfg.shards;
    let mut fallback = !cfg.plan.fallback_shards.is_empty();
    for pass in 0u64.. {
        let before = seq();
        // Padding from the fallback shards repeats samples on purpose: no exclusions there.
        let padding = !std::ptr::eq(shards, cfg.shards.as_slice());
        let view = View { gate: &gate, exclude: (!padding).then_some(&cfg.plan.exclude) };
        if !read_pass(cfg, shards, view, stats, pass, rebalancer.as_mut(), &mut emit) {
            return;
        }
        if !cfg.plan.cycle {
            if pass == 0 {
                past_end(seq());
            }
            // `pad` (equal_batches="drop"): its own shards are read once; only when nothing of
            // them decoded (nothing to repeat) are the fallback shards read, once.
            let sent = sent.load(Ordering::Relaxed);
            if cfg.plan.pad && fallback && made.is_some_and(|m| m.made_nothing_of(sent)) {
                fallback = false;
                shards = &cfg.plan.fallback_shards;
                continue;
            }
            return;
        }
        // A pass that gave nothing (nothing selected, or, a pass later, nothing that decodes):
        // cycling over these shards would spin forever. Pad from the fallback shards once; then
        // stop, and the batcher pads from what it has.
        let gave_nothing = seq() == before;
        let pass_len = seq() - before;
        let made_nothing = made.is_some_and(|m| {
            let now = (m.tiles.load(Ordering::Acquire), m.tried.load(Ordering::Acquire));
            if pass == 0 {
                made_before = now;
                return false;
            }
            if now.0 != made_before.0 {
                made_before = now;
                return false;
            }
            // No tile since the mark: conclusive only once two passes' worth were tried.
            now.1 - made_before.1 >= 2 * pass_len.max(1)
        });
        if gave_nothing || made_nothing {
            if !fallback {
                return;
            }
            fallback = false;
            shards = &cfg.plan.fallback_shards;
        }
    }
}

/// One pass over the shards; `false` when the consumer has gone away. With `shards_in_flight`
/// = k > 1, k shards are read at once, each on a thread of its own, and their samples are taken
/// in turn, one from each (a shard that ends gives its turn to the next shard of the list): the
/// order depends only on the shards' contents, never on timing, so it is the same on every run.
fn read_pass(
    cfg: &Job,
    shards: &[String],
    view: View<'_>,
    stats: &Stats,
    pass: u64,
    mut rebalancer: Option<&mut Rebalancer>,
    emit: &mut impl FnMut(Sample) -> bool,
) -> bool {
    let s = &cfg.settings;
    let mut shuffler = Shuffler::new(s.read.buffer(), cfg.plan.shuffle_seed.wrapping_add(pass.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    let exclude = &cfg.plan.exclude;
    let use_exclude = view.exclude.is_some();
    // Rebalanced samples go through the shuffle buffer to the consumer, but for the copies an
    // earlier run consumed (a resume on another layout). They are left out here, after selection
    // and rebalancing, so that dedup and the mixture decide exactly as in the uninterrupted run.
    let mut feed = |s: Sample, shuffler: &mut Shuffler| -> bool {
        if use_exclude && !exclude.is_empty() && is_excluded(exclude, &s) {
            return true;
        }
        match shuffler.push(s) {
            Some(out) => emit(out),
            None => true,
        }
    };
    let mut push = |sample: Sample| -> bool {
        match rebalancer.as_deref_mut() {
            Some(rb) => rb.push(sample, stats, &mut |s| feed(s, &mut shuffler)),
            None => feed(sample, &mut shuffler),
        }
    };
    let in_flight = s.read.in_flight().min(shards.len()).max(1);
    let alive = if in_flight == 1 {
        shards.iter().all(|shard| read_shard(cfg, shard, stats, view, &mut push))
    } else {
        interleave(cfg, shards, in_flight, stats, view, &mut push)
    };
    if !alive {
        return false;
    }
    if let Some(rb) = rebalancer {
        if !rb.flush(&mut |s| feed(s, &mut shuffler)) {
            return false;
        }
    }
    for sample in shuffler.drain() {
        if !emit(sample) {
            return false;
        }
    }
    true
}

/// Samples buffered per shard in flight.
const IN_FLIGHT_BUFFER: usize = 32;

/// Read `shards`, `k` at a time, each on its own thread, and pass their samples to `push` in
/// turn (see [`read_pass`]); `false` when `push` said stop.
fn interleave(cfg: &Job, shards: &[String], k: usize, stats: &Stats, view: View<'_>, push: &mut impl FnMut(Sample) -> bool) -> bool {
    std::thread::scope(|scope| {
        let mut next = 0usize;
        let open = |next: &mut usize| -> Option<Receiver<Sample>> {
            let shard = shards.get(*next)?;
            *next += 1;
            let (tx, rx) = bounded(IN_FLIGHT_BUFFER);
            let spawned = std::thread::Builder::new().name("webli-shard".into()).spawn_scoped(scope, move || {
                read_shard(cfg, shard, stats, view, &mut |s| tx.send(s).is_ok());
            });
            if let Err(e) = spawned {
                stats.problem(Counter::UnreadableShard, shard, "", format!("could not start a thread to read the shard: {e}"));
            }
            Some(rx)
        };
        let mut slots: Vec<Option<Receiver<Sample>>> = (0..k).map(|_| open(&mut next)).collect();
        let mut turn = 0usize;
        while slots.iter().any(Option::is_some) {
            let Some(rx) = &slots[turn] else {
                turn = (turn + 1) % k;
                continue;
            };
            match rx.recv() {
                Ok(sample) => {
                    if !push(sample) {
                        // Dropping the receivers makes every reader thread stop at its next send.
                        slots.clear();
                        return false;
                    }
                    turn = (turn + 1) % k;
                }
                // This shard is done: the next one of the list takes its place (and its turn).
                Err(_) => slots[turn] = open(&mut next),
            }
        }
        true
    })
}

/// What a reader knows of its resume while it reads: how many samples it has emitted (a sample
/// numbered below `skip` is passed over), whether it only counts or replays (`all`).
struct Gate {
    skip: u64,
    emitted: AtomicU64,
    all: bool,
}

/// A pass's view of the gate and of the exclusions (None: a padding pass, which has none).
#[derive(Clone, Copy)]
struct View<'a> {
    gate: &'a Gate,
    exclude: Option<&'a HashMap<String, Vec<u8>>>,
}

impl View<'_> {
    fn skipping(&self) -> bool {
        self.gate.all || self.gate.emitted.load(Ordering::Acquire) < self.gate.skip
    }

    fn excluded(&self, shard: &str, index: u64) -> bool {
        self.exclude.and_then(|m| m.get(shard)).is_some_and(|b| bit_is_set(b, index))
    }

    /// Is the shard index worth loading for this shard: does a resume (or a count) pass over
    /// some of its samples?
    fn wants_index(&self, shard: &str) -> bool {
        self.skipping() || self.exclude.is_some_and(|m| m.contains_key(shard))
    }
}

/// The fields selection reads: the language fields and the filters' fields.
fn selection_fields(s: &Settings) -> Vec<String> {
    let mut f = s.read.lang_fields();
    f.extend(s.select.min_score.keys().cloned());
    f.extend(s.select.drop_if.keys().cloned());
    f
}

/// `shard`'s index, when it can stand in for reading the shard: present, checked against the
/// shard (a count or replay of a remote shard skips the HEAD: a reader checks when it seeks),
/// holding every field selection reads, and seekable unless nothing will be read.
fn usable_index(cfg: &Job, shard: &str, all: bool, stats: &Stats) -> Option<Arc<ShardIndex>> {
    let ix = cfg.index.get(shard, !(all && is_remote(shard)), stats)?;
    let need = selection_fields(&cfg.settings);
    if !ix.covers(&need) {
        let missing: Vec<&String> = need.iter().filter(|f| !ix.fields.contains(f)).collect();
        let message =
            format!("the shard index lacks the fields {missing:?} that selection reads: rebuild it with `webli-io index --fields ...`");
        stats.problem(Counter::IndexUnusable, shard, "", message);
        return None;
    }
    (all || ix.seekable).then_some(ix)
}

/// The `span` of a sample known only by its place among a shard's indexed samples (`end`: the
/// place), from the folder summary's count: its index entry is loaded only if it is delivered.
const UNLOADED: u64 = u64::MAX;

/// Sample `j` of `shard`, known from the summary's count alone: no key, no place yet.
fn counted_phantom(j: u64, shard: &Arc<str>) -> Sample {
    Sample {
        key: String::new(),
        shard: shard.clone(),
        index: j,
        seq: 0,
        image: Default::default(),
        text: String::new(),
        meta: Default::default(),
        lang: String::new(),
        copy: 0,
        meta_ok: true,
        extras: Vec::new(),
        span: Some((UNLOADED, j)),
    }
}

/// Can a resume pass this shard's samples by their count alone? Only when nothing but their
/// number decides the stream: no selection (it reads keys and fields), no mixture (it draws by
/// key), no exclusions (they name samples), not a count or replay (they want the samples).
fn passes_by_count(cfg: &Job, shard: &str, view: View<'_>) -> bool {
    !view.gate.all
        && !cfg.settings.select.drops_before_decode()
        && !cfg.settings.mixture.enabled()
        && !view.exclude.is_some_and(|m| m.contains_key(shard))
}

/// Sample `j` of `ix`, known from the index alone (see [`Sample::span`]).
fn phantom(ix: &ShardIndex, j: usize, shard: &Arc<str>) -> Sample {
    let e = &ix.samples;
    Sample {
        key: e.key[j].clone(),
        shard: shard.clone(),
        index: e.index[j],
        seq: 0,
        image: Default::default(),
        text: String::new(),
        meta: e.meta[j].clone(),
        lang: String::new(),
        copy: 0,
        meta_ok: e.meta_ok[j],
        extras: Vec::new(),
        span: Some((e.offset[j], e.end[j])),
    }
}

/// Read a sample known from the index alone, by its byte range, and fill in its bytes;
/// `false` (counted) when that fails or finds another sample than the index says.
fn hydrate(cfg: &Job, s: &mut Sample, stats: &Stats) -> bool {
    if let Some((UNLOADED, j)) = s.span {
        // Known by its count: its entry, from the shard's index, now.
        match cfg.index.get(&s.shard, true, stats).filter(|ix| (j as usize) < ix.len()) {
            Some(ix) => {
                let j = j as usize;
                s.key = ix.samples.key[j].clone();
                s.index = ix.samples.index[j];
                s.span = Some((ix.samples.offset[j], ix.samples.end[j]));
            }
            // The index file is gone or damaged since the summary was written: the shard is read
            // from its start to that sample (no selection here: the j-th sample the rule keeps).
            None => return read_nth(cfg, s, j, stats),
        }
    }
    let Some((start, end)) = s.span else { return true };
    let cache = cfg.cache();
    let read = catch_unwind(AssertUnwindSafe(|| -> std::io::Result<Option<crate::tar::RawSample>> {
        let validator = cfg.index.get(&s.shard, false, &Stats::new()).and_then(|ix| ix.validator.clone());
        let (reader, _) = open_shard_at(&s.shard, start, Some(end), validator.as_deref(), cache.as_ref())?;
        // The range ends with its last member: end-of-archive blocks make it a whole tar.
        let whole = std::io::Read::chain(reader, std::io::Read::take(std::io::repeat(0), 1024));
        let mut got = None;
        read_samples_from(whole, start, &s.shard, cfg.settings.read.max_member_bytes, stats, |raw| {
            got = Some(raw);
            false
        });
        Ok(got)
    }));
    let raw = match read {
        Ok(Ok(Some(raw))) if raw.key == s.key => raw,
        Ok(Ok(found)) => {
            let found = found.map_or("nothing".to_string(), |r| format!("{:?}", r.key));
            let message = format!("the shard index places this sample at bytes {start}..{end}, where the shard has {found}: not read");
            stats.problem(Counter::IndexStale, &s.shard, &s.key, message);
            return false;
        }
        Ok(Err(e)) => {
            let counter = if crate::remote::is_changed(&e) { Counter::ShardChanged } else { Counter::UnreadableShard };
            stats.problem(counter, &s.shard, &s.key, format!("reading the sample at bytes {start}..{end}: {e}"));
            return false;
        }
        Err(_) => {
            stats.problem(Counter::Panic, &s.shard, &s.key, "panic while reading the sample by its byte range");
            return false;
        }
    };
    let Some(full) = to_sample(raw, &s.shard, stats, &cfg.settings.read.extra_members) else { return false };
    s.image = full.image;
    s.text = full.text;
    s.meta = full.meta;
    s.meta_ok = full.meta_ok;
    s.extras = full.extras;
    s.lang = sample_lang(&s.meta, &cfg.settings.read.lang_fields());
    s.span = None;
    true
}

/// Fill `s` with the `n`-th sample (from 0) that the sample rule keeps in its shard, read from the
/// shard's start: a sample passed by its count whose index entry cannot be had.
fn read_nth(cfg: &Job, s: &mut Sample, n: u64, stats: &Stats) -> bool {
    let cache = cfg.cache();
    let found = catch_unwind(AssertUnwindSafe(|| {
        let (reader, _) = open_shard_counted(&s.shard, cache.as_ref()).ok()?;
        let (mut kept, mut raw_i, mut got) = (0u64, 0u64, None);
        read_samples_from(reader, 0, &s.shard, cfg.settings.read.max_member_bytes, &Stats::new(), |raw| {
            let i = raw_i;
            raw_i += 1;
            let Some(sample) = to_sample(raw, &s.shard, &Stats::new(), &cfg.settings.read.extra_members) else { return true };
            kept += 1;
            if kept <= n {
                return true;
            }
            got = Some((i, sample));
            false
        });
        got
    }));
    let Ok(Some((index, full))) = found else {
        stats.problem(Counter::IndexStale, &s.shard, "", format!("sample {n} of the shard's summary count is not in the shard: not read"));
        return false;
    };
    let lang = sample_lang(&full.meta, &cfg.settings.read.lang_fields());
    *s = Sample { index, seq: s.seq, copy: s.copy, lang, ..full };
    true
}

/// Read one shard: each sample that passes selection (exact dedup is within the shard), numbered
/// by its place in the shard and with its language, goes to `out` (`false`: stop, and this
/// returns `false`). Problems are counted; a panic is this shard's problem only.
///
/// When a resume passes over some of its samples (or a count or replay needs only their keys)
/// and the shard has a usable index, those samples are known from the index ([`phantom`]) and
/// the shard is opened at the first sample to read, or not at all.
fn read_shard(cfg: &Job, shard: &str, stats: &Stats, view: View<'_>, out: &mut dyn FnMut(Sample) -> bool) -> bool {
    if stats.fatal().is_some() {
        return false; // the stream ends (another reader's shard was refused access)
    }
    let s = &cfg.settings;
    let lang_fields = s.read.lang_fields();
    let extra = &s.read.extra_members;
    let name: Arc<str> = Arc::from(shard);
    // Exact dedup is within a shard: which samples a shard keeps is then the same on every
    // layout, for every reader, and after any resume (`prepare --dedup` dedups across shards).
    let mut selector = Selector::new(s.select.clone());
    // Where reading starts: byte offset, the sample's number, the key the index expects there.
    let mut start: (u64, u64, Option<String>) = (0, 0, None);
    let mut validator: Option<String> = None;
    // Without selection or a mixture, whole shards are passed by the summary's count: their
    // index files are not even loaded (a resume at 90% of 100k shards loads a few, not 90k).
    let mut counted = 0usize;
    if !is_table_shard(shard) && view.skipping() && passes_by_count(cfg, shard, view) {
        if let Some(n) = cfg.index.samples(shard) {
            while (counted as u64) < n && view.skipping() {
                stats.incr(Counter::IndexPassed);
                if !out(counted_phantom(counted as u64, &name)) {
                    return false;
                }
                counted += 1;
            }
            if counted as u64 == n {
                return true;
            }
        }
    }
    let index = match counted {
        0 => (!is_table_shard(shard) && view.wants_index(shard)).then(|| usable_index(cfg, shard, view.gate.all, stats)).flatten(),
        // Stopped inside the shard: its index now (to seek).
        _ => usable_index(cfg, shard, false, stats),
    };
    // Samples already passed by their count, to leave out of a read from the shard's start
    // (when its index turned out missing or stale).
    let mut drop_first = if index.is_none() { counted } else { 0 };
    // The first sample to read was selected already, from the index (dedup keeps state).
    let mut selected_first = false;
    if let Some(ix) = index {
        let mut j = counted;
        while j < ix.len() {
            let mut sample = phantom(&ix, j, &name);
            let hash = ix.samples.hash[j];
            if !selector.keep_hashed(&sample.key, shard, &sample.meta, sample.meta_ok, || hash, stats) {
                stats.incr(Counter::IndexPassed); // dropped by selection: its bytes are not needed
                j += 1;
                continue;
            }
            if !(view.skipping() || view.excluded(shard, sample.index)) {
                selected_first = true;
                break; // the first sample to deliver: read from here
            }
            stats.incr(Counter::IndexPassed);
            j += 1;
            sample.lang = sample_lang(&sample.meta, &lang_fields);
            if !out(sample) {
                return false;
            }
        }
        if j == ix.len() {
            return true; // every sample passed over: the shard is not opened
        }
        start = (ix.samples.offset[j], ix.samples.index[j], Some(ix.samples.key[j].clone()));
        validator = ix.validator.clone();
    }
    let mut index = start.1;
    // The next sample's number in the shard.
    let mut next_index = || {
        index += 1;
        index - 1
    };
    let mut alive = true;
    let mut blocked = 0u64;
    let start_cpu = CpuStamp::now();
    // What every sample of the shard goes through, whatever the shard's format.
    let mut handle = |sample: Option<Sample>, i: u64| -> bool {
        if let Some(mut sample) = sample {
            if drop_first > 0 {
                drop_first -= 1;
                return true;
            }
            if !std::mem::take(&mut selected_first)
                && !selector.keep(&sample.key, shard, &sample.meta, sample.meta_ok, &sample.image, stats)
            {
                return true;
            }
            sample.index = i;
            sample.lang = sample_lang(&sample.meta, &lang_fields);
            let t = CpuStamp::now();
            alive = out(sample);
            blocked += t.elapsed_ns();
        }
        alive
    };
    let result = if is_table_shard(shard) {
        let Some(reader) = cfg.table_reader.as_ref() else {
            stats.problem(Counter::UnreadableShard, shard, "", "Parquet shards are read through pyarrow: use the Python package");
            return true;
        };
        stats.incr(Counter::ShardsOpened);
        catch_unwind(AssertUnwindSafe(|| {
            reader.read(shard, stats, &mut |row| {
                stats.incr(Counter::SamplesRead);
                let i = next_index();
                handle(row_to_sample(row, i, &name, stats), i)
            })
        }))
    } else {
        if shard.starts_with("pipe:") && !crate::source::pipe_allowed(s.run.allow_pipe) {
            stats.problem(Counter::UnreadableShard, shard, "", "pipe: shards run a shell command: not allowed (allow_pipe=False)");
            return true;
        }
        // Opening connects (remote shards): a panic there is this shard's problem only.
        let cache = cfg.cache();
        let opened = catch_unwind(AssertUnwindSafe(|| match start.0 {
            0 => open_shard_counted(shard, cache.as_ref()),
            at => open_shard_at(shard, at, None, validator.as_deref(), cache.as_ref()),
        }))
        .unwrap_or_else(|_| Err(std::io::Error::other("panic while opening the shard")));
        let (reader, retries) = match opened {
            Ok(r) => r,
            Err(e) if crate::remote::is_fatal(&e) => {
                // Credentials refused: every other shard would be refused too. The stream ends
                // with the reason (raised to the caller), not after counting them all.
                stats.set_fatal(Counter::UnreadableShard, shard, e.to_string());
                return false;
            }
            Err(e) => {
                let counter = if crate::remote::is_changed(&e) { Counter::ShardChanged } else { Counter::UnreadableShard };
                stats.problem(counter, shard, "", e.to_string());
                return true;
            }
        };
        stats.incr(Counter::ShardsOpened);
        let mut expect = start.2.take();
        let result = catch_unwind(AssertUnwindSafe(|| {
            read_samples_from(reader, start.0, shard, s.read.max_member_bytes, stats, |raw| {
                if let Some(key) = expect.take() {
                    if raw.key != key {
                        let message = format!(
                            "the shard index places sample {key:?} at byte {}, where the shard has {:?}: the rest of the shard is not read; rebuild the index",
                            start.0, raw.key
                        );
                        stats.problem(Counter::IndexStale, shard, &raw.key, message);
                        return false;
                    }
                }
                let i = next_index();
                handle(to_sample(raw, &name, stats, extra), i)
            })
        }));
        stats.add(Counter::RemoteRetry, retries.load(std::sync::atomic::Ordering::Relaxed));
        result
    };
    stats.add(Counter::NsRead, start_cpu.elapsed_ns().saturating_sub(blocked));
    if result.is_err() {
        stats.problem(Counter::Panic, shard, "", "panic while reading the shard");
    }
    alive
}

/// The key of copy `copy` (≥ 1) of a sample of `shard` in an exclusion map: copy 0 (the sample
/// itself) is bit `index` of `exclude[shard]`, copy k of `exclude[shard + "\0" + k]` (no path
/// holds a NUL).
pub fn copy_key(shard: &str, copy: u32) -> String {
    if copy == 0 {
        shard.to_string()
    } else {
        format!("{shard}\0{copy}")
    }
}

fn is_excluded(exclude: &HashMap<String, Vec<u8>>, s: &Sample) -> bool {
    let bitmap = if s.copy == 0 { exclude.get(&*s.shard) } else { exclude.get(&copy_key(&s.shard, s.copy)) };
    bitmap.is_some_and(|b| bit_is_set(b, s.index))
}

/// The first `n` samples of the shuffled stream that `job` describes, as `(shard, index in
/// shard, copy)`, found by reading the shards without decoding any image. Resuming on another layout
/// uses it to learn which samples an interrupted run had consumed. The job carries the whole
/// settings, so the replay numbers samples exactly as the stream did (selection, mixture).
pub fn replay(job: &Job, n: u64) -> Vec<(Arc<str>, u64, u32)> {
    let mut out = Vec::with_capacity(n.min(1 << 20) as usize);
    if n == 0 {
        return out;
    }
    let mut job = job.clone();
    job.plan.skip = 0;
    job.plan.phantom = true;
    read_loop(&job, &Stats::new(), None, |s| {
        out.push((s.shard, s.index, s.copy));
        (out.len() as u64) < n
    });
    out
}

/// Samples of each shard that survive selection (subset, metadata filters, exact dedup within
/// the shard), counted without decoding: what `equal_batches` divides among readers. A shard
/// with a usable index is counted from it (nothing of the shard is read); a local one without is
/// read (not decoded); a remote one without is an error naming the fix. Shards are counted in
/// parallel on `threads` threads.
pub fn count_selected(job: &Job, threads: usize) -> Result<Vec<u64>, String> {
    let count = |shard: &String| -> Result<u64, String> {
        let probe = Stats::new();
        if is_remote(shard) && !is_table_shard(shard) && usable_index(job, shard, true, &probe).is_none() {
            return Err(no_index(job, shard, &probe));
        }
        let mut one = job.clone();
        one.shards = vec![shard.clone()];
        let mut settings = (*job.settings).clone();
        settings.read.shuffle_buffer = Some(0);
        settings.mixture = Default::default();
        one.settings = Arc::new(settings);
        one.plan = ReaderPlan { num_threads: 1, phantom: true, ..Default::default() };
        let mut n = 0u64;
        read_loop(&one, &Stats::new(), None, |_| {
            n += 1;
            true
        });
        Ok(n)
    };
    match rayon::ThreadPoolBuilder::new().num_threads(threads.max(1)).build() {
        Ok(pool) => pool.install(|| job.shards.par_iter().map(count).collect()),
        Err(_) => job.shards.iter().map(count).collect(),
    }
}

/// Member groups per tar shard (what `equal_batches` divides without selection): from the shard
/// index's folder summary or the shard's own index when there is one, else from a local shard's
/// headers (seeking over the data); a remote shard without an index is an error naming the fix.
pub fn count_groups(job: &Job, threads: usize) -> Result<Vec<u64>, String> {
    let count = |shard: &String| -> Result<u64, String> {
        let probe = Stats::new();
        if let Some(n) = job.index.samples_read(shard, &probe) {
            return Ok(n);
        }
        if is_remote(shard) {
            return Err(no_index(job, shard, &probe));
        }
        crate::tar::count_samples(shard).map_err(|e| format!("cannot read shard {shard:?}: {e}"))
    };
    match rayon::ThreadPoolBuilder::new().num_threads(threads.max(1)).build() {
        Ok(pool) => pool.install(|| job.shards.par_iter().map(count).collect()),
        Err(_) => job.shards.iter().map(count).collect(),
    }
}

/// The error for a remote shard that must be counted and has no usable index.
fn no_index(job: &Job, shard: &str, probe: &Stats) -> String {
    let redacted = crate::remote::redact(shard);
    let looked = index_location(shard, job.index.dir.as_deref()).map_or("nowhere: give index=".into(), |l| crate::remote::redact(&l));
    let why = probe.problems().first().map_or(String::new(), |p| format!(" ({})", p.message));
    format!(
        "equal_batches needs each shard's sample count before the first batch, and {redacted} is remote with no usable shard \
         index (looked for {looked}){why}: build one with `webli-io index SHARDS -o DIR` and pass index=DIR (or write it beside \
         the shards), or set equal_batches=None"
    )
}

/// A bounded shuffle buffer (webdataset's `shuffle(n)`): once full, each new sample swaps out a
/// random one. Capacity 0 or 1 passes samples straight through.
struct Shuffler {
    buf: Vec<Sample>,
    cap: usize,
    rng: SplitMix64,
}

impl Shuffler {
    fn new(cap: usize, seed: u64) -> Self {
        Self { buf: Vec::with_capacity(cap.min(1 << 16)), cap, rng: SplitMix64::new(seed ^ 0x5348_5546) }
    }

    fn push(&mut self, s: Sample) -> Option<Sample> {
        if self.cap <= 1 {
            return Some(s);
        }
        self.buf.push(s);
        if self.buf.len() < self.cap {
            return None;
        }
        let i = self.rng.below(self.buf.len() as u64) as usize;
        Some(self.buf.swap_remove(i))
    }

    fn drain(mut self) -> impl Iterator<Item = Sample> {
        std::iter::from_fn(move || {
            if self.buf.is_empty() {
                return None;
            }
            let i = self.rng.below(self.buf.len() as u64) as usize;
            Some(self.buf.swap_remove(i))
        })
    }
}

/// Decode and resize one sample to a `size × size × 3` tile. A panic in a decoder is caught here
/// and reported as this sample's error, so one bad image never takes the stream down.
pub fn prepare_image(sample: &Sample, cfg: &Job, stats: Option<&Stats>) -> Result<Vec<u8>, DecodeError> {
    match prepare(sample, cfg, stats)?.0 {
        Tile::Pixels(tile) => Ok(tile),
        Tile::Encoded { .. } => Err(DecodeError { counter: Counter::CorruptImage, message: "left encoded for the GPU".into() }),
    }
}

/// With `decode_device="cuda"`: a whole, unturned JPEG whose header libjpeg-turbo reads is
/// left encoded; its size is checked and filtered and its crop chosen here, as for a CPU decode.
/// (Not when `fingerprints`: the blocklist and near-dedup need the decoded pixels.)
fn leave_encoded(sample: &Sample, cfg: &Job, seed: u64, fingerprints: bool) -> Option<Prepared> {
    let (d, r) = (&cfg.settings.decode, &cfg.settings.resize);
    let bytes: &[u8] = &sample.image;
    // The device resizes by antialiased bilinear into the whole tile: other filters and the
    // letterbox are decoded here.
    if d.decode_device != DecodeDevice::Cuda
        || fingerprints
        || r.interpolation != Interpolation::Bilinear
        || r.resize == ResizeMode::Letterbox
    {
        return None;
    }
    if !is_jpeg(bytes) || !jpeg_is_complete(bytes) || (d.exif_transpose && exif::orientation(bytes) != 1) {
        return None;
    }
    let (w, h) = jpeg::dimensions(bytes)?;
    Some((|| {
        check_pixels(w, h, d.max_pixels)?;
        filter_size(d, w, h)?;
        Ok((Tile::Encoded { crop: crop_box(r, w, h, seed), flip: flips(r.hflip, seed) }, None))
    })())
}

/// `min_image_side` and `max_aspect_ratio`, on the full size.
fn filter_size(d: &DecodeOptions, fw: u32, fh: u32) -> Result<(), DecodeError> {
    if d.min_image_side > 0 && fw.min(fh) < d.min_image_side {
        return Err(DecodeError { counter: Counter::Filtered, message: format!("{fw}x{fh}: a side under {}", d.min_image_side) });
    }
    if let Some(ratio) = d.max_aspect_ratio {
        if fw.max(fh) as f64 > ratio * fw.min(fh) as f64 {
            return Err(DecodeError { counter: Counter::Filtered, message: format!("{fw}x{fh}: aspect ratio over {ratio}") });
        }
    }
    Ok(())
}

/// Decode, fingerprint (when the blocklist or near-dedup needs it), check the blocklist, resize.
/// A sample's tile, and its fingerprint when the blocklist or near-dedup needs one.
type Prepared = Result<(Tile, Option<Fingerprint>), DecodeError>;

fn prepare(sample: &Sample, cfg: &Job, stats: Option<&Stats>) -> Prepared {
    let (d, r, near) = (&cfg.settings.decode, &cfg.settings.resize, &cfg.settings.near);
    let run = || -> Prepared {
        let t0 = CpuStamp::now();
        let seed = seed_for(cfg.plan.sample_seed, &sample.key);
        // Images are fingerprinted whole (blocklist, near-dedup): then the whole is decoded.
        let fingerprints = cfg.blocklist.is_some() || near.near_dedup;
        if let Some(done) = leave_encoded(sample, cfg, seed, fingerprints) {
            if let Some(st) = stats {
                st.time(Counter::NsDecode, t0);
            }
            return done;
        }
        let region_ok = d.crop_decode && !fingerprints && !matches!(r.resize, ResizeMode::Squash | ResizeMode::Letterbox);
        // The crop is chosen on the full-size image, so a scaled or region decode changes
        // nothing but cost: the decoder may shrink the image as long as the crop stays >= the
        // target on both sides, and may leave out what the crop does not read.
        let decoded = decode_oriented(&sample.image, d.max_pixels, d.exif_transpose, |w, h| {
            let (l, t, cw, ch) = crop_box(r, w, h, seed);
            Request {
                min_factor: if d.scaled_decode { min_scale(r, (l, t, cw, ch)) } else { 1.0 },
                region: region_ok.then_some(((l, t, cw, ch), r.image_size)),
                fast: d.fast_decode,
            }
        })?;
        let (fw, fh) = (decoded.full_width, decoded.full_height);
        filter_size(d, fw, fh)?;
        let img = &decoded.image;
        let fp = fingerprints.then(|| fingerprint(img, (0.0, 0.0, img.width as f64, img.height as f64)));
        if let (Some(index), Some(fp)) = (&cfg.blocklist, fp) {
            if let Some(id) = index.find(fp, near.blocklist_radius.0, near.blocklist_radius.1) {
                return Err(DecodeError { counter: Counter::Blocklisted, message: format!("matches blocklist image {id}") });
            }
        }
        let t1 = CpuStamp::now();
        if let Some(st) = stats {
            st.time(Counter::NsDecode, t0);
        }
        let crop = decoded.locate(crop_box(r, fw, fh, seed));
        let s = r.image_size as usize;
        let mut tile = vec![0u8; s * s * 3];
        resize_into(img, crop, r, &mut tile)
            .map_err(|m| DecodeError { counter: Counter::CorruptImage, message: format!("resize failed: {m}") })?;
        if flips(r.hflip, seed) {
            hflip(&mut tile, r.image_size);
        }
        if let Some(st) = stats {
            st.time(Counter::NsResize, t1);
        }
        Ok((Tile::Pixels(tile), fp))
    };
    catch_unwind(AssertUnwindSafe(run)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        Err(DecodeError { counter: Counter::Panic, message: format!("panic in decode/resize: {msg}") })
    })
}

/// The batcher's progress, read by the reader when cycling (see [`read_loop`]).
#[derive(Debug, Default)]
pub struct Progress {
    /// Tiles made.
    pub tiles: AtomicU64,
    /// Samples tried (made into tiles, or failed, or dropped as near-duplicates).
    pub tried: AtomicU64,
    /// The batcher has returned.
    pub ended: AtomicBool,
}

impl Progress {
    /// Wait until the batcher has made a tile, or tried all `sent` samples, or returned:
    /// whether it tried them all and made nothing of them.
    fn made_nothing_of(&self, sent: u64) -> bool {
        loop {
            if self.tiles.load(Ordering::Acquire) > 0 || self.ended.load(Ordering::Acquire) {
                return false;
            }
            if self.tried.load(Ordering::Acquire) >= sent {
                return self.tiles.load(Ordering::Acquire) == 0;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn batch_loop(cfg: &Job, stats: &Stats, pool: rayon::ThreadPool, rx: Receiver<Sample>, tx: Sender<Batch>, made: &Progress) {
    let (st, plan) = (&*cfg.settings, &cfg.plan);
    let batch_size = st.batch.batch_size;
    let mut pending: Vec<(Sample, Tile)> = Vec::with_capacity(batch_size * 2);
    let min_chunk = plan.num_threads * 4;
    // Near-dedup: two generations of fingerprints, bounded like the exact dedup set.
    let near_cap = st.select.dedup_capacity;
    let near_radius = st.near.near_dedup_radius();
    let mut near: [HashIndex; 2] = [HashIndex::new(), HashIndex::new()];
    // With a limit and cycling (equal batches): the last good tiles, to pad with when the shards
    // cannot fill the share (all of a pass failed to decode or was filtered).
    let keep_for_padding = (plan.cycle || plan.pad) && plan.limit > 0;
    let mut recent: std::collections::VecDeque<(Sample, Tile)> = Default::default();
    let send = |items: Vec<(Sample, Tile)>| -> bool {
        let t = CpuStamp::now();
        let batch = assemble(items, st.resize.image_size, &st.batch, &st.read.extra_members);
        stats.time(Counter::NsBatch, t);
        tx.send(batch).is_ok()
    };
    let mut open = true;
    let mut delivered = 0u64;
    let limit = if plan.limit == 0 { u64::MAX } else { plan.limit };
    while open && delivered < limit {
        let want = batch_size.saturating_sub(pending.len()).max(min_chunk);
        let mut chunk = Vec::with_capacity(want);
        match rx.recv() {
            Ok(s) => chunk.push(s),
            Err(_) => open = false,
        }
        while open && chunk.len() < want {
            // With `pad`, the reader may wait for this batcher to have tried what it sent (see
            // `read_loop`): take what is there, never wait for more.
            let next = if plan.pad { rx.try_recv().map_err(|e| e.is_disconnected()) } else { rx.recv().map_err(|_| true) };
            match next {
                Ok(s) => chunk.push(s),
                Err(disconnected) => {
                    open = !disconnected;
                    if open {
                        break;
                    }
                }
            }
        }
        let results: Vec<Prepared> = pool.install(|| chunk.par_iter().map(|s| prepare(s, cfg, Some(stats))).collect());
        let tried = results.len() as u64;
        for (sample, result) in chunk.into_iter().zip(results) {
            match result {
                Ok((tile, fp)) => {
                    if let (Some((rp, rd)), Some(fp)) = (near_radius, fp) {
                        // In stream order, so the first of a group is kept, whatever the threads.
                        if near.iter().any(|ix| ix.find(fp, rp, rd).is_some()) {
                            stats.problem(Counter::NearDuplicate, &sample.shard, &sample.key, "near-duplicate of an earlier image");
                            continue;
                        }
                        near[0].insert(fp, 0);
                        if near[0].len() >= near_cap {
                            near.swap(0, 1);
                            near[0] = HashIndex::new();
                        }
                    }
                    made.tiles.fetch_add(1, Ordering::Release);
                    if keep_for_padding {
                        if recent.len() == batch_size {
                            recent.pop_front();
                        }
                        recent.push_back((sample.clone(), tile.clone()));
                    }
                    pending.push((sample, tile))
                }
                Err(e) => stats.problem(e.counter, &sample.shard, &sample.key, e.message),
            }
        }
        made.tried.fetch_add(tried, Ordering::Release);
        while pending.len() >= batch_size && delivered < limit {
            let n = (batch_size as u64).min(limit - delivered) as usize;
            let rest = pending.split_off(n);
            delivered += n as u64;
            if !send(std::mem::replace(&mut pending, rest)) {
                return;
            }
        }
    }
    if keep_for_padding && delivered + (pending.len() as u64) < limit {
        // The shards could not fill this reader's share: pad by repeating its own last good
        // samples, counted, so every reader still yields the same number of batches.
        if recent.is_empty() {
            stats.problem(
                Counter::PadFailed,
                cfg.shards.first().map_or("", |s| s.as_str()),
                "",
                "equal_batches: this reader has no sample that decodes and passes the filters, so it cannot fill its share",
            );
            return;
        }
        // A batch at a time, so a consumer that has gone away (or a share without end, as a
        // resampled stream's) stops it at the next send.
        let mut need = limit - delivered - pending.len() as u64;
        let mut source = recent.iter().cycle();
        while need > 0 {
            let take = (batch_size.saturating_sub(pending.len()).max(1) as u64).min(need);
            pending.extend(source.by_ref().take(take as usize).cloned());
            stats.add(Counter::Padded, take);
            need -= take;
            while pending.len() >= batch_size && delivered < limit {
                let rest = pending.split_off(batch_size);
                delivered += batch_size as u64;
                if !send(std::mem::replace(&mut pending, rest)) {
                    return;
                }
            }
        }
    }
    if !pending.is_empty() && !st.batch.drop_last && plan.limit == 0 {
        send(pending);
    } else if !pending.is_empty() && !st.batch.drop_last && !plan.cycle && delivered < limit {
        let n = (pending.len() as u64).min(limit - delivered) as usize;
        pending.truncate(n);
        send(pending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::generic::tests::encoded;
    use crate::tar::tests::make_tar;
    use image::ImageFormat;
    use serde_json::json;

    fn write_shards(dir: &std::path::Path, shards: usize, per: usize) -> Vec<String> {
        let jpg = encoded(64, 48, ImageFormat::Jpeg);
        (0..shards)
            .map(|s| {
                let mut members: Vec<(String, Vec<u8>)> = Vec::new();
                for i in 0..per {
                    let k = format!("{s:03}{i:04}");
                    members.push((format!("{k}.jpg"), jpg.clone()));
                    members.push((format!("{k}.txt"), format!("caption {k}").into_bytes()));
                    members.push((format!("{k}.json"), format!("{{\"i\": {i}}}").into_bytes()));
                }
                // A corrupt image and a sample without a caption in every shard.
                members.push((format!("{s:03}bad.jpg"), b"\xff\xd8garbage".to_vec()));
                members.push((format!("{s:03}bad.txt"), b"x".to_vec()));
                members.push((format!("{s:03}nocap.jpg"), jpg.clone()));
                let refs: Vec<(&str, &[u8])> = members.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
                let path = dir.join(format!("s-{s}.tar"));
                std::fs::write(&path, make_tar(&refs)).unwrap();
                path.to_string_lossy().into_owned()
            })
            .collect()
    }

    /// A job over `shards` with these flat settings, one thread, no resume.
    fn job(shards: Vec<String>, flat: serde_json::Value) -> Job {
        Job::new(shards, Settings::from_flat(flat.as_object().unwrap().clone()).unwrap())
    }

    fn with_plan(mut job: Job, f: impl FnOnce(&mut ReaderPlan)) -> Job {
        f(&mut job.plan);
        job
    }

    fn run(cfg: Job) -> (Vec<Batch>, Arc<Stats>) {
        let mut p = Pipeline::start(cfg).unwrap();
        let mut out = Vec::new();
        while let Some(b) = p.next_batch() {
            out.push(b);
        }
        let stats = p.stats().clone();
        (out, stats)
    }

    #[test]
    fn shards_in_flight_take_turns_and_a_finished_shard_hands_its_turn_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut shards = write_shards(dir.path(), 3, 4);
        shards.extend(write_shards(&dir.path().join("more").tap_mkdir(), 1, 2));
        let cfg = job(shards.clone(), json!({"batch_size": 100, "image_size": 8, "shards_in_flight": 2}));
        let (batches, stats) = run(cfg);
        let keys: Vec<String> = batches.iter().flat_map(|b| b.keys.clone()).collect();
        // s0 and s1 alternate; when s0 ends its turn goes to s2, then to the 4th shard.
        let want = ["0000000", "0010000", "0000001", "0010001", "0000002", "0010002", "0000003", "0010003"];
        assert_eq!(&keys[..8], &want);
        assert_eq!(keys.len(), 14, "{keys:?}");
        assert_eq!(stats.get(Counter::ShardsOpened), 4);
        // The same order on every run, and every sample once, whatever the reading threads do.
        for _ in 0..3 {
            let again: Vec<String> = run(job(shards.clone(), json!({"batch_size": 100, "image_size": 8, "shards_in_flight": 2})))
                .0
                .iter()
                .flat_map(|b| b.keys.clone())
                .collect();
            assert_eq!(again, keys);
        }
    }

    trait TapMkdir {
        fn tap_mkdir(self) -> Self;
    }

    impl TapMkdir for std::path::PathBuf {
        fn tap_mkdir(self) -> Self {
            std::fs::create_dir_all(&self).unwrap();
            self
        }
    }

    #[test]
    fn streams_every_good_sample_once_and_counts_the_bad() {
        let dir = tempfile::tempdir().unwrap();
        let shards = write_shards(dir.path(), 3, 10);
        let cfg = with_plan(job(shards, json!({"batch_size": 7, "image_size": 16})), |p| p.num_threads = 2);
        let (batches, stats) = run(cfg);
        let keys: Vec<String> = batches.iter().flat_map(|b| b.keys.clone()).collect();
        assert_eq!(keys.len(), 30);
        let mut uniq = keys.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 30);
        assert_eq!(batches.iter().map(|b| b.len()).collect::<Vec<_>>(), [7, 7, 7, 7, 2]);
        assert_eq!(batches[0].images.len(), 7 * 16 * 16 * 3);
        assert_eq!(stats.get(Counter::SamplesYielded), 30);
        assert_eq!(stats.get(Counter::SamplesRead), 36);
        assert_eq!(stats.get(Counter::CorruptImage) + stats.get(Counter::UnsupportedImage), 3);
        assert_eq!(stats.get(Counter::MissingCaption), 3);
        assert_eq!(stats.get(Counter::ShardsOpened), 3);
    }

    #[test]
    fn order_is_deterministic_and_independent_of_threads() {
        let dir = tempfile::tempdir().unwrap();
        let shards = write_shards(dir.path(), 2, 20);
        let keys = |threads: usize, seed: u64| {
            let flat = json!({"batch_size": 5, "image_size": 8, "shuffle_buffer": 16, "seed": seed, "resize": "random_resized_crop", "drop_last": true});
            let cfg = with_plan(job(shards.clone(), flat), |p| {
                p.num_threads = threads;
                p.shuffle_seed = seed;
                p.sample_seed = seed;
            });
            let (b, _) = run(cfg);
            (
                b.iter().flat_map(|b| b.keys.clone()).collect::<Vec<_>>(),
                b.into_iter().flat_map(|b| b.images.as_u8().to_vec()).collect::<Vec<_>>(),
            )
        };
        let (k1, i1) = keys(1, 7);
        let (k2, i2) = keys(3, 7);
        assert_eq!(k1, k2);
        assert_eq!(i1, i2);
        assert_eq!(k1.len(), 40);
        let (k3, _) = keys(2, 8);
        assert_ne!(k1, k3, "another seed shuffles differently");
        let mut s1 = k1.clone();
        s1.sort();
        let mut s3 = k3.clone();
        s3.sort();
        assert_eq!(s1, s3);
    }

    #[test]
    fn dropping_midway_stops_the_threads() {
        let dir = tempfile::tempdir().unwrap();
        let shards = write_shards(dir.path(), 4, 50);
        let cfg = job(shards, json!({"batch_size": 4, "image_size": 8, "prefetch": 1}));
        let mut p = Pipeline::start(cfg).unwrap();
        assert!(p.next_batch().is_some());
        drop(p); // joins both threads; a hang here fails the test by timeout
    }

    fn resumable_cfg(shards: Vec<String>) -> Job {
        with_plan(job(shards, json!({"batch_size": 4, "image_size": 8, "shuffle_buffer": 7, "seed": 3})), |p| {
            p.num_threads = 2;
            p.shuffle_seed = 3;
        })
    }

    #[test]
    fn resume_from_any_batch_gives_the_rest_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = resumable_cfg(write_shards(dir.path(), 3, 9));
        let (full, _) = run(cfg.clone());
        let keys = |b: &[Batch]| b.iter().map(|b| b.keys.clone()).collect::<Vec<_>>();
        for k in 0..full.len() {
            let (rest, _) = run(with_plan(cfg.clone(), |p| p.skip = full[k].next_seq));
            assert_eq!(keys(&rest), keys(&full[k + 1..]), "resumed after batch {k}");
            if let Some(first) = rest.first() {
                assert_eq!(first.images.as_u8(), full[k + 1].images.as_u8());
            }
        }
    }

    #[test]
    fn replay_and_exclude_split_the_data_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = resumable_cfg(write_shards(dir.path(), 3, 9));
        let (full, _) = run(cfg.clone());
        let consumed_after = full[2].next_seq;
        let done = replay(&cfg, consumed_after);
        assert_eq!(done.len() as u64, consumed_after);
        // The consumed samples are exactly those the first 3 batches came from (plus the bad ones
        // between them, which never reach a batch).
        let mut exclude: std::collections::HashMap<String, Vec<u8>> = Default::default();
        for (shard, i, _) in &done {
            let bm = exclude.entry(shard.to_string()).or_default();
            if bm.len() <= (*i / 8) as usize {
                bm.resize((*i / 8) as usize + 1, 0);
            }
            bm[(*i / 8) as usize] |= 1 << (i % 8);
        }
        // Another layout: a different seed and shard order, same data minus what was consumed.
        let mut shards = cfg.shards.clone();
        shards.reverse();
        let mut other = with_plan(cfg.clone(), |p| {
            p.shuffle_seed = 99;
            p.exclude = exclude;
        });
        other.shards = shards;
        let (rest, _) = run(other);
        let mut seen: Vec<String> = full[..3].iter().chain(rest.iter()).flat_map(|b| b.keys.clone()).collect();
        let total = seen.len();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), total, "no sample twice");
        assert_eq!(total, full.iter().map(|b| b.len()).sum::<usize>(), "no sample lost");
    }

    #[test]
    fn limit_and_cycle_give_an_exact_count() {
        let dir = tempfile::tempdir().unwrap();
        let shards = write_shards(dir.path(), 2, 5); // 10 good samples
        for (limit, cycle, want) in [(6, false, vec![4, 2]), (8, true, vec![4, 4]), (24, true, vec![4; 6]), (24, false, vec![4, 4, 2])] {
            let cfg = with_plan(job(shards.clone(), json!({"batch_size": 4, "image_size": 8, "shuffle_buffer": 3})), |p| {
                p.limit = limit;
                p.cycle = cycle;
            });
            let (b, _) = run(cfg);
            assert_eq!(b.iter().map(|b| b.len()).collect::<Vec<_>>(), want, "limit {limit} cycle {cycle}");
        }
        // A cycled stream repeats samples only after it has given each one.
        let cfg = with_plan(job(shards, json!({"batch_size": 5, "image_size": 8})), |p| {
            p.limit = 20;
            p.cycle = true;
        });
        let (b, _) = run(cfg);
        let keys: Vec<String> = b.iter().flat_map(|b| b.keys.clone()).collect();
        let mut first: Vec<_> = keys[..10].to_vec();
        first.sort();
        first.dedup();
        assert_eq!(first.len(), 10);
    }

    #[test]
    fn a_consumer_that_pauses_does_not_end_a_cycled_stream() {
        // 10 samples, a pass far smaller than the sample channel: while the consumer pauses,
        // the batcher waits on its full output and the reader runs whole passes into the
        // channel, untried. That once read as "a pass made no tile": the reader stopped and the
        // batcher padded (and, with a share without end, overflowed). Now only tried samples count.
        let dir = tempfile::tempdir().unwrap();
        let shards = write_shards(dir.path(), 2, 5);
        let cfg = with_plan(job(shards, json!({"batch_size": 4, "image_size": 8, "prefetch": 1})), |p| {
            p.limit = u64::MAX / 2;
            p.cycle = true;
        });
        let mut pipe = Pipeline::start(cfg).unwrap();
        assert_eq!(pipe.next_batch().unwrap().len(), 4);
        std::thread::sleep(Duration::from_millis(400));
        for _ in 0..40 {
            assert_eq!(pipe.next_batch().map(|b| b.len()), Some(4));
        }
        assert_eq!(pipe.stats().get(Counter::Padded), 0, "{:?}", pipe.stats().snapshot());
        drop(pipe);
    }

    #[test]
    fn a_panic_while_reading_a_shard_is_counted_and_the_epoch_goes_on() {
        // An injected panic inside a shard reader (here a table reader that panics part-way):
        // that shard's problem, named, and the next shard is read.
        struct Boom;
        impl TableReader for Boom {
            fn read(&self, shard: &str, _: &Stats, emit: &mut dyn FnMut(crate::sample::TableRow) -> bool) {
                let row = crate::sample::TableRow { key: Some("r0".into()), image: None, text: None, meta: Default::default() };
                emit(row);
                panic!("injected panic in {shard}");
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let mut shards = write_shards(dir.path(), 1, 4);
        shards.insert(0, "boom.parquet".into());
        let mut cfg = job(shards, json!({"batch_size": 3, "image_size": 8}));
        cfg.table_reader = Some(Arc::new(Boom));
        let (batches, stats) = run(cfg);
        assert_eq!(batches.iter().map(|b| b.len()).sum::<usize>(), 4, "the shard after the panic is read");
        assert_eq!(stats.get(Counter::Panic), 1);
        let p = stats.problems().into_iter().find(|p| p.counter == Counter::Panic).unwrap();
        assert_eq!(p.shard, "boom.parquet");
    }

    #[test]
    fn unreadable_shard_is_counted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let mut shards = write_shards(dir.path(), 1, 3);
        shards.insert(0, dir.path().join("gone.tar").to_string_lossy().into_owned());
        let (batches, stats) = run(job(shards, json!({"batch_size": 10, "image_size": 8})));
        assert_eq!(batches.iter().map(|b| b.len()).sum::<usize>(), 3);
        assert_eq!(stats.get(Counter::UnreadableShard), 1);
    }
}
