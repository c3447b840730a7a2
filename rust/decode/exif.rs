//! EXIF orientation (`exif_transpose=True`): the tag read with `kamadak-exif`, the transform
//! (flips and quarter turns of packed RGB) written here, as it is a few loops over a buffer
//! the decoder already owns.

use super::RgbImage;

/// The EXIF orientation of an encoded image (1..=8), 1 when there is none or it cannot be read.
pub fn orientation(bytes: &[u8]) -> u8 {
    let read = exif::Reader::new().read_from_container(&mut std::io::Cursor::new(bytes));
    let Ok(data) = read else { return 1 };
    data.get_field(exif::Tag::Orientation, exif::In::PRIMARY)
        .and_then(|f| f.value.get_uint(0))
        .filter(|o| (1..=8).contains(o))
        .map_or(1, |o| o as u8)
}

/// Do orientations 5..=8 swap width and height?
pub fn swaps_axes(orientation: u8) -> bool {
    (5..=8).contains(&orientation)
}

/// The image as it should be displayed: orientation 2 mirrors, 3 turns 180°, 4 flips, 5
/// transposes, 6 turns 90° clockwise, 7 transverses, 8 turns 90° counter-clockwise.
pub fn apply(img: RgbImage, orientation: u8) -> RgbImage {
    if !(2..=8).contains(&orientation) {
        return img;
    }
    let (w, h) = (img.width as usize, img.height as usize);
    let (ow, oh) = if swaps_axes(orientation) { (h, w) } else { (w, h) };
    let mut out = vec![0u8; img.data.len()];
    for y in 0..h {
        for x in 0..w {
            // Where source pixel (x, y) lands.
            let (nx, ny) = match orientation {
                2 => (w - 1 - x, y),
                3 => (w - 1 - x, h - 1 - y),
                4 => (x, h - 1 - y),
                5 => (y, x),
                6 => (h - 1 - y, x),
                7 => (h - 1 - y, w - 1 - x),
                _ => (y, w - 1 - x), // 8
            };
            let (s, d) = ((y * w + x) * 3, (ny * ow + nx) * 3);
            out[d..d + 3].copy_from_slice(&img.data[s..s + 3]);
        }
    }
    RgbImage { width: ow as u32, height: oh as u32, data: out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarter_turns_and_flips_move_pixels_where_exif_says() {
        // 2x1: red, blue.
        let img = RgbImage { width: 2, height: 1, data: vec![255, 0, 0, 0, 0, 255] };
        let six = apply(img.clone(), 6); // 90° clockwise: red on top
        assert_eq!((six.width, six.height), (1, 2));
        assert_eq!(&six.data[..3], &[255, 0, 0]);
        let eight = apply(img.clone(), 8); // 90° counter-clockwise: blue on top
        assert_eq!(&eight.data[..3], &[0, 0, 255]);
        let two = apply(img.clone(), 2);
        assert_eq!(&two.data[..3], &[0, 0, 255]);
        assert_eq!(apply(img.clone(), 1).data, img.data);
        assert_eq!(orientation(b"not an image"), 1);
    }
}
