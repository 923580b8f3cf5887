"""The review app without a browser: uploads, sessions, the views, a down model, the token."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from surgagent.agent.settings import get_settings
from surgagent.tools.errors import CaseError
from surgagent.ui import views
from surgagent.ui.app import ReviewServer
from surgagent.ui.auth import Access
from surgagent.ui.store import SessionIndex, UploadError, store_upload
from tests.fixtures.cli import run_cli
from tests.fixtures.videos import random_bytes_file


def test_uploads_are_checked_and_kept_inside_the_data_dir(tmp_path: Path, case_video: Path):
    uploads = tmp_path / "data" / "uploads"
    sneaky = tmp_path / "..evil name;rm -rf.mp4"
    sneaky.write_bytes(case_video.read_bytes())
    stored = store_upload(sneaky, uploads, max_mb=100)
    assert stored.is_relative_to(uploads.resolve()) and stored.name == "evil_name_rm_-rf.mp4"
    assert store_upload(sneaky, uploads, max_mb=100) == stored  # same content, same place
    long = tmp_path / ("laparoscopic cholecystectomy " * 6 + ".MOV")
    long.write_bytes(case_video.read_bytes() + b"\0")
    kept = store_upload(long, uploads, max_mb=100)
    assert kept.suffix == ".mov" and len(kept.stem) == 80  # cut short, still a video by name
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video")
    with pytest.raises(UploadError, match="not a video file"):
        store_upload(notes, uploads, max_mb=100)
    with pytest.raises(UploadError, match="the limit is 0.001 MB"):
        store_upload(case_video, uploads, max_mb=0.001)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(UploadError, match="empty"):
        store_upload(empty, uploads, max_mb=100)


def test_corrupt_video_is_refused_and_not_kept(tmp_path: Path) -> None:
    server = ReviewServer(get_settings(knowledge={"enabled": False}))
    corrupt = random_bytes_file(tmp_path / "corrupt.mp4", 4096)
    with pytest.raises(CaseError):
        server.upload(corrupt, "local")
    assert list(server.uploads.glob("*/*")) == []


def test_a_down_model_is_a_banner_not_a_crash() -> None:
    settings = get_settings(
        planner={"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "max_retries": 0}
    )
    server = ReviewServer(settings)
    agent, problem = server.agent()
    assert agent is None and problem and "127.0.0.1:9" in problem
    assert 'role="alert"' in views.banner(problem)
    assert server.tools() == {
        "frames": True,
        "perception": True,
        "instrument detector": False,
        "phase segmenter": False,
        "guidelines": True,
    }
    assert "unavailable (not configured)" in views.tools_status(server.tools())


def test_sessions_are_listed_per_case_newest_first(tmp_path: Path) -> None:
    index = SessionIndex(tmp_path / "sessions.json")
    index.record("a", case=Path("/v/one.mp4"), case_id="one", title="First question?")
    index.record("b", case=Path("/v/two.mp4"), case_id="two", title="Other case")
    index.record("c", case=Path("/v/one.mp4"), case_id="one", title="Second session")
    index.record("a", case=Path("/v/one.mp4"), case_id="one", title="A follow-up")
    again = SessionIndex(tmp_path / "sessions.json")  # as after a restart
    titles = [r.title for r in again.for_case("one")]
    assert sorted(titles) == ["First question?", "Second session"]  # a title is its first question


def test_views_make_moments_clickable() -> None:
    segments = [
        SimpleNamespace(phase="Preparation", start=0.0, end=30.0, confidence=0.9),
        SimpleNamespace(phase="ClippingCutting", start=30.0, end=120.0, confidence=0.8),
    ]
    ribbon = views.phase_ribbon(
        segments, duration=120.0, vocabulary=["Preparation", "ClippingCutting"]
    )
    assert ribbon.count('class="segment"') == 2
    assert 'style="width:25.000%' in ribbon and 'data-seek="30.00"' in ribbon
    linked = views.answer_markdown("Clips at [01:05] and [frame 00:10-00:20]; not [cvs-overview].")
    assert '<a class="seek" href="#t=65.00">[01:05]</a>' in linked
    assert 'href="#t=10.00"' in linked and "[cvs-overview]" in linked
    assert "No phases" in views.phase_ribbon([], duration=10.0, vocabulary=[])


def test_token_protects_a_shared_server(tmp_path: Path) -> None:
    settings = get_settings(knowledge={"enabled": False})
    server = ReviewServer(settings, access=Access(token="s3cret"))
    from surgagent.ui.page import build_page

    page = build_page(server)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = server.launch_options()
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, **options)
    try:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/config").status_code == 401
        with httpx.Client() as client:
            wrong = client.post(f"{base}/login", data={"username": "u", "password": "nope"})
            assert wrong.status_code == 400
            right = client.post(f"{base}/login", data={"username": "u", "password": "s3cret"})
            assert right.status_code == 200
            assert client.get(f"{base}/config").status_code == 200
    finally:
        page.close()


def test_the_file_route_serves_no_part_of_the_data_dir(tmp_path: Path, case_video: Path) -> None:
    """As a visitor would try: Gradio's file route, pointed at everything else the server keeps."""
    settings = get_settings(knowledge={"enabled": False})
    server = ReviewServer(settings)
    from surgagent.ui.page import build_page

    data = settings.data_dir.resolve()
    secrets = {
        "sessions": data / "sessions.sqlite",
        "knowledge": data / "knowledge" / "generations" / "000001" / "chroma.sqlite3",
        "cache": data / "cache" / "cases.json",
        "settings": data / "surgagent.toml",
    }
    for path in secrets.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('{"note": "private"}')
    stored = server.uploads / server.upload(case_video, "local")
    page = build_page(server)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    page.launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
        **server.launch_options(),
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}/gradio_api/file="
        for name, path in secrets.items():
            for tried in (str(path), f"{stored.parent}/../../{path.relative_to(data)}"):
                got = httpx.get(base + tried)
                assert got.status_code in (403, 404), (name, tried, got.status_code)
                assert "private" not in got.text
        assert httpx.get(base + str(stored)).status_code == 403  # uploads are not served either
        # No server path reaches the visitor's browser; cases are listed per visitor.
        config = httpx.get(f"http://127.0.0.1:{port}/config").text
        assert str(data) not in config and stored.parent.name not in config
    finally:
        page.close()


def test_a_damaged_session_index_is_kept_aside_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "sessions.json"
    path.write_text('{"note": "private"}')  # valid JSON, not records: one bad record
    index = SessionIndex(path)
    assert index.for_case("one") == []
    index.record("a", case=Path("/v/one.mp4"), case_id="one", title="First?")
    assert [r.thread_id for r in SessionIndex(path).for_case("one")] == ["a"]
    path.write_text("{torn")
    assert SessionIndex(path).get("a") is None  # unreadable: set aside, the page goes on
    assert (tmp_path / "sessions.broken").read_text() == "{torn"


def test_gradios_temporary_copy_of_an_upload_is_removed(
    tmp_path: Path, case_video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    copy = tmp_path / "gradio" / "3f9a" / "case.mp4"  # where Gradio keeps a fresh upload
    copy.parent.mkdir(parents=True)
    copy.write_bytes(case_video.read_bytes())
    server = ReviewServer(get_settings(knowledge={"enabled": False}))
    stored = server.uploads / server.upload(copy, "local")
    assert stored.is_file() and not copy.exists() and not copy.parent.exists()
    assert (tmp_path / "gradio").is_dir()
    server.upload(case_video, "local")  # a file outside Gradio's folder is the user's: left alone
    assert case_video.is_file()


def test_users_file_from_the_command_line(tmp_path: Path) -> None:
    users = tmp_path / "users.toml"
    added = run_cli("users", "add", "alice", "-f", str(users), "--password-stdin", stdin="pw1\n")
    assert added.returncode == 0, added.stderr
    assert "$argon2id$" in users.read_text() and "pw1" not in users.read_text()
    assert users.stat().st_mode & 0o777 == 0o600
    access = Access.from_options(auth=users)
    assert access.check("alice", "pw1") and not access.check("alice", "pw2")
    assert not access.check("nobody", "pw1") and access.owner("alice") == "alice"
    bad = run_cli("users", "add", "../evil", "--file", str(users), "--password-stdin", stdin="x\n")
    assert bad.returncode == 1 and "user name '../evil' must be" in bad.stderr
    assert run_cli("users", "list", "--file", str(users)).stdout.split() == ["alice"]
    assert run_cli("users", "remove", "alice", "--file", str(users)).returncode == 0
    empty = run_cli("serve", "--auth", str(users))
    assert empty.returncode == 1 and "has no users" in empty.stderr


def test_serving_beyond_this_machine_needs_a_login() -> None:
    done = run_cli("serve", "--host", "0.0.0.0", "--port", "9")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "without a login would show every case to anyone" in " ".join(done.stderr.split())
    both = run_cli("serve", "--auth", "users.toml", "--token", "t")
    assert both.returncode == 1 and "not both" in both.stderr
