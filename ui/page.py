"""The Gradio layout of the review page and its event handlers.

Left: the case (upload or pick one), the video, the phase ribbon and the instrument timeline.
Right: the chat, then the last answer's evidence, key frames, guideline citations and a
collapsible panel with the planner's reasoning and the tool trace.

    page = build_page(ReviewServer(get_settings()))
    serve(get_settings(), port=7860, token="s3cret")  # blocks until stopped
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Imported at module level on purpose: Gradio reads handler annotations (``gr.Request``) from
# this module's globals. Only `serve` (and tests) import this module.
import gradio as gr

from surgagent.ui import views
from surgagent.ui.app import ReviewServer, key_frames, new_session_id, stream_answer
from surgagent.ui.store import VIDEO_SUFFIXES, UploadError

if TYPE_CHECKING:
    from surgagent.agent.settings import Settings

__all__ = ["build_page", "serve"]

_URL_SCRIPT = """
(session) => {
  if (!session) return;
  const url = new URL(window.location.href);
  url.searchParams.set("session", session);
  window.history.replaceState(null, "", url);
}
"""


def build_page(server: ReviewServer) -> gr.Blocks:  # noqa: C901 (one closure per event)
    """Lay out the page and wire its events to ``server``."""
    from surgagent.tools.errors import SurgAgentError

    def case_outputs(path: str, thread_id: str | None) -> tuple[Any, ...]:
        """Everything that changes when a case (and session) is opened.

        ``path`` is an uploaded video's path or key; the page only ever sees the key.
        """
        case = server.open(path)
        path = server.case_key(case.source)
        ribbon, timeline = server.timelines(case)
        thread_id = thread_id or new_session_id()
        history, result = server.chat_history(thread_id)
        choices = server.session_choices(case.id)
        if thread_id not in [c[1] for c in choices]:
            choices = [("new session", thread_id), *choices]
        _, problem = server.agent()
        return (
            path,
            str(case.source),
            ribbon,
            timeline,
            gr.update(choices=choices, value=thread_id),
            thread_id,
            history,
            *result_outputs(result, thread_id),
            views.banner(problem),
            gr.update(choices=server.known_cases(), value=path),
        )

    def result_outputs(result: Any, thread_id: str) -> tuple[Any, ...]:
        frames = key_frames(server, thread_id) if result is not None else []
        return (
            views.evidence_html(result),
            frames,
            views.citations_html(result),
            views.trace_markdown(result),
        )

    def empty_outputs(message: str | None) -> tuple[Any, ...]:
        return (gr.update(),) * 11 + (views.banner(message), gr.update())

    def on_upload(file: Any) -> tuple[Any, ...]:
        if file is None:
            return empty_outputs(None)
        try:
            stored = server.upload(file if isinstance(file, str) else file.name)
            return case_outputs(str(stored), None)
        except (UploadError, SurgAgentError) as error:
            return empty_outputs(f"Upload refused: {error}")

    def on_pick(path: str | None) -> tuple[Any, ...]:
        if not path:
            return empty_outputs(None)
        try:
            return case_outputs(path, None)
        except SurgAgentError as error:
            return empty_outputs(f"Cannot open {Path(path).name}: {error}")

    def on_session(thread_id: str | None, case_path: str | None) -> tuple[Any, ...]:
        if not thread_id or not case_path:
            return empty_outputs(None)
        return case_outputs(case_path, thread_id)

    def on_load(request: gr.Request) -> tuple[Any, ...]:
        thread_id = dict(request.query_params).get("session")
        record = server.sessions.get(thread_id) if thread_id else None
        _, problem = server.agent()
        if record is None:
            return empty_outputs(problem)
        try:
            return case_outputs(record.case, record.thread_id)
        except SurgAgentError as error:
            return empty_outputs(f"Cannot reopen session {thread_id}: {error}")

    def on_ask(
        question: str, history: list[dict[str, Any]], case_path: str | None, thread_id: str | None
    ) -> Any:
        question = question.strip()
        if not question:
            yield history, "", *(gr.update(),) * 4, gr.update(), gr.update()
            return
        if not case_path or not thread_id:
            message = "Open a case first: upload a video or pick one."
            yield history, question, *(gr.update(),) * 4, views.banner(message), gr.update()
            return
        history = [*history, {"role": "user", "content": question}]
        history.append({"role": "assistant", "content": "_thinking..._"})
        yield history, "", *(gr.update(),) * 4, views.banner(None), gr.update()
        for text, result, problem in stream_answer(server, question, case_path, thread_id):
            if text:
                history[-1] = {"role": "assistant", "content": views.answer_markdown(text)}
            if problem:
                history[-1] = {"role": "assistant", "content": f"**Error:** {problem}"}
                yield history, "", *(gr.update(),) * 4, views.banner(problem), gr.update()
                return
            if result is None:
                yield history, "", *(gr.update(),) * 4, gr.update(), gr.update()
                continue
            case = server.open(case_path)
            server.sessions.record(thread_id, case=case.source, case_id=case.id, title=question)
            choices = server.session_choices(case.id)
            yield (
                history,
                "",
                *result_outputs(result, thread_id),
                views.banner(None),
                gr.update(choices=choices, value=thread_id),
            )

    with gr.Blocks(title="SurgAgent case review") as page:
        gr.Markdown("## SurgAgent case review")
        banner = gr.HTML(views.banner(server.agent()[1]), elem_id="banner")
        gr.HTML(views.tools_status(server.tools()), elem_id="tools")
        case_path = gr.State(None)
        thread = gr.Textbox(visible=False, elem_id="session-id")
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Row():
                    upload = gr.File(
                        label="Upload a video",
                        file_types=list(VIDEO_SUFFIXES),
                        type="filepath",
                        elem_id="upload",
                    )
                    known = gr.Dropdown(
                        choices=server.known_cases(),
                        label="...or pick a case reviewed before",
                        elem_id="known-cases",
                    )
                video = gr.Video(label="Case", interactive=False, elem_id="case-video")
                gr.Markdown("**Phases** (click to seek)")
                ribbon = gr.HTML(elem_id="phase-ribbon")
                gr.Markdown("**Instruments** (click to seek)")
                timeline = gr.HTML(elem_id="instrument-timeline")
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

        opened = [
            case_path, video, ribbon, timeline, sessions, thread, chat,
            evidence, frames, citations, trace, banner, known,
        ]  # fmt: skip
        upload.upload(on_upload, inputs=upload, outputs=opened)
        known.input(on_pick, inputs=known, outputs=opened)
        sessions.input(on_session, inputs=[sessions, case_path], outputs=opened)
        page.load(on_load, inputs=None, outputs=opened)
        thread.change(None, inputs=thread, outputs=None, js=_URL_SCRIPT)
        question.submit(
            on_ask,
            inputs=[question, chat, case_path, thread],
            outputs=[chat, question, evidence, frames, citations, trace, banner, sessions],
        )
    return page


def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    token: str | None = None,
    max_upload_mb: float = 4096,
) -> None:
    """Start the review app and block until it is stopped."""
    # Gradio keeps uploads in its temp dir: keep that inside the data dir, and never phone home.
    os.environ.setdefault("GRADIO_TEMP_DIR", str(settings.data_dir / "ui" / "tmp"))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    server = ReviewServer(settings, max_upload_mb=max_upload_mb)
    page = build_page(server)
    page.queue(default_concurrency_limit=4)
    page.launch(server_name=host, server_port=port, **server.launch_options(token))
