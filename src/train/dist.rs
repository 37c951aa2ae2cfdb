//! Data-parallel training: N ranks train one model, each on its share of
//! every batch, and sum their gradients before every update.
//!
//! ```text
//! rank r of N, every window of every step:
//!     global batch(seed, step) ─▶ rows share(B, r, N) ─▶ upload
//!     forward + backward of the share, loss scaled by its share of the targets
//!     read grads and loss summary ─▶ all-gather ─▶ Σ in rank order (f64) ─▶ write back
//!     Σ grad², clip, optimizer, non-finite skip: on the summed gradient,
//!     the same arithmetic on every rank ─▶ bit-identical parameters
//! ```
//! The sum is not an all-reduce whose order the library chooses: every rank
//! gathers every rank's values and adds them in rank order, so the result is
//! the same on every rank and the same from run to run for a given N. The
//! loss of a share is weighted by `count_share / count_batch` (the share's
//! fraction of the batch's targets), so the ranks' gradients sum to the
//! gradient of the whole batch's mean loss, and dropout masks are keyed on
//! global batch rows ([`crate::nn::BatchRows`]): N ranks compute what one
//! process computes for the whole batch, up to the order of the sums.
//!
//! [`Collective`] is the only thing a transport provides: the MPI one is
//! `train::mpi::MpiWorld` (feature `mpi`), [`ThreadGroup`] runs ranks as
//! threads of one process (tests, or several adapters driven from one
//! process):
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use rnn_wgpu::backend::CpuBackend;
//! use rnn_wgpu::nn::model::ModelConfig;
//! use rnn_wgpu::ops::cell::Cell;
//! use rnn_wgpu::train::dist::{Collective, ThreadGroup};
//! use rnn_wgpu::train::tasks::TaskSpec;
//! use rnn_wgpu::train::{TrainConfig, Trainer};
//!
//! let mut config = TrainConfig::new(TaskSpec::add(2), ModelConfig::new(Cell::Gru, 8));
//! config.batch = 6; // 3 rows a rank
//! let params: Vec<Vec<f64>> = std::thread::scope(|s| {
//!     let ranks: Vec<_> = ThreadGroup::new(2, Duration::from_secs(60))
//!         .into_iter()
//!         .map(|rank| {
//!             let config = config.clone();
//!             s.spawn(move || -> rnn_wgpu::Result<Vec<f64>> {
//!                 let comm: Arc<dyn Collective> = Arc::new(rank);
//!                 let mut t = Trainer::data_parallel(CpuBackend::<f32>::new(), config, comm)?;
//!                 for _ in 0..3 {
//!                     t.train_step()?; // its rows, then the sum over ranks
//!                 }
//!                 t.read_params()
//!             })
//!         })
//!         .collect();
//!     ranks.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
//! });
//! assert_eq!(params[0], params[1]); // bit-identical replicas
//! ```

use std::fmt::Debug;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::real::Real;

/// What the ranks of a data-parallel run exchange. Every rank makes the same
/// calls in the same order.
pub trait Collective: Debug + Send + Sync {
    /// This rank, `0..size()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Writes every rank's `send` (all of one length) into `recv`
    /// (`size()` times as long), in rank order (`MPI_Allgather`).
    fn all_gather_into(&self, send: &[u8], recv: &mut [u8]) -> Result<()>;
    /// `send` is `size()` equal blocks, block `r` for rank `r`; writes the
    /// blocks every rank sent to this one into `recv` (as long as `send`),
    /// in rank order (`MPI_Alltoall`).
    fn all_to_all_into(&self, send: &[u8], recv: &mut [u8]) -> Result<()>;
    /// [`Collective::all_gather_into`] into a new vector.
    fn all_gather(&self, send: &[u8]) -> Result<Vec<u8>> {
        let mut recv = vec![0u8; send.len() * self.size()];
        self.all_gather_into(send, &mut recv)?;
        Ok(recv)
    }
    /// Replaces `data` on every rank with `root`'s (lengths may differ).
    fn broadcast(&self, root: usize, data: &mut Vec<u8>) -> Result<()>;
}

/// The number of processes an MPI launcher started this one among, read
/// from the environment it sets (Open MPI's `OMPI_COMM_WORLD_SIZE`, MPICH's
/// and Intel MPI's `PMI_SIZE`); `None` when not started by one.
pub fn launched_world_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
}

/// Rows of a batch of `batch` rows that `rank` of `size` takes: contiguous,
/// in rank order, the first `batch % size` ranks one row more.
pub fn share(batch: usize, rank: usize, size: usize) -> Range<usize> {
    let size = size.max(1);
    let (base, extra) = (batch / size, batch % size);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// Values summed at once: bounds the memory a sum takes.
pub const BUCKET: usize = 1 << 22;

/// Replaces `values` on every rank with their sum over ranks, added in rank
/// order in f64 and rounded once: the same bits on every rank, and the same
/// for any bucket size.
///
/// A reduce-scatter then an all-gather, as a ring all-reduce moves: rank r
/// receives the r-th of N chunks from every rank (all-to-all), adds them in
/// rank order, and the summed chunks are gathered. Each rank sends and
/// receives 2·(N − 1)/N of the values' bytes, and every element is summed by
/// one rank in one fixed order. With two ranks one all-gather moves the same
/// bytes in one exchange instead of two (measured faster); the sums are the
/// same bits either way.
pub fn sum_over_ranks<T: Real>(comm: &dyn Collective, values: &mut [T]) -> Result<()> {
    RankSum::default().sum(comm, values)
}

/// [`sum_over_ranks`] with its exchange buffers kept between calls: a
/// training loop that sums every step allocates nothing once warm (fresh
/// megabytes each step cost more in page faults than the exchange itself).
#[derive(Debug, Default)]
pub struct RankSum<T> {
    recv: Vec<T>,
    send: Vec<T>,
    mine: Vec<T>,
}

impl<T: Real> RankSum<T> {
    /// Replaces `values` with their sum over the ranks of `comm` (see
    /// [`sum_over_ranks`]).
    pub fn sum(&mut self, comm: &dyn Collective, values: &mut [T]) -> Result<()> {
        let n = comm.size();
        if n <= 1 {
            return Ok(());
        }
        let len = values.len().min(BUCKET);
        let chunk = len.div_ceil(n);
        let grow = |v: &mut Vec<T>, want: usize| {
            if v.len() < want {
                v.resize(want, T::zero());
            }
        };
        grow(&mut self.recv, n * len.max(chunk));
        if n > 2 {
            grow(&mut self.send, n * chunk);
            grow(&mut self.mine, chunk);
        }
        for bucket in values.chunks_mut(BUCKET) {
            let len = bucket.len();
            if n == 2 {
                // Two ranks: an all-gather moves the same bytes in one exchange.
                let all = &mut self.recv[..2 * len];
                comm.all_gather_into(bytemuck::cast_slice(bucket), bytemuck::cast_slice_mut(all))?;
                let (a, b) = all.split_at(len);
                for ((v, &x), &y) in bucket.iter_mut().zip(a).zip(b) {
                    *v = T::of(x.f64() + y.f64());
                }
                continue;
            }
            let chunk = len.div_ceil(n);
            // Block r: the r-th chunk, zero-padded to `chunk`.
            let send = &mut self.send[..n * chunk];
            send[..len].copy_from_slice(bucket);
            send[len..].fill(T::zero());
            let got = &mut self.recv[..n * chunk];
            comm.all_to_all_into(bytemuck::cast_slice(send), bytemuck::cast_slice_mut(got))?;
            let mine = &mut self.mine[..chunk];
            for (i, m) in mine.iter_mut().enumerate() {
                let mut acc = 0.0f64;
                for r in 0..n {
                    acc += got[r * chunk + i].f64();
                }
                *m = T::of(acc);
            }
            let all = &mut self.recv[..n * chunk];
            comm.all_gather_into(bytemuck::cast_slice(mine), bytemuck::cast_slice_mut(all))?;
            bucket.copy_from_slice(&all[..len]);
        }
        Ok(())
    }
}

/// True on every rank when `flag` is true on any (a stop every rank agrees on).
pub fn any_rank(comm: &dyn Collective, flag: bool) -> Result<bool> {
    Ok(comm.all_gather(&[u8::from(flag)])?.iter().any(|&b| b != 0))
}

/// FNV-1a of `bytes`: a fingerprint to compare replicas with.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Checks that every rank holds the same `value` (its fingerprint), with an
/// error naming the first rank that differs from rank 0, and `what` it is.
pub fn same_on_all(comm: &dyn Collective, what: &str, value: &[u8]) -> Result<()> {
    let all = comm.all_gather(&fingerprint(value).to_le_bytes())?;
    let prints: Vec<u64> = all
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    match prints.iter().position(|&p| p != prints[0]) {
        None => Ok(()),
        Some(r) => Err(Error::Distributed {
            rank: comm.rank(),
            message: format!("rank {r}'s {what} differs from rank 0's"),
        }),
    }
}

/// Ranks as threads of one process: [`ThreadGroup::new`] makes the ranks,
/// each moved into its own thread. A rank dropped (its thread ended or
/// panicked) while others wait makes their calls fail instead of hang.
#[derive(Debug)]
pub struct ThreadGroup;

#[derive(Debug, Default)]
struct Exchange {
    /// Round number of the exchange in progress.
    round: u64,
    parts: Vec<Option<Vec<u8>>>,
    /// The finished round's parts, until every rank has read them.
    done: Option<Arc<Vec<Vec<u8>>>>,
    unread: usize,
    /// A rank that left the group.
    left: Option<usize>,
}

#[derive(Debug)]
struct Shared {
    size: usize,
    state: Mutex<Exchange>,
    changed: Condvar,
    timeout: Duration,
}

/// One rank of a [`ThreadGroup`].
#[derive(Debug)]
pub struct ThreadRank {
    rank: usize,
    shared: Arc<Shared>,
}

impl ThreadGroup {
    /// `size` ranks (at least 1). A call waits at most `timeout` for the others.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(size: usize, timeout: Duration) -> Vec<ThreadRank> {
        let size = size.max(1);
        let shared = Arc::new(Shared {
            size,
            state: Mutex::new(Exchange {
                parts: vec![None; size],
                ..Exchange::default()
            }),
            changed: Condvar::new(),
            timeout,
        });
        (0..size)
            .map(|rank| ThreadRank {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }
}

impl ThreadRank {
    fn lock(&self) -> MutexGuard<'_, Exchange> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check_len(&self, what: &str, got: usize, want: usize) -> Result<()> {
        if got == want {
            Ok(())
        } else {
            Err(self.error(format!("{what} holds {got} bytes, not {want}")))
        }
    }

    fn error(&self, message: String) -> Error {
        Error::Distributed {
            rank: self.rank,
            message,
        }
    }

    /// Waits while `blocked` holds, at most the group's timeout.
    fn wait_while<'a>(
        &self,
        mut g: MutexGuard<'a, Exchange>,
        blocked: impl Fn(&Exchange) -> bool,
    ) -> Result<MutexGuard<'a, Exchange>> {
        while blocked(&g) {
            let (next, t) = self
                .shared
                .changed
                .wait_timeout(g, self.shared.timeout)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            g = next;
            if t.timed_out() && blocked(&g) {
                return Err(self.error(format!(
                    "the other ranks did not answer within {:?}",
                    self.shared.timeout
                )));
            }
        }
        Ok(g)
    }

    /// Every rank's `send`, in rank order, checked to be all of one length
    /// (for `what`, a collective that needs equal parts).
    fn exchange_equal(&self, send: &[u8], what: &str) -> Result<Arc<Vec<Vec<u8>>>> {
        let parts = self.exchange(send.to_vec())?;
        if let Some(r) = parts.iter().position(|p| p.len() != send.len()) {
            return Err(self.error(format!(
                "rank {r} sent {} bytes to {what} of {}",
                parts[r].len(),
                send.len()
            )));
        }
        Ok(parts)
    }

    /// Every rank's part, in rank order.
    fn exchange(&self, part: Vec<u8>) -> Result<Arc<Vec<Vec<u8>>>> {
        let n = self.shared.size;
        // The previous round is still being read by some rank.
        let mut g = self.wait_while(self.lock(), |e| e.done.is_some())?;
        let round = g.round;
        g.parts[self.rank] = Some(part);
        if g.parts.iter().all(Option::is_some) {
            let parts: Vec<Vec<u8>> = g.parts.iter_mut().filter_map(Option::take).collect();
            g.done = Some(Arc::new(parts));
            g.unread = n;
            g.round += 1;
            self.shared.changed.notify_all();
        }
        // Until the round completes, or a rank whose part is missing left.
        let gone = |e: &Exchange| e.left.filter(|&r| e.parts[r].is_none());
        let waited = self.wait_while(g, |e| e.round == round && gone(e).is_none());
        let mut g = match waited {
            Ok(g) => g,
            Err(e) => {
                // Timed out: take the part back, so that the others see this
                // rank is missing once it leaves.
                let mut g = self.lock();
                if g.round == round {
                    g.parts[self.rank] = None;
                }
                return Err(e);
            }
        };
        if g.round == round {
            let r = gone(&g).unwrap_or(n);
            g.parts[self.rank] = None;
            return Err(self.error(format!("rank {r} left the group")));
        }
        let out = g
            .done
            .clone()
            .ok_or_else(|| self.error("an exchange ended without its parts".into()))?;
        g.unread -= 1;
        if g.unread == 0 {
            g.done = None;
            self.shared.changed.notify_all();
        }
        Ok(out)
    }
}

impl Drop for ThreadRank {
    fn drop(&mut self) {
        let mut g = self.lock();
        g.left.get_or_insert(self.rank);
        self.shared.changed.notify_all();
    }
}

impl Collective for ThreadRank {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn all_gather_into(&self, send: &[u8], recv: &mut [u8]) -> Result<()> {
        self.check_len(
            "all-gather receive buffer",
            recv.len(),
            send.len() * self.shared.size,
        )?;
        let parts = self.exchange_equal(send, "an all-gather")?;
        for (out, part) in recv.chunks_exact_mut(send.len().max(1)).zip(parts.iter()) {
            out.copy_from_slice(part);
        }
        Ok(())
    }

    fn all_to_all_into(&self, send: &[u8], recv: &mut [u8]) -> Result<()> {
        let n = self.shared.size;
        if !send.len().is_multiple_of(n) {
            return Err(self.error(format!(
                "an all-to-all of {} bytes is not {n} equal blocks",
                send.len()
            )));
        }
        self.check_len("all-to-all receive buffer", recv.len(), send.len())?;
        let block = send.len() / n;
        let parts = self.exchange_equal(send, "an all-to-all")?;
        let at = self.rank * block;
        for (out, part) in recv.chunks_exact_mut(block.max(1)).zip(parts.iter()) {
            out.copy_from_slice(&part[at..at + block]);
        }
        Ok(())
    }

    fn broadcast(&self, root: usize, data: &mut Vec<u8>) -> Result<()> {
        if root >= self.shared.size {
            return Err(self.error(format!(
                "broadcast root {root} is not a rank of {}",
                self.shared.size
            )));
        }
        let mine = if self.rank == root {
            data.clone()
        } else {
            Vec::new()
        };
        let parts = self.exchange(mine)?;
        *data = parts[root].clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_batch_in_order() {
        for (batch, size) in [(8, 2), (7, 3), (3, 3), (64, 5)] {
            let parts: Vec<Range<usize>> = (0..size).map(|r| share(batch, r, size)).collect();
            assert_eq!(parts[0].start, 0);
            assert_eq!(parts[size - 1].end, batch);
            for w in parts.windows(2) {
                assert_eq!(w[0].end, w[1].start);
                assert!(w[0].len() >= w[1].len() && w[0].len() - w[1].len() <= 1);
            }
        }
    }

    #[test]
    fn thread_ranks_sum_in_rank_order_and_agree() {
        let ranks = ThreadGroup::new(3, Duration::from_secs(20));
        let out: Vec<Vec<f32>> = std::thread::scope(|s| {
            let handles: Vec<_> = ranks
                .into_iter()
                .map(|c| {
                    s.spawn(move || {
                        let r = c.rank() as f32;
                        let mut v = vec![r + 0.1, 1e8, -1e8 + r];
                        sum_over_ranks(&c, &mut v).unwrap();
                        // Lengths that are not a multiple of the ranks: the
                        // rank-order f64 sum of every element.
                        for len in [1, 2, 5, 11] {
                            let of = |rank: usize| -> Vec<f32> {
                                crate::parity::uniform(rank as u64, len, -1.0, 1.0)
                                    .iter()
                                    .map(|&x| x as f32)
                                    .collect()
                            };
                            let mut mine = of(c.rank());
                            sum_over_ranks(&c, &mut mine).unwrap();
                            let want: Vec<f32> = (0..len)
                                .map(|i| (0..3).map(|q| of(q)[i] as f64).sum::<f64>() as f32)
                                .collect();
                            assert_eq!(mine, want, "length {len}");
                        }
                        let mut b = if c.rank() == 1 {
                            b"one".to_vec()
                        } else {
                            vec![]
                        };
                        c.broadcast(1, &mut b).unwrap();
                        assert_eq!(b, b"one");
                        assert!(any_rank(&c, c.rank() == 2).unwrap());
                        assert!(!any_rank(&c, false).unwrap());
                        same_on_all(&c, "vector", bytemuck::cast_slice(&v)).unwrap();
                        let err = same_on_all(&c, "rank", &[c.rank() as u8]).unwrap_err();
                        assert!(err.to_string().contains("rank 1's rank differs"), "{err}");
                        v
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // Summed in f64 and rounded once.
        let want = (0.1f32 as f64 + 1.1f32 as f64 + 2.1f32 as f64) as f32;
        for v in &out {
            assert_eq!(v, &out[0]);
        }
        assert_eq!(out[0][0], want);
        assert_eq!(out[0][1], 3e8);
    }

    #[test]
    fn a_rank_that_leaves_fails_the_others_instead_of_hanging() {
        let mut ranks = ThreadGroup::new(2, Duration::from_secs(20));
        let gone = ranks.pop();
        drop(gone);
        let err = ranks[0].all_gather(&[1, 2]).unwrap_err().to_string();
        assert!(err.contains("rank 1 left the group"), "{err}");
        let ranks = ThreadGroup::new(2, Duration::from_millis(50));
        let err = ranks[0].all_gather(&[1]).unwrap_err().to_string();
        assert!(err.contains("did not answer"), "{err}");
    }
}
