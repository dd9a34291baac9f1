from django.urls import reverse

from portal.auth import Role, role_of

# (label, URL name, other path prefixes that belong to the same section)
NAVIGATION = {
    Role.IT_LEAD: [
        ("Mailboxes", "mailboxes:list", ["/helpdesk/mailboxes/"]),
        ("Waves and bookings", "waves:lead_waves", ["/waves/bookings/"]),
    ],
    Role.CENTRAL_TEAM: [
        ("Waves", "waves:list", []),
        ("Bookings to review", "waves:booking_queue", []),
        ("Yet to book", "waves:not_booked", []),
        ("Find a mailbox", "support:search", []),
        ("Calls", "support:calls", []),
        ("Imports", "mailboxes:imports", []),
    ],
    Role.HELPDESK: [("Find a mailbox", "support:search", []), ("Calls", "support:calls", [])],
}


def navigation(request):
    """Header links for the user's role; the one whose prefix matches the path longest is current."""
    role = role_of(request.user)
    links = []
    best, best_length = None, 0
    for label, name, extra_prefixes in NAVIGATION.get(role, []):
        url = reverse(name)
        link = {"label": label, "url": url, "current": False}
        links.append(link)
        for prefix in [url, *extra_prefixes]:
            if request.path.startswith(prefix) and len(prefix) > best_length:
                best, best_length = link, len(prefix)
    if best:
        best["current"] = True
    return {"nav_links": links, "portal_role": role}
