"""wanna-build states and their topic tokens (``Needs-Build`` -> ``needs-build``)."""

from __future__ import annotations

import re

#: Every state wanna-build checks on import, plus the pseudo-state it logs for a row it
#: deletes (``deleted``); ``Failed-Removed``/``Dep-Wait-Removed`` are what older versions
#: logged for sources that left the archive.
KNOWN = (
    "Needs-Build", "Building", "Built", "Build-Attempted", "Uploaded", "Installed",
    "Dep-Wait", "Dep-Wait-Removed", "BD-Uninstallable", "Failed", "Failed-Removed",
    "Not-For-Us", "Auto-Not-For-Us", "deleted",
)
#: Event token of a row whose state is NULL or has no letter or digit.
UNKNOWN = "unknown"
#: What wanna-build writes as ``prevstate`` when a package had no state before.
NO_STATE = "(none)"
MAX_SLUG = 48

_NON_TOKEN = re.compile(r"[^a-z0-9]+")
_SLUGS = {state: state.lower() for state in KNOWN}


def slug(state: str | None) -> str:
    """The topic token for ``state``: lowercase, runs of other characters become ``-``.

    An unknown state still gets a token (nothing is dropped); a state with nothing
    usable (NULL, empty, only punctuation) becomes :data:`UNKNOWN`.
    """
    if state is None:
        return UNKNOWN
    known = _SLUGS.get(state)
    if known is not None:
        return known
    token = _NON_TOKEN.sub("-", state.lower()).strip("-")[:MAX_SLUG].rstrip("-")
    return token or UNKNOWN


def is_known(state: str | None) -> bool:
    return state in _SLUGS
