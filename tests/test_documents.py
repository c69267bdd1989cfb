"""Reading files into documents: the paper loads page by page, and every kind of bad file gets a reason."""

from __future__ import annotations

import hashlib
import io
import logging
import random
from pathlib import Path

import pypdf
import pytest
from pypdf import PageObject, PdfReader, PdfWriter
from pypdf.errors import DependencyError

from membot.agent.sources import documents
from membot.agent.sources.documents import (
    FileRejected,
    ParsedFile,
    collect_paths,
    read_file_bytes,
    read_path,
)

PAPER = Path("/work/shared/data/memgpt_paper.pdf")
PAPER_SHA256 = "9f674bcff69c86f11c813dcfad613d8841f5f8ed17979e3c4df06a91df7762e0"
LIMIT = 50 * 1024 * 1024

pytestmark = pytest.mark.skipif(not PAPER.exists(), reason="the MemGPT paper PDF is not available")


@pytest.fixture(scope="module")
def paper() -> ParsedFile:
    return read_path(PAPER, max_bytes=LIMIT)


def _rejected(filename: str, data: bytes, **kwargs: int) -> str:
    with pytest.raises(FileRejected) as info:
        read_file_bytes(filename, data, max_bytes=kwargs.pop("max_bytes", LIMIT), **kwargs)
    reason = info.value.reason
    assert reason.startswith(f"{filename}: ") and "\n" not in reason
    return reason


def _one_page_pdf(**encrypt: str) -> bytes:
    writer = PdfWriter()
    writer.add_page(PdfReader(PAPER).pages[0])
    if encrypt:
        writer.encrypt(**encrypt, algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _blank_pdf(pages: int) -> bytes:
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=612, height=792)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_paper_is_one_document_per_page(paper: ParsedFile) -> None:
    assert paper.filename == "memgpt_paper.pdf"
    assert paper.pages == 13
    assert [d.page for d in paper.documents] == list(range(1, 14))
    assert all(d.filename == "memgpt_paper.pdf" and d.text.strip() for d in paper.documents)
    assert "MemGPT: Towards LLMs as Operating Systems" in paper.documents[0].text


def test_paper_hash_is_stable(paper: ParsedFile) -> None:
    data = PAPER.read_bytes()
    assert paper.content_hash == hashlib.sha256(data).hexdigest() == PAPER_SHA256
    assert read_file_bytes("copy.pdf", data, max_bytes=LIMIT).content_hash == PAPER_SHA256


def test_pypdf_logger_is_silenced_then_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("pypdf")
    original = PageObject.extract_text
    seen: list[int] = []

    def spy(self: PageObject, **kwargs: object) -> str:
        seen.append(logger.level)
        return original(self, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(PageObject, "extract_text", spy)
    monkeypatch.setattr(logger, "level", logging.INFO)
    read_file_bytes("p.pdf", _one_page_pdf(), max_bytes=LIMIT)
    assert seen and all(level > logging.CRITICAL for level in seen)
    assert logger.level == logging.INFO


def test_encrypted_pdf_is_rejected() -> None:
    data = _one_page_pdf(user_password="secret", owner_password="owner")
    assert "encrypted" in _rejected("locked.pdf", data)


def test_owner_password_only_pdf_loads() -> None:
    data = _one_page_pdf(user_password="", owner_password="owner")
    assert PdfReader(io.BytesIO(data)).is_encrypted
    parsed = read_file_bytes("owner.pdf", data, max_bytes=LIMIT)
    assert [d.page for d in parsed.documents] == [1]
    assert "MemGPT" in parsed.documents[0].text


def test_missing_crypto_dependency_is_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_crypto(*args: object, **kwargs: object) -> None:
        raise DependencyError("cryptography is required for AES algorithm")

    monkeypatch.setattr(pypdf, "PdfReader", no_crypto)  # documents imports it when it first reads a PDF
    assert "cryptography" in _rejected("aes.pdf", b"%PDF-1.7\n...")


def test_truncated_pdf_is_rejected() -> None:
    data = PAPER.read_bytes()
    assert "could not be read" in _rejected("half.pdf", data[: len(data) // 2])


def test_random_bytes_named_pdf_are_not_a_pdf() -> None:
    assert "not a PDF" in _rejected("junk.pdf", random.Random(1).randbytes(4096))
    assert "ZIP" in _rejected("report.pdf", b"PK\x03\x04" + bytes(100))


def test_pypdf_failure_while_extracting_is_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: PageObject, **kwargs: object) -> str:
        raise KeyError("/Font")

    monkeypatch.setattr(PageObject, "extract_text", broken)
    assert "could not be read" in _rejected("odd.pdf", _one_page_pdf())


def test_zero_bytes_rejected() -> None:
    assert "empty" in _rejected("empty.txt", b"")
    assert "empty" in _rejected("empty.pdf", b"")


def test_over_the_limit_is_checked_from_stat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.txt"
    big.write_bytes(b"hello world\n" * 1000)

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the file must not be opened")

    monkeypatch.setattr(Path, "open", no_reading)
    monkeypatch.setattr(Path, "read_bytes", no_reading)
    with pytest.raises(FileRejected) as info:
        read_path(big, max_bytes=1000)
    assert info.value.reason.startswith("big.txt: ")
    assert "MB" in info.value.reason and "limit" in info.value.reason
    assert "MB" in _rejected("big.pdf", b"%PDF-" + bytes(2_000_000), max_bytes=1_048_576)


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "notes.docx"
    path.write_bytes(b"PK\x03\x04" + bytes(64))
    with pytest.raises(FileRejected, match=r"^notes\.docx: unsupported file type '\.docx'"):
        read_path(path, max_bytes=LIMIT)
    assert "unsupported" in _rejected("Makefile", b"all:\n")


def test_missing_file_is_a_reason(tmp_path: Path) -> None:
    with pytest.raises(FileRejected, match="could not be opened"):
        read_path(tmp_path / "gone.md", max_bytes=LIMIT)


def test_blank_pdf_has_no_text_layer() -> None:
    assert "no text layer" in _rejected("scan.pdf", _blank_pdf(2))


def test_too_many_pages_rejected_before_extracting(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(self: PageObject, **kwargs: object) -> str:
        raise AssertionError("text must not be extracted")

    data = _blank_pdf(4)
    monkeypatch.setattr(PageObject, "extract_text", never)
    reason = _rejected("long.pdf", data, max_pages=3)
    assert "4 pages" in reason and "limit is 3" in reason


def test_page_with_absurd_text_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(documents, "MAX_PAGE_CHARS", 100)
    assert "page 1" in _rejected("bomb.pdf", _one_page_pdf())


def test_utf16_and_cp1252_text_load(tmp_path: Path) -> None:
    text = "Café – “memory” naïve\r\nsecond line\r\n"
    (tmp_path / "u16.txt").write_bytes(text.encode("utf-16"))
    (tmp_path / "win.md").write_bytes(text.encode("cp1252"))
    (tmp_path / "bom.markdown").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    expected = "Café – “memory” naïve\nsecond line\n"
    for name in ("u16.txt", "win.md", "bom.markdown"):
        parsed = read_path(tmp_path / name, max_bytes=LIMIT)
        assert parsed.pages == 1
        assert [(d.filename, d.page, d.text) for d in parsed.documents] == [(name, None, expected)]


def test_utf16_without_bom_and_latin1_fallback() -> None:
    le = read_file_bytes("le.txt", "plain words".encode("utf-16-le"), max_bytes=LIMIT)
    assert le.documents[0].text == "plain words"
    # 0x81 is undefined in cp1252, so this falls through to latin-1 rather than failing.
    odd = read_file_bytes("odd.txt", b"caf\xe9 au lait, with one stray \x81 byte", max_bytes=LIMIT)
    assert odd.documents[0].text.startswith("café")


def test_nuls_stripped_and_newlines_normalised() -> None:
    parsed = read_file_bytes("n.txt", b"some text\x00 here\r\nnext\rlast", max_bytes=LIMIT)
    assert parsed.documents[0].text == "some text here\nnext\nlast"


def test_binary_junk_named_txt_rejected() -> None:
    assert "binary" in _rejected("junk.txt", random.Random(0).randbytes(4096))
    assert "PDF" in _rejected("paper.txt", b"%PDF-1.7\n" + bytes(100))
    assert "no text" in _rejected("blank.md", b" \n\t\n")


def test_collect_paths(tmp_path: Path) -> None:
    (tmp_path / "sub" / ".hidden").mkdir(parents=True)
    for name in ("b.pdf", "a.TXT", "skip.docx", ".secret.md", "sub/c.md", "sub/.hidden/d.md"):
        (tmp_path / name).write_text("x")
    flat = collect_paths(None, tmp_path, recursive=False, extensions=documents.SUPPORTED_EXTENSIONS)
    assert flat == [tmp_path / "a.TXT", tmp_path / "b.pdf"]
    deep = collect_paths(
        [tmp_path / "skip.docx", tmp_path / "b.pdf"], tmp_path, recursive=True, extensions=(".pdf", ".md")
    )
    assert deep == [tmp_path / "b.pdf", tmp_path / "skip.docx", tmp_path / "sub" / "c.md"]
    assert collect_paths(None, None, recursive=True, extensions=(".md",)) == []
    with pytest.raises(FileRejected, match="not a directory"):
        collect_paths(None, tmp_path / "b.pdf", recursive=False, extensions=(".md",))
