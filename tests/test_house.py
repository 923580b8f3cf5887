"""The house: one installed namespace, every module importable anywhere, the import rules kept."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOMS = (
    "agent",
    "cli",
    "evals",
    "graphs",
    "indexing",
    "knowledge",
    "library",
    "reports",
    "tools",
    "ui",
)


def test_each_room_is_linked_into_the_namespace() -> None:
    for room in ROOMS:
        link = REPO / "surgagent" / room
        assert link.is_symlink() and link.resolve() == (REPO / room).resolve(), room


def test_every_module_imports_without_fcntl() -> None:
    """Windows has no fcntl: nothing of ours may need it (file locks go through filelock)."""
    code = """
import importlib, pkgutil, sys

class NoFcntl:
    def find_spec(self, name, path=None, target=None):
        if name == "fcntl":
            raise ImportError("no fcntl on this platform")
        return None

sys.modules.pop("fcntl", None)
sys.meta_path.insert(0, NoFcntl())
import surgagent
names = [m.name for m in pkgutil.walk_packages(surgagent.__path__, "surgagent.")]
for name in names:
    if not name.endswith("__main__"):
        importlib.import_module(name)
print(len(names))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 100


def test_import_rules_are_kept() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    done = subprocess.run([lint], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stdout
    assert "0 broken" in done.stdout


@pytest.mark.slow
def test_the_wheel_installs_only_surgagent(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("surgagent-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["surgagent"]
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"surgagent"}
    for room in ROOMS:
        assert f"surgagent/{room}/__init__.py" in names
    assert sum(n.startswith("surgagent/knowledge/corpus/") and n.endswith(".md") for n in names)
    assert "surgagent/tools/perception/prompts/perception_cvs.md" in names
    assert "surgagent/agent/prompts/planner_system.md" in names
    assert "surgagent/agent/prompts/planner_library.md" in names
    assert "surgagent/reports/report.css" in names
    assert "surgagent/agent/testing/qwen3_5_chat_template.jinja" in names
