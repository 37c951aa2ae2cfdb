//! A pool of device tensors for the layers' temporaries and results.
//!
//! Layers hand their results to callers as values: a tensor taken from the
//! pool is returned to the caller, and the pool reuses its memory only once
//! nobody else holds a handle to it ([`Backend::is_unique`]). A training loop
//! therefore allocates during its first steps and then never again (the same
//! shapes come back every step), while an output the caller keeps is never
//! overwritten by a later call.
//!
//! Reuse is safe on the GPU although recorded work may still be pending: the
//! queue runs work in the order it was recorded, so a later kernel writing a
//! reused buffer runs after every earlier kernel that read it.
//!
//! Free tensors that go unused for [`IDLE_PASSES`] passes are released (a
//! pass is one forward, backward or step of the owning layer; a tensor a
//! caller holds counts as used), so the buffers of an occasional large shape
//! (an evaluation batch) do not stay resident. A loop that runs more passes
//! than that between two uses of a shape (say a few hundred streaming steps
//! between training steps) allocates that shape's buffers again.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::{Backend, XentBuffers};
use crate::error::Result;
use crate::gpu::checked_numel;
use crate::ops::softmax_xent::{IGNORE_INDEX, Rows};
use crate::precision::Precision;

/// Passes a free tensor may go unused before the pool releases it.
pub const IDLE_PASSES: u64 = 256;

/// Source of the ids that tie a saved forward to the layer or model that made it.
static NEXT_OWNER: AtomicU64 = AtomicU64::new(0);

/// A fresh id for a layer or model.
pub(crate) fn next_owner_id() -> u64 {
    NEXT_OWNER.fetch_add(1, Ordering::Relaxed)
}

#[derive(Debug)]
struct Entry<B: Backend> {
    tensor: B::Tensor,
    len: usize,
    /// From [`Backend::zeros_packed`] ([`Pool::take_packed`]).
    packed: bool,
    last_pass: u64,
}

/// Tensors of one layer (or model), reused once nobody outside holds them.
#[derive(Debug)]
pub(crate) struct Pool<B: Backend> {
    entries: Vec<Entry<B>>,
    pass: u64,
    poison: bool,
    store: Precision,
}

impl<B: Backend> Default for Pool<B> {
    fn default() -> Self {
        Pool {
            entries: Vec::new(),
            pass: 0,
            poison: false,
            store: Precision::F32,
        }
    }
}

impl<B: Backend> Pool<B> {
    /// Fill every reused tensor with NaN before handing it out, so that a
    /// kernel reading memory it was not given shows up (for tests and debugging).
    pub fn set_poison(&mut self, on: bool) {
        self.poison = on;
    }

    /// Stores the tensors [`Pool::take`] hands out from now on at `p` (the
    /// layer's activations and activation gradients; f32 by default).
    pub fn set_store(&mut self, p: Precision) {
        self.store = p;
    }

    /// Starts a pass; releases free tensors unused for [`IDLE_PASSES`] passes
    /// (a tensor still held by someone counts as used in this pass).
    pub fn next_pass(&mut self, b: &B) {
        self.pass += 1;
        let pass = self.pass;
        self.entries.retain_mut(|e| {
            if !b.is_unique(&e.tensor) {
                e.last_pass = pass;
            }
            e.last_pass + IDLE_PASSES >= pass
        });
    }

    /// A tensor of `shape` that nobody else holds. A reused one keeps its
    /// old contents: the caller writes every element before reading it.
    pub fn take(&mut self, b: &B, shape: &[usize]) -> Result<B::Tensor> {
        self.take_stored(b, shape, self.store)
    }

    /// [`Pool::take`] of a tensor stored at `store` (f32 scratch of a
    /// 16-bit pass: the per-row losses).
    pub fn take_stored(&mut self, b: &B, shape: &[usize], store: Precision) -> Result<B::Tensor> {
        self.take_as(b, shape, store, false)
    }

    /// [`Pool::take`] of a tensor only the cell steps write and read (the
    /// saved gates): packed two values a word on the GPU in a 16-bit pass
    /// ([`Backend::zeros_packed`]); reused only as such.
    pub fn take_packed(&mut self, b: &B, shape: &[usize]) -> Result<B::Tensor> {
        self.take_as(b, shape, self.store, true)
    }

    fn take_as(
        &mut self,
        b: &B,
        shape: &[usize],
        store: Precision,
        packed: bool,
    ) -> Result<B::Tensor> {
        let len = checked_numel(shape).unwrap_or(usize::MAX);
        let pass = self.pass;
        if let Some(e) = self.entries.iter_mut().find(|e| {
            e.len == len
                && e.packed == packed
                && b.store_of(&e.tensor) == store
                && b.is_unique(&e.tensor)
        }) {
            e.last_pass = pass;
            let t = b.reshape(&e.tensor, shape)?;
            if self.poison {
                b.fill(&t, 0, len, f64::NAN)?;
            }
            return Ok(t);
        }
        let t = if packed {
            b.zeros_packed(shape, store)?
        } else {
            b.zeros_stored(shape, store)?
        };
        self.entries.push(Entry {
            tensor: t.clone(),
            len,
            packed,
            last_pass: pass,
        });
        Ok(t)
    }

    /// [`Pool::take`], zero-filled.
    pub fn zeros(&mut self, b: &B, shape: &[usize]) -> Result<B::Tensor> {
        let t = self.take(b, shape)?;
        b.fill(&t, 0, b.numel(&t), 0.0)?;
        Ok(t)
    }

    /// Bytes of the pool's tensors (in use or free): the layer's workspace,
    /// as held ([`Backend::held_bytes`]) or at the storage precision
    /// ([`Backend::stored_bytes`]) with `packed`.
    pub fn bytes(&self, b: &B, packed: bool) -> u64 {
        self.entries
            .iter()
            .map(|e| {
                if packed {
                    b.stored_bytes(&e.tensor)
                } else {
                    b.held_bytes(&e.tensor)
                }
            })
            .sum()
    }

    /// An optional tensor: [`Pool::take`] when `want`.
    pub fn take_if(&mut self, b: &B, want: bool, shape: &[usize]) -> Result<Option<B::Tensor>> {
        want.then(|| self.take(b, shape)).transpose()
    }

    /// Records the mean cross-entropy of `logits` `[R, V]` against `targets`
    /// `[R]` (rows at `IGNORE_INDEX` count for nothing), its summary into
    /// `summary` at `summary_off`, and with `dlogits` the gradient of the
    /// mean; the per-row scratch comes from the pool.
    #[allow(clippy::too_many_arguments)]
    pub fn xent(
        &mut self,
        b: &B,
        shape: Rows,
        logits: &B::Tensor,
        targets: &B::Ints,
        summary: &B::Tensor,
        summary_off: usize,
        scale: f64,
        dlogits: Option<&B::Tensor>,
    ) -> Result<()> {
        let out = XentBuffers {
            loss: self.take_stored(b, &[shape.rows], Precision::F32)?,
            stats: self.take_stored(b, &[3 * shape.rows], Precision::F32)?,
            summary: summary.clone(),
            summary_off,
        };
        b.xent(shape, logits, targets, IGNORE_INDEX, scale, &out, dlogits)
    }

    /// Tensors the pool holds (in use or free).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuBackend;

    #[test]
    fn reuses_only_what_nobody_holds() {
        let b = CpuBackend::<f32>::new();
        let mut pool = Pool::default();
        let x = pool.take(&b, &[2, 3]).unwrap();
        b.write(&x, &[1.0; 6]).unwrap();
        // x is held: a second tensor of the same size is new memory.
        let y = pool.take(&b, &[6]).unwrap();
        assert_eq!(b.allocations(), 2);
        assert_eq!(b.read(&x).unwrap(), vec![1.0; 6]);
        drop(y);
        // y is free again: reused, reshaped, no allocation.
        let z = pool.take(&b, &[3, 2]).unwrap();
        assert_eq!(b.allocations(), 2);
        assert_eq!(b.shape(&z), &[3, 2]);
        // A view keeps its storage held.
        let view = b.reshape(&z, &[6]).unwrap();
        drop(z);
        let w = pool.take(&b, &[6]).unwrap();
        assert_eq!(b.allocations(), 3);
        drop((view, w));
        assert_eq!(pool.len(), 3);
    }

    #[test]
    fn idle_tensors_are_released_and_poison_is_nan() {
        let b = CpuBackend::<f32>::new();
        let mut pool = Pool::default();
        let held = pool.take(&b, &[4]).unwrap();
        drop(pool.take(&b, &[5]).unwrap());
        for _ in 0..=IDLE_PASSES {
            pool.next_pass(&b);
        }
        // The free one went; the held one stays.
        assert_eq!(pool.len(), 1);
        drop(held);
        // Held until now, so not idle: reused, not released.
        pool.next_pass(&b);
        assert_eq!(pool.len(), 1);
        let before = b.allocations();
        drop(pool.take(&b, &[4]).unwrap());
        assert_eq!(b.allocations(), before);
        pool.set_poison(true);
        let again = pool.take(&b, &[4]).unwrap();
        assert!(b.read(&again).unwrap().iter().all(|v| v.is_nan()));
        let zeroed = pool.zeros(&b, &[4]).unwrap();
        assert_eq!(b.read(&zeroed).unwrap(), vec![0.0; 4]);
    }
}
