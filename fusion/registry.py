"""The head registry: a directory with one sub-directory per head (``<root>/<name>/card.json`` ...).

``HeadRegistry(None)`` serves the default heads shipped in the package (``fusion/default_heads``);
the app passes ``settings.heads_dir`` (``MOLFUSION_HEADS_DIR``). Loaded heads are cached per name.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from fusion.card import CARD_FILE
from fusion.head import Head, load_head

log = logging.getLogger(__name__)

DEFAULT_HEADS_DIR = Path(__file__).resolve().parent / "default_heads"


class UnknownHeadError(KeyError):
    """Raised for a head name the registry does not hold; the message names the head."""

    def __init__(self, name: str, available: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.available = available

    def __str__(self) -> str:
        return f"unknown head {self.name!r}; available heads: {self.available}"


class HeadRegistry:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else DEFAULT_HEADS_DIR
        self._cache: dict[str, Head] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and (p / CARD_FILE).is_file())

    def path(self, name: str) -> Path:
        if not isinstance(name, str) or name not in self.names():  # also rules out paths like '../x'
            raise UnknownHeadError(str(name), self.names())
        return self.root / name

    def card(self, name: str) -> dict:
        return json.loads((self.path(name) / CARD_FILE).read_text())

    def load(self, name: str) -> Head:
        with self._lock:
            head = self._cache.get(name)
            if head is None:
                head = load_head(self.path(name))
                self._cache[name] = head
                log.info(
                    "head loaded", extra={"head": name, "tasks": len(head.tasks), "root": str(self.root)}
                )
            return head

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
