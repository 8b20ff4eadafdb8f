//! Text rendering of every view: aligned tables and labelled lines for people; the same data
//! as [`super::json`] gives machines. Nothing here computes, it only lays out.

use std::fmt::Write;

use serde_json::Value as Json;

use super::metadata::Entry;
use super::probe::{LayerTrace, Logits, Rendered, Tokenized};
use super::stats::Stats;
use super::summary::{saturating_sum, Special, Summary};
use super::tensors::{Group, Tensor};
use super::values::{Dump, TensorStats};

/// `93.8 MiB`, `512 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `134.5M`, `1.2B`, `980`.
pub fn count(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}K", n as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.2}B", n as f64 / 1e9),
    }
}

/// `[576, 576]`.
pub fn shape(s: &[u64]) -> String {
    let dims: Vec<String> = s.iter().map(u64::to_string).collect();
    format!("[{}]", dims.join(", "))
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Lays out rows as left-aligned columns separated by two spaces (the last column unpadded).
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    // A row's last cell is not padded, so it does not widen its column either.
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter(|r| c + 1 < r.len())
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = width[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn specials(list: &[Special]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|s| {
            let role = if s.role == "eog" {
                String::new()
            } else {
                format!("{} ", s.role)
            };
            format!(
                "{role}{} {}",
                opt(s.id),
                s.text.as_deref().map_or("-".into(), quote)
            )
        })
        .collect();
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

/// A string in double quotes with JSON escapes (newlines as `\n`).
fn quote(s: &str) -> String {
    Json::from(s).to_string()
}

/// The summary view.
pub fn summary(s: &Summary) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row = |k: &str, v: String| rows.push(vec![k.to_string(), v]);
    let f = &s.format;
    let mut format = f.name.to_string();
    if let Some(v) = f.version {
        let _ = write!(format, " v{v}");
    }
    let _ = write!(
        format,
        ", {} ({} bytes), {} file{}",
        bytes(f.file_size),
        f.file_size,
        f.files,
        if f.files == 1 { "" } else { "s" }
    );
    if let (Some(o), Some(a)) = (f.data_offset, f.alignment) {
        let _ = write!(format, ", data at {o} (alignment {a})");
    }
    row("format", format);
    row("name", opt(s.name.as_deref()));
    let sup = &s.support;
    let verdict = match (sup.runnable, sup.family) {
        (true, Some(fam)) => format!("runs with this build (family {fam})"),
        (false, Some(fam)) => format!("family {fam}, but cannot run with this build:"),
        _ => "cannot run with this build:".to_string(),
    };
    row(
        "architecture",
        format!("{} — {verdict}", opt(s.architecture.as_deref())),
    );
    for r in &sup.reasons {
        row("", format!("  - {r}"));
    }
    row(
        "parameters",
        format!(
            "{} ({}) in {} tensors",
            count(s.parameters),
            s.parameters,
            s.tensor_count
        ),
    );
    let total = saturating_sum(s.quant_mix.iter().map(|q| q.bytes)).max(1);
    for (i, q) in s.quant_mix.iter().enumerate() {
        let note = if q.supported {
            ""
        } else {
            "  (not supported by this build)"
        };
        row(
            if i == 0 { "quant mix" } else { "" },
            format!(
                "{:<8} {:>4} tensor{}  {:>10}  {:>5.1}%{note}",
                q.dtype,
                q.tensors,
                if q.tensors == 1 { " " } else { "s" },
                bytes(q.bytes),
                q.bytes as f64 * 100.0 / total as f64
            ),
        );
    }
    let d = &s.dims;
    row("context", opt(d.context_length));
    row("layers", opt(d.layers));
    let mut heads = format!(
        "{} (KV {}, head dim {}",
        opt(d.heads),
        opt(d.kv_heads),
        opt(d.head_dim)
    );
    if d.value_head_dim != d.head_dim {
        let _ = write!(heads, ", value dim {}", opt(d.value_head_dim));
    }
    heads.push(')');
    row("heads", heads);
    row("hidden", opt(d.hidden));
    row("FFN", opt(d.ffn));
    row(
        "experts",
        match d.experts {
            Some(n) => format!("{n} ({} per token)", opt(d.experts_used)),
            None => "- (dense)".into(),
        },
    );
    if let Some(w) = d.sliding_window {
        row("sliding window", w.to_string());
    }
    let r = &s.rope;
    let mut rope = format!("freq base {}", opt(r.freq_base));
    if let Some(b) = r.freq_base_swa {
        let _ = write!(rope, " (sliding layers {b})");
    }
    let _ = write!(rope, ", {} dims", opt(r.dimension_count));
    match &r.scaling_type {
        Some(t) => {
            let _ = write!(
                rope,
                ", scaling {t} ×{} from {}",
                opt(r.scaling_factor),
                opt(r.original_context_length)
            );
        }
        None => rope.push_str(", no scaling"),
    }
    row("RoPE", rope);
    let t = &s.tokenizer;
    let mut tok = opt(t.model.as_deref());
    if let Some(p) = &t.pre {
        let _ = write!(tok, " (pre {p})");
    }
    let _ = write!(tok, ", {} tokens", opt(t.vocab_size));
    match t.adds_bos {
        Some(true) => tok.push_str(", BOS added"),
        Some(false) => tok.push_str(", BOS not added"),
        None => {}
    }
    row("tokenizer", tok);
    row("special", specials(&t.special));
    if !t.end_of_generation.is_empty() {
        row("end of generation", specials(&t.end_of_generation));
    }
    let c = &s.chat_template;
    row(
        "chat template",
        match (&c.source, c.chars) {
            (Some(src), Some(n)) => format!("yes ({n} chars, {src})"),
            _ => "no".into(),
        },
    );
    let m = &s.memory;
    row(
        "memory",
        format!(
            "at -c {}: weights {} + KV cache {} (f16) / {} (f32){} = {} / {}",
            m.ctx_size,
            bytes(m.weights),
            m.kv_cache_f16.map_or("?".into(), bytes),
            m.kv_cache_f32.map_or("?".into(), bytes),
            match m.recurrent_state {
                Some(b) if b > 0 => format!(", of which {} recurrent state", bytes(b)),
                _ => String::new(),
            },
            m.total_f16.map_or("?".into(), bytes),
            m.total_f32.map_or("?".into(), bytes)
        ),
    );
    let yes = |b: Option<bool>| match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    };
    row(
        "fits in RAM",
        format!(
            "{} (f16 KV), {} (f32 KV) of {} RAM",
            yes(m.fits_ram_f16),
            yes(m.fits_ram_f32),
            m.machine.ram_total.map_or("unknown".into(), bytes)
        ),
    );
    row(
        "fits on GPU",
        match m.machine.gpu_total {
            Some(g) => format!(
                "{} (f16 KV), {} (f32 KV) of {} ({})",
                yes(m.fits_gpu_f16),
                yes(m.fits_gpu_f32),
                bytes(g),
                m.machine.gpu_note
            ),
            None => format!("no: {}", m.machine.gpu_note),
        },
    );
    for p in s.problems.iter().skip(1) {
        row("problem", p.clone());
    }
    format!("{}\n{}", s.file, indent(&table(&rows)))
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() {
                String::from("\n")
            } else {
                format!("  {l}\n")
            }
        })
        .collect()
}

/// A JSON value on one line, strings abbreviated to `max` characters unless `max == 0`.
fn value(v: &Json, max: usize) -> String {
    match v {
        Json::String(s) if max > 0 && s.chars().count() > max => {
            let cut: String = s.chars().take(max).collect();
            format!("{}… ({} chars)", quote(&cut), s.chars().count())
        }
        Json::Array(items) => {
            let parts: Vec<String> = items.iter().map(|i| value(i, max)).collect();
            format!("[{}]", parts.join(", "))
        }
        other => other.to_string(),
    }
}

/// The metadata table; `full` shows whole strings (arrays are cut by [`super::metadata`]).
pub fn metadata(entries: &[Entry], full: bool) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let max = if full { 0 } else { 120 };
            let v = match (&e.value, e.len) {
                (Json::Array(items), Some(len)) => {
                    let mut parts: Vec<String> = items.iter().map(|i| value(i, max)).collect();
                    if e.truncated {
                        parts.push("…".into());
                    }
                    format!("[{}] ({len} elements)", parts.join(", "))
                }
                (v, _) => value(v, max),
            };
            vec![e.key.clone(), e.ty.clone(), v]
        })
        .collect();
    format!("{} metadata entries\n{}", entries.len(), table(&rows))
}

fn dtype_cell(dtype: &str, supported: bool) -> String {
    if supported {
        dtype.to_string()
    } else {
        format!("{dtype} (not supported by this build)")
    }
}

/// The compact tensor table.
pub fn tensor_groups(groups: &[Group], tensors: &[Tensor]) -> String {
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            vec![
                g.name.clone(),
                shape(&g.shape),
                dtype_cell(&g.dtype, g.supported),
                format!("×{}", g.count),
                g.bytes.map_or("?".into(), bytes),
            ]
        })
        .collect();
    format!("{}{}", table(&rows), tensor_footer(tensors))
}

/// One row per tensor.
pub fn tensor_rows(tensors: &[Tensor]) -> String {
    let sharded = tensors.iter().any(|t| t.file.is_some());
    let mut rows = vec![vec![
        "name".to_string(),
        "shape".into(),
        "dtype".into(),
        "bytes".into(),
        "offset".into(),
    ]];
    if sharded {
        rows[0].push("file".into());
    }
    for t in tensors {
        let mut r = vec![
            t.name.clone(),
            shape(&t.shape),
            dtype_cell(&t.dtype, t.supported),
            opt(t.bytes),
            t.offset.to_string(),
        ];
        if sharded {
            r.push(opt(t.file.as_deref()));
        }
        if let Some(p) = &t.problem {
            r.push(format!("problem: {p}"));
        }
        rows.push(r);
    }
    format!("{}{}", table(&rows), tensor_footer(tensors))
}

fn tensor_footer(tensors: &[Tensor]) -> String {
    let elements = saturating_sum(tensors.iter().filter_map(|t| t.elements));
    let size = saturating_sum(tensors.iter().filter_map(|t| t.bytes));
    format!(
        "{} tensors, {} parameters, {}\n",
        tensors.len(),
        count(elements),
        bytes(size)
    )
}

/// The `--dump` view: the values, eight to a line with the index of the first.
pub fn dump(d: &Dump) -> String {
    let mut out = format!(
        "{}  {}  {}  {} elements{}\n",
        d.name,
        shape(&d.shape),
        d.dtype,
        d.elements,
        if d.truncated {
            format!(", first {} shown", d.values.len())
        } else {
            String::new()
        }
    );
    for (i, chunk) in d.values.chunks(8).enumerate() {
        let vals: Vec<String> = chunk.iter().map(|v| format!("{v:>12.6}")).collect();
        let _ = writeln!(out, "{:>8}: {}", i * 8, vals.join(" "));
    }
    out
}

fn stats_cells(s: &Stats) -> Vec<String> {
    let f = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.6}"));
    vec![
        f(s.min.map(f64::from)),
        f(s.max.map(f64::from)),
        f(s.mean),
        f(s.std),
        s.nan.to_string(),
        s.inf.to_string(),
    ]
}

const STATS_HEADER: [&str; 6] = ["min", "max", "mean", "std", "nan", "inf"];

/// The `--stats` table.
pub fn stats(rows: &[TensorStats]) -> String {
    let mut table_rows = vec![["name", "dtype"]
        .iter()
        .chain(STATS_HEADER.iter())
        .map(|s| s.to_string())
        .collect::<Vec<_>>()];
    let (mut flagged, mut unread) = (0, 0);
    for r in rows {
        let mut cells = vec![r.name.clone(), r.dtype.clone()];
        match (&r.stats, &r.error) {
            (Some(s), _) => {
                if s.nan + s.inf > 0 {
                    flagged += 1;
                }
                cells.extend(stats_cells(s));
            }
            (None, e) => {
                unread += 1;
                cells.push(format!("cannot read: {}", opt(e.as_deref())));
            }
        }
        table_rows.push(cells);
    }
    // A tensor that could not be read is not one without NaN or Inf values.
    let verdict = match unread {
        0 => format!("{flagged} with NaN or Inf values"),
        n => format!(
            "{flagged} of the {} read with NaN or Inf values, {n} could not be read",
            rows.len() - n
        ),
    };
    format!("{}{} tensors, {verdict}\n", table(&table_rows), rows.len())
}

/// The `--tokenize` view.
pub fn tokenized(t: &Tokenized) -> String {
    let mut rows = vec![vec!["id".to_string(), "piece".into(), "text".into()]];
    for tok in &t.tokens {
        rows.push(vec![
            tok.id.to_string(),
            quote(&tok.piece),
            quote(&tok.text),
        ]);
    }
    let ids: Vec<String> = t.tokens.iter().map(|x| x.id.to_string()).collect();
    format!(
        "{} tokens: [{}]\n{}",
        t.tokens.len(),
        ids.join(", "),
        table(&rows)
    )
}

/// The `--template` view: the rendered prompt verbatim between marker lines.
pub fn rendered(r: &Rendered) -> String {
    match (&r.rendered, &r.source) {
        (Some(text), Some(src)) => format!(
            "chat template from {src}, rendered on a sample conversation (system, user, assistant, user; generation prompt added):\n-----8<-----\n{text}\n-----8<-----\n"
        ),
        _ => "no chat template: this model has none (a base model?); `run` feeds prompts raw\n"
            .to_string(),
    }
}

/// The `--logits` view.
pub fn logits(l: &Logits) -> String {
    let ids: Vec<String> = l.tokens.iter().map(|t| t.id.to_string()).collect();
    let mut rows = vec![vec![
        "rank".to_string(),
        "id".into(),
        "text".into(),
        "logit".into(),
        "prob".into(),
    ]];
    for (i, c) in l.top.iter().enumerate() {
        rows.push(vec![
            (i + 1).to_string(),
            c.id.to_string(),
            quote(&c.text),
            format!("{:.4}", c.logit),
            format!("{:.4}", c.prob),
        ]);
    }
    format!(
        "prompt {} = {} tokens [{}]; next token over {} logits:\n{}",
        quote(&l.prompt),
        l.tokens.len(),
        ids.join(", "),
        l.vocab_size,
        table(&rows)
    )
}

/// The `--layer-trace` view.
pub fn layer_trace(t: &LayerTrace) -> String {
    let mut rows = vec![["layer", "point"]
        .iter()
        .chain(STATS_HEADER.iter())
        .map(|s| s.to_string())
        .collect::<Vec<_>>()];
    for p in &t.points {
        let mut r = vec![p.layer.to_string(), p.point.clone()];
        r.extend(stats_cells(&p.stats));
        rows.push(r);
    }
    let mut last = vec!["-".to_string(), "logits".into()];
    last.extend(stats_cells(&t.logits));
    rows.push(last);
    format!(
        "prompt {} = {} tokens; hidden-state statistics over all positions:\n{}",
        quote(&t.prompt),
        t.tokens.len(),
        table(&rows)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_counts_read_like_people_write_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(98_362_432), "93.8 MiB");
        assert_eq!(count(134_515_008), "134.5M");
        assert_eq!(count(42), "42");
    }

    #[test]
    fn tables_align_columns_but_not_the_last() {
        let t = table(&[
            vec!["a".into(), "bb".into(), "x".into()],
            vec!["ccc".into(), "d".into(), "yy".into()],
            vec!["e".into(), "a long last cell".into()],
        ]);
        assert_eq!(t, "a    bb  x\nccc  d   yy\ne    a long last cell\n");
    }

    #[test]
    fn long_strings_are_cut_with_their_length() {
        let v = Json::from("x".repeat(200));
        assert_eq!(value(&v, 3), "\"xxx\"… (200 chars)");
        assert_eq!(value(&v, 0).len(), 202);
    }
}
