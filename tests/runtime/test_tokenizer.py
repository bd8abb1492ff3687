"""clipedge.runtime.text.ClipTokenizer gives open_clip's ids, token for token, without torch.

The parity corpus is generated (seeded) to reach every branch of the pipeline: ftfy's repairs, HTML entities,
whitespace of every kind, each alternative of the piece pattern (special token strings, contractions, letter runs
in many scripts, digits, punctuation runs, emoji sequences), BPE on rare and common words, and truncation.
"""

from __future__ import annotations

import gzip
import random
import string
import subprocess
import sys
import textwrap

import numpy as np
import open_clip
import pytest
from clipedge.errors import ClipedgeError
from clipedge.runtime.text import DEFAULT_VOCAB_PATH, ClipTokenizer, tokenizer_from_spec, vocab_sha256
from clipedge.runtime.text.tokenizer import WORD_CACHE_SIZE
from open_clip.tokenizer import SimpleTokenizer, default_bpe

WORDS = ("a photo of the dog cat golden retriever tabby tiger shark goldfish great white hammerhead ray cock hen "
         "ostrich brambling junco indigo bunting robin bulbul jay magpie chickadee water ouzel kite bald eagle vulture "
         "forklift pallet helmet person hard hat safety vest traffic cone barrier camera zebra crossing it's don't "
         "we'll they're you've i'm he'd origami rendering sculpture tattoo bright dark jpeg blurry cropped close-up "
         "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis xylophone qwzx").split()
CLASS_NAMES = ("tench", "goldfish", "great_white_shark", "tiger_shark", "hammerhead", "electric_ray", "stingray",
               "Egyptian_cat", "German_shepherd", "n01440764", "jack-o'-lantern", "T-shirt", "yellow lady's slipper",
               "Granny_Smith", "hen-of-the-woods", "carpenter's_kit", "CD_player", "potter's wheel", "ski_mask")
TEMPLATES = ("a photo of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
             "art of the {}.", "a drawing of a {}", "itap of a {}.", "a {} in a video game.", "{}", "a photo of my {}!")
ACCENTED = "éèêëàâäáãåçñóòôöõøúùûüíìîïýÿæœßðþłńśźżčřšžğışİſK"  # İ lowercases to two code points; K is Kelvin
SCRIPTS = {
    "cjk": (0x4E00, 0x9FFF), "hiragana": (0x3041, 0x3096), "hangul": (0xAC00, 0xD7A3), "cyrillic": (0x0400, 0x04FF),
    "greek": (0x0391, 0x03C9), "arabic": (0x0600, 0x06FF), "hebrew": (0x05D0, 0x05EA), "thai": (0x0E01, 0x0E5B),
    "devanagari": (0x0900, 0x097F), "fullwidth": (0xFF01, 0xFF5E), "math-letters": (0x1D400, 0x1D4FF),
}
EMOJI = ["😀", "🐶", "🦈", "🚜", "❤️", "✨", "👍🏽", "👋🏿", "🧑🏻‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷", "🇯🇵", "1️⃣", "#️⃣", "©", "™",
         "☕", "🫠", "👩‍❤️‍👨", "🐕‍🦺", "\u200d", "\ufe0f"]
ENTITIES = ["&amp;", "&#39;", "&lt;", "&gt;", "&quot;", "&nbsp;", "&#x27;", "&amp;amp;", "&amp;#39;", "&copy;",
            "&eacute;", "&#8217;", "&#128054;", "&foo;", "&", "&#", "&#xZZ;", "&AMP;"]
SPACES = [" ", "  ", "\t", "\n", "\r\n", " \t \n ", "\u00a0", "\u2003", "\u3000", "\u2028", "\x0b", "\x0c", "\x1c",
          "\x85", "\u200b", "\ufeff"]
ODD = ["\x00", "\x7f", "\x1b[31m", "\u0301", "\u0308", "\ufffd", "\ud800", "\udfff", "\U0010ffff", "\u00ad",
       "<start_of_text>", "<end_of_text>", "<START_OF_TEXT>", "<start_of_text", "’s", "‘quoted’", "“double”",
       "ﬁ", "ﬂ", "…", "–", "—", "'S", "'LL", "'ſ", "''s", "'", "`"]


def mojibake(rng: random.Random) -> str:
    """Text damaged the usual ways (UTF-8 read as Windows-1252 or Latin-1, sometimes twice); ftfy repairs most."""
    text = rng.choice(["café", "naïve", "jalapeño", "Straße", "’s", "“quoted”", "—", "😀", "Москва", "東京", "Zürich"])
    for _ in range(rng.choice([1, 1, 2])):
        text = text.encode("utf-8").decode(rng.choice(["cp1252", "latin-1"]), errors="replace")
    return text


def script_run(rng: random.Random, low: int, high: int) -> str:
    return "".join(chr(rng.randint(low, high)) for _ in range(rng.randint(1, 8)))


def fragment(rng: random.Random) -> str:
    """One piece of text from a randomly chosen family."""
    kind = rng.randrange(13)
    if kind == 0:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))
    if kind == 1:
        word = rng.choice(WORDS)
        return "".join(c.upper() if rng.random() < 0.4 else c for c in word)
    if kind == 2:
        return "".join(rng.choice(string.punctuation) for _ in range(rng.randint(1, 8)))
    if kind == 3:
        return rng.choice([str(rng.randint(0, 10 ** rng.randint(1, 12))), f"{rng.uniform(0, 1000):.3f}", "1,000",
                           "2nd", "3rd", "4k", "1080p", "v2.1", "٣٤", "१२३", "½", "²", "Ⅻ"])
    if kind == 4:
        return "".join(rng.choice(ACCENTED) if rng.random() < 0.5 else rng.choice(string.ascii_letters)
                       for _ in range(rng.randint(1, 10)))
    if kind == 5:
        return script_run(rng, *rng.choice(list(SCRIPTS.values())))
    if kind == 6:
        return "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 4)))
    if kind == 7:
        return rng.choice(ENTITIES) + rng.choice(["", rng.choice(WORDS)])
    if kind == 8:
        return mojibake(rng)
    if kind == 9:
        return rng.choice(SPACES)
    if kind == 10:
        return rng.choice(ODD)
    if kind == 11:
        return rng.choice(TEMPLATES).format(rng.choice(CLASS_NAMES))
    return chr(rng.choice([rng.randint(0x20, 0x2FF), rng.randint(0x300, 0x2FFF), rng.randint(0x1F000, 0x1FAFF)]))


def corpus(size: int = 6000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = ["", " ", "\t\n", "a", "A", "!", "0", "<start_of_text>", "a photo of a dog.", "&amp;amp;"]
    texts += [template.format(name) for template in TEMPLATES for name in CLASS_NAMES]
    texts += [template.format(name.replace("_", " ")) for template in TEMPLATES[:3] for name in CLASS_NAMES]
    # Very long names: well past both context lengths, so truncation and the forced last token are exercised.
    texts += [" ".join(rng.choice(WORDS) for _ in range(rng.randint(100, 400))) for _ in range(20)]
    texts += ["".join(fragment(rng) for _ in range(rng.randint(40, 120))) for _ in range(20)]
    while len(texts) < size:
        pieces = [fragment(rng) for _ in range(rng.randint(1, 8))]
        texts.append("".join(p + rng.choice(["", " ", " ", rng.choice(SPACES)]) for p in pieces))
    return texts


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return corpus()


def mismatches(ours: np.ndarray, theirs: np.ndarray, texts: list[str]) -> list[str]:
    rows = np.flatnonzero((ours != theirs).any(axis=1))
    return [f"{texts[i]!r}: ours {ours[i].tolist()} open_clip {theirs[i].tolist()}" for i in rows[:5]]


@pytest.mark.parametrize("context_length", [77, 32])
def test_ids_equal_open_clip(texts, context_length):
    """Token for token, the padding and the truncated rows included."""
    if context_length == 77:
        reference = open_clip.get_tokenizer("ViT-B-32")
        assert reference.context_length == 77
    else:
        reference = SimpleTokenizer(context_length=context_length)
    theirs = reference(texts).numpy()
    ours = ClipTokenizer(context_length=context_length)(texts)
    assert ours.dtype == np.int32 and ours.shape == (len(texts), context_length)
    assert mismatches(ours, theirs, texts) == []
    truncated = [i for i, t in enumerate(texts) if len(reference.encode(t)) + 2 > context_length]
    assert len(truncated) >= 40  # the long names reach the cut
    assert (ours[truncated, -1] == reference.eot_token_id).all()


def test_encode_equals_open_clip_without_a_length_limit(texts):
    """encode() is the whole text, however long: checked on the long names and a sample of the rest."""
    reference = open_clip.get_tokenizer("ViT-B-32")
    ours = ClipTokenizer()
    sample = sorted(texts, key=len)[-60:] + texts[::25]
    assert [t for t in sample if ours.encode(t) != reference.encode(t)] == []
    assert max(len(ours.encode(t)) for t in sample) > 400


def test_vocabulary_and_special_tokens_match_open_clip():
    reference = SimpleTokenizer()
    ours = ClipTokenizer()
    assert (ours.vocab_size, ours.sot_token_id, ours.eot_token_id) == (49408, 49406, 49407)
    assert (ours.vocab_size, ours.sot_token_id, ours.eot_token_id) == (
        reference.vocab_size, reference.sot_token_id, reference.eot_token_id)
    assert ours._vocab.ids == reference.encoder


def test_decode_equals_open_clip():
    """Random ids (specials, padding, byte tokens that do not form valid UTF-8) decode as open_clip decodes them."""
    rng = random.Random(1)
    reference = SimpleTokenizer()
    ours = ClipTokenizer()
    for _ in range(300):
        ids = [rng.choice([rng.randrange(512), rng.randrange(49408), 0, 49406, 49407])
               for _ in range(rng.randint(0, 30))]
        assert ours.decode(ids) == reference.decode(ids), ids
    assert ours.decode(np.array([320, 1929, 269], dtype=np.int32)) == "a dog . "


def test_decode_inverts_encode_on_cleaned_lowercase_ascii():
    """Every non-space character comes back; words of letters come back exactly, each followed by one space."""
    rng = random.Random(2)
    ours = ClipTokenizer()
    alphabet = string.ascii_lowercase + string.digits + string.punctuation.replace("&", "")
    for _ in range(500):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 12))]
        text = " ".join(w for w in words if "'" not in w and "-" not in w) or "dog"
        assert ours.decode(ours.encode(text)) == text + " "
        text = "".join(rng.choice(alphabet + " ") for _ in range(rng.randint(1, 40))).strip() or "x"
        assert ours.decode(ours.encode(text)).replace(" ", "") == text.replace(" ", "")


def test_one_call_tokenizes_one_or_many():
    ours = ClipTokenizer(context_length=8)
    single = ours("a photo of a dog.")
    assert single.shape == (1, 8) and single.dtype == np.int32
    assert single[0].tolist() == [49406, 320, 1125, 539, 320, 1929, 269, 49407]
    assert ours(["a photo of a large dog."])[0].tolist() == [49406, 320, 1125, 539, 320, 3638, 1929, 49407]
    assert ours([]).shape == (0, 8)
    assert ours(np.array(["dog", "cat"]))[:, :3].tolist() == [[49406, 1929, 49407], [49406, 2368, 49407]]
    assert ours("")[0].tolist() == [49406, 49407, 0, 0, 0, 0, 0, 0]


@pytest.mark.parametrize("bad", [None, 3, b"dog", ["dog", 3], [b"dog"]])
def test_non_text_is_refused_in_one_line(bad):
    with pytest.raises(ClipedgeError, match="expected a string") as raised:
        ClipTokenizer()(bad)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("context_length", [0, 1, -5, 2.5, True, "77"])
def test_context_length_needs_room_for_start_and_end(context_length):
    with pytest.raises(ClipedgeError, match="context_length"):
        ClipTokenizer(context_length=context_length)


def test_decode_refuses_ids_outside_the_vocabulary():
    with pytest.raises(ClipedgeError, match=r"token id 49408: not in the vocabulary \(0\.\.49407\)"):
        ClipTokenizer().decode([320, 49408])


def test_spec_records_what_a_device_needs():
    spec = ClipTokenizer(context_length=32).spec()
    assert spec == {"kind": "clip-bpe", "context_length": 32, "vocab_sha256": vocab_sha256(), "clean": "lower"}
    assert len(spec["vocab_sha256"]) == 64
    # The shipped vocabulary is open_clip's, and its hash is of the content: recompressing keeps it.
    assert vocab_sha256(default_bpe()) == spec["vocab_sha256"]
    rebuilt = tokenizer_from_spec(spec)
    assert rebuilt.spec() == spec and rebuilt("a dog").shape == (1, 32)


def test_vocab_identity_is_its_content(tmp_path):
    recompressed = tmp_path / "vocab.txt.gz"
    recompressed.write_bytes(gzip.compress(gzip.decompress(DEFAULT_VOCAB_PATH.read_bytes()), compresslevel=1, mtime=7))
    assert recompressed.read_bytes() != DEFAULT_VOCAB_PATH.read_bytes()
    tokenizer = ClipTokenizer(vocab_path=recompressed)
    assert tokenizer.spec() == ClipTokenizer().spec()
    assert tokenizer("a photo of a dog.").tolist() == ClipTokenizer()("a photo of a dog.").tolist()


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    (b"not gzip", "not a gzip file"),
    (gzip.compress(b"#version: 0.2\ni n\nt h\n"), "not a CLIP BPE merges file"),
])
def test_a_file_that_is_not_a_vocabulary_is_refused(tmp_path, content, message):
    path = tmp_path / "vocab.txt.gz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ClipedgeError, match=message) as raised:
        ClipTokenizer(vocab_path=path)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


def good_spec(**changes):
    return {**ClipTokenizer().spec(), **changes}


@pytest.mark.parametrize("spec, message", [
    (good_spec(kind="hf:timm/ViT-B-16-SigLIP"),
     "tokenizer 'hf:timm/ViT-B-16-SigLIP': not the CLIP BPE tokenizer ('clip-bpe'); "
     "adding classes by name with it is not supported by the torch-free runtime"),
    ({"kind": "sentencepiece", "context_length": 64}, "tokenizer 'sentencepiece': not the CLIP BPE tokenizer"),
    ({"context_length": 77}, "tokenizer None: not the CLIP BPE tokenizer"),
    (good_spec(vocab_sha256="0" * 64), f"tokenizer 'clip-bpe': vocab_sha256 '{'0' * 64}' is not the shipped CLIP "
                                       "vocabulary"),
    (good_spec(clean="canonicalize"), "tokenizer 'clip-bpe' with clean='canonicalize': only clean='lower'"),
    ({"kind": "clip-bpe", "clean": "lower"}, "tokenizer 'clip-bpe': its spec lacks context_length, vocab_sha256"),
    (good_spec(context_length=1), "context_length 1: expected a whole number of at least 2"),
    (["clip-bpe"], "tokenizer spec"),
])
def test_tokenizer_from_spec_refuses_what_the_runtime_cannot_reproduce(spec, message):
    with pytest.raises(ClipedgeError) as raised:
        tokenizer_from_spec(spec)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_words_are_cached_and_the_cache_is_bounded():
    tokenizer = ClipTokenizer()
    tokenizer(["a photo of a zebra crossing.", "a photo of a zebra."])
    info = tokenizer._vocab.word_ids.cache_info()
    assert info.maxsize == WORD_CACHE_SIZE and info.hits >= 4
    # Tokenizers on one vocabulary file share the parsed vocabulary and its cache, whatever their context length.
    assert ClipTokenizer(context_length=32)._vocab is tokenizer._vocab


def test_the_tokenizer_runs_without_torch_or_open_clip():
    """torch, torchvision and open_clip blocked before the import: it must still import and tokenize."""
    script = textwrap.dedent("""
        import sys
        for name in ("torch", "torchvision", "open_clip"):
            sys.modules[name] = None  # any import of them now raises ImportError
        from clipedge.runtime.text.tokenizer import ClipTokenizer
        ids = ClipTokenizer()(["a photo of a dog.", "naïve café 😀"])
        print(ids.dtype, ids[0, :8].tolist())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["int32", "[49406,", "320,", "1125,", "539,", "320,", "1929,", "269,", "49407]"]
