"""How a ``progress`` setting maps onto a tqdm bar, for every long loop of the package."""

from __future__ import annotations


def bar_disable(progress: bool | None) -> bool | None:
    """tqdm's ``disable`` for a ``progress`` value: ``None`` lets tqdm turn the bar off when its stream is
    not a terminal (files, pipes, ``docker logs``); ``True``/``False`` force it on or off."""
    return None if progress is None else not progress
