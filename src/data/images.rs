//! Images: Fashion-MNIST (or any MNIST-style data set) from its IDX files,
//! normalisation, seeded per-epoch shuffling, label fractions and class
//! subsets, the image-classification data source (ViT), and single images
//! from PNG files for `kiln classify`.
//!
//! # Files
//!
//! A folder holds the four standard files, each plain or gzipped:
//! `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte` (a `.gz` suffix, or
//! the `train-images.idx3-ubyte` spelling of some downloads, also work).
//! IDX: big-endian u32 magic (2051 images, 2049 labels), u32 count, for
//! images u32 rows and columns, then u8 data. Parsing works on bytes
//! ([`parse_idx_images`], [`parse_idx_labels`]), so the browser can use it
//! too; [`load_idx_dir`] reads the folder.
//!
//! # Pixels
//!
//! `pixel_values` are `(x/255 − mean) / std` with the mean and standard
//! deviation of every pixel of the full published training split
//! ([`Normalization::of`]; Fashion-MNIST: 0.2860 and 0.3530), recorded so
//! that `kiln classify` and Hugging Face's `ViTImageProcessor`
//! ([`Normalization::preprocessor_config`]) apply the same.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::batch::{Batch, InputSpec};
use super::mlm::{derive_seed, IGNORE};
use super::source::DataSource;
use crate::runtime::DType;
use crate::util::Rng;

/// Fashion-MNIST's classes, by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

const IMAGES_MAGIC: u32 = 2051;
const LABELS_MAGIC: u32 = 2049;
const TAG_EPOCH: u64 = 0x4550_4f43; // "EPOC"
const TAG_SUBSET: u64 = 0x5355_4253; // "SUBS"

/// Greyscale images with labels (`images[i·rows·cols ..][..rows·cols]`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImageSet {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub rows: usize,
    pub cols: usize,
    /// Class names by label (after any class filter).
    pub classes: Vec<String>,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels of image `i`, row-major, 0..=255.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.rows * self.cols;
        &self.images[i * n..(i + 1) * n]
    }

    /// Number of images of each label.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.classes.len()];
        for &l in &self.labels {
            c[l as usize] += 1;
        }
        c
    }

    fn pick(&self, keep: &[usize], classes: Vec<String>, relabel: impl Fn(u8) -> u8) -> ImageSet {
        let mut images = Vec::with_capacity(keep.len() * self.rows * self.cols);
        for &i in keep {
            images.extend_from_slice(self.image(i));
        }
        ImageSet {
            images,
            labels: keep.iter().map(|&i| relabel(self.labels[i])).collect(),
            rows: self.rows,
            cols: self.cols,
            classes,
        }
    }

    /// Only the images of `classes` (labels of this set), relabelled by
    /// their position in `classes`: `[5, 6, 7, 8, 9]` gives labels 0–4
    /// with the names of 5–9; `[0, 1, 2, 3, 4]` keeps labels as they are.
    /// Order is preserved.
    pub fn filter_classes(&self, classes: &[u8]) -> Result<ImageSet> {
        if classes.is_empty() {
            bail!("the class subset is empty");
        }
        let mut map = vec![None; self.classes.len()];
        for (new, &c) in classes.iter().enumerate() {
            let slot = map.get_mut(c as usize).ok_or_else(|| {
                anyhow!(
                    "class {c} does not exist: labels are 0–{}",
                    self.classes.len() - 1
                )
            })?;
            if slot.is_some() {
                bail!("class {c} is listed twice in the class subset");
            }
            *slot = Some(new as u8);
        }
        let keep: Vec<usize> = (0..self.len())
            .filter(|&i| map[self.labels[i] as usize].is_some())
            .collect();
        let names = classes
            .iter()
            .map(|&c| self.classes[c as usize].clone())
            .collect();
        Ok(self.pick(&keep, names, |l| map[l as usize].unwrap_or(0)))
    }

    /// A stratified, seeded subset: of each class's `n_c` images, a
    /// uniformly random `max(1, round(fraction · n_c))` (none of an empty
    /// class), kept in their original order. Fashion-MNIST at 0.01: 60 of
    /// each class, 600 in all. The same `(fraction, seed)` always picks the
    /// same images.
    pub fn label_fraction(&self, fraction: f64, seed: u64) -> Result<ImageSet> {
        if !(fraction > 0.0 && fraction <= 1.0) {
            bail!("--label-fraction must be in (0, 1], got {fraction}");
        }
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); self.classes.len()];
        for (i, &l) in self.labels.iter().enumerate() {
            by_class[l as usize].push(i);
        }
        let mut keep = Vec::new();
        for (c, idx) in by_class.iter_mut().enumerate() {
            if idx.is_empty() {
                continue;
            }
            let k = ((fraction * idx.len() as f64).round() as usize).clamp(1, idx.len());
            let mut rng = Rng::new(derive_seed(seed, TAG_SUBSET, c as u64));
            for i in 0..k {
                let j = i + rng.below((idx.len() - i) as u64) as usize;
                idx.swap(i, j);
            }
            keep.extend_from_slice(&idx[..k]);
        }
        keep.sort_unstable();
        Ok(self.pick(&keep, self.classes.clone(), |l| l))
    }
}

/// The published split of an IDX folder.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IdxDataset {
    pub train: ImageSet,
    pub test: ImageSet,
}

/// Mean and standard deviation of pixel values in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: f32,
    pub std: f32,
}

impl Normalization {
    /// Of every pixel of `set` (x / 255), in f64.
    pub fn of(set: &ImageSet) -> Self {
        let n = set.images.len().max(1) as f64;
        let (mut s, mut s2) = (0.0f64, 0.0f64);
        for &p in &set.images {
            let x = p as f64 / 255.0;
            s += x;
            s2 += x * x;
        }
        let mean = s / n;
        let var = (s2 / n - mean * mean).max(0.0);
        Self {
            mean: mean as f32,
            std: (var.sqrt() as f32).max(1e-6),
        }
    }

    /// One pixel 0..=255 → model input.
    pub fn apply(&self, p: u8) -> f32 {
        (p as f32 / 255.0 - self.mean) / self.std
    }

    /// Image `i` of `set` as model input (`rows·cols` values).
    pub fn image(&self, set: &ImageSet, i: usize) -> Vec<f32> {
        set.image(i).iter().map(|&p| self.apply(p)).collect()
    }

    /// Hugging Face's `preprocessor_config.json` for a ViT / CLIP image
    /// processor doing the same: rescale by 1/255, normalise with this mean
    /// and std (one value per channel), images of `size × size`.
    pub fn preprocessor_config(&self, size: usize, channels: usize) -> serde_json::Value {
        serde_json::json!({
            "image_processor_type": "ViTImageProcessor",
            "do_resize": true,
            "size": { "height": size, "width": size },
            "resample": 2,
            "do_rescale": true,
            "rescale_factor": 1.0 / 255.0,
            "do_normalize": true,
            "image_mean": vec![self.mean; channels],
            "image_std": vec![self.std; channels],
        })
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Gunzips `bytes` if they start with the gzip magic; `name` is for errors.
pub fn maybe_gunzip(bytes: Vec<u8>, name: &str) -> Result<Vec<u8>> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out)
            .with_context(|| format!("{name}: corrupt or truncated gzip data"))?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

/// An IDX image file (already gunzipped): `(count, rows, cols, pixels)`.
pub fn parse_idx_images(b: &[u8], name: &str) -> Result<(usize, usize, usize, Vec<u8>)> {
    if b.len() < 16 {
        bail!(
            "{name}: {} bytes is too short for an IDX image header (16 bytes)",
            b.len()
        );
    }
    let magic = be_u32(b, 0);
    if magic != IMAGES_MAGIC {
        bail!(
            "{name}: magic number {magic} (0x{magic:08X}) is not that of IDX images \
             ({IMAGES_MAGIC}, 0x{IMAGES_MAGIC:08X}){}",
            if magic == LABELS_MAGIC {
                ": this is a label file"
            } else {
                ""
            }
        );
    }
    let (n, rows, cols) = (
        be_u32(b, 4) as usize,
        be_u32(b, 8) as usize,
        be_u32(b, 12) as usize,
    );
    let need = n
        .checked_mul(rows)
        .and_then(|x| x.checked_mul(cols))
        .ok_or_else(|| anyhow!("{name}: header sizes {n}×{rows}×{cols} overflow"))?;
    let have = b.len() - 16;
    if have < need {
        bail!(
            "{name}: truncated: the header announces {n} images of {rows}×{cols} ({need} bytes) \
             but the file holds {have}"
        );
    }
    Ok((n, rows, cols, b[16..16 + need].to_vec()))
}

/// An IDX label file (already gunzipped).
pub fn parse_idx_labels(b: &[u8], name: &str) -> Result<Vec<u8>> {
    if b.len() < 8 {
        bail!(
            "{name}: {} bytes is too short for an IDX label header (8 bytes)",
            b.len()
        );
    }
    let magic = be_u32(b, 0);
    if magic != LABELS_MAGIC {
        bail!(
            "{name}: magic number {magic} (0x{magic:08X}) is not that of IDX labels \
             ({LABELS_MAGIC}, 0x{LABELS_MAGIC:08X}){}",
            if magic == IMAGES_MAGIC {
                ": this is an image file"
            } else {
                ""
            }
        );
    }
    let n = be_u32(b, 4) as usize;
    let have = b.len() - 8;
    if have < n {
        bail!("{name}: truncated: the header announces {n} labels but the file holds {have}");
    }
    Ok(b[8..8 + n].to_vec())
}

/// Images and labels from the bytes of an image file and a label file
/// (each plain or gzipped), with class names by label.
pub fn image_set_from_bytes(
    images: Vec<u8>,
    images_name: &str,
    labels: Vec<u8>,
    labels_name: &str,
    classes: &[&str],
) -> Result<ImageSet> {
    let (n, rows, cols, pixels) =
        parse_idx_images(&maybe_gunzip(images, images_name)?, images_name)?;
    let labels = parse_idx_labels(&maybe_gunzip(labels, labels_name)?, labels_name)?;
    if labels.len() != n {
        bail!(
            "{images_name} holds {n} images but {labels_name} holds {} labels",
            labels.len()
        );
    }
    if let Some((i, &l)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= classes.len())
    {
        bail!(
            "{labels_name}: label {l} (item {i}) is not one of the {} classes",
            classes.len()
        );
    }
    Ok(ImageSet {
        images: pixels,
        labels,
        rows,
        cols,
        classes: classes.iter().map(|s| s.to_string()).collect(),
    })
}

/// The standard names of the four files, in the order train images, train
/// labels, test images, test labels.
pub const IDX_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// The file of standard name `base` in `dir`: plain, `.gz`, or with a dot
/// before `idx` (`train-images.idx3-ubyte`), each possibly gzipped.
fn find_idx(dir: &Path, base: &str) -> Result<std::path::PathBuf> {
    let dotted = base.replacen("-idx", ".idx", 1);
    for name in [base, &dotted] {
        for ext in ["", ".gz"] {
            let p = dir.join(format!("{name}{ext}"));
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!(
        "{} has no {base} (nor {base}.gz): an image folder needs the four IDX files {}, each \
         plain or gzipped (Fashion-MNIST: `apt-get install dataset-fashion-mnist` puts them in \
         /usr/share/datasets/fashion-mnist/)",
        dir.display(),
        IDX_FILES.join(", ")
    )
}

/// Reads the four IDX files of `dir` (see the module documentation). Class
/// names are Fashion-MNIST's when there are at most 10 labels.
pub fn load_idx_dir(dir: &Path) -> Result<IdxDataset> {
    if !dir.is_dir() {
        bail!(
            "image folder {} does not exist (or is not a folder)",
            dir.display()
        );
    }
    let paths = IDX_FILES
        .iter()
        .map(|b| find_idx(dir, b))
        .collect::<Result<Vec<_>>>()?;
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let set = |i: usize| -> Result<ImageSet> {
        image_set_from_bytes(
            read(&paths[i])?,
            &paths[i].display().to_string(),
            read(&paths[i + 1])?,
            &paths[i + 1].display().to_string(),
            &FASHION_MNIST_CLASSES,
        )
    };
    let (train, test) = (set(0)?, set(2)?);
    if (train.rows, train.cols) != (test.rows, test.cols) {
        bail!(
            "{}: training images are {}×{} but test images {}×{}",
            dir.display(),
            train.rows,
            train.cols,
            test.rows,
            test.cols
        );
    }
    Ok(IdxDataset { train, test })
}

/// A seeded permutation of `0..n` for epoch `epoch` (Fisher–Yates).
pub fn epoch_permutation(seed: u64, epoch: u64, n: usize) -> Vec<u32> {
    let mut p: Vec<u32> = (0..n as u32).collect();
    Rng::new(derive_seed(seed, TAG_EPOCH, epoch)).shuffle(&mut p);
    p
}

/// Which training examples make up micro-batch `index`: example positions
/// `index·B .. index·B + B` of the endless sequence of epochs, position `p`
/// being example `perm_e[p mod n]` of epoch `e = p div n`. A function of
/// `(seed, index)`; every epoch visits every example once.
pub struct EpochSampler {
    pub seed: u64,
    pub n: usize,
    pub batch: usize,
    cache: Mutex<Option<(u64, Arc<Vec<u32>>)>>,
}

impl EpochSampler {
    pub fn new(seed: u64, n: usize, batch: usize) -> Self {
        Self {
            seed,
            n,
            batch,
            cache: Mutex::new(None),
        }
    }

    fn perm(&self, epoch: u64) -> Arc<Vec<u32>> {
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match &*c {
            Some((e, p)) if *e == epoch => p.clone(),
            _ => {
                let p = Arc::new(epoch_permutation(self.seed, epoch, self.n));
                *c = Some((epoch, p.clone()));
                p
            }
        }
    }

    /// `(epoch, example)` of each row of micro-batch `index`.
    pub fn rows(&self, index: u64) -> Vec<(u64, usize)> {
        let n = self.n as u64;
        (0..self.batch as u64)
            .map(|b| {
                let p = index * self.batch as u64 + b;
                let epoch = p / n;
                (epoch, self.perm(epoch)[(p % n) as usize] as usize)
            })
            .collect()
    }
}

/// Image classification (ViT): `pixel_values` f32 `[B, 1, H, W]`,
/// `labels` i32 `[B]`. Training batches follow an [`EpochSampler`];
/// evaluation batches are the test set in order, the last one padded with
/// zero images labelled −100 (ignored by the loss; skip them when counting
/// accuracy).
pub struct ImageClassification {
    pub train: ImageSet,
    pub test: ImageSet,
    pub norm: Normalization,
    pub batch: usize,
    sampler: EpochSampler,
}

impl ImageClassification {
    /// `norm` is usually [`Normalization::of`] the full published training
    /// split (before any subset), so that subsets and fine-tuning runs see
    /// the same inputs.
    pub fn new(
        train: ImageSet,
        test: ImageSet,
        norm: Normalization,
        seed: u64,
        batch: usize,
    ) -> Result<Self> {
        if batch == 0 {
            bail!("batch must be at least 1");
        }
        if train.is_empty() {
            bail!("the training set is empty");
        }
        if (train.rows, train.cols) != (test.rows, test.cols) && !test.is_empty() {
            bail!("training and test images differ in size");
        }
        let sampler = EpochSampler::new(seed, train.len(), batch);
        Ok(Self {
            train,
            test,
            norm,
            batch,
            sampler,
        })
    }

    pub fn num_classes(&self) -> usize {
        self.train.classes.len()
    }

    /// Micro-batches per pass over the training set (rounded up).
    pub fn batches_per_epoch(&self) -> u64 {
        self.train.len().div_ceil(self.batch) as u64
    }

    /// Number of test batches (the last may be padded).
    pub fn num_test_batches(&self) -> usize {
        self.test.len().div_ceil(self.batch)
    }

    fn batch_of(&self, set: &ImageSet, items: &[Option<usize>]) -> Batch {
        let hw = set.rows * set.cols;
        let mut px = Vec::with_capacity(items.len() * hw);
        let mut labels = Vec::with_capacity(items.len());
        for it in items {
            match *it {
                Some(i) => {
                    px.extend(set.image(i).iter().map(|&p| self.norm.apply(p)));
                    labels.push(set.labels[i] as i32);
                }
                None => {
                    px.extend(std::iter::repeat_n(0.0, hw));
                    labels.push(IGNORE);
                }
            }
        }
        Batch::new()
            .with_f32("pixel_values", &[items.len(), 1, set.rows, set.cols], px)
            .with_i32("labels", &[items.len()], labels)
    }
}

impl DataSource for ImageClassification {
    fn layout(&self) -> Vec<InputSpec> {
        let (b, h, w) = (self.batch, self.train.rows, self.train.cols);
        vec![
            InputSpec::new("labels", &[b], DType::I32),
            InputSpec::new("pixel_values", &[b, 1, h, w], DType::F32),
        ]
    }

    fn train_batch(&self, index: u64) -> Result<Batch> {
        let items: Vec<Option<usize>> = self
            .sampler
            .rows(index)
            .into_iter()
            .map(|(_, i)| Some(i))
            .collect();
        Ok(self.batch_of(&self.train, &items))
    }

    fn val_batches(&self, max: usize) -> Result<Vec<Batch>> {
        Ok((0..self.num_test_batches().min(max))
            .map(|k| {
                let items: Vec<Option<usize>> = (k * self.batch..(k + 1) * self.batch)
                    .map(|i| (i < self.test.len()).then_some(i))
                    .collect();
                self.batch_of(&self.test, &items)
            })
            .collect())
    }

    fn items_per_batch(&self) -> u64 {
        self.batch as u64
    }

    fn describe(&self) -> String {
        format!(
            "{} train / {} test images of {}×{}, {} classes, normalised with mean {:.4} std {:.4}",
            self.train.len(),
            self.test.len(),
            self.train.rows,
            self.train.cols,
            self.num_classes(),
            self.norm.mean,
            self.norm.std
        )
    }
}

// ---------------------------------------------------------------------------
// Single images (kiln classify)

/// A decoded image: `channels` (1 grey or 3 RGB) interleaved values in
/// [0, 1], row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<f32>,
}

impl Image {
    /// The image as model input `[channels, size, size]` (NCHW without N):
    ///
    /// 1. the largest centred square is cropped (the longer side loses
    ///    equal margins; a square image is untouched);
    /// 2. it is resampled to `size × size` by area averaging: each output
    ///    pixel is the mean of the source area it covers, weighted by the
    ///    covered fraction of each source pixel (a box filter; exact for
    ///    integer downscales such as 56 → 28, blocky when upscaling);
    /// 3. channels are converted: RGB → grey by ITU-R 601 luma
    ///    (0.299 R + 0.587 G + 0.114 B, as PIL's `convert("L")`), grey → RGB by
    ///    repetition;
    /// 4. each value is normalised with `norm` ((x − mean) / std).
    ///
    /// Fashion-MNIST shows light garments on a black background; a photo of
    /// a dark object on white needs inverting first ([`Image::invert`]).
    pub fn to_model_input(&self, size: usize, channels: usize, norm: &Normalization) -> Vec<f32> {
        let side = self.width.min(self.height);
        let (x0, y0) = ((self.width - side) / 2, (self.height - side) / 2);
        let scale = side as f64 / size as f64;
        let grey = |x: usize, y: usize| -> f32 {
            let at = ((y0 + y) * self.width + x0 + x) * self.channels;
            match self.channels {
                1 => self.data[at],
                _ => 0.299 * self.data[at] + 0.587 * self.data[at + 1] + 0.114 * self.data[at + 2],
            }
        };
        let chan = |x: usize, y: usize, c: usize| -> f32 {
            if self.channels == 1 {
                self.data[(y0 + y) * self.width + x0 + x]
            } else {
                self.data[((y0 + y) * self.width + x0 + x) * self.channels + c]
            }
        };
        let mut out = vec![0.0f32; channels * size * size];
        // Source coverage of output cell i along one axis: (index, weight).
        let spans: Vec<Vec<(usize, f64)>> = (0..size)
            .map(|i| {
                let (a, b) = (i as f64 * scale, (i + 1) as f64 * scale);
                let mut v = Vec::new();
                let mut s = a.floor() as usize;
                while (s as f64) < b && s < side {
                    let w = (b.min(s as f64 + 1.0) - a.max(s as f64)).max(0.0);
                    if w > 0.0 {
                        v.push((s, w));
                    }
                    s += 1;
                }
                v
            })
            .collect();
        for c in 0..channels {
            for oy in 0..size {
                for ox in 0..size {
                    let (mut acc, mut wsum) = (0.0f64, 0.0f64);
                    for &(sy, wy) in &spans[oy] {
                        for &(sx, wx) in &spans[ox] {
                            let v = if channels == 1 {
                                grey(sx, sy)
                            } else {
                                chan(sx, sy, c)
                            };
                            acc += v as f64 * wx * wy;
                            wsum += wx * wy;
                        }
                    }
                    let v = (acc / wsum.max(1e-12)) as f32;
                    out[(c * size + oy) * size + ox] = (v - norm.mean) / norm.std;
                }
            }
        }
        out
    }

    /// 1 − x for every value.
    pub fn invert(&mut self) {
        for v in &mut self.data {
            *v = 1.0 - *v;
        }
    }
}

/// Decodes a PNG (grey, grey+alpha, RGB, RGBA, palette; 1–16 bits): alpha
/// is composited onto black (Fashion-MNIST's background), 16-bit samples
/// are reduced to 8. `name` is for errors.
#[cfg(not(target_arch = "wasm32"))]
pub fn decode_png(bytes: &[u8], name: &str) -> Result<Image> {
    let mut dec = png::Decoder::new(std::io::Cursor::new(bytes));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec
        .read_info()
        .map_err(|e| anyhow!("{name}: not a readable PNG: {e}"))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| anyhow!("{name}: PNG too large"))?;
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| anyhow!("{name}: corrupt PNG data: {e}"))?;
    let (w, h) = (info.width as usize, info.height as usize);
    if w == 0 || h == 0 {
        bail!("{name}: empty image");
    }
    let src_ch = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => bail!("{name}: palette PNG was not expanded"),
    };
    let buf = &buf[..info.buffer_size()];
    let channels = if src_ch <= 2 { 1 } else { 3 };
    let mut data = Vec::with_capacity(w * h * channels);
    for px in buf.chunks_exact(src_ch) {
        let alpha = if src_ch == 2 || src_ch == 4 {
            px[src_ch - 1] as f32 / 255.0
        } else {
            1.0
        };
        for &v in &px[..channels] {
            data.push(v as f32 / 255.0 * alpha);
        }
    }
    Ok(Image {
        width: w,
        height: h,
        channels,
        data,
    })
}

/// Reads and decodes a PNG file ([`decode_png`]).
#[cfg(not(target_arch = "wasm32"))]
pub fn read_png(path: &Path) -> Result<Image> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    decode_png(&bytes, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("kiln-img-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn idx_images(n: usize, rows: usize, cols: usize, f: impl Fn(usize) -> u8) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [IMAGES_MAGIC, n as u32, rows as u32, cols as u32] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend((0..n * rows * cols).map(f));
        b
    }

    fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [LABELS_MAGIC, labels.len() as u32] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(labels);
        b
    }

    fn gz(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    /// A small synthetic set: `n` 4×4 images, label i % 10, pixel values
    /// encoding the image index.
    fn synthetic(n: usize) -> ImageSet {
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        image_set_from_bytes(
            idx_images(n, 4, 4, |k| ((k / 16) % 251) as u8),
            "img",
            idx_labels(&labels),
            "lab",
            &FASHION_MNIST_CLASSES,
        )
        .unwrap()
    }

    fn write_dir(dir: &Path, gzipped: bool) {
        let labels: Vec<u8> = (0..30).map(|i| (i % 10) as u8).collect();
        let files = [
            idx_images(30, 3, 2, |k| k as u8),
            idx_labels(&labels),
            idx_images(10, 3, 2, |k| 255 - k as u8),
            idx_labels(&labels[..10]),
        ];
        for (name, data) in IDX_FILES.iter().zip(files) {
            if gzipped {
                std::fs::write(dir.join(format!("{name}.gz")), gz(&data)).unwrap();
            } else {
                std::fs::write(dir.join(name), data).unwrap();
            }
        }
    }

    #[test]
    fn reads_plain_and_gzipped_folders() {
        for gzipped in [false, true] {
            let dir = temp_dir(&format!("ok{gzipped}"));
            write_dir(&dir, gzipped);
            let d = load_idx_dir(&dir).unwrap();
            assert_eq!((d.train.len(), d.test.len()), (30, 10));
            assert_eq!((d.train.rows, d.train.cols), (3, 2));
            assert_eq!(d.train.image(1), &[6, 7, 8, 9, 10, 11]);
            assert_eq!(d.test.labels[3], 3);
            assert_eq!(d.train.classes[9], "Ankle boot");
            std::fs::remove_dir_all(&dir).ok();
        }
    }

    #[test]
    fn idx_errors_name_folder_file_and_problem() {
        let dir = temp_dir("bad");
        write_dir(&dir, false);
        std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte")).unwrap();
        let e = format!("{:#}", load_idx_dir(&dir).unwrap_err());
        assert!(
            e.contains(&dir.display().to_string()) && e.contains("no t10k-labels-idx1-ubyte"),
            "{e}"
        );
        let e = format!("{:#}", load_idx_dir(&dir.join("nope")).unwrap_err());
        assert!(e.contains("does not exist"), "{e}");

        let e = parse_idx_images(&idx_labels(&[1; 20]), "x-images")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x-images") && e.contains("magic number 2049") && e.contains("label file"),
            "{e}"
        );
        let mut bad = idx_labels(&[1, 2]);
        bad[3] = 7;
        let e = parse_idx_labels(&bad, "y").unwrap_err().to_string();
        assert!(e.contains("magic number 2055") && e.contains("2049"), "{e}");
        let mut short = idx_images(5, 4, 4, |k| k as u8);
        short.truncate(16 + 70);
        let e = parse_idx_images(&short, "z").unwrap_err().to_string();
        assert!(
            e.contains("truncated")
                && e.contains("5 images of 4×4 (80 bytes)")
                && e.contains("holds 70"),
            "{e}"
        );
        let e = parse_idx_labels(&idx_labels(&[1, 2, 3])[..9], "w")
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated") && e.contains("3 labels"), "{e}");
        let e = parse_idx_images(&[0; 5], "v").unwrap_err().to_string();
        assert!(e.contains("too short"), "{e}");
        let mut g = gz(&idx_labels(&[1, 2, 3]));
        g.truncate(g.len() - 10);
        let e = format!("{:#}", maybe_gunzip(g, "u.gz").unwrap_err());
        assert!(e.contains("u.gz") && e.contains("gzip"), "{e}");
        let e = image_set_from_bytes(
            idx_images(2, 1, 1, |_| 0),
            "i",
            idx_labels(&[0, 12]),
            "l",
            &FASHION_MNIST_CLASSES,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("label 12"), "{e}");
        let e = image_set_from_bytes(
            idx_images(2, 1, 1, |_| 0),
            "i",
            idx_labels(&[0]),
            "l",
            &FASHION_MNIST_CLASSES,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("2 images") && e.contains("1 labels"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn epochs_are_permutations_and_batches_deterministic() {
        let s = EpochSampler::new(5, 103, 10);
        let mut seen: Vec<Vec<usize>> = vec![Vec::new(); 3];
        for index in 0..31 {
            for (e, i) in s.rows(index) {
                if e < 3 {
                    seen[e as usize].push(i);
                }
            }
        }
        for (e, v) in seen.iter_mut().enumerate() {
            assert_eq!(v.len(), 103, "epoch {e}");
            v.sort_unstable();
            assert_eq!(
                *v,
                (0..103).collect::<Vec<_>>(),
                "epoch {e} is a permutation"
            );
        }
        assert_ne!(epoch_permutation(5, 0, 103), epoch_permutation(5, 1, 103));
        assert_ne!(epoch_permutation(5, 0, 103), epoch_permutation(6, 0, 103));
        // Batch 10 straddles epochs 0 and 1 (positions 100..110).
        let r = s.rows(10);
        assert_eq!(
            r.iter().map(|x| x.0).collect::<Vec<_>>(),
            [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]
        );

        let set = synthetic(50);
        let norm = Normalization::of(&set);
        let src = ImageClassification::new(set.clone(), set.clone(), norm, 9, 8).unwrap();
        let b = src.train_batch(17).unwrap();
        b.check_layout(&src.layout()).unwrap();
        let fresh = ImageClassification::new(set.clone(), set, norm, 9, 8).unwrap();
        assert_eq!(fresh.train_batch(17).unwrap(), b, "resume-equivalent");
        assert_ne!(src.train_batch(18).unwrap(), b);
        // Labels match the images they come with.
        let px = b.f32("pixel_values").unwrap();
        for (r, &l) in b.i32("labels").unwrap().iter().enumerate() {
            let idx = ((px[r * 16] * norm.std + norm.mean) * 255.0).round() as usize;
            assert_eq!(l as usize, idx % 10);
        }
    }

    #[test]
    fn normalisation_and_test_batches() {
        let set = synthetic(50);
        let norm = Normalization::of(&set);
        let src = ImageClassification::new(set.clone(), set.clone(), norm, 1, 16).unwrap();
        // Over all training pixels, normalised values have mean 0 and std 1.
        let all: Vec<f32> = (0..50).flat_map(|i| norm.image(&set, i)).collect();
        let m = all.iter().map(|&x| x as f64).sum::<f64>() / all.len() as f64;
        let v = all.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / all.len() as f64;
        assert!(m.abs() < 1e-5 && (v.sqrt() - 1.0).abs() < 1e-4, "{m} {v}");
        // Test batches in order, the last padded with label −100.
        let t = src.val_batches(100).unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(t[0].i32("labels").unwrap()[..3], [0, 1, 2]);
        let last = t[3].i32("labels").unwrap();
        assert_eq!(last[..2], [8, 9]);
        assert!(last[2..].iter().all(|&l| l == IGNORE));
        assert_eq!(src.val_batches(2).unwrap().len(), 2);
        let cfg = norm.preprocessor_config(28, 1);
        assert_eq!(cfg["image_mean"][0].as_f64().unwrap() as f32, norm.mean);
    }

    #[test]
    fn stratified_fraction_is_balanced_and_seeded() {
        let set = synthetic(1000); // 100 per class
        let sub = set.label_fraction(0.05, 3).unwrap();
        assert_eq!(sub.class_counts(), vec![5; 10]);
        assert_eq!(set.label_fraction(0.05, 3).unwrap(), sub);
        assert_ne!(set.label_fraction(0.05, 4).unwrap(), sub);
        // Tiny fractions still keep one of each class.
        assert_eq!(
            set.label_fraction(0.0001, 3).unwrap().class_counts(),
            vec![1; 10]
        );
        assert_eq!(set.label_fraction(1.0, 3).unwrap(), set);
        assert!(set.label_fraction(0.0, 3).is_err());
        assert!(set.label_fraction(1.5, 3).is_err());
        // Uneven classes: round(f · n_c) each.
        let uneven = set.filter_classes(&[0, 1]).unwrap();
        let mut labels = uneven.labels.clone();
        labels.truncate(150); // 75 + 75
        let mut u = uneven.clone();
        u.images.truncate(150 * 16);
        u.labels = labels;
        u.labels[..40].iter_mut().for_each(|l| *l = 0);
        let c = u.class_counts();
        let f = u.label_fraction(0.1, 1).unwrap().class_counts();
        assert_eq!(
            f,
            c.iter()
                .map(|&n| (n as f64 * 0.1).round() as usize)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn class_filter_relabels() {
        let set = synthetic(100);
        let hi = set.filter_classes(&[5, 6, 7, 8, 9]).unwrap();
        assert_eq!(hi.len(), 50);
        assert_eq!(hi.classes[0], "Sandal");
        assert_eq!(hi.class_counts(), vec![10; 5]);
        assert_eq!(hi.labels[..5], [0, 1, 2, 3, 4]);
        assert_eq!(hi.image(0), set.image(5));
        let lo = set.filter_classes(&[0, 1, 2, 3, 4]).unwrap();
        assert!(lo.labels.iter().zip(lo.labels.iter()).all(|(a, _)| *a < 5));
        assert_eq!(lo.labels[..5], [0, 1, 2, 3, 4]);
        assert!(set
            .filter_classes(&[10])
            .unwrap_err()
            .to_string()
            .contains("0–9"));
        assert!(set
            .filter_classes(&[1, 1])
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }

    #[test]
    fn model_input_crops_resamples_and_converts() {
        let id = Normalization {
            mean: 0.0,
            std: 1.0,
        };
        // 4×2 RGB: the centred 2×2 square is columns 1–2.
        let mut data = Vec::new();
        for _y in 0..2 {
            for x in 0..4 {
                data.extend_from_slice(&[x as f32 / 4.0, 0.0, 1.0]);
            }
        }
        let img = Image {
            width: 4,
            height: 2,
            channels: 3,
            data,
        };
        let grey = img.to_model_input(1, 1, &id);
        let want = 0.299 * (0.25 + 0.5) / 2.0 + 0.114;
        assert!((grey[0] - want).abs() < 1e-6, "{grey:?}");
        let rgb = img.to_model_input(2, 3, &id);
        assert_eq!(rgb[..4], [0.25, 0.5, 0.25, 0.5]);
        assert_eq!(rgb[8..], [1.0; 4]);
        // 3 → 2 by area: output pixel 0 covers source 0 and half of 1.
        let g = Image {
            width: 3,
            height: 3,
            channels: 1,
            data: vec![0.0, 0.3, 0.9, 0.0, 0.3, 0.9, 0.0, 0.3, 0.9],
        };
        let o = g.to_model_input(2, 1, &id);
        assert!(
            (o[0] - 0.1).abs() < 1e-6 && (o[1] - 0.7).abs() < 1e-6,
            "{o:?}"
        );
        // Grey → 3 channels repeats; normalisation applies.
        let n = Normalization {
            mean: 0.5,
            std: 0.25,
        };
        let o = g.to_model_input(3, 3, &n);
        assert_eq!(o[2], (0.9 - 0.5) / 0.25);
        assert_eq!(o[9 + 2], o[2]);
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn png_grey_and_rgba() {
        let encode = |w: u32, h: u32, ct: png::ColorType, data: &[u8]| {
            let mut out = Vec::new();
            let mut e = png::Encoder::new(&mut out, w, h);
            e.set_color(ct);
            e.set_depth(png::BitDepth::Eight);
            let mut wr = e.write_header().unwrap();
            wr.write_image_data(data).unwrap();
            wr.finish().unwrap();
            out
        };
        let g = decode_png(&encode(2, 1, png::ColorType::Grayscale, &[0, 255]), "g.png").unwrap();
        assert_eq!((g.width, g.height, g.channels), (2, 1, 1));
        assert_eq!(g.data, [0.0, 1.0]);
        let rgba = encode(1, 1, png::ColorType::Rgba, &[255, 0, 255, 51]);
        let c = decode_png(&rgba, "c.png").unwrap();
        assert_eq!(c.channels, 3);
        assert!((c.data[0] - 0.2).abs() < 1e-6 && c.data[1] == 0.0);
        let e = decode_png(b"not a png", "x.png").unwrap_err().to_string();
        assert!(e.contains("x.png"), "{e}");
        let dir = temp_dir("png");
        let p = dir.join("a.png");
        std::fs::write(
            &p,
            encode(56, 56, png::ColorType::Grayscale, &[128; 56 * 56]),
        )
        .unwrap();
        let x = read_png(&p).unwrap().to_model_input(
            28,
            1,
            &Normalization {
                mean: 0.0,
                std: 1.0,
            },
        );
        assert!(x.iter().all(|&v| (v - 128.0 / 255.0).abs() < 1e-6));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn fashion_mnist_when_present() {
        let Some(dir) = crate::data::shared_data("images/fashion-mnist") else {
            println!("skipped: ../shared/data/images/fashion-mnist not found");
            return;
        };
        let t = std::time::Instant::now();
        let d = load_idx_dir(&dir).unwrap();
        assert_eq!((d.train.len(), d.test.len()), (60_000, 10_000));
        assert_eq!((d.train.rows, d.train.cols), (28, 28));
        assert_eq!(d.train.class_counts(), vec![6000; 10]);
        assert_eq!(d.test.class_counts(), vec![1000; 10]);
        let norm = Normalization::of(&d.train);
        println!(
            "fashion-mnist: loaded in {:.2}s, mean {:.4} std {:.4}",
            t.elapsed().as_secs_f64(),
            norm.mean,
            norm.std
        );
        assert!((norm.mean - 0.2860).abs() < 1e-3 && (norm.std - 0.3530).abs() < 1e-3);
        assert_eq!(
            d.train.label_fraction(0.01, 0).unwrap().class_counts(),
            vec![60; 10]
        );
    }
}
