"""JSON API for waves and bookings: thin views over `waves.selectors` and `waves.services`.

The services decide; a refusal (`BookingRefused`, `TransitionNotAllowed`) becomes 409 with the
service's own message, and changes nothing.
"""

from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.validators import UniqueValidator

from mailboxes.api import ALL_ROLES, ChoicesField
from mailboxes.models import MailboxStatus
from mailboxes.selectors import organisation_for, organisations_for
from portal.auth import HasRole, Role, role_of
from portal.lib.transitions import TransitionNotAllowed
from waves import services
from waves.models import Booking, BookingStatus, Wave, WaveKind, WaveStatus
from waves.selectors import (
    bookings_for_organisations,
    wave_progress,
    waves_open_for_booking,
    waves_with_capacity,
)

CENTRAL = (Role.CENTRAL_TEAM,)


class Conflict(APIException):
    """The request is well formed but the rules refuse it now: 409 with the reason."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


REFUSED = OpenApiResponse(ErrorSerializer, description="Refused by the rules; nothing changed.")
NOT_ALLOWED = OpenApiResponse(ErrorSerializer, description="Not signed in, or the wrong role.")
NOT_FOUND = OpenApiResponse(ErrorSerializer, description="Not found, or outside your scope.")


class RolesByActionMixin:
    """`allowed_roles` for `portal.auth.HasRole`, per viewset action; unlisted actions get none."""

    permission_classes = [IsAuthenticated, HasRole]
    roles_by_action: dict[str, tuple[Role, ...]] = {}

    @property
    def allowed_roles(self) -> tuple[Role, ...]:
        return self.roles_by_action.get(self.action, ())


# Waves


class WaveSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    kind = ChoicesField(WaveKind, read_only=True)
    status = ChoicesField(WaveStatus, read_only=True)
    capacity_bytes = serializers.IntegerField(read_only=True)
    used_mailboxes = serializers.IntegerField(
        read_only=True,
        help_text="Mailboxes held by the wave's bookings (submitted, approved, in progress or done).",
    )
    used_bytes = serializers.IntegerField(read_only=True)
    free_mailboxes = serializers.SerializerMethodField()
    free_bytes = serializers.SerializerMethodField()

    class Meta:
        model = Wave
        fields = [
            "id",
            "name",
            "kind",
            "status",
            "starts_at",
            "cutover_at",
            "booking_deadline",
            "capacity_mailboxes",
            "capacity_gb",
            "capacity_bytes",
            "used_mailboxes",
            "used_bytes",
            "free_mailboxes",
            "free_bytes",
        ]
        read_only_fields = fields

    def get_free_mailboxes(self, wave: Wave) -> int:
        return max(wave.capacity_mailboxes - wave.used_mailboxes, 0)

    def get_free_bytes(self, wave: Wave) -> int:
        return max(wave.capacity_bytes - wave.used_bytes, 0)


class StatusCountSerializer(serializers.Serializer):
    status = ChoicesField(MailboxStatus)
    label = serializers.CharField()
    count = serializers.IntegerField()


class WaveProgressSerializer(serializers.Serializer):
    by_status = StatusCountSerializer(many=True, help_text="Only statuses with mailboxes in them.")
    total = serializers.IntegerField()
    completed = serializers.IntegerField()
    failed = serializers.IntegerField()
    percent_completed = serializers.FloatField()
    bytes_done = serializers.IntegerField()
    bytes_total = serializers.IntegerField()
    awaiting_approval = serializers.IntegerField(
        help_text="Moves Exchange graded Investigate or Poor, held until their skipped items "
        "are approved on the wave page."
    )


class WaveDetailSerializer(WaveSerializer):
    progress = WaveProgressSerializer(read_only=True)

    class Meta(WaveSerializer.Meta):
        fields = [*WaveSerializer.Meta.fields, "progress"]
        read_only_fields = fields


class AwareDateTimeField(serializers.DateTimeField):
    """ISO 8601 with a UTC offset: a wave's times are never guessed across the clock change."""

    default_error_messages = {
        "invalid": "Enter a date and time in ISO 8601 with a UTC offset, "
        "such as 2026-03-28T18:00:00Z or 2026-03-28T18:00:00+01:00.",
        "naive": "Add a UTC offset, such as Z or +01:00: without one the time is ambiguous.",
    }

    def __init__(self, **kwargs):
        super().__init__(input_formats=["iso-8601"], **kwargs)

    def to_internal_value(self, value) -> datetime:
        if isinstance(value, str):
            try:
                parsed = parse_datetime(value.strip())
            except ValueError:
                self.fail("invalid")
            if parsed is not None and parsed.tzinfo is None:
                self.fail("naive")
        return super().to_internal_value(value)


class WaveCreateSerializer(serializers.Serializer):
    name = serializers.CharField(
        max_length=100,
        validators=[
            UniqueValidator(
                queryset=Wave.objects.all(),
                lookup="iexact",
                message="A wave with this name already exists.",
            )
        ],
    )
    kind = ChoicesField(WaveKind)
    starts_at = AwareDateTimeField(help_text="When the final sync begins.")
    cutover_at = AwareDateTimeField(help_text="When mailboxes switch to Exchange Online.")
    booking_deadline = AwareDateTimeField()
    capacity_mailboxes = serializers.IntegerField(min_value=1, max_value=1_000_000)
    capacity_gb = serializers.IntegerField(min_value=1, max_value=10_000_000)

    def validate(self, data: dict) -> dict:
        errors = {}
        if data["cutover_at"] <= data["starts_at"]:
            errors["cutover_at"] = "Cutover must be after the final sync starts."
        if data["booking_deadline"] > data["starts_at"]:
            errors["booking_deadline"] = "The booking deadline must be before the wave starts."
        elif data["booking_deadline"] <= timezone.now():
            errors["booking_deadline"] = "The booking deadline must be in the future."
        if errors:
            raise serializers.ValidationError(errors)
        return data


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class RequiredReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500)


class WaveFilter(filters.FilterSet):
    status = filters.ChoiceFilter(choices=WaveStatus.choices)

    class Meta:
        model = Wave
        fields = ["status"]


WAVE_RESPONSES = {200: WaveSerializer, 403: NOT_ALLOWED, 404: NOT_FOUND, 409: REFUSED}


class WaveViewSet(
    RolesByActionMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Waves with their capacity. Everyone may list them (leads book into them); the central
    team sees their progress, creates them and moves them on."""

    lookup_field = "public_id"
    filterset_class = WaveFilter
    roles_by_action = {
        "list": ALL_ROLES,
        "retrieve": CENTRAL,
        "create": CENTRAL,
        "open": CENTRAL,
        "close": CENTRAL,
        "start": CENTRAL,
        "pause": CENTRAL,
        "resume": CENTRAL,
        "cancel": CENTRAL,
    }

    def get_queryset(self) -> QuerySet[Wave]:
        if self.action == "list" and self.request.query_params.get("bookable") == "true":
            return waves_open_for_booking()
        return waves_with_capacity().order_by("starts_at")

    def get_serializer_class(self):
        return {"retrieve": WaveDetailSerializer, "create": WaveCreateSerializer}.get(
            self.action, WaveSerializer
        )

    @extend_schema(
        summary="List waves with their capacity used and free",
        parameters=[
            OpenApiParameter(
                "bookable",
                OpenApiTypes.BOOL,
                description="true: only waves open for booking whose deadline has not passed.",
            )
        ],
        responses={200: WaveSerializer(many=True), 403: NOT_ALLOWED},
    )
    def list(self, request: Request, *args, **kwargs) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(
        summary="Fetch one wave with its progress (central team)",
        responses={200: WaveDetailSerializer, 403: NOT_ALLOWED, 404: NOT_FOUND},
    )
    def retrieve(self, request: Request, *args, **kwargs) -> Response:
        wave = self.get_object()
        wave.progress = wave_progress(wave)
        return Response(WaveDetailSerializer(wave).data)

    @extend_schema(
        summary="Create a wave, planned (central team)",
        request=WaveCreateSerializer,
        responses={201: WaveSerializer, 400: OpenApiResponse(description="Invalid fields.")},
    )
    def create(self, request: Request, *args, **kwargs) -> Response:
        form = WaveCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            wave = services.wave_create(**form.validated_data, actor=request.user)
        except services.WaveRefused as refusal:
            raise Conflict(str(refusal)) from None
        return Response(self._fresh(wave), status=status.HTTP_201_CREATED)

    @extend_schema(summary="Open a wave for booking", request=None, responses=WAVE_RESPONSES)
    @action(detail=True, methods=["post"])
    def open(self, request: Request, public_id=None) -> Response:
        return self._act(services.wave_open)

    @extend_schema(summary="Close a wave for booking", request=None, responses=WAVE_RESPONSES)
    @action(detail=True, methods=["post"])
    def close(self, request: Request, public_id=None) -> Response:
        return self._act(services.wave_close)

    @extend_schema(
        summary="Start a closed wave's migration", request=None, responses=WAVE_RESPONSES
    )
    @action(detail=True, methods=["post"])
    def start(self, request: Request, public_id=None) -> Response:
        return self._act(services.wave_start)

    @extend_schema(
        summary="Pause a running wave", request=ReasonSerializer, responses=WAVE_RESPONSES
    )
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, public_id=None) -> Response:
        form = ReasonSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        return self._act(services.wave_pause, reason=form.validated_data["reason"])

    @extend_schema(summary="Resume a paused wave", request=None, responses=WAVE_RESPONSES)
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, public_id=None) -> Response:
        return self._act(services.wave_resume)

    @extend_schema(
        summary="Cancel a wave and withdraw its active bookings",
        request=RequiredReasonSerializer,
        responses=WAVE_RESPONSES,
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, public_id=None) -> Response:
        form = RequiredReasonSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        return self._act(services.wave_cancel, reason=form.validated_data["reason"])

    def _act(self, service, **kwargs) -> Response:
        wave = self.get_object()
        try:
            service(wave=wave, actor=self.request.user, **kwargs)
        except TransitionNotAllowed as refusal:
            raise Conflict(str(refusal)) from None
        return Response(self._fresh(wave))

    def _fresh(self, wave: Wave) -> dict:
        return WaveSerializer(waves_with_capacity().get(pk=wave.pk)).data


# Bookings


class BookingSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    wave = serializers.UUIDField(source="wave.public_id", read_only=True)
    wave_name = serializers.CharField(source="wave.name", read_only=True)
    organisation = serializers.CharField(source="organisation.code", read_only=True)
    organisation_name = serializers.CharField(source="organisation.name", read_only=True)
    status = ChoicesField(BookingStatus, read_only=True)
    submitted_by = serializers.SerializerMethodField()

    class Meta:
        model = Booking
        fields = [
            "id",
            "wave",
            "wave_name",
            "organisation",
            "organisation_name",
            "status",
            "mailbox_count",
            "total_bytes",
            "submitted_by",
            "decision_reason",
            "created_at",
            "status_changed_at",
        ]
        read_only_fields = fields

    def get_submitted_by(self, booking: Booking) -> str:
        user = booking.submitted_by
        return user.get_full_name() or user.get_username()


class BookingCreateSerializer(serializers.Serializer):
    wave = serializers.UUIDField(help_text="The wave's id.")
    organisation = serializers.CharField(max_length=12, help_text="ODS code.")
    mailboxes = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        required=False,
        allow_empty=False,
        max_length=100_000,
        help_text="Ids of the mailboxes to book; leave out to book all not yet booked.",
    )
    addresses = serializers.ListField(
        child=serializers.CharField(max_length=254),
        required=False,
        allow_empty=False,
        max_length=100_000,
        help_text="Addresses of the mailboxes to book, instead of their ids. A refusal (409) names"
        " any that are not the organisation's mailboxes or are already booked.",
    )

    def validate(self, data):
        if "mailboxes" in data and "addresses" in data:
            raise serializers.ValidationError("Give mailboxes or addresses, not both.")
        return data

    def validate_wave(self, value) -> Wave:
        wave = Wave.objects.filter(public_id=value).first()
        if wave is None:
            raise serializers.ValidationError("No wave with this id.")
        return wave


class BookingFilter(filters.FilterSet):
    status = filters.ChoiceFilter(choices=BookingStatus.choices)
    wave = filters.UUIDFilter(field_name="wave__public_id", help_text="The wave's id.")
    organisation = filters.CharFilter(field_name="organisation__code", help_text="ODS code.")

    class Meta:
        model = Booking
        fields = ["status", "wave", "organisation"]


BOOKING_ACTION = {200: BookingSerializer, 403: NOT_ALLOWED, 404: NOT_FOUND, 409: REFUSED}


@extend_schema_view(
    list=extend_schema(summary="List the bookings in your scope"),
    retrieve=extend_schema(summary="Fetch one booking"),
)
class BookingViewSet(
    RolesByActionMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Bookings of organisations in the user's scope: an IT lead's own, all for the central team.

    Leads book and withdraw; the central team approves, rejects and may withdraw too.
    """

    lookup_field = "public_id"
    serializer_class = BookingSerializer
    filterset_class = BookingFilter
    roles_by_action = {
        "list": (Role.IT_LEAD, Role.CENTRAL_TEAM),
        "retrieve": (Role.IT_LEAD, Role.CENTRAL_TEAM),
        "create": (Role.IT_LEAD,),
        "approve": CENTRAL,
        "reject": CENTRAL,
        "withdraw": (Role.IT_LEAD, Role.CENTRAL_TEAM),
    }

    def get_queryset(self) -> QuerySet[Booking]:
        return bookings_for_organisations(organisations_for(self.request.user))

    def get_serializer_class(self):
        return BookingCreateSerializer if self.action == "create" else BookingSerializer

    @extend_schema(
        summary="Book an organisation's mailboxes into a wave (IT lead)",
        request=BookingCreateSerializer,
        responses={
            201: BookingSerializer,
            400: OpenApiResponse(description="Invalid fields, such as an unknown wave."),
            403: NOT_ALLOWED,
            404: OpenApiResponse(ErrorSerializer, description="Organisation not in your scope."),
            409: REFUSED,
        },
    )
    def create(self, request: Request, *args, **kwargs) -> Response:
        form = BookingCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        organisation = organisation_for(request.user, data["organisation"])
        try:
            booking = services.booking_create(
                wave=data["wave"],
                organisation=organisation,
                actor=request.user,
                mailbox_ids=data.get("mailboxes"),
                addresses=data.get("addresses"),
            )
        except services.BookingRefused as refusal:
            raise Conflict(str(refusal)) from None
        booking = self.get_queryset().get(pk=booking.pk)
        return Response(BookingSerializer(booking).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Approve a booking", request=None, responses=BOOKING_ACTION)
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, public_id=None) -> Response:
        return self._act(services.booking_approve)

    @extend_schema(
        summary="Reject a booking, with a reason",
        request=RequiredReasonSerializer,
        responses=BOOKING_ACTION,
    )
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, public_id=None) -> Response:
        form = RequiredReasonSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        return self._act(services.booking_reject, reason=form.validated_data["reason"])

    @extend_schema(
        summary="Withdraw a booking before its deadline",
        request=ReasonSerializer,
        responses=BOOKING_ACTION,
    )
    @action(detail=True, methods=["post"])
    def withdraw(self, request: Request, public_id=None) -> Response:
        form = ReasonSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        return self._act(
            services.booking_withdraw,
            reason=form.validated_data["reason"],
            after_deadline=role_of(request.user) == Role.CENTRAL_TEAM,
        )

    def _act(self, service, **kwargs) -> Response:
        booking = self.get_object()
        try:
            service(booking=booking, actor=self.request.user, **kwargs)
        except TransitionNotAllowed as refusal:
            raise Conflict(str(refusal)) from None
        return Response(BookingSerializer(booking).data)
