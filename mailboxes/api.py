"""JSON API for organisations and mailboxes: reads only, always through the user's scope.

A mailbox's detail, with its migration, is served by `support.api`: it needs `waves`, which
this app must not import.
"""

from django.db import models
from django.db.models import Q, QuerySet
from django_filters import rest_framework as filters
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import build_choice_description_list
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers, viewsets
from rest_framework.permissions import IsAuthenticated

from mailboxes.models import (
    Mailbox,
    MailboxStatus,
    Organisation,
    OrganisationType,
    RecipientType,
)
from mailboxes.selectors import mailbox_status_counts, mailboxes_for, organisations_for
from portal.auth import HasRole, Role

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


class OrganisationDetailSerializer(OrganisationSerializer):
    mailbox_counts = serializers.SerializerMethodField(
        help_text="Number of the organisation's mailboxes in each status."
    )

    class Meta(OrganisationSerializer.Meta):
        fields = [*OrganisationSerializer.Meta.fields, "mailbox_counts"]
        read_only_fields = fields

    def get_mailbox_counts(self, organisation: Organisation) -> dict[str, int]:
        return mailbox_status_counts(organisation)


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
    search = filters.CharFilter(
        method="filter_search",
        max_length=254,
        help_text="Start of the address or UPN, or part of the display name.",
    )

    class Meta:
        model = Mailbox
        fields = ["organisation", "status", "recipient_type", "search"]

    def filter_search(
        self, queryset: QuerySet[Mailbox], name: str, value: str
    ) -> QuerySet[Mailbox]:
        value = value.strip()
        if not value:
            return queryset
        return queryset.filter(
            Q(address__istartswith=value)
            | Q(display_name__icontains=value)
            | Q(upn__istartswith=value)
        )


@extend_schema_view(list=extend_schema(summary="List the mailboxes in your scope"))
class MailboxViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Mailboxes in the user's scope, filtered and paged."""

    permission_classes = [IsAuthenticated, HasRole]
    allowed_roles = ALL_ROLES
    serializer_class = MailboxSerializer
    filterset_class = MailboxFilter

    def get_queryset(self) -> QuerySet[Mailbox]:
        return mailboxes_for(self.request.user).select_related("organisation").order_by("address")
