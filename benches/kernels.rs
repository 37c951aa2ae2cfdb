//! Kernel benchmarks: matmul (FLOP/s) and softmax cross-entropy (bytes/s), on
//! the CPU path and on the best GPU adapter. The GPU wait is inside the timed
//! region. Shapes come from `rnn_wgpu::bench`, shared with `rnn-wgpu bench --kernels`.
//!
//! On a software adapter (llvmpipe) the small shape tables are used.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rnn_wgpu::backend::{Backend, CpuBackend, GpuBackend, XentBuffers};
use rnn_wgpu::bench::{MATMUL_SHAPES, MATMUL_SHAPES_SMALL, XENT_SHAPES, XENT_SHAPES_SMALL};
use rnn_wgpu::gpu::GpuContext;
use rnn_wgpu::ops::matmul::Gemm;
use rnn_wgpu::ops::softmax_xent::{IGNORE_INDEX, Rows};
use rnn_wgpu::parity::{uniform, uniform_i32};

fn gpu() -> Option<GpuBackend> {
    match GpuContext::from_env() {
        Ok(ctx) => GpuBackend::new(Arc::new(ctx)).ok(),
        Err(e) => {
            eprintln!("no GPU benchmarks: {e}");
            None
        }
    }
}

fn bench_matmul<B: Backend>(
    c: &mut Criterion,
    b: &B,
    prefix: &str,
    shapes: &[(usize, usize, usize)],
    sync: &dyn Fn(),
) {
    let mut group = c.benchmark_group(format!("{prefix}/matmul_nt"));
    group.sample_size(10);
    for &(m, n, k) in shapes {
        let g = Gemm::nt(m, n, k);
        let a = b
            .tensor_f64(&[m, k], &uniform(1, m * k, -1.0, 1.0))
            .unwrap();
        let w = b
            .tensor_f64(&[n, k], &uniform(2, n * k, -1.0, 1.0))
            .unwrap();
        let out = b.zeros(&[m, n]).unwrap();
        group.throughput(Throughput::Elements(g.flops() as u64));
        group.bench_function(format!("{m}x{n}x{k} (elements = FLOP)"), |bench| {
            bench.iter(|| {
                b.gemm(&g, &a, &w, None, &out).unwrap();
                sync();
            })
        });
    }
    group.finish();
}

fn bench_xent<B: Backend>(
    c: &mut Criterion,
    b: &B,
    prefix: &str,
    shapes: &[(usize, usize)],
    sync: &dyn Fn(),
) {
    let mut group = c.benchmark_group(format!("{prefix}/softmax_xent"));
    group.sample_size(10);
    for &(rows, cols) in shapes {
        let x = b
            .tensor_f64(&[rows, cols], &uniform(3, rows * cols, -3.0, 3.0))
            .unwrap();
        let t = b
            .ints(&[rows], &uniform_i32(4, rows, 0, cols as i32))
            .unwrap();
        let out = XentBuffers::new(b, rows).unwrap();
        let dx = b.zeros(&[rows, cols]).unwrap();
        // Logits read twice (rows pass, gradient pass) and the gradient written once.
        group.throughput(Throughput::Bytes((rows * cols * 4 * 3) as u64));
        group.bench_function(format!("{rows}x{cols}"), |bench| {
            bench.iter(|| {
                b.xent(
                    Rows { rows, cols },
                    &x,
                    &t,
                    IGNORE_INDEX,
                    1.0,
                    &out,
                    Some(&dx),
                )
                .unwrap();
                sync();
            })
        });
    }
    group.finish();
}

fn kernels(c: &mut Criterion) {
    let cpu = CpuBackend::<f32>::new();
    bench_matmul(c, &cpu, "cpu", MATMUL_SHAPES_SMALL, &|| {});
    bench_xent(c, &cpu, "cpu", XENT_SHAPES_SMALL, &|| {});
    if let Some(gpu) = gpu() {
        let software = gpu.ctx().adapter().is_software();
        let (mm, xe) = if software {
            (MATMUL_SHAPES_SMALL, XENT_SHAPES_SMALL)
        } else {
            (MATMUL_SHAPES, XENT_SHAPES)
        };
        let ctx = gpu.ctx().clone();
        let sync = move || ctx.sync().unwrap();
        bench_matmul(c, &gpu, "gpu", mm, &sync);
        bench_xent(c, &gpu, "gpu", xe, &sync);
        black_box(&gpu);
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
