"""A benchmark tokenizer with real token counts: a BPE trained, offline, on ordinary English on this machine.

The tiny VLMs of the tests use a byte-level BPE of a few hundred tokens trained on the prompts' own words; it makes
every prompt about four times longer than Qwen's tokenizer, which hides the cost of long prompts. This one splits
text with Qwen2's pre-tokenizer pattern and learns ``vocab_size`` merges from English prose found locally:
Python's own documentation (the language reference and library topics of ``pydoc_data.topics``) and the license
texts in ``/usr/share/common-licenses`` where that folder exists. No prompt text is in the corpus.
"""

from __future__ import annotations

from pathlib import Path

# Qwen2's pre-tokenizer split (tokenizer.json of Qwen2 / Qwen2.5 / Qwen3): contractions, letters with one leading
# non-letter, single digits, punctuation runs, newlines, spaces.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+")
LICENSES = Path("/usr/share/common-licenses")
VOCAB_SIZE = 8192  # the comparison cut Qwen's BPE to its first 8k ranks


def english_corpus() -> list[str]:
    """Paragraphs of English: Python's documentation topics, then the system's license texts (if any)."""
    from pydoc_data.topics import topics

    texts = list(topics.values())
    if LICENSES.is_dir():
        texts += [p.read_text(errors="ignore") for p in sorted(LICENSES.iterdir()) if p.is_file()]
    return [para for text in texts for para in text.split("\n\n") if para.strip()]


def corpus_description() -> str:
    n_licenses = len([p for p in LICENSES.iterdir() if p.is_file()]) if LICENSES.is_dir() else 0
    chars = sum(map(len, english_corpus()))
    return (f"BPE of {VOCAB_SIZE} tokens (Qwen2 pre-tokenizer split) trained on {chars / 1e6:.1f} M characters of "
            f"English: Python's pydoc_data.topics and {n_licenses} texts of {LICENSES}")


def tokenizer_kwargs(vocab_size: int = VOCAB_SIZE) -> dict:
    """``make_tiny_vlm`` keywords for a VLM with this tokenizer."""
    from tokenizers import Regex, pre_tokenizers

    split = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    return dict(vocab_size=vocab_size, corpus=english_corpus(), pre_tokenizer=split)
