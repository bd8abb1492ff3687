"""Text side of the torch-free runtime: CLIP's byte-level BPE tokenizer, so a device can add classes by name.

A text encoder exported to ONNX takes token ids, not strings; a camera box that wants a new class ("forklift")
has to turn the prompt into ids itself, without PyTorch or open_clip. :class:`ClipTokenizer` does that and gives
the same ids as open_clip's ``SimpleTokenizer`` (checked token for token in ``tests/runtime/test_tokenizer.py``).

The vocabulary ``bpe_simple_vocab_16e6.txt.gz`` next to this file is OpenAI CLIP's BPE merges file
(https://github.com/openai/CLIP, ``clip/bpe_simple_vocab_16e6.txt.gz``), MIT License, Copyright (c) 2021 OpenAI;
open_clip ships the same bytes. It is copied here so the runtime never reads it from an open_clip install.
"""

from .tokenizer import CLIP_BPE_KIND, DEFAULT_VOCAB_PATH, ClipTokenizer, tokenizer_from_spec, vocab_sha256

__all__ = ["CLIP_BPE_KIND", "DEFAULT_VOCAB_PATH", "ClipTokenizer", "tokenizer_from_spec", "vocab_sha256"]
