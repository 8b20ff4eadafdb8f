//! The tolerant header readers on broken input: a small valid GGUF and safetensors header cut
//! at every offset, thousands of random byte flips, and hand-made headers that claim absurd
//! counts and lengths. Every case ends in a header or an error, never a panic, and memory
//! follows the bytes present, never a claim in the file: a counting allocator checks that the
//! largest single allocation and the peak stay within a constant factor of the input size
//! (decoded values are bigger than their encoding: a 1-byte array element becomes a 40-byte
//! value in a vector that grows by doubling), with a small floor for error messages.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;

use mlcli::formats::gguf_builder::{array, Builder};
use mlcli::formats::gguf_header::{self, ReadOptions, Value, ValueType};
use mlcli::formats::safetensors_header;
use mlcli::inspect::{machine::Machine, summary, Model};

/// Counts this thread's allocations while tracking is on (tests run on several threads).
struct Counting;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn on_alloc(size: usize) {
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            let live = LIVE.with(|l| {
                l.set(l.get() + size);
                l.get()
            });
            PEAK.with(|p| p.set(p.get().max(live)));
            LARGEST.with(|m| m.set(m.get().max(size)));
        }
    });
}

fn on_dealloc(size: usize) {
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            LIVE.with(|l| l.set(l.get().saturating_sub(size)));
        }
    });
}

// SAFETY: forwards to the system allocator unchanged; only counts sizes on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_dealloc(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        on_dealloc(layout.size());
        on_alloc(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result with (peak live bytes, largest single allocation).
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    LARGEST.with(|m| m.set(0));
    TRACKING.with(|t| t.set(true));
    let out = f();
    TRACKING.with(|t| t.set(false));
    (out, PEAK.with(Cell::get), LARGEST.with(Cell::get))
}

/// Error messages and small bookkeeping may take this much whatever the input.
const FLOOR: usize = 2048;
/// Decoded headers may take this many times the bytes they came from (see the module doc).
const FACTOR: usize = 96;

fn assert_bounded(what: &str, input: usize, peak: usize, largest: usize) {
    assert!(
        largest <= FACTOR * input + FLOOR,
        "{what}: an allocation of {largest} bytes for {input} bytes of input"
    );
    assert!(
        peak <= FACTOR * input + FLOOR,
        "{what}: peak {peak} bytes for {input} bytes of input"
    );
}

fn gguf_sample() -> Vec<u8> {
    Builder::new()
        .meta("general.architecture", Value::Str("llama".into()))
        .meta("general.alignment", Value::U32(32))
        .meta("llama.block_count", Value::U32(1))
        .meta("llama.rope.freq_base", Value::F32(1e4))
        .meta("x.i64", Value::I64(-5))
        .meta("x.f64", Value::F64(0.25))
        .meta("x.bool", Value::Bool(true))
        .meta(
            "tokenizer.ggml.tokens",
            array(
                ValueType::String,
                (0..12).map(|i| Value::Str(format!("tok{i}"))).collect(),
            ),
        )
        .meta(
            "tokenizer.ggml.scores",
            array(
                ValueType::F32,
                (0..12).map(|i| Value::F32(i as f32)).collect(),
            ),
        )
        .meta(
            "x.bytes",
            array(ValueType::U8, (0..40).map(Value::U8).collect()),
        )
        .meta(
            "x.nested",
            array(
                ValueType::Array,
                vec![array(ValueType::I16, vec![Value::I16(-1), Value::I16(2)])],
            ),
        )
        .tensor("token_embd.weight", &[4, 2], 0, vec![0; 32])
        .zeroed_tensor("blk.0.ffn_down.weight", &[256, 1], 23)
        .to_bytes()
}

fn safetensors_sample() -> Vec<u8> {
    safetensors_header::build(
        &[("format", "pt")],
        &[
            ("a.weight", "F32", &[2, 2], &[0; 16]),
            ("b.weight", "BF16", &[3], &[0; 6]),
            ("c", "F8_E4M3", &[1], &[0]),
        ],
    )
}

fn parse_gguf(bytes: &[u8]) {
    for opts in [ReadOptions::PREVIEW, ReadOptions::FULL] {
        let (r, peak, largest) = measure(|| {
            let r = gguf_header::parse_bytes(bytes, bytes.len() as u64, opts);
            if let Ok(h) = &r {
                for t in &h.tensors {
                    let _ = h.extent(t);
                }
            }
            r.map(|_| ())
        });
        let _ = r;
        assert_bounded("gguf", bytes.len(), peak, largest);
    }
}

fn parse_safetensors(bytes: &[u8]) {
    let (_, peak, largest) = measure(|| {
        if let Ok(h) = safetensors_header::parse_bytes(bytes, bytes.len() as u64) {
            for t in &h.tensors {
                let _ = h.extent(t);
            }
        }
    });
    // serde_json builds a map from the header: allow its constant overhead per entry.
    assert_bounded("safetensors", bytes.len(), peak, largest);
}

#[test]
fn gguf_cut_at_every_offset_is_an_error_or_reports_truncated_tensors() {
    let full = gguf_sample();
    let header = gguf_header::parse_bytes(&full, full.len() as u64, ReadOptions::FULL)
        .expect("the sample parses");
    for cut in 0..full.len() {
        let bytes = &full[..cut];
        parse_gguf(bytes);
        let r = gguf_header::parse_bytes(bytes, cut as u64, ReadOptions::FULL);
        if (cut as u64) < header.data_offset {
            assert!(
                r.is_err(),
                "cut at {cut} (data at {}) parsed",
                header.data_offset
            );
        } else {
            let h = r.unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            let cut_short = h.tensors.iter().any(|t| h.extent(t).is_err());
            assert!(cut_short, "cut at {cut}: no tensor reported truncated");
        }
    }
}

#[test]
fn safetensors_cut_at_every_offset_is_an_error_or_reports_truncated_tensors() {
    let full = safetensors_sample();
    let json_end = 8 + u64::from_le_bytes(full[..8].try_into().expect("8 bytes")) as usize;
    for cut in 0..full.len() {
        let bytes = &full[..cut];
        parse_safetensors(bytes);
        let r = safetensors_header::parse_bytes(bytes, cut as u64);
        if cut < json_end {
            assert!(r.is_err(), "cut at {cut} parsed");
        } else {
            let h = r.unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            assert!(
                h.tensors.iter().any(|t| h.extent(t).is_err()),
                "cut at {cut}"
            );
        }
    }
}

/// xorshift64*, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Flips 1–4 bytes of `sample`, biased towards values that make lengths huge or zero.
fn mutate(rng: &mut Rng, sample: &[u8]) -> Vec<u8> {
    let mut b = sample.to_vec();
    for _ in 0..=rng.below(4) {
        let i = rng.below(b.len());
        b[i] = match rng.below(4) {
            0 => 0xff,
            1 => 0,
            2 => b[i] ^ (1 << rng.below(8)),
            _ => rng.next() as u8,
        };
    }
    b
}

#[test]
fn random_byte_flips_never_panic_or_overallocate() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (gguf, st) = (gguf_sample(), safetensors_sample());
    for i in 0..20_000 {
        let g = mutate(&mut rng, &gguf);
        parse_gguf(&g);
        // What inspect does next with a header it could read must not panic either.
        if i % 16 == 0 {
            if let Ok(header) = gguf_header::parse_bytes(&g, g.len() as u64, ReadOptions::FULL) {
                let model = Model::Gguf {
                    path: PathBuf::from("mutant.gguf"),
                    header,
                };
                let _ = summary::summarize(&model, None, Machine::default());
            }
        }
        parse_safetensors(&mutate(&mut rng, &st));
    }
}

fn gguf_prefix(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b
}

fn with_key(mut b: Vec<u8>, key: &str, ty: u32) -> Vec<u8> {
    b.extend_from_slice(&(key.len() as u64).to_le_bytes());
    b.extend_from_slice(key.as_bytes());
    b.extend_from_slice(&ty.to_le_bytes());
    b
}

#[test]
fn absurd_claims_are_refused_without_allocating_for_them() {
    let huge = u64::MAX / 3;
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("tensor count", gguf_prefix(huge, 0)),
        ("metadata count", gguf_prefix(0, huge)),
    ];
    let mut long_key = gguf_prefix(0, 1);
    long_key.extend_from_slice(&huge.to_le_bytes());
    cases.push(("key length", long_key));
    let mut long_str = with_key(gguf_prefix(0, 1), "k", 8);
    long_str.extend_from_slice(&huge.to_le_bytes());
    cases.push(("string length", long_str));
    for elem in [0u32, 4, 8, 9, 12] {
        let mut arr = with_key(gguf_prefix(0, 1), "k", 9);
        arr.extend_from_slice(&elem.to_le_bytes());
        arr.extend_from_slice(&huge.to_le_bytes());
        cases.push(("array length", arr));
    }
    let mut deep = with_key(gguf_prefix(0, 1), "k", 9);
    for _ in 0..100 {
        deep.extend_from_slice(&9u32.to_le_bytes());
        deep.extend_from_slice(&1u64.to_le_bytes());
    }
    cases.push(("array nesting", deep));
    let mut rank = gguf_prefix(1, 0);
    rank.extend_from_slice(&1u64.to_le_bytes());
    rank.push(b'w');
    rank.extend_from_slice(&u32::MAX.to_le_bytes());
    cases.push(("tensor rank", rank));
    for (what, bytes) in &cases {
        let mut padded = bytes.clone();
        padded.resize(bytes.len() + 64, 0);
        for opts in [ReadOptions::PREVIEW, ReadOptions::FULL] {
            let (r, peak, largest) =
                measure(|| gguf_header::parse_bytes(&padded, padded.len() as u64, opts).is_err());
            assert!(r, "{what}: accepted");
            assert_bounded(what, padded.len(), peak, largest);
        }
    }
    let mut st = (u64::MAX / 2).to_le_bytes().to_vec();
    st.extend_from_slice(b"{}");
    let (r, peak, largest) = measure(|| safetensors_header::parse_bytes(&st, 10).is_err());
    assert!(r, "safetensors header length accepted");
    assert_bounded("safetensors header length", st.len(), peak, largest);
}

/// Inputs on which a fuzz target once crashed (`tests/data/fuzz/`, named after the target).
#[test]
fn fuzz_crashers_stay_fixed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/data/fuzz") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("crasher");
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with("safetensors_header-") {
            parse_safetensors(&bytes);
        } else {
            parse_gguf(&bytes);
            if let Ok(header) =
                gguf_header::parse_bytes(&bytes, bytes.len() as u64, ReadOptions::FULL)
            {
                let model = Model::Gguf {
                    path: PathBuf::from(name),
                    header,
                };
                let _ = summary::summarize(&model, None, Machine::default());
            }
        }
        seen += 1;
    }
    assert!(seen >= 1, "no crashers in {}", dir.display());
}
