"""Structured logging: one JSON object per line (or plain text), with ``extra=`` fields included.

Records go to stderr, where the CLI's tqdm progress bars are drawn too; :class:`ConsoleHandler` writes
each record on a line of its own while bars are live (see there). Python ``warnings`` become records of
the ``py.warnings`` logger, and the libraries that give their logger a console handler of their own log
through the root's handler instead (``models.library_logs``): every line on stderr is formatted."""

from __future__ import annotations

import json
import logging
import sys
import time

from tqdm import tqdm

from models.library_logs import route_library_logs

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage().rstrip("\n"),  # a captured warning ends with a newline
        }
        payload.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    """``LEVEL logger: message key=value ...``: the ``extra=`` fields too (a plain formatter dropped them,
    so "head skipped" said neither which head nor why)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().rstrip("\n")  # a captured warning ends with a newline
        line = f"{record.levelname} {record.name}: {message}"
        extra = {k: v for k, v in record.__dict__.items() if k not in _RESERVED}
        if extra:
            line += " " + " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in extra.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class ConsoleHandler(logging.StreamHandler):
    """A stream handler that cooperates with live tqdm progress bars (any ``tqdm.tqdm``, wherever made).

    A bar redraws itself with ``\\r`` and no newline, so a record written plainly was glued to the bar's
    text (``embedding:  33%|###  | 100/300{"ts": ...``): the JSON line no longer parsed. While a bar is
    live a record is written under tqdm's lock instead: on a terminal with ``tqdm.write`` (bars cleared,
    the record written, bars redrawn below it); elsewhere (a file, a pipe, ``docker logs``), where the
    bar's characters stay, it starts with a newline when a bar draws on the same stream, so every
    record is a whole line of its own. Without live bars it is a plain ``StreamHandler``."""

    def emit(self, record: logging.LogRecord) -> None:
        live = getattr(tqdm, "_instances", None)  # tqdm's registry of live (not disabled, not closed) bars
        if not live:
            super().emit(record)
            return
        try:
            msg = self.format(record)
            isatty = getattr(self.stream, "isatty", None)
            if isatty is not None and isatty():
                tqdm.write(msg, file=self.stream)
            else:
                with tqdm.get_lock():
                    drawn = any(getattr(bar, "fp", None) == self.stream for bar in list(live))
                    self.stream.write(f"\n{msg}\n" if drawn else f"{msg}\n")
            self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def configure_logging(level: str = "INFO", json_lines: bool = True) -> None:
    """The root's handler on stderr (JSON lines or text) at ``level``, Python warnings and the
    libraries' loggers routed to it."""
    handler = ConsoleHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # warnings.warn(...) -> a WARNING record of "py.warnings"
    route_library_logs()
