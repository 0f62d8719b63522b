"""How the commands log: plain lines, or one JSON object a line (``--log-json``) that says the job, task,
agent and host it is about where they apply, for log collectors to filter on."""

from __future__ import annotations

import json
import logging
import sys

#: what a log record may say it is about (``extra=`` of its call, or the process's own: an agent's id and host):
#: fields of a --log-json line where they apply
LOG_FIELDS = ("job", "task", "agent", "host")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the job, task, agent and host it is about
    where they apply; an exception's type and traceback when one is logged."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": record.created, "level": record.levelname, "logger": record.name,
                "message": record.getMessage()}
        line.update({k: str(getattr(record, k)) for k in LOG_FIELDS if getattr(record, k, None) is not None})
        if record.exc_info and record.exc_info[0] is not None:
            line["exc_type"] = record.exc_info[0].__name__
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line)


class _ProcessFields(logging.Filter):
    """Give every record of this process the fields it does not carry itself (an agent's id and host)."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__()
        self.fields = fields

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self.fields.items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


def log_fields(**fields: str) -> None:
    """Fields every log record of this process carries unless it says otherwise (an agent: its id and host)."""
    for handler in logging.getLogger("taylorism_zmq").handlers:
        handler.addFilter(_ProcessFields({k: v for k, v in fields.items() if k in LOG_FIELDS}))


def setup_logging(level: str, log_file: str | None = None, as_json: bool = False) -> None:
    """Log taylorism_zmq's records at *level* to *log_file* (else stderr), as JSON lines with *as_json*."""
    # footprints/bronx may have put their own handler on the root logger: ours is set explicitly
    logger = logging.getLogger("taylorism_zmq")
    logger.setLevel(level.upper())
    handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else
                         logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logger.handlers[:] = [handler]
    logger.propagate = False
