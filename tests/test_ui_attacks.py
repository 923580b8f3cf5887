"""The review app as an attacker tries it: a running ``surgagent serve --auth``, two users.

Alice uploads a case and asks about it; a ``surgagent chat`` session exists on the same data
dir. Bob, logged in as himself, then tries every way in: Alice's case key and session id in
each event handler, her session in the page URL, the same video uploaded again, and every
HTTP route the Gradio app mounts with the data dir's files, path tricks and the model server
as arguments. Nothing of Alice's or of the CLI session may reach him, nor any server path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from surgagent.agent.testing.openai_server import ScriptedOpenAIServer, ScriptedReply
from surgagent.library.store import LibraryStore
from surgagent.library.types import CaseIndex, CaseRecord
from surgagent.ui.auth import UsersFile
from tests.fixtures.cli import REPO, run_cli

pytestmark = pytest.mark.slow

SAMPLE = REPO / "examples" / "sample_case" / "sample_lapchole.mp4"
ALICE_SECRET = "ALICE-SECRET-7f3a"
CLI_SECRET = "CLI-SECRET-91bc"
PLANTED = "PLANTED-SECRET-c0de"
LIBRARY_CASE = "library-case-0badc0de"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answer(request: dict[str, Any]) -> ScriptedReply:
    """Echo the question back, so a leaked history shows up in what the model was sent."""
    asked = [m["content"] for m in request["messages"] if m["role"] == "user"]
    question = next(q for q in reversed(asked) if isinstance(q, str))
    return ScriptedReply(content=f"About {question}: the grasper, at [00:02].")


@dataclass
class Site:
    url: str
    data: Path
    model: ScriptedOpenAIServer
    process: subprocess.Popen[str]
    alice_key: str
    alice_session: str
    temp_dir: str  # Gradio's folder, as Alice's video URL shows it

    def client(self, user: str, **httpx_kwargs: Any) -> Any:
        from gradio_client import Client

        return Client(
            self.url,
            auth=(user, f"{user}-password"),
            verbose=False,
            download_files=False,
            httpx_kwargs=httpx_kwargs or None,
        )

    def log(self) -> str:
        """The server's log, with the console's line wrapping undone."""
        return " ".join((self.data / "serve.log").read_text().split())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    from gradio_client import handle_file

    root = tmp_path_factory.mktemp("attack")
    data = root / "data"
    users = UsersFile(root / "users.toml")
    for name in ("alice", "bob"):
        users.set_password(name, f"{name}-password")
    # What else the data dir holds: none of it may be served.
    for path in (data / "surgagent.toml", data / "knowledge" / "manifest.json"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {PLANTED}\n")
    # A case library this server does not share (it has a login and no --library).
    (root / "archive").mkdir()
    shutil.copyfile(SAMPLE, root / "archive" / "library-case.mp4")
    LibraryStore(data / "library.sqlite").save(
        CaseIndex(
            case=CaseRecord(
                id=LIBRARY_CASE, path=root / "archive" / "library-case.mp4", kind="video",
                stamp="1:1", status="indexed", indexed_at=datetime.now(UTC), duration=20.0,
            )
        )
    )  # fmt: skip
    with ScriptedOpenAIServer(answer) as model:
        env = {
            "SURGAGENT_DATA_DIR": str(data),
            "SURGAGENT_PLANNER__BACKEND": "openai",
            "SURGAGENT_PLANNER__BASE_URL": model.base_url,
            "SURGAGENT_PLANNER__MODEL": "Qwen/Qwen3.5-9B",
            "SURGAGENT_PERCEPTION__ENABLED": "false",
            "SURGAGENT_KNOWLEDGE__ENABLED": "false",
            "GRADIO_ANALYTICS_ENABLED": "False",
        }
        chat = run_cli(
            "chat", str(SAMPLE), "--session", "cli-private", env=env, stdin=f"{CLI_SECRET}?\n"
        )
        assert chat.returncode == 0, chat.stderr
        port = free_port()
        log = (data / "serve.log").open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "surgagent", "serve", "--port", str(port)]
            + ["--auth", str(users.path)],
            env={**os.environ, **env},
            cwd=REPO,
            text=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert process.poll() is None, (data / "serve.log").read_text()
                    assert time.monotonic() < deadline, "the review app did not start"
                    time.sleep(0.5)
            site = Site(f"http://127.0.0.1:{port}/", data, model, process, "", "", "")
            alice = site.client("alice")
            opened = alice.predict(handle_file(str(SAMPLE)), api_name="/on_upload")
            video, session = opened[0], opened[4]
            site.alice_key = opened[-1]["value"]
            site.alice_session = session
            site.temp_dir = video["path"].split("/cases/")[0]
            answered = alice.predict(f"{ALICE_SECRET}?", [], api_name="/on_ask")
            assert ALICE_SECRET in json.dumps(answered)
            yield site
        finally:
            process.terminate()
            process.wait(timeout=30)
            log.close()


def leaks(text: str, site: Site, sent: str = "") -> list[str]:
    """What of Alice's, the CLI user's or the server's own a response gives away.

    An error that repeats the path the attacker sent gives nothing away: that is removed.
    """
    if sent:
        text = text.replace(sent, "")
    found = [s for s in (ALICE_SECRET, CLI_SECRET, PLANTED, "argon2") if s in text]
    if str(site.data) in text or str(site.data.resolve()) in text:
        found.append("the data dir's path")
    if "library-case.mp4" in text or str(site.data.parent / "archive") in text:
        found.append("the library's video")
    return found


def refused(call: Any, *args: Any, api_name: str) -> str:
    """Call a handler expecting a refusal: Gradio's own (a value not offered to this visitor)
    or the app's banner. Returns what the visitor was told."""
    from gradio_client.exceptions import AppError

    try:
        outputs = call(*args, api_name=api_name)
    except AppError as error:
        assert "is not in the list of choices" in str(error)
        return str(error)
    text = json.dumps(outputs)
    assert outputs[0] is None and "Cannot open" in outputs[-2], text
    return text


def test_alice_reopens_her_own_session(site: Site) -> None:
    """The control: what Bob is refused below works for the owner."""
    alice = site.client("alice")
    loaded = alice.predict(api_name="/on_load")  # lists her cases
    assert [key for _, key in loaded[-1]["choices"]] == [site.alice_key]
    picked = alice.predict(site.alice_key, api_name="/on_pick")
    assert picked[0] is not None and "Cannot open" not in picked[-2]
    reopened = alice.predict(site.alice_session, site.alice_key, api_name="/on_session")
    assert ALICE_SECRET in json.dumps(reopened)
    by_url = site.client("alice", params={"session": site.alice_session})
    assert ALICE_SECRET in json.dumps(by_url.predict(api_name="/on_load"))


def test_bob_cannot_open_alices_case_or_sessions(site: Site) -> None:
    bob = site.client("bob")
    assert bob.predict(api_name="/on_load")[-1]["choices"] == []  # no cases of his
    told = refused(bob.predict, site.alice_key, api_name="/on_pick")
    assert not leaks(told, site)
    for session in (site.alice_session, "cli-private"):
        told = refused(bob.predict, session, site.alice_key, api_name="/on_session")
        assert not leaks(told, site)
        by_url = site.client("bob", params={"session": session})
        loaded = by_url.predict(api_name="/on_load")
        assert "Cannot reopen that session" in loaded[-2] and not leaks(json.dumps(loaded), site)
    # Asking needs a session the server made for Bob: none yet, so nothing runs.
    asked = bob.predict("What was asked before?", [], api_name="/on_ask")
    assert "Open a case first" in json.dumps(asked)
    refusals = re.findall(r"'bob' asked for session '([^']+)', not theirs", site.log())
    assert {site.alice_session, "cli-private"} <= set(refusals)


def test_bob_uploading_the_same_video_sees_only_his_own_sessions(site: Site) -> None:
    from gradio_client import handle_file

    bob = site.client("bob")
    opened = bob.predict(handle_file(str(SAMPLE)), api_name="/on_upload")
    assert opened[-1]["value"] == site.alice_key  # the same content, the same stored case
    choices = [value for _, value in opened[3]["choices"]]
    assert site.alice_session not in choices and len(choices) == 1  # his new session only
    asked = bob.predict("Which instrument is first?", [], api_name="/on_ask")
    assert "About Which instrument is first?" in json.dumps(asked)
    sent = json.dumps(site.model.requests[-1]["messages"])
    assert ALICE_SECRET not in sent and CLI_SECRET not in sent  # no one else's history


def test_a_library_not_shared_is_out_of_reach(site: Site) -> None:
    bob = site.client("bob")
    endpoints = json.dumps(bob.view_api(print_info=False, return_format="dict"))
    assert "/on_cohort" not in endpoints and "/on_ask_library" not in endpoints
    for asked in (
        f"{LIBRARY_CASE} 3 1",
        f"{site.data.parent}/archive/library-case.mp4 0 1",
        f"{LIBRARY_CASE} inf nan",
        "../" * 2000 + "library-case.mp4 1e309 x",
    ):
        opened = bob.predict(asked, api_name="/on_library_open")
        text = json.dumps(opened)
        assert "Cannot open" in text and '"path"' not in text, text  # no video
        assert not leaks(text, site, sent=asked.split()[0])
    for nothing in ("", "   "):  # no case named: nothing opens, nothing is said
        assert "Cannot open" not in json.dumps(bob.predict(nothing, api_name="/on_library_open"))
    assert f"'bob' asked for library case '{LIBRARY_CASE}'; refused" in site.log()


def test_a_report_is_only_of_the_visitors_own_open_case(site: Site) -> None:
    bob = site.client("bob")
    told = json.dumps(bob.predict("html", api_name="/on_report"))  # no case of his is open
    assert "Open a case first" in told and not leaks(told, site)
    alice = site.client("alice")
    alice.predict(api_name="/on_load")  # offers her cases
    alice.predict(site.alice_key, api_name="/on_pick")
    made, banner = alice.predict("html", api_name="/on_report")
    assert made["path"].startswith(site.temp_dir) and made["path"].endswith("-report.html")
    assert not leaks(json.dumps(made) + banner, site)
    page = httpx.get(made["url"], cookies=alice.cookies, timeout=30).text
    assert "sample_lapchole.mp4" in page and not leaks(page, site)


def _route_paths(site: Site) -> list[tuple[str, str]]:
    """(method, path template) of every route the app mounts, as Gradio builds it."""
    from gradio.routes import App

    from surgagent.agent.settings import get_settings
    from surgagent.ui.app import ReviewServer
    from surgagent.ui.page import build_page

    settings = get_settings(data_dir=site.data.parent / "routes", knowledge={"enabled": False})
    app = App.create_app(build_page(ReviewServer(settings)))
    found: list[tuple[str, str]] = []
    pending = list(app.routes)
    while pending:
        route = pending.pop()
        if hasattr(route, "original_router"):
            pending.extend(route.original_router.routes)
            continue
        for method in getattr(route, "methods", None) or ():
            found.append((method, route.path))
    return sorted(set(found))


def fetch(client: httpx.Client, method: str, path: str) -> tuple[int, str]:
    """Status and up to 1 MB of the body; an open stream is read until it falls silent."""
    body = b""
    with client.stream(method, path, json={} if method == "POST" else None) as reply:
        try:
            for chunk in reply.iter_bytes():
                body += chunk
                if len(body) > 1 << 20:
                    break
        except httpx.ReadTimeout:
            pass
    return reply.status_code, body.decode("utf-8", "replace")


def test_every_route_refuses_the_data_dir(site: Site) -> None:
    data = site.data.resolve()
    targets = [
        data / "sessions.sqlite",
        data / "ui" / "sessions.json",
        data / "ui" / "uploads.json",
        data / "uploads" / site.alice_key,
        data / "surgagent.toml",
        data / "knowledge" / "manifest.json",
        data.parent / "users.toml",
    ]
    values = [str(t) for t in targets]
    values += [f"{site.temp_dir}/../../../../..{t}" for t in targets]  # out of Gradio's folder
    values += [f"{site.temp_dir}/cases/../../../..{t}" for t in targets]
    values += [site.model.base_url + "/models", "file://" + str(targets[0])]
    routes = _route_paths(site)
    assert ("GET", "/gradio_api/file={path_or_url:path}") in routes  # the list is Gradio's own
    # Streams (heartbeats, queue events) never end: a second of silence ends the read.
    timeout = httpx.Timeout(10, read=1)
    bob = httpx.Client(base_url=site.url.rstrip("/"), timeout=timeout)
    assert bob.post("/login", data={"username": "bob", "password": "bob-password"}).is_success
    anonymous = httpx.Client(base_url=site.url.rstrip("/"), timeout=timeout)
    tried = 0
    for method, template in routes:
        names = re.findall(r"{(\w+)(?::path)?}", template)
        for value in values if names else [""]:
            path = template
            for name in names:
                path = re.sub(rf"{{{name}(?::path)?}}", lambda _, v=value: v, path)
            for who, client in (("bob", bob), ("anonymous", anonymous)):
                status, text = fetch(client, method, path)
                tried += 1
                found = leaks(text, site, sent=value)
                assert not found, (who, method, path, status, found)
                if "file=" in template or "file/" in template or "proxy=" in template:
                    assert 400 <= status < 500, (who, path, status)  # refused
    assert tried > 300


def test_login_is_required_and_wrong_passwords_fail(site: Site) -> None:
    anonymous = httpx.Client(base_url=site.url.rstrip("/"), timeout=30)
    assert anonymous.get("/config").status_code == 401
    for name, password in (("bob", "alice-password"), ("mallory", "bob-password"), ("bob", "")):
        tried = anonymous.post("/login", data={"username": name, "password": password})
        assert tried.status_code in (400, 422) and "set-cookie" not in tried.headers
    assert "failed login for user 'mallory'" in site.log()
