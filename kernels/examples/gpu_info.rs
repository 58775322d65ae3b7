//! Prints the GPU adapter `kernels::gpu` picks (and whether it is a software
//! rasterizer such as lavapipe), after compiling every kernel on it.
//!
//! `cargo run -p kernels --example gpu_info`

fn main() {
    match kernels::gpu::GpuContext::new() {
        Ok(ctx) => {
            println!("adapter: {}", ctx.adapter());
            let l = ctx.limits();
            println!(
                "limits: {} workgroups per dimension, {} invocations per workgroup, {} KiB workgroup memory",
                l.max_compute_workgroups_per_dimension,
                l.max_compute_invocations_per_workgroup,
                l.max_compute_workgroup_storage_size >> 10
            );
        }
        Err(e) => {
            eprintln!("GPU unavailable: {e}");
            std::process::exit(1);
        }
    }
}
