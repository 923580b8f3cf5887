"""The vision-backend protocol: images and a prompt in, text out.

The agent's model backends satisfy it structurally; tools only depend on this protocol.

    answer = backend.answer([frame], "Which instruments are visible?")
    print(answer.text, answer.usage.images)
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["Usage", "VisionAnswer", "VisionBackend", "image_parts", "image_to_data_url"]

# Qwen3.5 turns each 32x32 pixel block into one visual token; sides that are multiples of 32
# keep the token budget predictable.
_PATCH = 32


def image_to_data_url(image: Image, max_side: int) -> str:
    """Encode ``image`` as a JPEG data URL, resized to fit ``max_side``, sides multiples of 32."""
    scale = min(1.0, max_side / max(image.size))
    width = max(_PATCH, round(image.width * scale / _PATCH) * _PATCH)
    height = max(_PATCH, round(image.height * scale / _PATCH) * _PATCH)
    if (width, height) != image.size:
        image = image.resize((width, height))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_parts(images: Sequence[Image], max_side: int) -> list[dict[str, Any]]:
    """OpenAI-style ``image_url`` content parts for ``images``."""
    return [
        {"type": "image_url", "image_url": {"url": image_to_data_url(image, max_side)}}
        for image in images
    ]


class Usage(BaseModel):
    """Tokens and images one model call consumed."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    images: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            images=self.images + other.images,
        )


class VisionAnswer(BaseModel):
    """A vision model's reply: the answer text, any thinking kept apart, and usage."""

    text: str
    reasoning: str | None = None
    usage: Usage = Usage()


@runtime_checkable
class VisionBackend(Protocol):
    """Answers a question about one or more images."""

    @property
    def model_id(self) -> str:
        """The model's id, path or served name."""
        ...

    def answer(
        self, images: Sequence[Image], prompt: str, *, max_tokens: int | None = None
    ) -> VisionAnswer:
        """Answer ``prompt`` about ``images`` (in order); raise `BackendError` on failure."""
        ...
