"""What BTS mail tells the SOAP poller: one ``source_facts`` row per (bug, mail verb).

The mail parser attaches these facts to its events; the store writes them when the
event is first committed (never for a redelivered copy), and the poller consumes the
fact when it sees the same change in ``get_status``, so the change is reported once.
"""

from __future__ import annotations

#: ``source_facts`` namespace of the facts BTS mail records (subject: the bug number).
NAMESPACE = "debbugs.mail"
#: Mail event verb -> the poller change it already reports.
COVERS = {"report": "new", "close": "close", "forward": "forwarded",
          "submitter-change": "submitter"}


def of_mail(bug: int, verb: str) -> tuple[tuple[str, str, str], ...]:
    """The facts a mail event about ``bug`` records: only verbs the poller would repeat."""
    return ((NAMESPACE, str(bug), verb),) if verb in COVERS else ()
