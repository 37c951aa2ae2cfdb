//! Layers built from the kernels, written once against [`crate::backend::Backend`].

pub mod case;
pub mod dense;
pub mod model;
pub mod params;
pub mod rnn;

pub use params::{ParamEntry, ParamLayout};
pub use rnn::{Rnn, RnnConfig, RnnInputGrads, RnnOutput};

/// Per-shape workspaces, most recent last: moves the one `matches` accepts to
/// the end and returns true; otherwise drops the oldest beyond `keep - 1` so
/// the caller can push a new one, and returns false.
pub(crate) fn reuse_workspace<W>(
    cache: &mut Vec<W>,
    keep: usize,
    matches: impl Fn(&W) -> bool,
) -> bool {
    if let Some(i) = cache.iter().position(matches) {
        let w = cache.remove(i);
        cache.push(w);
        return true;
    }
    while cache.len() >= keep.max(1) {
        cache.remove(0);
    }
    false
}
