"""The Gradio layout of the review page and its event handlers.

Left: the case (upload or pick one), the video, the phase ribbon and the instrument timeline.
Right: the chat, then the last answer's evidence, key frames, guideline citations and a
collapsible panel with the planner's reasoning and the tool trace.

    page = build_page(ReviewServer(get_settings()))
    serve(get_settings(), port=7860, access=Access.from_options(auth=Path("users.toml")))
"""

from __future__ import annotations

import ipaddress
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Imported at module level on purpose: Gradio reads handler annotations (``gr.Request``) from
# this module's globals. Only `serve` (and tests) import this module.
import gradio as gr

from surgagent.ui import views
from surgagent.ui.app import (
    LIBRARY_KEY,
    CohortMeasure,
    NotYours,
    ReportForm,
    ReviewServer,
    answer_with_warnings,
    key_frames,
    stream_answer,
)
from surgagent.ui.auth import Access
from surgagent.ui.store import VIDEO_SUFFIXES, UploadError

if TYPE_CHECKING:
    from surgagent.agent.settings import Settings

__all__ = ["build_page", "serve"]

_OPEN_A_CASE = "Open a case first: upload a video or pick one."

_URL_SCRIPT = """
(session) => {
  if (!session) return;
  const url = new URL(window.location.href);
  url.searchParams.set("session", session);
  window.history.replaceState(null, "", url);
}
"""


def build_page(server: ReviewServer) -> gr.Blocks:  # noqa: C901 (one closure per event)
    """Lay out the page and wire its events to ``server``.

    Every handler works for the logged-in visitor (``gr.Request.username``): what comes from
    the browser (a case key, a session id) is checked against what that visitor owns, and the
    session id the page asks in is kept server-side (``gr.State``), never read from the page.
    """
    from surgagent.tools.errors import SurgAgentError

    def owner_of(request: gr.Request) -> str:
        return server.access.owner(request.username)

    def case_outputs(key: str, thread_id: str | None, owner: str) -> tuple[Any, ...]:
        """Everything that changes when a case (and session) is opened."""
        case = server.open(key, owner)
        ribbon, timeline = server.timelines(case)
        thread_id = thread_id or server.new_session(owner)
        history, result = server.chat_history(thread_id)
        choices = server.session_choices(case.id, owner)
        if thread_id not in [c[1] for c in choices]:
            choices = [("new session", thread_id), *choices]
        _, problem = server.agent()
        return (
            key,
            server.media(case, key),
            ribbon,
            timeline,
            gr.update(choices=choices, value=thread_id),
            thread_id,
            thread_id,
            history,
            *result_outputs(result, thread_id),
            views.banner(problem),
            gr.update(choices=server.known_cases(owner, key), value=key),
        )

    def result_outputs(result: Any, thread_id: str) -> tuple[Any, ...]:
        frames = key_frames(server, thread_id) if result is not None else []
        return (
            views.evidence_html(result),
            frames,
            views.citations_html(result),
            views.trace_markdown(result),
        )

    def empty_outputs(message: str | None, owner: str | None = None) -> tuple[Any, ...]:
        known = gr.update() if owner is None else gr.update(choices=server.known_cases(owner))
        return (gr.update(),) * 12 + (views.banner(message), known)

    def on_upload(file: Any, request: gr.Request) -> tuple[Any, ...]:
        if file is None:
            return empty_outputs(None)
        owner = owner_of(request)
        try:
            key = server.upload(file if isinstance(file, str) else file.name, owner)
            return case_outputs(key, None, owner)
        except (UploadError, SurgAgentError) as error:
            return empty_outputs(f"Upload refused: {error}")

    def on_pick(key: str | None, request: gr.Request) -> tuple[Any, ...]:
        if not key:
            return empty_outputs(None)
        try:
            return case_outputs(key, None, owner_of(request))
        except (NotYours, SurgAgentError) as error:
            return empty_outputs(f"Cannot open {Path(key).name}: {error}")

    def on_session(thread_id: str | None, key: str | None, request: gr.Request) -> tuple[Any, ...]:
        if not thread_id or not key:
            return empty_outputs(None)
        owner = owner_of(request)
        try:
            return case_outputs(server.check_session(thread_id, owner) or key, thread_id, owner)
        except (NotYours, SurgAgentError) as error:
            return empty_outputs(f"Cannot open that session: {error}")

    def on_load(request: gr.Request) -> tuple[Any, ...]:
        thread_id = dict(request.query_params).get("session")
        _, problem = server.agent()
        owner = owner_of(request)
        if not thread_id:
            return empty_outputs(problem, owner)
        try:
            key = server.check_session(thread_id, owner)
            if key is None:
                return empty_outputs(problem, owner)
            return case_outputs(key, thread_id, owner)
        except (NotYours, SurgAgentError) as error:
            return empty_outputs(f"Cannot reopen that session: {error}", owner)

    def on_ask(
        question: str,
        history: list[dict[str, Any]],
        key: str | None,
        thread_id: str | None,
        request: gr.Request,
    ) -> Any:
        question = question.strip()
        if not question:
            yield history, "", *(gr.update(),) * 4, gr.update(), gr.update()
            return
        if not key or not thread_id:
            message = _OPEN_A_CASE
            yield history, question, *(gr.update(),) * 4, views.banner(message), gr.update()
            return
        owner = owner_of(request)
        history = [*history, {"role": "user", "content": question}]
        history.append({"role": "assistant", "content": "_thinking..._"})
        yield history, "", *(gr.update(),) * 4, views.banner(None), gr.update()
        for text, result, problem in stream_answer(server, question, key, thread_id, owner):
            if text:
                history[-1] = {"role": "assistant", "content": views.answer_markdown(text)}
            if problem:
                history[-1] = {"role": "assistant", "content": f"**Error:** {problem}"}
                yield history, "", *(gr.update(),) * 4, views.banner(problem), gr.update()
                return
            if result is None:
                yield history, "", *(gr.update(),) * 4, gr.update(), gr.update()
                continue
            history[-1] = {"role": "assistant", "content": answer_with_warnings(text, result)}
            choices = server.session_choices(server.open(key, owner).id, owner)
            yield (
                history,
                "",
                *result_outputs(result, thread_id),
                views.banner(None),
                gr.update(choices=choices, value=thread_id),
            )

    def on_library_open(asked: str, request: gr.Request) -> tuple[Any, ...]:
        # "<case id> <seconds> <nonce>" from a click in the cohort view (see views.SEEK_SCRIPT)
        case_id, *rest = (asked or "").split() or [""]
        try:
            seconds = max(0.0, float(rest[0])) if rest else 0.0
        except ValueError:
            seconds = 0.0
        if not math.isfinite(seconds):  # "inf" would reach the video as NaN
            seconds = 0.0
        stay = (gr.update(), gr.update())
        if not case_id:
            return (*empty_outputs(None), *stay)
        owner = owner_of(request)
        try:
            opened_case = case_outputs(LIBRARY_KEY + case_id, None, owner)
        except (NotYours, SurgAgentError) as error:
            return (*empty_outputs(f"Cannot open {case_id[:40]}: {error}"), *stay)
        nonce = " ".join(rest)  # a click on the same row again must still change the box
        return (*opened_case, gr.Tabs(selected="review"), f"{seconds:.2f} {nonce}")

    def on_cohort(measure: CohortMeasure, request: gr.Request) -> tuple[str, str, str]:
        try:
            table = server.cohort(measure)
        except (NotYours, SurgAgentError) as error:
            return "", "", views.banner(str(error))
        return views.cohort_plot(table), views.cohort_table(table, what=measure), ""

    def on_ask_library(question: str, request: gr.Request) -> tuple[Any, str]:
        question = question.strip()
        if not question:
            return gr.update(), ""
        try:
            result = server.ask_library(question, owner_of(request))
        except (NotYours, SurgAgentError) as error:
            return "", views.banner(str(error))
        if result.status == "error":
            return "", views.banner(result.answer)
        linked = views.cohort_answer_markdown(result.answer, server.library_ids())
        return answer_with_warnings(linked, result), ""

    def on_report(
        form: ReportForm, key: str | None, thread_id: str | None, request: gr.Request
    ) -> tuple[Any, str]:
        if not key:
            return None, views.banner(_OPEN_A_CASE)
        try:
            made = server.report(key, thread_id, owner_of(request), form)
        except (NotYours, SurgAgentError) as error:
            return None, views.banner(f"No report: {error}")
        return str(made), views.banner(None)

    with gr.Blocks(title="SurgAgent case review") as page:
        gr.Markdown("## SurgAgent case review")
        banner = gr.HTML(views.banner(server.agent()[1]), elem_id="banner")
        gr.HTML(views.tools_status(server.tools()), elem_id="tools")
        case_key = gr.State(None)
        thread_id = gr.State(None)  # the session asked in: decided and kept by the server
        thread_url = gr.Textbox(visible=False, elem_id="session-id")  # shown in the URL
        library_open = gr.Textbox(elem_id="library-open", container=False)  # hidden by CSS
        seek_after_open = gr.Textbox(visible=False)
        with gr.Tabs(selected="review") as tabs:
            with gr.Tab("Case review", id="review"), gr.Row():
                with gr.Column(scale=3):
                    with gr.Row():
                        upload = gr.File(
                            label="Upload a video",
                            file_types=list(VIDEO_SUFFIXES),
                            type="filepath",
                            elem_id="upload",
                        )
                        known = gr.Dropdown(
                            choices=[],
                            label="...or pick a case reviewed before",
                            elem_id="known-cases",
                        )
                    video = gr.Video(label="Case", interactive=False, elem_id="case-video")
                    gr.Markdown("**Phases** (click to seek)")
                    ribbon = gr.HTML(elem_id="phase-ribbon")
                    gr.Markdown("**Instruments** (click to seek)")
                    timeline = gr.HTML(elem_id="instrument-timeline")
                    with gr.Accordion("Case report", open=False):
                        report_form = gr.Radio(
                            [("HTML", "html"), ("PDF", "pdf"), ("Markdown (zip)", "md")],
                            value="html",
                            label="Format",
                            elem_id="report-format",
                        )
                        make_report = gr.Button("Make the report", elem_id="make-report")
                        report_file = gr.File(
                            label="Report", interactive=False, elem_id="report-file"
                        )
                with gr.Column(scale=4):
                    sessions = gr.Dropdown(label="Sessions of this case", elem_id="sessions")
                    chat = gr.Chatbot(label="Review", height=420, elem_id="chat")
                    question = gr.Textbox(
                        placeholder="Ask about the case, e.g. 'Was the critical view of safety "
                        "achieved before clipping?'",
                        show_label=False,
                        elem_id="question",
                    )
                    gr.Markdown("**Evidence** (click a time to seek)")
                    evidence = gr.HTML(views.evidence_html(None), elem_id="evidence")
                    frames = gr.Gallery(
                        label="Key frames (detections boxed)",
                        columns=4,
                        height=200,
                        object_fit="contain",
                        elem_id="frames",
                    )
                    gr.Markdown("**Guideline citations**")
                    citations = gr.HTML(views.citations_html(None), elem_id="citations")
                    with gr.Accordion("Reasoning and tool trace", open=False):
                        trace = gr.Markdown(views.trace_markdown(None), elem_id="trace")
            if server.library_shared:
                with gr.Tab("Cohort", id="cohort"):
                    gr.Markdown(
                        "Every indexed case of the library (`surgagent library add`). "
                        "Click a point or a row to open the case at that time."
                    )
                    measure = gr.Radio(
                        ["phase duration", "phase start", "instrument time in view"]
                        + ["instrument first use"],
                        value="phase duration",
                        label="Measure per case",
                        elem_id="cohort-measure",
                    )
                    plot = gr.HTML(elem_id="cohort-plot")
                    table = gr.HTML(elem_id="cohort-table")
                    library_question = gr.Textbox(
                        placeholder="Ask across the library, e.g. 'Which cases have a "
                        "gallbladder retraction longer than 5 minutes?'",
                        show_label=False,
                        elem_id="library-question",
                    )
                    library_answer = gr.Markdown(elem_id="library-answer")
                measure.change(on_cohort, inputs=measure, outputs=[plot, table, banner])
                page.load(on_cohort, inputs=measure, outputs=[plot, table, banner])
                library_question.submit(
                    on_ask_library, inputs=library_question, outputs=[library_answer, banner]
                )

        opened = [
            case_key, video, ribbon, timeline, sessions, thread_id, thread_url, chat,
            evidence, frames, citations, trace, banner, known,
        ]  # fmt: skip
        upload.upload(on_upload, inputs=upload, outputs=opened)
        known.input(on_pick, inputs=known, outputs=opened)
        sessions.input(on_session, inputs=[sessions, case_key], outputs=opened)
        page.load(on_load, inputs=None, outputs=opened)
        thread_url.change(None, inputs=thread_url, outputs=None, js=_URL_SCRIPT)
        library_open.change(
            on_library_open, inputs=library_open, outputs=[*opened, tabs, seek_after_open]
        )
        seek_after_open.change(None, inputs=seek_after_open, js=views.SEEK_AFTER_OPEN)
        question.submit(
            on_ask,
            inputs=[question, chat, case_key, thread_id],
            outputs=[chat, question, evidence, frames, citations, trace, banner, sessions],
        )
        make_report.click(
            on_report, inputs=[report_form, case_key, thread_id], outputs=[report_file, banner]
        )
    return page


def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    access: Access | None = None,
    max_upload_mb: float = 4096,
    library: bool | None = None,
) -> None:
    """Start the review app and block until it is stopped.

    ``library`` shares the case library's cohort view and cases with every visitor; None
    shares it only when there is no login (the page is this machine's user's alone).

    Raises:
        ConfigError: When asked to serve beyond this machine without a login.
    """
    from surgagent.tools.errors import ConfigError

    access = access or Access()
    if not access.enabled and not _loopback(host):
        raise ConfigError(
            f"serving on {host} without a login would show every case to anyone on the "
            "network; add --auth users.toml (see `surgagent users add`) or --token, or serve "
            "on 127.0.0.1"
        )
    # Gradio keeps uploads, and copies of what it shows, in its temp dir, whose path appears
    # in the page's file URLs: a private folder of its own, not one inside the data dir.
    scratch = None
    if not os.environ.get("GRADIO_TEMP_DIR"):
        scratch = tempfile.mkdtemp(prefix="surgagent-web-")
        os.environ["GRADIO_TEMP_DIR"] = scratch
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # never phone home
    try:
        server = ReviewServer(settings, max_upload_mb=max_upload_mb, access=access, library=library)
        page = build_page(server)
        page.queue(default_concurrency_limit=4)
        page.launch(server_name=host, server_port=port, **server.launch_options())
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
