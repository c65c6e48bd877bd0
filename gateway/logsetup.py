"""How ``busgate run`` logs: text lines for a terminal, JSON lines for a log pipeline
(journald, Loki, Elasticsearch read one object per line without a parser), or the
operator's own logging configuration file."""

from __future__ import annotations

import json
import logging
import logging.config
import time
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Longest message kept in one JSON line, in characters (a log line must stay a line a
#: collector accepts; the rest is cut and said so).
MAX_JSON_MESSAGE = 16 * 1024


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (RFC 3339, UTC), ``level``, ``logger``,
    ``message``, and ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if len(message) > MAX_JSON_MESSAGE:
            message = message[:MAX_JSON_MESSAGE] + f" [cut: {len(message)} chars]"
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": message,
            "pid": record.process,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(fmt: str, config_file: str = "", verbose: bool = False) -> None:
    """Set up the root logger: ``config_file`` when given, else ``fmt`` (text or json)
    on stderr. Raises ConfigError for a file that cannot be used."""
    if config_file:
        _from_file(Path(config_file))
        if verbose:
            logging.getLogger().setLevel(logging.DEBUG)
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def _from_file(path: Path) -> None:
    try:
        if path.suffix in (".json", ".toml"):
            text = path.read_text()
            if path.suffix == ".json":
                conf = json.loads(text)
            else:
                import tomllib

                conf = tomllib.loads(text)
            logging.config.dictConfig(conf)
        else:
            if not path.is_file():
                raise FileNotFoundError(f"no such file: {path}")
            logging.config.fileConfig(path, disable_existing_loggers=False)
    except Exception as exc:  # a bad logging file must be named, not a traceback
        raise ConfigError(f"log.config {path}: {exc}") from None
