//! JPEG through libjpeg-turbo (the `turbojpeg` crate, built from its vendored source with SIMD
//! when NASM is present), with DCT-domain scaled decoding.
//!
//! Decoding a 1600 px JPEG in full to make a 224 px tile throws most of the work away; at 1/4
//! scale libjpeg-turbo runs a 2×2 inverse DCT per block instead of 8×8 and colour-converts a
//! sixteenth of the pixels. The scale is the smallest of 1/8, 1/4, 1/2, 1 that keeps the region
//! the resize reads at least as large as the target, so quality stays that of a full decode
//! followed by an antialiased downscale (tests/test_quality.py bounds the difference by PSNR).

use std::cell::RefCell;

use turbojpeg::{Decompressor, Image, PixelFormat, ScalingFactor};

use super::{check_pixels, DecodeError, Decoded, RgbImage};
use crate::stats::Counter;

thread_local! {
    // A decompressor holds libjpeg state and buffers: one per decode thread, reused.
    static DECOMPRESSOR: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
}

/// Progressive JPEGs with more scans than this are refused (a known denial-of-service pattern;
/// real files have about 10).
const MAX_SCANS: u32 = 500;

const FACTORS: [ScalingFactor; 4] = [ScalingFactor::ONE_EIGHTH, ScalingFactor::ONE_QUARTER, ScalingFactor::ONE_HALF, ScalingFactor::ONE];

fn err(e: turbojpeg::Error) -> DecodeError {
    DecodeError::new(Counter::CorruptImage, format!("libjpeg-turbo: {e}"))
}

/// The smallest supported factor not below `min_factor`.
pub fn choose_factor(min_factor: f64) -> ScalingFactor {
    FACTORS.into_iter().find(|f| f.num() as f64 / f.denom() as f64 >= min_factor).unwrap_or(ScalingFactor::ONE)
}

/// Decode a JPEG to RGB; `min_factor` (when given) picks the DCT scale from the full size.
pub fn decode(bytes: &[u8], max_pixels: u64, min_factor: Option<impl FnOnce(u32, u32) -> f64>) -> Result<Decoded, DecodeError> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let mut d = Decompressor::new().map_err(err)?;
            d.set_scan_limit(MAX_SCANS).map_err(err)?;
            *slot = Some(d);
        }
        let d = slot.as_mut().expect("set above");
        d.set_scaling_factor(ScalingFactor::ONE).map_err(err)?;
        let header = d.read_header(bytes).map_err(err)?;
        let (w, h) = (header.width as u32, header.height as u32);
        check_pixels(w, h, max_pixels)?;
        let factor = match min_factor {
            Some(f) if !header.is_lossless => choose_factor(f(w, h)),
            _ => ScalingFactor::ONE,
        };
        d.set_scaling_factor(factor).map_err(err)?;
        let scaled = header.scaled(factor);
        let (sw, sh) = (scaled.width, scaled.height);
        let mut data = vec![0u8; sw * sh * 3];
        let out = Image { pixels: data.as_mut_slice(), width: sw, pitch: sw * 3, height: sh, format: PixelFormat::RGB };
        d.decompress(bytes, out).map_err(err)?;
        Ok(Decoded { image: RgbImage { width: sw as u32, height: sh as u32, data }, full_width: w, full_height: h })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::generic::tests::encoded;
    use image::ImageFormat;

    #[test]
    fn picks_the_smallest_factor_not_below() {
        assert_eq!(choose_factor(0.1), ScalingFactor::ONE_EIGHTH);
        assert_eq!(choose_factor(0.125), ScalingFactor::ONE_EIGHTH);
        assert_eq!(choose_factor(0.2), ScalingFactor::ONE_QUARTER);
        assert_eq!(choose_factor(0.3), ScalingFactor::ONE_HALF);
        assert_eq!(choose_factor(0.9), ScalingFactor::ONE);
        assert_eq!(choose_factor(3.0), ScalingFactor::ONE);
    }

    #[test]
    fn decodes_at_the_chosen_scale() {
        let jpg = encoded(800, 600, ImageFormat::Jpeg);
        let full = decode(&jpg, 1 << 30, None::<fn(u32, u32) -> f64>).unwrap();
        assert_eq!((full.image.width, full.image.height), (800, 600));
        let mut asked = None;
        let q = decode(
            &jpg,
            1 << 30,
            Some(|w, h| {
                asked = Some((w, h));
                0.2
            }),
        )
        .unwrap();
        assert_eq!(asked, Some((800, 600)));
        assert_eq!((q.image.width, q.image.height, q.full_width), (200, 150, 800));
        assert_eq!(q.image.data.len(), 200 * 150 * 3);
        // Odd sizes round up, never below the scaled size.
        let odd = encoded(801, 17, ImageFormat::Jpeg);
        let e = decode(&odd, 1 << 30, Some(|_, _| 0.1)).unwrap();
        assert_eq!((e.image.width, e.image.height), (101, 3));
    }

    #[test]
    fn limit_and_garbage() {
        let jpg = encoded(100, 100, ImageFormat::Jpeg);
        assert_eq!(decode(&jpg, 9_999, None::<fn(u32, u32) -> f64>).unwrap_err().counter, Counter::TooLarge);
        assert_eq!(decode(b"\xff\xd8\xffjunk", 1 << 30, None::<fn(u32, u32) -> f64>).unwrap_err().counter, Counter::CorruptImage);
    }
}
