"""Schema post-processing: the error answers every operation can give, documented.

drf-spectacular documents the success answer only; a client (or schemathesis) then meets
400, 401, 403, 404, 409 and 429 answers the schema never mentioned.
"""

ERROR = {
    "type": "object",
    "description": '{"detail": "why"}, or {"field": ["why", ...]} for a refused body',
    "properties": {"detail": {}},
    "additionalProperties": True,
}
TOO_LONG = {
    "description": "the URL is longer than the server takes",
    "content": {"text/html": {"schema": {"type": "string"}}},
}
# Operations that answer 409 (a refused state change, a busy policy).
CONFLICTS = {"events_transition_create", "policies_run_create"}


def error_responses(result, generator, request, public):
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            answers = {
                "401": "no or a bad login or token",
                "403": "the role is missing",
                "429": "this address is locked out after failed logins or tokens",
            }
            if "{" in path:
                answers["404"] = "no such object"
            queried = any(p.get("in") == "query" for p in operation.get("parameters", []))
            if method in ("post", "put", "patch") or queried:
                answers["400"] = "a refused body or query parameter"
            if method == "get" and "page" in str(operation.get("parameters", "")):
                answers["404"] = "a page past the last"
            if operation.get("operationId") in CONFLICTS:
                answers["409"] = "refused in the current state"
            responses = operation.setdefault("responses", {})
            for status, why in answers.items():
                responses.setdefault(status, {"description": why, "content": ref})
            if queried:
                # gunicorn's own answer (an HTML page) to a request line over 4094 bytes.
                responses.setdefault("414", TOO_LONG)
    return result
