//! The device, its queue and every compiled pipeline, created once.
//!
//! Adapter choice: Vulkan only (the one backend compiled in). Among the
//! adapters found, a discrete GPU is preferred over an integrated one, and a
//! software rasterizer (lavapipe, `DeviceType::Cpu`) comes last; setting
//! `SDLAB_GPU_ADAPTER` to part of an adapter's name picks that one instead.
//! The device is requested with the adapter's own limits rather than
//! WebGPU's defaults, so storage bindings may be as large as the hardware
//! allows (weights and KV pools are large).

use super::{GpuError, Result};
use std::sync::Arc;
use wgpu::util::DeviceExt;

/// What was picked, for logs and test output.
#[derive(Debug, Clone)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: wgpu::Backend,
    pub device_type: wgpu::DeviceType,
    pub driver: String,
    /// A CPU implementation (lavapipe, SwiftShader): correct but slow.
    pub software: bool,
    pub max_storage_binding: u64,
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({:?}, {:?}{}, driver {:?}, max storage binding {} MiB)",
            self.name,
            self.backend,
            self.device_type,
            if self.software {
                ", software rasterizer"
            } else {
                ""
            },
            self.driver,
            self.max_storage_binding >> 20
        )
    }
}

/// A context shows as its adapter.
impl std::fmt::Display for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.adapter().fmt(f)
    }
}

/// One compiled compute pipeline per kernel.
pub(crate) struct Pipelines {
    pub embedding: wgpu::ComputePipeline,
    pub rms_norm: wgpu::ComputePipeline,
    pub rope: wgpu::ComputePipeline,
    pub matmul: wgpu::ComputePipeline,
    pub matmul_skinny: wgpu::ComputePipeline,
    pub add: wgpu::ComputePipeline,
    pub silu_mul: wgpu::ComputePipeline,
    pub write_kv: wgpu::ComputePipeline,
    pub attention: wgpu::ComputePipeline,
    pub bgmv_shrink: wgpu::ComputePipeline,
    pub bgmv_expand: wgpu::ComputePipeline,
    pub quantize: wgpu::ComputePipeline,
    pub matmul_q4_1: wgpu::ComputePipeline,
    pub matmul_q8_0: wgpu::ComputePipeline,
}

/// Device, queue and pipelines. Cheap to share behind an `Arc`; every kernel
/// method takes `&self`.
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) limits: wgpu::Limits,
    pub(crate) pipelines: Pipelines,
    summary: AdapterSummary,
}

fn summarize(info: &wgpu::AdapterInfo, limits: &wgpu::Limits) -> AdapterSummary {
    AdapterSummary {
        name: info.name.clone(),
        backend: info.backend,
        device_type: info.device_type,
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
        software: info.device_type == wgpu::DeviceType::Cpu,
        max_storage_binding: limits.max_storage_buffer_binding_size,
    }
}

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

impl GpuContext {
    /// Finds an adapter, opens a device with its limits, and compiles every
    /// pipeline. Fails with [`GpuError::NoAdapter`] when there is none.
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async())
    }

    /// The adapter [`Self::new`] would pick, without opening a device (a
    /// cheap check, e.g. for "use the GPU only if it is real hardware").
    pub fn probe() -> Result<AdapterSummary> {
        let adapter = pollster::block_on(Self::pick_adapter())?;
        Ok(summarize(&adapter.get_info(), &adapter.limits()))
    }

    async fn pick_adapter() -> Result<wgpu::Adapter> {
        let backends = wgpu::Backends::VULKAN;
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let mut adapters = instance.enumerate_adapters(backends).await;
        adapters.sort_by_key(|a| rank(a.get_info().device_type));
        match std::env::var("SDLAB_GPU_ADAPTER") {
            Ok(want) if !want.is_empty() => {
                let want = want.to_lowercase();
                adapters
                    .into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&want))
            }
            _ => adapters.into_iter().next(),
        }
        .ok_or_else(|| GpuError::NoAdapter(format!("{backends:?}")))
    }

    async fn new_async() -> Result<Self> {
        let adapter = Self::pick_adapter().await?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("sdlab"),
                required_features: wgpu::Features::empty(),
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await?;
        let summary = summarize(&info, &limits);
        // A shader that does not compile (or a pipeline the device rejects)
        // is an error to return, not a panic in wgpu's default handler.
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipelines = Pipelines::new(&device);
        if let Some(e) = scope.pop().await {
            return Err(GpuError::Pipeline(e.to_string()));
        }
        Ok(Self {
            device,
            queue,
            limits,
            pipelines,
            summary,
        })
    }

    /// The same, shared.
    pub fn new_shared() -> Result<Arc<Self>> {
        Self::new().map(Arc::new)
    }

    pub fn adapter(&self) -> &AdapterSummary {
        &self.summary
    }

    /// True on lavapipe and other CPU implementations of Vulkan.
    pub fn is_software(&self) -> bool {
        self.summary.software
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// A fresh encoder to record kernels into.
    pub fn encoder(&self) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("sdlab"),
            })
    }

    /// Submits what `encoder` recorded (without waiting for it).
    pub fn submit(&self, encoder: wgpu::CommandEncoder) -> wgpu::SubmissionIndex {
        self.queue.submit([encoder.finish()])
    }

    /// Blocks until everything submitted so far has run.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| GpuError::Map(e.to_string()))
    }

    /// Records one dispatch of `pipeline` over a `groups` grid: binding 0 is
    /// a uniform buffer holding `params` (padded to 16 bytes), the others
    /// the given buffers.
    pub(crate) fn dispatch(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        pipeline: &wgpu::ComputePipeline,
        label: &str,
        params: &[u32],
        buffers: &[(u32, &wgpu::Buffer)],
        groups: (u32, u32),
    ) {
        let mut words = params.to_vec();
        words.resize(params.len().next_multiple_of(4).max(4), 0);
        let uniform = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(&words),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        entries.extend(buffers.iter().map(|(b, buf)| wgpu::BindGroupEntry {
            binding: *b,
            resource: buf.as_entire_binding(),
        }));
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(label),
            timestamp_writes: None,
        });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, 1);
    }

    /// A 2D grid of `n` workgroups within this device's limit.
    pub(crate) fn grid(&self, n: u64) -> Result<(u32, u32)> {
        super::grid(n, self.limits.max_compute_workgroups_per_dimension)
    }
}

impl Pipelines {
    fn new(device: &wgpu::Device) -> Self {
        let module = |label: &str, src: &str| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            })
        };
        let pipeline = |module: &wgpu::ShaderModule, entry: &str| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let elementwise = module("elementwise", include_str!("shaders/elementwise.wgsl"));
        let bgmv = module("bgmv", include_str!("shaders/bgmv.wgsl"));
        let qmatmul = module("qmatmul", include_str!("shaders/qmatmul.wgsl"));
        Self {
            embedding: pipeline(
                &module("embedding", include_str!("shaders/embedding.wgsl")),
                "main",
            ),
            rms_norm: pipeline(
                &module("rms_norm", include_str!("shaders/rms_norm.wgsl")),
                "main",
            ),
            rope: pipeline(&module("rope", include_str!("shaders/rope.wgsl")), "main"),
            matmul: pipeline(
                &module("matmul", include_str!("shaders/matmul.wgsl")),
                "main",
            ),
            matmul_skinny: pipeline(
                &module("matmul_skinny", include_str!("shaders/matmul_skinny.wgsl")),
                "main",
            ),
            add: pipeline(&elementwise, "add"),
            silu_mul: pipeline(&elementwise, "silu_mul"),
            write_kv: pipeline(
                &module("write_kv", include_str!("shaders/write_kv.wgsl")),
                "main",
            ),
            attention: pipeline(
                &module("attention", include_str!("shaders/attention.wgsl")),
                "main",
            ),
            bgmv_shrink: pipeline(&bgmv, "shrink"),
            bgmv_expand: pipeline(&bgmv, "expand"),
            quantize: pipeline(&qmatmul, "quantize"),
            matmul_q4_1: pipeline(&qmatmul, "matmul_q4_1"),
            matmul_q8_0: pipeline(&qmatmul, "matmul_q8_0"),
        }
    }
}
