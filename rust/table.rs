//! Table shards (Parquet, as img2dataset writes them) → rows, from Arrow record batches.
//!
//! The batches are read by pyarrow (row groups, column projection; see
//! `python/webli_io/parquet.py`) and imported here through the Arrow C data interface
//! (`rust/python.rs`), so the image column's buffer is shared, not copied: each row's image is a
//! view into it ([`ImageBytes::Shared`]), alive as long as the batch is.
//!
//! Columns: the image is the first binary column named `jpg`, `jpeg`, `png`, `webp`, `image`,
//! `img` or `image_bytes` (img2dataset names it after its encode format); the caption `caption`,
//! `txt` or `text`; the key `key` or `__key__`. Every column but the image (caption and key
//! included, as in img2dataset's `json`) goes into the sample's metadata, so `min_score={"clip_score": …}`,
//! `drop_if` and the language fields work as with a tar shard's `json`.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Decimal128Type, Decimal256Type, Decimal32Type, Decimal64Type, Float16Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, StructArray};
use arrow_schema::DataType;
use serde_json::{Map, Number, Value};

use crate::sample::{ImageBytes, TableRow};

pub const IMAGE_COLUMNS: [&str; 7] = ["jpg", "jpeg", "png", "webp", "image", "img", "image_bytes"];
pub const CAPTION_COLUMNS: [&str; 3] = ["caption", "txt", "text"];
pub const KEY_COLUMNS: [&str; 2] = ["key", "__key__"];

fn is_binary(t: &DataType) -> bool {
    matches!(t, DataType::Binary | DataType::LargeBinary | DataType::BinaryView)
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn string_at(col: &dyn Array, i: usize) -> Option<String> {
    if col.is_null(i) {
        return None;
    }
    Some(match col.data_type() {
        DataType::Utf8 => col.as_string::<i32>().value(i).to_string(),
        DataType::LargeUtf8 => col.as_string::<i64>().value(i).to_string(),
        DataType::Utf8View => col.as_string_view().value(i).to_string(),
        _ => return None,
    })
}

/// The metadata value of row `i` of a column: every Arrow type the filters can compare is
/// decoded (integers, floats of 16 to 64 bits, decimals, booleans, strings, dictionary-encoded
/// columns as pandas' and Polars' categoricals write them, lists of these); a null is `null`.
/// Any other type (timestamps, structs, maps, binary) becomes `{"unreadable": "<type>"}`, which
/// no filter can pass: a filter on it fails closed (see `select.rs`), never open.
fn json_at(col: &dyn Array, i: usize) -> Value {
    if col.is_null(i) {
        return Value::Null;
    }
    let num = |f: f64| Number::from_f64(f).map_or(Value::Null, Value::Number);
    let decimal = |text: String| text.parse::<f64>().map_or(Value::Null, num);
    match col.data_type() {
        DataType::Boolean => Value::Bool(col.as_boolean().value(i)),
        DataType::Int8 => Value::from(col.as_primitive::<Int8Type>().value(i)),
        DataType::Int16 => Value::from(col.as_primitive::<Int16Type>().value(i)),
        DataType::Int32 => Value::from(col.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => Value::from(col.as_primitive::<Int64Type>().value(i)),
        DataType::UInt8 => Value::from(col.as_primitive::<UInt8Type>().value(i)),
        DataType::UInt16 => Value::from(col.as_primitive::<UInt16Type>().value(i)),
        DataType::UInt32 => Value::from(col.as_primitive::<UInt32Type>().value(i)),
        DataType::UInt64 => Value::from(col.as_primitive::<UInt64Type>().value(i)),
        DataType::Float16 => num(col.as_primitive::<Float16Type>().value(i).to_f64()),
        DataType::Float32 => num(col.as_primitive::<Float32Type>().value(i) as f64),
        DataType::Float64 => num(col.as_primitive::<Float64Type>().value(i)),
        DataType::Decimal32(..) => decimal(col.as_primitive::<Decimal32Type>().value_as_string(i)),
        DataType::Decimal64(..) => decimal(col.as_primitive::<Decimal64Type>().value_as_string(i)),
        DataType::Decimal128(..) => decimal(col.as_primitive::<Decimal128Type>().value_as_string(i)),
        DataType::Decimal256(..) => decimal(col.as_primitive::<Decimal256Type>().value_as_string(i)),
        DataType::Dictionary(..) => {
            let dict = col.as_any_dictionary();
            let keys = dict.keys();
            let key = match keys.data_type() {
                DataType::Int8 => keys.as_primitive::<Int8Type>().value(i) as i64,
                DataType::Int16 => keys.as_primitive::<Int16Type>().value(i) as i64,
                DataType::Int32 => keys.as_primitive::<Int32Type>().value(i) as i64,
                DataType::Int64 => keys.as_primitive::<Int64Type>().value(i),
                DataType::UInt8 => keys.as_primitive::<UInt8Type>().value(i) as i64,
                DataType::UInt16 => keys.as_primitive::<UInt16Type>().value(i) as i64,
                DataType::UInt32 => keys.as_primitive::<UInt32Type>().value(i) as i64,
                DataType::UInt64 => keys.as_primitive::<UInt64Type>().value(i) as i64,
                _ => -1,
            };
            match usize::try_from(key) {
                Ok(k) if k < dict.values().len() => json_at(dict.values().as_ref(), k),
                _ => unreadable("a dictionary key out of range"),
            }
        }
        DataType::List(_) => list(col.as_list::<i32>().value(i)),
        DataType::LargeList(_) => list(col.as_list::<i64>().value(i)),
        DataType::FixedSizeList(..) => list(col.as_fixed_size_list().value(i)),
        t if is_string(t) => string_at(col, i).map_or(Value::Null, Value::String),
        other => unreadable(&other.to_string()),
    }
}

fn unreadable(what: &str) -> Value {
    let mut m = Map::new();
    m.insert("unreadable".into(), Value::String(what.to_string()));
    Value::Object(m)
}

fn list(items: ArrayRef) -> Value {
    Value::Array((0..items.len()).map(|j| json_at(items.as_ref(), j)).collect())
}

/// The image of row `i`: a view into the column's buffer (binary, large binary), or a copy
/// for a binary view column (its values live in several buffers).
fn image_at(col: &ArrayRef, shared: &Option<Arc<dyn AsRef<[u8]> + Send + Sync>>, i: usize) -> Option<ImageBytes> {
    if col.is_null(i) {
        return None;
    }
    match (col.data_type(), shared) {
        (DataType::Binary, Some(buffer)) => {
            let offsets = col.as_binary::<i32>().value_offsets();
            Some(ImageBytes::Shared { buffer: buffer.clone(), start: offsets[i] as usize, end: offsets[i + 1] as usize })
        }
        (DataType::LargeBinary, Some(buffer)) => {
            let offsets = col.as_binary::<i64>().value_offsets();
            Some(ImageBytes::Shared { buffer: buffer.clone(), start: offsets[i] as usize, end: offsets[i + 1] as usize })
        }
        (DataType::BinaryView, _) => Some(ImageBytes::Owned(col.as_binary_view().value(i).to_vec())),
        _ => None,
    }
}

/// The rows of one record batch (a struct array, as the C data interface exports a batch).
/// `Err` names what is missing when the batch has no image column.
pub fn rows(batch: &StructArray) -> Result<Vec<TableRow>, String> {
    let find = |names: &[&str], ok: fn(&DataType) -> bool| -> Option<ArrayRef> {
        names.iter().find_map(|n| batch.column_by_name(n).filter(|c| ok(c.data_type())).cloned())
    };
    let Some(image) = find(&IMAGE_COLUMNS, is_binary) else {
        return Err(format!("no binary image column (one of {IMAGE_COLUMNS:?}) in this Parquet file"));
    };
    let caption = find(&CAPTION_COLUMNS, is_string);
    let key = find(&KEY_COLUMNS, is_string);
    // The metadata holds every column but the image, the caption and the key included: the
    // same fields as the `json` img2dataset writes beside a tar shard's image.
    let fields = batch.fields();
    let meta_cols: Vec<(&str, &ArrayRef)> = fields
        .iter()
        .zip(batch.columns())
        .filter(|(f, _)| !IMAGE_COLUMNS.contains(&f.name().as_str()))
        .map(|(f, c)| (f.name().as_str(), c))
        .collect();
    // One shared handle on the image values for the whole batch (an Arc clone per row).
    let shared: Option<Arc<dyn AsRef<[u8]> + Send + Sync>> = match image.data_type() {
        DataType::Binary => Some(Arc::new(image.as_binary::<i32>().values().clone())),
        DataType::LargeBinary => Some(Arc::new(image.as_binary::<i64>().values().clone())),
        _ => None,
    };
    Ok((0..batch.len())
        .map(|i| {
            let mut meta = Map::new();
            for (name, col) in &meta_cols {
                meta.insert(name.to_string(), json_at(col.as_ref(), i));
            }
            TableRow {
                key: key.as_ref().and_then(|c| string_at(c, i)),
                image: image_at(&image, &shared, i),
                text: caption.as_ref().and_then(|c| string_at(c, i)),
                meta,
            }
        })
        .collect())
}
