//! Input documents: plain-text files (one document each), JSONL (one document per line, text
//! in a named field) and Parquet (one document per row of a string column). Documents stream
//! one at a time through a callback, in a fixed order: inputs as given, folders expanded in
//! sorted path order, rows in file order. Empty documents are skipped.

use super::PrepareError;
use parquet::column::reader::ColumnReader;
use parquet::data_type::ByteArray;
use parquet::file::reader::{FileReader, SerializedFileReader};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// From the extension: `.parquet`, `.jsonl`/`.ndjson`/`.json`, anything else is text.
    Auto,
    Text,
    Jsonl,
    Parquet,
}

/// Rows read from Parquet per call: bounds memory to this many documents.
const PARQUET_BATCH_ROWS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    pub path: PathBuf,
    /// Never `Auto`.
    pub format: Format,
}

/// Expands folders (recursively, sorted) and resolves `auto` per file. In `auto` mode a
/// folder contributes only files with a known extension (`.txt`, `.jsonl`, `.ndjson`,
/// `.json`, `.parquet`); hidden files are skipped.
pub fn resolve(inputs: &[PathBuf], format: Format) -> Result<Vec<InputFile>, PrepareError> {
    let mut files = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|source| PrepareError::Read {
            path: input.clone(),
            source,
        })?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(input, &mut found)?;
            found.sort();
            for path in found {
                let resolved = resolve_format(&path, format);
                if format != Format::Auto || has_known_extension(&path) {
                    files.push(InputFile {
                        path,
                        format: resolved,
                    });
                }
            }
        } else {
            files.push(InputFile {
                format: resolve_format(input, format),
                path: input.clone(),
            });
        }
    }
    Ok(files)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> Result<(), PrepareError> {
    let read_error = |source| PrepareError::Read {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        if path.is_dir() {
            walk(&path, found)?;
        } else {
            found.push(path);
        }
    }
    Ok(())
}

fn extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default()
}

fn has_known_extension(path: &Path) -> bool {
    matches!(
        extension(path).as_str(),
        "txt" | "jsonl" | "ndjson" | "json" | "parquet"
    )
}

fn resolve_format(path: &Path, format: Format) -> Format {
    match format {
        Format::Auto => match extension(path).as_str() {
            "parquet" => Format::Parquet,
            "jsonl" | "ndjson" | "json" => Format::Jsonl,
            _ => Format::Text,
        },
        other => other,
    }
}

/// Calls `each` with every non-empty document of `file`, in order.
pub fn for_each_document(
    file: &InputFile,
    field: &str,
    each: &mut dyn FnMut(String) -> Result<(), PrepareError>,
) -> Result<(), PrepareError> {
    match file.format {
        Format::Text | Format::Auto => read_text(&file.path, each),
        Format::Jsonl => read_jsonl(&file.path, field, each),
        Format::Parquet => read_parquet(&file.path, field, each),
    }
}

fn read_error(path: &Path) -> impl Fn(std::io::Error) -> PrepareError + '_ {
    move |source| PrepareError::Read {
        path: path.to_path_buf(),
        source,
    }
}

fn utf8(bytes: Vec<u8>, path: &Path, place: &str) -> Result<String, PrepareError> {
    String::from_utf8(bytes).map_err(|e| PrepareError::InvalidUtf8 {
        path: path.to_path_buf(),
        place: format!("{place}, byte {}", e.utf8_error().valid_up_to()),
    })
}

fn read_text(
    path: &Path,
    each: &mut dyn FnMut(String) -> Result<(), PrepareError>,
) -> Result<(), PrepareError> {
    let bytes = std::fs::read(path).map_err(read_error(path))?;
    let text = utf8(bytes, path, "document")?;
    if text.is_empty() {
        return Ok(());
    }
    each(text)
}

fn read_jsonl(
    path: &Path,
    field: &str,
    each: &mut dyn FnMut(String) -> Result<(), PrepareError>,
) -> Result<(), PrepareError> {
    let file = File::open(path).map_err(read_error(path))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        if reader
            .read_until(b'\n', &mut line)
            .map_err(read_error(path))?
            == 0
        {
            return Ok(());
        }
        let text = utf8(std::mem::take(&mut line), path, &format!("line {number}"))?;
        if text.trim().is_empty() {
            continue;
        }
        let bad_line = |reason: String| PrepareError::BadRecord {
            path: path.to_path_buf(),
            place: format!("line {number}"),
            reason,
        };
        let mut value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad_line(format!("not JSON: {e}")))?;
        match value.get_mut(field).map(serde_json::Value::take) {
            Some(serde_json::Value::String(doc)) if !doc.is_empty() => each(doc)?,
            Some(serde_json::Value::String(_)) | Some(serde_json::Value::Null) => {}
            Some(other) => {
                return Err(bad_line(format!(
                    "field `{field}` is {}, not a string",
                    json_kind(&other)
                )))
            }
            None => return Err(bad_line(format!("no field `{field}`"))),
        }
    }
    unreachable!("the line counter never ends")
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn read_parquet(
    path: &Path,
    field: &str,
    each: &mut dyn FnMut(String) -> Result<(), PrepareError>,
) -> Result<(), PrepareError> {
    let file = File::open(path).map_err(read_error(path))?;
    let parquet_error = |e: parquet::errors::ParquetError| PrepareError::BadRecord {
        path: path.to_path_buf(),
        place: "Parquet file".into(),
        reason: e.to_string(),
    };
    let reader = SerializedFileReader::new(file).map_err(parquet_error)?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let column = schema
        .columns()
        .iter()
        .position(|c| c.path().parts() == [field.to_string()])
        .ok_or_else(|| PrepareError::MissingColumn {
            path: path.to_path_buf(),
            field: field.into(),
            found: schema
                .columns()
                .iter()
                .map(|c| c.path().string())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    for group in 0..reader.num_row_groups() {
        let row_group = reader.get_row_group(group).map_err(parquet_error)?;
        let ColumnReader::ByteArrayColumnReader(mut column_reader) =
            row_group.get_column_reader(column).map_err(parquet_error)?
        else {
            return Err(PrepareError::BadRecord {
                path: path.to_path_buf(),
                place: format!("column `{field}`"),
                reason: "not a string (BYTE_ARRAY) column".into(),
            });
        };
        let mut values: Vec<ByteArray> = Vec::with_capacity(PARQUET_BATCH_ROWS);
        let mut levels = Vec::with_capacity(PARQUET_BATCH_ROWS);
        loop {
            values.clear();
            levels.clear();
            // Definition levels are requested so null rows are counted, not misread.
            let (records, _, _) = column_reader
                .read_records(PARQUET_BATCH_ROWS, Some(&mut levels), None, &mut values)
                .map_err(parquet_error)?;
            if records == 0 {
                break;
            }
            for value in values.drain(..) {
                let doc = utf8(
                    value.data().to_vec(),
                    path,
                    &format!("row group {group}, column `{field}`"),
                )?;
                if !doc.is_empty() {
                    each(doc)?;
                }
            }
        }
    }
    Ok(())
}
