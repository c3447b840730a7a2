//! Perceptual fingerprints for near-duplicate detection, computed from the decoded image in the
//! decode pass (no second decode).
//!
//! A fingerprint is two 64-bit hashes of different features:
//! - `phash`: signs against the median of the 8×8 lowest DCT-II coefficients of a 32×32 grey
//!   thumbnail (the usual pHash): tolerant to re-encoding, rescaling and brightness;
//! - `dhash`: signs of the horizontal gradients of a 9×8 grey thumbnail: a second, largely
//!   independent look, used to confirm a pHash candidate.
//!
//! Written by hand: the DCT of a 32×32 block restricted to 8×8 outputs is a few lines, and
//! `image_hasher` would convert through its own image types and resizer on every sample.
//!
//! Crops move content in the frame, which global hashes do not forgive; a blocklist therefore
//! stores the fingerprints of [`crop_variants`] of each evaluation image, so that a cropped copy
//! lands near one of them.

use std::cell::RefCell;
use std::sync::OnceLock;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::decode::RgbImage;
use crate::resize::CropBox;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    pub phash: u64,
    pub dhash: u64,
}

thread_local! {
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

fn grey_thumbnail(img: &RgbImage, crop: CropBox, w: u32, h: u32) -> Vec<f32> {
    let mut out = vec![0u8; (w * h * 3) as usize];
    // Keep the box inside the image (float sums can pass the edge by a hair).
    let (iw, ih) = (img.width as f64, img.height as f64);
    let (l, t) = (crop.0.clamp(0.0, iw - 1.0), crop.1.clamp(0.0, ih - 1.0));
    let (cw, ch) = (crop.2.min(iw - l).max(1.0), crop.3.min(ih - t).max(1.0));
    let resized = (|| -> Option<()> {
        let src = ImageRef::new(img.width, img.height, &img.data, PixelType::U8x3).ok()?;
        let mut dst = Image::from_slice_u8(w, h, &mut out, PixelType::U8x3).ok()?;
        let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)).crop(l, t, cw, ch);
        RESIZER.with(|r| r.borrow_mut().resize(&src, &mut dst, &opts)).ok()
    })();
    if resized.is_none() {
        out.iter_mut().for_each(|b| *b = 0); // an image too small to crop: a blank thumbnail
    }
    out.chunks_exact(3).map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32).collect()
}

fn cosines() -> &'static [[f32; 32]; 8] {
    static TABLE: OnceLock<[[f32; 32]; 8]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [[0f32; 32]; 8];
        for (u, row) in t.iter_mut().enumerate() {
            for (x, c) in row.iter_mut().enumerate() {
                *c = (std::f64::consts::PI * (2 * x + 1) as f64 * u as f64 / 64.0).cos() as f32;
            }
        }
        t
    })
}

/// The fingerprint of the region `crop` of `img`.
pub fn fingerprint(img: &RgbImage, crop: CropBox) -> Fingerprint {
    let g = grey_thumbnail(img, crop, 32, 32);
    let c = cosines();
    // rows: tmp[y][u] = Σ_x g[y][x]·c[u][x]; then d[v][u] = Σ_y c[v][y]·tmp[y][u].
    let mut tmp = [[0f32; 8]; 32];
    for y in 0..32 {
        for u in 0..8 {
            tmp[y][u] = (0..32).map(|x| g[y * 32 + x] * c[u][x]).sum();
        }
    }
    let mut d = [0f32; 64];
    for v in 0..8 {
        for u in 0..8 {
            d[v * 8 + u] = (0..32).map(|y| c[v][y] * tmp[y][u]).sum();
        }
    }
    let mut sorted = d;
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median = (sorted[31] + sorted[32]) / 2.0;
    let phash = d.iter().enumerate().fold(0u64, |h, (i, &x)| h | (u64::from(x > median) << i));
    let t = grey_thumbnail(img, crop, 9, 8);
    let mut dhash = 0u64;
    for y in 0..8 {
        for x in 0..8 {
            dhash |= u64::from(t[y * 9 + x + 1] > t[y * 9 + x]) << (y * 8 + x);
        }
    }
    Fingerprint { phash, dhash }
}

/// Per-axis crops (fractions cut from the start and the end of the side) that index variants
/// cover: a copy cropped by up to 10% of a side lands within 2.5% of one of them.
pub const CROP_STEPS: [(f64, f64); 6] = [(0.0, 0.0), (0.05, 0.0), (0.0, 0.05), (0.1, 0.0), (0.0, 0.1), (0.05, 0.05)];

/// The fingerprints of the 36 crop variants of `img` (all combinations of [`CROP_STEPS`] on
/// both axes), the whole image first.
pub fn crop_variants(img: &RgbImage) -> Vec<Fingerprint> {
    let (w, h) = (img.width as f64, img.height as f64);
    let mut out = Vec::with_capacity(CROP_STEPS.len() * CROP_STEPS.len());
    for &(t, b) in &CROP_STEPS {
        for &(l, r) in &CROP_STEPS {
            out.push(fingerprint(img, (l * w, t * h, w * (1.0 - l - r), h * (1.0 - t - b))));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(w: u32, h: u32, seed: u32, bright: i32) -> RgbImage {
        let mut data = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                let fx = x as f32 / w as f32;
                let fy = y as f32 / h as f32;
                let v = ((fx * (3 + seed % 5) as f32).sin() * (fy * (2 + seed % 7) as f32).cos() * 100.0 + 128.0) as i32;
                let v = (v + bright).clamp(0, 255) as u8;
                data.extend_from_slice(&[v, v / 2 + 64, 255 - v]);
            }
        }
        RgbImage { width: w, height: h, data }
    }

    fn full(img: &RgbImage) -> CropBox {
        (0.0, 0.0, img.width as f64, img.height as f64)
    }

    #[test]
    fn deterministic_variants_and_distinct_pictures() {
        let a = pattern(400, 300, 1, 0);
        let b = pattern(400, 300, 2, 0);
        let fa = fingerprint(&a, full(&a));
        assert_eq!(fa, fingerprint(&a, full(&a)));
        let fb = fingerprint(&b, full(&b));
        assert!((fa.phash ^ fb.phash).count_ones() + (fa.dhash ^ fb.dhash).count_ones() >= 16);
        let v = crop_variants(&a);
        assert_eq!(v.len(), 36);
        assert_eq!(v[0], fa);
        // Robustness is measured on real photographs: benches/neardup.py.
    }
}
