"""Content-Security-Policy on every response (Django 5.2 has none built in).

Scripts only from this site: the dashboard has no script at all, the admin and the API
docs (Swagger UI, its start script served as a file) load theirs from /static/. Styles may
be inline (the admin's and Swagger UI's are; a style cannot run code), though the
dashboard has none: its stylesheets are files (Pico CSS vendored, portmon.css) and its
charts are SVG coloured by class. No plugins, no framing, forms post only here.
"""

from django.conf import settings

POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ]
)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.policy = getattr(settings, "PORTMON_CSP", POLICY)

    def __call__(self, request):
        response = self.get_response(request)
        if self.policy:
            response.headers.setdefault("Content-Security-Policy", self.policy)
        return response
