//! The PyO3 bindings: the only file that knows Python. It converts arguments to a
//! [`Config`], runs the pipeline with the GIL released, and hands each batch over as a dict
//! whose `images` array takes ownership of the Rust buffer (no copy).

use std::collections::HashMap;
use std::sync::Arc;

use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::{PyFileNotFoundError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyCapsule, PyDict, PyIterator, PyList, PyString};
use serde_json::{Map, Value};

use crate::batch::Batch;
use crate::config::{Config, Layout, ResizeMode, DEFAULT_MAX_PIXELS, DEFAULT_NEAR_RADIUS};
use crate::fingerprint::Fingerprint;
use crate::neardup::{FrozenIndex, HashIndex};
use crate::lang::{normalize_lang, DEFAULT_LANG_FIELDS};
use crate::pipeline::{prepare_image, replay, Pipeline};
use crate::rebalance::{MixtureConfig, Target};
use crate::select::{content_hash, in_subset, SelectConfig};
use crate::sample::{is_table_shard, Sample, TableReader, TableRow};
use crate::table::{rows, CAPTION_COLUMNS, IMAGE_COLUMNS, KEY_COLUMNS};
use arrow_array::ffi::{from_ffi, FFI_ArrowArray, FFI_ArrowSchema};
use arrow_array::StructArray;
use crate::source::{resolve_shards, SourceError};
use crate::stats::{Counter, Stats};
use crate::tar::DEFAULT_MAX_MEMBER_BYTES;

fn json_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(a) => {
            let list = PyList::empty(py);
            for x in a {
                list.append(json_to_py(py, x)?)?;
            }
            list.into_any()
        }
        Value::Object(m) => map_to_py(py, m)?.into_any(),
    })
}

fn map_to_py<'py>(py: Python<'py>, m: &Map<String, Value>) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in m {
        d.set_item(k, json_to_py(py, v)?)?;
    }
    Ok(d)
}

fn batch_to_py<'py>(py: Python<'py>, batch: Batch) -> PyResult<Bound<'py, PyDict>> {
    let shape = batch.shape();
    let d = PyDict::new(py);
    let images = PyArray1::from_vec(py, batch.images).reshape(shape)?;
    d.set_item("images", images)?;
    d.set_item("texts", batch.texts)?;
    d.set_item("keys", batch.keys)?;
    let metas = PyList::empty(py);
    for m in &batch.metas {
        metas.append(map_to_py(py, m)?)?;
    }
    d.set_item("meta", metas)?;
    d.set_item("langs", batch.langs)?;
    let shards: Vec<&str> = batch.shards.iter().map(|s| &**s).collect();
    d.set_item("shards", shards)?;
    d.set_item("next_seq", batch.next_seq)?;
    Ok(d)
}

fn stats_to_py<'py>(py: Python<'py>, stats: &Stats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (name, v) in stats.snapshot() {
        d.set_item(name, v)?;
    }
    Ok(d)
}

/// The native stream over a list of shard paths (see `webli_io.WebLIStream` for the public API).
#[pyclass(module = "webli_io._core", name = "Stream")]
struct PyStream {
    pipeline: Option<Pipeline>,
    stats: Arc<Stats>,
}

#[pymethods]
impl PyStream {
    #[new]
    #[pyo3(signature = (
        shards, *, batch_size=256, image_size=224, resize="squash", layout="NHWC",
        shuffle_buffer=0, seed=0, num_threads=1, max_pixels=DEFAULT_MAX_PIXELS,
        max_member_bytes=DEFAULT_MAX_MEMBER_BYTES, scaled_decode=true, drop_last=false, prefetch=2,
        skip=0, exclude=None, limit=0, cycle=false, lang_fields=None, mixture=None,
        mixture_temperature=None, mixture_counts=None, mixture_window=10_000,
        subset=None, subset_seed=0, min_score=None, drop_if=None, dedup_capacity=None,
        min_image_side=0, max_aspect_ratio=0.0, blocklist=None, blocklist_radius=DEFAULT_NEAR_RADIUS,
        near_dedup_radius=None, table_reader=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        shards: Vec<String>,
        batch_size: usize,
        image_size: u32,
        resize: &str,
        layout: &str,
        shuffle_buffer: usize,
        seed: u64,
        num_threads: usize,
        max_pixels: u64,
        max_member_bytes: u64,
        scaled_decode: bool,
        drop_last: bool,
        prefetch: usize,
        skip: u64,
        exclude: Option<HashMap<String, Vec<u8>>>,
        limit: u64,
        cycle: bool,
        lang_fields: Option<Vec<String>>,
        mixture: Option<HashMap<String, f64>>,
        mixture_temperature: Option<f64>,
        mixture_counts: Option<HashMap<String, u64>>,
        mixture_window: u64,
        subset: Option<f64>,
        subset_seed: u64,
        min_score: Option<HashMap<String, f64>>,
        drop_if: Option<HashMap<String, Vec<String>>>,
        dedup_capacity: Option<usize>,
        min_image_side: u32,
        max_aspect_ratio: f64,
        blocklist: Option<String>,
        blocklist_radius: (u32, u32),
        near_dedup_radius: Option<(u32, u32)>,
        table_reader: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let blocklist = match blocklist {
            Some(path) => Some(frozen_blocklist(&path)?),
            None => None,
        };
        let target = match (mixture, mixture_temperature) {
            (Some(_), Some(_)) => return Err(PyValueError::new_err("give mixture or mixture_temperature, not both")),
            (Some(shares), None) => Some(Target::Shares(shares.into_iter().map(|(l, p)| (normalize_lang(&l), p)).collect())),
            (None, Some(t)) => Some(Target::Temperature(t)),
            (None, None) => None,
        };
        let mixture = target.map(|target| MixtureConfig {
            target,
            counts: mixture_counts.map(|c| {
                let mut n: HashMap<String, u64> = HashMap::new();
                for (l, v) in c {
                    *n.entry(normalize_lang(&l)).or_default() += v;
                }
                n
            }),
            window: mixture_window,
        });
        let cfg = Config {
            shards,
            batch_size,
            image_size,
            resize: resize.parse::<ResizeMode>().map_err(PyValueError::new_err)?,
            layout: layout.parse::<Layout>().map_err(PyValueError::new_err)?,
            shuffle_buffer,
            seed,
            num_threads,
            max_pixels,
            max_member_bytes,
            scaled_decode,
            drop_last,
            prefetch,
            skip,
            exclude: exclude.unwrap_or_default(),
            limit,
            cycle,
            lang_fields: lang_fields.unwrap_or_else(|| DEFAULT_LANG_FIELDS.iter().map(|s| s.to_string()).collect()),
            mixture,
            select: SelectConfig {
                subset,
                subset_seed,
                min_score: min_score.unwrap_or_default(),
                drop_if: drop_if.unwrap_or_default(),
                dedup_capacity,
            },
            min_image_side,
            max_aspect_ratio,
            blocklist,
            blocklist_radius,
            near_dedup: near_dedup_radius,
            table_reader: table_reader.map(PyTableReader::shared),
        };
        let pipeline = Pipeline::start(cfg).map_err(PyValueError::new_err)?;
        let stats = pipeline.stats().clone();
        Ok(Self { pipeline: Some(pipeline), stats })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(pipeline) = self.pipeline.as_mut() else { return Ok(None) };
        match py.detach(|| pipeline.next_batch()) {
            Some(batch) => Ok(Some(batch_to_py(py, batch)?)),
            None => {
                // End of stream: join the threads now rather than at garbage collection.
                let p = self.pipeline.take();
                py.detach(move || drop(p));
                Ok(None)
            }
        }
    }

    /// Counters of this stream so far, by name.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_to_py(py, &self.stats)
    }

    /// The first problems met (skipped or repaired samples, bad shards), with shard, key, reason.
    fn problems<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for p in self.stats.problems() {
            let d = PyDict::new(py);
            d.set_item("reason", p.counter.name())?;
            d.set_item("shard", p.shard)?;
            d.set_item("key", p.key)?;
            d.set_item("message", p.message)?;
            list.append(d)?;
        }
        Ok(list)
    }

    /// Stop the threads and free the buffers now.
    fn close(&mut self, py: Python<'_>) {
        let p = self.pipeline.take();
        py.detach(move || drop(p));
    }
}

/// Which samples the first `n` samples of a shuffled stream came from, as per-shard bitmaps of
/// sample indices (`{shard: bytes}`, bit i of byte i // 8), merged with `exclude` (the exclusions
/// that stream itself ran with). Reads the shards, decodes nothing.
#[pyfunction]
#[pyo3(signature = (shards, n, *, seed=0, shuffle_buffer=0, max_member_bytes=DEFAULT_MAX_MEMBER_BYTES, exclude=None, table_reader=None))]
#[allow(clippy::too_many_arguments)]
fn consumed_bitmaps<'py>(
    py: Python<'py>,
    shards: Vec<String>,
    n: u64,
    seed: u64,
    shuffle_buffer: usize,
    max_member_bytes: u64,
    exclude: Option<HashMap<String, Vec<u8>>>,
    table_reader: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let table_reader = table_reader.map(PyTableReader::shared);
    let cfg = Config { shards, seed, shuffle_buffer, max_member_bytes, exclude: exclude.unwrap_or_default(), table_reader, ..Config::default() };
    let maps = py.detach(|| {
        let mut out = cfg.exclude.clone();
        for (shard, i) in replay(&cfg, n) {
            let bm = out.entry(shard.to_string()).or_default();
            let byte = (i / 8) as usize;
            if bm.len() <= byte {
                bm.resize(byte + 1, 0);
            }
            bm[byte] |= 1 << (i % 8);
        }
        out
    });
    let d = PyDict::new(py);
    for (shard, bm) in maps {
        d.set_item(shard, PyBytes::new(py, &bm))?;
    }
    Ok(d)
}

/// Normalise a language tag as the stream does (`iw` → `he`, `en-US` → `en`, `tl` → `fil`,
/// unknown → `und`).
#[pyfunction(name = "normalize_lang")]
fn py_normalize_lang(tag: &str) -> String {
    normalize_lang(tag)
}

/// Perceptual fingerprints `(phash, dhash)` of an encoded image, decoded as the stream decodes
/// it for `image_size`: the whole image, or with `variants` its 36 crop variants (whole first).
#[pyfunction]
#[pyo3(signature = (data, variants=false, image_size=224, max_pixels=DEFAULT_MAX_PIXELS))]
fn fingerprints(py: Python<'_>, data: Vec<u8>, variants: bool, image_size: u32, max_pixels: u64) -> PyResult<Vec<(u64, u64)>> {
    py.detach(|| {
        let size = image_size as f64;
        let d = crate::decode::decode(&data, max_pixels, true, |w, h| (size / w as f64).max(size / h as f64))?;
        let img = d.image;
        let fps = if variants {
            crate::fingerprint::crop_variants(&img)
        } else {
            vec![crate::fingerprint::fingerprint(&img, (0.0, 0.0, img.width as f64, img.height as f64))]
        };
        Ok(fps.into_iter().map(|f| (f.phash, f.dhash)).collect())
    })
    .map_err(|e: crate::decode::DecodeError| PyValueError::new_err(format!("{}: {}", e.counter.name(), e.message)))
}

fn load_blocklist(path: &str) -> PyResult<HashIndex> {
    let file = std::fs::File::open(path)
        .map_err(|e| PyFileNotFoundError::new_err(format!("blocklist not found: {path:?} ({e}); write one with `webli-io index-eval`")))?;
    HashIndex::read_from(std::io::BufReader::new(file)).map_err(|e| PyValueError::new_err(format!("{path}: {e}")))
}

/// The frozen blocklist at `path`, read once per process: a stream is made anew every epoch in
/// every DataLoader worker, and a 1 M-hash file is 20 MB to read and index. The cache is keyed
/// by path, size and modification time, so a rewritten file is read again.
fn frozen_blocklist(path: &str) -> PyResult<Arc<FrozenIndex>> {
    type Cache = std::sync::Mutex<HashMap<(String, u64, std::time::SystemTime), Arc<FrozenIndex>>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let meta = std::fs::metadata(path)
        .map_err(|e| PyFileNotFoundError::new_err(format!("blocklist not found: {path:?} ({e}); write one with `webli-io index-eval`")))?;
    let key = (path.to_string(), meta.len(), meta.modified().unwrap_or(std::time::UNIX_EPOCH));
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(hit.clone());
    }
    let frozen = Arc::new(load_blocklist(path)?.freeze());
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    map.retain(|k, _| k.0 != path); // only the newest version of a file is kept
    map.insert(key, frozen.clone());
    Ok(frozen)
}

/// A blocklist of fingerprints with multi-index Hamming lookup (`webli-io index-eval` writes it).
#[pyclass(module = "webli_io._core", name = "Blocklist")]
struct PyBlocklist {
    index: HashIndex,
    /// The lookup form, rebuilt after additions.
    frozen: Option<FrozenIndex>,
}

impl PyBlocklist {
    fn frozen(&mut self) -> &FrozenIndex {
        if self.frozen.is_none() {
            self.frozen = Some(self.index.freeze());
        }
        self.frozen.as_ref().expect("set above")
    }
}

#[pymethods]
impl PyBlocklist {
    /// An empty blocklist, or the one in file `path`.
    #[new]
    #[pyo3(signature = (path=None))]
    fn new(path: Option<String>) -> PyResult<Self> {
        Ok(Self { index: match path { Some(p) => load_blocklist(&p)?, None => HashIndex::new() }, frozen: None })
    }

    /// Add `(phash, dhash)` fingerprints under one id.
    fn add(&mut self, fingerprints: Vec<(u64, u64)>, id: u32) {
        self.frozen = None;
        for (phash, dhash) in fingerprints {
            self.index.insert(Fingerprint { phash, dhash }, id);
        }
    }

    /// The id of a match within the radii, or None.
    #[pyo3(signature = (phash, dhash, radius=DEFAULT_NEAR_RADIUS))]
    fn find(&mut self, phash: u64, dhash: u64, radius: (u32, u32)) -> Option<u32> {
        self.frozen().find(Fingerprint { phash, dhash }, radius.0.min(11), radius.1)
    }

    /// How many of `queries` match (GIL released; for benchmarks): a list of (pHash, dHash)
    /// pairs, or a uint64 array of shape (N, 2), read without conversion.
    #[pyo3(signature = (queries, radius=DEFAULT_NEAR_RADIUS))]
    fn count_matches(&mut self, py: Python<'_>, queries: &Bound<'_, PyAny>, radius: (u32, u32)) -> PyResult<usize> {
        let queries: Vec<Fingerprint> = if let Ok(arr) = queries.cast::<numpy::PyArray2<u64>>() {
            let arr = arr.readonly();
            let view = arr.as_array();
            if view.ncols() != 2 {
                return Err(PyValueError::new_err("queries: expected shape (N, 2) of (pHash, dHash)"));
            }
            view.rows().into_iter().map(|r| Fingerprint { phash: r[0], dhash: r[1] }).collect()
        } else {
            let pairs: Vec<(u64, u64)> = queries.extract()?;
            pairs.into_iter().map(|(phash, dhash)| Fingerprint { phash, dhash }).collect()
        };
        let frozen = self.frozen();
        Ok(py.detach(|| frozen.find_many(&queries, radius.0.min(11), radius.1).iter().filter(|h| h.is_some()).count()))
    }

    /// Write to `path` (the format `WebLIStream(blocklist=...)` reads).
    fn save(&self, path: &str) -> PyResult<()> {
        let f = std::fs::File::create(path).map_err(|e| PyValueError::new_err(format!("cannot write {path}: {e}")))?;
        let mut w = std::io::BufWriter::new(f);
        self.index.write_to(&mut w).and_then(|_| std::io::Write::flush(&mut w)).map_err(|e| PyValueError::new_err(format!("cannot write {path}: {e}")))
    }

    fn __len__(&self) -> usize {
        self.index.len()
    }

    /// Bytes the index holds in memory.
    fn memory_bytes(&mut self) -> usize {
        self.frozen().memory_bytes()
    }
}

/// Is `key` in the subset of `fraction` (seeded by `subset_seed`)? As the stream decides.
#[pyfunction(name = "in_subset")]
#[pyo3(signature = (key, fraction, subset_seed=0))]
fn py_in_subset(key: &str, fraction: f64, subset_seed: u64) -> bool {
    in_subset(key, fraction, subset_seed)
}

/// Samples per shard, counted from the tar headers alone (seeking over the data).
#[pyfunction]
fn count_samples(py: Python<'_>, shards: Vec<String>) -> PyResult<Vec<u64>> {
    py.detach(|| shards.iter().map(|p| crate::tar::count_samples(p).map_err(|e| (p.clone(), e))).collect::<Result<Vec<_>, _>>())
        .map_err(|(p, e)| PyFileNotFoundError::new_err(format!("cannot read shard {p:?}: {e}")))
}

/// Resolve shard specs (paths, globs, brace patterns) to existing shard paths.
#[pyfunction]
fn expand_shards(py: Python<'_>, specs: Vec<String>) -> PyResult<Vec<String>> {
    py.detach(|| resolve_shards(&specs)).map_err(|e| match e {
        SourceError::BadPattern { .. } => PyValueError::new_err(e.to_string()),
        SourceError::Missing { .. } | SourceError::NoMatch { .. } => PyFileNotFoundError::new_err(e.to_string()),
    })
}

/// Decode and resize one encoded image exactly as the stream does; returns `[S, S, 3]` uint8.
/// Raises ValueError naming the reason (e.g. `skipped_corrupt_image`) for an image it would skip.
#[pyfunction]
#[pyo3(signature = (data, image_size=224, resize="squash", seed=0, key="", max_pixels=DEFAULT_MAX_PIXELS, scaled_decode=true))]
fn decode_resize<'py>(
    py: Python<'py>,
    data: Vec<u8>,
    image_size: u32,
    resize: &str,
    seed: u64,
    key: &str,
    max_pixels: u64,
    scaled_decode: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let cfg = Config {
        image_size,
        resize: resize.parse::<ResizeMode>().map_err(PyValueError::new_err)?,
        seed,
        max_pixels,
        scaled_decode,
        ..Config::default()
    };
    cfg.validate().map_err(PyValueError::new_err)?;
    let sample = Sample { key: key.into(), shard: "".into(), index: 0, seq: 0, image: data.into(), text: String::new(), meta: Map::new(), lang: String::new() };
    let tile = py
        .detach(|| prepare_image(&sample, &cfg, None))
        .map_err(|e| PyValueError::new_err(format!("{}: {}", e.counter.name(), e.message)))?;
    let s = image_size as usize;
    Ok(PyArray1::from_vec(py, tile).reshape([s, s, 3])?.into_any())
}

/// Import one record batch (any object with `__arrow_c_array__`, the Arrow PyCapsule
/// interface: a pyarrow RecordBatch) without copying its buffers.
fn import_batch(batch: &Bound<'_, PyAny>) -> PyResult<StructArray> {
    let (schema, array): (Bound<'_, PyCapsule>, Bound<'_, PyCapsule>) = batch.call_method0("__arrow_c_array__")?.extract()?;
    let schema = schema.pointer_checked(Some(c"arrow_schema"))?.as_ptr() as *const FFI_ArrowSchema;
    let array = array.pointer_checked(Some(c"arrow_array"))?.as_ptr() as *mut FFI_ArrowArray;
    // SAFETY: the capsules hold an ArrowSchema and an ArrowArray (their names are checked
    // above). `from_raw` moves the array out and leaves a released one behind, so the capsule's
    // destructor does not free what we now own; the schema is only borrowed while importing.
    let data = unsafe { from_ffi(FFI_ArrowArray::from_raw(array), &*schema) }.map_err(|e| PyValueError::new_err(e.to_string()))?;
    if !matches!(data.data_type(), arrow_schema::DataType::Struct(_)) {
        return Err(PyValueError::new_err("expected a record batch (a struct array)"));
    }
    Ok(StructArray::from(data))
}

/// Reads table shards by calling a Python function `open(shard)` that returns an iterator of
/// record batches (`webli_io.parquet.ParquetOpener`, pyarrow). The GIL is held only to take the
/// next batch; the rows are built and handed on without it.
struct PyTableReader {
    open: Py<PyAny>,
}

impl PyTableReader {
    fn shared(open: Py<PyAny>) -> Arc<dyn TableReader> {
        Arc::new(Self { open })
    }
}

impl TableReader for PyTableReader {
    fn read(&self, shard: &str, stats: &Stats, emit: &mut dyn FnMut(TableRow) -> bool) {
        let iter = Python::attach(|py| -> PyResult<Py<PyIterator>> { Ok(self.open.bind(py).call1((shard,))?.try_iter()?.unbind()) });
        let iter = match iter {
            Ok(it) => it,
            Err(e) => {
                stats.problem(Counter::UnreadableShard, shard, "", e.to_string());
                return;
            }
        };
        loop {
            let next = Python::attach(|py| -> PyResult<Option<StructArray>> {
                match iter.bind(py).clone().next() {
                    None => Ok(None),
                    Some(batch) => import_batch(&batch?).map(Some),
                }
            });
            let batch = match next {
                Ok(Some(b)) => b,
                Ok(None) => return,
                Err(e) => {
                    stats.problem(Counter::CorruptTable, shard, "", e.to_string());
                    return;
                }
            };
            match rows(&batch) {
                Ok(rows) => {
                    for row in rows {
                        if !emit(row) {
                            return;
                        }
                    }
                }
                Err(e) => {
                    stats.problem(Counter::CorruptTable, shard, "", e);
                    return;
                }
            }
        }
    }
}

/// The rows of a record batch as Rust sees them: `(key, address of the image bytes, length,
/// caption, metadata)` — the address shows whether the image was shared or copied (tests).
type RowView<'py> = (Option<String>, usize, usize, Option<String>, Bound<'py, PyAny>);

#[pyfunction]
fn table_rows<'py>(py: Python<'py>, batch: &Bound<'py, PyAny>) -> PyResult<Vec<RowView<'py>>> {
    let rows = rows(&import_batch(batch)?).map_err(PyValueError::new_err)?;
    rows.into_iter()
        .map(|r| {
            let (addr, len) = r.image.as_ref().map_or((0, 0), |b| (b.as_ptr() as usize, b.len()));
            Ok((r.key, addr, len, r.text, json_to_py(py, &Value::Object(r.meta))?))
        })
        .collect()
}

/// Is `shard` read as a table (Parquet) rather than a tar? (By its extension.)
#[pyfunction(name = "is_table_shard")]
fn py_is_table_shard(shard: &str) -> bool {
    is_table_shard(shard)
}

/// The 64-bit content hash (xxh3) of each image, as the stream's exact dedup computes it.
#[pyfunction]
fn content_hashes(images: Vec<Vec<u8>>) -> Vec<u64> {
    images.iter().map(|b| content_hash(b)).collect()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyStream>()?;
    m.add_class::<PyBlocklist>()?;
    m.add("DEFAULT_NEAR_RADIUS", DEFAULT_NEAR_RADIUS)?;
    m.add_function(wrap_pyfunction!(expand_shards, m)?)?;
    m.add_function(wrap_pyfunction!(decode_resize, m)?)?;
    m.add_function(wrap_pyfunction!(consumed_bitmaps, m)?)?;
    m.add_function(wrap_pyfunction!(count_samples, m)?)?;
    m.add_function(wrap_pyfunction!(py_normalize_lang, m)?)?;
    m.add_function(wrap_pyfunction!(py_in_subset, m)?)?;
    m.add_function(wrap_pyfunction!(fingerprints, m)?)?;
    m.add_function(wrap_pyfunction!(table_rows, m)?)?;
    m.add_function(wrap_pyfunction!(content_hashes, m)?)?;
    m.add_function(wrap_pyfunction!(py_is_table_shard, m)?)?;
    m.add("TABLE_IMAGE_COLUMNS", IMAGE_COLUMNS.to_vec())?;
    m.add("TABLE_CAPTION_COLUMNS", CAPTION_COLUMNS.to_vec())?;
    m.add("TABLE_KEY_COLUMNS", KEY_COLUMNS.to_vec())?;
    let names: Vec<&str> = Counter::ALL.iter().map(|c| c.name()).collect();
    m.add("STAT_NAMES", names)?;
    m.add("DEFAULT_MAX_PIXELS", DEFAULT_MAX_PIXELS)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
