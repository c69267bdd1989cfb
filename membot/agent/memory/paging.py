"""Paged search results, described truthfully to the model ("results 6-10 of 37")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

PAGE_SIZE = 5


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    total: int
    page: int  # 0-based, as the functions take it
    page_size: int = PAGE_SIZE

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))

    def describe(self, what: str) -> str:
        if self.total == 0:
            return f"No {what} found."
        if not self.items:
            return f"No {what} on page {self.page}: there are {self.total} in all, on pages 0-{self.pages - 1}."
        first = self.page * self.page_size + 1
        last = first + len(self.items) - 1
        more = f"; ask for page {self.page + 1} for more" if self.page + 1 < self.pages else ""
        return f"Showing {what} {first}-{last} of {self.total} (page {self.page} of pages 0-{self.pages - 1}{more})."


def check_page(page: int | None) -> int:
    if page is None:
        return 0
    if page < 0:
        raise ValueError("page must be 0 or more (pages are numbered from 0)")
    return page
