"""CLIP's byte-level BPE tokenizer without torch: the ids open_clip's ``SimpleTokenizer`` gives, as int32 numpy.

Why a second implementation: the exported text encoder (ONNX) is fed token ids, and a device that adds a class by
name must produce exactly the ids the model was trained with, one id off is a different prompt. open_clip's
tokenizer returns torch tensors and imports torch, so the runtime carries this one, written from the algorithm and
checked against open_clip token for token on generated text (``tests/runtime/test_tokenizer.py``).

The pipeline, each step as open_clip does it for CLIP models (``clean='lower'``):

1. clean: ``ftfy.fix_text`` (mojibake, odd code points), HTML entities unescaped twice (``&amp;amp;`` too),
   whitespace runs collapsed to one space, ends trimmed, lowercased;
2. split into pieces: the two special token strings, the English contractions ``'s 't 're 've 'm 'll 'd``, runs of
   letters, single digits, runs of anything else that is not whitespace;
3. each piece as UTF-8 bytes, each byte spelled as one printable character (so BPE never sees whitespace or control
   characters), the last one marked end-of-word (``</w>``);
4. BPE: merge the adjacent pair with the best (lowest) rank in the merges file until no known pair is left; every
   resulting symbol is a vocabulary entry;
5. ``<start_of_text>`` + ids + ``<end_of_text>``, cut to the context length (the last kept slot then holds
   ``<end_of_text>``, which the text encoder pools at), padded with 0.

The ids depend on the ftfy version as they do for open_clip; the parity test runs against the installed one.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import html
import itertools
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import ftfy
import numpy as np
import regex
from clipedge.errors import ClipedgeError

#: ``kind`` of :meth:`ClipTokenizer.spec`: the only tokenizer family the torch-free runtime has
CLIP_BPE_KIND = "clip-bpe"
#: the text cleaning open_clip applies for CLIP models (its ``clean='lower'``), the only one reproduced here
CLEAN = "lower"
#: OpenAI CLIP's merges file, shipped with the runtime (origin and license: ``clipedge.runtime.text``)
DEFAULT_VOCAB_PATH = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
DEFAULT_CONTEXT_LENGTH = 77  # every OpenAI CLIP text tower; clipedge-tiny uses 32

START_OF_TEXT = "<start_of_text>"
END_OF_TEXT = "<end_of_text>"
#: CLIP's vocabulary is 49408 = 256 byte symbols + 256 end-of-word byte symbols + these merges + 2 special tokens;
#: the merges file holds more lines than that (it is the 16e6 file OpenAI trained), the rest are not used
MERGE_COUNT = 49408 - 2 * 256 - 2
END_OF_WORD = "</w>"
#: distinct words whose BPE is remembered: a class list and its prompt templates reuse a few hundred words, so
#: tokenizing the 80 ImageNet templates for a new class name costs one BPE per new word, bounded for long runs
WORD_CACHE_SIZE = 20_000

# Piece boundaries, in this order of preference at each position. The special token strings are matched so that a
# text that spells one out gets its id, as open_clip does. Case-insensitive like open_clip's pattern: after
# lowercasing that still matters for the few characters whose case folding differs from lowercasing.
_PIECE = regex.compile(
    "|".join([START_OF_TEXT, END_OF_TEXT, "'s", "'t", "'re", "'ve", "'m", "'ll", "'d",
              r"\p{L}+", r"\p{N}", r"[^\s\p{L}\p{N}]+"]),
    regex.IGNORECASE,
)


def _byte_symbols() -> list[str]:
    """The character that stands for each byte value 0..255 in BPE symbols.

    Bytes that are printable Latin-1 characters (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) stand for themselves;
    the other 68 (space, controls, DEL, NBSP, soft hyphen, ...) are given the code points 256, 257, ... in byte
    order, so every symbol is visible and none is whitespace.
    """
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    symbols, spare = [], 0x100
    for byte in range(256):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(spare))
            spare += 1
    return symbols


# str.translate tables between text (as Latin-1, one char per UTF-8 byte) and byte symbols, both ways.
_TO_SYMBOLS = {byte: symbol for byte, symbol in enumerate(_byte_symbols())}
_FROM_SYMBOLS = {ord(symbol): chr(byte) for byte, symbol in enumerate(_byte_symbols())}


def vocab_sha256(path: Path | str = DEFAULT_VOCAB_PATH) -> str:
    """SHA-256 of a merges file's decompressed text.

    The content, not the ``.gz`` bytes, is hashed: gzip headers carry a timestamp and a compression level, so the
    same vocabulary recompressed must keep its identity in model metadata.
    """
    return hashlib.sha256(_read_merges_text(Path(path))).hexdigest()


def _read_merges_text(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as stream:
            return stream.read()
    except FileNotFoundError:
        raise ClipedgeError(f"vocab_path {path}: no such file (expected a CLIP BPE merges file, .txt.gz)") from None
    except (OSError, EOFError) as error:
        raise ClipedgeError(f"vocab_path {path}: not a gzip file ({error}); expected a CLIP BPE merges file") from None


class _Vocabulary:
    """One merges file, parsed: symbol ↔ id, merge ranks, and a bounded per-word BPE cache.

    The cache lives here (not on a tokenizer), so tokenizers of different context lengths share it.
    """

    def __init__(self, path: Path, sha256: str, symbols: tuple[str, ...], ranks: dict[tuple[str, str], int]):
        self.path, self.sha256, self.symbols, self.ranks = path, sha256, symbols, ranks
        self.ids = {symbol: i for i, symbol in enumerate(symbols)}
        self.word_ids = functools.lru_cache(maxsize=WORD_CACHE_SIZE)(self._word_ids)

    def _word_ids(self, word: str) -> tuple[int, ...]:
        """Ids of one piece of cleaned text after BPE."""
        if word in (START_OF_TEXT, END_OF_TEXT):
            return (self.ids[word],)
        spelled = word.encode("utf-8").decode("latin-1").translate(_TO_SYMBOLS)
        parts = [*spelled[:-1], spelled[-1] + END_OF_WORD]
        ranks = self.ranks
        while len(parts) > 1:
            best, best_rank = None, math.inf
            for pair in itertools.pairwise(parts):
                rank = ranks.get(pair, math.inf)
                if rank < best_rank:
                    best, best_rank = pair, rank
            if best is None:
                break
            left, right = best
            merged, i, last = [], 0, len(parts) - 1
            while i <= last:
                # Occurrences are merged left to right without overlap: (a, a, a) with the pair (a, a) -> (aa, a).
                if i < last and parts[i] == left and parts[i + 1] == right:
                    merged.append(left + right)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return tuple(self.ids[part] for part in parts)


@functools.lru_cache(maxsize=4)
def _load_vocabulary(path: Path) -> _Vocabulary:
    """Parse a merges file once per process (about 0.1 s), whatever the number of tokenizers built on it."""
    raw = _read_merges_text(path)
    try:
        lines = raw.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        raise ClipedgeError(f"vocab_path {path}: not UTF-8 text; expected a CLIP BPE merges file") from None
    # Line 0 is the file's version header; the merges follow, best first.
    merges = [tuple(line.split()) for line in lines[1 : 1 + MERGE_COUNT]]
    if len(merges) < MERGE_COUNT or any(len(pair) != 2 for pair in merges):
        raise ClipedgeError(f"vocab_path {path}: not a CLIP BPE merges file "
                            f"(expected a header line then at least {MERGE_COUNT} lines of two symbols)")
    # Ids: the 256 byte symbols, the same with the end-of-word mark, one per merge in rank order, then the
    # special tokens. The byte symbols are numbered in code point order (printable bytes first, then the remapped).
    bytes_in_order = sorted(_byte_symbols())
    symbols = (*bytes_in_order, *(s + END_OF_WORD for s in bytes_in_order), *(a + b for a, b in merges),
               START_OF_TEXT, END_OF_TEXT)
    if len(set(symbols)) != len(symbols):
        raise ClipedgeError(f"vocab_path {path}: its merges repeat a symbol; not a CLIP BPE merges file")
    ranks = {pair: rank for rank, pair in enumerate(merges)}
    return _Vocabulary(path, hashlib.sha256(raw).hexdigest(), symbols, ranks)


def _clean(text: str) -> str:
    """open_clip's ``clean='lower'``: ftfy, HTML entities (twice, for double-escaped text), whitespace, lowercase."""
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()


class ClipTokenizer:
    """Text → CLIP token ids, the same ids as ``open_clip.get_tokenizer('ViT-B-32')``, as int32 numpy.

    int32 because that is what clipedge's text ONNX takes (open_clip gives int64 torch tensors); the values are
    identical. Build one per model (``context_length`` from its metadata, see :func:`tokenizer_from_spec`) and
    reuse it: the vocabulary and the per-word cache are shared by every tokenizer on the same vocabulary file.
    """

    def __init__(self, context_length: int = DEFAULT_CONTEXT_LENGTH, vocab_path: Path | None = None) -> None:
        if isinstance(context_length, bool) or not isinstance(context_length, (int, np.integer)) \
                or context_length < 2:
            raise ClipedgeError(f"context_length {context_length!r}: expected a whole number of at least 2 "
                                "(room for <start_of_text> and <end_of_text>)")
        self.context_length = int(context_length)
        self._vocab = _load_vocabulary(Path(vocab_path or DEFAULT_VOCAB_PATH).resolve())

    @property
    def vocab_size(self) -> int:
        """Number of token ids (49408 for CLIP): the text encoder's embedding table must have as many rows."""
        return len(self._vocab.symbols)

    @property
    def sot_token_id(self) -> int:
        """Id of ``<start_of_text>``, the first id of every row."""
        return self._vocab.ids[START_OF_TEXT]

    @property
    def eot_token_id(self) -> int:
        """Id of ``<end_of_text>``; CLIP's text encoder reads its embedding at this token (the row's highest id)."""
        return self._vocab.ids[END_OF_TEXT]

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` after cleaning, without ``<start_of_text>``/``<end_of_text>`` and without a length limit."""
        if not isinstance(text, str):
            raise ClipedgeError(f"text {text!r}: expected a string, got {type(text).__name__}")
        ids: list[int] = []
        word_ids = self._vocab.word_ids
        for piece in _PIECE.findall(_clean(text)):
            ids.extend(word_ids(piece))
        return ids

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        """Rows of ``<start_of_text>`` ids ``<end_of_text>`` padded with 0: int32 ``[len(texts), context_length]``.

        A text too long for the context is cut, and its last slot is overwritten with ``<end_of_text>`` (as
        open_clip does): the row then ends at the context length with the id the text encoder pools at.
        """
        if isinstance(texts, str):
            texts = [texts]
        elif isinstance(texts, (Sequence, np.ndarray)) and not isinstance(texts, (bytes, bytearray)):
            texts = list(texts)  # a numpy array of class names too
        else:
            raise ClipedgeError(f"texts: expected a string or a sequence of strings, got {type(texts).__name__}")
        rows = np.zeros((len(texts), self.context_length), dtype=np.int32)
        for row, text in zip(rows, texts):
            if not isinstance(text, str):
                raise ClipedgeError(f"texts: {text!r} is not a string ({type(text).__name__}); "
                                    "expected a string or a sequence of strings")
            ids = [self.sot_token_id, *self.encode(text)][: self.context_length - 1]
            ids.append(self.eot_token_id)
            row[: len(ids)] = ids
        return rows

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``, as open_clip's ``decode`` writes it: each end of word becomes a space (so the text ends
        with one and punctuation stands apart: ``"a dog . "``), special tokens and padding (0 is ``!``) are spelled
        out, so cut a row at ``eot_token_id`` first; bytes that are not valid UTF-8 become U+FFFD."""
        symbols = self._vocab.symbols
        parts = []
        for token in ids:
            if isinstance(token, bool) or not isinstance(token, (int, np.integer)) \
                    or not 0 <= token < len(symbols):
                raise ClipedgeError(f"token id {token!r}: not in the vocabulary (0..{len(symbols) - 1})")
            parts.append(symbols[token])
        raw = "".join(parts).translate(_FROM_SYMBOLS).encode("latin-1")
        return raw.decode("utf-8", errors="replace").replace(END_OF_WORD, " ")

    def spec(self) -> dict[str, Any]:
        """What model metadata records about the tokenizer, so a device can rebuild this one and check the match
        (:func:`tokenizer_from_spec`): the kind, the context length the text ONNX expects, the vocabulary's hash
        and the text cleaning."""
        return {"kind": CLIP_BPE_KIND, "context_length": self.context_length, "vocab_sha256": self._vocab.sha256,
                "clean": CLEAN}

    def __repr__(self) -> str:
        return f"ClipTokenizer(context_length={self.context_length}, vocab_path={str(self._vocab.path)!r})"


def tokenizer_from_spec(spec: dict[str, Any]) -> ClipTokenizer:
    """The tokenizer a model's metadata describes, on the shipped vocabulary, or a one-line refusal.

    Refused: any other tokenizer kind (SigLIP's sentencepiece, any Hugging Face tokenizer: the torch-free runtime
    cannot produce their ids), another text cleaning, and a vocabulary whose hash differs from the shipped one
    (its ids would silently mean other words).
    """
    if not isinstance(spec, dict):
        raise ClipedgeError(f"tokenizer spec {spec!r}: expected a mapping with kind, context_length, vocab_sha256, "
                            "clean")
    kind = spec.get("kind")
    if kind != CLIP_BPE_KIND:
        raise ClipedgeError(f"tokenizer {kind!r}: not the CLIP BPE tokenizer ({CLIP_BPE_KIND!r}); adding classes "
                            "by name with it is not supported by the torch-free runtime")
    missing = [key for key in ("context_length", "vocab_sha256", "clean") if key not in spec]
    if missing:
        raise ClipedgeError(f"tokenizer {kind!r}: its spec lacks {', '.join(missing)}")
    if spec["clean"] != CLEAN:
        raise ClipedgeError(f"tokenizer {kind!r} with clean={spec['clean']!r}: only clean={CLEAN!r} is supported by "
                            "the torch-free runtime")
    tokenizer = ClipTokenizer(context_length=spec["context_length"])
    shipped = tokenizer.spec()["vocab_sha256"]
    if spec["vocab_sha256"] != shipped:
        raise ClipedgeError(f"tokenizer {kind!r}: vocab_sha256 {spec['vocab_sha256']!r} is not the shipped CLIP "
                            f"vocabulary ({shipped}); not supported by the torch-free runtime")
    return tokenizer
