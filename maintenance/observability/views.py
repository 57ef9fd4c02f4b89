"""/metrics: the Prometheus text of maintenance/observability/metrics.py.

Access: with MAINTENANCE_METRICS_TOKEN set, only `Authorization: Bearer <token>` (401
otherwise); without one, only in development (DEBUG): in production mode the endpoint is
off and answers 404 like any unknown URL. A database that cannot answer is a 503 with one
line, never a traceback."""

import hashlib
import hmac
import logging
import re

from django.conf import settings
from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import CONTENT_TYPE_LATEST

from maintenance.monitoring import error_line
from maintenance.observability.metrics import render

logger = logging.getLogger(__name__)

METHODS = ("GET", "HEAD")
TEXT = "text/plain; charset=utf-8"
# RFC 6750: "Bearer" 1*SP token; the scheme name is case-insensitive (RFC 9110).
BEARER = re.compile(r"bearer +(\S+) *", re.IGNORECASE | re.ASCII)
CHALLENGE = 'Bearer realm="tg-maintenance metrics"'


def _digest(text: str) -> bytes:
    # Hashing first compares equal lengths whatever was sent; surrogatepass encodes any
    # str a header or the environment can hold, where compare_digest on str would raise
    # for non-ASCII text.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def bearer_matches(request: HttpRequest, token: str) -> bool:
    match = BEARER.fullmatch(request.META.get("HTTP_AUTHORIZATION", ""))
    return match is not None and hmac.compare_digest(_digest(match.group(1)), _digest(token))


def _unauthorized() -> HttpResponse:
    response = HttpResponse("unauthorized: send Authorization: Bearer <token>\n", status=401)
    response["Content-Type"] = TEXT
    response["WWW-Authenticate"] = CHALLENGE
    return response


def _unavailable(error: DatabaseError) -> HttpResponse:
    logger.warning("/metrics: the database did not answer: %s", error_line(error))
    # The error's own text may name hosts and users: the class name is enough here.
    line = f"metrics unavailable: the database did not answer ({type(error).__name__})\n"
    return HttpResponse(line, status=503, content_type=TEXT)


@csrf_exempt  # read-only; so that a POST is answered 405 by this view, not 403 by CSRF
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.MAINTENANCE_METRICS_TOKEN
    if not token and not settings.DEBUG:
        raise Http404("metrics are off: set MAINTENANCE_METRICS_TOKEN")
    if request.method not in METHODS:
        return HttpResponseNotAllowed(METHODS)
    if token and not bearer_matches(request, token):
        return _unauthorized()
    try:
        body = render()
    except DatabaseError as error:
        return _unavailable(error)
    response = HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
    if request.method == "HEAD":
        response.content = b""  # same status and headers, no body
    return response
