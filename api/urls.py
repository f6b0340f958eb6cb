from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from api import views
from api.permissions import RolePermission

router = DefaultRouter()
router.register("hosts", views.HostViewSet, basename="host")
router.register("ports", views.PortViewSet, basename="port")
router.register("events", views.EventViewSet, basename="event")
router.register("rules", views.RuleViewSet, basename="rule")
router.register("networks", views.NetworkViewSet, basename="network")
router.register("policies", views.PolicyViewSet, basename="policy")
router.register("runs", views.RunViewSet, basename="run")

urlpatterns = [
    path("", include(router.urls)),
    # Behind a login like every other page (the viewer role, as the API's reads). The docs'
    # start script is a file of its own (the split view): no inline script under the CSP.
    path("schema/", SpectacularAPIView.as_view(permission_classes=[RolePermission]), name="schema"),
    path(
        "docs/",
        SpectacularSwaggerSplitView.as_view(url_name="schema", permission_classes=[RolePermission]),
        name="docs",
    ),
]
