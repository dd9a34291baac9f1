"""JSON API for organisations and mailboxes: reads through the user's scope, and bulk imports.

A mailbox's detail, with its migration, is served by `support.api`: it needs `waves`, which
this app must not import.
"""

from django.db import models
from django.db.models import QuerySet
from django.urls import reverse
from django_filters import rest_framework as filters
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import build_choice_description_list
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import generics, mixins, serializers, status, viewsets
from rest_framework.exceptions import APIException, NotAuthenticated, PermissionDenied
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from mailboxes.importing import (
    UPLOAD_TOO_LARGE,
    import_run_start,
    upload_declared_too_large,
    upload_problem,
    upload_save,
)
from mailboxes.models import (
    ImportKind,
    ImportRun,
    ImportStatus,
    Mailbox,
    MailboxSize,
    MailboxStatus,
    Organisation,
    OrganisationType,
    RecipientType,
)
from mailboxes.selectors import (
    mailbox_readiness,
    mailbox_search_q,
    mailbox_size_q,
    mailboxes_for,
    organisations_for,
    programme_progress,
)
from portal.auth import HasRole, Role, role_of

ALL_ROLES = (Role.IT_LEAD, Role.CENTRAL_TEAM, Role.HELPDESK)


class ChoicesField(serializers.ChoiceField):
    """A field of one `TextChoices` class, shown in the schema as one enum named after it.

    Several statuses share the name `status`; naming each enum after its class keeps the schema
    free of drf-spectacular's enum-collision warnings. With `allow_null`, a blank value (such
    as the first event's `from_status`) is given as null.
    """

    def __init__(self, choices_class: type[models.TextChoices], **kwargs):
        self.choices_class = choices_class
        super().__init__(choices=choices_class.choices, **kwargs)

    def to_representation(self, value):
        if value == "" and self.allow_null:
            return None
        return super().to_representation(value)


class ChoicesFieldExtension(OpenApiSerializerFieldExtension):
    target_class = ChoicesField

    def get_name(self) -> str:
        return self.target.choices_class.__name__

    def map_serializer_field(self, auto_schema, direction) -> dict:
        choices = self.target.choices_class
        return {
            "type": "string",
            "enum": list(choices.values),
            "description": build_choice_description_list(choices.choices),
        }


class OrganisationSerializer(serializers.ModelSerializer):
    type = ChoicesField(OrganisationType, read_only=True)
    parent = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True)

    class Meta:
        model = Organisation
        fields = ["code", "name", "type", "region", "parent"]
        read_only_fields = fields


class ReadinessSerializer(serializers.Serializer):
    mailboxes = serializers.IntegerField(source="total")
    size_bytes = serializers.IntegerField(help_text="Data in all the organisation's mailboxes.")
    over_100_gb = serializers.IntegerField(
        source="large",
        help_text="Mailboxes still to move of 100 GB to 200 GB: check their licences.",
    )
    over_200_gb = serializers.IntegerField(
        source="too_large",
        help_text="Mailboxes still to move over 200 GB, which Exchange Online does not move.",
    )


class OrganisationDetailSerializer(OrganisationSerializer):
    mailbox_counts = serializers.SerializerMethodField(
        help_text="Number of the organisation's mailboxes in each status."
    )
    readiness = serializers.SerializerMethodField()

    class Meta(OrganisationSerializer.Meta):
        fields = [*OrganisationSerializer.Meta.fields, "mailbox_counts", "readiness"]
        read_only_fields = fields

    def to_representation(self, organisation: Organisation) -> dict:
        self._readiness = mailbox_readiness(organisation)  # one query for both fields
        return super().to_representation(organisation)

    def get_mailbox_counts(self, organisation: Organisation) -> dict[str, int]:
        return self._readiness.counts

    @extend_schema_field(ReadinessSerializer)
    def get_readiness(self, organisation: Organisation) -> dict:
        return ReadinessSerializer(self._readiness).data


@extend_schema_view(
    list=extend_schema(summary="List the organisations in your scope"),
    retrieve=extend_schema(summary="Fetch one organisation, with its mailboxes counted by status"),
)
class OrganisationViewSet(viewsets.ReadOnlyModelViewSet):
    """Organisations in the user's scope: an IT lead's own, everyone's for the other roles."""

    permission_classes = [IsAuthenticated, HasRole]
    allowed_roles = ALL_ROLES
    lookup_field = "code"
    filter_backends: list = []

    def get_queryset(self) -> QuerySet[Organisation]:
        return organisations_for(self.request.user).select_related("parent").order_by("name")

    def get_serializer_class(self):
        return OrganisationDetailSerializer if self.action == "retrieve" else OrganisationSerializer


class MailboxSerializer(serializers.ModelSerializer):
    recipient_type = ChoicesField(RecipientType, read_only=True)
    organisation = serializers.SlugRelatedField(slug_field="code", read_only=True)
    status = ChoicesField(MailboxStatus, read_only=True)

    class Meta:
        model = Mailbox
        fields = [
            "id",
            "address",
            "upn",
            "display_name",
            "recipient_type",
            "size_bytes",
            "item_count",
            "organisation",
            "status",
        ]
        read_only_fields = fields


class MailboxFilter(filters.FilterSet):
    # A code outside the user's scope matches nothing: the base queryset is already scoped.
    organisation = filters.CharFilter(
        field_name="organisation__code", help_text="ODS code of one organisation."
    )
    status = filters.ChoiceFilter(choices=MailboxStatus.choices)
    recipient_type = filters.ChoiceFilter(choices=RecipientType.choices)
    size = filters.ChoiceFilter(
        choices=MailboxSize.choices,
        method="filter_size",
        help_text="Mailboxes still to move of 100 GB to 200 GB, or over 200 GB.",
    )
    search = filters.CharFilter(
        method="filter_search",
        max_length=254,
        help_text="Start of the address or UPN, or part of the display name.",
    )

    class Meta:
        model = Mailbox
        fields = ["organisation", "status", "recipient_type", "size", "search"]

    def filter_size(self, queryset: QuerySet[Mailbox], name: str, value: str) -> QuerySet[Mailbox]:
        return queryset.filter(mailbox_size_q(value))

    def filter_search(
        self, queryset: QuerySet[Mailbox], name: str, value: str
    ) -> QuerySet[Mailbox]:
        # The same matching as the pages' filter box, which the indexes serve.
        return queryset.filter(mailbox_search_q(value)) if value.strip() else queryset


@extend_schema_view(list=extend_schema(summary="List the mailboxes in your scope"))
class MailboxViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Mailboxes in the user's scope, filtered and paged."""

    permission_classes = [IsAuthenticated, HasRole]
    allowed_roles = ALL_ROLES
    serializer_class = MailboxSerializer
    filterset_class = MailboxFilter

    def get_queryset(self) -> QuerySet[Mailbox]:
        return mailboxes_for(self.request.user).select_related("organisation").order_by("address")


# Imports ---------------------------------------------------------------------------------------


class ImportProblemSerializer(serializers.Serializer):
    line = serializers.IntegerField(help_text="The line of the file the row starts on.")
    column = serializers.CharField(help_text="The column, as the file format names it.")
    value = serializers.CharField(allow_blank=True, help_text="The value, cut at 100 characters.")
    reason = serializers.CharField(help_text="What is wrong with it.")


class ImportRunSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField(help_text="This import in the API.")
    page = serializers.SerializerMethodField(help_text="This import's page in the portal.")
    kind = ChoicesField(ImportKind, read_only=True)
    status = ChoicesField(ImportStatus, read_only=True)
    file_name = serializers.CharField(read_only=True, help_text="The file's name, as uploaded.")
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    percent_done = serializers.IntegerField(
        read_only=True,
        allow_null=True,
        help_text="Rows read as a percentage of the estimated total; 100 when finished.",
    )
    problems = ImportProblemSerializer(
        many=True,
        read_only=True,
        help_text="The first 1,000 problems in line order; problem_count counts them all.",
    )

    class Meta:
        model = ImportRun
        fields = [
            "id",
            "url",
            "page",
            "kind",
            "file_name",
            "skip_bad_rows",
            "status",
            "rows_total",
            "rows_read",
            "percent_done",
            "created",
            "updated",
            "unchanged",
            "skipped",
            "bad_rows",
            "problem_count",
            "problems",
            "error",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, run: ImportRun) -> str:
        return self._absolute(reverse("api:import-detail", args=[run.pk]))

    @extend_schema_field(OpenApiTypes.URI)
    def get_page(self, run: ImportRun) -> str:
        return self._absolute(reverse("mailboxes:import_detail", args=[run.pk]))

    def _absolute(self, path: str) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class ImportUploadSerializer(serializers.Serializer):
    kind = ChoicesField(ImportKind, help_text="What the file holds.")
    file = serializers.FileField(
        help_text="The CSV file, UTF-8, smaller than 1 GB; its format is in the README.",
        error_messages={"empty": "The selected file is empty"},
    )
    skip_bad_rows = serializers.BooleanField(
        default=False,
        help_text="Import the good rows and report the bad ones, instead of refusing the file.",
    )

    def validate_file(self, uploaded):
        problem = upload_problem(uploaded)
        if problem:
            raise serializers.ValidationError(problem)
        return uploaded


class UploadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = UPLOAD_TOO_LARGE
    default_code = "too_large"


@extend_schema_view(
    create=extend_schema(
        summary="Upload a CSV file of organisations or mailboxes and start importing it",
        description=(
            "The file is checked at once as far as that can be done (present, not empty, smaller"
            " than 1 GB, a CSV); its rows are checked by the import, which runs in the"
            " background. Follow `url` for its progress and, when it has finished, its report."
        ),
        request={"multipart/form-data": ImportUploadSerializer},
        responses={202: ImportRunSerializer},
    ),
    retrieve=extend_schema(summary="An import's progress and, once it has finished, its report"),
)
class ImportRunViewSet(mixins.CreateModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Bulk imports of organisations and mailboxes: central team only."""

    permission_classes = [IsAuthenticated, HasRole]
    allowed_roles = (Role.CENTRAL_TEAM,)
    parser_classes = [MultiPartParser, FormParser]
    queryset = ImportRun.objects.select_related("created_by")
    filter_backends: list = []

    def get_serializer_class(self):
        return ImportUploadSerializer if self.action == "create" else ImportRunSerializer

    def initial(self, request, *args, **kwargs):
        # Before the body is read (DRF's sign-in reads it, for the CSRF token): a file too large
        # is refused without spooling it to disk first. Who is asking is known from the session
        # alone, so only the central team learns that it was the size.
        if request.method == "POST" and upload_declared_too_large(request.META):
            user = request._request.user
            if not user.is_authenticated:
                raise NotAuthenticated()
            if role_of(user) not in self.allowed_roles:
                raise PermissionDenied(HasRole.message)
            raise UploadTooLarge()
        super().initial(request, *args, **kwargs)

    def create(self, request, *args, **kwargs):
        upload = self.get_serializer(data=request.data)
        upload.is_valid(raise_exception=True)
        run = import_run_start(
            kind=upload.validated_data["kind"],
            path=str(upload_save(upload.validated_data["file"])),
            skip_bad_rows=upload.validated_data["skip_bad_rows"],
            created_by=request.user,
        )
        body = ImportRunSerializer(run, context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})


class ProgrammeSerializer(serializers.Serializer):
    counted_at = serializers.DateTimeField(
        allow_null=True, help_text="When a worker last counted (every 5 minutes); null before."
    )
    total = serializers.IntegerField(help_text="Every mailbox of the programme.")
    migrated = serializers.IntegerField(help_text="Mailboxes whose move is completed.")
    counts = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="Mailboxes in each status (every status, 0 where none).",
    )


class ProgrammeView(generics.GenericAPIView):
    """The programme's progress for the central team: every mailbox by status, as a worker last
    counted them (every 5 minutes; counting 2.1 million takes a pass over all of them)."""

    permission_classes = [IsAuthenticated, HasRole]
    allowed_roles = (Role.CENTRAL_TEAM,)
    serializer_class = ProgrammeSerializer

    def get(self, request, *args, **kwargs):
        progress = programme_progress()
        body = {"counted_at": None, "total": 0, "migrated": 0, "counts": {}}
        if progress is not None:
            body = {
                "counted_at": progress.counted_at,
                "total": progress.total,
                "migrated": progress.migrated,
                "counts": progress.counts,
            }
        return Response(self.get_serializer(body).data)
