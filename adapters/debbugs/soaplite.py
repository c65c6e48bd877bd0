"""Decode SOAP::Lite responses (the one place that reads debbugs' response XML).

debbugs answers in rpc/encoded SOAP 1.1 as Perl's SOAP::Lite writes it: hashes
as ``apachens:Map`` (``<item><key/><value/></item>``) or as untyped structs
whose child names are the keys, lists as ``soapenc:Array``, non-ASCII strings as
``xsd:base64Binary`` (UTF-8 inside), numbers as ``xsd:int``, element names like
``s-gensym3`` for unnamed values, 1999 or 2001 XML Schema namespaces, and
``id``/``href`` multi-references. No static schema binds that, so the WSDL
declares the results ``xsd:anyType`` and this module turns the raw envelope into
plain Python values (dict, list, str, int, float, bool, None).

Hostile input is refused, never half-read: a DTD or entity declaration, an
envelope without a Body, or XML that does not parse raises :class:`SoapError`;
a SOAP Fault raises :class:`SoapFault` with its code and string.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from lxml import etree

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP_ENC = "http://schemas.xmlsoap.org/soap/encoding/"
XSI_NAMESPACES = (
    "http://www.w3.org/1999/XMLSchema-instance",
    "http://www.w3.org/2000/10/XMLSchema-instance",
    "http://www.w3.org/2001/XMLSchema-instance",
)
#: Nesting deeper than this is not a debbugs answer (and would exhaust the stack).
MAX_DEPTH = 64

_INT_TYPES = {"int", "integer", "long", "short", "byte", "nonNegativeInteger",
              "positiveInteger", "unsignedInt", "unsignedLong", "unsignedShort"}
_FLOAT_TYPES = {"float", "double", "decimal"}

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                          dtd_validation=False, huge_tree=False, remove_comments=True,
                          remove_pis=True)


class SoapError(ValueError):
    """The response is not a SOAP envelope this decoder can read completely."""


class SoapFault(SoapError):
    """The server answered with a SOAP Fault."""

    def __init__(self, code: str, string: str):
        self.code = code
        self.string = string
        super().__init__(f"SOAP fault {code}: {string}")


def parse_response(content: bytes) -> Any:
    """The decoded result value of one rpc response (``None`` when there is none)."""
    body = _body(content)
    children = list(body)
    if not children:
        raise SoapError("SOAP Body is empty")
    first = children[0]
    if etree.QName(first).namespace == SOAP_ENV and etree.QName(first).localname == "Fault":
        raise _fault(first)
    response = first
    results = list(response)
    if not results:
        return None
    return Decoder(body).decode(results[0])


def _body(content: bytes) -> etree._Element:
    if not content or not content.strip():
        raise SoapError("empty response")
    try:
        root = etree.fromstring(content, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise SoapError(f"malformed XML in response: {exc}") from None
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise SoapError("response carries a DTD; refused")
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        raise SoapError(f"response root is {etree.QName(root).localname!r}, not a SOAP Envelope")
    body = root.find(f"{{{SOAP_ENV}}}Body")
    if body is None:
        raise SoapError("SOAP Envelope has no Body")
    return body


def _fault(element: etree._Element) -> SoapFault:
    code = element.findtext("faultcode") or element.findtext(f"{{{SOAP_ENV}}}faultcode") or "?"
    text = element.findtext("faultstring") or element.findtext(f"{{{SOAP_ENV}}}faultstring") or ""
    return SoapFault(code.strip(), text.strip())


class Decoder:
    """Decodes values under one Body (resolving ``href="#id"`` multi-references)."""

    def __init__(self, body: etree._Element):
        self._body = body
        self._ids: dict[str, etree._Element] | None = None

    def decode(self, element: etree._Element, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise SoapError(f"values nested deeper than {MAX_DEPTH} levels")
        href = element.get("href")
        if href is not None:
            element = self._target(href)
        if (_xsi(element, "nil") or _xsi(element, "null")) in ("true", "1"):  # 2001 / 1999
            return None
        kind = _type(element)
        if kind == "Map":
            return self._map(element, depth)
        if kind == "Array" or element.get(f"{{{SOAP_ENC}}}arrayType") is not None \
                or element.tag == f"{{{SOAP_ENC}}}Array":
            return [self.decode(child, depth + 1) for child in element]
        if len(element):
            return self._struct(element, depth)
        text = element.text or ""
        if kind == "base64Binary" or kind == "base64":
            return _base64(text)
        if kind in _INT_TYPES:
            try:
                return int(text.strip())
            except ValueError:
                raise SoapError(f"<{_name(element)}> is typed {kind} but holds {text[:40]!r}") \
                    from None
        if kind in _FLOAT_TYPES:
            try:
                return float(text.strip())
            except ValueError:
                raise SoapError(f"<{_name(element)}> is typed {kind} but holds {text[:40]!r}") \
                    from None
        if kind == "boolean":
            return text.strip() in ("1", "true")
        return text

    def _map(self, element: etree._Element, depth: int) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for item in element:
            key_el = _child(item, "key")
            value_el = _child(item, "value")
            if key_el is None:
                raise SoapError(f"apachens:Map item in <{_name(element)}> has no <key>")
            key = self.decode(key_el, depth + 1)
            if isinstance(key, dict | list):
                raise SoapError(f"apachens:Map in <{_name(element)}> has a non-scalar key")
            result[key] = None if value_el is None else self.decode(value_el, depth + 1)
        return result

    def _struct(self, element: etree._Element, depth: int) -> dict[str, Any]:
        """Untyped element with children: a hash; a repeated child name is a list."""
        values: dict[str, list[Any]] = {}
        for child in element:
            values.setdefault(etree.QName(child).localname, []).append(
                self.decode(child, depth + 1))
        return {k: v[0] if len(v) == 1 else v for k, v in values.items()}

    def _target(self, href: str) -> etree._Element:
        if not href.startswith("#"):
            raise SoapError(f"external href {href[:60]!r} refused")
        if self._ids is None:
            self._ids = {el.get("id"): el for el in self._body.iter() if el.get("id")}
        target = self._ids.get(href[1:])
        if target is None:
            raise SoapError(f"href {href[:60]!r} points nowhere")
        if target.get("href") is not None:
            raise SoapError(f"href {href[:60]!r} points at another reference")
        return target


def _child(element: etree._Element, name: str) -> etree._Element | None:
    for child in element:
        if etree.QName(child).localname == name:
            return child
    return None


def _xsi(element: etree._Element, attr: str) -> str | None:
    for ns in XSI_NAMESPACES:
        value = element.get(f"{{{ns}}}{attr}")
        if value is not None:
            return value
    return None


def _type(element: etree._Element) -> str | None:
    """Local name of the xsi:type (``xsd:int`` -> ``int``, ``apachens:Map`` -> ``Map``)."""
    value = _xsi(element, "type")
    if value is None:
        return None
    return value.rpartition(":")[2].strip()


def _name(element: etree._Element) -> str:
    return str(etree.QName(element).localname)[:60]


def _base64(text: str) -> str:
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise SoapError(f"bad base64Binary value {text[:40]!r}") from None
    return data.decode("utf-8", errors="replace")
