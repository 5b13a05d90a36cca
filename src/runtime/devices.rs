//! `kiln devices`: what every adapter offers, in the terms kernels care about.

use serde::Serialize;

use super::context::{list_adapters, wanted_features};

#[derive(Clone, Debug, Serialize)]
pub struct AdapterReport {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_storage_buffers_per_shader_stage: u32,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroups_per_dimension: u32,
    pub shader_f16: bool,
    pub subgroups: bool,
    pub subgroup_size: (u32, u32),
    pub timestamp_queries: bool,
}

impl AdapterReport {
    pub fn from_adapter(index: usize, a: &wgpu::Adapter) -> Self {
        let info = a.get_info();
        let l = a.limits();
        let f = wanted_features(a.features());
        Self {
            index,
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: match info.device_type {
                wgpu::DeviceType::DiscreteGpu => "discrete GPU",
                wgpu::DeviceType::IntegratedGpu => "integrated GPU",
                wgpu::DeviceType::VirtualGpu => "virtual GPU",
                wgpu::DeviceType::Cpu => "CPU",
                wgpu::DeviceType::Other => "other",
            }
            .to_string(),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            max_buffer_size: l.max_buffer_size,
            max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
            max_storage_buffers_per_shader_stage: l.max_storage_buffers_per_shader_stage,
            max_compute_workgroup_storage_size: l.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
            max_compute_workgroups_per_dimension: l.max_compute_workgroups_per_dimension,
            shader_f16: f.contains(wgpu::Features::SHADER_F16),
            subgroups: f.contains(wgpu::Features::SUBGROUP),
            subgroup_size: (info.subgroup_min_size, info.subgroup_max_size),
            timestamp_queries: f.contains(wgpu::Features::TIMESTAMP_QUERY),
        }
    }

    /// A human-readable block for the terminal.
    pub fn pretty(&self) -> String {
        fn mib(b: u64) -> String {
            format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0))
        }
        let yes = |b: bool| if b { "yes" } else { "no" };
        format!(
            "[{}] {}\n    backend {}, {}, driver {} {}\n    max buffer {}, max storage binding {}, {} storage buffers/stage\n    workgroup storage {} KiB, {} invocations/workgroup, {} workgroups/dim\n    shader-f16 {}, subgroups {}{}, timestamp queries {}",
            self.index,
            self.name,
            self.backend,
            self.device_type,
            self.driver,
            self.driver_info,
            mib(self.max_buffer_size),
            mib(self.max_storage_buffer_binding_size),
            self.max_storage_buffers_per_shader_stage,
            self.max_compute_workgroup_storage_size / 1024,
            self.max_compute_invocations_per_workgroup,
            self.max_compute_workgroups_per_dimension,
            yes(self.shader_f16),
            yes(self.subgroups),
            if self.subgroups {
                format!(" (size {}..{})", self.subgroup_size.0, self.subgroup_size.1)
            } else {
                String::new()
            },
            yes(self.timestamp_queries),
        )
    }
}

/// Reports for every adapter, indexed as `KILN_ADAPTER` expects.
pub async fn adapter_reports(backends: Option<wgpu::Backends>) -> Vec<AdapterReport> {
    list_adapters(backends)
        .await
        .iter()
        .enumerate()
        .map(|(i, a)| AdapterReport::from_adapter(i, a))
        .collect()
}
