//! Models: each describes its parameters (names, shapes, initialisation) and
//! builds its graph from the ops in [`crate::graph`].

pub mod gpt;

use anyhow::{anyhow, ensure, Result};

use crate::graph::exec::TensorMap;
use crate::runtime::Gpu;

/// Parameters on the host: (name, values) in the model's order.
pub type HostParams = Vec<(String, Vec<f32>)>;

/// Uploads host parameters (name, data) with the shapes in `shapes`.
pub fn upload_params(
    gpu: &Gpu,
    shapes: &[(String, Vec<usize>)],
    data: &[(String, Vec<f32>)],
) -> Result<TensorMap> {
    let mut out = TensorMap::new();
    for (name, shape) in shapes {
        let (_, d) = data
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| anyhow!("parameter {name} is missing"))?;
        let n: usize = shape.iter().product();
        ensure!(
            d.len() == n,
            "parameter {name}: {} values for shape {shape:?}",
            d.len()
        );
        out.insert(name.clone(), gpu.upload_f32(shape, d)?);
    }
    Ok(out)
}

/// Reads every tensor of a map back to the host, in name order.
pub async fn download(gpu: &Gpu, map: &TensorMap) -> Result<Vec<(String, Vec<usize>, Vec<f32>)>> {
    let mut out = Vec::with_capacity(map.len());
    for (name, t) in map {
        out.push((name.clone(), t.shape().to_vec(), t.read_f32(gpu).await?));
    }
    Ok(out)
}
