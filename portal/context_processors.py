from django.urls import reverse

from portal.auth import Role, role_of

NAVIGATION = {
    Role.IT_LEAD: [("Mailboxes", "mailboxes:list"), ("Waves and bookings", "waves:lead_waves")],
    Role.CENTRAL_TEAM: [
        ("Waves", "waves:list"),
        ("Bookings to review", "waves:booking_queue"),
        ("Find a mailbox", "support:search"),
    ],
    Role.HELPDESK: [("Find a mailbox", "support:search")],
}


def navigation(request):
    role = role_of(request.user)
    links = []
    for label, name in NAVIGATION.get(role, []):
        url = reverse(name)
        links.append({"label": label, "url": url, "current": request.path.startswith(url)})
    return {"nav_links": links, "portal_role": role}
