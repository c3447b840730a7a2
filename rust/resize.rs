//! Decoded RGB → a square `size × size` RGB tile, by SIMD convolution (`fast_image_resize`,
//! whose filters are Pillow's: the support widens with the downscale factor, i.e. antialiased,
//! so results match `PIL.Image.resize(..., BILINEAR | BICUBIC | BOX | LANCZOS)` to within
//! rounding).

use std::cell::RefCell;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, Resizer};

use crate::config::{Interpolation, ResizeMode, ResizeOptions};
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
        ResizeMode::Squash | ResizeMode::Letterbox => (0.0, 0.0, wf, hf),
        ResizeMode::CenterCrop => center_crop_box(wf, hf, r.image_size as f64),
        ResizeMode::RandomResizedCrop => random_resized_crop(w, h, r.crop_scale, r.crop_ratio, seed),
    }
}

/// torchvision's `Resize(s)` then `CenterCrop(s)`, as one box in source pixels: the shorter side
/// resized to `s`, the longer to `int(s * long / short)`, the crop at `int(round((long' - s) / 2))`
/// of the resized image. One resize of this box is that resize and crop (the filter's centres
/// and support are the same), with none of the pixels thrown away resized first.
fn center_crop_box(w: f64, h: f64, s: f64) -> CropBox {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let resized = (s * long / short).floor().max(s);
    let scale = long / resized; // source pixels per resized pixel, along the longer side
    let offset = ((resized - s) / 2.0).round_ties_even() * scale;
    if w <= h {
        (0.0, offset, w, s * scale)
    } else {
        (offset, 0.0, s * scale, h)
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

/// The smallest scale (decoded size / full size) at which a `crop` of the full image still
/// holds at least the pixels the tile takes from it: what a scaled decode may shrink to.
pub fn min_scale(r: &ResizeOptions, crop: CropBox) -> f64 {
    let size = r.image_size as f64;
    match r.resize {
        // The longer side fills the tile; the shorter one needs less.
        ResizeMode::Letterbox => size / crop.2.max(crop.3),
        _ => (size / crop.2).max(size / crop.3),
    }
}

/// Where the resized crop lies in the `size × size` tile: `(left, top, width, height)`. The
/// whole tile, but with `letterbox`: the image's longer side is `size`, the shorter one scaled
/// alike (rounded half to even, as Python's `round` in OpenCLIP's `ResizeKeepRatio`), centred as torchvision's `CenterCrop`
/// pads (the odd pixel right and below).
pub fn placement(r: &ResizeOptions, crop: CropBox) -> (u32, u32, u32, u32) {
    let size = r.image_size;
    if r.resize != ResizeMode::Letterbox {
        return (0, 0, size, size);
    }
    let ratio = crop.2.max(crop.3) / size as f64;
    let w = ((crop.2 / ratio).round_ties_even() as u32).clamp(1, size);
    let h = ((crop.3 / ratio).round_ties_even() as u32).clamp(1, size);
    ((size - w) / 2, (size - h) / 2, w, h)
}

fn algorithm(i: Interpolation) -> ResizeAlg {
    match i {
        Interpolation::Bilinear => ResizeAlg::Convolution(FilterType::Bilinear),
        Interpolation::Bicubic => ResizeAlg::Convolution(FilterType::CatmullRom),
        Interpolation::Area => ResizeAlg::Convolution(FilterType::Box),
        Interpolation::Lanczos => ResizeAlg::Convolution(FilterType::Lanczos3),
        Interpolation::Nearest => ResizeAlg::Nearest,
    }
}

/// Resize `src` (cropped to `crop`) into `out`, a `size × size × 3` buffer of zeros, by `r`'s
/// filter, at `r`'s [`placement`] (letterbox: the rest stays black).
pub fn resize_into(src: &RgbImage, crop: CropBox, r: &ResizeOptions, out: &mut [u8]) -> Result<(), String> {
    let src_ref = ImageRef::new(src.width, src.height, &src.data, PixelType::U8x3).map_err(|e| e.to_string())?;
    let options = fast_image_resize::ResizeOptions::new().resize_alg(algorithm(r.interpolation)).crop(crop.0, crop.1, crop.2, crop.3);
    let (left, top, w, h) = placement(r, crop);
    let size = r.image_size;
    if (w, h) == (size, size) {
        let mut dst = Image::from_slice_u8(size, size, out, PixelType::U8x3).map_err(|e| e.to_string())?;
        return RESIZER.with(|z| z.borrow_mut().resize(&src_ref, &mut dst, &options)).map_err(|e| e.to_string());
    }
    let mut inner = Image::new(w, h, PixelType::U8x3);
    RESIZER.with(|z| z.borrow_mut().resize(&src_ref, &mut inner, &options)).map_err(|e| e.to_string())?;
    let (row, stride) = (w as usize * 3, size as usize * 3);
    for (y, line) in inner.buffer().chunks_exact(row).enumerate() {
        let at = (top as usize + y) * stride + left as usize * 3;
        out[at..at + row].copy_from_slice(line);
    }
    Ok(())
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
        resize_into(
            &src,
            crop_box(&opts(ResizeMode::Squash), 300, 200, 0),
            &ResizeOptions { image_size: 32, ..opts(ResizeMode::Squash) },
            &mut out,
        )
        .unwrap();
        // Left edge dark, right edge bright, blue constant.
        assert!(out[0] < 10 && out[(31 * 3) as usize] > 245);
        assert!(out.chunks(3).all(|p| p[2] == 128));
    }

    #[test]
    fn center_crop_takes_the_middle() {
        let (l, t, w, h) = crop_box(&ResizeOptions { image_size: 16, ..opts(ResizeMode::CenterCrop) }, 400, 100, 0);
        assert_eq!((l, t, w, h), (150.0, 0.0, 100.0, 100.0));
        // torchvision: 640x427 -> Resize(224) gives 335x224 (int(224 * 640 / 427)), CenterCrop
        // at round(111 / 2) = 56 (half to even); in source pixels, times 640 / 335.
        let tv = crop_box(&ResizeOptions { image_size: 224, ..opts(ResizeMode::CenterCrop) }, 640, 427, 0);
        let scale = 640.0 / 335.0;
        assert_eq!(tv, (56.0 * scale, 0.0, 224.0 * scale, 427.0));
        let src = ramp(400, 100);
        let mut out = vec![0u8; 16 * 16 * 3];
        resize_into(&src, (l, t, w, h), &ResizeOptions { image_size: 16, ..opts(ResizeMode::CenterCrop) }, &mut out).unwrap();
        // The middle quarter of a 0..255 ramp spans about 96..159.
        assert!((90..110).contains(&out[0]), "{}", out[0]);
        assert!((145..165).contains(&out[15 * 3]), "{}", out[15 * 3]);
    }

    #[test]
    fn letterbox_keeps_the_whole_image_centred_on_black() {
        let r = ResizeOptions { image_size: 32, ..opts(ResizeMode::Letterbox) };
        let src = RgbImage { width: 400, height: 100, data: vec![200; 400 * 100 * 3] };
        let crop = crop_box(&r, 400, 100, 0);
        assert_eq!(crop, (0.0, 0.0, 400.0, 100.0));
        assert_eq!(placement(&r, crop), (0, 12, 32, 8));
        assert_eq!(min_scale(&r, crop), 32.0 / 400.0);
        let mut out = vec![0u8; 32 * 32 * 3];
        resize_into(&src, crop, &r, &mut out).unwrap();
        let row = |y: usize| &out[y * 96..(y + 1) * 96];
        assert!(row(11).iter().all(|&v| v == 0) && row(20).iter().all(|&v| v == 0), "black above and below");
        assert!(row(12).iter().all(|&v| v == 200) && row(19).iter().all(|&v| v == 200), "the image between");
    }

    #[test]
    fn each_filter_is_its_own_and_keeps_a_flat_image_flat() {
        let src = ramp(300, 200);
        let tile = |interpolation| {
            let r = ResizeOptions { image_size: 24, interpolation, ..opts(ResizeMode::Squash) };
            let mut out = vec![0u8; 24 * 24 * 3];
            resize_into(&src, crop_box(&r, 300, 200, 0), &r, &mut out).unwrap();
            out
        };
        let all = [Interpolation::Bilinear, Interpolation::Bicubic, Interpolation::Area, Interpolation::Lanczos, Interpolation::Nearest];
        let tiles: Vec<Vec<u8>> = all.iter().map(|&i| tile(i)).collect();
        for (i, a) in tiles.iter().enumerate() {
            assert!(a.chunks(3).all(|p| p[2] == 128), "{:?}: blue stays flat", all[i]);
            for b in &tiles[i + 1..] {
                assert_ne!(a, b);
            }
        }
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
