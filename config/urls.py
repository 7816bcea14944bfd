from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from dashboard.metrics import metrics_view

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/", include("dashboard.api_urls")),
    path("metrics", metrics_view, name="metrics"),
    path("", include("dashboard.urls")),
]
