//! A fingerprint index with sub-linear Hamming-radius lookup: the eval-set blocklist, and the
//! within-stream near-duplicate filter.
//!
//! Multi-index hashing (Norouzi et al. 2012): the 64-bit pHash is cut into four 16-bit chunks,
//! each with a table from chunk value to entries. Two hashes within Hamming distance `r` agree
//! to within `⌊r/4⌋` on at least one chunk (pigeonhole), so a lookup probes, in each table, the
//! chunk values within that sub-radius (1, 17 or 137 values for ⌊r/4⌋ = 0, 1, 2) and checks
//! only the entries found there: pHash within `r`, then dHash within its own radius to confirm.
//! The tables are dense arrays indexed by chunk value (4 × 65,536 buckets), so a probe is an
//! array access. Written by hand: no maintained crate does multi-index Hamming search.
//!
//! Lookup speed (the blocklist's [`FrozenIndex`]) was profiled, not guessed: at 1 M hashes a
//! lookup first stalled on reading each candidate's full fingerprint (fixed: 32-bit keys in the
//! buckets), then on cache misses (fixed: keys in 16 MB that stay in the last-level cache,
//! prefetched a few queries ahead; fixed 128- and 64-byte bucket blocks were tried and were
//! slower, their padding pushing the tables out of cache), then on compute (fixed: POPCNT and
//! AVX-512 dispatch at run time, the refined pigeonhole's 52 probes instead of 68).

use std::io::{Read, Write};

use crate::fingerprint::Fingerprint;

const CHUNKS: usize = 4;
const BUCKETS: usize = 1 << 16;
const MAGIC: &[u8; 8] = b"WLIBLK01";

pub struct HashIndex {
    entries: Vec<(u64, u64, u32)>,
    /// Per chunk table and chunk value: (pHash, entry index). The pHash sits in the bucket so a
    /// probe scans memory in order; the entry is read only for a pHash within the radius.
    tables: Vec<Vec<(u64, u32)>>,
}

impl std::fmt::Debug for HashIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HashIndex({} fingerprints)", self.entries.len())
    }
}

impl Default for HashIndex {
    fn default() -> Self {
        Self::new()
    }
}

fn chunk(h: u64, c: usize) -> usize {
    ((h >> (16 * c)) & 0xFFFF) as usize
}

/// Every bucket a lookup within `rp` bits of `phash` must scan, for tables indexed by the top
/// `bits` bits of each 16-bit chunk (bucket = table × 2^bits + index value), with the Hamming
/// distance of that value from the query's.
///
/// The refined pigeonhole of Norouzi et al.: write `rp = 4a + b` (b < 4); if chunks `0..=b`
/// each differ by more than `a` bits and the others by more than `a - 1`, the whole hash differs
/// by at least `(b + 1)(a + 1) + (3 - b)a = rp + 1`. So chunks `0..=b` are probed to sub-radius
/// `a` and the rest to `a - 1` (not at all when `a = 0`): 52 probes at the default `rp = 6`
/// instead of 68 for sub-radius 1 everywhere.
/// The pigeonhole holds on any subset of a chunk's bits, so a table may index fewer than 16.
fn probe_buckets(phash: u64, rp: u32, bits: u32, out: &mut Vec<(usize, u32)>) {
    let (a, b) = (rp / CHUNKS as u32, rp % CHUNKS as u32);
    out.clear();
    for c in 0..CHUNKS {
        let sub = if c as u32 <= b {
            a
        } else if a == 0 {
            continue;
        } else {
            a - 1
        };
        let (q, base) = (chunk(phash, c) >> (16 - bits), c << bits);
        out.push((base + q, 0));
        if sub >= 1 {
            out.extend((0..bits).map(|i| (base + (q ^ (1 << i)), 1)));
        }
        if sub >= 2 {
            for i in 0..bits {
                out.extend((i + 1..bits).map(|j| (base + (q ^ (1 << i) ^ (1 << j)), 2)));
            }
        }
    }
}

impl HashIndex {
    pub fn new() -> Self {
        Self { entries: Vec::new(), tables: vec![Vec::new(); CHUNKS * BUCKETS] }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held: entries, table slots and bucket headers.
    pub fn memory_bytes(&self) -> usize {
        self.entries.capacity() * 24
            + self.tables.iter().map(|t| t.capacity() * std::mem::size_of::<(u64, u32)>()).sum::<usize>()
            + self.tables.len() * std::mem::size_of::<Vec<(u64, u32)>>()
    }

    pub fn insert(&mut self, fp: Fingerprint, id: u32) {
        let idx = self.entries.len() as u32;
        self.entries.push((fp.phash, fp.dhash, id));
        for c in 0..CHUNKS {
            self.tables[c * BUCKETS + chunk(fp.phash, c)].push((fp.phash, idx));
        }
    }

    /// The id of an entry within `rp` bits of pHash and `rd` bits of dHash, if any. `rp` up to
    /// 11 (sub-radius 2 per chunk).
    pub fn find(&self, fp: Fingerprint, rp: u32, rd: u32) -> Option<u32> {
        let mut buckets = Vec::with_capacity(CHUNKS * 137);
        probe_buckets(fp.phash, rp, 16, &mut buckets);
        buckets.iter().find_map(|&(b, _)| {
            // The entry (for its dHash) is read only when the pHash in the bucket is close.
            self.tables[b].iter().filter(|&&(p, _)| (p ^ fp.phash).count_ones() <= rp).find_map(|&(_, i)| {
                let (_, d, id) = self.entries[i as usize];
                ((d ^ fp.dhash).count_ones() <= rd).then_some(id)
            })
        })
    }

    /// A read-only copy laid out for fast lookups (the blocklist's form).
    pub fn freeze(&self) -> FrozenIndex {
        FrozenIndex::build(&self.entries)
    }

    pub fn write_to(&self, mut w: impl Write) -> std::io::Result<()> {
        w.write_all(MAGIC)?;
        w.write_all(&(self.entries.len() as u64).to_le_bytes())?;
        for &(p, d, id) in &self.entries {
            w.write_all(&p.to_le_bytes())?;
            w.write_all(&d.to_le_bytes())?;
            w.write_all(&id.to_le_bytes())?;
        }
        Ok(())
    }

    pub fn read_from(mut r: impl Read) -> std::io::Result<Self> {
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(bad("not a webli-io blocklist (write one with `webli-io index-eval`)"));
        }
        let mut n = [0u8; 8];
        r.read_exact(&mut n)?;
        let n = u64::from_le_bytes(n);
        let mut index = Self::new();
        let mut rec = [0u8; 20];
        for _ in 0..n {
            r.read_exact(&mut rec).map_err(|_| bad("blocklist file is cut short"))?;
            let p = u64::from_le_bytes(rec[0..8].try_into().expect("8 bytes"));
            let d = u64::from_le_bytes(rec[8..16].try_into().expect("8 bytes"));
            let id = u32::from_le_bytes(rec[16..20].try_into().expect("4 bytes"));
            index.insert(Fingerprint { phash: p, dhash: d }, id);
        }
        Ok(index)
    }
}

/// Index bits per chunk table of a [`FrozenIndex`] of `n` entries: about 8–16 entries a bucket,
/// 16 bits (the whole chunk) from ~1 M entries up.
fn index_bits(n: usize) -> u32 {
    let want = (n / 12).max(1).next_power_of_two().trailing_zeros();
    want.clamp(4, 16)
}

/// A frozen [`HashIndex`], laid out for lookups: each chunk table is one contiguous array (CSR:
/// a start per bucket, then the bucket's keys side by side),
/// so a probe reads one start and a short run of keys.
///
/// Each table is indexed by the top `bits` bits of its 16-bit chunk (16 from ~1 M entries up,
/// fewer for smaller lists so buckets stay ~8–16 entries and memory follows the size); the
/// pigeonhole argument holds on those bits alone, the others are checked with the whole hash.
/// A key is 32 bits of the pHash, the two chunks after the table's own: it passes on only ~3 in
/// 10,000 random entries to the full check (64-bit pHash and dHash in their own arrays), so the
/// arrays a lookup scans (16 MB of keys for 1 M hashes) can stay in a server's last-level cache.
/// Written by hand, as [`HashIndex`]: the layout is what makes lookups fast, and no crate offers it.
pub struct FrozenIndex {
    bits: u32,
    /// Per bucket, where its keys start in `keys`; one more entry at the end.
    start: Vec<u32>,
    /// The keys, bucket after bucket (in 64-byte lines, for the huge-page allocation).
    lines: Vec<Line>,
    /// The entry number of each key.
    slot: Vec<u32>,
    hashes: Vec<(u64, u64)>,
    ids: Vec<u32>,
}

/// Keys per 64-byte line.
const LINE_KEYS: usize = 16;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u32; LINE_KEYS]);

/// `n` zeroed keys on 64-byte lines, whose memory the kernel is asked to back with 2 MB pages
/// (transparent huge pages in `madvise` mode, the common default): lookups touch the keys at
/// random, and with 4 KB pages most probes of a 16 MB array would also miss the TLB. A hint
/// only: where it is refused, the memory is ordinary.
fn huge_lines(n: usize) -> Vec<Line> {
    let v = vec![Line([0; LINE_KEYS]); n.div_ceil(LINE_KEYS)];
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.as_ptr() as usize;
        let end = start + v.len() * std::mem::size_of::<Line>();
        let (a, b) = ((start + HUGE - 1) & !(HUGE - 1), end & !(HUGE - 1));
        if b > a {
            // SAFETY: [a, b) lies inside the Vec's own allocation; MADV_HUGEPAGE changes only
            // how it is backed, never its contents or mapping.
            unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE) };
        }
    }
    v
}

#[inline]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, even on an invalid address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl std::fmt::Debug for FrozenIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FrozenIndex({} fingerprints)", self.ids.len())
    }
}

impl FrozenIndex {
    /// The keys as one array (`start` indexes it).
    #[inline(always)]
    fn keys(&self) -> &[u32] {
        // SAFETY: `Line` is a plain `[u32; 16]` (repr C, no padding), so `n` lines are 16·n u32s.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const u32, self.lines.len() * LINE_KEYS) }
    }

    /// The key of `phash` in chunk table `c`: chunks `c + 1` and `c + 2` (mod 4).
    #[inline]
    fn key(phash: u64, c: usize) -> u32 {
        phash.rotate_right(16 * (c as u32 + 1)) as u32
    }

    fn build(entries: &[(u64, u64, u32)]) -> Self {
        let bits = index_bits(entries.len());
        let per_table = 1usize << bits;
        let bucket_of = |p: u64, c: usize| c * per_table + (chunk(p, c) >> (16 - bits));
        let mut counts = vec![0u32; CHUNKS * per_table];
        for e in entries {
            for c in 0..CHUNKS {
                counts[bucket_of(e.0, c)] += 1;
            }
        }
        let mut start = vec![0u32; CHUNKS * per_table + 1];
        for (b, &n) in counts.iter().enumerate() {
            start[b + 1] = start[b] + n;
        }
        let total = start[CHUNKS * per_table] as usize;
        let mut lines = huge_lines(total);
        let mut slot = vec![0u32; total];
        let mut fill = start.clone();
        for (i, e) in entries.iter().enumerate() {
            for c in 0..CHUNKS {
                let b = bucket_of(e.0, c);
                let k = fill[b] as usize;
                lines[k / LINE_KEYS].0[k % LINE_KEYS] = Self::key(e.0, c);
                slot[k] = i as u32;
                fill[b] += 1;
            }
        }
        FrozenIndex {
            bits,
            start,
            lines,
            slot,
            hashes: entries.iter().map(|e| (e.0, e.1)).collect(),
            ids: entries.iter().map(|e| e.2).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn memory_bytes(&self) -> usize {
        (self.start.len() + self.lines.len() * LINE_KEYS + self.slot.len() + self.ids.len()) * 4 + self.hashes.len() * 16
    }

    /// Scan one bucket; `near` is the distance of its index bits from the query's.
    #[inline(always)]
    fn scan(&self, bucket: usize, near: u32, fp: Fingerprint, rp: u32, rd: u32) -> Option<u32> {
        let (a, b) = (self.start[bucket] as usize, self.start[bucket + 1] as usize);
        let q = Self::key(fp.phash, bucket >> self.bits);
        let room = rp - near;
        for (k, key) in self.keys()[a..b].iter().enumerate() {
            if (key ^ q).count_ones() <= room {
                if let Some(id) = self.confirm(a + k, fp, rp, rd) {
                    return Some(id);
                }
            }
        }
        None
    }

    /// The full check of the entry behind key number `k`: its whole pHash and dHash.
    #[inline(always)]
    fn confirm(&self, k: usize, fp: Fingerprint, rp: u32, rd: u32) -> Option<u32> {
        let e = self.slot[k] as usize;
        let (p, d) = self.hashes[e];
        ((p ^ fp.phash).count_ones() <= rp && (d ^ fp.dhash).count_ones() <= rd).then(|| self.ids[e])
    }

    /// As [`HashIndex::find`] (through [`FrozenIndex::find_many`], for its SIMD scan).
    pub fn find(&self, fp: Fingerprint, rp: u32, rd: u32) -> Option<u32> {
        self.find_many_ahead(std::slice::from_ref(&fp), rp, rd, 1)[0]
    }

    /// [`FrozenIndex::find`] for many queries, software-pipelined: the bucket starts of query
    /// `i + 2D` and the bucket keys of query `i + D` are prefetched while query `i` is scanned,
    /// so the random memory reads of a few queries are always in flight together.
    pub fn find_many(&self, queries: &[Fingerprint], rp: u32, rd: u32) -> Vec<Option<u32>> {
        self.find_many_ahead(queries, rp, rd, 8)
    }

    pub fn find_many_ahead(&self, queries: &[Fingerprint], rp: u32, rd: u32, ahead: usize) -> Vec<Option<u32>> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vpopcntdq") {
                // SAFETY: the CPU has AVX-512F and VPOPCNTDQ (checked just above).
                return unsafe { self.find_many_avx512(queries, rp, rd, ahead) };
            }
            if std::is_x86_feature_detected!("popcnt") {
                // SAFETY: the CPU has POPCNT (checked just above).
                return unsafe { self.find_many_popcnt(queries, rp, rd, ahead) };
            }
        }
        self.find_many_portable::<false>(queries, rp, rd, ahead)
    }

    /// With AVX-512 (VPOPCNTDQ): a bucket's keys are compared 16 at a time.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vpopcntdq,popcnt")]
    unsafe fn find_many_avx512(&self, queries: &[Fingerprint], rp: u32, rd: u32, ahead: usize) -> Vec<Option<u32>> {
        self.find_many_portable::<true>(queries, rp, rd, ahead)
    }

    /// [`FrozenIndex::scan`] with 16 keys per AVX-512 instruction; only callable where
    /// AVX-512F and VPOPCNTDQ are enabled (inlined into [`FrozenIndex::find_many_avx512`]).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn scan_avx512(&self, bucket: usize, near: u32, fp: Fingerprint, rp: u32, rd: u32) -> Option<u32> {
        use std::arch::x86_64::*;
        let (a, b) = (self.start[bucket] as usize, self.start[bucket + 1] as usize);
        let keys = &self.keys()[a..b];
        // SAFETY: only reached from `find_many_avx512` (the features are enabled there and
        // checked at run time before it is called); the masked load reads lanes < `n` only,
        // all inside `keys`, and masked-off lanes never fault.
        unsafe {
            let q = _mm512_set1_epi32(Self::key(fp.phash, bucket >> self.bits) as i32);
            let room = _mm512_set1_epi32((rp - near) as i32);
            let mut k = 0;
            while k < keys.len() {
                let n = (keys.len() - k).min(16);
                let m: __mmask16 = if n == 16 { 0xFFFF } else { (1u16 << n) - 1 };
                let v = _mm512_maskz_loadu_epi32(m, keys.as_ptr().add(k) as *const i32);
                let bits = _mm512_popcnt_epi32(_mm512_xor_si512(v, q));
                let mut hits = _mm512_mask_cmple_epu32_mask(m, bits, room);
                while hits != 0 {
                    let j = hits.trailing_zeros() as usize;
                    hits &= hits - 1;
                    if let Some(id) = self.confirm(a + k + j, fp, rp, rd) {
                        return Some(id);
                    }
                }
                k += 16;
            }
        }
        None
    }

    /// The same code compiled with the POPCNT instruction (every x86-64 CPU since 2008, but not
    /// in the baseline target a portable wheel is built for): a bit count becomes one
    /// instruction instead of a dozen.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt")]
    unsafe fn find_many_popcnt(&self, queries: &[Fingerprint], rp: u32, rd: u32, ahead: usize) -> Vec<Option<u32>> {
        self.find_many_portable::<false>(queries, rp, rd, ahead)
    }

    #[inline(always)]
    fn find_many_portable<const AVX512: bool>(&self, queries: &[Fingerprint], rp: u32, rd: u32, ahead: usize) -> Vec<Option<u32>> {
        let d = ahead.max(1);
        let ring = 2 * d + 1;
        let mut probes: Vec<Vec<(usize, u32)>> = (0..ring).map(|_| Vec::with_capacity(CHUNKS * 137)).collect();
        let mut out = Vec::with_capacity(queries.len());
        let n = queries.len();
        for i in 0..n + 2 * d {
            if i < n {
                let p = &mut probes[i % ring];
                probe_buckets(queries[i].phash, rp, self.bits, p);
                for &(b, _) in p.iter() {
                    prefetch(&self.start[b]);
                }
            }
            if i >= d && i - d < n {
                for &(b, _) in &probes[(i - d) % ring] {
                    // The first and the last line of the bucket (~15 keys: one or two lines).
                    let keys = self.lines.as_ptr() as *const u32;
                    prefetch(keys.wrapping_add(self.start[b] as usize));
                    prefetch(keys.wrapping_add(self.start[b + 1] as usize).wrapping_sub(1));
                }
            }
            if i >= 2 * d {
                let fp = queries[i - 2 * d];
                // A plain loop, not `find_map`: its closure would be compiled outside this
                // function, without POPCNT.
                let mut hit = None;
                for &(b, near) in &probes[(i - 2 * d) % ring] {
                    #[cfg(target_arch = "x86_64")]
                    {
                        hit = if AVX512 { self.scan_avx512(b, near, fp, rp, rd) } else { self.scan(b, near, fp, rp, rd) };
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    {
                        hit = self.scan(b, near, fp, rp, rd);
                    }
                    if hit.is_some() {
                        break;
                    }
                }
                out.push(hit);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn flip(h: u64, bits: u32, rng: &mut SplitMix64) -> u64 {
        let mut out = h;
        let mut flipped = 0;
        while flipped < bits {
            let b = 1u64 << rng.below(64);
            if (out ^ h) & b == 0 {
                out ^= b;
                flipped += 1;
            }
        }
        out
    }

    #[test]
    fn finds_exactly_what_brute_force_finds() {
        let mut rng = SplitMix64::new(5);
        let mut index = HashIndex::new();
        let entries: Vec<Fingerprint> = (0..5000).map(|_| Fingerprint { phash: rng.next_u64(), dhash: rng.next_u64() }).collect();
        for (i, &e) in entries.iter().enumerate() {
            index.insert(e, i as u32);
        }
        let frozen = index.freeze();
        for rp in [0u32, 1, 3, 4, 5, 6, 7, 8, 9, 11] {
            let mut queries = Vec::new();
            let mut want = Vec::new();
            for k in 0..300 {
                let base = entries[k * 7];
                let q = Fingerprint {
                    phash: flip(base.phash, rng.below(rp as u64 + 3) as u32, &mut rng),
                    dhash: flip(base.dhash, 3, &mut rng),
                };
                let brute = entries.iter().any(|e| (e.phash ^ q.phash).count_ones() <= rp && (e.dhash ^ q.dhash).count_ones() <= 8);
                assert_eq!(index.find(q, rp, 8).is_some(), brute, "rp {rp} query {k}");
                assert_eq!(frozen.find(q, rp, 8).is_some(), brute, "frozen, rp {rp} query {k}");
                queries.push(q);
                want.push(brute);
            }
            let got: Vec<bool> = frozen.find_many(&queries, rp, 8).iter().map(Option::is_some).collect();
            assert_eq!(got, want, "find_many, rp {rp}");
            // The scalar scan too (find_many takes the SIMD one where the CPU has it).
            let got: Vec<bool> = frozen.find_many_portable::<false>(&queries, rp, 8, 3).iter().map(Option::is_some).collect();
            assert_eq!(got, want, "find_many_portable, rp {rp}");
        }
    }

    /// Lookups/s at 1 M uniform fingerprints (not a timed assertion: run with
    /// `cargo test --release lookup_speed -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn lookup_speed() {
        let mut rng = SplitMix64::new(1);
        let mut index = HashIndex::new();
        let n: u32 = std::env::var("WEBLI_LOOKUP_N").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
        for i in 0..n {
            index.insert(Fingerprint { phash: rng.next_u64(), dhash: rng.next_u64() }, i);
        }
        let frozen = index.freeze();
        let queries: Vec<Fingerprint> = (0..200_000).map(|_| Fingerprint { phash: rng.next_u64(), dhash: rng.next_u64() }).collect();
        println!("memory: {:.1} MB", frozen.memory_bytes() as f64 / 1e6);
        if let Ok(t) = std::fs::read_to_string("/proc/self/smaps_rollup") {
            t.lines().filter(|l| l.starts_with("AnonHuge")).for_each(|l| println!("{l}"));
        }
        for rp in [6u32] {
            for g in [2usize, 8, 16, 32] {
                let t = std::time::Instant::now();
                let hits = frozen.find_many_ahead(&queries, rp, 12, g).iter().filter(|h| h.is_some()).count();
                println!("rp {rp} ahead {g:>2}: {:.0} lookups/s ({hits} hits)", queries.len() as f64 / t.elapsed().as_secs_f64());
            }
        }
        let t = std::time::Instant::now();
        let hits = queries.iter().filter(|q| frozen.find(**q, 7, 12).is_some()).count();
        println!("one by one: {:.0} lookups/s ({hits} hits)", queries.len() as f64 / t.elapsed().as_secs_f64());
    }

    #[test]
    fn round_trips_through_a_file() {
        let mut index = HashIndex::new();
        index.insert(Fingerprint { phash: 1, dhash: 2 }, 7);
        index.insert(Fingerprint { phash: u64::MAX, dhash: 0 }, 9);
        let mut buf = Vec::new();
        index.write_to(&mut buf).unwrap();
        let back = HashIndex::read_from(&buf[..]).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back.find(Fingerprint { phash: 3, dhash: 2 }, 1, 0), Some(7));
        assert!(HashIndex::read_from(&b"garbage!garbage!"[..]).is_err());
        assert!(HashIndex::read_from(&buf[..buf.len() - 3]).is_err());
    }
}
