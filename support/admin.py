from django.contrib import admin

from support.models import HelpdeskCall


@admin.register(HelpdeskCall)
class HelpdeskCallAdmin(admin.ModelAdmin):
    list_display = ["mailbox", "recorded_by", "recorded_at", "resolved"]
    list_filter = ["resolved"]
    raw_id_fields = ["mailbox", "recorded_by"]
