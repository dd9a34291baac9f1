"""Roles and sign-in: the one place that knows how a user gets a role.

Today a role is a Django group, given by the central team in the admin (or by the demo data);
an IT lead's organisation scope is the set of organisations naming them as a lead
(`mailboxes.Organisation.leads`). Entra ID sign-in will map app roles in the ID token to the
same groups here, so nothing outside this module changes when it arrives.
"""

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.core.exceptions import PermissionDenied
from django.db import models
from rest_framework.permissions import BasePermission


class Role(models.TextChoices):
    IT_LEAD = "it_lead", "Local IT lead"
    CENTRAL_TEAM = "central_team", "Central migration team"
    HELPDESK = "helpdesk", "Helpdesk"


def role_of(user: AbstractBaseUser | AnonymousUser) -> Role | None:
    """The user's role, or None. Central team outranks helpdesk, which outranks IT lead."""
    if not user.is_authenticated:
        return None
    cached = getattr(user, "_portal_role", False)
    if cached is not False:
        return cached
    names = set(user.groups.values_list("name", flat=True))
    role = next(
        (r for r in (Role.CENTRAL_TEAM, Role.HELPDESK, Role.IT_LEAD) if r.value in names), None
    )
    user._portal_role = role
    return role


def grant_role(user, role: Role) -> None:
    group, _ = Group.objects.get_or_create(name=role.value)
    user.groups.add(group)
    user.__dict__.pop("_portal_role", None)


def role_required(*roles: Role) -> Callable:
    """Sign-in required, then one of `roles`; anything else is 403."""

    def decorator(view):
        @login_required
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if role_of(request.user) not in roles:
                raise PermissionDenied("Your role does not give access to this page.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


class HasRole(BasePermission):
    """DRF permission: set `allowed_roles` on the view."""

    message = "Your role does not give access to this endpoint."

    def has_permission(self, request, view) -> bool:
        return role_of(request.user) in getattr(view, "allowed_roles", ())
