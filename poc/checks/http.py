"""HTTP APIs and pages open to anyone: directory listings, Elasticsearch, Docker."""

import json
import re

from poc.checks.base import Check, CheckError, HttpResponse, Target, Verdict, http_get
from poc.checks.registry import check

HTTP_SERVICES = ("http", "http-alt", "http-proxy")
# Apache, nginx, lighttpd ("Index of /"), Python's http.server ("Directory listing for /").
LISTING = re.compile(rb"<title>\s*(Index of /|Directory listing for /)", re.IGNORECASE)
INDICES_SHOWN = 20


def _json(response: HttpResponse) -> dict:
    try:
        data = json.loads(response.body.decode("utf-8", "replace"))
    except ValueError:
        raise CheckError(f"HTTP {response.status}: not JSON") from None
    if not isinstance(data, dict):
        raise CheckError(f"HTTP {response.status}: not a JSON object")
    return data


def _refused(response: HttpResponse) -> str:
    auth = response.headers.get("www-authenticate", "")
    return f"HTTP {response.status}" + (f" (WWW-Authenticate: {auth})" if auth else "")


@check(
    name="http_dir_listing",
    title="HTTP server lists a directory",
    severity="medium",
    services=HTTP_SERVICES,
    ports=(80, 8000, 8080, 8888),
)
def http_dir_listing(spec: Check, target: Target) -> Verdict:
    response = http_get(target, "/")
    if response.status == 200 and LISTING.search(response.body[:4096]):
        page = response.body[:1500].decode("utf-8", "replace")
        return spec.verdict(True, f"GET / -> 200\n{page}")
    return spec.verdict(False, f"GET / -> HTTP {response.status}, no directory listing")


@check(
    name="elasticsearch_open",
    title="Elasticsearch answers without authentication",
    severity="high",
    services=("elasticsearch", "wap-wsp"),
    ports=(9200,),
)
def elasticsearch_open(spec: Check, target: Target) -> Verdict:
    root = http_get(target, "/")
    if root.status in (401, 403):
        return spec.verdict(False, f"GET / -> {_refused(root)}")
    if root.status != 200:
        return spec.verdict(False, f"GET / -> HTTP {root.status}")
    info = _json(root)
    version = info["version"].get("number") if isinstance(info.get("version"), dict) else None
    if not version or "cluster_name" not in info:
        return spec.verdict(False, "GET / -> 200, not Elasticsearch")
    evidence = f"GET / -> 200: cluster {info['cluster_name']!r}, version {version}"
    cat = http_get(target, "/_cat/indices?format=json&h=index,docs.count")
    if cat.status == 200:
        try:
            rows = json.loads(cat.body.decode("utf-8", "replace"))
        except ValueError:
            rows = []
        names = [str(r.get("index")) for r in rows if isinstance(r, dict)][:INDICES_SHOWN]
        evidence += f"\nGET /_cat/indices -> {len(rows)} indices: {', '.join(names)}"
    return spec.verdict(True, evidence)


@check(
    name="docker_api_open",
    title="Docker Engine API without TLS or authentication",
    severity="critical",
    services=("docker",),
    ports=(2375,),
)
def docker_api_open(spec: Check, target: Target) -> Verdict:
    response = http_get(target, "/version")
    if response.status != 200:
        return spec.verdict(False, f"GET /version -> {_refused(response)}")
    info = _json(response)
    if "ApiVersion" not in info:
        return spec.verdict(False, "GET /version -> 200, not the Docker API")
    keys = ("Version", "ApiVersion", "Os", "KernelVersion")
    shown = ", ".join(f"{k} {info[k]}" for k in keys if k in info)
    return spec.verdict(True, f"GET /version -> 200: {shown}")
