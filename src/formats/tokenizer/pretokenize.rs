//! The `tokenizer.ggml.pre` table: which regexes split text into pre-tokens, mirroring
//! llama.cpp's `llm_tokenizer_bpe` constructor and the name mapping in `llama_vocab::load`.
//!
//! llama.cpp applies the regexes in order, each to every piece the previous one left, keeping
//! both matches and the text between them; a regex never sees past the piece it runs on. The
//! regexes here are llama.cpp's own (its adapted forms, not the tokenizer.json originals) and
//! run on fancy-regex through `tokenizers::utils::SysRegex`. llama.cpp's hand-written GPT-2 and
//! LLaMA-3 splitters and its "collapsed" std::regex path both agree with a Unicode-aware regex
//! engine on these patterns, with two adjustments written into the table: llama.cpp reads
//! `\p{Lu}`-style classes as any letter, and (for regexes without `\p{..}`) lets non-ASCII
//! whitespace match only `\s`. Every entry was compared with llama.cpp's splitter
//! (`unicode_regex_split` at ggml-org/llama.cpp@0c1e57098) on 3,020 mixed-script strings.
//! Left out, rather than approximated: `tiny_aya`/`cohere2moe` (libstdc++'s `\b` inside a
//! lookahead), `kimi-k2` and `afmoe` (hand-written splitters), `gemma4`, `sarvam-moe`,
//! `granite-embed-multi-311m` and `whitespace` (not byte-level BPE).

use tokenizers::utils::SysRegex;

use super::Error;

/// One llama.cpp pre-tokenizer type and the `tokenizer.ggml.pre` names that select it.
pub(crate) struct Spec {
    /// The names that select it.
    names: &'static [&'static str],
    /// The split regexes, applied in order.
    pub(crate) patterns: &'static [&'static str],
    /// Take a pre-token whole when it is a vocabulary piece.
    pub(crate) ignore_merges: bool,
    /// Add BOS unless the file's `add_bos_token` says otherwise.
    pub(crate) add_bos: bool,
    /// The vocabulary has no BOS token by default.
    pub(crate) clears_bos: bool,
}

/// GPT-2's split (`'s|'t|...| ?\p{L}+| ?\p{N}+|...`), the base of many others.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// LLaMA-3's split with the case-insensitive contractions spelled out.
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split: LLaMA-3's with single digits.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// CJK runs, shared by the DeepSeek splits. llama.cpp matches regexes without `\p{..}` on
/// text whose non-ASCII whitespace became U+000B, so whitespace never matches an explicit
/// range (this one spans U+3000 and U+2009): hence `&&\S`.
const CJK: &str = r"[\x{4E00}-\x{9FA5}\x{0800}-\x{4E00}\x{AC00}-\x{D7FF}&&\S]+";
/// Runs of anything but whitespace and the listed punctuation (BLOOM, Poro, Viking).
const NON_PUNCT: &str = r" ?[^(\s|.,!?\x{2026}\x{3002}\x{FF0C}\x{3001}\x{0964}\x{06D4}\x{060C})]+";
/// Upper/lower-case-aware word split of GPT-4o and Tekken, as llama.cpp rewrote it.
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GRANITE_EMB_MULTI: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))*((?=[\p{L}\p{M}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))+((?=[\p{L}\p{M}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Cased letters of many scripts (DeepSeek LLM's letter class).
const DEEPSEEK_LETTERS: &str = r"\s?[A-Za-z\x{00B5}\x{00C0}-\x{00D6}\x{00D8}-\x{00F6}\x{00F8}-\x{01BA}\x{01BC}-\x{01BF}\x{01C4}-\x{0293}\x{0295}-\x{02AF}\x{0370}-\x{0373}\x{0376}\x{0377}\x{037B}-\x{037D}\x{037F}\x{0386}\x{0388}-\x{038A}\x{038C}\x{038E}-\x{03A1}\x{03A3}-\x{03F5}\x{03F7}-\x{0481}\x{048A}-\x{052F}\x{0531}-\x{0556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+";

/// Han and kana runs (DeepSeek V3 and relatives).
const KANA_HAN: &str = r"[\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+";
/// DeepSeek V3's word split.
const DEEPSEEK3: &str = r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##;
/// Spark 2.5's word split: DeepSeek V3's with bare newlines.
const SPARK2_5: &str = r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+|[\r\n]|\s+(?!\S)|\s+"##;
/// Youtu's CJK, Hangul, Bopomofo and CJK-punctuation runs.
const YOUTU_CJK: &str = r"[\x{AC00}-\x{D7A3}\x{3131}-\x{318E}]+|[\x{FF01}\x{2026}\x{201C}\x{201D}\x{2018}\x{2019}\x{2014}\x{FF1A}\x{FF1B}\x{FF0C}\x{3001}-\x{303F}\x{FE30}-\x{FE4F}]+|[\x{3105}-\x{312F}]+|[\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+";
/// Youtu's word split. llama.cpp reads `\p{Lu}`, `\p{Ll}`, `\p{Lt}`, `\p{Lm}` and `\p{Lo}` as
/// any letter, so they are written `\p{L}` here.
const YOUTU: &str = r"[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]*[\p{L}\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+[\p{L}\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const fn spec(names: &'static [&'static str], patterns: &'static [&'static str]) -> Spec {
    Spec {
        names,
        patterns,
        ignore_merges: false,
        add_bos: false,
        clears_bos: false,
    }
}

/// Every supported pre-tokenizer, one entry per llama.cpp `LLAMA_VOCAB_PRE_TYPE_*`.
const SPECS: &[Spec] = &[
    spec(
        &["default"],
        &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
    ),
    Spec {
        ignore_merges: true,
        add_bos: true,
        ..spec(
            &[
                "llama3",
                "llama-v3",
                "llama-bpe",
                "falcon3",
                "falcon-h1",
                "pixtral",
                "midm-2.0",
                "lfm2",
                "jina-v5-nano",
            ],
            &[LLAMA3],
        )
    },
    spec(&["dbrx", "smaug-bpe"], &[LLAMA3]),
    spec(
        &["jais-2"],
        &[
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}",
        ],
    ),
    spec(
        &["deepseek-llm"],
        &[
            r"[\r\n]",
            DEEPSEEK_LETTERS,
            r"\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}&&\S]+",
            r"\s+$",
            CJK,
            r"\p{N}+",
        ],
    ),
    spec(
        &["deepseek-coder"],
        &[r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", CJK, r"\p{N}"],
    ),
    spec(
        &["falcon"],
        &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"],
    ),
    spec(
        &[
            "starcoder",
            "refact",
            "command-r",
            "smollm",
            "codeshell",
            "exaone",
            "minerva-7b",
            "mellum2",
        ],
        &[r"\p{N}", GPT2],
    ),
    spec(
        &[
            "gpt-2",
            "phi-2",
            "jina-es",
            "jina-de",
            "gigachat",
            "jina-v2-es",
            "jina-v2-de",
            "a.x-4.0",
            "mellum",
            "modern-bert",
            "jina-v1-en",
            "jina-v2-code",
            "roberta-bpe",
            "exaone4",
            "mpt",
            "olmo",
            "jais",
            "trillion",
            "granite-docling",
        ],
        &[GPT2],
    ),
    spec(
        &[
            "stablelm2",
            "qwen2",
            "deepseek-r1-qwen",
            "kormo",
            "f2llmv2",
            "megrez",
            "hunyuan",
            "solar-open",
            "grok-2",
        ],
        &[QWEN2],
    ),
    spec(
        &["qwen35"],
        &[
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
    ),
    spec(&["poro-chat", "bloom", "gpt3-finnish"], &[NON_PUNCT]),
    Spec {
        clears_bos: true,
        ..spec(&["chatglm-bpe"], &[LLAMA3])
    },
    Spec {
        clears_bos: true,
        ignore_merges: true,
        ..spec(&["glm4", "glm5"], &[LLAMA3])
    },
    spec(&["viking"], &[NON_PUNCT, r"\p{N}"]),
    Spec {
        ignore_merges: true,
        add_bos: true,
        ..spec(&["tekken"], &[TEKKEN])
    },
    Spec {
        add_bos: true,
        ..spec(
            &["chameleon"],
            &[
                r"<sentinel:[0-9]+>",
                r"(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
                r"([\t\n]|    |  )",
                r"\p{N}",
                r"[\p{P}!-/:-@\[-`{-~]",
                GPT2,
            ],
        )
    },
    spec(
        &["gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"],
        &[GPT4O],
    ),
    Spec {
        ignore_merges: true,
        ..spec(&["granite-embed-multi-97m"], &[GRANITE_EMB_MULTI])
    },
    spec(
        &["bailingmoe", "bailingmoe2", "llada-moe"],
        &[
            r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",
        ],
    ),
    spec(
        &["seed-coder"],
        &[
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
    ),
    spec(
        &["ufakzeka"],
        &[r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"],
    ),
    spec(&["laguna"], &[r"[^\n]+|[\n]+", QWEN2]),
    spec(
        &["exaone-moe"],
        &[
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+",
        ],
    ),
    spec(
        &["deepseek-v3", "hunyuan-dense", "joyai-llm", "hy_v4"],
        &[r"\p{N}{1,3}", KANA_HAN, DEEPSEEK3],
    ),
    spec(
        &["spark2_5"],
        &[r"\p{N}{1,3}", KANA_HAN, SPARK2_5, r"\p{N}"],
    ),
    Spec {
        ignore_merges: true,
        ..spec(&["youtu"], &[YOUTU_CJK, YOUTU])
    },
    spec(&["superbpe"], &[r"\p{N}+", r"(?=([0-9]{3})+(?![0-9]))"]),
    Spec {
        ignore_merges: true,
        ..spec(
            &["minicpm5"],
            &[
                r"\p{N}{1,3}",
                r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
            ],
        )
    },
];

const fn count_names() -> usize {
    let (mut i, mut n) = (0, 0);
    while i < SPECS.len() {
        n += SPECS[i].names.len();
        i += 1;
    }
    n
}

const NAMES: [&str; count_names()] = {
    let mut names = [""; count_names()];
    let (mut i, mut n) = (0, 0);
    while i < SPECS.len() {
        let mut j = 0;
        while j < SPECS[i].names.len() {
            names[n] = SPECS[i].names[j];
            n += 1;
            j += 1;
        }
        i += 1;
    }
    names
};

/// Every `tokenizer.ggml.pre` value this module accepts for `gpt2` vocabularies.
pub const SUPPORTED_PRE_TOKENIZERS: &[&str] = &NAMES;

/// A pre-tokenizer chosen by name.
#[derive(Clone, Copy)]
pub(crate) struct Selected {
    /// The `tokenizer.ggml.pre` value, as spelled in the table.
    pub(crate) name: &'static str,
    /// What it does.
    pub(crate) spec: &'static Spec,
}

/// Finds the pre-tokenizer a `tokenizer.ggml.pre` value names.
pub(crate) fn lookup(name: &str) -> Option<Selected> {
    SPECS.iter().find_map(|spec| {
        let name = spec.names.iter().find(|n| **n == name)?;
        Some(Selected { name, spec })
    })
}

/// A compiled pre-tokenizer.
pub(crate) struct PreTokenizer {
    name: &'static str,
    regexes: Vec<SysRegex>,
}

impl PreTokenizer {
    /// Compiles the regexes of `selected`.
    pub(crate) fn new(selected: Selected) -> Result<Self, Error> {
        let regexes = selected
            .spec
            .patterns
            .iter()
            .map(|&pattern| {
                SysRegex::new(pattern).map_err(|e| Error::Regex {
                    pre: selected.name,
                    pattern,
                    message: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            name: selected.name,
            regexes,
        })
    }

    /// The `tokenizer.ggml.pre` name.
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// Splits `text` into pre-tokens: each regex cuts every piece into its matches and the
    /// text between them; empty pieces are dropped.
    pub(crate) fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut pieces = vec![text];
        for regex in &self.regexes {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for piece in pieces {
                let mut pos = 0;
                for (start, end) in regex.find_iter(piece) {
                    if start > pos {
                        next.extend(piece.get(pos..start));
                    }
                    if end > start {
                        next.extend(piece.get(start..end));
                    }
                    pos = end;
                }
                if pos < piece.len() {
                    next.extend(piece.get(pos..));
                }
            }
            pieces = next;
        }
        pieces.retain(|p| !p.is_empty());
        pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pre: &str, text: &str) -> Vec<String> {
        let selected = lookup(pre).expect("known pre-tokenizer");
        let pre = PreTokenizer::new(selected).expect("compiles");
        pre.split(text).into_iter().map(String::from).collect()
    }

    #[test]
    fn every_supported_pre_tokenizer_compiles() {
        for name in SUPPORTED_PRE_TOKENIZERS {
            let selected = lookup(name).expect("listed names are found");
            assert_eq!(selected.name, *name);
            PreTokenizer::new(selected).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(lookup("gpt2").is_none(), "llama.cpp spells it gpt-2");
    }

    #[test]
    fn names_are_unique() {
        let mut names = SUPPORTED_PRE_TOKENIZERS.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SUPPORTED_PRE_TOKENIZERS.len());
    }

    #[test]
    fn gpt2_split_keeps_the_space_before_a_word_and_leaves_one_before_it() {
        assert_eq!(
            split("gpt-2", "Hello world's  x\t\ty 42"),
            ["Hello", " world", "'s", " ", " x", "\t", "\t", "y", " 42"]
        );
    }

    #[test]
    fn smollm_split_isolates_every_digit_before_the_gpt2_regex() {
        assert_eq!(
            split("smollm", "numbers 1234 and 3.14"),
            ["numbers", " ", "1", "2", "3", "4", " and", " ", "3", ".", "1", "4"]
        );
    }

    #[test]
    fn llama3_split_groups_three_digits_and_keeps_newlines_together() {
        assert_eq!(
            split("llama-bpe", "I'M 12345\n\n  ok"),
            ["I", "'M", " ", "123", "45", "\n\n", " ", " ok"]
        );
    }

    #[test]
    fn qwen2_split_isolates_digits_and_attaches_punctuation_to_words() {
        assert_eq!(split("qwen2", "x=12;\n"), ["x", "=", "1", "2", ";\n"]);
    }
}
