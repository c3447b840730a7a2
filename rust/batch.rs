//! Decoded, resized tiles → one batch: a single contiguous buffer (`uint8`, or `float32`
//! normalised; handed to NumPy without a copy by the bindings) plus the keys, captions,
//! metadata and extra members in the same order.

use serde_json::{Map, Value};

use crate::config::{BatchOptions, Layout, Output};
use crate::decode::Region;
use crate::sample::Sample;

/// The pixels of a batch, `n × size × size × 3` (NHWC) or `n × 3 × size × size` (NCHW).
#[derive(Debug)]
pub enum Pixels {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

impl Default for Pixels {
    fn default() -> Self {
        Pixels::U8(Vec::new())
    }
}

impl Pixels {
    /// The bytes of a `uint8` batch (empty for a float one).
    pub fn as_u8(&self) -> &[u8] {
        match self {
            Pixels::U8(v) => v,
            Pixels::F32(_) => &[],
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Pixels::U8(v) => v.len(),
            Pixels::F32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A sample's image as the batch receives it.
#[derive(Clone, Debug, PartialEq)]
pub enum Tile {
    /// Decoded and resized: `size × size × 3`, HWC.
    Pixels(Vec<u8>),
    /// Left encoded for the GPU (`decode_device="cuda"`): the crop box in the original's
    /// pixels (`left, top, width, height`) and whether to mirror it. Its place in `images`
    /// stays zero; the bytes go to `Batch::encoded`.
    Encoded { crop: Region, flip: bool },
}

/// A JPEG left for the GPU: its bytes, crop box and flip (see [`Tile::Encoded`]).
pub type EncodedImage = (Vec<u8>, Region, bool);

/// One batch, ready for Python.
#[derive(Debug, Default)]
pub struct Batch {
    pub images: Pixels,
    pub size: u32,
    pub layout: Option<Layout>,
    pub keys: Vec<String>,
    pub texts: Vec<String>,
    pub metas: Vec<Map<String, Value>>,
    pub langs: Vec<String>,
    pub shards: Vec<std::sync::Arc<str>>,
    /// `extra_members`: per requested extension, each sample's member bytes (None: it had none).
    pub extras: Vec<(String, Vec<Option<Vec<u8>>>)>,
    /// With GPU decoding: per sample, its JPEG bytes, crop box and flip when it was left
    /// encoded (None: decoded here, in `images`). Empty when no sample of the batch was.
    pub encoded: Vec<Option<EncodedImage>>,
    /// Resume position after this batch: samples of the shuffled stream consumed so far
    /// (restarting with `Config::skip` set to it continues right after this batch).
    pub next_seq: u64,
    /// Each sample's number in the shuffled stream (ascending; `next_seq` is the last one's + 1):
    /// where a batch cut in two resumes (a loader that merges its workers' last batches).
    pub seqs: Vec<u64>,
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

/// Copy one HWC tile into `dst` in `layout`, each value mapped by `f(channel, value)`.
fn place<T: Copy>(tile: &[u8], dst: &mut [T], plane: usize, layout: Layout, f: impl Fn(usize, u8) -> T) {
    match layout {
        Layout::Nhwc => {
            for (d, px) in dst.chunks_exact_mut(3).zip(tile.chunks_exact(3)) {
                d[0] = f(0, px[0]);
                d[1] = f(1, px[1]);
                d[2] = f(2, px[2]);
            }
        }
        Layout::Nchw => {
            let (r, rest) = dst.split_at_mut(plane);
            let (g, b) = rest.split_at_mut(plane);
            for (p, px) in tile.chunks_exact(3).enumerate() {
                r[p] = f(0, px[0]);
                g[p] = f(1, px[1]);
                b[p] = f(2, px[2]);
            }
        }
    }
}

/// Pack `(sample, tile)` pairs, each tile `size × size × 3` (HWC), into a batch: `uint8` as is,
/// or `float32` normalised (`(v / 255 - mean) / std`, by a 256-entry table per channel).
pub fn assemble(items: Vec<(Sample, Tile)>, size: u32, opts: &BatchOptions, extra_members: &[String]) -> Batch {
    let (n, layout) = (items.len(), opts.layout);
    let plane = size as usize * size as usize;
    let per = plane * 3;
    let mut images = match opts.output {
        Output::Uint8 => Pixels::U8(vec![0u8; n * per]),
        Output::Float => Pixels::F32(vec![0f32; n * per]),
    };
    let (mean, std) = opts.normalization();
    let table: Vec<[f32; 256]> = (0..3).map(|c| std::array::from_fn(|v| ((v as f64 / 255.0 - mean[c]) / std[c]) as f32)).collect();
    let mut batch = Batch {
        size,
        layout: Some(layout),
        keys: Vec::with_capacity(n),
        texts: Vec::with_capacity(n),
        metas: Vec::with_capacity(n),
        langs: Vec::with_capacity(n),
        shards: Vec::with_capacity(n),
        extras: extra_members.iter().map(|m| (m.clone(), Vec::with_capacity(n))).collect(),
        next_seq: items.last().map_or(0, |(s, _)| s.seq + 1),
        seqs: items.iter().map(|(s, _)| s.seq).collect(),
        ..Default::default()
    };
    let any_encoded = items.iter().any(|(_, t)| matches!(t, Tile::Encoded { .. }));
    for (i, (mut sample, tile)) in items.into_iter().enumerate() {
        match tile {
            Tile::Pixels(tile) => {
                debug_assert_eq!(tile.len(), per);
                match &mut images {
                    Pixels::U8(v) if layout == Layout::Nhwc => v[i * per..(i + 1) * per].copy_from_slice(&tile),
                    Pixels::U8(v) => place(&tile, &mut v[i * per..(i + 1) * per], plane, layout, |_, x| x),
                    Pixels::F32(v) => place(&tile, &mut v[i * per..(i + 1) * per], plane, layout, |c, x| table[c][x as usize]),
                }
                if any_encoded {
                    batch.encoded.push(None);
                }
            }
            Tile::Encoded { crop, flip } => batch.encoded.push(Some((std::mem::take(&mut sample.image).to_vec(), crop, flip))),
        }
        for (name, values) in &mut batch.extras {
            let at = sample.extras.iter().position(|(e, _)| e == name);
            values.push(at.map(|j| std::mem::take(&mut sample.extras[j].1)));
        }
        batch.keys.push(sample.key);
        batch.texts.push(sample.text);
        batch.metas.push(sample.meta);
        batch.langs.push(sample.lang);
        batch.shards.push(sample.shard);
    }
    batch.images = images;
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
            extras: vec![("cls".into(), key.as_bytes().to_vec())],
            span: None,
        }
    }

    #[test]
    fn packs_in_order_in_both_layouts() {
        let tile = |v: u8| (0..2 * 2).flat_map(|_| [v, v + 1, v + 2]).collect::<Vec<u8>>();
        let items = || vec![(sample("a"), Tile::Pixels(tile(10))), (sample("b"), Tile::Pixels(tile(20)))];
        let opts = |layout| BatchOptions { layout, ..Default::default() };
        let b = assemble(items(), 2, &opts(Layout::Nhwc), &[]);
        assert_eq!(b.shape(), [2, 2, 2, 3]);
        assert_eq!(&b.images.as_u8()[..6], &[10, 11, 12, 10, 11, 12]);
        assert_eq!(&b.images.as_u8()[12..15], &[20, 21, 22]);
        assert_eq!(b.keys, ["a", "b"]);
        assert_eq!(b.texts, ["ta", "tb"]);
        let b = assemble(items(), 2, &opts(Layout::Nchw), &["cls".into(), "npy".into()]);
        assert_eq!(b.shape(), [2, 3, 2, 2]);
        assert_eq!(&b.images.as_u8()[..12], &[10, 10, 10, 10, 11, 11, 11, 11, 12, 12, 12, 12]);
        assert_eq!(b.extras[0], ("cls".to_string(), vec![Some(b"a".to_vec()), Some(b"b".to_vec())]));
        assert_eq!(b.extras[1], ("npy".to_string(), vec![None, None]));
        assert!(b.encoded.is_empty(), "nothing left encoded");
    }

    #[test]
    fn encoded_samples_carry_their_bytes_crop_and_flip() {
        let mut s = sample("b");
        s.image = crate::sample::ImageBytes::Owned(b"\xff\xd8jpeg".to_vec());
        let items = vec![(sample("a"), Tile::Pixels(vec![7u8; 12])), (s, Tile::Encoded { crop: (1.0, 2.0, 3.0, 4.0), flip: true })];
        let b = assemble(items, 2, &BatchOptions::default(), &[]);
        assert_eq!(b.encoded, vec![None, Some((b"\xff\xd8jpeg".to_vec(), (1.0, 2.0, 3.0, 4.0), true))]);
        assert_eq!(&b.images.as_u8()[..12], &[7u8; 12]);
        assert!(b.images.as_u8()[12..].iter().all(|&x| x == 0), "its place stays zero");
    }

    #[test]
    fn float_output_is_normalised_per_channel() {
        let tile: Vec<u8> = [0u8, 255, 51].repeat(4);
        let opts = BatchOptions { output: Output::Float, mean: Some([0.5, 0.5, 0.0]), std: Some([0.5, 0.5, 1.0]), ..Default::default() };
        let b = assemble(vec![(sample("a"), Tile::Pixels(tile))], 2, &opts, &[]);
        let Pixels::F32(v) = &b.images else { panic!("float output") };
        assert_eq!(v.len(), 12);
        assert!((v[0] + 1.0).abs() < 1e-6 && (v[1] - 1.0).abs() < 1e-6 && (v[2] - 0.2).abs() < 1e-6, "{v:?}");
    }
}
