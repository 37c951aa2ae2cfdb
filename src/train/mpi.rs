//! The MPI transport of data-parallel training (feature `mpi`): the ranks of
//! `mpirun -n N rnn-wgpu train …` exchange gradients through the system's
//! MPI (Open MPI or MPICH) with [`MpiWorld`], a [`Collective`].
//!
//! MPI's default error handler ends the job on a communication failure, and
//! the launcher ends every rank when one exits with an error or is killed:
//! a rank never waits for a peer that is gone. A rank that meets an error of
//! its own calls [`MpiWorld::abort`], which does the same at once.

use std::fmt;
use std::sync::{Mutex, MutexGuard};

use mpi::environment::Threading;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Root};

use super::dist::Collective;
use crate::error::{Error, Result};

/// Bytes one broadcast call moves (MPI counts are `int`).
const CHUNK: usize = 1 << 30;

/// This process's place in an MPI job.
pub struct MpiWorld {
    // Every MPI call goes through this lock: MPI is initialized with at
    // least MPI_THREAD_SERIALIZED, so calls from any thread are allowed as
    // long as no two run at once.
    world: Mutex<SimpleCommunicator>,
    rank: usize,
    size: usize,
    local_rank: usize,
    local_size: usize,
    // Finalizes MPI when dropped, after the communicators.
    _universe: mpi::environment::Universe,
}

// SAFETY: the communicator is only used under `world`'s lock, one call at a
// time, which MPI_THREAD_SERIALIZED (checked in `init`) allows from any
// thread; the universe is only finalized on drop, when nobody holds the world.
unsafe impl Send for MpiWorld {}
// SAFETY: as above: shared access goes through the lock.
unsafe impl Sync for MpiWorld {}

impl fmt::Debug for MpiWorld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpiWorld")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("local_rank", &self.local_rank)
            .field("local_size", &self.local_size)
            .finish()
    }
}

impl MpiWorld {
    /// Initializes MPI (once per process).
    pub fn init() -> Result<Self> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| Error::Distributed {
                rank: 0,
                message: "MPI is initialized already (one MpiWorld per process)".into(),
            })?;
        let world = universe.world();
        if threading < Threading::Serialized {
            return Err(Error::Distributed {
                rank: world.rank() as usize,
                message: format!(
                    "this MPI gives thread level {threading:?}; rnn-wgpu needs Serialized"
                ),
            });
        }
        // The processes on this machine, ranked as in the world: local rank
        // k takes the k-th adapter.
        let local = world.split_shared(world.rank());
        Ok(MpiWorld {
            rank: world.rank() as usize,
            size: world.size() as usize,
            local_rank: local.rank() as usize,
            local_size: local.size() as usize,
            world: Mutex::new(world),
            _universe: universe,
        })
    }

    fn world(&self) -> MutexGuard<'_, SimpleCommunicator> {
        self.world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// This rank's place among the ranks on its machine.
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Ranks on this machine.
    pub fn local_size(&self) -> usize {
        self.local_size
    }

    fn check(&self, what: &str, ok: bool, bytes: usize) -> Result<()> {
        if ok {
            return Ok(());
        }
        Err(Error::Distributed {
            rank: self.rank,
            message: format!(
                "an {what} of {bytes} bytes does not fit {} ranks' buffers or MPI's int counts",
                self.size
            ),
        })
    }

    /// Ends every rank of the job with `code` (`MPI_Abort`).
    pub fn abort(&self, code: i32) -> ! {
        self.world().abort(code)
    }
}

impl Collective for MpiWorld {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_gather_into(&self, send: &[u8], recv: &mut [u8]) -> Result<()> {
        self.check(
            "all-gather",
            send.len() <= i32::MAX as usize && recv.len() == send.len() * self.size(),
            send.len(),
        )?;
        self.world().all_gather_into(send, recv);
        Ok(())
    }

    fn all_to_all_into(&self, send: &[u8], recv: &mut [u8]) -> Result<()> {
        let n = self.size();
        self.check(
            "all-to-all",
            send.len().is_multiple_of(n)
                && send.len() / n <= i32::MAX as usize
                && recv.len() == send.len(),
            send.len(),
        )?;
        self.world().all_to_all_into(send, recv);
        Ok(())
    }

    fn broadcast(&self, root: usize, data: &mut Vec<u8>) -> Result<()> {
        if root >= self.size() {
            return Err(Error::Distributed {
                rank: self.rank(),
                message: format!("broadcast root {root} is not a rank of {}", self.size()),
            });
        }
        let world = self.world();
        let from = world.process_at_rank(root as i32);
        let mut len = data.len() as u64;
        from.broadcast_into(&mut len);
        data.resize(len as usize, 0);
        for chunk in data.chunks_mut(CHUNK) {
            from.broadcast_into(chunk);
        }
        Ok(())
    }
}
