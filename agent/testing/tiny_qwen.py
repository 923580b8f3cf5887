"""Tiny random Qwen checkpoints of the real architectures, built offline for tests.

Each checkpoint (about 200k parameters, under 1 MB) has a byte-level vocabulary, the Qwen
special tokens with their ids in the config, a processor and a chat template, so
``AutoModelForImageTextToText`` / ``AutoProcessor.from_pretrained(path)`` load it like a real
one. Its output is random: test parsing separately, test loading and prompting with these.

    path = build_tiny_qwen3_5(tmp_path / "qwen3_5")
    settings = ModelSettings(backend="transformers", model=str(path))
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "CONTROL_TOKENS",
    "SPECIAL_TOKENS",
    "build_tiny_qwen2_5_vl",
    "build_tiny_qwen3_5",
    "build_tiny_qwen3_text",
    "chat_template",
]

logger = logging.getLogger(__name__)

# Special tokens (dropped from decoded replies) and plain added tokens (kept: replies use them).
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
CONTROL_TOKENS = (
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
)
_HIDDEN = 64
_SEED = 1234


def chat_template(name: str = "qwen3_5") -> str:
    """The text of a chat template shipped with this package (``qwen3_5`` or ``qwen2_5_vl``).

    Raises:
        FileNotFoundError: If no template of that name ships.
    """
    return (
        resources.files("surgagent.agent.testing")
        .joinpath(f"{name}_chat_template.jinja")
        .read_text()
    )


def _tokenizer(cls: Any) -> PreTrainedTokenizerBase:
    """A byte-level tokenizer: one token per byte, then the Qwen special tokens."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import AddedToken

    vocab = {symbol: i for i, symbol in enumerate(sorted(ByteLevel.alphabet()))}
    for token in (*SPECIAL_TOKENS, *CONTROL_TOKENS):
        vocab[token] = len(vocab)
    tokenizer = cls(vocab=vocab, merges=[], eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in CONTROL_TOKENS])
    return tokenizer


def _token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    return dict(zip(SPECIAL_TOKENS, ids, strict=True))


def _is_built(path: Path, *, processor: bool = True) -> bool:
    names = ["config.json", "model.safetensors", "tokenizer.json"]
    return all((path / name).is_file() for name in names + ["processor_config.json"] * processor)


def _save(path: Path, model: Any, processor: Any, *, vision: bool = True) -> Path:
    """Save into a temporary sibling folder, then move it into place (no half checkpoints)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        if path.exists() and not any(path.iterdir()):
            path.rmdir()
        os.replace(staging, path)
    except OSError:
        if not _is_built(path, processor=vision):
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("built tiny checkpoint at %s", path)
    return path


def _finish_model(model: Any, ids: dict[str, int]) -> Any:
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.do_sample = False
    return model.eval()


def build_tiny_qwen3_5(path: Path) -> Path:
    """Build a tiny random Qwen3.5 checkpoint (``qwen3_5``, processor ``Qwen3VLProcessor``).

    Args:
        path: Folder to create; left as it is when it already holds a built checkpoint.

    Returns:
        ``path``.
    """
    path = Path(path)
    if _is_built(path):
        return path
    import torch
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen3_5.tokenization_qwen3_5 import Qwen3_5Tokenizer
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    tokenizer = _tokenizer(Qwen3_5Tokenizer)
    ids = _token_ids(tokenizer)
    config = Qwen3_5Config(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": _HIDDEN,
            "intermediate_size": 2 * _HIDDEN,
            "num_hidden_layers": 2,
            "layer_types": ["linear_attention", "full_attention"],
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 32,
            "linear_key_head_dim": 16,
            "linear_value_head_dim": 16,
            "linear_num_key_heads": 2,
            "linear_num_value_heads": 2,
            "max_position_embeddings": 4096,
            # 32 * 0.25 = 8 rotary dims, 4 frequencies split over time, height, width.
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [2, 1, 1],
                "mrope_interleaved": True,
                "partial_rotary_factor": 0.25,
            },
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": _HIDDEN,
            "num_position_embeddings": 256,
            "patch_size": 16,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    with torch.random.fork_rng():
        torch.manual_seed(_SEED)
        model = _finish_model(Qwen3_5ForConditionalGeneration(config), ids)
    size = {"shortest_edge": 32 * 32, "longest_edge": 128 * 128}
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            patch_size=16, merge_size=2, temporal_patch_size=2, size=size
        ),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2),
        chat_template=chat_template("qwen3_5"),
    )
    return _save(path, model, processor)


def build_tiny_qwen2_5_vl(path: Path) -> Path:
    """Build a tiny random Qwen2.5-VL checkpoint (``qwen2_5_vl``, hermes JSON tool calls).

    Args:
        path: Folder to create; left as it is when it already holds a built checkpoint.

    Returns:
        ``path``.
    """
    path = Path(path)
    if _is_built(path):
        return path
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer
    from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    tokenizer = _tokenizer(Qwen2Tokenizer)
    ids = _token_ids(tokenizer)
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": _HIDDEN,
            "intermediate_size": 2 * _HIDDEN,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 4096,
            "max_window_layers": 2,
            # head_dim 32: 16 frequencies split over time, height, width.
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [8, 4, 4],
            },
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": _HIDDEN,
            "patch_size": 14,
            "window_size": 56,
            "fullatt_block_indexes": [1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    with torch.random.fork_rng():
        torch.manual_seed(_SEED)
        model = _finish_model(Qwen2_5_VLForConditionalGeneration(config), ids)
    size = {"shortest_edge": 28 * 28, "longest_edge": 112 * 112}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            patch_size=14, merge_size=2, temporal_patch_size=2, size=size
        ),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(patch_size=14, merge_size=2, temporal_patch_size=2),
        chat_template=chat_template("qwen2_5_vl"),
    )
    return _save(path, model, processor)


def build_tiny_qwen3_text(path: Path) -> Path:
    """Build a tiny random text-only Qwen3 checkpoint (``Qwen3ForCausalLM``) for vLLM on CPU.

    Vision-language architectures cannot be served by vLLM on these machines (their
    processors need a torchvision build the registry does not have), so the real-vLLM tests
    serve this one: the same byte-level vocabulary, with ``<think>``, ``</think>``,
    ``<tool_call>`` and ``</tool_call>`` as single plain tokens (vLLM's streaming reasoning
    and tool parsers look for their ids) and the Qwen3.5 chat template.

    Args:
        path: Folder to create; left as it is when it already holds a built checkpoint.

    Returns:
        ``path``.
    """
    path = Path(path)
    if _is_built(path, processor=False):
        return path
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    tokenizer = _tokenizer(Qwen2Tokenizer)
    tokenizer.chat_template = chat_template("qwen3_5")
    ids = _token_ids(tokenizer)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=_HIDDEN,
        intermediate_size=2 * _HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    with torch.random.fork_rng():
        torch.manual_seed(_SEED)
        model = _finish_model(Qwen3ForCausalLM(config), ids)
    return _save(path, model, tokenizer, vision=False)
