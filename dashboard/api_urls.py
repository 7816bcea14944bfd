from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from dashboard import api

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("targets/", api.targets),
    path("targets/<slug:name>/", api.target_detail),
    path("targets/<slug:name>/check/", api.target_check),
    path("targets/<slug:name>/reset-breaker/", api.target_reset_breaker),
    path("issues/", api.issues),
    path("issues/<int:pk>/", api.issue_detail),
    path("issues/<int:pk>/repair/", api.issue_request_repair),
    path("repairs/", api.repairs),
    path("repairs/<int:pk>/", api.repair_detail),
    path("repairs/<int:pk>/approve/", api.repair_approve),
    path("repairs/<int:pk>/reject/", api.repair_reject),
    path("repairs/<int:pk>/retry/", api.repair_retry),
    path("repairs/<int:pk>/break-glass/", api.repair_break_glass),
    path("repairs/<int:pk>/rollback/", api.repair_rollback),
    path("audit/", api.audit_events),
    path("audit/verify/", api.audit_verify),
    path("reports/", api.reports),
    path("checks/", api.checks),
    path("reviews/", api.reviews),
    path("reviews/<int:pk>/sign-off/", api.review_sign_off),
]
