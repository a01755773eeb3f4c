"""A tiny Llama model directory made offline, for serving vLLM on a CPU with random weights.

vLLM needs a model directory (a ``config.json`` and a tokenizer) even with
``--load-format dummy``, which fills the weights with random values. Nothing is
downloaded: the tokenizer is a byte-level BPE trained here with ``tokenizers`` on text
that ships with Python (the standard library's own sources), saved through
``transformers``' ``PreTrainedTokenizerFast.save_pretrained`` so vLLM loads it like any
Hugging Face tokenizer. Byte-level means every string (and every token id below the
vocabulary size) round-trips, so a client can ask for any prompt length. Usage::

    write_tiny_model("/tmp/tiny-llama")  # then: vllm serve /tmp/tiny-llama --load-format dummy

Needs ``transformers`` and ``tokenizers`` (both come with vLLM).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

#: the special tokens, in id order (Llama's convention: unk 0, bos 1, eos 2)
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")


@dataclass(frozen=True, slots=True)
class TinyModelSpec:
    """The shape of the tiny Llama (defaults: 2 layers, hidden 128, 4 heads, vocab 2048)."""

    num_hidden_layers: int = 2
    hidden_size: int = 128
    intermediate_size: int = 256
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    vocab_size: int = 2048
    max_position_embeddings: int = 8192

    def validate(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"tiny model: {name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"tiny model: hidden_size {self.hidden_size} is not divisible by "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.vocab_size < 256 + len(SPECIAL_TOKENS):
            raise ValueError(f"tiny model: vocab_size must be >= {256 + len(SPECIAL_TOKENS)} "
                             f"(byte alphabet + special tokens), got {self.vocab_size}")


def _corpus(max_bytes: int = 2_000_000) -> Iterator[str]:
    """Local training text: the standard library's Python sources, in a fixed order."""
    root = Path(os.__file__).parent
    total = 0
    for path in sorted(root.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        yield text
        total += len(text)
        if total >= max_bytes:
            return


def write_tiny_model(out_dir: str | os.PathLike[str], spec: TinyModelSpec | None = None) -> Path:
    """Write ``config.json`` and the tokenizer files of a tiny Llama into ``out_dir``.

    Idempotent: an existing directory made with the same spec is reused as is.
    Returns the directory.
    """
    spec = spec or TinyModelSpec()
    spec.validate()
    out = Path(out_dir)
    stamp = out / "tailwise_tiny_model.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == asdict(spec):
        return out
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(_corpus(), vocab_size=spec.vocab_size, min_frequency=2,
                            special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    unk, bos, eos = SPECIAL_TOKENS
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=bpe._tokenizer, unk_token=unk,
                                        bos_token=bos, eos_token=eos,
                                        model_max_length=spec.max_position_embeddings)
    tokenizer.save_pretrained(str(out))
    ids = [int(tokenizer.convert_tokens_to_ids(t)) for t in SPECIAL_TOKENS]  # type: ignore[arg-type]
    config = LlamaConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=ids[1],
        eos_token_id=ids[2],
        tie_word_embeddings=False,
        dtype="float32",
    )
    config.save_pretrained(str(out))
    stamp.write_text(json.dumps(asdict(spec), indent=2) + "\n")
    return out
