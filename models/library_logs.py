"""The loggers of libraries that print on their own, routed to the application's log handler."""

from __future__ import annotations

import logging

# transformers and rdkit give their top logger a plain stderr handler when imported and stop it
# propagating; huggingface_hub (imported by transformers) adds one too and still propagates, so its
# records came out twice. Their lines were unformatted ("Some weights ...") amid JSON log lines.
# torch's loggers are left to torch._logging (TORCH_LOGS), which turns their propagation off on purpose.
LIBRARY_LOGGERS = ("transformers", "huggingface_hub", "rdkit")


def route_library_logs() -> None:
    """Remove the plain stderr handlers of :data:`LIBRARY_LOGGERS` and let their records propagate to the
    root logger's handler. Their levels stay the libraries' own, so nothing is silenced. Called by
    ``app.logging_setup.configure_logging`` and right after the modules that import transformers do so
    (in the CLI that happens inside a command, after logging was configured)."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(handler)
        logger.propagate = True
