//! Bench results and their formats: one [`Row`] per test (llama-bench's fields, same names,
//! plus what llama-bench lacks), the [`Report`] that carries them with the reproducibility
//! record, and writers for Markdown, CSV, JSON and JSON Lines that stream rows as they come.

use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use super::record::Record;

/// The `schema` value of reports this build writes.
pub const SCHEMA: &str = "mlcli-bench/1";

/// One measured test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Display name of the model.
    pub model: String,
    /// The file, or `synthetic:PRESET`.
    pub model_file: String,
    /// Family, size class and main tensor type, e.g. `llama 135M Q4_1`.
    pub model_type: String,
    /// Bytes of tensor data.
    pub model_size: u64,
    /// Parameters.
    pub model_n_params: u64,
    /// `CPU`, `CUDA` or `Metal`.
    pub backend: String,
    /// The device, e.g. `cpu`, `cuda:0`.
    pub device: String,
    /// Activation type.
    pub dtype: String,
    /// CPU threads.
    pub n_threads: usize,
    /// Prompt tokens per forward pass.
    pub n_batch: usize,
    /// Context size the test ran with.
    pub n_ctx: usize,
    /// Prompt tokens processed in one go.
    pub n_prompt: usize,
    /// Tokens generated one at a time.
    pub n_gen: usize,
    /// Tokens in the KV cache before the test.
    pub n_depth: usize,
    /// llama-bench's name of the test, e.g. `pp512`, `tg128 @ d512`.
    pub test: String,
    /// Measured repetitions (the warm-up run is not counted).
    pub repetitions: usize,
    /// Wall time of the model's forward passes per repetition, in ns.
    pub samples_ns: Vec<u64>,
    /// Tokens per second per repetition.
    pub samples_ts: Vec<f64>,
    /// Mean of `samples_ns`.
    pub avg_ns: u64,
    /// Sample standard deviation of `samples_ns`.
    pub stddev_ns: u64,
    /// Mean of `samples_ts`.
    pub avg_ts: f64,
    /// Sample standard deviation of `samples_ts`.
    pub stddev_ts: f64,
    /// Median of `samples_ts`.
    pub median_ts: f64,
    /// Mean time from the start of the test to the first sampled token, in ms.
    pub ttft_ms: f64,
    /// Median time between generated tokens (all repetitions pooled), in ms.
    pub itl_p50_ms: Option<f64>,
    /// 95th percentile of the time between generated tokens, in ms.
    pub itl_p95_ms: Option<f64>,
    /// Mean time to tokenize `n_prompt` tokens of English text, in ms (none without a
    /// prompt or a real tokenizer).
    pub tokenize_ms: Option<f64>,
    /// Mean time in the sampler per repetition, in ms.
    pub sampling_ms: f64,
    /// Seconds to load (or, for synthetic models, build) the model.
    pub load_s: f64,
    /// Peak resident memory of the process during the test, in bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Peak GPU memory of the process during the test, in bytes (GPU devices only).
    pub peak_gpu_bytes: Option<u64>,
    /// The CPU threads' measured memory read bandwidth, in GB/s (`--bandwidth`, CPU only).
    #[serde(default)]
    pub memory_read_gbs: Option<f64>,
    /// Bytes of weights one generated token reads (`--bandwidth`, CPU only).
    #[serde(default)]
    pub weights_read_bytes: Option<u64>,
}

/// What `bench -o json` writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: String,
    /// Build and machine facts.
    pub record: Record,
    /// The rows, in the order they ran.
    pub results: Vec<Row>,
}

/// One line of `bench -o jsonl`: a row with the record inlined, so each line stands alone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Line {
    /// [`SCHEMA`].
    pub schema: String,
    /// The row.
    #[serde(flatten)]
    pub row: Row,
    /// Build and machine facts.
    pub record: Record,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A Markdown table (llama-bench's columns and ours), then the build line.
    Md,
    /// Comma-separated values with a header.
    Csv,
    /// One JSON document with the reproducibility record.
    Json,
    /// One JSON object per row, each with the record.
    Jsonl,
}

/// `1.5 GiB`, `94.2 MiB`.
pub fn bytes_label(b: u64) -> String {
    let b = b as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.2} MiB", b / (1u64 << 20) as f64)
    }
}

/// `134.52 M`, `1.24 B`.
pub fn params_label(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} B", n / 1e9)
    } else {
        format!("{:.2} M", n / 1e6)
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |x| format!("{x:.2}"))
}

const MD_HEADER: &[(&str, bool)] = &[
    ("model", false),
    ("size", true),
    ("params", true),
    ("backend", false),
    ("threads", true),
    ("test", true),
    ("t/s", true),
    ("TTFT ms", true),
    ("ITL p50 ms", true),
    ("ITL p95 ms", true),
    ("tokenize ms", true),
    ("sample ms", true),
    ("load s", true),
    ("peak RSS", true),
    ("peak GPU", true),
];

fn md_cells(r: &Row) -> Vec<String> {
    vec![
        r.model_type.clone(),
        bytes_label(r.model_size),
        params_label(r.model_n_params),
        r.backend.clone(),
        r.n_threads.to_string(),
        r.test.clone(),
        format!("{:.2} ± {:.2}", r.avg_ts, r.stddev_ts),
        format!("{:.2}", r.ttft_ms),
        opt_ms(r.itl_p50_ms),
        opt_ms(r.itl_p95_ms),
        opt_ms(r.tokenize_ms),
        format!("{:.2}", r.sampling_ms),
        format!("{:.2}", r.load_s),
        r.peak_rss_bytes.map_or_else(|| "n/a".into(), bytes_label),
        r.peak_gpu_bytes.map_or_else(|| "n/a".into(), bytes_label),
    ]
}

const CSV_FIELDS: &[&str] = &[
    "model",
    "model_file",
    "model_type",
    "model_size",
    "model_n_params",
    "backend",
    "device",
    "dtype",
    "n_threads",
    "n_batch",
    "n_ctx",
    "n_prompt",
    "n_gen",
    "n_depth",
    "test",
    "repetitions",
    "avg_ns",
    "stddev_ns",
    "avg_ts",
    "stddev_ts",
    "median_ts",
    "ttft_ms",
    "itl_p50_ms",
    "itl_p95_ms",
    "tokenize_ms",
    "sampling_ms",
    "load_s",
    "peak_rss_bytes",
    "peak_gpu_bytes",
];

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_cells(r: &Row) -> io::Result<Vec<String>> {
    let v = serde_json::to_value(r).map_err(io::Error::other)?;
    Ok(CSV_FIELDS
        .iter()
        .map(|f| match &v[*f] {
            serde_json::Value::String(s) => csv_field(s),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        })
        .collect())
}

/// Writes rows as they come, in one format.
pub struct Writer<W: Write> {
    out: W,
    format: Format,
    record: Record,
    rows: Vec<Row>,
}

impl<W: Write> Writer<W> {
    /// Starts a report (writes the header of table formats).
    pub fn new(mut out: W, format: Format, record: Record) -> io::Result<Self> {
        match format {
            Format::Md => {
                let names: Vec<&str> = MD_HEADER.iter().map(|(n, _)| *n).collect();
                let align: Vec<&str> = MD_HEADER
                    .iter()
                    .map(|(_, right)| if *right { "---:" } else { "---" })
                    .collect();
                writeln!(out, "| {} |", names.join(" | "))?;
                writeln!(out, "| {} |", align.join(" | "))?;
            }
            Format::Csv => writeln!(out, "{}", CSV_FIELDS.join(","))?,
            Format::Json | Format::Jsonl => {}
        }
        out.flush()?;
        Ok(Self {
            out,
            format,
            record,
            rows: Vec::new(),
        })
    }

    /// Replaces the record (e.g. once model facts are known); JSON formats write the latest.
    pub fn set_record(&mut self, record: Record) {
        self.record = record;
    }

    /// Writes one row (JSON keeps it for [`Writer::finish`]).
    pub fn row(&mut self, row: Row) -> io::Result<()> {
        match self.format {
            Format::Md => writeln!(self.out, "| {} |", md_cells(&row).join(" | "))?,
            Format::Csv => writeln!(self.out, "{}", csv_cells(&row)?.join(","))?,
            Format::Jsonl => {
                let line = Line {
                    schema: SCHEMA.into(),
                    row: row.clone(),
                    record: self.record.clone(),
                };
                let text = serde_json::to_string(&line).map_err(io::Error::other)?;
                writeln!(self.out, "{text}")?;
            }
            Format::Json => {}
        }
        self.rows.push(row);
        self.out.flush()
    }

    /// Ends the report (Markdown: the build line; JSON: the whole document) and returns it.
    pub fn finish(mut self) -> io::Result<Report> {
        let report = Report {
            schema: SCHEMA.into(),
            record: self.record,
            results: self.rows,
        };
        match self.format {
            Format::Md => {
                let r = &report.record;
                let commit: String = r.git_commit.chars().take(12).collect();
                writeln!(
                    self.out,
                    "\nmlcli {} ({commit}), candle {}, {} ({} CPUs; SIMD compiled: {}; CPU has: {})",
                    r.mlcli_version,
                    r.candle_version,
                    r.cpu_model,
                    r.cpu_count,
                    list_or_none(&r.simd_in_use),
                    list_or_none(&r.cpu_features),
                )?;
                for line in report.results.iter().filter_map(bound_line) {
                    writeln!(self.out, "{line}")?;
                }
            }
            Format::Json => {
                let text = serde_json::to_string_pretty(&report).map_err(io::Error::other)?;
                writeln!(self.out, "{text}")?;
            }
            Format::Csv | Format::Jsonl => {}
        }
        self.out.flush()?;
        Ok(report)
    }
}

/// A generation test's share of the bandwidth bound (rows measured with `--bandwidth`).
fn bound_line(r: &Row) -> Option<String> {
    let (gbs, bytes) = (r.memory_read_gbs?, r.weights_read_bytes?);
    if r.n_gen == 0 || gbs <= 0.0 {
        return None;
    }
    let achieved = bytes as f64 * r.avg_ts / 1e9;
    Some(format!(
        "bandwidth bound: {} {}: {} of weights per token at {:.2} t/s = {achieved:.1} GB/s, {:.0}% of the {gbs:.1} GB/s {} threads read (bound {:.2} t/s)",
        r.model,
        r.test,
        bytes_label(bytes),
        r.avg_ts,
        100.0 * achieved / gbs,
        r.n_threads,
        gbs * 1e9 / bytes.max(1) as f64,
    ))
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(" ")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A row with fixed numbers, for format tests here and in `compare`.
    pub(crate) fn row(model: &str, test: &str, avg_ts: f64) -> Row {
        Row {
            model: model.into(),
            model_file: format!("/m/{model}.gguf"),
            model_type: format!("llama 135M Q4_1 ({model})"),
            model_size: 98_000_000,
            model_n_params: 134_515_008,
            backend: "CPU".into(),
            device: "cpu".into(),
            dtype: "f32".into(),
            n_threads: 2,
            n_batch: 512,
            n_ctx: 640,
            n_prompt: 512,
            n_gen: 0,
            n_depth: 0,
            test: test.into(),
            repetitions: 2,
            samples_ns: vec![1_000_000_000, 1_000_000_000],
            samples_ts: vec![avg_ts, avg_ts],
            avg_ns: 1_000_000_000,
            stddev_ns: 0,
            avg_ts,
            stddev_ts: 0.0,
            median_ts: avg_ts,
            ttft_ms: 1000.5,
            itl_p50_ms: None,
            itl_p95_ms: None,
            tokenize_ms: Some(1.25),
            sampling_ms: 0.5,
            load_s: 0.25,
            peak_rss_bytes: Some(300 << 20),
            peak_gpu_bytes: None,
            memory_read_gbs: None,
            weights_read_bytes: None,
        }
    }

    fn render(format: Format) -> String {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out, format, super::super::record::machine_record()).unwrap();
        w.row(row("a", "pp512", 512.0)).unwrap();
        w.row(row("b,\"q\"", "tg128", 90.0)).unwrap();
        w.finish().unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn markdown_has_llama_bench_columns_then_ours_and_the_build_line() {
        let md = render(Format::Md);
        let lines: Vec<&str> = md.lines().collect();
        assert!(lines[0].starts_with("| model | size | params | backend | threads | test | t/s |"));
        assert!(lines[0].contains("| TTFT ms | ITL p50 ms | ITL p95 ms | tokenize ms |"));
        assert_eq!(
            lines[2],
            "| llama 135M Q4_1 (a) | 93.46 MiB | 134.52 M | CPU | 2 | pp512 | 512.00 ± 0.00 | 1000.50 | n/a | n/a | 1.25 | 0.50 | 0.25 | 300.00 MiB | n/a |"
        );
        assert!(lines[5].starts_with("mlcli "), "{md}");
        assert_eq!(
            lines.len(),
            6,
            "no bandwidth line without --bandwidth: {md}"
        );
    }

    #[test]
    fn generation_rows_measured_with_bandwidth_get_their_share_of_the_bound() {
        let mut out = Vec::new();
        let mut w =
            Writer::new(&mut out, Format::Md, super::super::record::machine_record()).unwrap();
        let with = |mut r: Row, n_gen| {
            r.n_gen = n_gen;
            r.memory_read_gbs = Some(40.0);
            r.weights_read_bytes = Some(500_000_000);
            r
        };
        w.row(with(row("a", "pp512", 512.0), 0)).unwrap();
        w.row(with(row("a", "tg128", 72.0), 128)).unwrap();
        w.row(row("b", "tg128", 90.0)).unwrap();
        w.finish().unwrap();
        let md = String::from_utf8(out).unwrap();
        let bounds: Vec<&str> = md.lines().filter(|l| l.starts_with("bandwidth")).collect();
        // 0.5 GB a token at 72 t/s is 36 GB/s: 90% of 40, whose bound is 80 t/s.
        assert_eq!(
            bounds,
            ["bandwidth bound: a tg128: 476.84 MiB of weights per token at 72.00 t/s = 36.0 GB/s, 90% of the 40.0 GB/s 2 threads read (bound 80.00 t/s)"],
            "{md}"
        );
    }

    #[test]
    fn csv_quotes_fields_and_leaves_absent_values_empty() {
        let csv = render(Format::Csv);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].split(',').count(), CSV_FIELDS.len());
        assert!(
            lines[2].starts_with(r#""b,""q""","/m/b,""q"".gguf","#),
            "{}",
            lines[2]
        );
        assert!(
            lines[1].contains(",1.25,0.5,0.25,314572800,"),
            "{}",
            lines[1]
        );
        assert!(lines[1].ends_with(','), "absent GPU memory: {}", lines[1]);
    }

    #[test]
    fn json_and_jsonl_round_trip() {
        let json: Report = serde_json::from_str(&render(Format::Json)).unwrap();
        assert_eq!(json.schema, SCHEMA);
        assert_eq!(
            json.results,
            vec![row("a", "pp512", 512.0), row("b,\"q\"", "tg128", 90.0)]
        );
        let jsonl = render(Format::Jsonl);
        let lines: Vec<Line> = jsonl
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[1].row, json.results[1]);
        assert_eq!(lines[0].record, json.record);
    }
}
