"""POST /api/agents/report: thin; the checks are in schema, selectors and services."""

import logging

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from agents.diff import AddressRefused
from agents.schema import SchemaError, report_parse
from agents.selectors import agent_for_token
from agents.services.reports import StaleReport, report_ingest
from agents.throttle import report_throttle

log = logging.getLogger(__name__)


def _error(status: int, message: str, field: str | None = None, **headers) -> JsonResponse:
    body = {"error": message}
    if field:
        body["field"] = field
    response = JsonResponse(body, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _token(request: HttpRequest) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _body(request: HttpRequest, limit: int) -> bytes:
    """The body, read up to one byte past the limit (to notice a longer one).

    A chunked body comes without Content-Length, and Django then reads nothing from it;
    a server that de-chunks and ends the input for us (gunicorn: wsgi.input_terminated)
    lets the view read it up to the limit instead.
    """
    stream = request
    if not request.META.get("CONTENT_LENGTH") and request.META.get("wsgi.input_terminated"):
        stream = request.META["wsgi.input"]
    parts, size = [], 0
    while size <= limit:
        part = stream.read(limit + 1 - size)
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


@csrf_exempt
@require_POST
def report(request: HttpRequest) -> JsonResponse:
    limit = settings.PORTMON_AGENT_MAX_BODY
    # Answered from the header, before a byte of the body is read. (request.body would
    # raise Django's own DATA_UPLOAD_MAX_MEMORY_SIZE check, which answers 400.)
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return _error(400, "bad Content-Length")
    if length > limit:
        return _error(413, f"report larger than {limit} bytes")
    agent = agent_for_token(_token(request))
    if agent is None:
        return _error(401, "unknown, wrong or revoked token", WWW_Authenticate="Bearer")
    retry = report_throttle(agent_id=agent.agent_id)
    if retry:
        return _error(429, "too many reports", Retry_After=str(retry))
    if request.content_type != "application/json":
        return _error(415, "Content-Type must be application/json")
    body = _body(request, limit)
    if len(body) > limit:
        return _error(413, f"report larger than {limit} bytes")
    try:
        parsed = report_parse(body)
        result = report_ingest(
            agent_id=agent.agent_id, report=parsed, now=timezone.now(), hosts=agent
        )
    except SchemaError as exc:
        return _error(400, exc.message, exc.field)
    except AddressRefused as exc:
        return _error(403, f"{exc.address} is not an address of this agent's host", exc.field)
    except StaleReport as exc:
        return _error(409, str(exc), exc.field)
    if result.duplicate:
        return JsonResponse({"status": "duplicate"})
    log.debug("agent %s: report %s, %d sockets", agent.name, parsed.report_id, result.sockets)
    return JsonResponse({"status": "accepted", "events": result.events})
