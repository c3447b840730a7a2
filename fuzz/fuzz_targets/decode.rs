//! Arbitrary bytes as an image: decode (libjpeg-turbo scaled, and the image crate) then resize
//! must return a tile or an error, never panic, hang or allocate past the pixel limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webli_io::config::{ResizeMode, ResizeOptions, Settings};
use webli_io::decode::{decode, Request};
use webli_io::pipeline::{prepare_image, Job};
use webli_io::resize::{crop_box, resize_into};
use webli_io::sample::Sample;

fuzz_target!(|data: &[u8]| {
    // A small pixel limit keeps each run fast and checks that the limit holds.
    let max_pixels = 4 << 20;
    if let Ok(d) = decode(data, max_pixels, |_, _| Request { min_factor: 0.1, ..Request::FULL }) {
        assert!(d.image.data.len() == d.image.width as usize * d.image.height as usize * 3);
        assert!(d.full_width as u64 * d.full_height as u64 <= max_pixels);
        // The resize, called directly so that a panic is seen (the pipeline would catch it).
        let seed = data.len() as u64;
        let opts = ResizeOptions { resize: ResizeMode::RandomResizedCrop, image_size: 16, ..Default::default() };
        let crop = crop_box(&opts, d.image.width, d.image.height, seed);
        let mut tile = vec![0u8; 16 * 16 * 3];
        resize_into(&d.image, crop, &opts, &mut tile).expect("resize of a decoded image");
    }
    let mode = match data.first().map(|b| b % 4) {
        Some(0) => ResizeMode::Squash,
        Some(1) => ResizeMode::CenterCrop,
        Some(2) => ResizeMode::Letterbox,
        _ => ResizeMode::RandomResizedCrop,
    };
    let mut settings = Settings::default();
    settings.resize.image_size = 32;
    settings.resize.resize = mode;
    settings.decode.max_pixels = max_pixels;
    let cfg = Job::new(Vec::new(), settings);
    let sample = Sample {
        key: "k".into(),
        shard: "s".into(),
        index: 0,
        seq: 0,
        image: data.to_vec().into(),
        text: "t".into(),
        meta: Default::default(),
        lang: String::new(),
        copy: 0,
        meta_ok: true,
        extras: Vec::new(),
        span: None,
    };
    if let Ok(tile) = prepare_image(&sample, &cfg, None) {
        assert_eq!(tile.len(), 32 * 32 * 3);
    }
});
