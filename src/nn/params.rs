//! Named views into one flat parameter buffer.
//!
//! A model's parameters live in one tensor `[P]` and its gradients in another
//! of the same layout, so that an optimizer step or a gradient norm is one
//! kernel over one buffer, and a checkpoint is a list of named slices.
//!
//! ```
//! use rnn_wgpu::nn::RnnConfig;
//! use rnn_wgpu::ops::cell::Cell;
//!
//! let layout = RnnConfig::new(Cell::Gru, 3, 4).bidirectional(true).layout();
//! let w = layout.get("weight_hh_l0_reverse").unwrap(); // PyTorch's names
//! assert_eq!(w.shape, [12, 4]); // [G·H, H]
//! assert_eq!(layout.total, 2 * (12 * 3 + 12 * 4 + 12 + 12));
//! ```

/// One named parameter: its shape and where it starts in the flat buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamEntry {
    /// PyTorch-style name, e.g. `weight_ih_l0_reverse`.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Offset in elements.
    pub offset: usize,
}

impl ParamEntry {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the parameter has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element range in the flat buffer.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// The parameters of a model, in order, packed back to back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParamLayout {
    /// Entries in storage order.
    pub entries: Vec<ParamEntry>,
    /// Total number of elements P.
    pub total: usize,
}

impl ParamLayout {
    /// Appends a parameter; returns its offset.
    pub fn push(&mut self, name: impl Into<String>, shape: &[usize]) -> usize {
        let offset = self.total;
        let entry = ParamEntry {
            name: name.into(),
            shape: shape.to_vec(),
            offset,
        };
        self.total += entry.len();
        self.entries.push(entry);
        offset
    }

    /// The entry called `name`.
    pub fn get(&self, name: &str) -> Option<&ParamEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Appends every entry of `other` under `prefix` (e.g. `rnn.`); returns the offset of the first.
    pub fn extend_prefixed(&mut self, prefix: &str, other: &ParamLayout) -> usize {
        let base = self.total;
        for e in &other.entries {
            self.push(format!("{prefix}{}", e.name), &e.shape);
        }
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_pack_back_to_back() {
        let mut l = ParamLayout::default();
        assert_eq!(l.push("a", &[2, 3]), 0);
        assert_eq!(l.push("b", &[4]), 6);
        assert_eq!(l.total, 10);
        assert_eq!(l.get("b").unwrap().range(), 6..10);
        let mut m = ParamLayout::default();
        m.push("x", &[1]);
        assert_eq!(m.extend_prefixed("rnn.", &l), 1);
        assert_eq!(m.get("rnn.b").unwrap().offset, 7);
    }
}
