"""The in-process transformers backend on tiny random Qwen checkpoints; the vLLM backend's check.

The tiny models' replies are random bytes, so these tests check loading, prompting, the
plumbing from tokens to messages and the errors; `test_parsing.py` checks the parsing itself.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from surgagent.agent.backends import load_backend
from surgagent.agent.backends._messages import REASONING_KEY
from surgagent.agent.backends._parsing import invalid_call_error
from surgagent.agent.backends.transformers import TransformersChat, clear_model_cache
from surgagent.agent.settings import ModelSettings
from surgagent.agent.testing.tiny_qwen import build_tiny_qwen2_5_vl, build_tiny_qwen3_5
from surgagent.tools.errors import BackendError, ConfigError
from surgagent.tools.vision import VisionAnswer, image_parts

pytest.importorskip("torch")

GET_FRAME = {
    "type": "function",
    "function": {
        "name": "get_frame",
        "description": "Show the frame at a time of the case.",
        "parameters": {
            "type": "object",
            "properties": {
                "time": {"type": "string", "description": "mm:ss"},
                "zoom": {"type": "number"},
            },
            "required": ["time"],
        },
    },
}


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-qwen")
    return {
        "qwen3_5": build_tiny_qwen3_5(root / "qwen3_5"),
        "qwen2_5_vl": build_tiny_qwen2_5_vl(root / "qwen2_5_vl"),
    }


@pytest.fixture
def qwen35(checkpoints: dict[str, Path]) -> Path:
    return checkpoints["qwen3_5"]


def backend(path: Path | str, role: str = "planner", **settings: Any) -> TransformersChat:
    options: dict[str, Any] = {"temperature": 0.0, "max_tokens": 12, **settings}
    model_settings = ModelSettings(backend="transformers", model=str(path), **options)
    return TransformersChat(settings=model_settings, role=role)


def image(color: tuple[int, int, int] = (180, 40, 40), size: tuple[int, int] = (64, 64)) -> Any:
    from PIL import Image

    return Image.new("RGB", size, color)


def tool_loop() -> list[BaseMessage]:
    """A question, a tool call with its thinking, and two tool results."""
    return [
        SystemMessage("You review laparoscopic cholecystectomies."),
        HumanMessage("Is the critical view of safety reached?"),
        AIMessage(
            content="Let me look.",
            additional_kwargs={REASONING_KEY: "I should inspect the hepatocystic triangle."},
            tool_calls=[
                {"name": "get_frame", "args": {"time": "01:15", "zoom": 2}, "id": "call_1"},
                {"name": "get_frame", "args": {"time": "01:20"}, "id": "call_2"},
            ],
        ),
        ToolMessage("frame 01:15: two structures visible", tool_call_id="call_1", name="get_frame"),
        ToolMessage("frame 01:20: cystic plate exposed", tool_call_id="call_2", name="get_frame"),
    ]


# --- tiny checkpoints -----------------------------------------------------------------------


def test_both_tiny_architectures_load_and_rebuilding_is_a_no_op(
    checkpoints: dict[str, Path],
) -> None:
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    expected = {
        "qwen3_5": ("Qwen3_5ForConditionalGeneration", "Qwen3VLProcessor"),
        "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"),
    }
    for kind, path in checkpoints.items():
        model = AutoModelForImageTextToText.from_pretrained(path)
        processor = AutoProcessor.from_pretrained(path)
        assert (type(model).__name__, type(processor).__name__) == expected[kind]
        config = AutoConfig.from_pretrained(path)
        tokenizer = processor.tokenizer
        assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
        assert config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
        assert sum(p.numel() for p in model.parameters()) < 1_000_000
        assert processor.chat_template
        stamp = (path / "model.safetensors").stat().st_mtime_ns
        builder = build_tiny_qwen3_5 if kind == "qwen3_5" else build_tiny_qwen2_5_vl
        assert builder(path) == path
        assert (path / "model.safetensors").stat().st_mtime_ns == stamp


# --- prompts --------------------------------------------------------------------------------


def test_prompt_renders_tools_past_calls_and_merged_tool_results(qwen35: Path) -> None:
    prompt, images = backend(qwen35).render(tool_loop(), tools=[GET_FRAME])
    assert images == []
    system = prompt.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\n")
    assert '"name": "get_frame"' in system and "<tools>" in system and "</tools>" in system
    assert system.rstrip().endswith("You review laparoscopic cholecystectomies.")
    # The assistant turn of the current tool loop keeps its thinking and its calls as XML.
    assert (
        "<|im_start|>assistant\n<think>\nI should inspect the hepatocystic triangle.\n</think>\n\n"
        "Let me look.\n\n<tool_call>\n<function=get_frame>\n<parameter=time>\n01:15\n</parameter>\n"
        "<parameter=zoom>\n2\n</parameter>\n</function>\n</tool_call>\n<tool_call>\n"
        "<function=get_frame>\n<parameter=time>\n01:20\n</parameter>\n</function>\n</tool_call>"
        "<|im_end|>"
    ) in prompt
    # Consecutive tool results share one user turn.
    assert (
        "<|im_start|>user\n<tool_response>\nframe 01:15: two structures visible\n</tool_response>"
        "\n<tool_response>\nframe 01:20: cystic plate exposed\n</tool_response><|im_end|>"
    ) in prompt
    assert prompt.count("<|im_start|>user") == 2


def test_rendered_past_calls_parse_back_to_the_same_calls(qwen35: Path) -> None:
    from surgagent.agent.backends._parsing import parse_tool_calls

    prompt, _ = backend(qwen35).render(tool_loop(), tools=[GET_FRAME])
    turn = prompt.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0]
    parsed = parse_tool_calls(turn.split("</think>")[-1], tools=[GET_FRAME])
    assert parsed.content == "Let me look."
    assert [(c["name"], c["args"]) for c in parsed.tool_calls] == [
        ("get_frame", {"time": "01:15", "zoom": 2}),
        ("get_frame", {"time": "01:20"}),
    ]


def test_older_turns_drop_their_thinking(qwen35: Path) -> None:
    messages = [
        HumanMessage("first question"),
        AIMessage("first answer", additional_kwargs={REASONING_KEY: "old thoughts"}),
        HumanMessage("second question"),
    ]
    prompt, _ = backend(qwen35).render(messages)
    assert "old thoughts" not in prompt
    assert "<|im_start|>assistant\nfirst answer<|im_end|>" in prompt


def test_thinking_switch_changes_the_generation_prompt(qwen35: Path) -> None:
    messages = [HumanMessage("Which phase is this?")]
    chat = backend(qwen35)
    on, _ = chat.render(messages, thinking=True)
    off, _ = chat.render(messages, thinking=False)
    assert on.endswith("<|im_start|>assistant\n<think>\n")
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    default_planner, _ = backend(qwen35, thinking=True).render(messages)
    default_perception, _ = backend(qwen35, thinking=False).render(messages)
    assert (default_planner, default_perception) == (on, off)


def test_template_errors_become_backend_errors(qwen35: Path) -> None:
    messages = [HumanMessage("hi"), SystemMessage("late system message")]
    with pytest.raises(BackendError, match="must be the first message") as info:
        backend(qwen35).render(messages)
    assert info.value.retryable is False
    only_tool_results = [
        SystemMessage("sys"),
        HumanMessage("<tool_response>\nx\n</tool_response>"),
    ]
    with pytest.raises(BackendError, match="no user message"):
        backend(qwen35).render(only_tool_results)


# --- generation -----------------------------------------------------------------------------


def test_invoke_returns_a_parsed_reply_with_usage(qwen35: Path) -> None:
    chat = backend(qwen35)
    reply = chat.bind_tools([GET_FRAME]).invoke(tool_loop())
    assert isinstance(reply, AIMessage)
    assert isinstance(reply.content, str)
    usage = reply.usage_metadata
    assert usage is not None
    prompt, _ = chat.render(tool_loop(), tools=[GET_FRAME])
    processor = chat._loaded().processor
    assert usage["input_tokens"] == len(processor.tokenizer(prompt)["input_ids"])
    assert 1 <= usage["output_tokens"] <= 12


def last_real_query(messages: list[dict[str, Any]]) -> int:
    """Index of the message Qwen3.5's own template takes as the question (ENVIRONMENT.md):
    walking back, the last user message whose text is not wholly a <tool_response> block."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        content = message["content"]
        text = content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
        text = text.strip()
        wrapped = text.startswith("<tool_response>") and text.endswith("</tool_response>")
        if message["role"] == "user" and not wrapped:
            return index
    raise AssertionError("no real user query")


def test_frames_in_tool_results_keep_the_loops_thinking(qwen35: Path) -> None:
    """Frames a tool returns travel in its result: the loop's earlier thinking stays visible."""
    from surgagent.agent.backends._messages import to_openai_messages

    loop = tool_loop()
    frame = image_parts([image((30, 200, 30))], 896)
    loop[-1] = ToolMessage(
        [{"type": "text", "text": "frame 01:20: cystic plate exposed"}, *frame],
        tool_call_id="call_2",
        name="get_frame",
    )
    sent = to_openai_messages(loop, args_as_dict=True)
    assert sent[-1]["role"] == "tool" and sent[-1]["content"][1]["type"] == "image_url"
    # By the genuine template's rule the question is still the real query, so the assistant
    # turn after it (the one that called the tool) keeps its thinking.
    assert last_real_query(sent) == 1
    chat = backend(qwen35)
    prompt, images = chat.render(loop, tools=[GET_FRAME])
    assert len(images) == 1
    response = prompt[prompt.rindex("<tool_response>") : prompt.rindex("</tool_response>")]
    assert "cystic plate exposed" in response and "<|image_pad|>" in response
    assert "I should inspect the hepatocystic triangle." in prompt
    # The processor expands the frame into visual tokens: more input than the text alone.
    with_frame = chat.bind_tools([GET_FRAME]).invoke(loop).usage_metadata
    text_only = chat.bind_tools([GET_FRAME]).invoke(tool_loop()).usage_metadata
    assert with_frame and text_only and with_frame["input_tokens"] > text_only["input_tokens"]


def test_images_reach_the_model_as_visual_tokens(qwen35: Path) -> None:
    chat = backend(qwen35)
    frames = [image((200, 30, 30)), image((30, 200, 30), size=(96, 64))]
    with_images = [HumanMessage([*image_parts(frames, 896), {"type": "text", "text": "Tools?"}])]
    prompt, images = chat.render(with_images)
    assert len(images) == 2 and prompt.count("<|image_pad|>") == 2
    text_only = chat.invoke([HumanMessage("Tools?")]).usage_metadata
    both = chat.invoke(with_images).usage_metadata
    assert text_only is not None and both is not None
    processor = chat._loaded().processor
    grids = processor.image_processor(images=images, return_tensors="pt")["image_grid_thw"]
    merge = processor.image_processor.merge_size
    visual = int(grids.prod(dim=1).sum()) // merge**2
    # each image adds <|vision_start|>, its visual tokens and <|vision_end|>
    assert both["input_tokens"] - text_only["input_tokens"] == visual + 2 * len(frames)


def test_unreadable_images_are_backend_errors(qwen35: Path, tmp_path: Path) -> None:
    chat = backend(qwen35)
    broken = {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,bm90IGFuIGltYWdl"}}
    remote = {"type": "image_url", "image_url": {"url": "https://example.org/frame.jpg"}}
    for part in (broken, remote):
        with pytest.raises(BackendError, match="image") as info:
            chat.invoke([HumanMessage([part, {"type": "text", "text": "What is this?"}])])
        assert info.value.retryable is False
    path = tmp_path / "frame.png"
    image().save(path)
    local = {"type": "image", "url": f"file://{path}"}
    _, images = chat.render([HumanMessage([local, {"type": "text", "text": "And this?"}])])
    assert [im.size for im in images] == [(64, 64)]


def merged(chunks: Iterator[Any]) -> AIMessageChunk:
    total = None
    for chunk in chunks:
        assert isinstance(chunk, AIMessageChunk)
        total = chunk if total is None else total + chunk
    assert total is not None
    return total


@pytest.mark.parametrize("thinking", [True, False])
def test_stream_merges_to_the_same_reply_as_invoke(qwen35: Path, thinking: bool) -> None:
    chat = backend(qwen35, thinking=thinking, max_tokens=24).bind_tools([GET_FRAME])
    messages = [HumanMessage("Describe the scene.")]
    whole = chat.invoke(messages)
    streamed = merged(chat.stream(messages))
    assert isinstance(whole, AIMessage)
    assert streamed.content == whole.content
    assert streamed.additional_kwargs.get(REASONING_KEY) == whole.additional_kwargs.get(
        REASONING_KEY
    )
    assert streamed.usage_metadata == whole.usage_metadata
    assert [(c["name"], c["args"]) for c in streamed.tool_calls] == [
        (c["name"], c["args"]) for c in whole.tool_calls
    ]


def scripted_generate(loaded: Any, text: str) -> Any:
    """A stand-in for ``generate`` that 'generates' the token ids of ``text``."""
    import torch

    tokenizer = loaded.processor.tokenizer
    script = tokenizer(text, add_special_tokens=False)["input_ids"]

    def generate(input_ids: Any, streamer: Any = None, **kwargs: Any) -> Any:
        if streamer is not None:
            streamer.put(input_ids)
            for token in script:
                streamer.put(torch.tensor([token]))
            streamer.end()
        return torch.cat([input_ids, torch.tensor([script])], dim=1)

    return generate


def test_special_tokens_are_dropped_and_reply_tags_kept(
    qwen35: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat = backend(qwen35, thinking=True)
    loaded = chat._loaded()
    text = (
        "The frame is dark.\n</think>\n\nI will look.\n<tool_call>\n<function=get_frame>\n"
        "<parameter=time>\n01:15\n</parameter>\n<parameter=zoom>\n2\n</parameter>\n</function>\n"
        '</tool_call>\n<tool_call>{"name": "get_frame", "arguments": {"time": </tool_call>'
        "<|im_end|><|endoftext|>"
    )
    monkeypatch.setattr(loaded.model, "generate", scripted_generate(loaded, text))
    bound = chat.bind_tools([GET_FRAME])
    messages = [HumanMessage("Look at 01:15.")]
    for reply in (bound.invoke(messages), merged(bound.stream(messages))):
        assert reply.content == "I will look."
        assert reply.additional_kwargs[REASONING_KEY] == "The frame is dark."
        assert [(c["name"], c["args"]) for c in reply.tool_calls] == [
            ("get_frame", {"time": "01:15", "zoom": 2})
        ]
        [bad] = reply.invalid_tool_calls
        assert "not valid JSON" in invalid_call_error(bad)
        assert reply.usage_metadata is not None


def test_out_of_memory_is_a_non_retryable_backend_error(
    qwen35: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    chat = backend(qwen35)
    loaded = chat._loaded()

    def explode(**kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(loaded.model, "generate", explode)
    with pytest.raises(BackendError, match="out of memory") as info:
        chat.invoke([HumanMessage("hi")])
    assert info.value.retryable is False
    with pytest.raises(BackendError, match="out of memory"):
        merged(chat.stream([HumanMessage("hi")]))


def test_answer_serves_the_vision_protocol(qwen35: Path) -> None:
    chat = backend(qwen35, role="perception", thinking=False)
    result = chat.answer(
        [image(), image((20, 20, 220))], "Which instruments are visible?", max_tokens=6
    )
    assert isinstance(result, VisionAnswer)
    assert result.usage.images == 2
    assert result.usage.prompt_tokens > 0 and 1 <= result.usage.completion_tokens <= 6
    assert result.reasoning is None


def test_qwen2_5_vl_checkpoint_generates_with_hermes_tools(checkpoints: dict[str, Path]) -> None:
    chat = backend(checkpoints["qwen2_5_vl"])
    prompt, _ = chat.render(tool_loop(), tools=[GET_FRAME])
    assert '{"name": "get_frame", "arguments": {"time": "01:15", "zoom": 2}}' in prompt
    assert prompt.endswith("<|im_start|>assistant\n")  # no thinking switch in this template
    frames = image_parts([image()], 896)
    reply = chat.invoke([HumanMessage([*frames, {"type": "text", "text": "What is shown?"}])])
    assert isinstance(reply, AIMessage) and reply.usage_metadata is not None
    assert REASONING_KEY not in reply.additional_kwargs


def test_roles_sharing_a_model_load_it_once(qwen35: Path) -> None:
    clear_model_cache()
    planner = backend(qwen35, role="planner")
    perception = backend(qwen35, role="perception", thinking=False)
    assert planner._loaded() is perception._loaded()
    other = load_backend(ModelSettings(backend="transformers", model=str(qwen35)))
    assert isinstance(other, TransformersChat) and other._loaded() is planner._loaded()


# --- configuration errors -------------------------------------------------------------------


def test_missing_folder_fails_fast(tmp_path: Path) -> None:
    chat = backend(tmp_path / "no-such-model", role="perception")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="SURGAGENT_PERCEPTION__MODEL") as info:
        chat.check()
    assert time.perf_counter() - start < 0.5
    assert "no-such-model" in str(info.value)
    with pytest.raises(ConfigError):
        chat.invoke([HumanMessage("hi")])


def test_folder_without_config_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(ConfigError, match="has no config.json"):
        backend(tmp_path).check()


def test_corrupt_weights_are_a_config_error(qwen35: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(qwen35, broken)
    (broken / "model.safetensors").write_bytes(b"this is not a safetensors file")
    chat = backend(broken)
    chat.check()  # the folder looks right; loading finds the damage
    with pytest.raises(ConfigError, match="could not be loaded") as info:
        chat.invoke([HumanMessage("hi")])
    assert str(broken) in str(info.value)


def test_unknown_dtype_is_a_config_error(qwen35: Path) -> None:
    with pytest.raises(ConfigError, match="float8"):
        backend(qwen35, dtype="float8").invoke([HumanMessage("hi")])


@pytest.mark.parametrize("offline", [True, False])
def test_uncached_hub_id_fails_within_a_second(
    offline: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

        def unreachable(*args: Any, **kwargs: Any) -> socket.socket:
            raise OSError("network is unreachable")

        monkeypatch.setattr(socket, "create_connection", unreachable)
    chat = backend("Qwen/Qwen3.5-9B")
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        chat.check()
    assert time.perf_counter() - start < 1.0
    message = str(info.value)
    assert "not available offline" in message
    assert "SURGAGENT_PLANNER__MODEL" in message and "SURGAGENT_PLANNER__BACKEND=openai" in message


def test_cached_hub_id_passes_the_check(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants

    repo = tmp_path / "hub" / "models--Qwen--Qwen3.5-9B"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    backend("Qwen/Qwen3.5-9B").check()


def test_reachable_hub_lets_an_uncached_id_through(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import huggingface_hub.constants

    class Connection:
        def close(self) -> None:
            pass

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: Connection())
    backend("Qwen/Qwen3.5-9B").check()


# --- vLLM and import hygiene ----------------------------------------------------------------


def test_vllm_backend_without_vllm_says_how_to_install(qwen35: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    chat = load_backend(ModelSettings(backend="vllm", model=str(qwen35)))
    assert type(chat).__name__ == "VLLMChat"
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="own environment") as info:
        chat.check()
    assert time.perf_counter() - start < 0.5
    assert "vllm" in str(info.value) and "openai" in str(info.value)


def test_importing_the_backends_loads_no_torch() -> None:
    code = (
        "import sys, surgagent.agent.backends.transformers, surgagent.agent.backends.vllm, "
        "surgagent.agent.testing; "
        "heavy = [m for m in ('torch', 'transformers', 'vllm', 'PIL') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
