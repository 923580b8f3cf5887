"""``surgagent doctor``: what is installed, which models are reachable, and what to do next.

report = run_checks()
print([c.name for c in report.checks if not c.ok])
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path

from pydantic import BaseModel

from surgagent.agent.settings import Settings, get_settings
from surgagent.tools.errors import ConfigError

__all__ = ["Check", "DoctorReport", "run_checks"]

_PACKAGES = {
    "langgraph": "the agent graph",
    "transformers": "the in-process model backend",
    "torch": "in-process models, the phase segmenter",
    "av": "video decoding",
    "ultralytics": "the instrument detector",
    "chromadb": "the guideline store",
    "sentence_transformers": "guideline embeddings",
    "openai": "the OpenAI-compatible backend",
    "vllm": "the in-process vLLM backend (optional, own environment)",
}


class Check(BaseModel):
    """One check: what was looked at, whether it is fine, and how to fix it if not."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


class DoctorReport(BaseModel):
    """All checks, in the order they ran; ``ok`` is false when something turned on fails."""

    checks: list[Check]
    ok: bool = True


def _package_checks() -> list[Check]:
    checks = []
    for module, purpose in _PACKAGES.items():
        found = importlib.util.find_spec(module) is not None
        version = ""
        if found:
            try:
                version = importlib.metadata.version(module.replace("_", "-"))
            except importlib.metadata.PackageNotFoundError:
                version = "installed"
        checks.append(
            Check(
                name=f"package {module}",
                ok=found,
                detail=f"{version} ({purpose})" if found else f"not installed ({purpose})",
                fix="" if found else f"pip install {module.replace('_', '-')}",
            )
        )
    return checks


def _gpu_check() -> Check:
    if importlib.util.find_spec("torch") is None:
        return Check(name="gpu", ok=True, detail="torch not installed; CPU only")
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return Check(name="gpu", ok=True, detail=", ".join(names))
    return Check(
        name="gpu",
        ok=True,
        detail="no CUDA GPU: in-process 9B models will be very slow on CPU",
        fix="serve the models with vLLM on a GPU machine and use the openai backend",
    )


def _role_check(settings: Settings, role: str) -> Check:
    from surgagent.agent.reach import check_role

    role_settings = getattr(settings, role)
    where = role_settings.base_url or role_settings.model
    try:
        check_role(role_settings, role)
    except ConfigError as error:
        return Check(
            name=f"{role} model",
            ok=False,
            detail=f"{role_settings.backend}: {where}",
            fix=str(error),
        )
    return Check(
        name=f"{role} model",
        ok=True,
        detail=f"{role_settings.backend}: {where} reachable; {_sight(settings, role)}",
    )


def _sight(settings: Settings, role: str) -> str:
    """Whether the role is shown frames as images."""
    if role != "planner":
        return "sees images"
    return {
        True: "sees images (planner.vision = true)",
        False: "sees no images; reads frames through ask_perception (planner.vision = false)",
        "auto": "sees images unless its server says the model takes none (planner.vision = auto)",
    }[settings.planner.vision]


def _weights_check(name: str, weights: str | None, env: str) -> Check:
    """An engine is turned on by its weights setting; then the file must be there."""
    if weights is None:
        return Check(name=name, ok=True, detail=f"turned off (set {env} to offer it)")
    path = Path(weights).expanduser()
    if path.is_file():
        return Check(name=name, ok=True, detail=str(path))
    return Check(name=name, ok=False, detail=f"{path} does not exist", fix=f"point {env} at it")


def _data_dir_check(settings: Settings) -> Check:
    path = settings.data_dir.expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        writable = os.access(path, os.W_OK)
    except OSError:
        writable = False
    return Check(
        name="data dir",
        ok=writable,
        detail=str(path),
        fix="" if writable else "set SURGAGENT_DATA_DIR to a writable folder",
    )


def _knowledge_check(settings: Settings) -> Check:
    from surgagent.agent.api import open_knowledge_store
    from surgagent.knowledge.errors import KnowledgeError

    if not settings.knowledge.enabled:
        return Check(name="knowledge store", ok=True, detail="turned off")
    store = open_knowledge_store(settings)
    try:
        manifest = store.manifest()
        stale = store.stale_reason(manifest)
    except KnowledgeError as error:
        return Check(
            name="knowledge store", ok=False, detail=str(error), fix="surgagent knowledge rebuild"
        )
    if manifest is None or stale:
        # Not an error: the first search builds it (about 10 s); rebuilding ahead saves that.
        return Check(
            name="knowledge store",
            ok=True,
            detail=f"will be built on first use: {stale}",
            fix="surgagent knowledge rebuild",
        )
    return Check(
        name="knowledge store",
        ok=True,
        detail=f"{manifest.passages} passages, {len(manifest.documents)} documents, "
        f"model {manifest.embedding_model} ({store.root})",
    )


def run_checks(settings: Settings | None = None) -> DoctorReport:
    """Run every check (model checks take at most a few seconds each)."""
    settings = settings or get_settings()
    checks = [Check(name="python", ok=sys.version_info >= (3, 11), detail=sys.version.split()[0])]
    checks += _package_checks()
    checks.append(_gpu_check())
    checks.append(_data_dir_check(settings))
    checks.append(_knowledge_check(settings))
    checks.append(_role_check(settings, "planner"))
    if settings.perception.enabled:
        checks.append(_role_check(settings, "perception"))
    else:
        checks.append(Check(name="perception model", ok=True, detail="turned off"))
    checks.append(
        _weights_check("detector", settings.detector.weights, "SURGAGENT_DETECTOR__WEIGHTS")
    )
    checks.append(
        _weights_check("phase segmenter", settings.phase.weights, "SURGAGENT_PHASE__WEIGHTS")
    )
    ok = all(check.ok for check in checks if check.name != "package vllm")
    return DoctorReport(checks=checks, ok=ok)
