"""The phase segmenter's checkpoint file: model spec, head weights and training extras.

spec, state, extra = read_checkpoint(Path("phase.pt"))
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from surgagent.tools.cache import atomic_write_bytes
from surgagent.tools.errors import ConfigError
from surgagent.tools.phase.model import (
    PhaseModelSpec,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "read_checkpoint",
]

CHECKPOINT_FORMAT = "surgagent-phase-segmenter"
_CHECKPOINT_VERSION = 1
# What torch.load raises on a truncated, corrupt or foreign file.
_LOAD_ERRORS = (
    OSError,
    RuntimeError,
    ValueError,
    EOFError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
)


# -- checkpoints ----------------------------------------------------------------------------


def save_checkpoint(path: Path, spec: PhaseModelSpec, state: dict[str, Any], **extra: Any) -> None:
    import torch

    buffer = io.BytesIO()
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": _CHECKPOINT_VERSION,
        "spec": spec.model_dump_json(),
        "head_state": state,
        **extra,
    }
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_checkpoint(path: Path) -> tuple[PhaseModelSpec, dict[str, Any], dict[str, Any]]:
    """Read a phase-segmenter checkpoint written by `train_segmenter`.

    Returns:
        ``(spec, head_state, payload)``; the payload also holds training history.

    Raises:
        ConfigError: If the file is missing, not a checkpoint of ours, or corrupt.
    """
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"no phase-segmenter weights at {path}; train some with "
            "`surgagent phase train` or give the right --weights path."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except _LOAD_ERRORS as exc:
        raise ConfigError(
            f"{path} is not a readable phase checkpoint ({exc}); retrain it."
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path} is not a phase-segmenter checkpoint of SurgAgent.")
    try:
        spec = PhaseModelSpec.model_validate_json(payload["spec"])
        state = dict(payload["head_state"])
    except (KeyError, TypeError, ValidationError) as exc:
        raise ConfigError(f"{path} is a damaged phase checkpoint ({exc}); retrain it.") from exc
    return spec, state, payload
