from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from api import views

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
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]
