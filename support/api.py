"""JSON API for the helpdesk: search as you type, and one mailbox's timeline and migration.

The mailbox detail lives here, not in `mailboxes.api`, because it reads `waves` and only
`support` may depend on both.
"""

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from mailboxes.api import ALL_ROLES, ChoicesField, MailboxSerializer
from mailboxes.models import Mailbox, MailboxEvent, MailboxStatus
from mailboxes.selectors import mailbox_search, mailboxes_for
from portal.auth import HasRole, Role
from waves.api import NOT_ALLOWED, NOT_FOUND
from waves.models import BookingStatus, CohortMailbox
from waves.selectors import mailbox_migration

LOOKUP_ROLES = (Role.HELPDESK, Role.CENTRAL_TEAM)


class MailboxEventSerializer(serializers.ModelSerializer):
    from_status = ChoicesField(
        MailboxStatus, allow_null=True, read_only=True, help_text="null for the first event."
    )
    to_status = ChoicesField(MailboxStatus, read_only=True)

    class Meta:
        model = MailboxEvent
        fields = ["at", "actor_label", "from_status", "to_status", "reason"]
        read_only_fields = fields


class MigrationSerializer(serializers.ModelSerializer):
    wave = serializers.UUIDField(source="booking.wave.public_id", read_only=True)
    wave_name = serializers.CharField(source="booking.wave.name", read_only=True)
    booking = serializers.UUIDField(source="booking.public_id", read_only=True)
    booking_status = ChoicesField(BookingStatus, source="booking.status", read_only=True)
    active = serializers.BooleanField(
        read_only=True, help_text="false once the booking ended early or the move was rolled back."
    )

    class Meta:
        model = CohortMailbox
        fields = [
            "wave",
            "wave_name",
            "booking",
            "booking_status",
            "active",
            "backend_status",
            "bytes_transferred",
            "items_transferred",
            "attempts",
            "last_error",
            "last_activity_at",
        ]
        read_only_fields = fields


class MailboxDetailSerializer(MailboxSerializer):
    migration = MigrationSerializer(
        read_only=True,
        allow_null=True,
        help_text="The current booking entry, or the latest one; null if never booked.",
    )
    timeline = MailboxEventSerializer(source="events", many=True, read_only=True)

    class Meta(MailboxSerializer.Meta):
        fields = [*MailboxSerializer.Meta.fields, "migration", "timeline"]
        read_only_fields = fields


class MailboxDetail(generics.RetrieveAPIView):
    """One mailbox in the user's scope, with its current migration and its timeline, oldest first."""

    permission_classes = [IsAuthenticated, HasRole]
    allowed_roles = ALL_ROLES
    serializer_class = MailboxDetailSerializer
    lookup_url_kwarg = "mailbox_id"
    filter_backends: list = []

    def get_queryset(self) -> QuerySet[Mailbox]:
        return (
            mailboxes_for(self.request.user)
            .select_related("organisation")
            .prefetch_related("events")
        )

    @extend_schema(
        summary="Fetch one mailbox, with its migration and timeline",
        responses={200: MailboxDetailSerializer, 403: NOT_ALLOWED, 404: NOT_FOUND},
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        mailbox = self.get_object()
        mailbox.migration = mailbox_migration(mailbox)
        return Response(self.get_serializer(mailbox).data)


class LookupQuerySerializer(serializers.Serializer):
    q = serializers.CharField(
        max_length=254,
        allow_blank=True,
        trim_whitespace=False,
        help_text="An address or UPN, its start, or part of a display name; at least 2 characters.",
    )


class MailboxLookup(generics.GenericAPIView):
    """Helpdesk search as you type: an exact address or UPN first, else up to 20 matches."""

    permission_classes = [IsAuthenticated, HasRole]
    allowed_roles = LOOKUP_ROLES
    serializer_class = MailboxSerializer
    filter_backends: list = []
    pagination_class = None

    @extend_schema(
        summary="Find mailboxes by address, UPN or name (helpdesk and central team)",
        parameters=[LookupQuerySerializer],
        responses={
            200: MailboxSerializer(many=True),
            400: OpenApiResponse(description="q is missing or too long."),
            403: NOT_ALLOWED,
        },
    )
    def get(self, request: Request) -> Response:
        query = LookupQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        results = mailbox_search(query.validated_data["q"])
        return Response(MailboxSerializer(results, many=True).data)
