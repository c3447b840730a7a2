//! JPEG through libjpeg-turbo's TurboJPEG 3 API (vendored in `turbojpeg-sys`, built with its
//! SIMD code: the `require-simd` feature makes a build without NASM fail instead of silently
//! running 2× slower), with DCT-domain scaling and region decoding.
//!
//! - **Scaling.** Decoding a 1600 px JPEG in full to make a 224 px tile throws most of the work
//!   away. libjpeg-turbo scales in the inverse DCT: at 1/4 it runs a 2×2 IDCT per block instead
//!   of 8×8 and colour-converts a sixteenth of the pixels. The scale is the smallest of
//!   1/8, 1/4, 1/2 and 1 that keeps the region the resize reads at least as large as the
//!   target, so quality stays that of a full decode followed by an antialiased downscale
//!   (tests/test_quality.py bounds the difference by PSNR). Those four have SIMD IDCTs; the
//!   other eighths (3/8, 5/8, ...) run libjpeg's C IDCTs and measured slower per image
//!   (`cargo bench --bench decode_stages`), so they are not used.
//! - **Regions.** A crop needs only its own pixels: TurboJPEG 3's cropping region
//!   (`jpeg_skip_scanlines` for the rows above, which are entropy-decoded but not transformed;
//!   `jpeg_crop_scanline` for the columns, which are entropy-decoded but neither transformed nor
//!   colour-converted; the rows below are not read at all). The region is widened by the resize
//!   filter's support plus two pixels, and its left edge moved to an iMCU boundary (libjpeg's
//!   rule), so the tile matches the one cut from a full decode (tested below).
//! - **Fast paths** (`fast_decode`, off by default): libjpeg's fast chroma upsampling (no
//!   smoothing) and fast integer IDCT (the latter only at full scale, libjpeg ignores it when
//!   scaling). Their cost in quality is measured in tests/test_quality.py.
//!
//! Entropy (Huffman) decoding of every block up to the last row needed is the floor: neither
//! scaling nor cropping removes it.
//!
//! The `turbojpeg` crate wraps scaling but not cropping, so this file calls `turbojpeg-sys`
//! (re-exported as `turbojpeg::raw`) directly: six functions behind one small handle type.

use std::cell::RefCell;
use std::ffi::CStr;

use turbojpeg::libc::c_int;
use turbojpeg::raw;

use super::{check_pixels, DecodeError, Decoded, Region, RgbImage};
use crate::stats::Counter;

/// Progressive JPEGs with more scans than this are refused (a known denial-of-service pattern;
/// real files have about 10: libjpeg's default script, mozjpeg's optimised ones a few more).
const MAX_SCANS: c_int = 100;

/// Each scan of a progressive JPEG passes over every block, so a scan bomb costs scans × pixels:
/// large images get fewer (down to `MIN_SCANS`), so that no image costs more than about this
/// many pixel-scans (100 scans of a 10 MP photo; a 500-scan bomb at 89 MP took 15 s).
const PIXEL_SCANS: u64 = 1_000_000_000;
const MIN_SCANS: c_int = 32;

/// The scans allowed for a `w × h` JPEG.
fn scan_limit(w: u32, h: u32) -> c_int {
    let pixels = (w as u64 * h as u64).max(1);
    (PIXEL_SCANS / pixels).clamp(MIN_SCANS as u64, MAX_SCANS as u64) as c_int
}

/// The DCT scales used, as eighths: 1/8, 1/4, 1/2, 1 (the ones with SIMD IDCTs).
const EIGHTHS: [u32; 4] = [1, 2, 4, 8];

/// The iMCU width in pixels per TurboJPEG subsampling code (`tjMCUWidth` in turbojpeg.h:
/// 4:4:4, 4:2:2, 4:2:0, grey, 4:4:0, 4:1:1, 4:4:1).
const MCU_WIDTH: [u32; 7] = [8, 16, 16, 8, 8, 32, 8];

/// What the caller needs of a JPEG, decided once its header gives the full size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Request {
    /// The smallest scale (0 < f ≤ 1) the caller can use; 1 decodes at full size.
    pub min_factor: f64,
    /// Only this part of the full-size image is read (`left, top, width, height`), resized to
    /// `out_size` pixels a side (which sets the margin the resize filter needs). None: all of it.
    pub region: Option<(Region, u32)>,
    /// Fast upsampling and fast integer IDCT (see the module notes).
    pub fast: bool,
}

impl Request {
    /// The whole image at full size, exact.
    pub const FULL: Request = Request { min_factor: 1.0, region: None, fast: false };
}

/// A TurboJPEG decompression instance (`tj3Init` … `tj3Destroy`).
struct Handle(raw::tjhandle);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed once.
        unsafe { raw::tj3Destroy(self.0) }
    }
}

impl Handle {
    fn new() -> Result<Self, DecodeError> {
        // SAFETY: plain constructor; null on failure.
        let h = unsafe { raw::tj3Init(raw::TJINIT_TJINIT_DECOMPRESS as c_int) };
        if h.is_null() {
            return Err(DecodeError::new(Counter::CorruptImage, "libjpeg-turbo: tj3Init failed"));
        }
        let h = Handle(h);
        h.set(raw::TJPARAM_TJPARAM_SCANLIMIT as c_int, MAX_SCANS)?;
        Ok(h)
    }

    fn check(&self, rc: c_int) -> Result<(), DecodeError> {
        if rc == 0 {
            return Ok(());
        }
        // SAFETY: tj3GetErrorStr returns a NUL-terminated string owned by the handle.
        let msg = unsafe { CStr::from_ptr(raw::tj3GetErrorStr(self.0)) }.to_string_lossy().into_owned();
        // Over the scan limit is a limit, as final as too many pixels: no second decoder may
        // spend the time the limit saved (zune-jpeg has none).
        let counter = if msg.contains("more than") && msg.contains("scans") { Counter::TooLarge } else { Counter::CorruptImage };
        Err(DecodeError::new(counter, format!("libjpeg-turbo: {msg}")))
    }

    fn set(&self, param: c_int, value: c_int) -> Result<(), DecodeError> {
        // SAFETY: a valid handle and a parameter id from the bindings.
        self.check(unsafe { raw::tj3Set(self.0, param, value) })
    }

    fn get(&self, param: c_int) -> c_int {
        // SAFETY: as above; read-only parameters are valid after tj3DecompressHeader.
        unsafe { raw::tj3Get(self.0, param) }
    }

    /// Read `bytes`' header into the handle; the full size.
    fn read_header(&self, bytes: &[u8]) -> Result<(u32, u32), DecodeError> {
        // SAFETY: `bytes` is valid for its length; the handle keeps no pointer to it afterwards.
        self.check(unsafe { raw::tj3DecompressHeader(self.0, bytes.as_ptr(), bytes.len() as _) })?;
        let (w, h) = (self.get(raw::TJPARAM_TJPARAM_JPEGWIDTH as c_int), self.get(raw::TJPARAM_TJPARAM_JPEGHEIGHT as c_int));
        if w <= 0 || h <= 0 {
            return Err(DecodeError::new(Counter::CorruptImage, format!("image has size {w}x{h}")));
        }
        Ok((w as u32, h as u32))
    }
}

thread_local! {
    // A decompressor holds libjpeg state and buffers: one per decode thread, reused.
    static HANDLE: RefCell<Option<Handle>> = const { RefCell::new(None) };
}

/// `f` with this thread's handle, made on first use.
fn with_handle<T>(f: impl FnOnce(&Handle) -> Result<T, DecodeError>) -> Result<T, DecodeError> {
    HANDLE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Handle::new()?);
        }
        f(slot.as_ref().expect("set above"))
    })
}

/// The smallest scale, in eighths, not below `min_factor` (8 when none is).
pub fn choose_eighths(min_factor: f64) -> u32 {
    EIGHTHS.into_iter().find(|&m| m as f64 / 8.0 >= min_factor).unwrap_or(8)
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// `TJSCALED`: a dimension at `m`/8 scale, rounded up.
fn scaled(dim: u32, m: u32) -> u32 {
    (dim * m).div_ceil(8)
}

/// The region to decode, in scaled pixels (`x, y, w, h`), for `region` of a `w × h` image at
/// `m`/8 scale: widened by the resize filter's support plus 2 px, the left edge moved down to an
/// iMCU boundary. None when that is the whole image.
fn scaled_region(region: Region, out_size: u32, w: u32, h: u32, m: u32, mcu_width: u32) -> Option<(u32, u32, u32, u32)> {
    let (sw, sh) = (scaled(w, m), scaled(h, m));
    let s = m as f64 / 8.0;
    let (l, t, cw, ch) = region;
    let out = out_size.max(1) as f64;
    // Bilinear support is one source pixel per output pixel's footprint on each side.
    let (px, py) = ((cw * s / out).ceil().max(1.0) + 2.0, (ch * s / out).ceil().max(1.0) + 2.0);
    let step = scaled(mcu_width, m).max(1);
    let mut x0 = (l * s - px).floor().max(0.0) as u32;
    x0 -= x0 % step;
    let y0 = (t * s - py).floor().max(0.0) as u32;
    let x1 = (((l + cw) * s + px).ceil() as u32).min(sw);
    let y1 = (((t + ch) * s + py).ceil() as u32).min(sh);
    if x1 <= x0 || y1 <= y0 || (x0 == 0 && y0 == 0 && x1 == sw && y1 == sh) {
        return None;
    }
    Some((x0, y0, x1 - x0, y1 - y0))
}

/// The full size of a JPEG from its header, without decoding (None: libjpeg-turbo cannot
/// read the header).
pub fn dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    with_handle(|tj| tj.read_header(bytes)).ok()
}

/// Decode a JPEG to RGB. `want(w, h)` is asked once the header gives the full size.
pub fn decode(bytes: &[u8], max_pixels: u64, want: impl FnOnce(u32, u32) -> Request) -> Result<Decoded, DecodeError> {
    run(bytes, max_pixels, |w, h| {
        let r = want(w, h);
        (choose_eighths(r.min_factor), r.region, r.fast)
    })
}

/// The whole image at `pick(w, h)`/8 scale, any eighth from 1 to 8 (for the benchmark that
/// compares them with the four used).
#[doc(hidden)]
pub fn decode_eighths(bytes: &[u8], pick: impl FnOnce(u32, u32) -> u32) -> Result<Decoded, DecodeError> {
    run(bytes, u64::MAX, |w, h| (pick(w, h).clamp(1, 8), None, false))
}

type Plan = (u32, Option<(Region, u32)>, bool);

fn run(bytes: &[u8], max_pixels: u64, plan: impl FnOnce(u32, u32) -> Plan) -> Result<Decoded, DecodeError> {
    with_handle(|tj| {
        let (w, h) = tj.read_header(bytes)?;
        check_pixels(w, h, max_pixels)?;
        tj.set(raw::TJPARAM_TJPARAM_SCANLIMIT as c_int, scan_limit(w, h))?;
        let (m, want_region, fast) = plan(w, h);
        let lossless = tj.get(raw::TJPARAM_TJPARAM_LOSSLESS as c_int) != 0;
        let m = if lossless { 8 } else { m };
        let subsamp = tj.get(raw::TJPARAM_TJPARAM_SUBSAMP as c_int);
        let region = match want_region {
            Some((r, out)) if !lossless && (0..MCU_WIDTH.len() as c_int).contains(&subsamp) => {
                scaled_region(r, out, w, h, m, MCU_WIDTH[subsamp as usize])
            }
            _ => None,
        };
        tj.set(raw::TJPARAM_TJPARAM_FASTUPSAMPLE as c_int, fast as c_int)?;
        tj.set(raw::TJPARAM_TJPARAM_FASTDCT as c_int, fast as c_int)?;
        // TurboJPEG lists its factors in lowest terms (1/2, not 4/8) and matches them exactly.
        let g = gcd(m, 8);
        let factor = raw::tjscalingfactor { num: (m / g) as c_int, denom: (8 / g) as c_int };
        // SAFETY: plain setters on a valid handle; the scale must be set before the region.
        tj.check(unsafe { raw::tj3SetScalingFactor(tj.0, factor) })?;
        let (x, y, rw, rh) = region.unwrap_or((0, 0, scaled(w, m), scaled(h, m)));
        let tj_region = match region {
            Some(_) => raw::tjregion { x: x as c_int, y: y as c_int, w: rw as c_int, h: rh as c_int },
            None => raw::tjregion { x: 0, y: 0, w: 0, h: 0 }, // TJUNCROPPED
        };
        tj.check(unsafe { raw::tj3SetCroppingRegion(tj.0, tj_region) })?;
        let len = rw as usize * rh as usize * 3;
        // Not zeroed first: libjpeg writes every byte of the rh rows of rw pixels on success
        // (zeroing 0.5 MB per image cost ~3% of the decode).
        let mut data: Vec<u8> = Vec::with_capacity(len);
        // SAFETY: the buffer has room for rh rows of rw RGB pixels, the size of the cropped,
        // scaled output, and pitch is one such row; it is read only after success, when
        // tj3Decompress8 has written all of it.
        let rc = unsafe {
            raw::tj3Decompress8(tj.0, bytes.as_ptr(), bytes.len() as _, data.as_mut_ptr(), (rw * 3) as c_int, raw::TJPF_TJPF_RGB as c_int)
        };
        tj.check(rc)?;
        // SAFETY: as above, all `len` bytes were written.
        unsafe { data.set_len(len) };
        Ok(Decoded {
            image: RgbImage { width: rw, height: rh, data },
            full_width: w,
            full_height: h,
            scaled_width: scaled(w, m),
            scaled_height: scaled(h, m),
            origin: (x, y),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::generic::tests::encoded;
    use image::ImageFormat;

    fn at(min_factor: f64) -> impl FnOnce(u32, u32) -> Request {
        move |_, _| Request { min_factor, ..Request::FULL }
    }

    #[test]
    fn picks_the_smallest_factor_not_below() {
        assert_eq!(choose_eighths(0.1), 1);
        assert_eq!(choose_eighths(0.125), 1);
        assert_eq!(choose_eighths(0.2), 2);
        assert_eq!(choose_eighths(0.3), 4);
        assert_eq!(choose_eighths(0.9), 8);
        assert_eq!(choose_eighths(3.0), 8);
    }

    #[test]
    fn decodes_at_the_chosen_scale() {
        let jpg = encoded(800, 600, ImageFormat::Jpeg);
        let full = decode(&jpg, 1 << 30, |_, _| Request::FULL).unwrap();
        assert_eq!((full.image.width, full.image.height), (800, 600));
        let mut asked = None;
        let q = decode(&jpg, 1 << 30, |w, h| {
            asked = Some((w, h));
            Request { min_factor: 0.2, ..Request::FULL }
        })
        .unwrap();
        assert_eq!(asked, Some((800, 600)));
        assert_eq!((q.image.width, q.image.height, q.full_width, q.scaled_width, q.origin), (200, 150, 800, 200, (0, 0)));
        assert_eq!(q.image.data.len(), 200 * 150 * 3);
        // Odd sizes round up, never below the scaled size.
        let odd = encoded(801, 17, ImageFormat::Jpeg);
        let e = decode(&odd, 1 << 30, at(0.1)).unwrap();
        assert_eq!((e.image.width, e.image.height), (101, 3));
    }

    #[test]
    fn a_region_is_the_same_pixels_as_that_part_of_the_whole() {
        // A photo-like picture (the generic helper's gradient + noise), 4:2:0 as the encoder
        // writes by default; every scale, regions at odd offsets.
        let jpg = encoded(1000, 700, ImageFormat::Jpeg);
        for m in [0.125, 0.25, 0.5, 1.0] {
            for region in [(333.0, 97.0, 401.0, 500.0), (0.0, 0.0, 500.0, 300.0), (599.0, 399.0, 401.0, 301.0)] {
                let whole = decode(&jpg, 1 << 30, at(m)).unwrap();
                let part = decode(&jpg, 1 << 30, |_, _| Request { min_factor: m, region: Some((region, 64)), fast: false }).unwrap();
                let (ox, oy) = part.origin;
                assert!(part.image.width < whole.image.width || part.image.height < whole.image.height, "{m} {region:?}");
                assert_eq!((part.scaled_width, part.scaled_height), (whole.image.width, whole.image.height));
                // It covers the region it was asked for.
                let s = whole.image.width as f64 / 1000.0;
                assert!(ox as f64 <= region.0 * s && oy as f64 <= region.1 * s);
                assert!((ox + part.image.width) as f64 >= ((region.0 + region.2) * s).min(whole.image.width as f64));
                assert!((oy + part.image.height) as f64 >= ((region.1 + region.3) * s).min(whole.image.height as f64));
                // And holds the same pixels, but for libjpeg's smoothing at the region's own
                // left and right edges (the upsampler sees no neighbour there): checked away
                // from the edges, where the resize reads.
                let mut worst = 0;
                for y in 0..part.image.height {
                    for x in 2..part.image.width.saturating_sub(2) {
                        for c in 0..3 {
                            let a = part.image.data[((y * part.image.width + x) * 3 + c) as usize] as i32;
                            let b = whole.image.data[(((y + oy) * whole.image.width + x + ox) * 3 + c) as usize] as i32;
                            worst = worst.max((a - b).abs());
                        }
                    }
                }
                assert_eq!(worst, 0, "scale {m}, region {region:?}");
            }
        }
    }

    #[test]
    fn the_fast_path_differs_a_little() {
        let jpg = encoded(640, 480, ImageFormat::Jpeg);
        let exact = decode(&jpg, 1 << 30, |_, _| Request::FULL).unwrap();
        let fast = decode(&jpg, 1 << 30, |_, _| Request { fast: true, ..Request::FULL }).unwrap();
        let diff: Vec<i32> = exact.image.data.iter().zip(&fast.image.data).map(|(&a, &b)| (a as i32 - b as i32).abs()).collect();
        assert!(diff.iter().any(|&d| d > 0), "the setting reaches libjpeg");
        assert!(diff.iter().sum::<i32>() as f64 / (diff.len() as f64) < 2.0);
        // The handle is reused: the next exact decode is exact again.
        assert_eq!(decode(&jpg, 1 << 30, |_, _| Request::FULL).unwrap().image.data, exact.image.data);
    }

    #[test]
    fn limit_and_garbage() {
        let jpg = encoded(100, 100, ImageFormat::Jpeg);
        assert_eq!(decode(&jpg, 9_999, |_, _| Request::FULL).unwrap_err().counter, Counter::TooLarge);
        assert_eq!(decode(b"\xff\xd8\xffjunk", 1 << 30, |_, _| Request::FULL).unwrap_err().counter, Counter::CorruptImage);
    }
}
