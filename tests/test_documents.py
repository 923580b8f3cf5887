"""User documents become citable passages: markdown, text, HTML and PDF, and clear errors."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from surgagent.knowledge.documents import SUPPORTED_SUFFIXES, document_id, read_document
from surgagent.knowledge.errors import DocumentError
from surgagent.knowledge.passages import Passage
from tests.fixtures.documents import pdf_bytes as _pdf

SENTENCE = "The critical view of safety needs two structures entering the gallbladder."

MARKDOWN = f"""---
title: Safe Cholecystectomy Notes
source: Our Department
year: 2021
licence: CC-BY-4.0
url: https://example.org/notes
---
Preamble before any heading.

# Guideline

Opening paragraph of the guideline.

## Dissection

First dissection paragraph about the hepatocystic triangle.

Second dissection paragraph about the cystic plate.

### Clipping

{" ".join([SENTENCE] * 12)}

## Empty section

## Bail-out ##

Subtotal cholecystectomy when the view cannot be reached.

```
# not a heading, code
```
"""


def _words(text: str) -> list[str]:
    return re.findall(r"[\w'-]+", text)


def _expect_error(path: Path, *fragments: str) -> str:
    with pytest.raises(DocumentError) as caught:
        read_document(path)
    message = str(caught.value)
    assert path.name in message
    for fragment in fragments:
        assert fragment in message
    assert "Traceback" not in message
    return message


def test_markdown_sections_front_matter_and_ids(tmp_path: Path) -> None:
    path = tmp_path / "cvs_notes.md"
    path.write_text(MARKDOWN, encoding="utf-8")

    passages = read_document(path, max_words=50)

    prefix = document_id(path)
    assert prefix.startswith("doc-") and len(prefix) == 14
    assert [p.id for p in passages] == [f"{prefix}-{n:03d}" for n in range(len(passages))]
    assert {p.title for p in passages} == {"Safe Cholecystectomy Notes"}
    assert {(p.source, p.year, p.licence, p.url) for p in passages} == {
        ("Our Department", 2021, "CC-BY-4.0", "https://example.org/notes")
    }
    assert all(p.origin == "user" and p.topic == "user" and p.page is None for p in passages)
    assert {p.document for p in passages} == {str(path.resolve())}
    sections = [p.section for p in passages]
    assert sections[0] == ""
    assert "Guideline > Dissection" in sections
    assert "Guideline > Dissection > Clipping" in sections
    assert "Guideline > Bail-out" in sections
    assert not any("Empty section" in section for section in sections)
    dissection = [p.text for p in passages if p.section == "Guideline > Dissection"]
    assert dissection == [
        "First dissection paragraph about the hepatocystic triangle.\n\n"
        "Second dissection paragraph about the cystic plate."
    ]
    clipping = [p for p in passages if p.section.endswith("Clipping")]
    assert len(clipping) == 3 and all(len(p.text.split()) <= 50 for p in clipping)
    assert all(len(p.text.split()) <= 50 for p in passages)
    bail_out = next(p for p in passages if p.section == "Guideline > Bail-out")
    assert "# not a heading, code" in bail_out.text
    assert not any(line.startswith("## ") for p in passages for line in p.text.splitlines())
    body = MARKDOWN.split("---\n", 2)[2]
    text_words = set(_words(" ".join(p.text for p in passages)))
    heading_words = set(_words(" ".join(sections))) | {"Empty", "section"}
    assert set(_words(body)) <= text_words | heading_words
    # The id depends on the path, not the content: a changed file keeps its prefix.
    path.write_text("# Other\n\nNew text.\n", encoding="utf-8")
    again = read_document(path)
    assert again[0].id == passages[0].id
    assert again[0].title == "Other" and again[0].section == "Other"


def test_overlong_sentence_is_cut_by_words(tmp_path: Path) -> None:
    long_sentence = " ".join(f"w{k}" for k in range(25)) + "."
    path = tmp_path / "long.md"
    path.write_text(f"Short one. {long_sentence} Another short one.\n", encoding="utf-8")

    texts = [p.text for p in read_document(path, max_words=10)]

    assert all(len(text.split()) <= 10 for text in texts)
    assert " ".join(texts).split() == f"Short one. {long_sentence} Another short one.".split()


def test_plain_text_paragraphs_are_joined(tmp_path: Path) -> None:
    path = tmp_path / "ward-round_notes.txt"
    paragraphs = [f"Paragraph {n} has exactly six words." for n in range(5)]
    path.write_text("\r\n\r\n".join(paragraphs) + "\n", encoding="utf-8")

    passages = read_document(path, max_words=12)

    assert [p.text for p in passages] == [
        "\n\n".join(paragraphs[0:2]),
        "\n\n".join(paragraphs[2:4]),
        paragraphs[4],
    ]
    assert {p.title for p in passages} == {"ward round notes"}
    assert {(p.section, p.source, p.topic) for p in passages} == {("", path.name, "user")}


def test_latin1_text_decodes(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes("Résumé of the café protocol: naïve façade.".encode("latin-1"))

    (passage,) = read_document(path)

    assert passage.text == "Résumé of the café protocol: naïve façade."


def test_html_drops_scripts_and_uses_title_and_headings(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_text(
        """<!doctype html><html><head><title> Bile Duct
        Injury </title><style>p { color: red; }</style>
        <script>var secret = "tracking";</script></head>
        <body><nav><a href="/">Home menu</a></nav>
        <h1>Injury</h1><p>Recognise &amp; repair early.</p>
        <h2>Classifi<i>cation</i><br>\n</h2><ul><li>Strasberg A</li><li>Strasberg E</li></ul>
        <div>Refer<br>to a <b>hepatobiliary</b> centre.</div>
        <script>alert("x")</script></body></html>""",
        encoding="utf-8",
    )

    passages = read_document(path)

    everything = " ".join(p.text + " " + p.section + " " + p.title for p in passages)
    for dropped in ("color", "secret", "tracking", "alert", "Home menu"):
        assert dropped not in everything
    assert {p.title for p in passages} == {"Bile Duct Injury"}
    by_section = {p.section: p.text for p in passages}
    assert by_section == {
        "Injury": "Recognise & repair early.",
        "Injury > Classification": "Strasberg A\n\nStrasberg E\n\nRefer to a hepatobiliary centre.",
    }


def test_pdf_pages_and_metadata_title(tmp_path: Path) -> None:
    path = tmp_path / "protocol.pdf"
    path.write_bytes(
        _pdf(["Page one talks about clipping.", "Page two talks about bail-out."], "Protocol X")
    )

    passages = read_document(path)

    assert [(p.page, p.section) for p in passages] == [(1, ""), (2, "")]
    assert "clipping" in passages[0].text and "bail-out" in passages[1].text
    assert {p.title for p in passages} == {"Protocol X"}
    assert [p.id for p in passages] == [f"{document_id(path)}-000", f"{document_id(path)}-001"]


def test_pdf_chunks_never_span_pages_and_title_falls_back_to_stem(tmp_path: Path) -> None:
    path = tmp_path / "short_pages.pdf"
    path.write_bytes(_pdf(["Alpha one.", None, "Gamma three."]))

    passages = read_document(path, max_words=100)

    assert [(p.page, p.text) for p in passages] == [(1, "Alpha one."), (3, "Gamma three.")]
    assert {p.title for p in passages} == {"short pages"}


@pytest.mark.parametrize(
    ("name", "content", "fragments"),
    [
        ("notes.docx", b"PK\x03\x04", ("'.docx'", ", ".join(SUPPORTED_SUFFIXES))),
        ("notes.mdx", b"# x", ("did you mean .md?",)),
        ("README", b"text", ("without a suffix",)),
        ("empty.md", b"", ("is empty",)),
        ("blank.txt", b"  \n\t\n   \n", ("no text",)),
        ("only-front-matter.md", b"---\ntitle: T\n---\n", ("no text",)),
        ("binary.txt", bytes(range(256)) * 4, ("binary data",)),
        ("bad-yaml.md", b"---\ntitle: [unclosed\n---\nBody.\n", ("front matter",)),
        ("bad-year.md", b"---\nyear: soon\n---\nBody.\n", ("'year'",)),
        ("random.pdf", random.Random(0).randbytes(512), ("not a readable PDF",)),
    ],
)
def test_bad_files_raise_clear_errors(
    tmp_path: Path, name: str, content: bytes, fragments: tuple[str, ...]
) -> None:
    path = tmp_path / name
    path.write_bytes(content)

    _expect_error(path, *fragments)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    _expect_error(tmp_path / "nowhere.md", "does not exist")
    folder = tmp_path / "folder.md"
    folder.mkdir()
    _expect_error(folder, "is a directory")


def test_truncated_pdf_is_not_readable(tmp_path: Path) -> None:
    data = _pdf(["Some text on page one.", "More text on page two."])
    path = tmp_path / "truncated.pdf"
    path.write_bytes(data[: len(data) // 3])

    _expect_error(path, "not a readable PDF")


def test_pdf_without_text_layer(tmp_path: Path) -> None:
    path = tmp_path / "scan.pdf"
    path.write_bytes(_pdf([None, None]))

    _expect_error(path, "no extractable text", "scanned", "OCR")


def test_encrypted_pdf(tmp_path: Path) -> None:
    from pypdf import PdfReader, PdfWriter

    plain = tmp_path / "plain.pdf"
    plain.write_bytes(_pdf(["Secret protocol text."]))
    writer = PdfWriter(clone_from=PdfReader(plain))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="RC4-128")
    locked = tmp_path / "locked.pdf"
    with locked.open("wb") as stream:
        writer.write(stream)
    writer = PdfWriter(clone_from=PdfReader(plain))
    writer.encrypt(user_password="", owner_password="owner", algorithm="RC4-128")
    open_copy = tmp_path / "open.pdf"
    with open_copy.open("wb") as stream:
        writer.write(stream)

    _expect_error(locked, "encrypted")
    assert [p.text for p in read_document(open_copy)] == ["Secret protocol text."]


def test_passages_are_valid_models(tmp_path: Path) -> None:
    path = tmp_path / "Mixed Case File.TXT"
    path.write_text("Text.", encoding="utf-8")

    (passage,) = read_document(path)

    assert isinstance(passage, Passage)
    assert Passage.from_metadata(passage.text, passage.metadata()) == passage
    with pytest.raises(ValueError, match="max_words"):
        read_document(path, max_words=0)
