//! Inverted dropout with a counter-based generator: the keep decision of
//! element `i` is a pure function of `(seed, layer, step, i)`, so the backward
//! recomputes the mask instead of storing it and the CPU path reproduces the
//! GPU's masks bit for bit.
//!
//! In data-parallel training a rank holds rows `offset..offset + B` of a
//! global batch of `B_g` rows; [`Shard`] maps its element `i` of a
//! `[T, B, W]` tensor to the element of the global `[T, B_g, W]` tensor, so
//! every rank draws the masks one process would draw for the whole batch.
//!
//! CPU twin: [`apply_cpu`], [`keep`]. GPU: `shaders/dropout.wgsl`.

use super::matmul::u32_of;
use super::memory::check_range;
use crate::error::{Error, Result};
use crate::gpu::kernel::{Access, KernelDef, KernelInfo, Shader, binding_names, kernel_params};
use crate::gpu::{DType, GpuTensor, Recorder};
use crate::real::Real;

/// What a dropout mask is keyed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropoutKey {
    /// Training seed.
    pub seed: u64,
    /// Which dropout site (layer) in the model.
    pub layer: u32,
    /// Training step (or chunk counter).
    pub step: u64,
}

/// One dropout application.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutSpec {
    /// Elements.
    pub n: usize,
    /// Offset in x.
    pub x_off: usize,
    /// Offset in y.
    pub y_off: usize,
    /// Drop probability in `[0, 1)`.
    pub p: f32,
    /// The key.
    pub key: DropoutKey,
    /// Where the tensor's rows sit in a global batch (`None`: it is the batch).
    pub shard: Option<Shard>,
}

/// A `[T, B, W]` tensor holding batch rows `offset..offset + batch` of a
/// global `[T, global, W]` one: masks are keyed on the global element index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// W: elements per (step, batch row).
    pub width: usize,
    /// B: rows held.
    pub batch: usize,
    /// First global row held.
    pub offset: usize,
    /// Rows of the global batch.
    pub global: usize,
}

impl Shard {
    /// The global element index of local element `i`.
    pub fn global_index(&self, i: usize) -> usize {
        let (r, w) = (i / self.width, i % self.width);
        let (t, b) = (r / self.batch, r % self.batch);
        (t * self.global + self.offset + b) * self.width + w
    }
}

/// The index the mask of element `i` is keyed on.
fn key_index(s: &DropoutSpec, i: usize) -> u32 {
    s.shard.map_or(i, |sh| sh.global_index(i)) as u32
}

/// PCG hash (Jarzynski & Olano 2020), the same integer arithmetic as the shader.
pub fn pcg(v: u32) -> u32 {
    let state = v.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

/// Uniform in `[0, 1)` for element `i` under `key` (24 random bits).
pub fn uniform01(key: &DropoutKey, i: u32) -> f32 {
    let mut h = pcg(i);
    h = pcg(h ^ key.step as u32);
    h = pcg(h ^ (key.step >> 32) as u32);
    h = pcg(h ^ key.layer);
    h = pcg(h ^ key.seed as u32);
    h = pcg(h ^ (key.seed >> 32) as u32);
    (h >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Whether element `i` is kept.
pub fn keep(key: &DropoutKey, i: u32, p: f32) -> bool {
    uniform01(key, i) >= p
}

fn check(s: &DropoutSpec, x_len: usize, y_len: usize) -> Result<()> {
    if !(0.0..1.0).contains(&s.p) {
        return Err(Error::invalid(
            "dropout",
            format!("probability {} is outside [0, 1)", s.p),
        ));
    }
    check_range("dropout x", s.x_off, s.n, x_len)?;
    check_range("dropout y", s.y_off, s.n, y_len)?;
    u32_of("dropout n", s.n)?;
    if let Some(sh) = s.shard {
        let fits = sh
            .offset
            .checked_add(sh.batch)
            .is_some_and(|end| end <= sh.global);
        let row = sh.width.checked_mul(sh.batch).filter(|&r| r > 0);
        if !fits || row.is_none_or(|r| !s.n.is_multiple_of(r)) {
            return Err(Error::invalid(
                "dropout shard",
                format!(
                    "rows {}..{} of {} with width {} do not describe {} elements",
                    sh.offset,
                    sh.offset + sh.batch,
                    sh.global,
                    sh.width,
                    s.n
                ),
            ));
        }
        let global = (s.n / sh.batch).saturating_mul(sh.global);
        u32_of("dropout global batch elements", global)?;
        u32_of("dropout width", sh.width)?;
    }
    Ok(())
}

/// `y = x · keep / (1 − p)` (also the backward: `dx = dy · keep / (1 − p)`).
pub fn apply_cpu<T: Real>(s: &DropoutSpec, x: &[T], y: &mut [T]) -> Result<()> {
    check(s, x.len(), y.len())?;
    // The same f32 value the GPU uses: computed in f64, then rounded.
    let scale = T::of(1.0 / (1.0 - s.p as f64));
    for i in 0..s.n {
        y[s.y_off + i] = if keep(&s.key, key_index(s, i), s.p) {
            x[s.x_off + i] * scale
        } else {
            T::zero()
        };
    }
    Ok(())
}

kernel_params! {
    struct Params {
        n: u32,
        x_off: u32,
        y_off: u32,
        layer: u32,
        seed_lo: u32,
        seed_hi: u32,
        step_lo: u32,
        step_hi: u32,
        p: f32,
        scale: f32,
        width: u32,
        batch: u32,
        offset: u32,
        global: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

// Binding numbers of `shaders/dropout.wgsl`, named after its variables.
binding_names! {
    X = 1,
    Y = 2,
}

const DROPOUT: KernelDef<Params> = KernelDef::new(
    Shader::Dropout,
    "dropout",
    &[(binding::X, Access::Read), (binding::Y, Access::ReadWrite)],
    &["STORE"],
);

/// Every kernel of this module (see [`super::kernels`]).
pub(super) const KERNELS: &[KernelInfo] = &[DROPOUT.info()];

/// Records dropout on the GPU.
pub fn apply_gpu(
    rec: &mut Recorder<'_>,
    s: &DropoutSpec,
    x: &GpuTensor,
    y: &GpuTensor,
) -> Result<()> {
    x.expect_dtype("dropout x", DType::F32)?;
    y.expect_dtype("dropout y", DType::F32)?;
    // (x and y in one buffer is refused by the recorder, as for every kernel.)
    check(s, x.len(), y.len())?;
    let params = Params {
        n: s.n as u32,
        x_off: u32_of("x_off", s.x_off)?,
        y_off: u32_of("y_off", s.y_off)?,
        layer: s.key.layer,
        seed_lo: s.key.seed as u32,
        seed_hi: (s.key.seed >> 32) as u32,
        step_lo: s.key.step as u32,
        step_hi: (s.key.step >> 32) as u32,
        p: s.p,
        // The same f32 scale the CPU path uses.
        scale: (1.0 / (1.0 - s.p as f64)) as f32,
        // Unsharded: one row of n elements, its own global batch.
        width: s.shard.map_or(s.n, |sh| sh.width).max(1) as u32,
        batch: s.shard.map_or(1, |sh| sh.batch) as u32,
        offset: s.shard.map_or(0, |sh| sh.offset) as u32,
        global: s.shard.map_or(1, |sh| sh.global) as u32,
        _pad0: 0,
        _pad1: 0,
    };
    let grid = rec.ctx().grid((s.n as u64).div_ceil(256))?;
    let buffers = [(binding::X, x.buffer()), (binding::Y, y.buffer())];
    rec.dispatch(
        DROPOUT,
        &[crate::ops::memory::store_constant(y)],
        &buffers,
        &params,
        grid,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_are_keyed_and_about_p() {
        let k = DropoutKey {
            seed: 7,
            layer: 1,
            step: 3,
        };
        let kept = (0..100_000).filter(|&i| keep(&k, i, 0.3)).count();
        assert!((kept as f64 / 1e5 - 0.7).abs() < 0.01, "{kept}");
        let other = DropoutKey { step: 4, ..k };
        let same = (0..1000)
            .filter(|&i| keep(&k, i, 0.5) == keep(&other, i, 0.5))
            .count();
        assert!(
            same < 600,
            "different steps must give different masks ({same})"
        );
    }
}
