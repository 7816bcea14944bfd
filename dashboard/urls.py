from django.urls import path

from dashboard import record_views, views

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("targets/<slug:name>/", views.target_detail, name="target"),
    path("targets/<slug:name>/check/", views.target_check_now, name="target_check"),
    path("targets/<slug:name>/progress/", views.target_check_progress, name="target_progress"),
    path("approvals/", views.approvals, name="approvals"),
    path("targets/<slug:name>/clear-storm/", views.target_clear_storm, name="target_clear_storm"),
    path("issues/<int:pk>/", views.issue_detail, name="issue"),
    path("issues/<int:pk>/subjects.jsonl", views.issue_subjects, name="issue_subjects"),
    path("issues/<int:pk>/repair/", views.issue_request_repair, name="issue_request_repair"),
    path("repairs/<int:pk>/", views.repair_detail, name="repair"),
    path("repairs/<int:pk>/approve/", views.repair_approve, name="repair_approve"),
    path("repairs/<int:pk>/reject/", views.repair_reject, name="repair_reject"),
    path("repairs/<int:pk>/rollback/", views.repair_rollback, name="repair_rollback"),
    path("repairs/<int:pk>/retry/", views.repair_retry, name="repair_retry"),
    path("repairs/<int:pk>/break-glass/", views.repair_break_glass, name="repair_break_glass"),
    path("targets/<slug:name>/reset-breaker/", views.target_reset_breaker, name="target_reset_breaker"),
    path("reviews/", views.reviews, name="reviews"),
    path("reviews/<int:pk>/sign-off/", views.review_sign_off, name="review_sign_off"),
    path("checks/", views.catalogue, name="catalogue"),
    path("audit/", record_views.audit_log, name="audit"),
    path("audit/verify/", record_views.audit_verify, name="audit_verify"),
    path("compliance/", record_views.compliance_page, name="compliance"),
    path("compliance/generate/", record_views.compliance_generate, name="compliance_generate"),
    path("compliance/<int:pk>/<str:fmt>/", record_views.compliance_download, name="compliance_download"),
    path("compliance/public-key.pem", record_views.public_key, name="public_key"),
    path("assets/plotly.min.js", views.plotly_js, name="plotly_js"),
]
