"""User documents: turn a markdown, text, HTML or PDF file into citable passages.

Chunks hold about ``max_words`` words and never cross a section (or a PDF page); each is a
`Passage` with ``origin="user"`` whose id starts with `document_id`, which depends on the file's
path and not its content, so re-adding a changed file replaces its chunks.

    passages = read_document(Path("protocols/cholecystectomy.pdf"), max_words=200)
    prefix = document_id(Path("protocols/cholecystectomy.pdf"))  # every chunk id starts with it
"""

from __future__ import annotations

import codecs
import difflib
import hashlib
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import ValidationError

from surgagent.knowledge.errors import DocumentError, KnowledgeError
from surgagent.knowledge.passages import Passage, parse_front_matter

__all__ = ["SUPPORTED_SUFFIXES", "document_id", "read_document"]

SUPPORTED_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm", ".pdf")

_META_FIELDS = ("title", "source", "year", "url", "topic", "licence", "document")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)(?:\s+#+)?\s*$")
_BLANK_LINES = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# <head> needs no skipping: its only text is <title>, <script> and <style>.
_HTML_SKIP = frozenset({"script", "style", "nav", "noscript", "template"})
_HTML_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_HTML_BLOCKS = frozenset(
    {"p", "li", "td", "th", "tr", "pre", "blockquote", "div", "hr", "dt", "dd"}
    | {"ul", "ol", "table", "section", "article", "main", "header", "footer", "body"}
)


class _Block(NamedTuple):
    """A heading (``level`` 1 to 6) or a paragraph (``level`` 0)."""

    level: int
    text: str


@dataclass
class _Section:
    """The paragraphs under one heading path, or on one PDF page."""

    path: str
    paragraphs: list[str] = field(default_factory=list)
    page: int | None = None


def document_id(path: Path) -> str:
    """The id prefix ``doc-<digest>`` that every chunk of the file at ``path`` starts with."""
    resolved = str(Path(path).resolve())
    return f"doc-{hashlib.sha1(resolved.encode(), usedforsecurity=False).hexdigest()[:10]}"


MAX_DOCUMENT_MB = 32.0  # larger files are refused before they are read (the store's default)


def read_document(
    path: Path, *, max_words: int = 220, max_mb: float = MAX_DOCUMENT_MB
) -> list[Passage]:
    """Split the document at ``path`` into passages of at most about ``max_words`` words.

    Markdown may open with YAML front matter (``title, source, year, url, topic, licence,
    document``) that overrides the defaults; its ATX headings become each chunk's ``section``
    (``"Guideline > Dissection > Clipping"``). HTML headings do the same; PDF chunks carry their
    1-based ``page``. A single sentence longer than ``max_words`` is kept whole.

    Args:
        path: A file with one of `SUPPORTED_SUFFIXES`.
        max_words: Most words per chunk; consecutive paragraphs of a section are joined up to it.
        max_mb: Largest file accepted, in MB (``knowledge.max_document_mb``).

    Returns:
        The chunks in document order, with ids ``f"{document_id(path)}-{n:03d}"`` from 0.

    Raises:
        DocumentError: If the file is missing, a directory, of an unsupported type, empty,
            larger than ``max_mb``, without extractable text, undecodable, a broken or
            encrypted PDF, or has invalid front matter.
        ValueError: If ``max_words`` is less than 1.
    """
    if max_words < 1:
        raise ValueError(f"max_words must be at least 1, got {max_words}")
    path = Path(path)
    _check_file(path, max_mb)
    meta: dict[str, Any] = {}
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        title, sections = _read_pdf(path)
    elif suffix in (".html", ".htm"):
        title, sections = _read_html(path)
    elif suffix == ".txt":
        title, sections = "", [_Section("", _paragraphs(_read_text(path)))]
    else:
        meta, body = _front_matter(path, _read_text(path))
        title, sections = _read_markdown(body)
    sections = [section for section in sections if section.paragraphs]
    if not sections:
        raise DocumentError(f"{path} has no text to add (only whitespace, markup or metadata)")
    return _passages(path, title, meta, sections, max_words)


def _check_file(path: Path, max_mb: float) -> None:
    supported = ", ".join(SUPPORTED_SUFFIXES)
    if path.is_dir():
        raise DocumentError(f"{path} is a directory; add its files one at a time ({supported})")
    if not path.exists():
        raise DocumentError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        close = difflib.get_close_matches(suffix, SUPPORTED_SUFFIXES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        kind = f"{suffix!r} files" if suffix else "files without a suffix"
        raise DocumentError(f"{path}: cannot read {kind}{hint}; supported: {supported}")
    size = path.stat().st_size
    if size == 0:
        raise DocumentError(f"{path} is empty")
    if size > max_mb * 2**20:
        raise DocumentError(
            f"{path} is {size / 2**20:.1f} MB, more than the {max_mb:g} MB a document may be; "
            "split it, or raise knowledge.max_document_mb"
        )


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DocumentError(f"{path} cannot be read ({error.strerror})") from error
    # utf-8-sig also reads plain utf-8; cp1252 is what Windows editors write; latin-1 never fails.
    bom16 = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    encodings = ("utf-16",) if bom16 else ("utf-8-sig", "cp1252", "latin-1")
    text = _decode(data, encodings)
    if text is None:
        raise DocumentError(f"{path} is not text in a known encoding (tried {encodings})")
    if "\x00" in text:
        raise DocumentError(f"{path} holds binary data, not {path.suffix} text")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _decode(data: bytes, encodings: tuple[str, ...]) -> str | None:
    for encoding in encodings:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return None


def _paragraphs(text: str) -> list[str]:
    return [part.strip() for part in _BLANK_LINES.split(text) if part.strip()]


def _front_matter(path: Path, text: str) -> tuple[dict[str, Any], str]:
    try:
        meta, body = parse_front_matter(text)
    except KnowledgeError as error:
        raise DocumentError(f"{path}: {error}") from error
    fields = {key: meta[key] for key in _META_FIELDS if meta.get(key) not in (None, "")}
    return {key: value if key == "year" else str(value) for key, value in fields.items()}, body


def _read_markdown(body: str) -> tuple[str, list[_Section]]:
    blocks: list[_Block] = []
    lines: list[str] = []
    in_fence = False  # a '#' line inside a code fence is code, not a heading
    for line in body.splitlines():
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            in_fence = not in_fence
        heading = None if in_fence else _HEADING.match(stripped)
        if heading or not (stripped or in_fence):
            _end_paragraph(lines, blocks)
            if heading:
                blocks.append(_Block(len(heading.group(1)), heading.group(2).strip()))
        else:
            lines.append(line.rstrip())
    _end_paragraph(lines, blocks)
    return _first_h1(blocks), _sections(blocks)


def _end_paragraph(lines: list[str], blocks: list[_Block]) -> None:
    text = "\n".join(lines).strip()
    if text:
        blocks.append(_Block(0, text))
    lines.clear()


def _first_h1(blocks: list[_Block]) -> str:
    return next((block.text for block in blocks if block.level == 1), "")


def _sections(blocks: list[_Block]) -> list[_Section]:
    sections = [_Section("")]
    headings: list[_Block] = []
    for block in blocks:
        if block.level == 0:
            sections[-1].paragraphs.append(block.text)
            continue
        while headings and headings[-1].level >= block.level:
            headings.pop()
        headings.append(block)
        sections.append(_Section(" > ".join(heading.text for heading in headings)))
    return sections


class _HtmlBlocks(HTMLParser):
    """Collects the <title>, headings and paragraphs of an HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.blocks: list[_Block] = []
        self._text: list[str] = []
        self._skip = 0
        self._heading = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HTML_SKIP:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag == "br":  # a line break, not a new block: it may sit inside a heading
            self._text.append(" ")
        elif tag in _HTML_BLOCKS or tag in _HTML_HEADINGS:
            self._end_block()
            self._heading = int(tag[1]) if tag in _HTML_HEADINGS else 0

    def handle_endtag(self, tag: str) -> None:
        if tag in _HTML_SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif tag in _HTML_BLOCKS or tag in _HTML_HEADINGS:
            self._end_block()

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip:
            self._text.append(data)

    def close(self) -> None:
        super().close()
        self._end_block()

    def _end_block(self) -> None:
        text = " ".join("".join(self._text).split())
        if text:
            self.blocks.append(_Block(self._heading, text))
        self._text = []
        self._heading = 0


def _read_html(path: Path) -> tuple[str, list[_Section]]:
    parser = _HtmlBlocks()
    parser.feed(_read_text(path))
    parser.close()
    title = " ".join(parser.title.split()) or _first_h1(parser.blocks)
    return title, _sections(parser.blocks)


def _read_pdf(path: Path) -> tuple[str, list[_Section]]:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            reader.decrypt("")  # many PDFs are encrypted with an empty user password
        pages = [page.extract_text() or "" for page in reader.pages]
        title = str(reader.metadata.title or "") if reader.metadata else ""
    except (FileNotDecryptedError, DependencyError) as error:
        raise DocumentError(
            f"{path} is an encrypted PDF that cannot be opened ({error}); add an unlocked copy"
        ) from error
    except Exception as error:  # pypdf raises many error types on malformed files
        reason = str(error) or type(error).__name__
        raise DocumentError(f"{path} is not a readable PDF ({reason})") from error
    sections = [
        _Section("", [" ".join(part.split()) for part in _paragraphs(text)], page=number)
        for number, text in enumerate(pages, start=1)
    ]
    if not any(section.paragraphs for section in sections):
        raise DocumentError(
            f"{path} has no extractable text on its {len(pages)} page(s); if it is a scanned PDF "
            "without a text layer, run OCR on it first (e.g. ocrmypdf)"
        )
    return title.strip(), sections


def _passages(
    path: Path, title: str, meta: dict[str, Any], sections: list[_Section], max_words: int
) -> list[Passage]:
    defaults = {
        "title": title or re.sub(r"[_-]+", " ", path.stem).strip() or path.stem,
        "topic": "user",
        "source": path.name,
        "document": str(path.resolve()),
        "licence": "",
    }
    fields: dict[str, Any] = defaults | meta
    prefix = document_id(path)
    passages: list[Passage] = []
    try:
        for section in sections:
            for text in _chunks(section.paragraphs, max_words):
                number = f"{len(passages):03d}"
                passages.append(
                    Passage(
                        id=f"{prefix}-{number}",
                        text=text,
                        section=section.path,
                        page=section.page,
                        origin="user",
                        **fields,
                    )
                )
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise DocumentError(f"{path}: front matter field {where!r}: {problem['msg']}") from error
    return passages


def _chunks(paragraphs: list[str], max_words: int) -> list[str]:
    """Join paragraphs up to ``max_words``, splitting a longer paragraph between sentences.

    A single sentence longer than ``max_words`` (a table row, a list without full stops) is
    cut by words, since the embedding model reads only the first ~256 tokens of a chunk.
    """
    pieces: list[str] = []
    for paragraph in paragraphs:
        if len(paragraph.split()) <= max_words:
            pieces.append(paragraph)
            continue
        sentences: list[str] = []
        for sentence in _SENTENCE_END.split(paragraph):
            words = sentence.split()
            sentences += [
                " ".join(words[k : k + max_words]) for k in range(0, len(words), max_words)
            ]
        pieces.extend(_join(sentences, max_words, " "))
    return _join(pieces, max_words, "\n\n")


def _join(parts: list[str], max_words: int, separator: str) -> list[str]:
    """Greedily group consecutive ``parts`` into at most ``max_words`` words each."""
    groups: list[str] = []
    current: list[str] = []
    count = 0
    for part in parts:
        words = len(part.split())
        if current and count + words > max_words:
            groups.append(separator.join(current))
            current, count = [], 0
        current.append(part)
        count += words
    if current:
        groups.append(separator.join(current))
    return groups
