"""Write an offline Hugging Face hub cache holding only ``config.json`` for the small
OPT models vLLM's scheduler tests name (their published configs), so ``ModelConfig``
resolves them with ``HF_HUB_OFFLINE=1``. Usage: ``python hf_cache.py HUB_DIR``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

_OPT = {
    "activation_dropout": 0.0, "activation_function": "relu", "architectures": ["OPTForCausalLM"],
    "attention_dropout": 0.0, "bos_token_id": 2, "dropout": 0.1, "eos_token_id": 2,
    "init_std": 0.02, "layerdrop": 0.0, "max_position_embeddings": 2048, "model_type": "opt",
    "pad_token_id": 1, "prefix": "</s>", "torch_dtype": "float16", "use_cache": True,
    "vocab_size": 50272,
}
CONFIGS = {
    "facebook/opt-125m": {**_OPT, "do_layer_norm_before": True, "ffn_dim": 3072, "hidden_size": 768,
                          "num_attention_heads": 12, "num_hidden_layers": 12,
                          "word_embed_proj_dim": 768},
    "facebook/opt-350m": {**_OPT, "do_layer_norm_before": False, "ffn_dim": 4096, "hidden_size": 1024,
                          "num_attention_heads": 16, "num_hidden_layers": 24,
                          "word_embed_proj_dim": 512},
}
#: any fixed 40-hex name: the cache maps the ``main`` ref to this snapshot
REVISION = "0" * 40


def write(hub: Path) -> None:
    for repo, config in CONFIGS.items():
        base = hub / ("models--" + repo.replace("/", "--"))
        snap = base / "snapshots" / REVISION
        snap.mkdir(parents=True, exist_ok=True)
        (snap / "config.json").write_text(json.dumps({"_name_or_path": repo, **config}, indent=2))
        (base / "refs").mkdir(exist_ok=True)
        (base / "refs" / "main").write_text(REVISION)


if __name__ == "__main__":
    write(Path(sys.argv[1]))
