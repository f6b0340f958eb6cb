"""Dashboard pages (server-rendered) and the health check."""

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from scanner.models import Network, Port, PortState, ScanRun


@login_required
def home(request: HttpRequest) -> HttpResponse:
    context = {
        "networks": Network.objects.count(),
        "open_ports": Port.objects.filter(state=PortState.OPEN).count(),
        "runs": ScanRun.objects.select_related("policy")[:10],
    }
    return render(request, "dashboard/home.html", context)


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers: no login, no data, just 'the database answers'."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
