"""Tokenizers (lab m10 builds byte-level BPE and unigram here; m09 uses the character tokenizer).

One module per tokenizer: ``char``, ``pretokenize`` (byte-level, GPT-2 pattern), ``bpe``, ``unigram``, and ``hf``
(loading tokenizer folders, and any Hugging Face tokenizer.json). Their names are re-exported here.

Every llmlab tokenizer exports a Hugging Face ``tokenizer.json`` that ``tokenizers.Tokenizer.from_file``
and ``transformers.PreTrainedTokenizerFast`` load and that gives the same ids as llmlab.
"""

from __future__ import annotations

from llmlab.tokenization.bpe import BPETokenizer, bpe_decode, bpe_encode, compression_ratio, naive_bpe_merges, train_bpe
from llmlab.tokenization.char import UNK, CharTokenizer
from llmlab.tokenization.hf import HFTokenizer, load_tokenizer, model_tokenizer, vocabulary_strings
from llmlab.tokenization.pretokenize import (
    BYTE_TO_CHAR,
    CHAR_TO_BYTE,
    GPT2_PATTERN,
    bytes_to_unicode,
    from_unicode,
    pretokenize_counts,
    to_unicode,
)
from llmlab.tokenization.unigram import UnigramTokenizer, viterbi_segment

__all__ = ["BPETokenizer", "BYTE_TO_CHAR", "CHAR_TO_BYTE", "CharTokenizer", "GPT2_PATTERN", "HFTokenizer", "UNK",
           "UnigramTokenizer", "bpe_decode", "bpe_encode", "bytes_to_unicode", "compression_ratio", "from_unicode",
           "load_tokenizer", "model_tokenizer", "naive_bpe_merges", "pretokenize_counts", "to_unicode", "train_bpe",
           "viterbi_segment", "vocabulary_strings"]


def __getattr__(name: str):
    if name in ("isotropy", "cosine_similarities"):  # moved where embeddings are
        import warnings

        from llmlab import embeddings

        warnings.warn(f"llmlab.tokenization.{name} moved to llmlab.embeddings.{name}", DeprecationWarning,
                      stacklevel=2)
        return getattr(embeddings, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
