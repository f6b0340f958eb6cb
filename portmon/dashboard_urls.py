from django.urls import path

from portmon import views

urlpatterns = [path("", views.home, name="home")]
