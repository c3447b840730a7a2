//! Per-stage speed of the decode path on real JPEGs, one thread (criterion).
//!
//!   python -m webli_io.bench --export-jpegs /tmp/jpegs    # the realistic set (see bench.py)
//!   WEBLI_BENCH_JPEGS=/tmp/jpegs/q90 cargo bench --bench decode_stages
//!
//! Each case decodes every file of the folder once per iteration (throughput: images/s):
//!
//! - `full`: libjpeg-turbo, whole image, full size: the yardstick (what simplejpeg's
//!   `decode_jpeg` does, same library).
//! - `scale_1_8`: whole image at 1/8 (a DC-only IDCT, 1/64 of the colour conversion): close to
//!   the entropy-decoding floor that no scaling or cropping removes.
//! - `scaled_224`, `scaled_224_fast`: the scale the squash resize to 224 px picks (exact; fast
//!   upsampling + IDCT).
//! - `eighths_224`: the smallest eighth (3/8, 5/8, ...) instead: fewer pixels, C IDCTs.
//! - `center_crop_whole` / `center_crop_region`, `rrc_whole` / `rrc_region`: the crop modes'
//!   decode without and with region decoding.
//! - `resize_224`: the resize stage alone, from the scaled decode.
//! - `prepare_{squash,center_crop,rrc}`: the whole per-sample path of the stream (decode, crop,
//!   resize), as `ns_decode + ns_resize` in the stream's stats.
//!
//! Without `WEBLI_BENCH_JPEGS` it falls back to drawn pictures, which decode unlike photographs.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{Map, Value};
use webli_io::config::{ResizeMode, ResizeOptions, Settings};
use webli_io::decode::{decode, Request};
use webli_io::pipeline::{prepare_image, Job};
use webli_io::resize::{crop_box, resize_into};
use webli_io::sample::Sample;

const SIZE: u32 = 224;

fn jpegs() -> Vec<Vec<u8>> {
    if let Ok(dir) = std::env::var("WEBLI_BENCH_JPEGS") {
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("WEBLI_BENCH_JPEGS={dir}: {e}"))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jpg" || x == "jpeg"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no .jpg files in {dir}");
        eprintln!("{} JPEGs from {dir}", files.len());
        return files.iter().map(|p| std::fs::read(Path::new(p)).unwrap()).collect();
    }
    eprintln!("WEBLI_BENCH_JPEGS not set: drawn pictures (they decode unlike photographs)");
    (0..16)
        .map(|i| {
            let (w, h) = (800 + 40 * i, 600 + 20 * i);
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([(x * 255 / w) as u8 ^ ((x * y) % 17) as u8, (y * 255 / h) as u8, ((x + y) % 256) as u8])
            });
            let mut out = std::io::Cursor::new(Vec::new());
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&img).unwrap();
            out.into_inner()
        })
        .collect()
}

fn min_factor(w: u32, h: u32, crop: (f64, f64, f64, f64)) -> f64 {
    let _ = (w, h);
    (SIZE as f64 / crop.2).max(SIZE as f64 / crop.3)
}

fn squash(w: u32, h: u32) -> Request {
    Request { min_factor: min_factor(w, h, (0.0, 0.0, w as f64, h as f64)), ..Request::FULL }
}

fn resize_opts(mode: ResizeMode) -> ResizeOptions {
    ResizeOptions { image_size: SIZE, resize: mode, ..ResizeOptions::default() }
}

fn job(mode: &str, crop_decode: bool) -> Job {
    let mut flat = Map::new();
    flat.insert("image_size".into(), Value::from(SIZE));
    flat.insert("resize".into(), Value::from(mode));
    flat.insert("crop_decode".into(), Value::from(crop_decode));
    Job::new(Vec::new(), Settings::from_flat(flat).unwrap())
}

fn stages(c: &mut Criterion) {
    let files = jpegs();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(files.len() as u64)).sample_size(10);
    let whole = |f: fn(u32, u32) -> Request| {
        let files = &files;
        move || {
            for d in files {
                std::hint::black_box(decode(d, u64::MAX, f).unwrap());
            }
        }
    };
    g.bench_function("full", |b| b.iter(whole(|_, _| Request::FULL)));
    g.bench_function("scale_1_8", |b| b.iter(whole(|_, _| Request { min_factor: 0.0, ..Request::FULL })));
    g.bench_function("scaled_224", |b| b.iter(whole(squash)));
    g.bench_function("scaled_224_fast", |b| b.iter(whole(|w, h| Request { fast: true, ..squash(w, h) })));
    g.bench_function("eighths_224", |b| {
        b.iter(|| {
            for d in &files {
                std::hint::black_box(webli_io::decode::jpeg::decode_eighths(d, |w, h| {
                    let f = (SIZE as f64 / w as f64).max(SIZE as f64 / h as f64);
                    (1..=8).find(|&m| m as f64 / 8.0 >= f).unwrap_or(8)
                }))
                .unwrap();
            }
        })
    });
    for (name, mode) in [("center_crop", ResizeMode::CenterCrop), ("rrc", ResizeMode::RandomResizedCrop)] {
        let r = resize_opts(mode);
        for region in [false, true] {
            let r = r.clone();
            g.bench_function(format!("{name}_{}", if region { "region" } else { "whole" }), |b| {
                b.iter(|| {
                    for (i, d) in files.iter().enumerate() {
                        std::hint::black_box(
                            decode(d, u64::MAX, |w, h| {
                                let crop = crop_box(&r, w, h, i as u64);
                                Request { min_factor: min_factor(w, h, crop), region: region.then_some((crop, SIZE)), fast: false }
                            })
                            .unwrap(),
                        );
                    }
                })
            });
        }
    }
    let decoded: Vec<_> = files.iter().map(|d| decode(d, u64::MAX, squash).unwrap()).collect();
    let mut tile = vec![0u8; (SIZE * SIZE * 3) as usize];
    g.bench_function("resize_224", |b| {
        b.iter(|| {
            for d in &decoded {
                resize_into(&d.image, (0.0, 0.0, d.image.width as f64, d.image.height as f64), &resize_opts(ResizeMode::Squash), &mut tile)
                    .unwrap();
            }
        })
    });
    let samples: Vec<_> = files.iter().enumerate().map(|(i, d)| Sample::of_image(&format!("{i:06}"), d.clone())).collect();
    for (name, mode) in [("squash", "squash"), ("center_crop", "center_crop"), ("rrc", "random_resized_crop")] {
        let cfg = job(mode, true);
        g.bench_function(format!("prepare_{name}"), |b| {
            b.iter(|| {
                for s in &samples {
                    std::hint::black_box(prepare_image(s, &cfg, None).unwrap());
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
