//! The cache the engine owns: one entry per layer, of the kind the layer needs, and the ONE
//! position of the sequence.
//!
//! Entry kinds ([`LayerKind`]): full KV (every position), sliding-window KV (only the positions
//! a window can still see, plus a little slack so a chat turn can step back a few tokens), KV
//! shared with an earlier layer (nothing stored), one compressed latent per position whose
//! leading columns serve as the values (multi-head latent attention), and fixed-size recurrent
//! state (linear attention, state-space and convolution layers). A forward pass is one step:
//! [`Cache::begin`] checks the context and fixes how many tokens come, layers append at
//! [`Cache::pos`], and [`Cache::commit`] moves the position once for all layers.
//!
//! Going back ([`Cache::rewind`]) is exact for full KV, possible within the retained range of
//! a window, and for recurrent state only to the current position or a [`Cache::snapshot`].
//! The position reached is returned, never more than asked: the caller feeds the rest again.
//!
//! On the CPU, f32 keys and values are stored as f16, as llama.cpp's default cache stores them:
//! half the memory, and holding what it holds brings our logits closer to its reference
//! outputs (first-step rms difference over the vocabulary: SmolLM2 0.55 → 0.20, Gemma 3 0.23 →
//! 0.21). Attention reads those rows in place (`kernels::cpu::attn_few`) or widens them to f32
//! exactly (`kernels::cpu::f16_rows`). Latent entries stay f32, rounded to f16 precision (their
//! attention multiplies in f32 every step). Elsewhere (GPUs, other activation types) the cache
//! holds the type it is given.

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// Smallest allocation, in positions, so short prompts do not reserve the whole context.
const MIN_CAPACITY: usize = 256;

/// Positions a window entry keeps beyond its window, so that a chat turn whose template
/// re-renders the last few tokens differently can step back without recomputing everything.
pub const WINDOW_SLACK: usize = 256;

/// Snapshots kept at most (the most recent turn boundaries).
const MAX_SNAPSHOTS: usize = 2;

/// What one layer keeps between forward passes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// Keys and values of every position.
    Full,
    /// Keys and values of the last `window` positions (each query sees itself and the
    /// `window - 1` before it).
    Window(usize),
    /// Reads the keys and values of an earlier layer (cross-layer KV sharing).
    Shared(usize),
    /// Fixed-size state tensors of these shapes (f32, zero at position 0).
    Recurrent(Vec<Vec<usize>>),
    /// One latent row per position (`(1, 1, n, width)`, multi-head latent attention), of which
    /// the first `value_width` columns are also the values: nothing else is stored.
    Latent {
        /// Leading columns of the latent that serve as values.
        value_width: usize,
    },
}

/// Keys and values a layer attends to: `(1, kv_heads, n, head_dim)` each, the first at
/// absolute position `start`; f16 where the cache stores f32 activations as f16 (the CPU).
#[derive(Clone, Debug)]
pub struct KvView {
    /// Keys.
    pub k: Tensor,
    /// Values.
    pub v: Tensor,
    /// Absolute position of the first key.
    pub start: usize,
}

/// Keys and values held in a buffer that covers positions `start..start + len`.
#[derive(Default)]
struct KvStore {
    k: Option<Tensor>,
    /// Absent when the values are the keys' first columns (`values_in_keys`).
    v: Option<Tensor>,
    /// The values are the first this many columns of the keys (a latent entry).
    values_in_keys: Option<usize>,
    /// Absolute position of the buffer's first row.
    start: usize,
    /// Valid rows (from `start`).
    len: usize,
}

impl KvStore {
    fn capacity(&self) -> Result<usize> {
        Ok(self.k.as_ref().map_or(Ok(0), |k| k.dim(2))?)
    }

    /// Writes `k`, `v` (`(1, kv_heads, n, head_dim)`) at absolute position `pos` and returns
    /// every row held, up to `pos + n`. When the buffer is full, rows before `drop_to` are
    /// dropped and it grows (doubling) towards `target` rows.
    fn append(
        &mut self,
        k: &Tensor,
        v: Option<&Tensor>,
        pos: usize,
        drop_to: usize,
        target: usize,
    ) -> Result<KvView> {
        let n = k.dim(2)?;
        // Rows valid at `pos` (a rewind may have left stale rows after it).
        self.len = pos.saturating_sub(self.start).min(self.len);
        let cap = self.capacity()?;
        if pos + n > self.start + cap {
            let drop_to = drop_to.clamp(self.start, self.start + self.len);
            let needed = pos + n - drop_to;
            let new_cap = if needed <= cap {
                cap
            } else {
                needed.max((cap * 2).max(MIN_CAPACITY).min(target))
            };
            self.regrow(drop_to, new_cap, (k, v))?;
        }
        let at = pos - self.start;
        let Some(ks) = &self.k else {
            return Err(Error::Internal(
                "cache buffers missing after growing".into(),
            ));
        };
        ks.slice_set(&self.stored(&k.contiguous()?)?, 2, at)?;
        match (v, &self.v) {
            (Some(v), Some(vs)) => vs.slice_set(&self.stored(&v.contiguous()?)?, 2, at)?,
            (None, None) if self.values_in_keys.is_some() => {}
            _ => {
                return Err(Error::Internal(
                    "values given to a latent entry, or missing for a KV entry".into(),
                ))
            }
        }
        self.len = at + n;
        self.view(pos + n)
    }

    /// Moves rows `drop_to..start + len` to the top of a buffer of `cap` rows (the same one
    /// when it is large enough).
    fn regrow(
        &mut self,
        drop_to: usize,
        cap: usize,
        like: (&Tensor, Option<&Tensor>),
    ) -> Result<()> {
        let live = self.start + self.len - drop_to;
        let same = cap == self.capacity()?;
        let move_rows = |old: &Option<Tensor>, like: &Tensor| -> Result<Tensor> {
            let (b, h, _, d) = like.dims4()?;
            let t = match (old, same) {
                (Some(old), true) => old.clone(),
                _ => Tensor::zeros((b, h, cap, d), self.dtype_for(like), like.device())?,
            };
            if let (Some(old), true) = (old, live > 0) {
                // A deep copy: source and destination may be the same buffer.
                let rows = owned(&old.narrow(2, drop_to - self.start, live)?)?;
                t.slice_set(&rows, 2, 0)?;
            }
            Ok(t)
        };
        let k = move_rows(&self.k, like.0)?;
        let v = like.1.map(|v| move_rows(&self.v, v)).transpose()?;
        (self.k, self.v, self.start, self.len) = (Some(k), v, drop_to, live);
        Ok(())
    }

    /// The rows held up to absolute position `upto`.
    fn view(&self, upto: usize) -> Result<KvView> {
        let v = match (&self.v, self.values_in_keys, &self.k) {
            (Some(v), _, _) => v.clone(),
            (None, Some(w), Some(k)) => k.narrow(3, 0, w)?,
            _ => {
                return Err(Error::Internal(
                    "KV read before its layer stored any".into(),
                ))
            }
        };
        let Some(k) = &self.k else {
            return Err(Error::Internal(
                "KV read before its layer stored any".into(),
            ));
        };
        let n = upto.saturating_sub(self.start).min(self.len);
        Ok(KvView {
            k: k.narrow(2, 0, n)?,
            v: v.narrow(2, 0, n)?,
            start: self.start,
        })
    }

    fn bytes(&self) -> usize {
        [&self.k, &self.v]
            .iter()
            .filter_map(|t| t.as_ref())
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }

    /// The type rows like `t` are stored as: f16 for f32 on the CPU (f32 rounded to f16 for a
    /// latent entry), else `t`'s own (on a GPU a conversion would be one more kernel launch
    /// per layer and token, where launches are the bottleneck).
    fn dtype_for(&self, t: &Tensor) -> DType {
        match t.dtype() {
            DType::F32 if t.device().is_cpu() && self.values_in_keys.is_none() => DType::F16,
            dtype => dtype,
        }
    }

    /// `t` as it is stored: converted to [`KvStore::dtype_for`], and a latent entry's f32
    /// rounded to f16 precision on the CPU.
    fn stored(&self, t: &Tensor) -> Result<Tensor> {
        Ok(match (t.dtype(), self.dtype_for(t)) {
            (DType::F32, DType::F16) => t.to_dtype(DType::F16)?,
            (DType::F32, _) if t.device().is_cpu() => {
                t.to_dtype(DType::F16)?.to_dtype(DType::F32)?
            }
            _ => t.clone(),
        })
    }
}

/// One layer's entry.
enum Entry {
    /// Full KV, or (`values_in_keys`) a latent per position.
    Full(KvStore),
    Window {
        window: usize,
        store: KvStore,
    },
    Shared(usize),
    Recurrent {
        shapes: Vec<Vec<usize>>,
        state: Vec<Tensor>,
    },
}

/// Window and recurrent contents at one position (full KV needs none: it truncates exactly).
struct Snapshot {
    pos: usize,
    entries: Vec<(usize, SavedEntry)>,
}

enum SavedEntry {
    Window { start: usize, k: Tensor, v: Tensor },
    Recurrent(Vec<Tensor>),
}

/// The cache of one sequence.
pub struct Cache {
    entries: Vec<Entry>,
    /// Token ids of positions `0..pos` (for prefix reuse).
    tokens: Vec<u32>,
    /// Tokens of the forward pass under way (0 between passes).
    pending: usize,
    max_len: usize,
    model_max: usize,
    snapshots: Vec<Snapshot>,
}

impl Cache {
    /// An empty cache for layers of `kinds`, holding at most `max_len` positions of a model
    /// trained for `model_max` (named in the context-full error).
    pub fn new(kinds: &[LayerKind], max_len: usize, model_max: usize) -> Result<Self> {
        if max_len == 0 {
            return Err(Error::InvalidArgument(
                "context size must be at least 1".into(),
            ));
        }
        let entries = kinds
            .iter()
            .enumerate()
            .map(|(i, kind)| {
                Ok(match kind {
                    LayerKind::Full => Entry::Full(KvStore::default()),
                    LayerKind::Window(0) => {
                        return Err(Error::Internal(format!(
                            "layer {i}: a window of 0 positions"
                        )))
                    }
                    LayerKind::Window(w) => Entry::Window {
                        window: *w,
                        store: KvStore::default(),
                    },
                    LayerKind::Shared(j) if *j < i && is_kv(&kinds[*j]) => Entry::Shared(*j),
                    LayerKind::Shared(j) => {
                        return Err(Error::Internal(format!(
                            "layer {i} shares the KV of layer {j}, which is not an earlier KV layer"
                        )))
                    }
                    LayerKind::Recurrent(shapes) => Entry::Recurrent {
                        shapes: shapes.clone(),
                        state: Vec::new(),
                    },
                    LayerKind::Latent { value_width } => Entry::Full(KvStore {
                        values_in_keys: Some(*value_width),
                        ..KvStore::default()
                    }),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            entries,
            tokens: Vec::new(),
            pending: 0,
            max_len,
            model_max,
            snapshots: Vec::new(),
        })
    }

    /// Full KV for `n_layers` layers (the layout of a plain decoder).
    pub fn full(n_layers: usize, max_len: usize, model_max: usize) -> Result<Self> {
        Self::new(&vec![LayerKind::Full; n_layers], max_len, model_max)
    }

    /// The position where the next token goes (also during a forward pass: the position of
    /// its first token).
    pub fn pos(&self) -> usize {
        self.tokens.len()
    }

    /// Token ids of the cached positions.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// How many leading positions hold the first tokens of `prompt` (what a new prompt can
    /// reuse).
    pub fn shared_prefix(&self, prompt: &[u32]) -> usize {
        self.tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
    }

    /// The most positions this cache holds (the context size).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Positions still free.
    pub fn remaining(&self) -> usize {
        self.max_len - self.pos()
    }

    /// Whether going back needs snapshots (some layer keeps recurrent state).
    pub fn has_recurrent(&self) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(e, Entry::Recurrent { .. }))
    }

    /// Fails with [`Error::ContextFull`] unless `n` more tokens fit.
    pub fn ensure_fits(&self, n: usize) -> Result<()> {
        let needed = self.pos() + n;
        if needed > self.max_len {
            return Err(Error::ContextFull {
                needed,
                ctx_size: self.max_len,
                model_max: self.model_max,
            });
        }
        Ok(())
    }

    /// Starts a forward pass of `n` tokens at [`Cache::pos`].
    pub fn begin(&mut self, n: usize) -> Result<()> {
        if self.pending != 0 {
            return Err(Error::Internal(
                "a forward pass began inside another".into(),
            ));
        }
        if n == 0 {
            return Err(Error::Internal("a forward pass of no tokens".into()));
        }
        self.ensure_fits(n)?;
        self.pending = n;
        Ok(())
    }

    /// Ends the pass begun with [`Cache::begin`]: `tokens` (as many as begun) now occupy the
    /// next positions in every layer.
    pub fn commit(&mut self, tokens: &[u32]) -> Result<()> {
        if tokens.len() != self.pending {
            return Err(Error::Internal(format!(
                "committed {} tokens to a pass of {}",
                tokens.len(),
                self.pending
            )));
        }
        self.tokens.extend_from_slice(tokens);
        self.pending = 0;
        Ok(())
    }

    /// Abandons the pass under way. KV written past the position is ignored; recurrent state
    /// the pass may have changed cannot be undone, so then the whole sequence is dropped (the
    /// position goes to 0 and the next prompt is fed again from its start).
    pub fn abort(&mut self) {
        if self.pending != 0 && self.has_recurrent() {
            self.reset();
        }
        self.pending = 0;
    }

    fn entry(&mut self, layer: usize) -> Result<&mut Entry> {
        self.entries
            .get_mut(layer)
            .ok_or_else(|| Error::Internal(format!("the cache has no layer {layer}")))
    }

    fn check_pending(&self, n: usize, layer: usize) -> Result<()> {
        if n != self.pending {
            return Err(Error::Internal(format!(
                "layer {layer} appended {n} positions in a pass of {}",
                self.pending
            )));
        }
        Ok(())
    }

    /// Appends the pass's keys and values (`(1, kv_heads, n, head_dim)`) to layer `layer` and
    /// returns the keys and values it holds up to the pass's last token (a window layer holds
    /// at least the last `window - 1` positions before the pass; attention narrows further).
    pub fn append_kv(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<KvView> {
        let n = k.dim(2)?;
        self.check_pending(n, layer)?;
        let (pos, max_len) = (self.pos(), self.max_len);
        match self.entry(layer)? {
            Entry::Full(store) if store.values_in_keys.is_none() => {
                store.append(k, Some(v), pos, 0, max_len)
            }
            Entry::Window { window, store } => {
                let w = *window;
                // Rows the first new query cannot see may go, but keep some slack for rewinds
                // when the pass is short.
                let seen_from = (pos + 1).saturating_sub(w);
                let drop_to = seen_from.min((pos + n).saturating_sub(w + WINDOW_SLACK));
                store.append(
                    k,
                    Some(v),
                    pos,
                    drop_to,
                    (2 * (w + WINDOW_SLACK)).min(max_len),
                )
            }
            _ => Err(Error::Internal(format!("layer {layer} stores no KV"))),
        }
    }

    /// Appends the pass's latents (`(1, 1, n, width)`) to layer `layer`, a
    /// [`LayerKind::Latent`] entry, and returns every latent it holds up to the pass's last
    /// token: as keys, and their first `value_width` columns as values.
    pub fn append_latent(&mut self, layer: usize, latent: &Tensor) -> Result<KvView> {
        let n = latent.dim(2)?;
        self.check_pending(n, layer)?;
        let (pos, max_len) = (self.pos(), self.max_len);
        match self.entry(layer)? {
            Entry::Full(store) if store.values_in_keys.is_some() => {
                store.append(latent, None, pos, 0, max_len)
            }
            _ => Err(Error::Internal(format!("layer {layer} stores no latent"))),
        }
    }

    /// The keys and values of the layer that layer `layer` shares, as they stand after this
    /// pass appended to it.
    pub fn shared_kv(&mut self, layer: usize) -> Result<KvView> {
        let upto = self.pos() + self.pending;
        let source = match self.entry(layer)? {
            Entry::Shared(j) => *j,
            _ => return Err(Error::Internal(format!("layer {layer} shares no KV"))),
        };
        match self.entry(source)? {
            Entry::Full(store) | Entry::Window { store, .. } => store.view(upto),
            _ => Err(Error::Internal(format!("layer {source} stores no KV"))),
        }
    }

    /// Layer `layer`'s recurrent state (f32 on `device`, zeros at position 0); the layer
    /// updates it in place during the pass.
    pub fn state(&mut self, layer: usize, device: &Device) -> Result<&mut Vec<Tensor>> {
        if self.pending == 0 {
            return Err(Error::Internal(
                "recurrent state used outside a pass".into(),
            ));
        }
        match self.entry(layer)? {
            Entry::Recurrent { shapes, state } => {
                if state.is_empty() {
                    *state = shapes
                        .iter()
                        .map(|s| Tensor::zeros(s.as_slice(), DType::F32, device))
                        .collect::<candle_core::Result<Vec<_>>>()?;
                }
                Ok(state)
            }
            _ => Err(Error::Internal(format!(
                "layer {layer} has no recurrent state"
            ))),
        }
    }

    /// Saves what [`Cache::rewind`] cannot recompute (window rows and recurrent state) at the
    /// current position. Cheap when every layer is full KV: nothing is copied.
    pub fn snapshot(&mut self) -> Result<()> {
        if !self.has_recurrent() {
            return Ok(());
        }
        let mut entries = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            match e {
                Entry::Window { store, .. } => {
                    if let (Some(k), Some(v)) = (&store.k, &store.v) {
                        entries.push((
                            i,
                            SavedEntry::Window {
                                start: store.start,
                                k: owned(&k.narrow(2, 0, store.len)?)?,
                                v: owned(&v.narrow(2, 0, store.len)?)?,
                            },
                        ));
                    }
                }
                Entry::Recurrent { state, .. } => entries.push((
                    i,
                    SavedEntry::Recurrent(
                        state
                            .iter()
                            .map(Tensor::copy)
                            .collect::<candle_core::Result<_>>()?,
                    ),
                )),
                Entry::Full(_) | Entry::Shared(_) => {}
            }
        }
        let pos = self.pos();
        self.snapshots.retain(|s| s.pos != pos);
        self.snapshots.push(Snapshot { pos, entries });
        if self.snapshots.len() > MAX_SNAPSHOTS {
            self.snapshots.remove(0);
        }
        Ok(())
    }

    /// Goes back to at most `len` positions and returns the position reached: `len` where
    /// every layer can go there, else the latest snapshot before it, else 0.
    pub fn rewind(&mut self, len: usize) -> usize {
        let len = len.min(self.pos());
        if len == 0 {
            self.reset();
            return 0;
        }
        if self.can_truncate_to(len) {
            self.tokens.truncate(len);
            self.snapshots.retain(|s| s.pos <= len);
            return len;
        }
        let Some(i) = self.snapshots.iter().rposition(|s| s.pos <= len) else {
            self.reset();
            return 0;
        };
        let snap = self.snapshots.swap_remove(i);
        let pos = snap.pos;
        if self.restore(&snap).is_err() {
            self.reset();
            return 0;
        }
        self.snapshots.retain(|s| s.pos <= pos);
        self.snapshots.push(snap);
        self.tokens.truncate(pos);
        pos
    }

    fn can_truncate_to(&self, len: usize) -> bool {
        self.entries.iter().all(|e| match e {
            Entry::Full(_) | Entry::Shared(_) => true,
            Entry::Window { window, store } => store.start <= (len + 1).saturating_sub(*window),
            Entry::Recurrent { .. } => len == self.pos(),
        })
    }

    fn restore(&mut self, snap: &Snapshot) -> Result<()> {
        for (i, saved) in &snap.entries {
            match (self.entry(*i)?, saved) {
                (Entry::Window { store, .. }, SavedEntry::Window { start, k, v }) => {
                    let rows = k.dim(2)?;
                    let cap = store.capacity()?.max(rows);
                    let (b, h, _, d) = k.dims4()?;
                    let kk = Tensor::zeros((b, h, cap, d), k.dtype(), k.device())?;
                    let vv = Tensor::zeros((b, h, cap, d), v.dtype(), v.device())?;
                    if rows > 0 {
                        kk.slice_set(k, 2, 0)?;
                        vv.slice_set(v, 2, 0)?;
                    }
                    (store.k, store.v, store.start, store.len) = (Some(kk), Some(vv), *start, rows);
                }
                (Entry::Recurrent { state, .. }, SavedEntry::Recurrent(s)) => {
                    *state = s
                        .iter()
                        .map(Tensor::copy)
                        .collect::<candle_core::Result<_>>()?;
                }
                _ => {
                    return Err(Error::Internal(format!(
                        "snapshot of layer {i} has another kind"
                    )))
                }
            }
        }
        Ok(())
    }

    /// Forgets everything (KV buffers are kept for reuse).
    pub fn reset(&mut self) {
        self.tokens.clear();
        self.pending = 0;
        self.snapshots.clear();
        for e in &mut self.entries {
            match e {
                Entry::Full(s) => s.len = 0,
                Entry::Window { store, .. } => (store.start, store.len) = (0, 0),
                Entry::Recurrent { state, .. } => state.clear(),
                Entry::Shared(_) => {}
            }
        }
    }

    /// Bytes reserved by all layers (snapshots included).
    pub fn reserved_bytes(&self) -> usize {
        let t = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        let entries: usize = self
            .entries
            .iter()
            .map(|e| match e {
                Entry::Full(s) | Entry::Window { store: s, .. } => s.bytes(),
                Entry::Recurrent { state, .. } => state.iter().map(t).sum(),
                Entry::Shared(_) => 0,
            })
            .sum();
        let snaps: usize = self
            .snapshots
            .iter()
            .flat_map(|s| &s.entries)
            .map(|(_, e)| match e {
                SavedEntry::Window { k, v, .. } => t(k) + t(v),
                SavedEntry::Recurrent(s) => s.iter().map(t).sum(),
            })
            .sum();
        entries + snaps
    }
}

/// A contiguous copy of `t` in storage of its own (`contiguous` alone shares the storage of a
/// tensor that already is contiguous).
fn owned(t: &Tensor) -> Result<Tensor> {
    Ok(match t.is_contiguous() {
        true => t.copy()?,
        false => t.contiguous()?,
    })
}

#[cfg(test)]
impl Cache {
    /// Bytes held by layer `i` alone.
    fn entries_bytes(&self, i: usize) -> usize {
        match &self.entries[i] {
            Entry::Full(s) | Entry::Window { store: s, .. } => s.bytes(),
            _ => 0,
        }
    }
}

fn is_kv(kind: &LayerKind) -> bool {
    matches!(kind, LayerKind::Full | LayerKind::Window(_))
}

#[cfg(test)]
mod tests;
