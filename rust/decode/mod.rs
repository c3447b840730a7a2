//! Image bytes → RGB pixels: the decode stage, one file per decoder.
//!
//! - [`jpeg`]: libjpeg-turbo (vendored, SIMD), with DCT-domain scaling: a JPEG much larger than
//!   the target is decoded at 1/2, 1/4 or 1/8 scale, never below the size the resize needs;
//!   and with region decoding: a crop decodes only the crop (plus the resize filter's margin).
//! - [`generic`]: the `image` crate, full scale: PNG, WebP, GIF, BMP, and the JPEGs
//!   libjpeg-turbo refuses.
//!
//! Every path checks the pixel count declared by the header against `max_pixels` before it
//! decodes anything, so a decompression bomb costs only its header.

pub mod exif;
pub mod generic;
pub mod jpeg;

use crate::stats::Counter;

pub use jpeg::Request;

/// A part of an image, `(left, top, width, height)` in pixels (fractions allowed).
pub type Region = (f64, f64, f64, f64);

/// Decoded pixels, row-major, 3 bytes per pixel.
#[derive(Clone, Debug)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

/// A decoded image (all of it, or the region asked for) and where it lies: the original's size,
/// the size of the whole image at the decode's scale, and the top-left corner of `image` in
/// that scaled image.
#[derive(Clone, Debug)]
pub struct Decoded {
    pub image: RgbImage,
    pub full_width: u32,
    pub full_height: u32,
    pub scaled_width: u32,
    pub scaled_height: u32,
    pub origin: (u32, u32),
}

impl Decoded {
    /// All of `image`, decoded at full size.
    pub fn whole(image: RgbImage) -> Self {
        let (w, h) = (image.width, image.height);
        Self { image, full_width: w, full_height: h, scaled_width: w, scaled_height: h, origin: (0, 0) }
    }

    /// `region` of the original, in the pixels of `image` (what the resize reads).
    pub fn locate(&self, region: Region) -> Region {
        let fx = self.scaled_width as f64 / self.full_width as f64;
        let fy = self.scaled_height as f64 / self.full_height as f64;
        let (l, t) = (region.0 * fx - self.origin.0 as f64, region.1 * fy - self.origin.1 as f64);
        (l, t, (region.2 * fx).min(self.image.width as f64 - l), (region.3 * fy).min(self.image.height as f64 - t))
    }
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

pub fn check_pixels(w: u32, h: u32, max_pixels: u64) -> Result<(), DecodeError> {
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

/// Decode `bytes` to RGB. `want(w, h)` is asked, once the header gives the full size, what the
/// caller needs (see [`Request`]); a JPEG is then decoded at the smallest DCT scale (1/8, 1/4,
/// 1/2 or 1) not below `min_factor`, and only the region asked for. Other formats, and JPEGs
/// libjpeg-turbo refuses, are decoded whole at full size (the answer says which).
pub fn decode(bytes: &[u8], max_pixels: u64, want: impl FnOnce(u32, u32) -> Request) -> Result<Decoded, DecodeError> {
    if is_jpeg(bytes) {
        if !jpeg_is_complete(bytes) {
            return Err(DecodeError::new(Counter::CorruptImage, "truncated JPEG: no end-of-image marker after the last scan"));
        }
        match jpeg::decode(bytes, max_pixels, want) {
            Ok(d) => return Ok(d),
            // Over the limit is final; anything else gets a second opinion below.
            Err(e) if e.counter == Counter::TooLarge => return Err(e),
            Err(_) => {}
        }
    }
    generic::decode_rgb(bytes, max_pixels).map(Decoded::whole)
}

/// [`decode`], then, with `exif_transpose`, turned and flipped as the EXIF orientation tag says
/// (Pillow's `ImageOps.exif_transpose`); `want` is asked with the size of the image as
/// displayed. A turned image is decoded whole (its region would need turning too; such photos
/// are rare on the web).
pub fn decode_oriented(
    bytes: &[u8],
    max_pixels: u64,
    exif_transpose: bool,
    want: impl FnOnce(u32, u32) -> Request,
) -> Result<Decoded, DecodeError> {
    let o = if exif_transpose { exif::orientation(bytes) } else { 1 };
    if o == 1 {
        return decode(bytes, max_pixels, want);
    }
    let swap = exif::swaps_axes(o);
    let d = decode(bytes, max_pixels, |w, h| Request { region: None, ..if swap { want(h, w) } else { want(w, h) } })?;
    let image = exif::apply(d.image, o);
    Ok(if swap {
        Decoded {
            image,
            full_width: d.full_height,
            full_height: d.full_width,
            scaled_width: d.scaled_height,
            scaled_height: d.scaled_width,
            origin: (0, 0),
        }
    } else {
        Decoded { image, ..d }
    })
}

/// Decode at full size, whole.
pub fn decode_rgb(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, DecodeError> {
    decode(bytes, max_pixels, |_, _| Request::FULL).map(|d| d.image)
}
