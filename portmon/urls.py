from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from api import views as api_views
from dashboard import views

urlpatterns = [
    path("", include("dashboard.urls")),
    path("api/agents/", include("agents.urls")),
    path("api/", include("api.urls")),
    path("metrics", api_views.metrics, name="metrics"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    # Pages without the <link rel=icon> (the admin, the API docs) ask for /favicon.ico.
    path(
        "favicon.ico",
        RedirectView.as_view(url=static("dashboard/favicon.svg")),
        name="favicon",
    ),
]

handler403 = "dashboard.views.permission_denied"
handler404 = "dashboard.views.page_not_found"
handler400 = "dashboard.views.bad_request"
