from django.contrib import admin

from mailboxes.models import Mailbox, MailboxEvent, Organisation


@admin.register(Organisation)
class OrganisationAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "type", "region"]
    list_filter = ["type", "region"]
    search_fields = ["code", "name"]
    raw_id_fields = ["parent"]
    filter_horizontal = ["leads"]


class MailboxEventInline(admin.TabularInline):
    model = MailboxEvent
    extra = 0
    can_delete = False
    readonly_fields = ["at", "actor_label", "from_status", "to_status", "reason"]
    fields = readonly_fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Mailbox)
class MailboxAdmin(admin.ModelAdmin):
    """Read-only status: it changes only through the transition function, never by hand."""

    list_display = ["address", "display_name", "organisation", "recipient_type", "status"]
    list_filter = ["status", "recipient_type"]
    search_fields = ["address", "upn"]
    raw_id_fields = ["organisation"]
    readonly_fields = ["status", "status_changed_at"]
    show_full_result_count = False
    inlines = [MailboxEventInline]
