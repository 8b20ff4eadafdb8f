//! llama.cpp's own tokenizations of the test models (ggml-org/llama.cpp@0c1e57098), from
//! `llamacpp.json` in the project's reference data: text to ids with BOS per metadata and
//! special tokens parsed, and raw-prompt greedy runs with their generated ids and text.

/// One `tokenizer_cases` entry: text and llama.cpp's ids.
pub(super) type Case = (&'static str, &'static [u32]);

/// One `greedy_cases` entry.
pub(super) struct Greedy {
    /// The raw prompt (tokenized with BOS per metadata, special tokens not parsed).
    pub(super) prompt: &'static str,
    /// llama.cpp's prompt ids.
    pub(super) prompt_ids: &'static [u32],
    /// The greedy continuation.
    pub(super) generated_ids: &'static [u32],
    /// Its text.
    pub(super) generated_text: &'static str,
}

/// `tokenizer_cases.smollm2`.
pub(super) const SMOLLM2_CASES: &[Case] = &[
    ("The capital of France is", &[504, 3575, 282, 4649, 314]),
    ("def fibonacci(n):", &[1604, 3987, 46477, 24, 94, 727]),
    ("Hello world", &[19556, 905]),
    (" Hello world", &[38699, 905]),
    ("  two leading spaces", &[216, 827, 2899, 5600]),
    (
        "numbers 1234567 and 3.14159 and 1,000,000",
        &[
            28707, 216, 33, 34, 35, 36, 37, 38, 39, 284, 216, 35, 30, 33, 36, 33, 37, 41, 284, 216,
            33, 28, 32, 32, 32, 28, 32, 32, 32,
        ],
    ),
    (
        "tabs\tand\nnewlines\n\n\nmany",
        &[100, 7366, 197, 397, 198, 2241, 5110, 1116, 198, 18431],
    ),
    (
        "Ünïcödé façade naïve",
        &[142, 246, 94, 25972, 83, 7466, 84, 2756, 40852, 15486, 46494],
    ),
    (
        "日本語のテキスト",
        &[
            23274, 115, 40993, 179, 120, 248, 26453, 11100, 224, 10391, 251, 10391, 134, 11100, 226,
        ],
    ),
    (
        "emoji 😀👍🏽 🇫🇷",
        &[
            391, 33777, 40303, 218, 10813, 235, 231, 10813, 233, 138, 15107, 225, 121, 10813, 225,
            132,
        ],
    ),
    (
        "<|im_start|>user\nhi<|im_end|>\n",
        &[1, 4093, 198, 6004, 2, 198],
    ),
    (
        "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
        &[
            44, 3738, 79, 1714, 79, 20589, 46, 4093, 198, 6004, 44, 486, 79, 1714, 79, 20589, 46,
            198, 44, 3738, 79, 1714, 79, 20589, 46, 3980, 198,
        ],
    ),
    (
        "don't can't I'm we'll they've",
        &[12420, 982, 416, 982, 339, 5248, 392, 3060, 502, 3543],
    ),
    (
        "def f(x):\n\treturn x**2  # comment",
        &[
            1604, 275, 24, 104, 727, 198, 197, 5406, 1792, 828, 34, 216, 907, 5189,
        ],
    ),
    (
        "Привет, мир!",
        &[155, 249, 46879, 16464, 32547, 28, 41337, 7872, 9175, 17],
    ),
    ("", &[]),
    (" ", &[216]),
];

/// `tokenizer_cases.gemma3`.
pub(super) const GEMMA3_CASES: &[Case] = &[
    ("The capital of France is", &[2, 818, 5279, 529, 7001, 563]),
    (
        "def fibonacci(n):",
        &[2, 2063, 10779, 78113, 236769, 236749, 1473],
    ),
    ("Hello world", &[2, 9259, 1902]),
    (" Hello world", &[2, 26352, 1902]),
    ("  two leading spaces", &[2, 138, 13498, 5830, 9952]),
    (
        "numbers 1234567 and 3.14159 and 1,000,000",
        &[
            2, 34488, 236743, 236770, 236778, 236800, 236812, 236810, 236825, 236832, 532, 236743,
            236800, 236761, 236770, 236812, 236770, 236810, 236819, 532, 236743, 236770, 236764,
            236771, 236771, 236771, 236764, 236771, 236771, 236771,
        ],
    ),
    (
        "tabs\tand\nnewlines\n\n\nmany",
        &[2, 39218, 255968, 624, 107, 208697, 109, 34717],
    ),
    (
        "Ünïcödé façade naïve",
        &[
            2, 238194, 236749, 238527, 236755, 55515, 236859, 96008, 120362,
        ],
    ),
    ("日本語のテキスト", &[2, 94951, 236945, 95830]),
    (
        "emoji 😀👍🏽 🇫🇷",
        &[2, 67906, 163543, 240493, 242713, 236743, 246598, 242644],
    ),
    (
        "<|im_start|>user\nhi<|im_end|>\n",
        &[
            2, 236820, 236909, 548, 236779, 3041, 111038, 2364, 107, 2202, 236820, 236909, 548,
            236779, 643, 111038, 107,
        ],
    ),
    (
        "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
        &[2, 105, 2364, 107, 2202, 106, 107, 105, 4368, 107],
    ),
    (
        "don't can't I'm we'll they've",
        &[
            2, 13246, 236789, 236745, 740, 236789, 236745, 564, 236789, 236757, 692, 236789, 859,
            901, 236789, 560,
        ],
    ),
    (
        "def f(x):\n\treturn x**2  # comment",
        &[
            2, 2063, 517, 236769, 236781, 1473, 107, 255968, 2060, 1123, 1018, 236778, 138, 236865,
            5739,
        ],
    ),
    ("Привет, мир!", &[2, 116130, 236764, 58562, 236888]),
    ("", &[2]),
    (" ", &[2, 236743]),
];

/// `greedy_cases` `a_smollm2_raw_capital`.
pub(super) const SMOLLM2_GREEDY: Greedy = Greedy {
    prompt: "The capital of France is",
    prompt_ids: &[504, 3575, 282, 4649, 314],
    generated_ids: &[7042, 30, 198, 198, 504, 1797, 1918, 553, 253, 2155, 282, 4723, 216, 35, 33, 33, 2215, 701, 30, 198, 198, 504, 1797, 1918, 553, 253, 2155, 282, 4723, 216, 35, 33],
    generated_text: " Paris.\n\nThe United States has a population of approximately 311 million people.\n\nThe United States has a population of approximately 31",
};

/// `greedy_cases` `c_gemma3_raw_capital`.
pub(super) const GEMMA3_GREEDY: Greedy = Greedy {
    prompt: "The capital of France is",
    prompt_ids: &[2, 818, 5279, 529, 7001, 563],
    generated_ids: &[506, 5279, 529, 506, 2891, 529, 7001, 236761, 1030, 563, 506, 7488, 3207, 528, 7001, 236761, 1030, 563, 506, 5279, 529, 506, 2891, 529, 7001, 236761, 1030, 563, 506, 7488, 3207, 528],
    generated_text: " the capital of the country of France. It is the largest city in France. It is the capital of the country of France. It is the largest city in",
};
