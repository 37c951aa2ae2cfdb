//! Training tasks that need no download: `copy`, `add`, `xml` and
//! `text FILE` — the tasks the literature used to compare LSTM and GRU
//! (Jozefowicz, Zaremba & Sutskever, "An Empirical Exploration of Recurrent
//! Network Architectures", 2015, modelled generated XML character by
//! character).
//!
//! Every batch is a pure function of `(seed, step)`, so a run resumed from a
//! checkpoint sees exactly the data it would have seen. Held-out problems are
//! never trained on: `copy`, `add` and `xml` split problems (documents) by a
//! hash of their content, `text` holds out the last tenth of the file.

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
    /// Character-level language model of generated XML documents,
    /// `<a id="3"><em>xy</em><b/></a>⏎`: nested elements (tag names from
    /// [`XML_TAGS`]), optional attributes (`name="value"`), text runs and
    /// self-closing elements; loss on every character after the first.
    Xml {
        /// Deepest nesting of elements (the root alone is depth 1).
        depth: usize,
        /// Longest document in characters, its final `⏎` included.
        length: usize,
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

    /// `copy`, `add`, `xml` or `text`.
    pub fn name(&self) -> &'static str {
        match self {
            TaskSpec::Copy { .. } => "copy",
            TaskSpec::Add { .. } => "add",
            TaskSpec::Xml { .. } => "xml",
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
    /// (for exact-match accuracy); empty for `text` and `xml`.
    pub answers: Vec<(usize, usize)>,
    /// `xml`: the positions `t·B + b` (row by row) whose target is a
    /// character of a closing tag's name — in `</name>` the characters of
    /// `name`, predicted from the `/` and from each earlier character of the
    /// name, where the model must remember which element is open. The `<`,
    /// `/` and `>` of a closing tag and self-closing tags `<name/>` do not
    /// count. Empty for the other tasks.
    pub closing: Vec<usize>,
}

/// The end-of-answer symbol of `copy` and `add`, the end of an `xml`
/// document (also their padding).
pub const END: char = '\n';

/// Tag names of `xml` documents: short names, several sharing letters, so
/// that closing a tag takes remembering which one is open.
pub const XML_TAGS: [&str; 8] = ["a", "b", "i", "em", "li", "ul", "div", "span"];

/// Attribute names of `xml` documents (an element has at most one).
pub const XML_ATTRS: [&str; 3] = ["id", "n", "key"];

/// The characters of `xml` text runs (1 to 4 of them).
pub const XML_TEXT: &str = "wxyz";

/// The characters of `xml` attribute values (1 or 2 of them, in quotes).
pub const XML_VALUES: &str = "0123456789";

/// The deepest nesting an `xml` task may ask for.
pub const MAX_XML_DEPTH: usize = 32;

/// The shortest `xml` document bound: the root with the longest tag name,
/// empty, and the final `⏎` (`<span></span>⏎`).
pub fn min_xml_length() -> usize {
    let longest = XML_TAGS.iter().map(|t| t.len()).max().unwrap_or(0);
    2 * longest + 6
}

/// The vocabulary of `xml`: [`END`] first (the padding), the markup
/// characters, the letters of tags, attributes and text, the digits.
fn xml_vocab() -> Vocab {
    let mut letters: Vec<char> = XML_TAGS
        .iter()
        .chain(&XML_ATTRS)
        .flat_map(|s| s.chars())
        .chain(XML_TEXT.chars())
        .collect();
    letters.sort_unstable();
    letters.dedup();
    let mut chars = vec![END];
    chars.extend("<>/=\" ".chars());
    chars.extend(letters);
    chars.extend(XML_VALUES.chars());
    Vocab { chars }
}

/// An `xml` document being written.
struct XmlDoc {
    /// Its characters so far.
    chars: Vec<char>,
    /// Per character: true for a character of a closing tag's name.
    closing: Vec<bool>,
    /// Most characters, the final [`END`] included.
    length: usize,
    /// Characters already promised: the closing tags of the open elements
    /// and the final [`END`].
    owed: usize,
}

impl XmlDoc {
    /// Whether `n` more characters fit beside what is owed.
    fn fits(&self, n: usize) -> bool {
        self.chars.len() + n + self.owed <= self.length
    }

    fn push(&mut self, s: &str, closing: bool) {
        for c in s.chars() {
            self.chars.push(c);
            self.closing.push(closing);
        }
    }

    /// Writes a text run if one fits.
    fn text(&mut self, r: &mut ChaCha8Rng) -> bool {
        let text = XML_TEXT.as_bytes();
        let n = r.random_range(1..=4);
        let s: String = (0..n)
            .map(|_| text[r.random_range(0..text.len())] as char)
            .collect();
        if !self.fits(n) {
            return false;
        }
        self.push(&s, false);
        true
    }

    /// Writes an element at nesting level `level` (the root is 1) of a
    /// document at most `depth` deep, if one fits: its attribute is dropped
    /// when only that does not fit, and its children stop at the first that
    /// does not.
    fn element(&mut self, r: &mut ChaCha8Rng, level: usize, depth: usize) -> bool {
        let name = XML_TAGS[r.random_range(0..XML_TAGS.len())];
        let attr = if r.random_range(0..3) == 0 {
            let key = XML_ATTRS[r.random_range(0..XML_ATTRS.len())];
            let digits = XML_VALUES.as_bytes();
            let value: String = (0..r.random_range(1..=2))
                .map(|_| digits[r.random_range(0..digits.len())] as char)
                .collect();
            format!(" {key}=\"{value}\"")
        } else {
            String::new()
        };
        // Every element below the root may be empty and close itself.
        let empty = level > 1 && r.random_range(0..4) == 0;
        let close = name.len() + 3;
        let (end, owed) = if empty { ("/>", 0) } else { (">", close) };
        let open = [format!("<{name}{attr}{end}"), format!("<{name}{end}")]
            .into_iter()
            .find(|open| self.fits(open.len() + owed));
        let Some(open) = open else {
            return false;
        };
        self.push(&open, false);
        if empty {
            return true;
        }
        self.owed += close;
        let mut last_text = false;
        // The root holds something, so that no document is a bare `<a></a>`.
        let least = usize::from(level == 1);
        for _ in 0..r.random_range(least..=3) {
            // Text at the deepest level, else one child in three (never two
            // text runs in a row: they would read as one).
            let text = !last_text && (level == depth || r.random_range(0..3) == 0);
            let wrote = if text {
                self.text(r)
            } else {
                level < depth && self.element(r, level + 1, depth)
            };
            if !wrote {
                break;
            }
            last_text = text;
        }
        self.owed -= close;
        self.push("</", false);
        self.push(name, true);
        self.push(">", false);
        true
    }
}

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
            TaskSpec::Xml { depth, length } => {
                let min = min_xml_length();
                if *depth == 0 || *depth > MAX_XML_DEPTH || *length < min || *length > MAX_STEPS {
                    return Err(Error::invalid(
                        "xml task",
                        format!(
                            "depth {depth} must be in 1..={MAX_XML_DEPTH} and length {length} \
                             in {min}..={MAX_STEPS}"
                        ),
                    ));
                }
                Task {
                    spec,
                    vocab: xml_vocab(),
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
        let mut r = stream(0, 0, 3);
        if self.has_answers() {
            self.problem(&mut r, true)?;
            self.problem(&mut r, false)?;
        }
        if self.has_closing_tags() {
            self.xml_document(&mut r, true)?;
            self.xml_document(&mut r, false)?;
        }
        Ok(self)
    }

    /// A task with a known vocabulary (a checkpoint's), re-reading a text file if needed.
    pub fn with_vocab(spec: TaskSpec, vocab: Vocab) -> Result<Self> {
        let mut t = Self::new(spec)?;
        if t.vocab != vocab {
            match t.spec {
                TaskSpec::Text { .. } => {
                    return Err(Error::invalid(
                        "text",
                        "the file's characters differ from the checkpoint's vocabulary (was the file changed?)",
                    ));
                }
                // A symbol the checkpoint lacks would be read as padding.
                TaskSpec::Xml { .. } => {
                    return Err(Error::invalid(
                        "xml",
                        "the documents' characters differ from the checkpoint's vocabulary \
                         (was it written by another version of the task?)",
                    ));
                }
                _ => {}
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
        matches!(self.spec, TaskSpec::Copy { .. } | TaskSpec::Add { .. })
    }

    /// True when evaluations measure the accuracy on closing tags (`xml`,
    /// see [`Batch::closing`]).
    pub fn has_closing_tags(&self) -> bool {
        matches!(self.spec, TaskSpec::Xml { .. })
    }

    /// The symbol that ends every problem or document, where generation
    /// stops: [`END`] for `copy`, `add` and `xml`; none for `text`.
    pub fn end_symbol(&self) -> Option<char> {
        (!matches!(self.spec, TaskSpec::Text { .. })).then_some(END)
    }

    /// What generation starts from when there is no prompt and no held-out
    /// problem to take one from: `<` for `xml` (where every document
    /// starts), the vocabulary's first character for `text`.
    pub fn fixed_prompt(&self) -> String {
        match self.spec {
            TaskSpec::Xml { .. } => "<".into(),
            _ => self
                .vocab
                .chars
                .first()
                .map(|c| c.to_string())
                .unwrap_or_default(),
        }
    }

    /// Time steps T of every batch.
    pub fn steps(&self) -> usize {
        match self.spec {
            // "s=s⏎" minus one (inputs stop before the last symbol).
            TaskSpec::Copy { length, .. } => 2 * length + 1,
            // "a+b=c⏎": d + 1 + d + 1 + (d + 1) + 1, minus one.
            TaskSpec::Add { digits, .. } => 3 * digits + 3,
            // The longest document minus one.
            TaskSpec::Xml { length, .. } => length - 1,
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
                TaskSpec::Xml { .. } | TaskSpec::Text { .. } => {
                    return Ok((String::new(), String::new()));
                }
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

    /// One `xml` document (its final [`END`] included) and, per character,
    /// whether it is a character of a closing tag's name, drawn from the
    /// training or the held-out part.
    pub fn xml_document(&self, r: &mut ChaCha8Rng, held: bool) -> Result<(String, Vec<bool>)> {
        let TaskSpec::Xml { depth, length } = self.spec else {
            return Err(Error::invalid(
                "xml document",
                format!("the task is {}, not xml", self.spec.name()),
            ));
        };
        for _ in 0..MAX_DRAWS {
            let mut doc = XmlDoc {
                chars: Vec::with_capacity(length),
                closing: Vec::with_capacity(length),
                length,
                owed: 1,
            };
            // The root always fits: `length` is at least `min_xml_length()`.
            if !doc.element(r, 1, depth) {
                return Err(Error::invalid(
                    "xml task",
                    format!("length {length} leaves no room for a root element"),
                ));
            }
            doc.push(&END.to_string(), false);
            let key = doc.chars.iter().fold(doc.chars.len() as u64, |k, &c| {
                k.wrapping_mul(31).wrapping_add(c as u64)
            });
            if held_out(key) == held {
                return Ok((doc.chars.into_iter().collect(), doc.closing));
            }
        }
        Err(Error::invalid(
            "xml task",
            format!(
                "found no {} document in {MAX_DRAWS} draws: too few distinct documents to hold \
                 some out; allow longer documents or deeper nesting",
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
        let mut closing = Vec::new();
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
                TaskSpec::Xml { .. } => {
                    let (doc, closes) = self.xml_document(r, held)?;
                    // The vocabulary covers every symbol a document can contain.
                    let seq: Vec<i32> = doc
                        .chars()
                        .map(|c| self.vocab.id(c).unwrap_or(end))
                        .collect();
                    // A language model: every character after the first is a target.
                    for t in 0..seq.len() - 1 {
                        targets[t * batch + b] = seq[t + 1];
                        if closes[t + 1] {
                            closing.push(t * batch + b);
                        }
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
            closing,
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

    fn xml(depth: usize, length: usize) -> Task {
        Task::new(TaskSpec::Xml { depth, length }).unwrap()
    }

    /// Row `b` of a batch as the document it holds: its inputs up to the
    /// last target, then that target.
    fn xml_row(task: &Task, b: &Batch, row: usize) -> String {
        let at = |t: usize| t * b.batch + row;
        let n = (0..b.steps)
            .take_while(|&t| b.targets[at(t)] != IGNORE_INDEX)
            .count();
        let mut ids: Vec<i32> = (0..n).map(|t| b.inputs[at(t)]).collect();
        ids.push(b.targets[at(n - 1)]);
        task.vocab().decode(&ids)
    }

    /// Parses `doc` independently of the generator: checks that it is one
    /// root element of tags from `XML_TAGS`, each closed in order, at most
    /// `depth` deep, with attributes `name="digits"` and text from
    /// `XML_TEXT`, ending in END; returns which characters belong to the
    /// name of a closing tag, and the deepest nesting.
    fn parse_xml(doc: &str, depth: usize) -> (Vec<bool>, usize) {
        let c: Vec<char> = doc.chars().collect();
        let mut closing = vec![false; c.len()];
        let mut open: Vec<String> = Vec::new();
        let mut deepest = 0;
        let mut i = 0;
        let name = |i: &mut usize| -> String {
            let start = *i;
            while c[*i].is_ascii_lowercase() {
                *i += 1;
            }
            c[start..*i].iter().collect()
        };
        loop {
            assert!(
                i == 0 || !open.is_empty(),
                "{doc:?}: content after the root"
            );
            match c[i] {
                '<' if c[i + 1] == '/' => {
                    i += 2;
                    let start = i;
                    let tag = name(&mut i);
                    closing[start..i].iter_mut().for_each(|x| *x = true);
                    assert_eq!(open.pop(), Some(tag), "{doc:?}: closed out of order");
                    assert_eq!(c[i], '>', "{doc:?}");
                    i += 1;
                    if open.is_empty() {
                        break;
                    }
                }
                '<' => {
                    i += 1;
                    let tag = name(&mut i);
                    assert!(XML_TAGS.contains(&tag.as_str()), "{doc:?}: tag {tag:?}");
                    if c[i] == ' ' {
                        i += 1;
                        let key = name(&mut i);
                        assert!(XML_ATTRS.contains(&key.as_str()), "{doc:?}");
                        assert_eq!((c[i], c[i + 1]), ('=', '"'), "{doc:?}");
                        i += 2;
                        let start = i;
                        while c[i].is_ascii_digit() {
                            i += 1;
                        }
                        assert!((1..=2).contains(&(i - start)), "{doc:?}: value");
                        assert_eq!(c[i], '"', "{doc:?}");
                        i += 1;
                    }
                    assert!(open.len() < depth, "{doc:?}: deeper than {depth}");
                    deepest = deepest.max(open.len() + 1);
                    if c[i] == '/' {
                        assert!(!open.is_empty(), "{doc:?}: the root closes itself");
                        i += 1;
                    } else {
                        open.push(tag);
                    }
                    assert_eq!(c[i], '>', "{doc:?}");
                    i += 1;
                }
                ch => {
                    assert!(XML_TEXT.contains(ch), "{doc:?}: {ch:?} in text");
                    assert!(!open.is_empty(), "{doc:?}: text outside the root");
                    i += 1;
                }
            }
        }
        assert_eq!(&c[i..], [END], "{doc:?}: one END after the root");
        (closing, deepest)
    }

    #[test]
    fn xml_documents_are_well_formed_and_their_closing_tags_marked() {
        for (depth, length) in [(4, 60), (1, min_xml_length()), (2, 24), (8, 200)] {
            let task = xml(depth, length);
            assert_eq!(task.steps(), length - 1);
            let mut r = stream(7, 0, 9);
            let mut deepest = 0;
            for held in [false, true] {
                for _ in 0..300 {
                    let (doc, closing) = task.xml_document(&mut r, held).unwrap();
                    assert!(doc.chars().count() <= length, "{doc:?}");
                    let (marks, deep) = parse_xml(&doc, depth);
                    assert_eq!(marks, closing, "{doc:?}");
                    deepest = deepest.max(deep);
                    for c in doc.chars() {
                        assert!(task.vocab().id(c).is_some(), "{c:?} of {doc:?}");
                    }
                }
            }
            assert_eq!(deepest, depth, "the nesting reaches the bound");
        }
    }

    #[test]
    fn xml_batches_are_documents_with_every_next_character_a_target() {
        let task = xml(4, 60);
        let bsz = 16;
        let b = task.train_batch(3, 5, bsz).unwrap();
        assert!(b.answers.is_empty());
        let mut closing = Vec::new();
        for row in 0..bsz {
            let doc = xml_row(&task, &b, row);
            let (marks, _) = parse_xml(&doc, 4);
            let n = doc.chars().count();
            for t in 0..b.steps {
                let i = t * bsz + row;
                if t + 1 < n {
                    // The target at t is the character after the input at t.
                    if t > 0 {
                        assert_eq!(b.inputs[i], b.targets[i - bsz], "{doc:?}");
                    }
                    if marks[t + 1] {
                        closing.push(i);
                    }
                } else {
                    assert_eq!(b.targets[i], IGNORE_INDEX, "padding after {doc:?}");
                }
            }
            assert!(doc.starts_with('<'));
        }
        assert_eq!(b.closing, closing);
        assert!(!b.closing.is_empty());
        assert!(b.closing.iter().all(|&i| b.targets[i] != IGNORE_INDEX));
    }

    #[test]
    fn xml_batches_are_a_function_of_seed_and_step() {
        let task = xml(4, 60);
        let b = task.train_batch(1, 7, 8).unwrap();
        assert_eq!(b, task.train_batch(1, 7, 8).unwrap());
        assert_ne!(b, task.train_batch(1, 8, 8).unwrap());
        assert_ne!(b, task.train_batch(2, 7, 8).unwrap());
        assert_eq!(
            task.eval_batch(1, 8).unwrap(),
            task.eval_batch(1, 8).unwrap()
        );
        // A task rebuilt from its settings (a resumed run) makes the same batches.
        assert_eq!(b, xml(4, 60).train_batch(1, 7, 8).unwrap());
    }

    #[test]
    fn held_out_xml_documents_never_appear_in_training() {
        // Short documents: few enough that training draws repeat, so a leak
        // of the held-out part would show.
        let task = xml(2, 16);
        let mut r = stream(5, 0, 2);
        let held: std::collections::HashSet<String> = (0..300)
            .map(|_| task.xml_document(&mut r, true).unwrap().0)
            .collect();
        let eval = task.eval_batch(5, 64).unwrap();
        let mut seen = std::collections::HashSet::new();
        let mut drawn = 0;
        for step in 0..200 {
            let b = task.train_batch(5, step, 32).unwrap();
            for row in 0..32 {
                let doc = xml_row(&task, &b, row);
                assert!(!held.contains(&doc), "{doc:?} is held out");
                seen.insert(doc);
                drawn += 1;
            }
        }
        for row in 0..64 {
            let doc = xml_row(&task, &eval, row);
            assert!(!seen.contains(&doc), "{doc:?} was trained on");
        }
        assert!(seen.len() < drawn / 2, "{} distinct of {drawn}", seen.len());
    }

    #[test]
    fn xml_vocabulary_and_settings() {
        let v = xml_vocab();
        assert_eq!(v.chars[0], END, "END pads");
        let mut sorted = v.chars.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), v.len(), "no symbol twice: {:?}", v.chars);
        assert_eq!(min_xml_length(), "<span></span>\n".len());
        assert!(
            Task::new(TaskSpec::Xml {
                depth: 1,
                length: min_xml_length()
            })
            .is_ok()
        );
        for (depth, length) in [(0, 60), (MAX_XML_DEPTH + 1, 60), (4, min_xml_length() - 1)] {
            let err = Task::new(TaskSpec::Xml { depth, length }).unwrap_err();
            assert!(err.to_string().starts_with("xml task: depth"), "{err}");
        }
        let spec = TaskSpec::Xml {
            depth: 3,
            length: 40,
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(json, r#"{"Xml":{"depth":3,"length":40}}"#);
        assert_eq!(serde_json::from_str::<TaskSpec>(&json).unwrap(), spec);
        let t = xml(3, 40);
        assert!(!t.has_answers() && t.has_closing_tags());
        assert_eq!((t.end_symbol(), t.fixed_prompt()), (Some(END), "<".into()));
        let spec = t.spec().clone();
        assert!(Task::with_vocab(spec.clone(), t.vocab().clone()).is_ok());
        let mut other = t.vocab().clone();
        other.chars.pop();
        let err = Task::with_vocab(spec, other).unwrap_err();
        assert!(err.to_string().contains("checkpoint's vocabulary"), "{err}");
        let mut r = stream(0, 0, 0);
        let add = Task::new(TaskSpec::add(2)).unwrap();
        assert!(add.xml_document(&mut r, false).is_err());
        assert!(add.train_batch(0, 0, 2).unwrap().closing.is_empty());
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
