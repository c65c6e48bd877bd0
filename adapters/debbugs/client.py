"""The debbugs SOAP client: zeep builds and sends the calls, soaplite reads the answers.

zeep works from busgate's own WSDL (``conf/debbugs.wsdl``, debbugs publishes
none). It renders the rpc/encoded request; a small zeep plugin adds the SOAP
section 5 typing SOAP::Lite needs to see a list as a list (``xsi:type=
"soapenc:Array"``, ``soapenc:arrayType``, typed items). Responses are taken raw
and decoded by :mod:`adapters.debbugs.soaplite`, because their shapes
(``apachens:Map``, ``s-gensym`` names) cannot be bound by a schema.

Every failure (connection refused, timeout, HTTP error, fault, malformed or
truncated XML, an answer of the wrong shape) raises :class:`DebbugsUnavailable`,
a :class:`~gateway.errors.TransientError`: the poll is repeated later, and
nothing read in a failed poll is used.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import requests
import urllib3
from lxml import etree
from zeep import Client, Plugin, Settings
from zeep.transports import Transport

from adapters.debbugs import soaplite
from adapters.debbugs.deadline import Deadline, DeadlineAdapter
from gateway.errors import TransientError

log = logging.getLogger(__name__)

CONF = Path(__file__).resolve().parent.parent.parent / "conf"
WSDL = CONF / "debbugs.wsdl"
SOAP_ENCODING_XSD = CONF / "soap-encoding.xsd"
#: debbugs' own get_status batching limit (python-debianbts uses the same).
MAX_BATCH = 500
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XSD = "http://www.w3.org/2001/XMLSchema"


class DebbugsUnavailable(TransientError):
    """One SOAP call failed; the poll that made it commits nothing."""

    def __init__(self, message: str, *, fault: bool = False, final: bool = False):
        super().__init__(message)
        #: The server answered with a SOAP Fault (asking again at once will not help).
        self.fault = fault
        #: Asking again within this poll will not help (a fault, a deadline or size cap hit).
        self.final = final or fault


class _LocalSchemas(Transport):
    """zeep transport that never fetches schemas and bounds each answer in size and time."""

    def __init__(self, timeout: float, max_bytes: int):
        super().__init__(timeout=timeout, operation_timeout=timeout)
        self.deadline_s = timeout
        self.max_bytes = max_bytes
        self.session.headers["User-Agent"] = "busgate-debbugs"
        adapter = DeadlineAdapter()
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def load(self, url: str) -> bytes:
        if url.rstrip("/") == soaplite.SOAP_ENC.rstrip("/"):
            return SOAP_ENCODING_XSD.read_bytes()
        if "://" in url and not url.startswith("file://"):
            raise DebbugsUnavailable(f"the debbugs WSDL may not load remote documents ({url})")
        return super().load(url)

    def post(self, address: str, message: bytes, headers: dict[str, str]) -> requests.Response:
        """POST with a wall-clock deadline over the whole exchange (connect, status line,
        headers, body: a server dripping bytes cannot stretch it) and a size cap checked
        against Content-Length before reading and while reading."""
        with Deadline(self.deadline_s) as deadline:
            try:
                return self._post(address, message, headers, deadline)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
                if deadline.expired:
                    raise self._too_slow(address) from None
                raise

    def _post(self, address: str, message: bytes, headers: dict[str, str],
              deadline: Deadline) -> requests.Response:
        response = self.session.post(address, data=message, headers=headers,
                                     timeout=self.operation_timeout, stream=True)
        chunks, size = [], 0
        try:
            declared = response.headers.get("Content-Length", "")
            if declared.strip().isdigit() and int(declared) > self.max_bytes:
                raise DebbugsUnavailable(
                    f"answer from {address} exceeds {self.max_bytes} bytes (Content-Length "
                    f"{int(declared)}); refused unread (debbugs.max_response_bytes)", final=True)
            for chunk in response.iter_content(65536):
                size += len(chunk)
                if size > self.max_bytes:
                    raise DebbugsUnavailable(
                        f"answer from {address} exceeds {self.max_bytes} bytes "
                        "(debbugs.max_response_bytes)", final=True)
                if deadline.remaining() < 0:
                    raise self._too_slow(address)
                chunks.append(chunk)
        finally:
            response.close()
        if deadline.expired:
            raise self._too_slow(address)
        response._content = b"".join(chunks)
        return response

    def _too_slow(self, address: str) -> DebbugsUnavailable:
        return DebbugsUnavailable(
            f"no complete answer from {address} within the timeout ({self.deadline_s:g} s, "
            "debbugs.timeout: a deadline for the whole answer)", final=True)


class _SoapEncoding(Plugin):
    """Type request parameters the way SOAP::Lite expects rpc/encoded values."""

    def egress(self, envelope: etree._Element, http_headers: dict[str, str],
               operation: Any, binding_options: Any) -> tuple[etree._Element, dict[str, str]]:
        body = envelope.find(f"{{{soaplite.SOAP_ENV}}}Body")
        call = body[0] if body is not None and len(body) else None
        if call is None:
            return envelope, http_headers
        call.set(f"{{{soaplite.SOAP_ENV}}}encodingStyle", soaplite.SOAP_ENC)
        for param in call:
            items = list(param)
            if items:
                kinds = {_scalar_type(item.text) for item in items}
                kind = kinds.pop() if len(kinds) == 1 else "xsd:anyType"
                param.set(f"{{{XSI}}}type", "soapenc:Array")
                param.set(f"{{{soaplite.SOAP_ENC}}}arrayType", f"{kind}[{len(items)}]")
                for item in items:
                    item.set(f"{{{XSI}}}type", _scalar_type(item.text))
            else:
                param.set(f"{{{XSI}}}type", _scalar_type(param.text))
        # xsd/soapenc prefixes are used inside attribute values: keep their declarations
        etree.cleanup_namespaces(envelope, top_nsmap={
            "xsi": XSI, "xsd": XSD, "soapenc": soaplite.SOAP_ENC},
            keep_ns_prefixes=["xsi", "xsd", "soapenc"])
        http_headers["SOAPAction"] = '""'
        return envelope, http_headers


def _scalar_type(text: str | None) -> str:
    value = (text or "").strip()
    return "xsd:int" if value.isdigit() and len(value) < 10 else "xsd:string"


class DebbugsClient:
    """The read-only debbugs calls busgate makes, each returning plain Python values."""

    def __init__(self, url: str, *, timeout: float = 30.0, max_bytes: int = 64 * 2**20,
                 retries: int = 0, retry_delay: float = 0.5, wsdl: str | Path = WSDL):
        if not url:
            raise ValueError("no debbugs SOAP URL configured (debbugs.url)")
        self.url = url
        self.retries = max(0, retries)
        self.retry_delay = retry_delay
        self.calls = 0
        transport = _LocalSchemas(timeout, max_bytes)
        client = Client(str(wsdl), transport=transport, plugins=[_SoapEncoding()],
                        settings=Settings(raw_response=True, strict=False))
        self._service = client.create_service("{urn:Debbugs/SOAP}DebbugsBinding", url)

    def newest_bugs(self, amount: int) -> list[int]:
        return _ints(self._call("newest_bugs", amount), "newest_bugs")

    def get_bugs(self, query: Sequence[tuple[str, str]]) -> list[int]:
        """Bug numbers matching key/value pairs (a repeated key ORs its values)."""
        flat = [part for pair in query for part in pair]
        return _ints(self._call("get_bugs", {"item": flat}), "get_bugs")

    def get_status(self, bugs: Iterable[int], batch: int = MAX_BATCH) -> dict[int, dict[str, Any]]:
        """Status maps of the bugs that exist, ``batch`` (<= 500) bugs per call."""
        result: dict[int, dict[str, Any]] = {}
        for chunk in _chunks(sorted(set(bugs)), min(batch, MAX_BATCH)):
            answer = self._call("get_status", {"item": chunk})
            if answer is None or answer == "" or answer == []:
                continue  # none of these bugs exists
            if not isinstance(answer, dict):
                raise DebbugsUnavailable(f"get_status answered a {type(answer).__name__}, "
                                         "not a map of bug statuses")
            for key, value in answer.items():
                try:
                    number = int(key)
                except (TypeError, ValueError):
                    raise DebbugsUnavailable(f"get_status answered bug key {key!r}") from None
                if not isinstance(value, dict):
                    raise DebbugsUnavailable(f"get_status answered no status map for {number}")
                result[number] = value
        return result

    def get_bug_log(self, bug: int) -> list[dict[str, Any]]:
        answer = self._call("get_bug_log", bug)
        if not isinstance(answer, list):
            raise DebbugsUnavailable(f"get_bug_log {bug} answered {type(answer).__name__}")
        return [entry for entry in answer if isinstance(entry, dict)]

    def _call(self, method: str, *args: Any) -> Any:
        """One call, tried again ``retries`` times after a transport failure (not a fault)."""
        for attempt in range(self.retries + 1):
            try:
                return self._call_once(method, *args)
            except DebbugsUnavailable as exc:
                if exc.final or attempt == self.retries:
                    raise
                log.warning("debbugs %s failed (%s); trying again", method, exc)
                time.sleep(self.retry_delay * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _call_once(self, method: str, *args: Any) -> Any:
        self.calls += 1
        started = time.monotonic()
        try:
            response = getattr(self._service, method)(*args)
        except DebbugsUnavailable as exc:  # raised by the transport, which knows no method
            raise DebbugsUnavailable(f"{method}: {exc}", fault=exc.fault,
                                     final=exc.final) from None
        except requests.Timeout:
            raise DebbugsUnavailable(f"{method}: no answer from {self.url} within the "
                                     "timeout") from None
        except requests.RequestException as exc:
            raise DebbugsUnavailable(f"{method}: cannot talk to {self.url}: "
                                     f"{type(exc).__name__}: {exc}") from None
        try:
            value = soaplite.parse_response(response.content)
        except soaplite.SoapFault as exc:
            raise DebbugsUnavailable(f"{method}: {exc} (HTTP {response.status_code})",
                                     fault=True) from None
        except soaplite.SoapError as exc:
            raise DebbugsUnavailable(f"{method}: HTTP {response.status_code} from {self.url}: "
                                     f"{exc}") from None
        if response.status_code != 200:
            raise DebbugsUnavailable(f"{method}: HTTP {response.status_code} from {self.url}")
        log.debug("debbugs %s answered in %.3f s", method, time.monotonic() - started)
        return value


def _ints(value: Any, method: str) -> list[int]:
    if value is None or value == "":
        return []
    if not isinstance(value, list):
        value = [value]
    try:
        return [int(v) for v in value]
    except (TypeError, ValueError):
        raise DebbugsUnavailable(f"{method} answered something other than bug numbers") from None


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])
