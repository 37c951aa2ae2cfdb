//! Training tasks that need no download: `copy`, `add` and `text FILE` — the
//! tasks the literature used to compare LSTM and GRU.
//!
//! Every batch is a pure function of `(seed, step)`, so a run resumed from a
//! checkpoint sees exactly the data it would have seen. Held-out problems are
//! never trained on: `copy` and `add` split problems by a hash of their
//! content, `text` holds out the last tenth of the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ops::dropout::pcg;
use crate::ops::softmax_xent::IGNORE_INDEX;

/// Which task, with its settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TaskSpec {
    /// Reproduce a random string: `abcd=abcd⏎`, loss on the copy.
    Copy {
        /// Longest string.
        length: usize,
        /// Alphabet size (letters from `a`).
        symbols: usize,
    },
    /// Multi-digit addition written as characters: `123+456=579⏎`, loss on the sum.
    Add {
        /// Most digits per operand.
        digits: usize,
        /// Write the sum least-significant digit first (`123+456=975⏎`), the
        /// order in which a carry is computed (Zaremba & Sutskever,
        /// "Learning to Execute", 2014).
        #[serde(default)]
        reverse_answer: bool,
    },
    /// Character-level language model on a UTF-8 file.
    Text {
        /// The file.
        path: PathBuf,
        /// Window length T.
        seq_len: usize,
    },
}

impl TaskSpec {
    /// Addition of numbers of up to `digits` digits, the sum written as usual.
    pub fn add(digits: usize) -> Self {
        TaskSpec::Add {
            digits,
            reverse_answer: false,
        }
    }

    /// `copy`, `add` or `text`.
    pub fn name(&self) -> &'static str {
        match self {
            TaskSpec::Copy { .. } => "copy",
            TaskSpec::Add { .. } => "add",
            TaskSpec::Text { .. } => "text",
        }
    }
}

/// Characters ↔ token ids.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vocab {
    /// The symbol of each id.
    pub chars: Vec<char>,
}

impl Vocab {
    /// Number of symbols V.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// True when there are no symbols.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The id of `c`.
    pub fn id(&self, c: char) -> Option<i32> {
        self.chars.iter().position(|&x| x == c).map(|i| i as i32)
    }

    /// Ids of every character of `s`; an unknown character is an error naming it.
    pub fn encode(&self, arg: &str, s: &str) -> Result<Vec<i32>> {
        // One lookup table for the whole string (a text file can be large and
        // its vocabulary thousands of symbols); the first id of a symbol wins,
        // as in `id`.
        let ids: HashMap<char, i32> = self
            .chars
            .iter()
            .enumerate()
            .rev()
            .map(|(i, &c)| (c, i as i32))
            .collect();
        s.chars()
            .map(|c| {
                ids.get(&c).copied().ok_or_else(|| {
                    Error::invalid(
                        arg,
                        format!(
                            "character {c:?} is not in the vocabulary ({})",
                            self.describe()
                        ),
                    )
                })
            })
            .collect()
    }

    /// Characters of `ids` (unknown ids become `?`).
    pub fn decode(&self, ids: &[i32]) -> String {
        ids.iter()
            .map(|&i| self.chars.get(i as usize).copied().unwrap_or('?'))
            .collect()
    }

    fn describe(&self) -> String {
        let s: String = self.chars.iter().collect();
        format!("{:?}", s)
    }
}

/// A batch, time-major: element `t·B + b` is step `t` of row `b`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// T
    pub steps: usize,
    /// B
    pub batch: usize,
    /// Input tokens `[T, B]`.
    pub inputs: Vec<i32>,
    /// Target tokens `[T, B]`; `IGNORE_INDEX` where there is no loss.
    pub targets: Vec<i32>,
    /// Per row, the time steps `[start, end)` whose targets form the answer
    /// (for exact-match accuracy); empty for `text`.
    pub answers: Vec<(usize, usize)>,
}

/// The end-of-answer symbol of `copy` and `add` (also their padding).
pub const END: char = '\n';

/// A ready task: its vocabulary and (for `text`) the encoded file.
#[derive(Clone, Debug)]
pub struct Task {
    spec: TaskSpec,
    vocab: Vocab,
    text: Vec<i32>,
}

/// A generator for `(seed, step)`, different for every pair.
fn stream(seed: u64, step: u64, salt: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    r.set_stream(step);
    r
}

fn held_out(key: u64) -> bool {
    pcg(pcg(key as u32) ^ (key >> 32) as u32).is_multiple_of(16)
}

/// Draws allowed before concluding one side of the held-out split is empty.
const MAX_DRAWS: usize = 100_000;

/// The longest sequence a task may ask for.
pub const MAX_STEPS: usize = 1 << 20;

/// The longest vocabulary a text file may have.
pub const MAX_TEXT_VOCAB: usize = 4096;

impl Task {
    /// Builds the task (reading and encoding the file for `text`).
    pub fn new(spec: TaskSpec) -> Result<Self> {
        match &spec {
            TaskSpec::Copy { length, symbols } => {
                if *length == 0 || *length > MAX_STEPS / 2 || *symbols < 2 || *symbols > 26 {
                    return Err(Error::invalid(
                        "copy task",
                        format!(
                            "length {length} must be in 1..={} and symbols {symbols} in 2..=26",
                            MAX_STEPS / 2
                        ),
                    ));
                }
                let mut chars = vec![END, '='];
                chars.extend((0..*symbols as u8).map(|i| (b'a' + i) as char));
                Task {
                    spec,
                    vocab: Vocab { chars },
                    text: Vec::new(),
                }
                .check_split()
            }
            TaskSpec::Add { digits, .. } => {
                if *digits == 0 || *digits > 9 {
                    return Err(Error::invalid(
                        "add task",
                        format!("digits {digits} must be in 1..=9"),
                    ));
                }
                let mut chars = vec![END];
                chars.extend("0123456789+=".chars());
                Task {
                    spec,
                    vocab: Vocab { chars },
                    text: Vec::new(),
                }
                .check_split()
            }
            TaskSpec::Text { path, seq_len } => {
                let (vocab, text) = Self::read_text(path, *seq_len)?;
                Ok(Task { spec, vocab, text })
            }
        }
    }

    /// Checks that both sides of the held-out split have problems.
    fn check_split(self) -> Result<Self> {
        if self.has_answers() {
            let mut r = stream(0, 0, 3);
            self.problem(&mut r, true)?;
            self.problem(&mut r, false)?;
        }
        Ok(self)
    }

    /// A task with a known vocabulary (a checkpoint's), re-reading a text file if needed.
    pub fn with_vocab(spec: TaskSpec, vocab: Vocab) -> Result<Self> {
        let mut t = Self::new(spec)?;
        if t.vocab != vocab {
            if let TaskSpec::Text { .. } = t.spec {
                return Err(Error::invalid(
                    "text",
                    "the file's characters differ from the checkpoint's vocabulary (was the file changed?)",
                ));
            }
            t.vocab = vocab;
        }
        Ok(t)
    }

    /// A task that knows only its vocabulary: enough to encode prompts and
    /// decode samples, not to make batches of `text`.
    pub fn from_vocab(spec: TaskSpec, vocab: Vocab) -> Self {
        Task {
            spec,
            vocab,
            text: Vec::new(),
        }
    }

    fn read_text(path: &Path, seq_len: usize) -> Result<(Vocab, Vec<i32>)> {
        let s = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        if s.is_empty() {
            return Err(Error::format(path, "the text file is empty"));
        }
        let mut chars: Vec<char> = s.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        if chars.len() < 2 {
            return Err(Error::format(
                path,
                "the text needs at least 2 distinct characters",
            ));
        }
        if chars.len() > MAX_TEXT_VOCAB {
            return Err(Error::format(
                path,
                format!(
                    "{} distinct characters; at most {MAX_TEXT_VOCAB} are supported",
                    chars.len()
                ),
            ));
        }
        let vocab = Vocab { chars };
        let text = vocab.encode("text", &s)?;
        if seq_len > MAX_STEPS {
            return Err(Error::invalid(
                "seq_len",
                format!("{seq_len} is beyond the supported {MAX_STEPS}"),
            ));
        }
        let held = text.len() / 10;
        if seq_len == 0 || text.len() - held < seq_len + 1 || held < seq_len + 1 {
            return Err(Error::format(
                path,
                format!(
                    "{} characters are too few for windows of {seq_len} (the training part and \
                     the held-out tenth each need at least {})",
                    text.len(),
                    seq_len + 1
                ),
            ));
        }
        Ok((vocab, text))
    }

    /// The settings.
    pub fn spec(&self) -> &TaskSpec {
        &self.spec
    }

    /// The vocabulary.
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// True when problems have answers to match exactly (`copy`, `add`).
    pub fn has_answers(&self) -> bool {
        !matches!(self.spec, TaskSpec::Text { .. })
    }

    /// Time steps T of every batch.
    pub fn steps(&self) -> usize {
        match self.spec {
            // "s=s⏎" minus one (inputs stop before the last symbol).
            TaskSpec::Copy { length, .. } => 2 * length + 1,
            // "a+b=c⏎": d + 1 + d + 1 + (d + 1) + 1, minus one.
            TaskSpec::Add { digits, .. } => 3 * digits + 3,
            TaskSpec::Text { seq_len, .. } => seq_len,
        }
    }

    /// The training batch of `step`.
    pub fn train_batch(&self, seed: u64, step: u64, batch: usize) -> Result<Batch> {
        self.make_batch(&mut stream(seed, step, 1), batch, false)
    }

    /// A batch of held-out problems (the same for a given seed).
    pub fn eval_batch(&self, seed: u64, batch: usize) -> Result<Batch> {
        self.make_batch(&mut stream(seed, 0, 2), batch, true)
    }

    /// One problem's text (prompt and answer) for `copy` and `add`, drawn
    /// from the training or the held-out part.
    pub fn problem(&self, r: &mut ChaCha8Rng, held: bool) -> Result<(String, String)> {
        // A tiny problem space may have no problem on one side of the split.
        for _ in 0..MAX_DRAWS {
            let (prompt, answer, key) = match self.spec {
                TaskSpec::Copy { length, symbols } => {
                    let n = r.random_range(1..=length);
                    let s: String = (0..n)
                        .map(|_| (b'a' + r.random_range(0..symbols as u8)) as char)
                        .collect();
                    let key = s
                        .bytes()
                        .fold(n as u64, |k, c| k.wrapping_mul(31).wrapping_add(c as u64));
                    (format!("{s}="), s, key)
                }
                TaskSpec::Add {
                    digits,
                    reverse_answer,
                } => {
                    let number = |r: &mut ChaCha8Rng| {
                        let d = r.random_range(1..=digits as u32);
                        let lo = if d == 1 { 0 } else { 10u64.pow(d - 1) };
                        r.random_range(lo..10u64.pow(d))
                    };
                    let (a, b) = (number(r), number(r));
                    let sum = (a + b).to_string();
                    // The same problems (and the same held-out split) in
                    // either order.
                    let answer = match reverse_answer {
                        true => sum.chars().rev().collect(),
                        false => sum,
                    };
                    (
                        format!("{a}+{b}="),
                        answer,
                        a * 10u64.pow(digits as u32) + b,
                    )
                }
                TaskSpec::Text { .. } => return Ok((String::new(), String::new())),
            };
            if held_out(key) == held {
                return Ok((prompt, answer));
            }
        }
        Err(Error::invalid(
            format!("{} task", self.spec.name()),
            format!(
                "found no {} problem in {MAX_DRAWS} draws: too few distinct problems to hold some \
                 out; use longer strings, more symbols or more digits",
                if held { "held-out" } else { "training" }
            ),
        ))
    }

    fn make_batch(&self, r: &mut ChaCha8Rng, batch: usize, held: bool) -> Result<Batch> {
        let steps = self.steps();
        if batch == 0 {
            return Err(Error::invalid("batch", "must be at least 1"));
        }
        if let TaskSpec::Text { path, .. } = &self.spec
            && self.text.len() < 2 * (steps + 1)
        {
            return Err(Error::invalid(
                "text",
                format!(
                    "the text of {} is not loaded (a task built from a vocabulary only can encode and decode, not make batches)",
                    path.display()
                ),
            ));
        }
        let end = self.vocab.id(END).unwrap_or(0);
        let mut inputs = vec![end; steps * batch];
        let mut targets = vec![IGNORE_INDEX; steps * batch];
        let mut answers = Vec::with_capacity(batch);
        for b in 0..batch {
            let seq: Vec<i32> = match &self.spec {
                TaskSpec::Text { .. } => {
                    let held_len = self.text.len() / 10;
                    let (lo, hi) = if held {
                        (self.text.len() - held_len, self.text.len())
                    } else {
                        (0, self.text.len() - held_len)
                    };
                    let start = r.random_range(lo..=hi - (steps + 1));
                    let seq = self.text[start..start + steps + 1].to_vec();
                    for t in 0..steps {
                        targets[t * batch + b] = seq[t + 1];
                    }
                    seq
                }
                _ => {
                    let (prompt, answer) = self.problem(r, held)?;
                    let text = format!("{prompt}{answer}{END}");
                    // The vocabulary covers every symbol a problem can contain.
                    let seq: Vec<i32> = text
                        .chars()
                        .map(|c| self.vocab.id(c).unwrap_or(end))
                        .collect();
                    let first = prompt.chars().count() - 1;
                    let last = seq.len() - 1;
                    for t in first..last {
                        targets[t * batch + b] = seq[t + 1];
                    }
                    answers.push((first, last));
                    seq
                }
            };
            for (t, &tok) in seq.iter().take(steps).enumerate() {
                inputs[t * batch + b] = tok;
            }
        }
        Ok(Batch {
            steps,
            batch,
            inputs,
            targets,
            answers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_problems_are_laid_out_time_major() {
        let task = Task::new(TaskSpec::add(3)).unwrap();
        let b = task.train_batch(1, 0, 4).unwrap();
        assert_eq!(b.steps, 12);
        for row in 0..4 {
            let input: Vec<i32> = (0..b.steps).map(|t| b.inputs[t * 4 + row]).collect();
            let text = task.vocab().decode(&input);
            let (s, e) = b.answers[row];
            let (lhs, _) = text.split_once('=').unwrap();
            let (x, y) = lhs.split_once('+').unwrap();
            let sum: u64 = x.parse::<u64>().unwrap() + y.parse::<u64>().unwrap();
            let answer: Vec<i32> = (s..e).map(|t| b.targets[t * 4 + row]).collect();
            assert_eq!(task.vocab().decode(&answer), format!("{sum}\n"));
            assert!((0..s).all(|t| b.targets[t * 4 + row] == IGNORE_INDEX));
        }
        assert_eq!(
            b,
            task.train_batch(1, 0, 4).unwrap(),
            "batches are a function of (seed, step)"
        );
        assert_ne!(b, task.train_batch(1, 1, 4).unwrap());
    }

    #[test]
    fn reversed_answers_are_the_same_problems_written_backwards() {
        let plain = Task::new(TaskSpec::add(3)).unwrap();
        let rev = Task::new(TaskSpec::Add {
            digits: 3,
            reverse_answer: true,
        })
        .unwrap();
        let (p, r) = (
            plain.train_batch(4, 2, 16).unwrap(),
            rev.train_batch(4, 2, 16).unwrap(),
        );
        assert_eq!(p.answers, r.answers);
        for row in 0..16 {
            let text = |task: &Task, b: &Batch| -> (String, String) {
                let input: Vec<i32> = (0..b.steps).map(|t| b.inputs[t * 16 + row]).collect();
                let (s, e) = b.answers[row];
                let answer: Vec<i32> = (s..e).map(|t| b.targets[t * 16 + row]).collect();
                let prompt = task.vocab().decode(&input);
                (
                    prompt.split('=').next().unwrap().to_string(),
                    task.vocab().decode(&answer),
                )
            };
            let ((pp, pa), (rp, ra)) = (text(&plain, &p), text(&rev, &r));
            assert_eq!(pp, rp, "the same problem");
            let digits = pa.trim_end_matches(END);
            let reversed: String = digits.chars().rev().collect();
            assert_eq!(ra, format!("{reversed}{END}"), "{pp}");
        }
        // Checkpoints written before the option read as the plain task.
        let old: TaskSpec = serde_json::from_str(r#"{"Add":{"digits":3}}"#).unwrap();
        assert_eq!(old, TaskSpec::add(3));
    }

    #[test]
    fn held_out_problems_never_appear_in_training() {
        let task = Task::new(TaskSpec::add(2)).unwrap();
        let mut r = stream(5, 0, 2);
        let held: std::collections::HashSet<String> = (0..200)
            .map(|_| task.problem(&mut r, true).unwrap().0)
            .collect();
        for step in 0..50 {
            let b = task.train_batch(5, step, 32).unwrap();
            for row in 0..32 {
                let input: Vec<i32> = (0..b.steps).map(|t| b.inputs[t * 32 + row]).collect();
                let text = task.vocab().decode(&input);
                let prompt = format!("{}=", text.split('=').next().unwrap());
                assert!(!held.contains(&prompt), "{prompt} is held out");
            }
        }
    }

    #[test]
    fn copy_and_text_tasks() {
        let task = Task::new(TaskSpec::Copy {
            length: 5,
            symbols: 4,
        })
        .unwrap();
        let b = task.eval_batch(3, 2).unwrap();
        let row: Vec<i32> = (0..b.steps).map(|t| b.inputs[t * 2]).collect();
        let text = task.vocab().decode(&row);
        let (s, rest) = text.split_once('=').unwrap();
        assert!(rest.starts_with(s), "{text:?}");
        let dir = std::env::temp_dir().join(format!("rnn-wgpu-text-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t.txt");
        std::fs::write(&f, "").unwrap();
        let err = Task::new(TaskSpec::Text {
            path: f.clone(),
            seq_len: 8,
        })
        .unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        std::fs::write(&f, "hello world ".repeat(40)).unwrap();
        let t = Task::new(TaskSpec::Text {
            path: f.clone(),
            seq_len: 8,
        })
        .unwrap();
        let b = t.train_batch(1, 0, 3).unwrap();
        assert_eq!(b.inputs[3..], b.targets[..b.targets.len() - 3]);
        let err = Task::new(TaskSpec::Text {
            path: f,
            seq_len: 100,
        })
        .unwrap_err();
        assert!(err.to_string().contains("too few"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tiny_problem_spaces_are_rejected_not_hung() {
        let err = Task::new(TaskSpec::Copy {
            length: 1,
            symbols: 2,
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("too few distinct problems"),
            "{err}"
        );
        assert!(Task::new(TaskSpec::add(1)).is_ok());
    }
}
