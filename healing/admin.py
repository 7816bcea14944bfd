from django import forms
from django.contrib import admin

from compliance.actions import Action
from compliance.services import audit_append, audited_transaction
from healing.models import CacheTarget, ChangeFreeze, NotificationRoute, RepairPolicy


class CacheTargetForm(forms.ModelForm):
    """The location goes through the same normalisation as every other way of adding a target: paths made
    absolute, a Redis URL checked and its password moved out, encrypted, and masked in the URL."""

    class Meta:
        model = CacheTarget
        fields = "__all__"

    def clean(self):
        from healing.services import HealingError
        from healing.services.targets import _normalise_location

        data = super().clean()
        if "location" in self.changed_data or "kind" in self.changed_data:
            try:
                data["location"], self._sealed = _normalise_location(data.get("kind") or "aicache_fs", data.get("location") or "")
            except HealingError as exc:
                self.add_error("location", str(exc))
        return data


@admin.register(CacheTarget)
class CacheTargetAdmin(admin.ModelAdmin):
    form = CacheTargetForm
    list_display = ("name", "kind", "location", "enabled", "storm_mode", "last_check_at")
    list_filter = ("kind", "enabled", "storm_mode")
    search_fields = ("name", "location")
    readonly_fields = ("storm_mode", "storm_reason", "last_check_at", "next_check_at", "lease_owner", "lease_until", "created_at")

    def save_model(self, request, obj, form, change):
        sealed = getattr(form, "_sealed", None)
        if sealed is not None and (sealed or "****@" not in obj.location):
            obj.secret = sealed
        with audited_transaction():
            super().save_model(request, obj, form, change)
            audit_append(actor=request.user, action=Action.TARGET_UPDATED if change else Action.TARGET_CREATED, object_type="target",
                         object_id=obj.pk, scope=f"target:{obj.pk}", summary=f"target {obj.name} saved in admin",
                         after={"changed": form.changed_data})

    def delete_model(self, request, obj):
        with audited_transaction():
            pk = obj.pk
            super().delete_model(request, obj)
            audit_append(actor=request.user, action=Action.TARGET_DELETED, object_type="target", object_id=pk,
                         scope=f"target:{pk}", summary=f"target {obj.name} deleted in admin")


@admin.register(RepairPolicy)
class RepairPolicyAdmin(admin.ModelAdmin):
    list_display = ("order", "name", "enabled", "decision", "approvers_required", "match_risks", "match_labels", "version")
    list_display_links = ("name",)
    readonly_fields = ("version", "updated_at")

    def save_model(self, request, obj, form, change):
        with audited_transaction():
            if change:
                obj.version += 1
            super().save_model(request, obj, form, change)
            audit_append(actor=request.user, action=Action.POLICY_UPDATED if change else Action.POLICY_CREATED, object_type="policy",
                         object_id=obj.pk, summary=f"policy {obj.name} v{obj.version}",
                         after={"changed": form.changed_data, "decision": obj.decision, "version": obj.version})

    def delete_model(self, request, obj):
        with audited_transaction():
            pk = obj.pk
            super().delete_model(request, obj)
            audit_append(actor=request.user, action=Action.POLICY_DELETED, object_type="policy", object_id=pk, summary=f"policy {obj.name} deleted")


@admin.register(ChangeFreeze)
class ChangeFreezeAdmin(admin.ModelAdmin):
    list_display = ("label", "starts_at", "ends_at", "reason", "created_by")
    readonly_fields = ("created_by",)

    def save_model(self, request, obj, form, change):
        with audited_transaction():
            obj.created_by = obj.created_by or request.user
            super().save_model(request, obj, form, change)
            audit_append(actor=request.user, action=Action.FREEZE_CREATED, object_type="freeze", object_id=obj.pk,
                         summary=f"change freeze on {obj.label} {'changed' if change else 'created'} in admin",
                         after={"label": obj.label, "starts_at": obj.starts_at.isoformat(), "ends_at": obj.ends_at.isoformat(), "reason": obj.reason})

    def delete_model(self, request, obj):
        with audited_transaction():
            pk = obj.pk
            super().delete_model(request, obj)
            audit_append(actor=request.user, action=Action.FREEZE_ENDED, object_type="freeze", object_id=pk, summary=f"change freeze on {obj.label} deleted")


@admin.register(NotificationRoute)
class NotificationRouteAdmin(admin.ModelAdmin):
    list_display = ("label", "emails", "webhook_url", "events", "enabled")

    def save_model(self, request, obj, form, change):
        with audited_transaction():
            super().save_model(request, obj, form, change)
            audit_append(actor=request.user, action=Action.TARGET_UPDATED, object_type="notification_route", object_id=obj.pk,
                         summary=f"notification route for {obj.label} saved", after={"changed": form.changed_data})
