from django.contrib import admin

from waves.models import Booking, BookingEvent, MigrationBatch, Wave, WaveEvent


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class WaveEventInline(ReadOnlyInline):
    model = WaveEvent
    readonly_fields = fields = ["at", "actor_label", "from_status", "to_status", "reason"]


class BookingEventInline(ReadOnlyInline):
    model = BookingEvent
    readonly_fields = fields = ["at", "actor_label", "from_status", "to_status", "reason"]


class MigrationBatchInline(ReadOnlyInline):
    model = MigrationBatch
    readonly_fields = fields = [
        "name",
        "status",
        "status_changed_at",
        "stopped",
        "backend_ref",
        "last_polled_at",
        "last_error",
    ]


@admin.register(Wave)
class WaveAdmin(admin.ModelAdmin):
    """Statuses change through the portal's wave page, which checks each move."""

    list_display = ["name", "kind", "status", "starts_at", "cutover_at", "capacity_mailboxes"]
    list_filter = ["status", "kind"]
    search_fields = ["name"]
    readonly_fields = ["status", "status_changed_at", "driver_lease_until"]
    inlines = [MigrationBatchInline, WaveEventInline]


@admin.register(Booking)
class BookingAdmin(admin.ModelAdmin):
    list_display = ["organisation", "wave", "status", "mailbox_count", "created_at"]
    list_filter = ["status"]
    search_fields = ["organisation__code", "organisation__name", "wave__name"]
    raw_id_fields = ["organisation", "wave", "submitted_by"]
    readonly_fields = ["status", "status_changed_at", "mailbox_count", "total_bytes"]
    inlines = [BookingEventInline]
