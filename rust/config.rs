//! The settings of a stream, defined once: one typed value, built from the user's flat keyword
//! arguments, validated once, and handed whole to everything that must agree on which samples
//! exist (the stream, the resume replay, the state's identity, the equal-batches count).
//!
//! The settings are grouped by the stage that reads them (read, select, mixture, decode, near,
//! resize, batch, run); users name them flat (`batch_size=`, `subset=`): the name → group map is
//! derived from the structs themselves (their serialised defaults), so a setting is written in
//! exactly one place, its struct field here. This module imports no stage: the stages import it.
//! Runtime resources (a loaded blocklist, a Parquet opener, a reader's seed and skip) are not
//! settings and live with the pipeline.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// Pillow's default decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`).
pub const DEFAULT_MAX_PIXELS: u64 = 89_478_485;
/// Tar members larger than this are skipped (`skipped_member_too_large`).
pub const DEFAULT_MAX_MEMBER_BYTES: u64 = 256 << 20;
/// Default (pHash, dHash) radii of a match: see benches/neardup.py for the measurement.
pub const DEFAULT_NEAR_RADIUS: (u32, u32) = (6, 12);
/// The `json` fields read for a sample's language, in order.
pub const DEFAULT_LANG_FIELDS: [&str; 4] = ["language", "lang", "content-language", "content_language"];
/// Named mixtures. "webli-100b": the paper's recipe, each of the 7 Crossmodal-3600 low-resource
/// languages at 1% of the mix (7% in all), the other 93% the original stream.
pub const MIXTURES: [(&str, &[(&str, f64)]); 1] =
    [("webli-100b", &[("bn", 0.01), ("fil", 0.01), ("hi", 0.01), ("he", 0.01), ("mi", 0.01), ("sw", 0.01), ("te", 0.01)])];

/// A setting that is wrong: which one, and what it accepts. (`webli_io.ConfigError` in Python.)
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigError {
    pub setting: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(setting: &str, message: impl Into<String>) -> Self {
        Self { setting: setting.to_string(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.setting, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// How an image is brought to a square `image_size × image_size`. OpenCLIP's `resize_mode`
/// names are aliases: `shortest` is `center_crop`, `longest` is `letterbox`, `squash` is itself.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Resize both sides to the target, ignoring the aspect ratio (big_vision's `resize`).
    Squash,
    /// Take the central square (side = the shorter side), then resize (torchvision's
    /// `Resize(s) + CenterCrop(s)`, OpenCLIP's `resize_mode="shortest"`).
    #[serde(alias = "shortest")]
    CenterCrop,
    /// torchvision's `RandomResizedCrop(s, scale=crop_scale, ratio=crop_ratio)`, seeded per sample.
    RandomResizedCrop,
    /// The whole image, its longer side resized to the target, centred on black (OpenCLIP's
    /// `resize_mode="longest"`: `ResizeKeepRatio` then `CenterCrop` with `fill=0`).
    #[serde(alias = "longest")]
    Letterbox,
}

impl FromStr for ResizeMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(Value::String(s.into())).map_err(|_| {
            format!(
                "must be 'squash', 'center_crop', 'random_resized_crop' or 'letterbox' (OpenCLIP's 'shortest' and \
                 'longest' are aliases of center_crop and letterbox), not {s:?}"
            )
        })
    }
}

/// The resampling filter of the resize, each as Pillow's (antialiased: the support widens with
/// the downscale factor), so a tile matches `PIL.Image.resize(..., FILTER)` to within rounding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    /// Pillow's `BILINEAR` (the default; torchvision's `Resize` default on PIL images).
    Bilinear,
    /// Pillow's `BICUBIC` (Catmull-Rom, a = -0.5): OpenCLIP's and timm's eval transforms.
    Bicubic,
    /// Pillow's `BOX`: each output pixel the mean of the source pixels it covers (OpenCV's
    /// `INTER_AREA` when downscaling).
    #[serde(alias = "box")]
    Area,
    /// Pillow's `LANCZOS` (Lanczos-3).
    Lanczos,
    /// Nearest neighbour (no antialiasing).
    Nearest,
}

/// Memory layout of the `images` array of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Layout {
    /// `[B, H, W, 3]`
    Nhwc,
    /// `[B, 3, H, W]`
    Nchw,
}

impl TryFrom<String> for Layout {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "NHWC" => Ok(Layout::Nhwc),
            "NCHW" => Ok(Layout::Nchw),
            _ => Err(format!("must be 'NHWC' or 'NCHW', not {s:?}")),
        }
    }
}

impl From<Layout> for String {
    fn from(l: Layout) -> String {
        match l {
            Layout::Nhwc => "NHWC".into(),
            Layout::Nchw => "NCHW".into(),
        }
    }
}

/// The element type of the `images` array of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// Pixels as stored, 0..=255.
    Uint8,
    /// `float32`, `(pixel / 255 - mean) / std` per channel (mean 0, std 1 unless given).
    Float,
}

/// Well-known normalisation constants (mean, std), by name: what `mean=`/`std=` accept besides
/// three numbers.
pub const NORMALIZATIONS: [(&str, [f64; 3], [f64; 3]); 3] = [
    // OpenAI CLIP's (OpenCLIP's OPENAI_DATASET_MEAN/STD).
    ("clip", [0.481_454_66, 0.457_827_5, 0.408_210_73], [0.268_629_54, 0.261_302_58, 0.275_777_11]),
    // torchvision's ImageNet constants.
    ("imagenet", [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    // SigLIP (big_vision's `value_range(-1, 1)`).
    ("siglip", [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
];

/// How readers are given the same number of batches per epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EqualBatches {
    /// The smallest reader's count; the others stop there.
    Drop,
    /// The largest reader's count; the others repeat their own samples to reach it.
    Pad,
}

/// Reading shards: order, shuffle, what a sample is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReadOptions {
    /// Shuffle the shard order (per epoch) and the samples in a buffer.
    pub shuffle: bool,
    /// Samples in the shuffle buffer (None: 1000 when `shuffle`, else 0).
    pub shuffle_buffer: Option<usize>,
    /// Base seed of every random choice.
    pub seed: u64,
    /// Tar members larger than this are skipped.
    pub max_member_bytes: u64,
    /// Fields of a sample's `json` read for its language, in order (None: the defaults).
    pub lang_fields: Option<Vec<String>>,
    /// Parquet shards: the metadata columns to read (None: all).
    pub columns: Option<Vec<String>>,
    /// Shards a reader reads at once, interleaving their samples into the shuffle buffer
    /// (None: 4 when `shuffle`, else 1).
    pub shards_in_flight: Option<usize>,
    /// Other tar members to carry into the batch, by extension (`["cls", "npy"]`).
    pub extra_members: Vec<String>,
    /// Cycle over the shards without end, reshuffled each pass (webdataset's `resampled=True`).
    pub resampled: bool,
    /// With `resampled`: samples an epoch holds over all ranks (OpenCLIP's `train_num_samples`).
    pub samples_per_epoch: Option<u64>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            shuffle: false,
            shuffle_buffer: None,
            seed: 0,
            max_member_bytes: DEFAULT_MAX_MEMBER_BYTES,
            lang_fields: None,
            columns: None,
            shards_in_flight: None,
            extra_members: Vec::new(),
            resampled: false,
            samples_per_epoch: None,
        }
    }
}

impl ReadOptions {
    /// The shuffle buffer's size, resolved.
    pub fn buffer(&self) -> usize {
        self.shuffle_buffer.unwrap_or(if self.shuffle { 1000 } else { 0 })
    }

    /// Shards read at once, resolved.
    pub fn in_flight(&self) -> usize {
        self.shards_in_flight.unwrap_or(if self.shuffle { 4 } else { 1 })
    }

    pub fn lang_fields(&self) -> Vec<String> {
        self.lang_fields.clone().unwrap_or_else(|| DEFAULT_LANG_FIELDS.iter().map(|s| s.to_string()).collect())
    }
}

/// Selection before decoding: subset, metadata filters, exact dedup (all off by default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SelectOptions {
    /// Keep this fraction of the keys (None: all).
    pub subset: Option<f64>,
    /// Seed of the subset hash: keep it fixed to get the same subset across runs.
    pub subset_seed: u64,
    /// Exact dedup on the image bytes.
    pub dedup: bool,
    /// Hashes per generation of the dedup set (two generations are kept).
    pub dedup_capacity: usize,
    /// Minimum value of numeric metadata fields.
    pub min_score: BTreeMap<String, f64>,
    /// Drop a sample whose metadata field has one of these values (text; booleans as "true").
    #[serde(deserialize_with = "one_or_many_texts")]
    pub drop_if: BTreeMap<String, Vec<String>>,
}

impl SelectOptions {
    /// Does selection drop samples before decoding (a subset, exact dedup, a metadata filter)?
    /// The one statement of it: counting, the resume by count and the bindings all ask here.
    pub fn drops_before_decode(&self) -> bool {
        self.subset.is_some() || self.dedup || !self.min_score.is_empty() || !self.drop_if.is_empty()
    }
}

impl Default for SelectOptions {
    fn default() -> Self {
        Self {
            subset: None,
            subset_seed: 0,
            dedup: false,
            dedup_capacity: 10_000_000,
            min_score: BTreeMap::new(),
            drop_if: BTreeMap::new(),
        }
    }
}

/// `{"NSFW": "NSFW"}` or `{"NSFW": ["NSFW", true, 1]}`: every value as text.
fn one_or_many_texts<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Vec<String>>, D::Error> {
    let raw: BTreeMap<String, Value> = BTreeMap::deserialize(d)?;
    let text = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!("values must be strings, numbers or booleans, not {other}"))),
    };
    raw.into_iter()
        .map(|(k, v)| {
            let values = match &v {
                Value::Array(a) => a.iter().map(text).collect::<Result<Vec<_>, _>>()?,
                one => vec![text(one)?],
            };
            Ok((k, values))
        })
        .collect()
}

/// Language rebalancing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MixtureOptions {
    /// Target shares by language, or a preset name (see [`MIXTURES`]), resolved to shares.
    #[serde(deserialize_with = "mixture_shares")]
    pub mixture: Option<BTreeMap<String, f64>>,
    /// Instead of `mixture`: temperature sampling, `p ∝ n^(1/T)`.
    pub mixture_temperature: Option<f64>,
    /// A `manifest.json` of `webli-io prepare` (or its folder): exact language counts.
    pub manifest: Option<String>,
    /// Copies of a sample are spread over this many following samples.
    pub mixture_window: u64,
}

impl Default for MixtureOptions {
    fn default() -> Self {
        Self { mixture: None, mixture_temperature: None, manifest: None, mixture_window: 10_000 }
    }
}

impl MixtureOptions {
    pub fn enabled(&self) -> bool {
        self.mixture.is_some() || self.mixture_temperature.is_some()
    }
}

fn mixture_shares<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BTreeMap<String, f64>>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None => Ok(None),
        Some(Value::String(name)) => match MIXTURES.iter().find(|(n, _)| *n == name) {
            Some((_, shares)) => Ok(Some(shares.iter().map(|(l, p)| (l.to_string(), *p)).collect())),
            None => {
                let names: Vec<&str> = MIXTURES.iter().map(|(n, _)| *n).collect();
                Err(serde::de::Error::custom(format!("unknown mixture {name:?}: give shares ({{\"bn\": 0.01, ...}}) or one of {names:?}")))
            }
        },
        Some(v) => BTreeMap::<String, f64>::deserialize(v).map(Some).map_err(serde::de::Error::custom),
    }
}

/// Decoding, and the filters that need the decoded size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeOptions {
    /// Images with more pixels than this are skipped (`skipped_too_large`).
    pub max_pixels: u64,
    /// Decode large JPEGs at 1/2, 1/4 or 1/8 scale in the DCT domain (never below the target).
    pub scaled_decode: bool,
    /// Drop images whose shorter side is under this (0: off).
    pub min_image_side: u32,
    /// Drop images whose long/short side ratio is over this (None: off).
    pub max_aspect_ratio: Option<f64>,
    /// Turn and flip images as their EXIF orientation tag says (Pillow's
    /// `ImageOps.exif_transpose`). Off by default, as Pillow's `open`, torchvision's
    /// `decode_jpeg` and big_vision's decode leave the pixels as stored.
    pub exif_transpose: bool,
    /// Decode only the part of a JPEG that a crop (`center_crop`, `random_resized_crop`)
    /// reads, plus the resize filter's margin. The tile is the same as from a whole decode
    /// (tested pixel for pixel away from the region's edges).
    pub crop_decode: bool,
    /// libjpeg's fast chroma upsampling and fast integer IDCT: faster, slightly less exact
    /// (measured in tests/test_quality.py). Off by default.
    pub fast_decode: bool,
    /// Where JPEGs are decoded: here (`cpu`), or left encoded for the GPU (`cuda`: the Python
    /// layer decodes them with nvJPEG and resizes on the device). With `cuda` the core still
    /// reads each header (size limit, filters, the crop); other formats, EXIF-turned images
    /// and runs that fingerprint images (blocklist, near-dedup) are decoded here.
    pub decode_device: DecodeDevice,
}

/// Where JPEGs are decoded (see [`DecodeOptions::decode_device`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecodeDevice {
    Cpu,
    Cuda,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
            scaled_decode: true,
            min_image_side: 0,
            max_aspect_ratio: None,
            exif_transpose: false,
            crop_decode: true,
            fast_decode: false,
            decode_device: DecodeDevice::Cpu,
        }
    }
}

/// Perceptual near-duplicates: decontamination against a blocklist, in-stream near-dedup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NearOptions {
    /// A blocklist file from `webli-io index-eval`.
    pub blocklist: Option<String>,
    /// (pHash, dHash) radii of a blocklist match.
    pub blocklist_radius: (u32, u32),
    /// Drop near-duplicates of earlier images of the reader's stream.
    pub near_dedup: bool,
    pub near_dedup_radius: (u32, u32),
}

impl Default for NearOptions {
    fn default() -> Self {
        Self { blocklist: None, blocklist_radius: DEFAULT_NEAR_RADIUS, near_dedup: false, near_dedup_radius: DEFAULT_NEAR_RADIUS }
    }
}

impl NearOptions {
    /// The near-dedup radii when it is on.
    pub fn near_dedup_radius(&self) -> Option<(u32, u32)> {
        self.near_dedup.then_some(self.near_dedup_radius)
    }
}

/// The output tile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResizeOptions {
    pub image_size: u32,
    pub resize: ResizeMode,
    /// `random_resized_crop`: the range of the crop's area, as a fraction of the image's.
    pub crop_scale: (f64, f64),
    /// `random_resized_crop`: the range of the crop's width / height.
    pub crop_ratio: (f64, f64),
    /// Probability of a horizontal flip, drawn per sample (seeded like the crop).
    pub hflip: f64,
    /// The resampling filter.
    pub interpolation: Interpolation,
}

impl Default for ResizeOptions {
    fn default() -> Self {
        Self {
            image_size: 224,
            resize: ResizeMode::Squash,
            crop_scale: (0.08, 1.0),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            hflip: 0.0,
            interpolation: Interpolation::Bilinear,
        }
    }
}

/// Batches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchOptions {
    pub batch_size: usize,
    pub layout: Layout,
    /// Drop each reader's last, short batch.
    pub drop_last: bool,
    /// Give every reader the same number of full batches per epoch (None: what its shards hold).
    pub equal_batches: Option<EqualBatches>,
    /// `uint8` (default) or `float` (`float32`, normalised with `mean`/`std`).
    pub output: Output,
    /// `output="float"`: per-channel mean (of pixels scaled to 0..1), or a name of [`NORMALIZATIONS`].
    #[serde(deserialize_with = "channels")]
    pub mean: Option<[f64; 3]>,
    /// `output="float"`: per-channel standard deviation, or a name of [`NORMALIZATIONS`].
    #[serde(deserialize_with = "channels")]
    pub std: Option<[f64; 3]>,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self { batch_size: 256, layout: Layout::Nhwc, drop_last: false, equal_batches: None, output: Output::Uint8, mean: None, std: None }
    }
}

impl BatchOptions {
    /// `(mean, std)` of the float output (0 and 1 when not given).
    pub fn normalization(&self) -> ([f64; 3], [f64; 3]) {
        (self.mean.unwrap_or([0.0; 3]), self.std.unwrap_or([1.0; 3]))
    }
}

/// Three numbers, or one number for all channels (names of [`NORMALIZATIONS`] are resolved by
/// [`Settings::with`], which knows whether the mean or the std is meant).
fn channels<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[f64; 3]>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64().map(|x| [x; 3])),
        Some(v) => <[f64; 3]>::deserialize(v)
            .map(Some)
            .map_err(|_| serde::de::Error::custom("give three numbers (R, G, B), one number, or a name: clip, imagenet, siglip")),
    }
}

/// How the work runs: these change speed and memory, never which samples come out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunOptions {
    /// Decode threads per process (None: the CPUs available, divided among DataLoader workers).
    pub num_threads: Option<usize>,
    /// Batches prepared ahead, per reader.
    pub prefetch: usize,
    /// Allow `pipe:COMMAND` shards, which run a shell command (off: a shard name is data, and
    /// data never becomes a command). The `WEBLI_IO_ALLOW_PIPE=1` variable allows them too.
    pub allow_pipe: bool,
    /// Treat a shard that cannot be read whole (unreadable, truncated, corrupt: a missing remote
    /// object, say) as an error, as a missing local shard is, rather than count it and go on.
    pub strict: bool,
    /// Keep remote shards read to their end in this folder, and read them from there next time.
    pub cache_dir: Option<String>,
    /// With `cache_dir`: the most bytes the folder holds (least recently used files go first;
    /// None: no limit).
    pub cache_max_bytes: Option<u64>,
    /// The folder (or URL prefix) holding the shard index files of `webli-io index`
    /// (`<stem>.index.json`, `index.json`); None: beside each shard. The index lets counts
    /// (`equal_batches`) and resumes know the samples without reading them.
    pub index: Option<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self { num_threads: None, prefetch: 2, allow_pipe: false, strict: false, cache_dir: None, cache_max_bytes: None, index: None }
    }
}

/// Every setting of a stream, by stage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub read: ReadOptions,
    pub select: SelectOptions,
    pub mixture: MixtureOptions,
    pub decode: DecodeOptions,
    pub near: NearOptions,
    pub resize: ResizeOptions,
    pub batch: BatchOptions,
    pub run: RunOptions,
}

/// The groups whose settings change only speed, not which samples (or pixels) come out.
const RUN_GROUPS: [&str; 1] = ["run"];

/// Each setting's flat name → its group, from the serialised defaults (so the structs above are
/// the only list of settings).
fn groups() -> &'static BTreeMap<String, String> {
    static GROUPS: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    GROUPS.get_or_init(|| {
        let Value::Object(top) = serde_json::to_value(Settings::default()).expect("settings serialise") else { unreachable!() };
        let mut out = BTreeMap::new();
        for (group, fields) in top {
            let Value::Object(fields) = fields else { unreachable!() };
            for name in fields.keys() {
                let clash = out.insert(name.clone(), group.clone());
                assert!(clash.is_none(), "setting {name} is defined twice");
            }
        }
        out
    })
}

/// The closest known setting name to `name` (for "did you mean").
fn closest(name: &str) -> Option<&'static str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for j in 0..b.len() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != b[j])).min(row[j] + 1).min(row[j + 1] + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }
    groups().keys().map(|k| (distance(name, k), k.as_str())).filter(|(d, _)| *d <= 3).min().map(|(_, k)| k)
}

impl Settings {
    /// Every setting's name, in a stable order.
    pub fn names() -> Vec<&'static str> {
        groups().keys().map(|k| k.as_str()).collect()
    }

    /// Build from flat `name → value` pairs (what `WebLIStream(**settings)` receives) over the
    /// defaults, and validate. The error names the setting.
    pub fn from_flat(flat: Map<String, Value>) -> Result<Self, ConfigError> {
        Self::default().with(flat)
    }

    /// These settings with some changed (flat names), validated.
    pub fn with(&self, flat: Map<String, Value>) -> Result<Self, ConfigError> {
        let Value::Object(mut nested) = serde_json::to_value(self).expect("settings serialise") else { unreachable!() };
        let defaults = Settings::default().to_flat();
        for (name, mut value) in flat {
            // None stands for "the default" for every setting (the optional ones default to None).
            if value.is_null() {
                value = defaults.get(&name).cloned().unwrap_or(Value::Null);
            }
            if let (Some(which @ ("mean" | "std")), Value::String(preset)) = (Some(name.as_str()), &value) {
                let Some((_, mean, std)) = NORMALIZATIONS.iter().find(|(n, _, _)| n == preset) else {
                    let names: Vec<&str> = NORMALIZATIONS.iter().map(|(n, _, _)| *n).collect();
                    return Err(ConfigError::new(
                        &name,
                        format!("unknown normalisation {preset:?}: give three numbers or one of {names:?}"),
                    ));
                };
                value = serde_json::json!(if which == "mean" { mean } else { std });
            }
            let Some(group) = groups().get(&name) else {
                let hint = closest(&name).map(|c| format!(" (did you mean {c:?}?)")).unwrap_or_default();
                return Err(ConfigError::new(&name, format!("unknown setting{hint}; the settings are: {}", Self::names().join(", "))));
            };
            nested.get_mut(group).and_then(Value::as_object_mut).expect("group").insert(name, value);
        }
        let settings: Settings = serde_path_to_error::deserialize(Value::Object(nested)).map_err(|e| {
            let setting = e.path().iter().nth(1).map(|s| s.to_string()).unwrap_or_else(|| e.path().to_string());
            ConfigError::new(&setting, e.into_inner().to_string())
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Flat `name → value` of every setting.
    pub fn to_flat(&self) -> Map<String, Value> {
        let Value::Object(nested) = serde_json::to_value(self).expect("settings serialise") else { unreachable!() };
        nested.into_iter().flat_map(|(_, g)| if let Value::Object(m) = g { m } else { Map::new() }).collect()
    }

    /// Flat settings that decide which samples come out, and how (all but the run group): what
    /// a resume state is bound to.
    pub fn identity(&self) -> Map<String, Value> {
        let Value::Object(nested) = serde_json::to_value(self).expect("settings serialise") else { unreachable!() };
        nested
            .into_iter()
            .filter(|(g, _)| !RUN_GROUPS.contains(&g.as_str()))
            .flat_map(|(_, g)| if let Value::Object(m) = g { m } else { Map::new() })
            .collect()
    }

    /// Check every setting; the error names the setting and what it accepts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |s: &str, m: String| Err(ConfigError::new(s, m));
        let (b, r, d, sel, mix, near, run) = (&self.batch, &self.resize, &self.decode, &self.select, &self.mixture, &self.near, &self.run);
        if b.batch_size == 0 || b.batch_size > 1 << 20 {
            return err("batch_size", format!("must be between 1 and {}, not {}", 1 << 20, b.batch_size));
        }
        if !(8..=8192).contains(&r.image_size) {
            return err("image_size", format!("must be between 8 and 8192, not {}", r.image_size));
        }
        // One batch's buffer must be allocatable: refuse sizes that could only abort the process.
        let bytes = (b.batch_size as u128) * (r.image_size as u128).pow(2) * if b.output == Output::Float { 12 } else { 3 };
        if bytes > 1 << 36 {
            return err("batch_size", format!("batch_size x image_size² x 3 is {bytes} bytes a batch (over 64 GiB): use smaller batches"));
        }
        if let Some(n) = run.num_threads {
            if n == 0 || n > 1024 {
                return err("num_threads", format!("must be between 1 and 1024, not {n}"));
            }
        }
        let pair_ok = |(lo, hi): (f64, f64)| lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi;
        if !pair_ok(r.crop_scale) || r.crop_scale.1 > 1.0 {
            return err("crop_scale", format!("must be (lo, hi) with 0 < lo <= hi <= 1, not {:?}", r.crop_scale));
        }
        if !pair_ok(r.crop_ratio) {
            return err("crop_ratio", format!("must be (lo, hi) with 0 < lo <= hi (width / height), not {:?}", r.crop_ratio));
        }
        if !(0.0..=1.0).contains(&r.hflip) {
            return err("hflip", format!("is a probability: between 0 and 1, not {}", r.hflip));
        }
        if b.output == Output::Uint8 && (b.mean.is_some() || b.std.is_some()) {
            let which = if b.mean.is_some() { "mean" } else { "std" };
            return err(which, "normalises the float output: set output=\"float\" too".into());
        }
        if b.mean.is_some_and(|m| m.iter().any(|x| !x.is_finite())) {
            return err("mean", "must be finite numbers".into());
        }
        if b.std.is_some_and(|m| m.iter().any(|x| !(x.is_finite() && *x > 0.0))) {
            return err("std", "must be positive numbers".into());
        }
        if let Some(k) = self.read.shards_in_flight {
            if k == 0 || k > 256 {
                return err("shards_in_flight", format!("must be between 1 and 256, not {k}"));
            }
        }
        const BATCH_KEYS: [&str; 10] = ["images", "texts", "keys", "meta", "langs", "shards", "position", "tokens", "next_seq", "seqs"];
        for m in &self.read.extra_members {
            let bad_char = |c: char| c.is_whitespace() || c == '/' || c == '\\' || c.is_control();
            if m.is_empty() || m.starts_with('.') || m.ends_with('.') || m.chars().any(bad_char) {
                return err(
                    "extra_members",
                    format!("{m:?} is not a member extension (give e.g. \"cls\" or \"seg.png\", without the key or a leading dot)"),
                );
            }
            if BATCH_KEYS.contains(&m.as_str()) {
                return err(
                    "extra_members",
                    format!("{m:?} is a key of every batch already; its member cannot be carried under that name"),
                );
            }
        }
        if let Some(n) = self.read.samples_per_epoch {
            if !self.read.resampled {
                return err("samples_per_epoch", "sets the length of a resampled epoch: set resampled=True too".into());
            }
            if n == 0 {
                return err("samples_per_epoch", "must be at least 1".into());
            }
        }
        if self.read.resampled && b.equal_batches.is_some() {
            return err("resampled", "resampled readers never run out: equal_batches is not needed (give samples_per_epoch)".into());
        }
        if run.cache_max_bytes.is_some() && run.cache_dir.is_none() {
            return err("cache_max_bytes", "limits the cache folder: set cache_dir= too".into());
        }
        if run.index.as_ref().is_some_and(|d| d.trim().is_empty()) {
            return err("index", "give the folder of the shard index files (or leave it unset: beside the shards)".into());
        }
        if run.cache_dir.as_ref().is_some_and(|d| d.trim().is_empty()) {
            return err("cache_dir", "give a folder (or leave it unset for no cache)".into());
        }
        if run.prefetch == 0 || run.prefetch > 1024 {
            return err("prefetch", format!("must be between 1 and 1024, not {}", run.prefetch));
        }
        if d.max_pixels == 0 {
            return err("max_pixels", "must be positive".into());
        }
        if self.read.max_member_bytes == 0 {
            return err("max_member_bytes", "must be positive".into());
        }
        if self.read.lang_fields.as_ref().is_some_and(|f| f.is_empty()) {
            return err("lang_fields", "give at least one field name (or leave it unset for the defaults)".into());
        }
        if self.read.seed > i64::MAX as u64 {
            return err("seed", format!("must be between 0 and {}, not {}", i64::MAX, self.read.seed));
        }
        if let Some(f) = sel.subset {
            if !(f > 0.0 && f <= 1.0) {
                return err("subset", format!("must be in (0, 1], not {f}"));
            }
        }
        if sel.dedup_capacity == 0 {
            return err("dedup_capacity", "must be at least 1".into());
        }
        for (field, min) in &sel.min_score {
            if !min.is_finite() {
                return err("min_score", format!("{field}: the minimum must be a finite number, not {min}"));
            }
        }
        if let Some(a) = d.max_aspect_ratio {
            if !(a >= 1.0 && a.is_finite()) {
                return err("max_aspect_ratio", format!("must be at least 1 (long side / short side), not {a}"));
            }
        }
        for (what, (rp, rd)) in [("blocklist_radius", near.blocklist_radius), ("near_dedup_radius", near.near_dedup_radius)] {
            if rp > 11 || rd > 64 {
                return err(what, format!("must be (pHash bits <= 11, dHash bits <= 64), not ({rp}, {rd})"));
            }
        }
        match (&mix.mixture, mix.mixture_temperature) {
            (Some(_), Some(_)) => return err("mixture", "give mixture or mixture_temperature, not both".into()),
            (Some(shares), None) => {
                let total: f64 = shares.values().sum();
                if shares.values().any(|p| !(0.0..=1.0).contains(p)) || total > 1.0 + 1e-9 {
                    return err("mixture", format!("shares must be in [0, 1] and sum to at most 1 (they sum to {total})"));
                }
            }
            (None, Some(t)) if !(t > 0.0 && t.is_finite()) => {
                return err("mixture_temperature", format!("must be positive, not {t}"));
            }
            _ => {}
        }
        if mix.mixture_window == 0 {
            return err("mixture_window", "must be at least 1".into());
        }
        if mix.manifest.is_some() && !mix.enabled() {
            return err("manifest", "a manifest gives the counts for a mixture: set mixture= or mixture_temperature= too".into());
        }
        Ok(())
    }
}

/// Is bit `i` set in `bitmap`?
pub fn bit_is_set(bitmap: &[u8], i: u64) -> bool {
    bitmap.get((i / 8) as usize).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn flat(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn flat_names_reach_their_group_and_errors_name_the_setting() {
        let s = Settings::from_flat(flat(json!({"batch_size": 8, "subset": 0.5, "mixture": "webli-100b", "layout": "nchw"}))).unwrap();
        assert_eq!(s.batch.batch_size, 8);
        assert_eq!(s.select.subset, Some(0.5));
        assert_eq!(s.mixture.mixture.as_ref().unwrap().len(), 7);
        assert_eq!(s.batch.layout, Layout::Nchw);
        assert_eq!(Settings::from_flat(s.to_flat()).unwrap(), s, "round trip");
        let e = Settings::from_flat(flat(json!({"bach_size": 8}))).unwrap_err();
        assert_eq!(e.setting, "bach_size");
        assert!(e.message.contains("did you mean \"batch_size\""), "{e}");
        let e = Settings::from_flat(flat(json!({"batch_size": "8"}))).unwrap_err();
        assert_eq!(e.setting, "batch_size");
        let e = Settings::from_flat(flat(json!({"resize": "crop"}))).unwrap_err();
        assert_eq!(e.setting, "resize");
        let e = Settings::from_flat(flat(json!({"batch_size": 0}))).unwrap_err();
        assert_eq!(e.setting, "batch_size");
        let e = Settings::from_flat(flat(json!({"batch_size": 1_000_000_000}))).unwrap_err();
        assert_eq!(e.setting, "batch_size");
        let e = Settings::from_flat(flat(json!({"mixture": "webli"}))).unwrap_err();
        assert_eq!(e.setting, "mixture");
        let s = Settings::from_flat(flat(json!({"drop_if": {"NSFW": ["NSFW", true]}}))).unwrap();
        assert_eq!(s.select.drop_if["NSFW"], ["NSFW", "true"]);
    }

    #[test]
    fn preprocessing_settings_are_checked_and_presets_resolved() {
        let s = Settings::from_flat(flat(json!({"output": "float", "mean": "clip", "std": "clip"}))).unwrap();
        assert_eq!(s.batch.mean.unwrap()[0], 0.481_454_66);
        assert_eq!(s.batch.std.unwrap()[2], 0.275_777_11);
        let s = Settings::from_flat(flat(json!({"output": "float", "mean": 0.5, "std": [0.5, 0.5, 0.5]}))).unwrap();
        assert_eq!(s.batch.normalization(), ([0.5; 3], [0.5; 3]));
        for (bad, setting) in [
            (json!({"mean": "siglip"}), "mean"),
            (json!({"output": "float", "mean": "nope"}), "mean"),
            (json!({"output": "float", "std": [1, 0, 1]}), "std"),
            (json!({"output": "f16"}), "output"),
            (json!({"crop_scale": [0.5, 0.4]}), "crop_scale"),
            (json!({"crop_scale": [0.0, 1.0]}), "crop_scale"),
            (json!({"crop_ratio": [2.0, 1.0]}), "crop_ratio"),
            (json!({"hflip": 1.5}), "hflip"),
            (json!({"shards_in_flight": 0}), "shards_in_flight"),
            (json!({"extra_members": ["images"]}), "extra_members"),
            (json!({"extra_members": [".cls"]}), "extra_members"),
            (json!({"samples_per_epoch": 100}), "samples_per_epoch"),
            (json!({"resampled": true, "equal_batches": "pad"}), "resampled"),
        ] {
            let e = Settings::from_flat(flat(bad.clone())).unwrap_err();
            assert_eq!(e.setting, setting, "{bad}: {e}");
        }
        let d = Settings::default();
        assert_eq!((d.resize.crop_scale, d.resize.hflip, d.batch.output), ((0.08, 1.0), 0.0, Output::Uint8), "defaults as before");
        assert_eq!((d.read.in_flight(), Settings::from_flat(flat(json!({"shuffle": true}))).unwrap().read.in_flight()), (1, 4));
    }

    #[test]
    fn identity_leaves_out_what_only_changes_speed() {
        let a = Settings::from_flat(flat(json!({"num_threads": 2}))).unwrap();
        let b = Settings::from_flat(flat(json!({"num_threads": 4, "prefetch": 8}))).unwrap();
        assert_eq!(a.identity(), b.identity());
        let c = Settings::from_flat(flat(json!({"subset": 0.5}))).unwrap();
        assert_ne!(a.identity(), c.identity());
    }
}
