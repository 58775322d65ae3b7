//! Compute kernels for sdlab's CPU hot path.
//!
//! Each family has a deliberately simple reference in [`reference`]
//! that the property tests compare against:
//!
//! - [`attention`]: paged attention over a block-table KV cache (vLLM's
//!   PagedAttention idea), one kernel for decode (one query per sequence) and
//!   chunked prefill (a causal chunk attending to its cached prefix), with
//!   grouped-query heads; plus the scatter of new K/V rows into their slots.
//! - [`linear`]: `y = x W^T` for f32 weights whose every output element is
//!   reduced in a fixed order, so a row's result never depends on which other
//!   rows share the batch. That is what makes continuous batching
//!   *batch-invariant*: a prompt decoded alone or among fifteen others gives
//!   the same tokens.
//!
//! - [`lora`]: batched LoRA (BGMV/SGMV): each row of a mixed batch gets its
//!   own adapter's low-rank delta on top of the shared base projection.
//!
//! - [`gpu`]: the same kernels in WGSL on wgpu (Vulkan), recorded into one
//!   command encoder per pass; tested against these references on lavapipe.
//!
//! Every CPU kernel reduces with [`simd::dot`], whose summation order depends only
//! on the vector length, and the decoder's exponentials are [`expf::exp`],
//! which the GPU computes step for step.

pub mod attention;
pub mod expf;
pub mod gpu;
pub mod linear;
pub mod lora;
pub mod q8_0;
pub mod quant;
pub mod reference;
pub mod rowwise;
pub mod simd;

pub use attention::{paged_attention, write_kv, KvLayout, SeqAttention};
pub use linear::{linear, linear_shared, uses_avx512};
pub use lora::{bgmv, LoraFactors};
pub use rowwise::{rms_norm, rope, rope_tables, silu_mul, RopeStyle};

/// Which CPU kernel variants run on this machine, for benchmark reports
/// (the bits are the same either way; the speed is not): the f32 matmul
/// tile and the int8 dot product of the quantized matmuls.
pub fn cpu_kernels() -> String {
    // The same condition that compiles the AVX2 paths in `linear` and `quant`.
    let avx2 = cfg!(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ));
    let f32_tile = if uses_avx512() {
        "AVX-512 8x4".to_string()
    } else if avx2 {
        format!("AVX2 4x{}", linear::tile_columns())
    } else {
        "portable".to_string()
    };
    let int8 = if quant::uses_vnni() {
        "AVX-512 VNNI"
    } else if avx2 {
        "AVX2"
    } else {
        "portable"
    };
    format!("f32 tile {f32_tile}, int8 dot {int8}")
}

/// Errors from kernel argument checks. Kernels validate shapes once at entry
/// and then run without bounds surprises.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum KernelError {
    #[error("shape mismatch in {kernel}: {detail}")]
    Shape {
        kernel: &'static str,
        detail: String,
    },
}

pub type Result<T> = std::result::Result<T, KernelError>;

pub(crate) fn shape_err(kernel: &'static str, detail: impl Into<String>) -> KernelError {
    KernelError::Shape {
        kernel,
        detail: detail.into(),
    }
}
