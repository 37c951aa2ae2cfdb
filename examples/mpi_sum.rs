//! Times the data-parallel gradient sum over MPI on its own:
//! `mpirun -n 2 target/release/examples/mpi_sum [values] [repeats]`
//! (build with `cargo build --release --features mpi --example mpi_sum`).
//! Prints, on rank 0, the mean time of one sum of `values` f32 gradients
//! (default 284 125, the main job's LSTM) and the bytes each rank moved.

use std::time::Instant;

use rnn_wgpu::train::dist::{Collective, RankSum, any_rank};
use rnn_wgpu::train::mpi::MpiWorld;

fn main() -> rnn_wgpu::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(284_125);
    let repeats: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(200);
    let world = MpiWorld::init()?;
    let mut v: Vec<f32> = (0..n).map(|i| (i % 97) as f32 * 1e-3).collect();
    // Warm up (the buffers are kept), then time with every rank starting together.
    let mut sum = RankSum::default();
    sum.sum(&world, &mut v)?;
    any_rank(&world, false)?;
    let start = Instant::now();
    for _ in 0..repeats {
        sum.sum(&world, &mut v)?;
    }
    let each = start.elapsed().as_secs_f64() / repeats as f64;
    // The exchange alone: an all-gather of the same bytes.
    let bytes_of: &[u8] = bytemuck::cast_slice(&v);
    let mut recv = vec![0u8; bytes_of.len() * world.size()];
    any_rank(&world, false)?;
    let start = Instant::now();
    for _ in 0..repeats {
        world.all_gather_into(bytes_of, &mut recv)?;
    }
    let gather = start.elapsed().as_secs_f64() / repeats as f64;
    if world.rank() == 0 {
        println!(
            "all-gather of {} bytes alone: {:.3} ms",
            bytes_of.len(),
            gather * 1e3
        );
        let size = world.size();
        let bytes = 2.0 * (size as f64 - 1.0) / size as f64 * (4 * n) as f64;
        println!(
            "{size} ranks, {n} f32 values: {:.3} ms per sum, {:.2} GB/s of {:.2} MB moved per rank",
            each * 1e3,
            bytes / each / 1e9,
            bytes / 1e6
        );
    }
    Ok(())
}
