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

/// All 16-bit values within Hamming distance `r` (≤ 2) of `v`.
fn neighbours(v: usize, r: u32, out: &mut Vec<usize>) {
    out.clear();
    out.push(v);
    if r >= 1 {
        for i in 0..16 {
            out.push(v ^ (1 << i));
        }
    }
    if r >= 2 {
        for i in 0..16 {
            for j in i + 1..16 {
                out.push(v ^ (1 << i) ^ (1 << j));
            }
        }
    }
}

/// Every bucket (table × chunk value) a lookup within `rp` bits of `phash` must scan.
fn probe_buckets(phash: u64, rp: u32, out: &mut Vec<usize>) {
    let sub = (rp / CHUNKS as u32).min(2);
    let mut values = Vec::with_capacity(137);
    out.clear();
    for c in 0..CHUNKS {
        neighbours(chunk(phash, c), sub, &mut values);
        out.extend(values.iter().map(|&v| c * BUCKETS + v));
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
        probe_buckets(fp.phash, rp, &mut buckets);
        buckets.iter().find_map(|&b| {
            // The entry (for its dHash) is read only when the pHash in the bucket is close.
            self.tables[b].iter().filter(|&&(p, _)| (p ^ fp.phash).count_ones() <= rp).find_map(|&(_, i)| {
                let (_, d, id) = self.entries[i as usize];
                ((d ^ fp.dhash).count_ones() <= rd).then_some(id)
            })
        })
    }

    /// A read-only copy laid out for fast lookups (the blocklist's form).
    pub fn freeze(&self) -> FrozenIndex {
        let n = self.entries.len();
        let mut offsets = vec![0u32; CHUNKS * BUCKETS + 1];
        for (b, t) in self.tables.iter().enumerate() {
            offsets[b + 1] = offsets[b] + t.len() as u32;
        }
        let mut phash = Vec::with_capacity(CHUNKS * n);
        let mut slot = Vec::with_capacity(CHUNKS * n);
        for t in &self.tables {
            for &(p, i) in t {
                phash.push(p);
                slot.push(i);
            }
        }
        FrozenIndex {
            offsets,
            phash,
            slot,
            dhash: self.entries.iter().map(|e| e.1).collect(),
            ids: self.entries.iter().map(|e| e.2).collect(),
        }
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

/// A frozen [`HashIndex`]: each chunk table in one contiguous array (CSR: offsets by chunk
/// value, then the pHashes of the bucket side by side), so a probe is one offset read and one
/// sequential scan. [`FrozenIndex::find_many`] also prefetches the probes of a batch of queries
/// before scanning them, so their memory latencies overlap.
pub struct FrozenIndex {
    offsets: Vec<u32>,
    phash: Vec<u64>,
    slot: Vec<u32>,
    dhash: Vec<u64>,
    ids: Vec<u32>,
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
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn memory_bytes(&self) -> usize {
        self.offsets.len() * 4 + self.phash.len() * 8 + self.slot.len() * 4 + self.dhash.len() * 8 + self.ids.len() * 4
    }

    #[inline]
    fn scan(&self, bucket: usize, fp: Fingerprint, rp: u32, rd: u32) -> Option<u32> {
        let (a, b) = (self.offsets[bucket] as usize, self.offsets[bucket + 1] as usize);
        for k in a..b {
            if (self.phash[k] ^ fp.phash).count_ones() <= rp {
                let e = self.slot[k] as usize;
                if (self.dhash[e] ^ fp.dhash).count_ones() <= rd {
                    return Some(self.ids[e]);
                }
            }
        }
        None
    }

    /// As [`HashIndex::find`].
    pub fn find(&self, fp: Fingerprint, rp: u32, rd: u32) -> Option<u32> {
        let mut buckets = Vec::with_capacity(CHUNKS * 137);
        probe_buckets(fp.phash, rp, &mut buckets);
        buckets.iter().find_map(|&b| self.scan(b, fp, rp, rd))
    }

    /// [`FrozenIndex::find`] for many queries, with the probes of each group of queries
    /// prefetched ahead of their scans.
    pub fn find_many(&self, queries: &[Fingerprint], rp: u32, rd: u32) -> Vec<Option<u32>> {
        self.find_many_grouped(queries, rp, rd, 4)
    }

    pub fn find_many_grouped(&self, queries: &[Fingerprint], rp: u32, rd: u32, group_size: usize) -> Vec<Option<u32>> {
        let group_size = group_size.max(1);
        let mut out = Vec::with_capacity(queries.len());
        let mut probes: Vec<usize> = Vec::with_capacity(group_size * CHUNKS * 137);
        let mut one = Vec::with_capacity(CHUNKS * 137);
        for group in queries.chunks(group_size) {
            probes.clear();
            for fp in group {
                probe_buckets(fp.phash, rp, &mut one);
                probes.extend_from_slice(&one);
            }
            for &b in &probes {
                prefetch(&self.offsets[b]);
            }
            for &b in &probes {
                prefetch(self.phash.as_ptr().wrapping_add(self.offsets[b] as usize));
            }
            let per = probes.len() / group.len();
            for (q, fp) in group.iter().enumerate() {
                let hit = probes[q * per..(q + 1) * per].iter().find_map(|&b| self.scan(b, *fp, rp, rd));
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
        let entries: Vec<Fingerprint> =
            (0..5000).map(|_| Fingerprint { phash: rng.next_u64(), dhash: rng.next_u64() }).collect();
        for (i, &e) in entries.iter().enumerate() {
            index.insert(e, i as u32);
        }
        let frozen = index.freeze();
        for rp in [3u32, 7, 11] {
            let mut queries = Vec::new();
            let mut want = Vec::new();
            for k in 0..300 {
                let base = entries[k * 7];
                let q = Fingerprint { phash: flip(base.phash, rng.below(rp as u64 + 3) as u32, &mut rng), dhash: flip(base.dhash, 3, &mut rng) };
                let brute = entries.iter().any(|e| (e.phash ^ q.phash).count_ones() <= rp && (e.dhash ^ q.dhash).count_ones() <= 8);
                assert_eq!(index.find(q, rp, 8).is_some(), brute, "rp {rp} query {k}");
                assert_eq!(frozen.find(q, rp, 8).is_some(), brute, "frozen, rp {rp} query {k}");
                queries.push(q);
                want.push(brute);
            }
            let got: Vec<bool> = frozen.find_many(&queries, rp, 8).iter().map(Option::is_some).collect();
            assert_eq!(got, want, "find_many, rp {rp}");
        }
    }

    /// Lookups/s at 1 M uniform fingerprints (not a timed assertion: run with
    /// `cargo test --release lookup_speed -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn lookup_speed() {
        let mut rng = SplitMix64::new(1);
        let mut index = HashIndex::new();
        for i in 0..1_000_000u32 {
            index.insert(Fingerprint { phash: rng.next_u64(), dhash: rng.next_u64() }, i);
        }
        let frozen = index.freeze();
        let queries: Vec<Fingerprint> = (0..200_000).map(|_| Fingerprint { phash: rng.next_u64(), dhash: rng.next_u64() }).collect();
        for g in [1usize, 2, 4, 8, 16] {
            let t = std::time::Instant::now();
            let hits = frozen.find_many_grouped(&queries, 7, 12, g).iter().filter(|h| h.is_some()).count();
            println!("group {g:>2}: {:.0} lookups/s ({hits} hits)", queries.len() as f64 / t.elapsed().as_secs_f64());
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
