from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from portal.auth import Role, role_of

HOME_BY_ROLE = {
    Role.IT_LEAD: "mailboxes:list",
    Role.CENTRAL_TEAM: "waves:list",
    Role.HELPDESK: "support:search",
}


@login_required
def home(request: HttpRequest) -> HttpResponse:
    role = role_of(request.user)
    if role is None:
        return render(request, "portal/no_role.html", status=403)
    return redirect(HOME_BY_ROLE[role])


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
