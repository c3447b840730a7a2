//! Image bytes → RGB pixels: the decode stage, one file per decoder.
//!
//! - [`jpeg`]: libjpeg-turbo (vendored, SIMD), with DCT-domain scaling: a JPEG much larger than
//!   the target is decoded at 1/2, 1/4 or 1/8 scale, never below the size the resize needs.
//! - [`generic`]: the `image` crate, full scale: PNG, WebP, GIF, BMP, and the JPEGs
//!   libjpeg-turbo refuses.
//!
//! Every path checks the pixel count declared by the header against `max_pixels` before it
//! decodes anything, so a decompression bomb costs only its header.

pub mod exif;
pub mod generic;
pub mod jpeg;

use crate::stats::Counter;

/// Decoded pixels, row-major, 3 bytes per pixel.
#[derive(Clone, Debug)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

/// A decoded image and the size of the original (they differ after a scaled decode).
#[derive(Clone, Debug)]
pub struct Decoded {
    pub image: RgbImage,
    pub full_width: u32,
    pub full_height: u32,
}

/// Why an image was not decoded: the counter it bumps and a message.
#[derive(Clone, Debug)]
pub struct DecodeError {
    pub counter: Counter,
    pub message: String,
}

impl DecodeError {
    pub(crate) fn new(counter: Counter, message: impl Into<String>) -> Self {
        Self { counter, message: message.into() }
    }
}

/// JPEG files start with SOI and another marker.
pub fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.len() > 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF
}

/// A JPEG is complete when its end-of-image marker (`FF D9`) comes after its last
/// start-of-scan (`FF DA`). Neither pair can occur inside entropy-coded data (an `FF` there is
/// followed by `00` or a restart marker), so scanning back from the end for whichever comes first
/// tells a whole file from a cut one. Decoders differ here (zune-jpeg fills a cut image with
/// grey, libjpeg warns); a half-grey picture is not training data, so a cut JPEG is skipped, as
/// Pillow does by default.
pub fn jpeg_is_complete(bytes: &[u8]) -> bool {
    for i in (1..bytes.len()).rev() {
        if bytes[i - 1] == 0xFF {
            match bytes[i] {
                0xD9 => return true,
                0xDA => return false,
                _ => {}
            }
        }
    }
    false
}

pub(crate) fn check_pixels(w: u32, h: u32, max_pixels: u64) -> Result<(), DecodeError> {
    if w == 0 || h == 0 {
        return Err(DecodeError::new(Counter::CorruptImage, format!("image has size {w}x{h}")));
    }
    let pixels = w as u64 * h as u64;
    if pixels > max_pixels {
        return Err(DecodeError::new(
            Counter::TooLarge,
            format!("{w}x{h} = {pixels} pixels is over the limit of {max_pixels} (decompression bomb?)"),
        ));
    }
    Ok(())
}

/// Decode `bytes` to RGB. `min_factor(w, h)` is asked, once the header gives the full size, for
/// the smallest scale factor (0 < f ≤ 1) the caller can use; a JPEG is then decoded at the
/// smallest DCT scale (1/8, 1/4, 1/2 or 1) not below it. With `scaled = false`, or for other
/// formats, the image is decoded at full size.
pub fn decode(bytes: &[u8], max_pixels: u64, scaled: bool, min_factor: impl FnOnce(u32, u32) -> f64) -> Result<Decoded, DecodeError> {
    if is_jpeg(bytes) {
        if !jpeg_is_complete(bytes) {
            return Err(DecodeError::new(Counter::CorruptImage, "truncated JPEG: no end-of-image marker after the last scan"));
        }
        match jpeg::decode(bytes, max_pixels, if scaled { Some(min_factor) } else { None }) {
            Ok(d) => return Ok(d),
            // Over the limit is final; anything else gets a second opinion below.
            Err(e) if e.counter == Counter::TooLarge => return Err(e),
            Err(_) => {}
        }
    }
    let image = generic::decode_rgb(bytes, max_pixels)?;
    Ok(Decoded { full_width: image.width, full_height: image.height, image })
}

/// [`decode`], then, with `exif_transpose`, turned and flipped as the EXIF orientation tag says
/// (Pillow's `ImageOps.exif_transpose`); `min_factor` and the full size are those of the image
/// as displayed.
pub fn decode_oriented(
    bytes: &[u8],
    max_pixels: u64,
    scaled: bool,
    exif_transpose: bool,
    min_factor: impl FnOnce(u32, u32) -> f64,
) -> Result<Decoded, DecodeError> {
    let o = if exif_transpose { exif::orientation(bytes) } else { 1 };
    if o == 1 {
        return decode(bytes, max_pixels, scaled, min_factor);
    }
    let swap = exif::swaps_axes(o);
    let d = decode(bytes, max_pixels, scaled, |w, h| if swap { min_factor(h, w) } else { min_factor(w, h) })?;
    let (full_width, full_height) = if swap { (d.full_height, d.full_width) } else { (d.full_width, d.full_height) };
    Ok(Decoded { image: exif::apply(d.image, o), full_width, full_height })
}

/// Decode at full size (no scaling): [`decode`] with `scaled = false`.
pub fn decode_rgb(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, DecodeError> {
    decode(bytes, max_pixels, false, |_, _| 1.0).map(|d| d.image)
}
