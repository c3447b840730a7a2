//! The general decoder: every format of the `image` crate (PNG, WebP, GIF, BMP, and JPEG
//! through `zune-jpeg`), at full scale. JPEGs normally go to [`super::jpeg`]; this path takes
//! the ones libjpeg-turbo refuses (e.g. CMYK into RGB).
//!
//! The format is sniffed from the bytes (a PNG named `.jpg` decodes), grey and alpha images are
//! converted to RGB (alpha dropped, as Pillow's `convert("RGB")`), and 16-bit images are scaled
//! to 8 bits.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageError, ImageReader, Limits};

use super::{check_pixels, jpeg_is_complete, DecodeError, RgbImage};
use crate::stats::Counter;

fn classify(e: ImageError) -> DecodeError {
    match e {
        ImageError::Unsupported(u) => DecodeError::new(Counter::UnsupportedImage, u.to_string()),
        ImageError::Limits(l) => DecodeError::new(Counter::TooLarge, l.to_string()),
        other => DecodeError::new(Counter::CorruptImage, other.to_string()),
    }
}

/// What a decoder may allocate while it reads a header: a PNG's metadata chunks (an `iCCP`
/// profile, text) are read, and a compressed profile inflated, before the first pixel, so a
/// 64 px PNG whose profile inflates to 1 GiB cost ~410 MB and ~1 s per decode under the image
/// crate's default 512 MiB. A real profile or text chunk is well under 1 MiB (Pillow refuses
/// text over 1 MiB); the rest of the budget is the PNG decoder's row buffer (≤ 512 KiB).
/// A profile over the budget is ignored (the png crate drops it; profiles are never applied
/// here); a text chunk over it fails the decode, counted as too large.
const HEADER_ALLOC: u64 = 3 << 20;

/// An image reader whose header reading is bounded by [`HEADER_ALLOC`].
fn reader(bytes: &[u8]) -> Result<ImageReader<Cursor<&[u8]>>, DecodeError> {
    let mut reader =
        ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| DecodeError::new(Counter::CorruptImage, e.to_string()))?;
    let mut limits = Limits::default();
    limits.max_alloc = Some(HEADER_ALLOC);
    reader.limits(limits);
    Ok(reader)
}

/// Width and height from the header alone, without decoding.
pub fn dimensions(bytes: &[u8]) -> Result<(u32, u32), DecodeError> {
    let reader = reader(bytes)?;
    if reader.format().is_none() {
        return Err(DecodeError::new(Counter::UnsupportedImage, "unknown image format"));
    }
    reader.into_dimensions().map_err(classify)
}

/// Decode to RGB. Images whose header declares more than `max_pixels` pixels are rejected
/// before any pixel is decoded (a decompression bomb costs only its header).
pub fn decode_rgb(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, DecodeError> {
    let reader = reader(bytes)?;
    if reader.format().is_none() {
        return Err(DecodeError::new(Counter::UnsupportedImage, "unknown image format (not JPEG, PNG, WebP, GIF or BMP)"));
    }
    let is_jpeg = reader.format() == Some(image::ImageFormat::Jpeg);
    let mut decoder = reader.into_decoder().map_err(classify)?;
    let (w, h) = decoder.dimensions();
    check_pixels(w, h, max_pixels)?;
    let pixels = w as u64 * h as u64;
    if is_jpeg && !jpeg_is_complete(bytes) {
        return Err(DecodeError::new(Counter::CorruptImage, "truncated JPEG: no end-of-image marker after the last scan"));
    }
    let mut limits = Limits::default();
    // Room for the decoded image at 16 bits and 4 channels, plus the decoder's own buffers.
    limits.max_alloc = Some(pixels.saturating_mul(8).saturating_add(64 << 20));
    decoder.set_limits(limits).map_err(classify)?;
    let img = DynamicImage::from_decoder(decoder).map_err(classify)?;
    let rgb = match img {
        DynamicImage::ImageRgb8(buf) => buf,
        other => other.into_rgb8(),
    };
    let (width, height) = rgb.dimensions();
    Ok(RgbImage { width, height, data: rgb.into_raw() })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use image::{ImageEncoder, ImageFormat};

    /// A photo-like test pattern (smooth shading plus texture), encoded in `format`.
    pub(crate) fn encoded(w: u32, h: u32, format: ImageFormat) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let t = ((x * 7 + y * 13) % 31) as u8;
            image::Rgb([(x * 255 / w) as u8 ^ t, (y * 255 / h) as u8, ((x + y) % 256) as u8])
        });
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn decodes_jpeg_png_webp() {
        for fmt in [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::WebP] {
            let img = decode_rgb(&encoded(40, 30, fmt), 1 << 30).unwrap();
            assert_eq!((img.width, img.height, img.data.len()), (40, 30, 40 * 30 * 3), "{fmt:?}");
        }
    }

    #[test]
    fn decodes_grey_and_rgba_to_rgb() {
        let grey = image::GrayImage::from_fn(8, 4, |x, _| image::Luma([x as u8 * 30]));
        let mut out = Cursor::new(Vec::new());
        grey.write_to(&mut out, ImageFormat::Png).unwrap();
        let img = decode_rgb(out.get_ref(), 1 << 30).unwrap();
        assert_eq!(&img.data[3..6], &[30, 30, 30]);

        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(&[10, 20, 30, 0, 40, 50, 60, 255], 2, 1, image::ExtendedColorType::Rgba8)
            .unwrap();
        let img = decode_rgb(&png, 1 << 30).unwrap();
        assert_eq!(img.data, [10, 20, 30, 40, 50, 60]);
    }

    #[test]
    fn rejects_bad_bytes_by_reason() {
        let e = decode_rgb(b"definitely not an image", 1 << 30).unwrap_err();
        assert_eq!(e.counter, Counter::UnsupportedImage);
        let jpg = encoded(64, 64, ImageFormat::Jpeg);
        assert!(jpeg_is_complete(&jpg));
        let e = decode_rgb(&jpg[..jpg.len() * 2 / 3], 1 << 30).unwrap_err();
        assert_eq!(e.counter, Counter::CorruptImage);
        assert!(e.message.contains("truncated"), "{}", e.message);
        // Trailing bytes after the end-of-image marker are harmless.
        let mut padded = jpg.clone();
        padded.extend_from_slice(&[0u8; 100]);
        assert!(decode_rgb(&padded, 1 << 30).is_ok());
        let e = decode_rgb(&jpg[..20], 1 << 30).unwrap_err();
        assert_eq!(e.counter, Counter::CorruptImage);
        let png = encoded(64, 64, ImageFormat::Png);
        let mut bad = png.clone();
        let n = bad.len();
        bad[n / 2] ^= 0xff; // breaks the IDAT CRC
        assert_eq!(decode_rgb(&bad, 1 << 30).unwrap_err().counter, Counter::CorruptImage);
    }

    #[test]
    fn pixel_limit_is_checked_on_the_header() {
        let png = encoded(100, 100, ImageFormat::Png);
        let e = decode_rgb(&png, 9_999).unwrap_err();
        assert_eq!(e.counter, Counter::TooLarge);
        assert!(decode_rgb(&png, 10_000).is_ok());
        assert_eq!(dimensions(&png).unwrap(), (100, 100));
    }
}
