//! Decoded, resized tiles → one batch: a single contiguous `uint8` buffer (handed to NumPy
//! without a copy by the bindings) plus the keys, captions and metadata in the same order.

use serde_json::{Map, Value};

use crate::config::Layout;
use crate::sample::Sample;

/// One batch, ready for Python.
#[derive(Debug, Default)]
pub struct Batch {
    /// `n × size × size × 3` (NHWC) or `n × 3 × size × size` (NCHW) bytes.
    pub images: Vec<u8>,
    pub size: u32,
    pub layout: Option<Layout>,
    pub keys: Vec<String>,
    pub texts: Vec<String>,
    pub metas: Vec<Map<String, Value>>,
    pub langs: Vec<String>,
    pub shards: Vec<std::sync::Arc<str>>,
    /// Resume position after this batch: samples of the shuffled stream consumed so far
    /// (restarting with `Config::skip` set to it continues right after this batch).
    pub next_seq: u64,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The array shape of `images`.
    pub fn shape(&self) -> [usize; 4] {
        let (n, s) = (self.len(), self.size as usize);
        match self.layout.unwrap_or(Layout::Nhwc) {
            Layout::Nhwc => [n, s, s, 3],
            Layout::Nchw => [n, 3, s, s],
        }
    }
}

/// Pack `(sample, tile)` pairs, each tile `size × size × 3` (HWC), into a batch.
pub fn assemble(items: Vec<(Sample, Vec<u8>)>, size: u32, layout: Layout) -> Batch {
    let n = items.len();
    let plane = size as usize * size as usize;
    let mut batch = Batch {
        images: vec![0u8; n * plane * 3],
        size,
        layout: Some(layout),
        keys: Vec::with_capacity(n),
        texts: Vec::with_capacity(n),
        metas: Vec::with_capacity(n),
        langs: Vec::with_capacity(n),
        shards: Vec::with_capacity(n),
        next_seq: items.last().map_or(0, |(s, _)| s.seq + 1),
    };
    for (i, (sample, tile)) in items.into_iter().enumerate() {
        debug_assert_eq!(tile.len(), plane * 3);
        let dst = &mut batch.images[i * plane * 3..(i + 1) * plane * 3];
        match layout {
            Layout::Nhwc => dst.copy_from_slice(&tile),
            Layout::Nchw => {
                let (r, rest) = dst.split_at_mut(plane);
                let (g, b) = rest.split_at_mut(plane);
                for (p, px) in tile.chunks_exact(3).enumerate() {
                    r[p] = px[0];
                    g[p] = px[1];
                    b[p] = px[2];
                }
            }
        }
        batch.keys.push(sample.key);
        batch.texts.push(sample.text);
        batch.metas.push(sample.meta);
        batch.langs.push(sample.lang);
        batch.shards.push(sample.shard);
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &str) -> Sample {
        Sample {
            key: key.into(),
            shard: "s".into(),
            index: 0,
            seq: 0,
            image: Default::default(),
            text: format!("t{key}"),
            meta: Map::new(),
            lang: "und".into(),
            copy: 0,
            meta_ok: true,
        }
    }

    #[test]
    fn packs_in_order_in_both_layouts() {
        let tile = |v: u8| (0..2 * 2).flat_map(|_| [v, v + 1, v + 2]).collect::<Vec<u8>>();
        let items = || vec![(sample("a"), tile(10)), (sample("b"), tile(20))];
        let b = assemble(items(), 2, Layout::Nhwc);
        assert_eq!(b.shape(), [2, 2, 2, 3]);
        assert_eq!(&b.images[..6], &[10, 11, 12, 10, 11, 12]);
        assert_eq!(&b.images[12..15], &[20, 21, 22]);
        assert_eq!(b.keys, ["a", "b"]);
        assert_eq!(b.texts, ["ta", "tb"]);
        let b = assemble(items(), 2, Layout::Nchw);
        assert_eq!(b.shape(), [2, 3, 2, 2]);
        assert_eq!(&b.images[..12], &[10, 10, 10, 10, 11, 11, 11, 11, 12, 12, 12, 12]);
    }
}
