#!/usr/bin/env python3
"""llama.cpp's convert_hf_to_gguf.py, run unchanged on an oracle checkpoint, with one
allowance: the oracle's made-up BPE vocabulary matches none of the converter's known
pre-tokenizer hashes, so an unrecognized one is written as "default" instead of aborting.
The token ids, tensors and hyperparameters are the converter's own work.

    convert.py CONVERTER_PY MODEL_DIR --outfile FILE --outtype f16
"""

import runpy
import sys
from pathlib import Path

converter = Path(sys.argv[1]).resolve()
sys.path.insert(0, str(converter.parent))
sys.path.insert(1, str(converter.parent / "gguf-py"))

from conversion.base import TextModel  # noqa: E402  (the converter's own package)

recognized = TextModel.get_vocab_base_pre


def get_vocab_base_pre(self, tokenizer):
    try:
        return recognized(self, tokenizer)
    except NotImplementedError:
        return "default"


TextModel.get_vocab_base_pre = get_vocab_base_pre
sys.argv = [str(converter)] + sys.argv[2:]
runpy.run_path(str(converter), run_name="__main__")
