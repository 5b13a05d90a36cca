//! Named tensors in the [safetensors] format.
//!
//! Kiln computes in f32 (and indexes in i32), so that is what these
//! functions hold in memory. Files written elsewhere load too: F16, BF16 and
//! F64 tensors are converted to f32, and integer tensors (I8…I64, U8…U64) to
//! i32 when every value fits. The file itself is parsed and validated by the
//! official `safetensors` crate; this module adds atomic writes, dtype
//! conversion, and error messages that name the file, the tensor and the fix.
//!
//! [safetensors]: https://huggingface.co/docs/safetensors

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use half::{bf16, f16};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use super::atomic::write_atomic;

/// The elements of a tensor, in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    I32(Vec<i32>),
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// "F32" or "I32", as safetensors spells it.
    pub fn dtype_name(&self) -> &'static str {
        match self {
            TensorData::F32(_) => "F32",
            TensorData::I32(_) => "I32",
        }
    }

    fn dtype(&self) -> Dtype {
        match self {
            TensorData::F32(_) => Dtype::F32,
            TensorData::I32(_) => Dtype::I32,
        }
    }

    fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// A tensor with its name (e.g. `"h.0.attn.w_qkv"`) and shape.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl NamedTensor {
    pub fn f32(name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) -> Self {
        NamedTensor {
            name: name.into(),
            shape,
            data: TensorData::F32(data),
        }
    }

    pub fn i32(name: impl Into<String>, shape: Vec<usize>, data: Vec<i32>) -> Self {
        NamedTensor {
            name: name.into(),
            shape,
            data: TensorData::I32(data),
        }
    }

    /// Number of elements the shape calls for (1 for a scalar, `[]`).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The f32 data, after checking that the dtype is f32 and the shape is
    /// `expected` — the check a model does when it loads its parameters.
    pub fn f32_with_shape(&self, expected: &[usize]) -> Result<&[f32]> {
        if self.shape != expected {
            bail!(
                "tensor '{}' has shape {:?} but the model expects {:?}: the checkpoint was made with a different model configuration",
                self.name, self.shape, expected
            );
        }
        match &self.data {
            TensorData::F32(v) => Ok(v),
            other => bail!(
                "tensor '{}' holds {} but the model expects F32",
                self.name,
                other.dtype_name()
            ),
        }
    }

    /// The i32 data, after checking the dtype and shape (see [`Self::f32_with_shape`]).
    pub fn i32_with_shape(&self, expected: &[usize]) -> Result<&[i32]> {
        if self.shape != expected {
            bail!(
                "tensor '{}' has shape {:?} but {:?} was expected",
                self.name,
                self.shape,
                expected
            );
        }
        match &self.data {
            TensorData::I32(v) => Ok(v),
            other => bail!(
                "tensor '{}' holds {} but I32 was expected",
                self.name,
                other.dtype_name()
            ),
        }
    }
}

/// Writes `tensors` and string `metadata` to `path` as a safetensors file,
/// atomically (see [`write_atomic`]). The safetensors crate lays tensors out
/// in the order the format prescribes (by alignment, then by name), so the
/// order of `tensors` does not matter. Names must be unique.
pub fn save_safetensors(
    path: &Path,
    tensors: &[NamedTensor],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let buf = safetensors_bytes(tensors, metadata)
        .with_context(|| format!("cannot save checkpoint {}", path.display()))?;
    write_atomic(path, &buf)
}

/// The bytes of a safetensors file holding `tensors` and `metadata` (what
/// [`save_safetensors`] writes).
pub fn safetensors_bytes(
    tensors: &[NamedTensor],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let ctx = || "serialising safetensors".to_string();
    let mut seen = BTreeSet::new();
    for t in tensors {
        if t.name == "__metadata__" {
            return Err(anyhow!(
                "'__metadata__' is reserved by the safetensors format; rename the tensor"
            ))
            .with_context(ctx);
        }
        if !seen.insert(t.name.as_str()) {
            return Err(anyhow!(
                "two tensors are named '{}'; tensor names must be unique",
                t.name
            ))
            .with_context(ctx);
        }
        if t.numel() != t.data.len() {
            return Err(anyhow!(
                "tensor '{}' has shape {:?} ({} elements) but {} values",
                t.name,
                t.shape,
                t.numel(),
                t.data.len()
            ))
            .with_context(ctx);
        }
    }
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|t| t.data.to_le_bytes()).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            TensorView::new(t.data.dtype(), t.shape.clone(), b)
                .map(|v| (t.name.as_str(), v))
                .map_err(|e| anyhow!("tensor '{}': {e}", t.name))
        })
        .collect::<Result<Vec<_>>>()
        .with_context(ctx)?;
    // The map type is the crate's own (std's or hashbrown's, by feature):
    // let `collect` pick it.
    let info = (!metadata.is_empty()).then(|| {
        metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    });
    safetensors::serialize(views, info)
        .map_err(|e| anyhow!("{e}"))
        .and_then(canonical_header)
        .with_context(ctx)
}

/// Rewrites the JSON header of a serialised file in a fixed order (metadata
/// keys sorted, tensors by offset) so that the same tensors always give the
/// same bytes; the crate writes its metadata map in hash order.
fn canonical_header(buf: Vec<u8>) -> Result<Vec<u8>> {
    let n = u64::from_le_bytes(buf[..8].try_into()?) as usize;
    let header: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&buf[8..8 + n])?;
    let mut tensors: Vec<(&String, &serde_json::Value)> = header
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .collect();
    let start = |v: &serde_json::Value| v["data_offsets"][0].as_u64().unwrap_or(0);
    tensors.sort_by(|a, b| start(a.1).cmp(&start(b.1)).then(a.0.cmp(b.0)));
    let mut json = String::from("{");
    if let Some(meta) = header.get("__metadata__") {
        let sorted: BTreeMap<String, String> = serde_json::from_value(meta.clone())?;
        json += &format!("\"__metadata__\":{},", serde_json::to_string(&sorted)?);
    }
    for (name, info) in tensors {
        let info = format!(
            "{{\"dtype\":{},\"shape\":{},\"data_offsets\":{}}}",
            info["dtype"], info["shape"], info["data_offsets"]
        );
        json += &format!("{}:{info},", serde_json::to_string(name)?);
    }
    json.pop(); // the last comma (or the "{" of an empty file)
    if json.is_empty() {
        json.push('{');
    }
    json.push('}');
    let mut head = json.into_bytes();
    head.resize(head.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + head.len() + buf.len() - 8 - n);
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&buf[8 + n..]);
    Ok(out)
}

/// Reads every tensor of a safetensors file, sorted by name, with its
/// metadata. Floating-point tensors come back as F32 and integer tensors as
/// I32 (see the module docs); other dtypes are an error naming the tensor.
pub fn load_safetensors(path: &Path) -> Result<(Vec<NamedTensor>, BTreeMap<String, String>)> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{}: no such file", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    parse_safetensors(&bytes).with_context(|| format!("cannot load {}", path.display()))
}

/// Indexes tensors by name; an error if two share a name.
pub fn tensors_by_name(tensors: Vec<NamedTensor>) -> Result<BTreeMap<String, NamedTensor>> {
    let mut map = BTreeMap::new();
    for t in tensors {
        if map.contains_key(&t.name) {
            bail!("two tensors are named '{}'", t.name);
        }
        map.insert(t.name.clone(), t);
    }
    Ok(map)
}

const CORRUPT: &str = "the file is truncated or corrupt; re-save it or use an earlier checkpoint";

/// Parses a whole safetensors file held in memory.
pub fn parse_safetensors(bytes: &[u8]) -> Result<(Vec<NamedTensor>, BTreeMap<String, String>)> {
    if bytes.len() < 8 {
        bail!(
            "the file has only {} bytes, less than the 8-byte header length every safetensors file starts with: {CORRUPT}",
            bytes.len()
        );
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let rest = (bytes.len() - 8) as u64;
    if n > rest {
        bail!(
            "the header length field says {n} bytes but only {rest} bytes follow it: {CORRUPT} (or not a safetensors file)"
        );
    }
    let st = SafeTensors::deserialize(bytes).map_err(|e| explain(e, bytes))?;

    let mut out = Vec::with_capacity(st.len());
    for (name, view) in st.tensors() {
        let data = convert(&name, &view)?;
        out.push(NamedTensor {
            name,
            shape: view.shape().to_vec(),
            data,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));

    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| explain(e, bytes))?;
    let metadata = meta
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    Ok((out, metadata))
}

/// Turns a crate error into a message a user can act on, naming the tensor
/// at fault where the header lets us find it.
fn explain(e: SafeTensorError, bytes: &[u8]) -> anyhow::Error {
    use SafeTensorError as E;
    let what = match &e {
        E::InvalidHeader(u) => format!("the header is not valid UTF-8 ({u})"),
        E::InvalidHeaderDeserialization(j) => {
            format!("the header is not valid safetensors JSON ({j})")
        }
        E::HeaderTooLarge => "the header length field is implausibly large".to_string(),
        E::HeaderTooSmall | E::InvalidHeaderLength => {
            "the header length field does not fit the file".to_string()
        }
        E::InvalidOffset(_)
        | E::TensorInvalidInfo
        | E::MetadataIncompleteBuffer
        | E::ValidationOverflow
        | E::InvalidTensorView(..) => {
            diagnose_offsets(bytes).unwrap_or_else(|| format!("the header is inconsistent ({e})"))
        }
        other => format!("{other}"),
    };
    anyhow!("{what}: {CORRUPT}")
}

/// Re-reads the header ourselves to say which tensor's `data_offsets`,
/// shape or dtype disagree with each other or with the file size.
fn diagnose_offsets(bytes: &[u8]) -> Option<String> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    let data_len = bytes.len() - 8 - n;
    let mut entries = Vec::new();
    for (name, info) in &header {
        if name == "__metadata__" {
            continue;
        }
        let offs = info.get("data_offsets")?.as_array()?;
        let (s, e) = (offs.first()?.as_u64()?, offs.get(1)?.as_u64()?);
        let shape: Vec<u64> = info
            .get("shape")?
            .as_array()?
            .iter()
            .map(|d| d.as_u64())
            .collect::<Option<_>>()?;
        let dtype: Dtype = serde_json::from_value(info.get("dtype")?.clone()).ok()?;
        entries.push((s, e, name.as_str(), shape, dtype));
    }
    entries.sort_by_key(|&(s, e, ..)| (s, e));
    let mut expected_start = 0u64;
    for (s, e, name, shape, dtype) in &entries {
        let (s, e) = (*s, *e);
        if e < s {
            return Some(format!(
                "tensor '{name}' has data_offsets [{s}, {e}] that end before they start"
            ));
        }
        if e > data_len as u64 {
            return Some(format!(
                "tensor '{name}' has data_offsets [{s}, {e}] past the end of the data ({data_len} bytes)"
            ));
        }
        let bytes_needed = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .and_then(|numel| numel.checked_mul(dtype.bitsize() as u64))
            .map(|bits| bits.div_ceil(8));
        match bytes_needed {
            None => {
                return Some(format!(
                    "tensor '{name}' has an impossibly large shape {shape:?}"
                ))
            }
            Some(b) if b != e - s => {
                return Some(format!(
                    "tensor '{name}' ({dtype}, shape {shape:?}) needs {b} bytes but its data_offsets [{s}, {e}] span {}",
                    e - s
                ))
            }
            _ => {}
        }
        if s != expected_start {
            return Some(format!(
                "tensor '{name}' starts at byte {s} of the data but the previous tensor ends at {expected_start} (gap or overlap)"
            ));
        }
        expected_start = e;
    }
    if expected_start != data_len as u64 {
        return Some(format!(
            "the tensors cover {expected_start} bytes of data but the file holds {data_len} after the header"
        ));
    }
    None
}

/// Converts one tensor's little-endian bytes to Kiln's f32 / i32.
fn convert(name: &str, view: &TensorView<'_>) -> Result<TensorData> {
    let b = view.data();
    fn chunks<const N: usize>(b: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        b.chunks_exact(N).map(|c| c.try_into().unwrap())
    }
    let ints = |vals: Vec<i128>| -> Result<TensorData> {
        vals.iter()
            .map(|&v| {
                i32::try_from(v).map_err(|_| {
                    anyhow!(
                        "tensor '{name}' ({}) holds {v}, which does not fit in i32 (Kiln loads integer tensors as i32)",
                        view.dtype()
                    )
                })
            })
            .collect::<Result<Vec<i32>>>()
            .map(TensorData::I32)
    };
    Ok(match view.dtype() {
        Dtype::F32 => TensorData::F32(chunks::<4>(b).map(f32::from_le_bytes).collect()),
        Dtype::F16 => TensorData::F32(
            chunks::<2>(b)
                .map(|c| f16::from_le_bytes(c).to_f32())
                .collect(),
        ),
        Dtype::BF16 => TensorData::F32(
            chunks::<2>(b)
                .map(|c| bf16::from_le_bytes(c).to_f32())
                .collect(),
        ),
        Dtype::F64 => {
            let mut out = Vec::with_capacity(b.len() / 8);
            for c in chunks::<8>(b) {
                let v = f64::from_le_bytes(c);
                let x = v as f32;
                if v.is_finite() && !x.is_finite() {
                    bail!("tensor '{name}' (F64) holds {v}, which is out of f32 range (Kiln loads float tensors as f32)");
                }
                out.push(x);
            }
            TensorData::F32(out)
        }
        Dtype::I32 => TensorData::I32(chunks::<4>(b).map(i32::from_le_bytes).collect()),
        Dtype::I64 => ints(chunks::<8>(b).map(|c| i64::from_le_bytes(c) as i128).collect())?,
        Dtype::U32 => ints(chunks::<4>(b).map(|c| u32::from_le_bytes(c) as i128).collect())?,
        Dtype::U64 => ints(chunks::<8>(b).map(|c| u64::from_le_bytes(c) as i128).collect())?,
        Dtype::I16 => TensorData::I32(chunks::<2>(b).map(|c| i16::from_le_bytes(c) as i32).collect()),
        Dtype::U16 => TensorData::I32(chunks::<2>(b).map(|c| u16::from_le_bytes(c) as i32).collect()),
        Dtype::I8 => TensorData::I32(b.iter().map(|&x| x as i8 as i32).collect()),
        Dtype::U8 => TensorData::I32(b.iter().map(|&x| x as i32).collect()),
        other => bail!(
            "tensor '{name}' has dtype {other}, which Kiln cannot load: Kiln loads F32/F16/BF16/F64 as f32 and integer tensors as i32; convert it to one of those before saving"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-ckpt-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn sample() -> Vec<NamedTensor> {
        vec![
            NamedTensor::f32(
                "wte",
                vec![3, 2],
                vec![0.5, -1.25, 3.0, f32::MIN_POSITIVE, 1e30, -0.0],
            ),
            NamedTensor::i32("step", vec![], vec![42]),
            NamedTensor::f32("b", vec![0], vec![]),
            NamedTensor::i32("tokens", vec![2, 2], vec![i32::MIN, -1, 0, i32::MAX]),
        ]
    }

    fn err_of<T>(r: Result<T>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn round_trip() {
        let dir = scratch("rt");
        let p = dir.join("model.safetensors");
        let meta: BTreeMap<String, String> = [
            ("step".to_string(), "42".to_string()),
            ("arch".into(), "gpt".into()),
        ]
        .into();
        save_safetensors(&p, &sample(), &meta).unwrap();
        let (loaded, m) = load_safetensors(&p).unwrap();
        assert_eq!(m, meta);
        let mut want = sample();
        want.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(loaded.len(), want.len());
        for (a, b) in loaded.iter().zip(&want) {
            assert_eq!(a.name, b.name);
            assert_eq!(a.shape, b.shape);
            match (&a.data, &b.data) {
                // bitwise, so -0.0 and subnormals are checked too
                (TensorData::F32(x), TensorData::F32(y)) => assert_eq!(
                    x.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                ),
                _ => assert_eq!(a.data, b.data),
            }
        }
        let by_name = tensors_by_name(loaded).unwrap();
        assert_eq!(by_name["wte"].f32_with_shape(&[3, 2]).unwrap()[0], 0.5);
        assert!(err_of(by_name["wte"].f32_with_shape(&[2, 3])).contains("[3, 2]"));
        assert!(err_of(by_name["step"].f32_with_shape(&[])).contains("I32"));

        // Same input, same bytes: metadata keys are written sorted.
        let bytes = std::fs::read(&p).unwrap();
        save_safetensors(&p, &sample(), &meta).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), bytes);
        let head = String::from_utf8_lossy(&bytes[8..]);
        assert!(
            head.starts_with(r#"{"__metadata__":{"arch":"gpt","step":"42"},"b":{"#),
            "{head}"
        );

        // No metadata at all is fine too, and so is no tensor.
        save_safetensors(&p, &[], &BTreeMap::new()).unwrap();
        assert!(load_safetensors(&p).unwrap().0.is_empty());
        save_safetensors(&p, &sample()[..1], &BTreeMap::new()).unwrap();
        let (loaded, m) = load_safetensors(&p).unwrap();
        assert!(m.is_empty());
        assert_eq!(loaded.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_input_to_save() {
        let dir = scratch("badsave");
        let p = dir.join("x.safetensors");
        let m = BTreeMap::new();
        let e = err_of(save_safetensors(
            &p,
            &[NamedTensor::f32("w", vec![2, 2], vec![1.0; 3])],
            &m,
        ));
        assert!(
            e.contains("x.safetensors") && e.contains("'w'") && e.contains("3 values"),
            "{e}"
        );
        let dup = [
            NamedTensor::f32("w", vec![1], vec![1.0]),
            NamedTensor::i32("w", vec![1], vec![1]),
        ];
        assert!(err_of(save_safetensors(&p, &dup, &m)).contains("unique"));
        assert!(!p.exists());
        assert!(tensors_by_name(dup.to_vec()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_file() {
        let e = err_of(load_safetensors(Path::new(
            "/nonexistent/kiln/ckpt.safetensors",
        )));
        assert!(
            e.contains("/nonexistent/kiln/ckpt.safetensors: no such file"),
            "{e}"
        );
    }

    /// Builds a raw file from a header string and data bytes.
    fn raw(header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn corrupt_files_are_explained() {
        let dir = scratch("corrupt");
        let good = dir.join("good.safetensors");
        save_safetensors(&good, &sample(), &BTreeMap::new()).unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let check = |name: &str, contents: &[u8], want: &[&str]| {
            let p = dir.join(name);
            std::fs::write(&p, contents).unwrap();
            let e = err_of(load_safetensors(&p));
            assert!(e.contains(name), "{e}");
            for w in want {
                assert!(e.contains(w), "{name}: wanted {w:?} in: {e}");
            }
        };
        check(
            "tiny.safetensors",
            &bytes[..5],
            &["only 5 bytes", "truncated"],
        );
        // Cut inside the header: the header length now points past the end.
        check(
            "cut-header.safetensors",
            &bytes[..8 + n / 2],
            &["header length field says", "truncated"],
        );
        // Cut inside the data: offsets run past the end.
        check(
            "cut-data.safetensors",
            &bytes[..bytes.len() - 4],
            &["past the end of the data", "truncated"],
        );
        // Trailing junk.
        let mut long = bytes.clone();
        long.extend_from_slice(&[0; 4]);
        check("long.safetensors", &long, &["cover", "after the header"]);
        // Garbage JSON.
        let mut bad = bytes.clone();
        bad[8] = b'[';
        check("json.safetensors", &bad, &["not valid safetensors JSON"]);
        // A huge header length.
        let mut huge = bytes.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        check("huge.safetensors", &huge, &["header length field says"]);
        // Offsets that disagree with the shape.
        check(
            "shape.safetensors",
            &raw(
                r#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}"#,
                &[0; 12],
            ),
            &["tensor 'w'", "needs 16 bytes", "span 12"],
        );
        // Offsets out of range.
        check(
            "range.safetensors",
            &raw(
                r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"v":{"dtype":"F32","shape":[2],"data_offsets":[100,108]}}"#,
                &[0; 16],
            ),
            &["tensor 'v'", "past the end"],
        );
        // An overlap.
        check(
            "overlap.safetensors",
            &raw(
                r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"v":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                &[0; 12],
            ),
            &["tensor 'v'", "overlap"],
        );
        // A dtype Kiln does not load.
        check(
            "dtype.safetensors",
            &raw(
                r#"{"flags":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}}"#,
                &[0; 2],
            ),
            &["tensor 'flags'", "BOOL", "f32"],
        );
        // An i64 that does not fit in i32.
        let mut big = Vec::new();
        big.extend_from_slice(&7i64.to_le_bytes());
        big.extend_from_slice(&(1i64 << 40).to_le_bytes());
        check(
            "i64.safetensors",
            &raw(
                r#"{"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#,
                &big,
            ),
            &["tensor 'ids'", "1099511627776", "i32"],
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn converts_other_dtypes() {
        let h16: Vec<u8> = [1.5f32, -2.0, 65504.0]
            .iter()
            .flat_map(|&x| f16::from_f32(x).to_le_bytes())
            .collect();
        let b16: Vec<u8> = [1.5f32, -2.0, 3.0e38]
            .iter()
            .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
            .collect();
        let i64s: Vec<u8> = [-5i64, 0, i32::MAX as i64]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let mut data = h16.clone();
        data.extend(&b16);
        data.extend(&i64s);
        data.extend([200u8, 1, 2]);
        let file = raw(
            r#"{"h":{"dtype":"F16","shape":[3],"data_offsets":[0,6]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[6,12]},"i":{"dtype":"I64","shape":[3],"data_offsets":[12,36]},"u":{"dtype":"U8","shape":[3],"data_offsets":[36,39]}}"#,
            &data,
        );
        let (t, _) = parse_safetensors(&file).unwrap();
        let m = tensors_by_name(t).unwrap();
        assert_eq!(m["h"].data, TensorData::F32(vec![1.5, -2.0, 65504.0]));
        assert_eq!(
            m["b"].data,
            TensorData::F32(vec![1.5, -2.0, bf16::from_f32(3.0e38).to_f32()])
        );
        assert_eq!(m["i"].data, TensorData::I32(vec![-5, 0, i32::MAX]));
        assert_eq!(m["u"].data, TensorData::I32(vec![200, 1, 2]));
    }

    /// A file written by Python's `safetensors.torch.save_file`
    /// (scripts/make_safetensors_fixture.py); its expected values are in the
    /// metadata, also written by the script.
    #[test]
    fn reads_python_fixture() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/safetensors/torch_mixed.safetensors");
        let (tensors, meta) = load_safetensors(&p).unwrap();
        let m = tensors_by_name(tensors).unwrap();
        assert_eq!(meta["writer"], "scripts/make_safetensors_fixture.py");
        for name in ["f32", "f16", "bf16", "i32", "i64"] {
            let t = &m[name];
            let expect: serde_json::Value = serde_json::from_str(&meta[name]).unwrap();
            let shape: Vec<usize> = serde_json::from_value(expect["shape"].clone()).unwrap();
            assert_eq!(t.shape, shape, "{name}");
            let values = expect["values"].as_array().unwrap();
            assert_eq!(values.len(), t.data.len(), "{name}");
            match &t.data {
                // The script records each value as the exact f32 it converts
                // to (f16/bf16 → f32 is exact), so compare bitwise.
                TensorData::F32(v) => {
                    for (a, b) in v.iter().zip(values) {
                        assert_eq!(*a, b.as_f64().unwrap() as f32, "{name}");
                    }
                }
                TensorData::I32(v) => {
                    for (a, b) in v.iter().zip(values) {
                        assert_eq!(*a as i64, b.as_i64().unwrap(), "{name}");
                    }
                }
            }
        }
        assert!(matches!(m["f16"].data, TensorData::F32(_)));
        assert!(matches!(m["i64"].data, TensorData::I32(_)));
    }
}
