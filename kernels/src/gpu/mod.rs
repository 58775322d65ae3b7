//! GPU kernels on wgpu (Vulkan), written in WGSL, behind the same shapes as
//! the CPU kernels.
//!
//! What is here: every kernel a Llama forward pass needs, each a compute
//! shader in `shaders/*.wgsl` and a method of [`GpuContext`] that records
//! one dispatch into a caller's [`wgpu::CommandEncoder`]:
//! embedding gather, RMSNorm, RoPE, matmul (tiled for many rows, skinny for
//! decode's few, the same bits either way; also the logits against the tied
//! embedding), SiLU-mul, residual add, the K/V scatter into
//! the block pools, paged attention (decode and chunked prefill over block
//! tables, grouped-query heads, the same pool layout as
//! [`crate::attention::KvLayout`]) and batched LoRA (BGMV, as
//! [`crate::lora::bgmv`]).
//!
//! Why it is shaped this way: a forward pass is a few hundred small kernels.
//! Submitting and waiting for each would cost more than the work, and
//! copying activations back and forth would saturate the bus. So
//! [`GpuContext`] is created once (device, queue, every pipeline compiled up
//! front); weights, the KV pools and activations live in [`GpuTensor`]s on
//! the device; each kernel only *records* into an encoder, so a whole pass
//! is one submit; and what crosses the bus per step is the token ids,
//! positions, slots and block tables going up and the logits coming down.
//! Quantized weights either stay in their GGUF blocks
//! ([`GpuContext::upload_q4_1_blocks`], [`GpuContext::upload_q8_0_blocks`],
//! multiplied by on-device 8-bit activations with the CPU kernels'
//! arithmetic, [`GpuContext::qmatmul`]) or are dequantized to f32 on upload
//! ([`GpuContext::upload_q4_1`], [`GpuContext::upload_q8_0`]).
//!
//! Numerics: the kernels a decoder on quantized weights runs (RMSNorm,
//! RoPE, SiLU-mul, add, paged attention, BGMV, activation quantization and
//! the quantized matmuls) compute the CPU kernels' bits: the same
//! operations in the same order, multiply-adds rounded once (the device's
//! `fma` where a probe at start-up finds it exact, [`FmaMode`], else an
//! exact emulation), and the CPU's `exp` ([`crate::expf`]); the shared
//! functions are in `shaders/numerics.wgsl`. The f32 matmul keeps its own
//! tile order (within rounding of the CPU's).
//!
//! Each kernel's small parameters (sizes, eps, scale) go in a uniform buffer
//! of their own, created for that dispatch, so that several dispatches of
//! one encoder never share (and overwrite) parameters.
//!
//! Grids: a dispatch may have at most `max_compute_workgroups_per_dimension`
//! (65535 by default) workgroups per dimension, so kernels with one
//! workgroup per item lay their workgroups on a 2D grid and compute the item
//! as `x + y * width` (see [`grid`]).
//!
//! Every kernel is tested against the CPU reference in `tests/gpu/`, on
//! lavapipe (Mesa's software Vulkan) where there is no GPU.

mod attention;
mod context;
mod lora;
mod ops;
mod quant;
mod tensor;

pub use attention::{GpuAttentionBatch, MAX_HEAD_DIM};
pub use context::{AdapterSummary, FmaMode, GpuContext};
pub use lora::GpuLora;
pub use ops::MatmulKernel;
pub use quant::{GpuQMatrix, QFormat};
pub use tensor::{DType, GpuTensor};
/// The wgpu this layer is built on, so callers record into its encoders
/// without depending on a matching version themselves.
pub use wgpu;

use crate::KernelError;

/// Errors from the GPU layer.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU adapter found (backends: {0}); install a Vulkan driver, e.g. lavapipe: apt-get install mesa-vulkan-drivers libvulkan1")]
    NoAdapter(String),
    #[error("the adapter refused a device: {0}")]
    Device(#[from] wgpu::RequestDeviceError),
    #[error("{what} needs {bytes} bytes, above the device limit of {limit}")]
    TooLarge {
        what: String,
        bytes: u64,
        limit: u64,
    },
    #[error("dispatch of {0} workgroups is above what a 2D grid can hold")]
    Grid(u64),
    #[error("a kernel failed to compile: {0}")]
    Pipeline(String),
    #[error("reading a buffer back failed: {0}")]
    Map(String),
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

pub type Result<T> = std::result::Result<T, GpuError>;

/// Lays `n` workgroups on a 2D grid no wider than `max` per dimension:
/// `(x, y)` with `x * y >= n`. Shaders recover the item index as
/// `wg.x + wg.y * num_workgroups.x` and skip indices `>= n`.
pub fn grid(n: u64, max: u32) -> Result<(u32, u32)> {
    let max = max as u64;
    if n <= max {
        return Ok((n.max(1) as u32, 1));
    }
    let y = n.div_ceil(max);
    if y > max {
        return Err(GpuError::Grid(n));
    }
    Ok((max as u32, y as u32))
}

/// Whether a missing adapter must fail rather than be skipped: `CI` or
/// `SDLAB_REQUIRE_GPU` set to `1`, `true` or `yes` (`make test` sets the
/// latter and installs lavapipe).
pub fn adapter_required() -> bool {
    let on = |k: &str| {
        std::env::var(k)
            .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
            .unwrap_or(false)
    };
    on("CI") || on("SDLAB_REQUIRE_GPU")
}

/// For tests that need a GPU: `Some(value)` when `opened` (opening a
/// context, probing for an adapter) worked, with a line naming it; else
/// a panic when [`adapter_required`], or a line saying `what` is skipped
/// and `None`. Lines go straight to stderr, past the test harness's
/// capture, so a skip is seen even though the tests pass.
pub fn or_skip<T: std::fmt::Display>(what: &str, opened: Result<T>) -> Option<T> {
    use std::io::Write;
    match opened {
        Ok(v) => {
            let _ = writeln!(std::io::stderr(), "{what} on: {v}");
            Some(v)
        }
        Err(e) if adapter_required() => panic!(
            "no GPU adapter, and CI / SDLAB_REQUIRE_GPU requires one: {e}\n\
             (`make test` installs lavapipe: apt-get install mesa-vulkan-drivers libvulkan1)"
        ),
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "skipping {what}: {e} (set SDLAB_REQUIRE_GPU=1 to fail instead)"
            );
            None
        }
    }
}

pub(crate) fn shape(kernel: &'static str, detail: impl Into<String>) -> GpuError {
    GpuError::Kernel(crate::shape_err(kernel, detail))
}

#[cfg(test)]
mod tests {
    use super::grid;

    #[test]
    fn grid_covers_every_item_within_limits() {
        for (n, max) in [
            (0, 65535),
            (1, 65535),
            (65535, 65535),
            (65536, 65535),
            (10, 4),
        ] {
            let (x, y) = grid(n, max).unwrap();
            assert!(x <= max && y <= max);
            assert!(x as u64 * y as u64 >= n);
            // The last row is needed: one fewer would not cover n.
            assert!(n == 0 || (x as u64) * (y as u64 - 1) < n);
        }
        assert_eq!(grid(10, 4).unwrap(), (4, 3));
        assert!(grid(17, 4).is_err());
    }
}
