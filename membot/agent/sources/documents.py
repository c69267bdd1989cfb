"""Reads files into plain-text documents, refusing bad input with a one-line reason that names the file.

Pure and blocking (pypdf is pure Python and CPU-bound): callers run `read_file_bytes` / `read_path` in a
worker thread. Nothing here touches a database or the network.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pypdf import PdfReader

SUPPORTED_EXTENSIONS = (".pdf", ".txt", ".md", ".markdown")
MAX_PAGES = 2_000
# A real page holds a few thousand characters; far more means a malformed or hostile file.
MAX_PAGE_CHARS = 200_000
MAX_TOTAL_CHARS = 20_000_000
# Checked between pages: a single page cannot be interrupted, but a slow file stops at the next one.
MAX_PARSE_SECONDS = 120.0

_MB = 1024 * 1024
# Some writers put junk before the header; readers accept it within the first KiB.
_PDF_HEADER_WINDOW = 1024
_TEXT_SAMPLE = 65_536
# Share of control characters above which decoded "text" is really binary.
_BINARY_RATIO = 0.10
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f-\x9f]")
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "ZIP archive (e.g. a .docx or .xlsx)"),
    (b"\xd0\xcf\x11\xe0", "legacy Office document"),
    (b"\x89PNG", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF8", "GIF image"),
    (b"\x7fELF", "program (ELF)"),
    (b"\x1f\x8b", "gzip archive"),
)
_BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


@dataclass(frozen=True)
class Document:
    filename: str
    page: int | None  # 1-based for PDF pages; None for text files
    text: str


@dataclass(frozen=True)
class ParsedFile:
    filename: str
    content_hash: str  # sha256 hex of the raw bytes
    documents: list[Document]
    pages: int  # PDF page count, empty pages included; 1 for a text file


class FileRejected(Exception):
    """A file we will not load; `reason` is one user-facing line that names the file."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _QuietPypdf:
    """Silences pypdf's font warnings while any thread parses; ref-counted so threads don't fight."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._saved = logging.NOTSET
        self._logger = logging.getLogger("pypdf")

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._saved = self._logger.level
                self._logger.setLevel(logging.CRITICAL + 1)
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    self._logger.setLevel(self._saved)


_quiet_pypdf = _QuietPypdf()


def _size(n: int) -> str:
    return f"{n / _MB:.1f} MB" if n >= _MB // 10 else f"{n / _MB:.2g} MB ({n:,} bytes)"


def _check_size(filename: str, size: int, max_bytes: int) -> None:
    if size == 0:
        raise FileRejected(f"{filename}: the file is empty (0 bytes)")
    if size > max_bytes:
        raise FileRejected(f"{filename}: {_size(size)} is over the {_size(max_bytes)} limit")


def _check_extension(filename: str) -> str:
    ext = PurePath(filename).suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        shown = f"'{ext}'" if ext else "without an extension"
        raise FileRejected(
            f"{filename}: unsupported file type {shown}; supported: {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    return ext


def _sniff_binary(data: bytes) -> str | None:
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    return None


def read_file_bytes(filename: str, data: bytes, *, max_bytes: int, max_pages: int = MAX_PAGES) -> ParsedFile:
    """Parses one file's bytes into documents (one per PDF page with text, one per text file)."""
    ext = _check_extension(filename)
    _check_size(filename, len(data), max_bytes)
    digest = hashlib.sha256(data).hexdigest()
    if ext == ".pdf":
        if b"%PDF-" not in data[:_PDF_HEADER_WINDOW]:
            kind = _sniff_binary(data)
            raise FileRejected(f"{filename}: not a PDF" + (f" (it looks like a {kind})" if kind else ""))
        documents, pages = _read_pdf(filename, data, max_pages)
        return ParsedFile(filename, digest, documents, pages)
    return ParsedFile(filename, digest, [_read_text(filename, data)], 1)


def read_path(path: Path, *, max_bytes: int, max_pages: int = MAX_PAGES) -> ParsedFile:
    """Reads a local file; size is checked from stat first so an oversized file is never read."""
    name = path.name
    _check_extension(name)
    try:
        _check_size(name, path.stat().st_size, max_bytes)
        with path.open("rb") as fh:
            # One byte past the limit so a file that grew since stat is still caught.
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise FileRejected(f"{name}: could not be opened ({exc.strerror or type(exc).__name__})") from exc
    return read_file_bytes(name, data, max_bytes=max_bytes, max_pages=max_pages)


def _read_pdf(filename: str, data: bytes, max_pages: int) -> tuple[list[Document], int]:
    # Imported on first use: pypdf (with the cryptography it loads) costs ~13 MB a process that never
    # reads a PDF need not carry.
    from pypdf.errors import DependencyError, LimitReachedError

    try:
        with _quiet_pypdf():
            return _extract_pages(filename, data, max_pages)
    except FileRejected:
        raise
    except DependencyError as exc:
        # AES decryption needs the 'cryptography' package; without it pypdf raises this, not PdfReadError.
        raise FileRejected(
            f"{filename}: the PDF is encrypted with AES and this install lacks the 'cryptography' package"
        ) from exc
    except LimitReachedError as exc:
        raise FileRejected(f"{filename}: the PDF expands to too much data (a decompression bomb?)") from exc
    except MemoryError:  # under the memory limit of the process that reads it (see isolated.py)
        raise needs_too_much_memory(filename) from None
    except Exception as exc:  # any pypdf failure on a corrupt file becomes a reason, never a traceback
        raise FileRejected(f"{filename}: the PDF could not be read (corrupt or truncated?)") from exc


def needs_too_much_memory(filename: str) -> FileRejected:
    return FileRejected(f"{filename}: the PDF needs too much memory to read (a malformed or hostile file?)")


def took_too_long(filename: str) -> FileRejected:
    return FileRejected(f"{filename}: the PDF took too long to read (a malformed or hostile file?)")


def _declared_page_count(reader: PdfReader) -> int:
    # /Count is one lookup; walking the whole page tree of a huge file is what we want to avoid.
    try:
        return int(reader.root_object["/Pages"]["/Count"])  # type: ignore[index, call-overload]
    except Exception:
        return 0


def _check_page_tree(filename: str, reader: PdfReader, max_pages: int) -> None:
    """Walks the page tree as pypdf will, but stops as soon as it holds more pages than its /Count says (or
    than the limit): a tree whose nodes repeat or loop could otherwise stand for millions of pages in a few
    KB. Nodes are budgeted too, so that empty or looping inner nodes end the walk as well."""
    from pypdf.generic import DictionaryObject

    declared = _declared_page_count(reader)
    if declared > max_pages:
        raise FileRejected(f"{filename}: the PDF has {declared:,} pages; the limit is {max_pages:,}")
    bound = declared if declared > 0 else max_pages
    budget = 2 * bound + 16  # a tree's inner nodes are fewer than its pages, bar a few chains of one
    stack = [reader.root_object["/Pages"]]
    pages = 0
    while stack:
        node = stack.pop().get_object()
        if not isinstance(node, DictionaryObject):
            continue
        kind = node.get("/Type")
        if kind == "/Pages" or (kind is None and "/Kids" in node):
            kids = node.get("/Kids", [])
            budget -= len(kids)
            if budget < 0:
                break
            stack.extend(kids)
        else:
            pages += 1
            if pages > bound:
                break
    else:
        return
    if declared > 0:
        said = f"{declared:,} page" + ("s" if declared > 1 else "")
        raise FileRejected(f"{filename}: the PDF says it has {said} but holds more; it looks malformed")
    raise FileRejected(f"{filename}: the PDF has over {max_pages:,} pages; the limit is {max_pages:,}")


def _extract_pages(filename: str, data: bytes, max_pages: int) -> tuple[list[Document], int]:
    from pypdf import PasswordType, PdfReader

    deadline = time.monotonic() + MAX_PARSE_SECONDS
    reader = PdfReader(io.BytesIO(data), strict=False)
    # Owner-password-only PDFs open with the empty user password; only a real user password stops us.
    if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
        raise FileRejected(f"{filename}: the PDF is encrypted (password-protected); upload an unlocked copy")
    _check_page_tree(filename, reader, max_pages)
    pages = len(reader.pages)
    if pages > max_pages:  # pypdf read the tree otherwise than the check did
        raise FileRejected(f"{filename}: the PDF has {pages:,} pages; the limit is {max_pages:,}")
    documents: list[Document] = []
    total = 0
    for number, page in enumerate(reader.pages, start=1):
        if time.monotonic() > deadline:
            raise FileRejected(
                f"{filename}: reading took over {MAX_PARSE_SECONDS:g} s (stopped at page {number})"
            )
        text = _clean(page.extract_text(extraction_mode="plain") or "")
        if len(text) > MAX_PAGE_CHARS:
            raise FileRejected(
                f"{filename}: page {number} yields over {MAX_PAGE_CHARS:,} characters of text; the file looks malformed"
            )
        total += len(text)
        if total > MAX_TOTAL_CHARS:
            raise FileRejected(f"{filename}: the PDF holds over {MAX_TOTAL_CHARS:,} characters of text")
        if text.strip():
            documents.append(Document(filename, number, text))
    if not documents:
        raise FileRejected(f"{filename}: the PDF has no text layer (scanned?); OCR it first")
    return documents, pages


def _clean(text: str) -> str:
    return text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")


def _looks_utf16(sample: bytes) -> str | None:
    """Spots BOM-less UTF-16 by its NUL bytes all falling on one side of each character."""
    even, odd = sample[0::2], sample[1::2]
    if len(odd) < 8:
        return None
    even_nul, odd_nul = even.count(0) / len(even), odd.count(0) / len(odd)
    if odd_nul > 0.3 and even_nul < 0.05:
        return "utf-16-le"
    if even_nul > 0.3 and odd_nul < 0.05:
        return "utf-16-be"
    return None


def _decode(data: bytes) -> str:
    """UTF-16/32 by BOM (or by NUL pattern), UTF-8, then cp1252 and latin-1, which never fails."""
    candidates = [enc for bom, enc in _BOMS if data.startswith(bom)][:1]
    # Before UTF-8, which would happily accept UTF-16's NUL bytes as characters.
    guessed = _looks_utf16(data[:_TEXT_SAMPLE])
    if guessed:
        candidates.append(guessed)
    candidates += ["utf-8", "cp1252"]
    for encoding in candidates:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _read_text(filename: str, data: bytes) -> Document:
    if data[:_PDF_HEADER_WINDOW].lstrip().startswith(b"%PDF-"):
        raise FileRejected(f"{filename}: the file is a PDF, not text; rename it to .pdf")
    kind = _sniff_binary(data)
    if kind:
        raise FileRejected(f"{filename}: the file is a {kind}, not text")
    text = _decode(data)
    sample = text[:_TEXT_SAMPLE]
    if len(_CONTROL.findall(sample)) > _BINARY_RATIO * len(sample):
        raise FileRejected(f"{filename}: the file looks binary, not text")
    text = _clean(text)
    if not text.strip():
        raise FileRejected(f"{filename}: the file contains no text")
    return Document(filename, None, text)


def collect_paths(
    input_files: list[Path] | None,
    input_dir: Path | None,
    *,
    recursive: bool,
    extensions: tuple[str, ...] = SUPPORTED_EXTENSIONS,
) -> list[Path]:
    """Files to load, sorted and de-duplicated.

    Named files are kept whatever their type, so the loader can say why one is refused; a directory
    contributes only files with a matching extension, skipping hidden files and folders.
    """
    wanted = tuple(e.lower() for e in extensions)
    found: dict[Path, None] = {p: None for p in input_files or ()}
    if input_dir is not None:
        if not input_dir.is_dir():
            raise FileRejected(f"{input_dir}: not a directory")
        for root, dirs, files in os.walk(input_dir):
            # os.walk does not follow directory symlinks, so a link loop cannot trap us.
            dirs[:] = [d for d in dirs if not d.startswith(".")] if recursive else []
            for name in files:
                if not name.startswith(".") and name.lower().endswith(wanted):
                    found[Path(root) / name] = None
    return sorted(found)
