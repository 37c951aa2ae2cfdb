//! Token embedding: forward gathers rows of a table, backward sums gradient
//! rows per token (in position order, so it is deterministic).
//!
//! The GPU backward is O(N·E + V·E): `embed_sort` (one workgroup) sorts the
//! positions by token, stably, with a 4-bit radix sort and records where each
//! token's run starts; `embed_backward` then sums, for each table element, the
//! rows of its token's run in position order, bitwise what the CPU twin adds.
//!
//! CPU twin: [`forward_cpu`], [`backward_cpu`]. GPU: `shaders/embed.wgsl`.

use super::matmul::u32_of;
use super::need_len;
use crate::error::{Error, Result};
use crate::gpu::kernel::{Access, KernelDef, KernelInfo, Shader, binding_names, kernel_params};
use crate::gpu::{DType, GpuTensor, Recorder};
use crate::real::Real;

/// Sizes and offsets of an embedding lookup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmbedSpec {
    /// Positions N (tokens).
    pub n: usize,
    /// Width E.
    pub e: usize,
    /// Vocabulary V.
    pub v: usize,
    /// Offset of the table (and of its gradient).
    pub table_off: usize,
    /// How the table is stored.
    pub table: Table,
    /// Offset of the output `[N, E]` (forward) or of the output gradient
    /// (backward).
    pub out_off: usize,
}

/// How a lookup's table is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Table {
    /// `[V, E]`, token v's row at `table_off + v·E` (an embedding); the
    /// output gradient's rows are E wide.
    #[default]
    Rows,
    /// `[E, ld]`, token v's values in column v: a layer's `W_ih` `[G·H, V]`
    /// read as a lookup, which is what its product with one-hot rows is.
    /// The forward adds `bias[bias_off + j]` (the table's buffer) as that
    /// product's bias; the backward reads output-gradient rows `dout_ld`
    /// apart.
    Columns {
        /// Row stride of the table (V, or more).
        ld: usize,
        /// Offset of the bias `[E]` in the table's buffer.
        bias_off: usize,
        /// Row stride of the output gradient.
        dout_ld: usize,
    },
}

impl EmbedSpec {
    /// Where token `t`'s element `j` sits in the table's buffer.
    fn at(&self, t: usize, j: usize) -> usize {
        match self.table {
            Table::Rows => self.table_off + t * self.e + j,
            Table::Columns { ld, .. } => self.table_off + j * ld + t,
        }
    }

    /// Row stride of the output gradient.
    fn dout_ld(&self) -> usize {
        match self.table {
            Table::Rows => self.e,
            Table::Columns { dout_ld, .. } => dout_ld,
        }
    }

    /// The elements of the table's buffer the lookup reaches.
    fn table_need(&self) -> usize {
        match self.table {
            Table::Rows => self.v.saturating_mul(self.e).saturating_add(self.table_off),
            Table::Columns { ld, bias_off, .. } => (self.e - 1)
                .saturating_mul(ld)
                .saturating_add(self.v)
                .saturating_add(self.table_off)
                .max(bias_off.saturating_add(self.e)),
        }
    }
}

impl EmbedSpec {
    fn validate(&self, tokens: usize, table: usize, out: usize, backward: bool) -> Result<()> {
        if self.n == 0 || self.e == 0 || self.v == 0 {
            return Err(Error::invalid(
                "embedding",
                format!("empty sizes N = {}, E = {}, V = {}", self.n, self.e, self.v),
            ));
        }
        need_len("embedding tokens", self.n, tokens)?;
        if let Table::Columns { ld, dout_ld, .. } = self.table
            && (ld < self.v || dout_ld < self.e)
        {
            return Err(Error::invalid(
                "embedding table",
                format!(
                    "column layout strides ld = {ld}, dout_ld = {dout_ld} below V = {}, E = {}",
                    self.v, self.e
                ),
            ));
        }
        need_len("embedding table", self.table_need(), table)?;
        // The output's rows are E wide; the output gradient's dout_ld.
        let ld = if backward { self.dout_ld() } else { self.e };
        let need = (self.n - 1)
            .saturating_mul(ld)
            .saturating_add(self.e)
            .saturating_add(self.out_off);
        let what = if backward {
            "embedding output gradient"
        } else {
            "embedding output"
        };
        need_len(what, need, out)
    }
}

/// `out[n, :] = table[tokens[n], :]`; tokens outside `[0, V)` give zeros.
pub fn forward_cpu<T: Real>(
    s: &EmbedSpec,
    tokens: &[i32],
    table: &[T],
    out: &mut [T],
) -> Result<()> {
    s.validate(tokens.len(), table.len(), out.len(), false)?;
    for (n, &t) in tokens[..s.n].iter().enumerate() {
        let row = &mut out[s.out_off + n * s.e..s.out_off + (n + 1) * s.e];
        let valid = t >= 0 && (t as usize) < s.v;
        match s.table {
            Table::Rows if valid => {
                let start = s.table_off + t as usize * s.e;
                row.copy_from_slice(&table[start..start + s.e]);
            }
            Table::Rows => row.fill(T::zero()),
            // The product of a one-hot row with W_ih, plus the bias.
            Table::Columns { bias_off, .. } => {
                for (j, o) in row.iter_mut().enumerate() {
                    let w = if valid {
                        table[s.at(t as usize, j)]
                    } else {
                        T::zero()
                    };
                    *o = w + table[bias_off + j];
                }
            }
        }
    }
    Ok(())
}

/// `dtable[v, :] (+)= Σ_{n: tokens[n] = v} dout[n, :]`, positions in order.
pub fn backward_cpu<T: Real>(
    s: &EmbedSpec,
    tokens: &[i32],
    dout: &[T],
    dtable: &mut [T],
    accumulate: bool,
) -> Result<()> {
    s.validate(tokens.len(), dtable.len(), dout.len(), true)?;
    let ld = s.dout_ld();
    let mut acc = vec![T::zero(); s.v * s.e];
    for (n, &t) in tokens[..s.n].iter().enumerate() {
        if t >= 0 && (t as usize) < s.v {
            let row = &mut acc[t as usize * s.e..(t as usize + 1) * s.e];
            let from = s.out_off + n * ld;
            for (a, &d) in row.iter_mut().zip(&dout[from..from + s.e]) {
                *a += d;
            }
        }
    }
    for (i, a) in acc.into_iter().enumerate() {
        let d = &mut dtable[s.at(i / s.e, i % s.e)];
        *d = if accumulate { *d + a } else { a };
    }
    Ok(())
}

kernel_params! {
    struct Params {
        n: u32,
        e: u32,
        v: u32,
        table_off: u32,
        out_off: u32,
        accumulate: u32,
        passes: u32,
        sorted_off: u32,
        columns: u32,
        ld: u32,
        bias_off: u32,
        dout_ld: u32,
    }
}

impl Params {
    fn of(s: &EmbedSpec, accumulate: bool) -> Result<Self> {
        u32_of("N·E", s.n * s.e)?;
        u32_of("V·E", s.v * s.e)?;
        u32_of("table", s.table_need())?;
        u32_of(
            "output",
            s.out_off
                .saturating_add(s.n.saturating_mul(s.dout_ld().max(s.e))),
        )?;
        Ok(Params {
            n: u32_of("N", s.n)?,
            e: u32_of("E", s.e)?,
            v: u32_of("V", s.v)?,
            table_off: u32_of("table_off", s.table_off)?,
            out_off: u32_of("out_off", s.out_off)?,
            accumulate: accumulate as u32,
            passes: 0,
            sorted_off: 0,
            columns: matches!(s.table, Table::Columns { .. }) as u32,
            ld: u32_of(
                "ld",
                match s.table {
                    Table::Rows => 0,
                    Table::Columns { ld, .. } => ld,
                },
            )?,
            bias_off: u32_of(
                "bias_off",
                match s.table {
                    Table::Rows => 0,
                    Table::Columns { bias_off, .. } => bias_off,
                },
            )?,
            dout_ld: u32_of("dout_ld", s.dout_ld())?,
        })
    }
}

// Binding numbers of `shaders/embed.wgsl`, named after its variables.
binding_names! {
    TOKENS = 1,
    TABLE = 2,
    OUT = 3,
    DOUT = 4,
    DTABLE = 5,
    ORDER = 6,
    ORDER_IN = 7,
}

const FORWARD: KernelDef<Params> = KernelDef::new(
    Shader::Embed,
    "embed_forward",
    &[
        (binding::TOKENS, Access::Read),
        (binding::TABLE, Access::Read),
        (binding::OUT, Access::ReadWrite),
    ],
    &["STORE", "TABLE_LAYOUT", "OUT_LAYOUT"],
);

const SORT: KernelDef<Params> = KernelDef::new(
    Shader::Embed,
    "embed_sort",
    &[
        (binding::TOKENS, Access::Read),
        (binding::ORDER, Access::ReadWrite),
    ],
    &[],
);

const BACKWARD: KernelDef<Params> = KernelDef::new(
    Shader::Embed,
    "embed_backward",
    &[
        (binding::TOKENS, Access::Read),
        (binding::DOUT, Access::Read),
        (binding::DTABLE, Access::ReadWrite),
        (binding::ORDER_IN, Access::Read),
    ],
    &["STORE"],
);

/// Every kernel of this module (see [`super::kernels`]).
pub(super) const KERNELS: &[KernelInfo] = &[FORWARD.info(), SORT.info(), BACKWARD.info()];

/// Records the gather on the GPU.
pub fn forward_gpu(
    rec: &mut Recorder<'_>,
    s: &EmbedSpec,
    tokens: &GpuTensor,
    table: &GpuTensor,
    out: &GpuTensor,
) -> Result<()> {
    tokens.expect_dtype("embedding tokens", DType::I32)?;
    let table_layout = crate::ops::memory::read_layout("embedding table", table)?;
    let out_layout = crate::ops::memory::read_layout("embedding output", out)?;
    s.validate(tokens.len(), table.len(), out.len(), false)?;
    let len = (s.n * s.e) as u64;
    // Packed: one invocation a word, from an even offset.
    let invocations = if out_layout > 0.0 {
        if !s.out_off.is_multiple_of(2) {
            return Err(Error::invalid(
                "embedding output",
                format!(
                    "is packed two 16-bit values a word, so its offset must be even (it is {})",
                    s.out_off
                ),
            ));
        }
        len.div_ceil(2)
    } else {
        len
    };
    let grid = rec.ctx().grid(invocations.div_ceil(256))?;
    rec.dispatch(
        FORWARD,
        &[
            crate::ops::memory::store_constant(out),
            ("TABLE_LAYOUT", table_layout),
            ("OUT_LAYOUT", out_layout),
        ],
        &[
            (binding::TOKENS, tokens.buffer()),
            (binding::TABLE, table.buffer()),
            (binding::OUT, out.buffer()),
        ],
        &Params::of(s, false)?,
        grid,
    )
}

/// Elements of the i32 scratch [`backward_gpu`] needs: two position arrays
/// and the start of each token's run, `2N + V`.
pub fn sort_scratch_len(s: &EmbedSpec) -> usize {
    s.n.saturating_mul(2).saturating_add(s.v)
}

/// Radix passes (4 bits each) that sort keys up to V (a token outside
/// `[0, V)` has key V): at least one.
fn sort_passes(v: usize) -> u32 {
    let bits = usize::BITS - v.leading_zeros();
    bits.div_ceil(4).max(1)
}

/// Records the gradient scatter on the GPU: the stable sort of the positions
/// by token into `scratch` (i32, at least [`sort_scratch_len`] elements), then
/// the sums.
pub fn backward_gpu(
    rec: &mut Recorder<'_>,
    s: &EmbedSpec,
    tokens: &GpuTensor,
    dout: &GpuTensor,
    dtable: &GpuTensor,
    accumulate: bool,
    scratch: &GpuTensor,
) -> Result<()> {
    tokens.expect_dtype("embedding tokens", DType::I32)?;
    dout.expect_dtype("embedding dout", DType::F32)?;
    dtable.expect_dtype("embedding dtable", DType::F32)?;
    scratch.expect_dtype("embedding sort scratch", DType::I32)?;
    s.validate(tokens.len(), dtable.len(), dout.len(), true)?;
    need_len("embedding sort scratch", sort_scratch_len(s), scratch.len())?;
    u32_of("2N + V", sort_scratch_len(s))?;
    let passes = sort_passes(s.v);
    let params = Params {
        passes,
        // The passes ping-pong between [0, N) and [N, 2N), from [0, N).
        sorted_off: u32_of("N", if passes.is_multiple_of(2) { 0 } else { s.n })?,
        ..Params::of(s, accumulate)?
    };
    rec.dispatch(
        SORT,
        &[],
        &[
            (binding::TOKENS, tokens.buffer()),
            (binding::ORDER, scratch.buffer()),
        ],
        &params,
        rec.ctx().grid(1)?,
    )?;
    let grid = rec.ctx().grid(((s.v * s.e) as u64).div_ceil(256))?;
    rec.dispatch(
        BACKWARD,
        &[crate::ops::memory::store_constant(dtable)],
        &[
            (binding::TOKENS, tokens.buffer()),
            (binding::DOUT, dout.buffer()),
            (binding::DTABLE, dtable.buffer()),
            (binding::ORDER_IN, scratch.buffer()),
        ],
        &params,
        grid,
    )
}
