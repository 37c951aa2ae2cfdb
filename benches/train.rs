//! A recurrent layer's training step (forward + full BPTT) on the CPU path and
//! on the best adapter, with the GPU wait inside the timed region. Shapes come
//! from `benches/shapes.json` (shared with `rnn-wgpu bench` and the PyTorch
//! script): the `cpu` table on the CPU, `gpu` on a hardware GPU, `small` on a
//! software adapter. Throughput is in FLOP (forward + backward matmuls).

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rnn_wgpu::backend::{Backend, CpuBackend, GpuBackend};
use rnn_wgpu::bench::{RnnShape, shape_table};
use rnn_wgpu::gpu::GpuContext;
use rnn_wgpu::nn::{Rnn, RnnConfig};
use rnn_wgpu::parity::uniform;

fn bench_step<B: Backend>(
    c: &mut Criterion,
    b: &B,
    prefix: &str,
    shapes: &[RnnShape],
    sync: &dyn Fn(),
) {
    let mut group = c.benchmark_group(format!("{prefix}/rnn_step"));
    group.sample_size(10);
    for s in shapes {
        let cfg = RnnConfig::new(s.cell, s.input, s.hidden).layers(s.layers);
        let mut rnn = Rnn::new(b.clone(), cfg, 1).unwrap();
        let x = b
            .tensor_f64(
                &[s.seq, s.batch, s.input],
                &uniform(1, s.seq * s.batch * s.input, -1.0, 1.0),
            )
            .unwrap();
        let dy = b
            .tensor_f64(
                &[s.seq, s.batch, s.hidden],
                &uniform(2, s.seq * s.batch * s.hidden, -1.0, 1.0),
            )
            .unwrap();
        let grads = rnn.zeros_like_params().unwrap();
        group.throughput(Throughput::Elements(s.step_flops() as u64));
        let name = format!(
            "{} I{} H{} B{} T{} (elements = FLOP)",
            s.cell.name(),
            s.input,
            s.hidden,
            s.batch,
            s.seq
        );
        group.bench_function(name, |bench| {
            bench.iter(|| {
                let (_, saved) = rnn.forward_train(&x, None, None, None, None).unwrap();
                rnn.backward(&saved, Some(&dy), None, None, &grads).unwrap();
                sync();
            })
        });
    }
    group.finish();
}

fn steps(c: &mut Criterion) {
    let table = shape_table().unwrap();
    let cpu = CpuBackend::<f32>::new();
    bench_step(c, &cpu, "cpu", &table.cpu.shapes().unwrap(), &|| {});
    match GpuContext::from_env() {
        Ok(ctx) => {
            let software = ctx.adapter().is_software();
            let ctx = Arc::new(ctx);
            let gpu = GpuBackend::new(ctx.clone()).unwrap();
            let grid = if software { table.small } else { table.gpu };
            let sync = move || ctx.sync().unwrap();
            bench_step(c, &gpu, "gpu", &grid.shapes().unwrap(), &sync);
        }
        Err(e) => eprintln!("no GPU benchmarks: {e}"),
    }
}

criterion_group!(benches, steps);
criterion_main!(benches);
