//! The PyO3 bindings: the only file that knows Python. It converts arguments to a
//! [`Settings`] once ([`PyOptions`]), runs the pipeline with the GIL released, and hands each batch over as a dict
//! whose `images` array takes ownership of the Rust buffer (no copy).

use std::collections::HashMap;
use std::sync::Arc;

use numpy::{PyArray1, PyArrayMethods};
use std::collections::BTreeMap;

use pyo3::create_exception;
use pyo3::exceptions::{PyAttributeError, PyFileNotFoundError, PyPermissionError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyCapsule, PyDict, PyFloat, PyInt, PyIterator, PyList, PyString, PyTuple};
use serde_json::{Map, Value};

use crate::batch::{Batch, Pixels};
use crate::config::{ConfigError as SettingError, Settings, DEFAULT_MAX_PIXELS, DEFAULT_NEAR_RADIUS};
use crate::fingerprint::Fingerprint;
use crate::lang::normalize_lang;
use crate::names::{Range, Run, ShardNames};
use crate::neardup::{FrozenIndex, HashIndex};
use crate::pipeline::{prepare_image, replay, Job, Pipeline, ReaderPlan};
use crate::sample::{is_table_shard, Sample, TableReader, TableRow};
use crate::select::{content_hash, in_subset};
use crate::source::{resolve_shards, SourceError};
use crate::stats::{Counter, Stats};
use crate::table::{rows, CAPTION_COLUMNS, IMAGE_COLUMNS, KEY_COLUMNS};
use arrow_array::ffi::{from_ffi, FFI_ArrowArray, FFI_ArrowSchema};
use arrow_array::StructArray;

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
    match batch.images {
        Pixels::U8(v) => d.set_item("images", PyArray1::from_vec(py, v).reshape(shape)?)?,
        Pixels::F32(v) => d.set_item("images", PyArray1::from_vec(py, v).reshape(shape)?)?,
    }
    for (name, values) in batch.extras {
        let list = PyList::empty(py);
        for v in values {
            match v {
                Some(bytes) => list.append(PyBytes::new(py, &bytes))?,
                None => list.append(py.None())?,
            }
        }
        d.set_item(name, list)?;
    }
    if !batch.encoded.is_empty() {
        let list = PyList::empty(py);
        for e in batch.encoded {
            match e {
                Some((bytes, crop, flip)) => list.append((PyBytes::new(py, &bytes), crop, flip))?,
                None => list.append(py.None())?,
            }
        }
        d.set_item("encoded", list)?;
    }
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
    d.set_item("seqs", batch.seqs)?;
    Ok(d)
}

fn stats_to_py<'py>(py: Python<'py>, stats: &Stats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (name, v) in stats.snapshot() {
        d.set_item(name, v)?;
    }
    Ok(d)
}

create_exception!(
    _core,
    ConfigError,
    PyValueError,
    "A setting of a stream is wrong. ``setting`` names it; the message says what it accepts."
);

fn config_error(py: Python<'_>, e: &SettingError) -> PyErr {
    let err = ConfigError::new_err(e.to_string());
    let _ = err.value(py).setattr("setting", e.setting.as_str());
    err
}

/// A Python value as JSON, for the settings: what is not plain data is an error naming `setting`.
fn py_to_json(v: &Bound<'_, PyAny>, setting: &str) -> Result<Value, SettingError> {
    let bad = |what: String| SettingError::new(setting, what);
    if v.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if v.is_instance_of::<PyInt>() {
        if let Ok(i) = v.extract::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = v.extract::<u64>() {
            return Ok(Value::from(u));
        }
        return Err(bad(format!("{v} is out of range")));
    }
    if let Ok(f) = v.cast::<PyFloat>() {
        let x = f.value();
        return serde_json::Number::from_f64(x).map(Value::Number).ok_or_else(|| bad(format!("must be a finite number, not {x}")));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(Value::String(s.to_string()));
    }
    if let Ok(d) = v.cast::<PyDict>() {
        let mut m = Map::new();
        for (k, x) in d.iter() {
            let k: String = k.extract().map_err(|_| {
                bad(format!("keys must be strings, not {}", k.get_type().name().map(|n| n.to_string()).unwrap_or_default()))
            })?;
            m.insert(k, py_to_json(&x, setting)?);
        }
        return Ok(Value::Object(m));
    }
    if v.cast::<PyList>().is_ok() || v.cast::<PyTuple>().is_ok() {
        let items: Vec<Bound<'_, PyAny>> =
            v.try_iter().map_err(|e| bad(e.to_string()))?.collect::<PyResult<_>>().map_err(|e| bad(e.to_string()))?;
        return items.iter().map(|x| py_to_json(x, setting)).collect::<Result<Vec<_>, _>>().map(Value::Array);
    }
    // os.PathLike (a blocklist or manifest path).
    if let Ok(path) = v.call_method0("__fspath__") {
        if let Ok(s) = path.extract::<String>() {
            return Ok(Value::String(s));
        }
    }
    let type_name = v.get_type().name().map(|n| n.to_string()).unwrap_or_default();
    Err(bad(format!("expected plain data (a number, string, list or dict), not {type_name}")))
}

fn flat_settings(py: Python<'_>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Map<String, Value>> {
    let mut flat = Map::new();
    if let Some(kw) = kwargs {
        for (k, v) in kw.iter() {
            let name: String = k.extract()?;
            let value = py_to_json(&v, &name).map_err(|e| config_error(py, &e))?;
            flat.insert(name, value);
        }
    }
    Ok(flat)
}

/// Raw language counts from a manifest written by `webli-io prepare` (the file or its folder).
fn manifest_counts(path: &str) -> Result<BTreeMap<String, u64>, SettingError> {
    let mut file = std::path::PathBuf::from(path);
    if file.is_dir() {
        file.push("manifest.json");
    }
    let text = std::fs::read_to_string(&file)
        .map_err(|e| SettingError::new("manifest", format!("cannot read {}: {e} (write one with `webli-io prepare`)", file.display())))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| SettingError::new("manifest", format!("{}: not JSON ({e})", file.display())))?;
    let langs = v
        .get("languages")
        .and_then(Value::as_object)
        .ok_or_else(|| SettingError::new("manifest", format!("{} is not a webli-io manifest (no 'languages' counts)", file.display())))?;
    langs
        .iter()
        .map(|(l, n)| {
            n.as_u64()
                .map(|n| (l.clone(), n))
                .ok_or_else(|| SettingError::new("manifest", format!("{}: count of {l:?} is not a count", file.display())))
        })
        .collect()
}

/// The settings of a stream, validated once (see `webli_io.WebLIStream` for each setting).
/// Immutable; plain data (`to_dict()`), picklable, and the one value the stream, the resume
/// replay, the state's identity and the equal-batches count all read.
#[pyclass(module = "webli_io._core", name = "Options", frozen, eq)]
#[derive(Clone, PartialEq)]
struct PyOptions {
    settings: Arc<Settings>,
    /// Loaded from `manifest` once, here, and carried (to workers too).
    counts: Option<BTreeMap<String, u64>>,
}

impl PyOptions {
    fn build(py: Python<'_>, settings: Settings, counts: Option<BTreeMap<String, u64>>) -> PyResult<Self> {
        let counts = match (&settings.mixture.manifest, counts) {
            (Some(_), Some(c)) => Some(c),
            (Some(path), None) => Some(manifest_counts(path).map_err(|e| config_error(py, &e))?),
            (None, _) => None,
        };
        for lang in settings.mixture.mixture.iter().flat_map(|m| m.keys()) {
            if normalize_lang(lang) == "und" && lang != "und" {
                let e = SettingError::new(
                    "mixture",
                    format!("{lang:?} is not a language code the stream knows (ISO 639-1 such as \"bn\", or \"und\"): its share would go to no sample"),
                );
                return Err(config_error(py, &e));
            }
        }
        if let Some(path) = &settings.near.blocklist {
            if !std::path::Path::new(path).is_file() {
                let e = SettingError::new("blocklist", format!("file not found: {path:?} (write one with `webli-io index-eval`)"));
                return Err(config_error(py, &e));
            }
        }
        Ok(Self { settings: Arc::new(settings), counts })
    }

    fn job(&self, shards: Vec<String>, table_reader: Option<Py<PyAny>>) -> PyResult<Job> {
        let mut job = Job::shared(shards, self.settings.clone());
        job.mixture_counts = self.counts.as_ref().map(|c| c.iter().map(|(k, v)| (k.clone(), *v)).collect());
        job.table_reader = table_reader.map(PyTableReader::shared);
        if let Some(path) = &self.settings.near.blocklist {
            job.blocklist = Some(frozen_blocklist(path)?);
        }
        Ok(job)
    }

    fn identity_json(&self) -> Value {
        let mut id = self.settings.identity();
        id.insert("manifest_counts".into(), serde_json::to_value(&self.counts).expect("counts serialise"));
        Value::Object(id)
    }
}

#[pymethods]
impl PyOptions {
    #[new]
    #[pyo3(signature = (**settings))]
    fn new(py: Python<'_>, settings: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let flat = flat_settings(py, settings)?;
        let s = Settings::from_flat(flat).map_err(|e| config_error(py, &e))?;
        Self::build(py, s, None)
    }

    /// These options with some settings changed (validated again).
    #[pyo3(signature = (**settings))]
    fn replace(&self, py: Python<'_>, settings: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let flat = flat_settings(py, settings)?;
        let manifest_changed = flat.contains_key("manifest");
        let s = self.settings.with(flat).map_err(|e| config_error(py, &e))?;
        Self::build(py, s, if manifest_changed { None } else { self.counts.clone() })
    }

    /// Every setting by name (plain data).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        map_to_py(py, &self.settings.to_flat())
    }

    /// What a resume state is bound to: every setting that decides which samples come out and
    /// how (all but `num_threads` and `prefetch`), plus the manifest's counts.
    fn identity<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let Value::Object(m) = self.identity_json() else { unreachable!() };
        map_to_py(py, &m)
    }

    /// A short digest of `identity()` and the shard list (given by its digest,
    /// `ShardNames.digest()`: the list itself may hold 12.5 M names).
    fn fingerprint(&self, shards_digest: &str) -> String {
        let text = serde_json::to_string(&(self.identity_json(), shards_digest)).expect("serialise");
        format!("{:032x}", xxhash_rust::xxh3::xxh3_128(text.as_bytes()))
    }

    /// Does selection (subset, filters, dedup) drop samples before decoding?
    #[getter]
    fn selects_before_decode(&self) -> bool {
        self.settings.select.drops_before_decode()
    }

    /// The shuffle buffer's size, resolved (1000 when `shuffle` and unset).
    #[getter]
    fn shuffle_buffer_size(&self) -> usize {
        self.settings.read.buffer()
    }

    /// The names of every setting.
    #[staticmethod]
    fn names() -> Vec<&'static str> {
        Settings::names()
    }

    /// Every setting's default.
    #[staticmethod]
    fn defaults(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
        map_to_py(py, &Settings::default().to_flat())
    }

    fn __getattr__<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        match self.settings.to_flat().get(name) {
            Some(v) => json_to_py(py, v),
            None => Err(PyAttributeError::new_err(format!("Options has no setting {name:?}"))),
        }
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, (String,))> {
        let me = slf.get();
        let state = serde_json::json!({"settings": me.settings.to_flat(), "manifest_counts": me.counts});
        Ok((slf.get_type().getattr("_from_json")?, (state.to_string(),)))
    }

    /// The inverse of pickling (`__reduce__`): settings and the manifest's counts as carried.
    #[staticmethod]
    fn _from_json(py: Python<'_>, text: &str) -> PyResult<Self> {
        let v: Value = serde_json::from_str(text).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let flat = v.get("settings").and_then(Value::as_object).cloned().unwrap_or_default();
        let counts: Option<BTreeMap<String, u64>> = serde_json::from_value(v.get("manifest_counts").cloned().unwrap_or(Value::Null))
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let s = Settings::from_flat(flat).map_err(|e| config_error(py, &e))?;
        Ok(Self { settings: Arc::new(s), counts })
    }

    fn __repr__(&self) -> String {
        let defaults = Settings::default().to_flat();
        let changed: Vec<String> =
            self.settings.to_flat().into_iter().filter(|(k, v)| defaults.get(k) != Some(v)).map(|(k, v)| format!("{k}={v}")).collect();
        format!("Options({})", changed.join(", "))
    }
}

/// The native stream of one reader over its shards (see `webli_io.WebLIStream` for the public
/// API): the options whole, and this reader's plan (seeds, threads, where a resume starts).
#[pyclass(module = "webli_io._core", name = "Stream")]
struct PyStream {
    pipeline: Option<Pipeline>,
    stats: Arc<Stats>,
}

impl PyStream {
    /// The end of the stream: `None`, or the error that ended it (see `Stats::set_fatal`).
    fn fatal_error<T>(&self) -> PyResult<Option<T>> {
        match self.stats.fatal() {
            None => Ok(None),
            Some(why) => Err(PyPermissionError::new_err(format!(
                "the stream stopped: {why} (an authorization or configuration error: retrying or reading other shards cannot mend it)"
            ))),
        }
    }
}

#[pymethods]
impl PyStream {
    #[new]
    #[pyo3(signature = (
        shards, options, *, shuffle_seed, sample_seed, num_threads, skip=0, exclude=None, limit=0,
        cycle=false, fallback_shards=None, table_reader=None, pad=false
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        shards: Vec<String>,
        options: &PyOptions,
        shuffle_seed: u64,
        sample_seed: u64,
        num_threads: usize,
        skip: u64,
        exclude: Option<HashMap<String, Vec<u8>>>,
        limit: u64,
        cycle: bool,
        fallback_shards: Option<Vec<String>>,
        table_reader: Option<Py<PyAny>>,
        pad: bool,
    ) -> PyResult<Self> {
        let mut job = options.job(shards, table_reader)?;
        let (exclude, fallback_shards) = (exclude.unwrap_or_default(), fallback_shards.unwrap_or_default());
        job.plan = ReaderPlan { shuffle_seed, sample_seed, num_threads, skip, exclude, limit, cycle, pad, fallback_shards, phantom: false };
        let pipeline = Pipeline::start(job).map_err(PyValueError::new_err)?;
        let stats = pipeline.stats().clone();
        Ok(Self { pipeline: Some(pipeline), stats })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        loop {
            let Some(pipeline) = self.pipeline.as_mut() else { return self.fatal_error() };
            if self.stats.fatal().is_some() {
                // Access refused (expired token, wrong region, denied): not transient, and every
                // other shard would be refused too. The stream ends now, with the reason.
                let p = self.pipeline.take();
                py.detach(move || drop(p));
                return self.fatal_error();
            }
            // Wait in short slices, checking for signals in between: Ctrl-C arrives as
            // KeyboardInterrupt within a tenth of a second, even while a server stalls.
            match py.detach(|| pipeline.next_batch_within(std::time::Duration::from_millis(100))) {
                Ok(Some(batch)) => return Ok(Some(batch_to_py(py, batch)?)),
                Ok(None) => {
                    // End of stream: join the threads now rather than at garbage collection.
                    let p = self.pipeline.take();
                    py.detach(move || drop(p));
                    return self.fatal_error();
                }
                Err(()) => py.check_signals()?,
            }
        }
    }

    /// Counters of this stream so far, by name.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_to_py(py, &self.stats)
    }

    /// The first problems met (skipped or repaired samples, bad shards), with shard, key, reason.
    fn problems<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        problems_to_py(py, &self.stats)
    }

    /// Stop the threads and free the buffers now.
    fn close(&mut self, py: Python<'_>) {
        let p = self.pipeline.take();
        py.detach(move || drop(p));
    }
}

/// The raw samples of one tar shard, grouped by the stream's own rules (webdataset's key rule,
/// the member size limit, damage detection), in shard order: `(key, [(extension, bytes)])`.
/// `prepare` and `index-eval` read shards through it, so they number and group samples exactly
/// as the stream does. Read on a thread; `stats()` and `problems()` tell how the shard ended.
#[pyclass(module = "webli_io._core", name = "TarSamples")]
struct PyTarSamples {
    rx: Option<crossbeam_channel::Receiver<crate::tar::RawSample>>,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: Arc<Stats>,
}

#[pymethods]
impl PyTarSamples {
    #[new]
    #[pyo3(signature = (shard, max_member_bytes=crate::config::DEFAULT_MAX_MEMBER_BYTES))]
    fn new(shard: String, max_member_bytes: u64) -> PyResult<Self> {
        let stats = Arc::new(Stats::new());
        let (tx, rx) = crossbeam_channel::bounded(16);
        let st = stats.clone();
        let thread = std::thread::Builder::new()
            .name("webli-tar".into())
            .spawn(move || {
                let read = || match crate::source::open_shard(&shard) {
                    Ok(reader) => crate::tar::read_samples(reader, &shard, max_member_bytes, &st, |raw| tx.send(raw).is_ok()),
                    Err(e) => st.problem(Counter::UnreadableShard, &shard, "", e.to_string()),
                };
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).is_err() {
                    st.problem(Counter::Panic, &shard, "", "panic while reading the shard");
                }
            })
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(Self { rx: Some(rx), thread: Some(thread), stats })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<(String, Bound<'py, PyList>)>> {
        let Some(rx) = self.rx.as_ref() else { return Ok(None) };
        match py.detach(|| rx.recv()) {
            Ok(raw) => {
                let members = PyList::empty(py);
                for (ext, data) in raw.members {
                    members.append((ext, PyBytes::new(py, &data)))?;
                }
                Ok(Some((raw.key, members)))
            }
            Err(_) => {
                self.close(py);
                Ok(None)
            }
        }
    }

    /// Counters of the read (samples_read, shard_truncated, shard_corrupt, shard_unreadable, ...).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_to_py(py, &self.stats)
    }

    /// The problems met, with shard, key, reason and message.
    fn problems<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        problems_to_py(py, &self.stats)
    }

    /// Stop reading and join the thread.
    fn close(&mut self, py: Python<'_>) {
        self.rx.take();
        if let Some(t) = self.thread.take() {
            py.detach(move || {
                let _ = t.join();
            });
        }
    }
}

fn problems_to_py<'py>(py: Python<'py>, stats: &Stats) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for p in stats.problems() {
        let d = PyDict::new(py);
        d.set_item("reason", p.counter.name())?;
        d.set_item("shard", p.shard)?;
        d.set_item("key", p.key)?;
        d.set_item("message", p.message)?;
        list.append(d)?;
    }
    Ok(list)
}

/// Which samples the first `n` samples of a reader's shuffled stream came from, as per-shard
/// bitmaps of sample indices (`{shard: bytes}`, bit i of byte i // 8), merged with `exclude` (the
/// exclusions that reader itself ran with). Reads the shards with the whole options (so samples
/// are numbered exactly as the stream numbered them), decodes nothing.
#[pyfunction]
#[pyo3(signature = (shards, n, options, *, shuffle_seed, sample_seed, exclude=None, table_reader=None))]
#[allow(clippy::too_many_arguments)]
fn consumed_bitmaps<'py>(
    py: Python<'py>,
    shards: Vec<String>,
    n: u64,
    options: &PyOptions,
    shuffle_seed: u64,
    sample_seed: u64,
    exclude: Option<HashMap<String, Vec<u8>>>,
    table_reader: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let mut job = options.job(shards, table_reader)?;
    job.plan = ReaderPlan { shuffle_seed, sample_seed, num_threads: 1, exclude: exclude.unwrap_or_default(), ..Default::default() };
    let maps = py.detach(|| {
        let mut out = job.plan.exclude.clone();
        for (shard, i, copy) in replay(&job, n) {
            let bm = out.entry(crate::pipeline::copy_key(&shard, copy)).or_default();
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

/// Samples per shard that survive selection before decoding (subset, metadata filters, exact
/// dedup within the shard), read without decoding, shards in parallel: what `equal_batches`
/// divides among readers when selection is on.
#[pyfunction]
#[pyo3(signature = (shards, options, *, threads=1, table_reader=None))]
fn count_selected(
    py: Python<'_>,
    shards: Vec<String>,
    options: &PyOptions,
    threads: usize,
    table_reader: Option<Py<PyAny>>,
) -> PyResult<Vec<u64>> {
    let job = options.job(shards, table_reader)?;
    py.detach(|| crate::pipeline::count_selected(&job, threads)).map_err(PyRuntimeError::new_err)
}

/// Normalise a language tag as the stream does (`iw` → `he`, `en-US` → `en`, `tl` → `fil`,
/// unknown → `und`).
#[pyfunction(name = "normalize_lang")]
fn py_normalize_lang(tag: &str) -> String {
    normalize_lang(tag)
}

/// A decode the stream would skip, as Python sees it: ValueError naming the reason's counter.
fn skipped(e: crate::decode::DecodeError) -> PyErr {
    PyValueError::new_err(format!("{}: {}", e.counter.name(), e.message))
}

/// Perceptual fingerprints `(phash, dhash)` of an encoded image, decoded as the stream decodes
/// it for `image_size`: the whole image, or with `variants` its 36 crop variants (whole first).
#[pyfunction]
#[pyo3(signature = (data, variants=false, image_size=224, max_pixels=DEFAULT_MAX_PIXELS))]
fn fingerprints(py: Python<'_>, data: Vec<u8>, variants: bool, image_size: u32, max_pixels: u64) -> PyResult<Vec<(u64, u64)>> {
    py.detach(|| {
        let size = image_size as f64;
        let d = crate::decode::decode(&data, max_pixels, |w, h| crate::decode::Request {
            min_factor: (size / w as f64).max(size / h as f64),
            ..crate::decode::Request::FULL
        })?;
        let img = d.image;
        let fps = if variants {
            crate::fingerprint::crop_variants(&img)
        } else {
            vec![crate::fingerprint::fingerprint(&img, (0.0, 0.0, img.width as f64, img.height as f64))]
        };
        Ok(fps.into_iter().map(|f| (f.phash, f.dhash)).collect())
    })
    .map_err(skipped)
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
        Ok(Self {
            index: match path {
                Some(p) => load_blocklist(&p)?,
                None => HashIndex::new(),
            },
            frozen: None,
        })
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
        self.index
            .write_to(&mut w)
            .and_then(|_| std::io::Write::flush(&mut w))
            .map_err(|e| PyValueError::new_err(format!("cannot write {path}: {e}")))
    }

    fn __len__(&self) -> usize {
        self.index.len()
    }

    /// Bytes the index holds in memory.
    fn memory_bytes(&mut self) -> usize {
        self.frozen().memory_bytes()
    }
}

/// `0..n` shuffled with `seed` (the core's SplitMix64 Fisher–Yates): the shard order of an
/// epoch, fixed across processes, machines and releases (unlike `random.shuffle`).
#[pyfunction]
fn shuffled_order(n: usize, seed: u64) -> Vec<usize> {
    crate::rng::shuffled_order(n, seed)
}

/// Positions `start, start + step, ...` (at most `limit`) of the epoch's shard order (shuffled
/// with `seed`, or not): the shard indices a reader reads, without the whole order in Python.
#[pyfunction]
#[pyo3(signature = (n, seed, shuffle, start, step, limit=None))]
fn order_at(py: Python<'_>, n: usize, seed: u64, shuffle: bool, start: usize, step: usize, limit: Option<usize>) -> Vec<usize> {
    py.detach(|| crate::rng::order_at(n, seed, shuffle, start, step, limit.unwrap_or(usize::MAX)))
}

/// Per reader slot, the sum of `counts` (one per shard) over the shards the epoch's order deals it.
#[pyfunction]
fn slot_sums(py: Python<'_>, counts: Vec<u64>, seed: u64, shuffle: bool, slots: usize) -> Vec<u64> {
    py.detach(|| crate::rng::slot_sums(&counts, seed, shuffle, slots))
}

/// Is `key` in the subset of `fraction` (seeded by `subset_seed`)? As the stream decides.
#[pyfunction(name = "in_subset")]
#[pyo3(signature = (key, fraction, subset_seed=0))]
fn py_in_subset(key: &str, fraction: f64, subset_seed: u64) -> bool {
    in_subset(key, fraction, subset_seed)
}

/// Samples (member groups) per tar shard, without reading them: from the shard index (`index=`,
/// else beside the shards) when there is one, else from a local shard's tar headers (seeking
/// over the data). A remote shard without an index: RuntimeError naming `webli-io index`.
#[pyfunction]
#[pyo3(signature = (shards, options, *, threads=1))]
fn count_samples(py: Python<'_>, shards: Vec<String>, options: &PyOptions, threads: usize) -> PyResult<Vec<u64>> {
    let job = options.job(shards, None)?;
    py.detach(|| crate::pipeline::count_groups(&job, threads)).map_err(|e| {
        if e.starts_with("cannot read shard") {
            PyFileNotFoundError::new_err(e)
        } else {
            PyRuntimeError::new_err(e)
        }
    })
}

/// Read a tar shard once and return its shard index as JSON text (see `rust/index.rs`):
/// `(json, samples indexed, problems)`. `fields`: metadata fields kept per sample besides the
/// language fields (those the filters will read). Runs without the GIL.
#[pyfunction]
#[pyo3(signature = (shard, fields=Vec::new(), max_member_bytes=crate::config::DEFAULT_MAX_MEMBER_BYTES))]
fn build_index<'py>(
    py: Python<'py>,
    shard: String,
    fields: Vec<String>,
    max_member_bytes: u64,
) -> PyResult<(String, usize, Bound<'py, PyList>)> {
    let stats = Stats::new();
    let built = py.detach(|| crate::index::build(&shard, &fields, max_member_bytes, &stats));
    let ix = built.map_err(PyRuntimeError::new_err)?;
    let json = serde_json::to_string(&ix).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok((json, ix.len(), problems_to_py(py, &stats)?))
}

/// The bytes of a small file, local or remote (an index file, a summary), at most `limit`;
/// FileNotFoundError when there is none.
#[pyfunction]
#[pyo3(signature = (location, limit=1 << 30))]
fn read_bytes<'py>(py: Python<'py>, location: String, limit: u64) -> PyResult<Bound<'py, PyBytes>> {
    let got = py.detach(|| -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(crate::source::open_shard(&location)?, limit), &mut out)?;
        Ok(out)
    });
    match got {
        Ok(b) => Ok(PyBytes::new(py, &b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(PyFileNotFoundError::new_err(crate::remote::redact(&location))),
        Err(e) => Err(PyRuntimeError::new_err(format!("{}: {e}", crate::remote::redact(&location)))),
    }
}

/// Write `data` as the object at `url` (`s3://`, `gs://`, `az://`): one PUT, whole or not at all.
#[pyfunction]
fn write_object(py: Python<'_>, url: String, data: Vec<u8>) -> PyResult<()> {
    py.detach(|| crate::objstore::put_object(&url, data))
        .map_err(|e| PyRuntimeError::new_err(format!("{}: {e}", crate::remote::redact(&url))))
}

/// Why `dir` cannot be a `cache_dir` (a folder holding files that are not the cache's), or None.
#[pyfunction]
fn cache_dir_problem(dir: &str) -> Option<String> {
    crate::cache::check_dir(std::path::Path::new(dir)).err()
}

/// Where `shard`'s index file is, in `index_dir` or beside the shard (None: nowhere beside it).
#[pyfunction]
#[pyo3(signature = (shard, index_dir=None))]
fn index_location(shard: &str, index_dir: Option<&str>) -> Option<String> {
    crate::index::index_location(shard, index_dir)
}

/// `shard`'s size and validator now (local: mtime; remote: ETag or Last-Modified, by HEAD).
#[pyfunction]
fn shard_identity(py: Python<'_>, shard: String) -> PyResult<(u64, Option<String>)> {
    py.detach(|| crate::index::shard_identity(&shard))
        .map_err(|e| PyFileNotFoundError::new_err(format!("{}: {e}", crate::remote::redact(&shard))))
}

/// Resolve shard specs (paths, globs, brace patterns) to existing shard paths. `pipe:` specs
/// (shell commands) only with `allow_pipe`; names found by a glob are always local paths.
#[pyfunction]
#[pyo3(signature = (specs, allow_pipe=false))]
fn expand_shards(py: Python<'_>, specs: Vec<String>, allow_pipe: bool) -> PyResult<Vec<String>> {
    py.detach(|| resolve_shards(&specs, allow_pipe)).map_err(source_error)
}

fn source_error(e: SourceError) -> PyErr {
    match e {
        SourceError::BadPattern { .. }
        | SourceError::PipeNotAllowed { .. }
        | SourceError::NotAFile { .. }
        | SourceError::EmptyFolder { .. } => PyValueError::new_err(e.to_string()),
        SourceError::Missing { .. } | SourceError::NoMatch { .. } => PyFileNotFoundError::new_err(e.to_string()),
    }
}

/// A stream's shard list, compact (see `rust/names.rs`): a remote brace pattern is a run, not
/// millions of strings. A read-only sequence of names; pickles as its runs.
#[pyclass(module = "webli_io._core", name = "ShardNames", frozen)]
struct PyShardNames {
    inner: ShardNames,
    digest: std::sync::OnceLock<String>,
}

impl PyShardNames {
    fn new(inner: ShardNames) -> Self {
        Self { inner, digest: std::sync::OnceLock::new() }
    }

    fn name(&self, i: isize) -> PyResult<String> {
        let n = self.inner.len() as isize;
        let j = if i < 0 { i + n } else { i };
        if j < 0 || j >= n {
            return Err(pyo3::exceptions::PyIndexError::new_err(format!("shard {i} of {n}")));
        }
        Ok(self.inner.get(j as usize).expect("in range"))
    }
}

type RunState = (String, String, String, u64, u64, bool, usize);

#[pymethods]
impl PyShardNames {
    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __bool__(&self) -> bool {
        !self.inner.is_empty()
    }

    fn __getitem__<'py>(&self, py: Python<'py>, index: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        if let Ok(slice) = index.cast::<pyo3::types::PySlice>() {
            let ix = slice.indices(self.inner.len() as isize)?;
            let names: PyResult<Vec<String>> = (0..ix.slicelength).map(|k| self.name(ix.start + k as isize * ix.step)).collect();
            return Ok(names?.into_pyobject(py)?.into_any());
        }
        Ok(self.name(index.extract()?)?.into_pyobject(py)?.into_any())
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.to_list().into_pyobject(py)?.try_iter()?.into_any())
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        if let Ok(o) = other.cast::<PyShardNames>() {
            return Ok(o.get().inner == self.inner);
        }
        match other.extract::<Vec<String>>() {
            Ok(v) => Ok(v.len() == self.inner.len() && self.inner.iter().zip(v).all(|(a, b)| a == b)),
            Err(_) => Ok(false),
        }
    }

    fn __repr__(&self) -> String {
        format!("ShardNames({} names in {} runs)", self.inner.len(), self.inner.runs().len())
    }

    /// The names at these places, in this order.
    fn take(&self, py: Python<'_>, indices: Vec<usize>) -> PyResult<Vec<String>> {
        py.detach(|| indices.iter().map(|&i| self.inner.get(i)).collect::<Option<Vec<_>>>())
            .ok_or_else(|| pyo3::exceptions::PyIndexError::new_err("a shard index past the end of the list"))
    }

    /// The place of `name` (its first), or None.
    fn index_of(&self, name: &str) -> Option<usize> {
        self.inner.index_of(name)
    }

    /// Every name (O(n)).
    fn to_list(&self) -> Vec<String> {
        self.inner.iter().collect()
    }

    /// Is any shard a table (Parquet) shard? One name per run is looked at.
    fn has_table_shards(&self) -> bool {
        self.inner.any_by_run(is_table_shard)
    }

    /// A digest of the names (xxh3-128 of them joined by newlines), computed once.
    fn digest(&self, py: Python<'_>) -> String {
        self.digest.get_or_init(|| py.detach(|| self.inner.digest())).clone()
    }

    /// The runs, as plain tuples: `("one", name, "", 0, 0, False, 0)` or
    /// `("range", prefix, suffix, start, count, down, width)`.
    fn runs(&self) -> Vec<RunState> {
        self.inner
            .runs()
            .iter()
            .map(|r| match r {
                Run::One(n) => ("one".into(), n.clone(), String::new(), 0, 0, false, 0),
                Run::Range(r) => ("range".into(), r.prefix.clone(), r.suffix.clone(), r.start, r.count, r.down, r.width),
            })
            .collect()
    }

    #[staticmethod]
    fn from_runs(runs: Vec<RunState>) -> PyResult<Self> {
        let runs = runs
            .into_iter()
            .map(|(kind, a, b, start, count, down, width)| match kind.as_str() {
                "one" => Ok(Run::One(a)),
                "range" if !down || count <= start + 1 => Ok(Run::Range(Range { prefix: a, suffix: b, start, count, down, width })),
                _ => Err(PyValueError::new_err(format!("not a shard run: {kind:?}"))),
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(Self::new(ShardNames::from_runs(runs)))
    }

    #[staticmethod]
    fn from_names(names: Vec<String>) -> Self {
        Self::new(ShardNames::from_names(names))
    }

    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, (Vec<RunState>,))> {
        Ok((py.get_type::<PyShardNames>().getattr("from_runs")?, (self.runs(),)))
    }
}

/// Resolve shard specs as `expand_shards` does, keeping remote numeric ranges compact.
#[pyfunction]
#[pyo3(signature = (specs, allow_pipe=false))]
fn shard_names(py: Python<'_>, specs: Vec<String>, allow_pipe: bool) -> PyResult<PyShardNames> {
    py.detach(|| ShardNames::resolve(&specs, allow_pipe)).map(PyShardNames::new).map_err(source_error)
}

/// Where shard `index` stands in the epoch's order (the inverse of `order_at`).
#[pyfunction]
fn position_of(n: usize, seed: u64, shuffle: bool, index: usize) -> usize {
    crate::rng::position_of(n, seed, shuffle, index)
}

/// Decode and resize one encoded image exactly as the stream does; returns `[S, S, 3]` uint8.
/// Raises ValueError naming the reason (e.g. `skipped_corrupt_image`) for an image it would skip.
#[pyfunction]
#[pyo3(signature = (data, image_size=224, resize="squash", seed=0, key="", max_pixels=DEFAULT_MAX_PIXELS, scaled_decode=true, crop_decode=true, fast_decode=false, interpolation="bilinear"))]
#[allow(clippy::too_many_arguments)] // the public signature: positional image_size and resize, as tests and users call it
fn decode_resize<'py>(
    py: Python<'py>,
    data: Vec<u8>,
    image_size: u32,
    resize: &str,
    seed: u64,
    key: &str,
    max_pixels: u64,
    scaled_decode: bool,
    crop_decode: bool,
    fast_decode: bool,
    interpolation: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let mut flat = Map::new();
    flat.insert("interpolation".into(), Value::from(interpolation));
    flat.insert("image_size".into(), Value::from(image_size));
    flat.insert("resize".into(), Value::from(resize));
    flat.insert("max_pixels".into(), Value::from(max_pixels));
    flat.insert("scaled_decode".into(), Value::from(scaled_decode));
    flat.insert("crop_decode".into(), Value::from(crop_decode));
    flat.insert("fast_decode".into(), Value::from(fast_decode));
    let settings = Settings::from_flat(flat).map_err(|e| config_error(py, &e))?;
    let mut cfg = Job::new(Vec::new(), settings);
    cfg.plan.sample_seed = seed;
    let sample = Sample::of_image(key, data);
    let tile = py.detach(|| prepare_image(&sample, &cfg, None)).map_err(skipped)?;
    let s = image_size as usize;
    Ok(PyArray1::from_vec(py, tile).reshape([s, s, 3])?.into_any())
}

/// Decode one encoded image whole, at full size, as the stream's decoders do (libjpeg-turbo,
/// else the `image` crate): `[H, W, 3]` uint8. Raises ValueError naming the reason for an image
/// the stream would skip. (The GPU path's last resort for a JPEG nvJPEG refuses.)
#[pyfunction]
#[pyo3(signature = (data, max_pixels=DEFAULT_MAX_PIXELS))]
fn decode_image<'py>(py: Python<'py>, data: Vec<u8>, max_pixels: u64) -> PyResult<Bound<'py, PyAny>> {
    let img = py.detach(|| crate::decode::decode_rgb(&data, max_pixels)).map_err(skipped)?;
    let shape = [img.height as usize, img.width as usize, 3];
    Ok(PyArray1::from_vec(py, img.data).reshape(shape)?.into_any())
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
    m.add_class::<PyOptions>()?;
    m.add_class::<PyTarSamples>()?;
    m.add("ConfigError", m.py().get_type::<ConfigError>())?;
    m.add_function(wrap_pyfunction!(count_selected, m)?)?;
    m.add_function(wrap_pyfunction!(shuffled_order, m)?)?;
    m.add_class::<PyBlocklist>()?;
    m.add("DEFAULT_NEAR_RADIUS", DEFAULT_NEAR_RADIUS)?;
    m.add_function(wrap_pyfunction!(expand_shards, m)?)?;
    m.add_function(wrap_pyfunction!(decode_resize, m)?)?;
    m.add_function(wrap_pyfunction!(decode_image, m)?)?;
    m.add_function(wrap_pyfunction!(consumed_bitmaps, m)?)?;
    m.add_function(wrap_pyfunction!(count_samples, m)?)?;
    m.add_function(wrap_pyfunction!(build_index, m)?)?;
    m.add_function(wrap_pyfunction!(cache_dir_problem, m)?)?;
    m.add_function(wrap_pyfunction!(read_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(write_object, m)?)?;
    m.add_function(wrap_pyfunction!(order_at, m)?)?;
    m.add_function(wrap_pyfunction!(slot_sums, m)?)?;
    m.add_function(wrap_pyfunction!(shard_names, m)?)?;
    m.add_function(wrap_pyfunction!(position_of, m)?)?;
    m.add_class::<PyShardNames>()?;
    m.add_function(wrap_pyfunction!(index_location, m)?)?;
    m.add_function(wrap_pyfunction!(shard_identity, m)?)?;
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
    m.add("DEFAULT_LANG_FIELDS", crate::config::DEFAULT_LANG_FIELDS.to_vec())?;
    let norms = PyDict::new(m.py());
    for (name, mean, std) in crate::config::NORMALIZATIONS {
        norms.set_item(name, (mean.to_vec(), std.to_vec()))?;
    }
    m.add("NORMALIZATIONS", norms)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
