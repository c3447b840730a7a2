//! The settings of one stream: built once (validated in Python, again here) and handed to every
//! stage, so that a setting such as `image_size` walks straight from the constructor to the stage
//! that uses it.

use std::collections::HashMap;
use std::str::FromStr;

/// How an image is brought to a square `image_size × image_size`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ResizeMode {
    /// Resize both sides to the target, ignoring the aspect ratio (big_vision's `resize`).
    Squash,
    /// Take the central square (side = the shorter side), then resize (torchvision's
    /// `Resize(s) + CenterCrop(s)`).
    CenterCrop,
    /// torchvision's `RandomResizedCrop(s, scale=(0.08, 1), ratio=(3/4, 4/3))`, seeded per sample.
    RandomResizedCrop,
}

impl FromStr for ResizeMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "squash" => Ok(ResizeMode::Squash),
            "center_crop" => Ok(ResizeMode::CenterCrop),
            "random_resized_crop" => Ok(ResizeMode::RandomResizedCrop),
            _ => Err(format!("resize must be 'squash', 'center_crop' or 'random_resized_crop', not {s:?}")),
        }
    }
}

/// Memory layout of the `images` array of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `[B, H, W, 3]`
    Nhwc,
    /// `[B, 3, H, W]`
    Nchw,
}

impl FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "NHWC" => Ok(Layout::Nhwc),
            "NCHW" => Ok(Layout::Nchw),
            _ => Err(format!("layout must be 'NHWC' or 'NCHW', not {s:?}")),
        }
    }
}

/// Pillow's default decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`).
pub const DEFAULT_MAX_PIXELS: u64 = 89_478_485;

#[derive(Clone, Debug)]
pub struct Config {
    /// Shard paths, already resolved, in reading order.
    pub shards: Vec<String>,
    pub batch_size: usize,
    pub image_size: u32,
    pub resize: ResizeMode,
    pub layout: Layout,
    /// Samples held in the shuffle buffer (0 or 1: no sample shuffle).
    pub shuffle_buffer: usize,
    /// Seed for the sample shuffle and random crops (mix the epoch and worker in beforehand).
    pub seed: u64,
    /// Decode threads.
    pub num_threads: usize,
    /// Images with more pixels than this are skipped (`skipped_too_large`).
    pub max_pixels: u64,
    /// Tar members larger than this are skipped.
    pub max_member_bytes: u64,
    /// Decode large JPEGs at 1/2, 1/4 or 1/8 scale in the DCT domain (never below the target).
    pub scaled_decode: bool,
    /// Drop the last, short batch.
    pub drop_last: bool,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
    /// Resume: drop the first `skip` samples of the shuffled stream before decoding them.
    pub skip: u64,
    /// Resume after a change of layout: per shard path, a bitmap of sample indices (bit `i` of
    /// byte `i / 8`) already consumed; they are dropped before the shuffle buffer.
    pub exclude: HashMap<String, Vec<u8>>,
    /// Deliver exactly this many samples, then stop (0: no limit). With `cycle`, a stream that
    /// runs out is padded by reading its shards again, so every DDP rank can be given the same
    /// number of batches.
    pub limit: u64,
    /// When the shards run out, read them again (another shuffle each pass); use with `limit`.
    pub cycle: bool,
    /// Fields of a sample's `json` read for its language, in order.
    pub lang_fields: Vec<String>,
    /// Language rebalancing (None: the stream as it is).
    pub mixture: Option<crate::rebalance::MixtureConfig>,
    /// Subset, metadata filters, exact dedup (all off by default).
    pub select: crate::select::SelectConfig,
    /// Drop images whose shorter side is under this (0: off).
    pub min_image_side: u32,
    /// Drop images whose long/short side ratio is over this (0: off).
    pub max_aspect_ratio: f64,
    /// Decontamination: drop images within these (pHash, dHash) radii of a blocklist entry.
    pub blocklist: Option<std::sync::Arc<crate::neardup::FrozenIndex>>,
    pub blocklist_radius: (u32, u32),
    /// Drop near-duplicates of earlier images of the stream, within these radii (None: off).
    pub near_dedup: Option<(u32, u32)>,
    /// Reads table shards (`.parquet`); set by the Python bindings (pyarrow). None: such shards
    /// are counted as unreadable.
    pub table_reader: Option<std::sync::Arc<dyn crate::sample::TableReader>>,
}

/// Default (pHash, dHash) radii of a match: see benches/neardup.py for the measurement.
pub const DEFAULT_NEAR_RADIUS: (u32, u32) = (6, 12);

/// Is bit `i` set in `bitmap`?
pub fn bit_is_set(bitmap: &[u8], i: u64) -> bool {
    bitmap.get((i / 8) as usize).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

impl Default for Config {
    fn default() -> Self {
        Self {
            shards: Vec::new(),
            batch_size: 256,
            image_size: 224,
            resize: ResizeMode::Squash,
            layout: Layout::Nhwc,
            shuffle_buffer: 0,
            seed: 0,
            num_threads: 1,
            max_pixels: DEFAULT_MAX_PIXELS,
            max_member_bytes: crate::tar::DEFAULT_MAX_MEMBER_BYTES,
            scaled_decode: true,
            drop_last: false,
            prefetch: 2,
            skip: 0,
            exclude: HashMap::new(),
            limit: 0,
            cycle: false,
            lang_fields: crate::lang::DEFAULT_LANG_FIELDS.iter().map(|s| s.to_string()).collect(),
            mixture: None,
            select: Default::default(),
            min_image_side: 0,
            max_aspect_ratio: 0.0,
            blocklist: None,
            table_reader: None,
            blocklist_radius: DEFAULT_NEAR_RADIUS,
            near_dedup: None,
        }
    }
}

impl Config {
    /// Check every setting; the message names the setting and what it accepts.
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_size == 0 {
            return Err("batch_size must be at least 1".into());
        }
        if !(8..=8192).contains(&self.image_size) {
            return Err(format!("image_size must be between 8 and 8192, not {}", self.image_size));
        }
        if self.num_threads == 0 || self.num_threads > 1024 {
            return Err(format!("num_threads must be between 1 and 1024, not {}", self.num_threads));
        }
        if self.max_pixels == 0 {
            return Err("max_pixels must be positive".into());
        }
        if self.cycle && self.limit == 0 {
            return Err("cycle needs a limit (it would never end)".into());
        }
        self.select.validate()?;
        if self.max_aspect_ratio != 0.0 && !(self.max_aspect_ratio >= 1.0) {
            return Err(format!("max_aspect_ratio must be at least 1, not {}", self.max_aspect_ratio));
        }
        for (what, (rp, _)) in [("blocklist_radius", self.blocklist_radius), ("near_dedup_radius", self.near_dedup.unwrap_or_default())] {
            if rp > 11 {
                return Err(format!("{what}: the pHash radius must be at most 11, not {rp}"));
            }
        }
        if let Some(m) = &self.mixture {
            m.validate()?;
        }
        if self.prefetch == 0 {
            return Err("prefetch must be at least 1".into());
        }
        Ok(())
    }
}
