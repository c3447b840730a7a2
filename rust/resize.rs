//! Decoded RGB → a square `size × size` RGB tile, by SIMD convolution (`fast_image_resize`,
//! whose bilinear filter is Pillow's: the support widens with the downscale factor, i.e.
//! antialiased, so results match `PIL.Image.resize(..., BILINEAR)` to within rounding).

use std::cell::RefCell;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, Resizer};

use crate::config::{ResizeMode, ResizeOptions};
use crate::decode::RgbImage;
use crate::rng::SplitMix64;

thread_local! {
    // A Resizer keeps scratch buffers between calls: one per decode thread.
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

/// A crop box in source pixels: `(left, top, width, height)`.
pub type CropBox = (f64, f64, f64, f64);

/// The source region that `r.resize` takes from a `w × h` image. `seed` drives the random crop.
pub fn crop_box(r: &ResizeOptions, w: u32, h: u32, seed: u64) -> CropBox {
    let (wf, hf) = (w as f64, h as f64);
    match r.resize {
        ResizeMode::Squash => (0.0, 0.0, wf, hf),
        ResizeMode::CenterCrop => {
            let s = wf.min(hf);
            ((wf - s) / 2.0, (hf - s) / 2.0, s, s)
        }
        ResizeMode::RandomResizedCrop => random_resized_crop(w, h, r.crop_scale, r.crop_ratio, seed),
    }
}

/// Whether the sample with this seed is flipped, with probability `p` (a draw of its own, so
/// the crop is the same with and without flips).
pub fn flips(p: f64, seed: u64) -> bool {
    p > 0.0 && SplitMix64::new(seed ^ 0x464C_4950).next_f64() < p
}

/// Mirror a `size × size × 3` tile left to right, in place.
pub fn hflip(tile: &mut [u8], size: u32) {
    for row in tile.chunks_exact_mut(size as usize * 3) {
        let n = size as usize;
        for x in 0..n / 2 {
            let (a, b) = (x * 3, (n - 1 - x) * 3);
            for c in 0..3 {
                row.swap(a + c, b + c);
            }
        }
    }
}

/// torchvision's `RandomResizedCrop.get_params`, step for step, on a seeded SplitMix64.
fn random_resized_crop(w: u32, h: u32, scale: (f64, f64), ratio: (f64, f64), seed: u64) -> CropBox {
    let mut rng = SplitMix64::new(seed);
    let area = w as f64 * h as f64;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.uniform(scale.0, scale.1);
        let aspect = rng.uniform(lr0, lr1).exp();
        let cw = (target * aspect).sqrt().round() as u64;
        let ch = (target / aspect).sqrt().round() as u64;
        if cw > 0 && ch > 0 && cw <= w as u64 && ch <= h as u64 {
            let top = rng.below(h as u64 - ch + 1);
            let left = rng.below(w as u64 - cw + 1);
            return (left as f64, top as f64, cw as f64, ch as f64);
        }
    }
    // Fallback: the whole image, cut to the allowed aspect range, centred.
    let in_ratio = w as f64 / h as f64;
    let (cw, ch) = if in_ratio < ratio.0 {
        (w as f64, (w as f64 / ratio.0).round())
    } else if in_ratio > ratio.1 {
        ((h as f64 * ratio.1).round(), h as f64)
    } else {
        (w as f64, h as f64)
    };
    (((w as f64 - cw) / 2.0).floor(), ((h as f64 - ch) / 2.0).floor(), cw, ch)
}

/// Resize `src` (cropped to `crop`) into `out`, a `size × size × 3` buffer.
pub fn resize_into(src: &RgbImage, crop: CropBox, size: u32, out: &mut [u8]) -> Result<(), String> {
    let src_ref = ImageRef::new(src.width, src.height, &src.data, PixelType::U8x3).map_err(|e| e.to_string())?;
    let mut dst = Image::from_slice_u8(size, size, out, PixelType::U8x3).map_err(|e| e.to_string())?;
    let options = fast_image_resize::ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(crop.0, crop.1, crop.2, crop.3);
    RESIZER.with(|r| r.borrow_mut().resize(&src_ref, &mut dst, &options)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: u32, h: u32) -> RgbImage {
        let mut data = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(&[(x * 255 / (w - 1)) as u8, (y * 255 / (h - 1)) as u8, 128]);
            }
        }
        RgbImage { width: w, height: h, data }
    }

    fn opts(resize: ResizeMode) -> ResizeOptions {
        ResizeOptions { resize, ..Default::default() }
    }

    #[test]
    fn squash_keeps_a_ramp_a_ramp() {
        let src = ramp(300, 200);
        let mut out = vec![0u8; 32 * 32 * 3];
        resize_into(&src, crop_box(&opts(ResizeMode::Squash), 300, 200, 0), 32, &mut out).unwrap();
        // Left edge dark, right edge bright, blue constant.
        assert!(out[0] < 10 && out[(31 * 3) as usize] > 245);
        assert!(out.chunks(3).all(|p| p[2] == 128));
    }

    #[test]
    fn center_crop_takes_the_middle() {
        let (l, t, w, h) = crop_box(&opts(ResizeMode::CenterCrop), 400, 100, 0);
        assert_eq!((l, t, w, h), (150.0, 0.0, 100.0, 100.0));
        let src = ramp(400, 100);
        let mut out = vec![0u8; 16 * 16 * 3];
        resize_into(&src, (l, t, w, h), 16, &mut out).unwrap();
        // The middle quarter of a 0..255 ramp spans about 96..159.
        assert!((90..110).contains(&out[0]), "{}", out[0]);
        assert!((145..165).contains(&out[15 * 3]), "{}", out[15 * 3]);
    }

    #[test]
    fn random_crop_is_seeded_and_inside() {
        let rrc = opts(ResizeMode::RandomResizedCrop);
        for seed in 0..200 {
            let b = crop_box(&rrc, 640, 480, seed);
            assert_eq!(b, crop_box(&rrc, 640, 480, seed));
            assert!(b.0 >= 0.0 && b.1 >= 0.0 && b.0 + b.2 <= 640.0 && b.1 + b.3 <= 480.0, "{b:?}");
            let area = b.2 * b.3 / (640.0 * 480.0);
            assert!((0.07..=1.0).contains(&area), "{area}");
        }
        assert_ne!(crop_box(&rrc, 640, 480, 1), crop_box(&rrc, 640, 480, 2));
    }

    #[test]
    fn crop_scale_and_ratio_bound_the_crop() {
        let r = ResizeOptions { crop_scale: (0.9, 1.0), crop_ratio: (1.0, 1.0), ..opts(ResizeMode::RandomResizedCrop) };
        for seed in 0..200 {
            let (_, _, w, h) = crop_box(&r, 1000, 1000, seed);
            let area = w * h / 1e6;
            assert!((0.89..=1.0).contains(&area), "{area}");
            assert!((w - h).abs() <= 1.0, "{w}x{h}");
        }
    }

    #[test]
    fn hflip_mirrors_and_flips_about_the_given_share() {
        let mut tile: Vec<u8> = (0..27).map(|i| i as u8).collect(); // 3 x 3 pixels
        hflip(&mut tile, 3);
        assert_eq!(&tile[..9], &[6, 7, 8, 3, 4, 5, 0, 1, 2]);
        assert_eq!(&tile[18..], &[24, 25, 26, 21, 22, 23, 18, 19, 20]);
        let n = (0..10_000u64).filter(|&s| flips(0.3, s)).count();
        assert!((2_700..3_300).contains(&n), "{n}");
        assert!(!(0..1000u64).any(|s| flips(0.0, s)) && (0..1000u64).all(|s| flips(1.0, s)));
    }
}
