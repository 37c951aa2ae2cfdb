//! Layers built from the kernels, written once against [`crate::backend::Backend`].

pub mod case;
pub mod dense;
pub mod model;
pub mod params;
pub(crate) mod pool;
pub mod rnn;

pub use params::{ParamEntry, ParamLayout};
pub use rnn::{BatchRows, Rnn, RnnConfig, RnnInputGrads, RnnOutput, RnnSaved, State, StepOrder};
