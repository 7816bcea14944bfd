from django.contrib import admin

from compliance.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the application offers no path to edit or delete the record."""

    list_display = ("seq", "at", "actor_label", "action", "object_type", "object_id", "summary")
    list_filter = ("action", "actor_kind")
    search_fields = ("object_id", "actor_label", "summary", "scope")
    ordering = ("-seq",)

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
