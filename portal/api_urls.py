"""The JSON API under /api/: session sign-in, a role on every endpoint (see portal.auth.HasRole)."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from mailboxes.api import ImportRunViewSet, MailboxViewSet, OrganisationViewSet, ProgrammeView
from support.api import MailboxDetail, MailboxLookup
from waves.api import BookingViewSet, WaveViewSet

router = SimpleRouter()
router.register("organisations", OrganisationViewSet, basename="organisation")
router.register("mailboxes", MailboxViewSet, basename="mailbox")
router.register("waves", WaveViewSet, basename="wave")
router.register("bookings", BookingViewSet, basename="booking")
router.register("imports", ImportRunViewSet, basename="import")

app_name = "api"
urlpatterns = [
    path("mailboxes/<int:mailbox_id>/", MailboxDetail.as_view(), name="mailbox-detail"),
    path("lookup/", MailboxLookup.as_view(), name="lookup"),
    path("programme/", ProgrammeView.as_view(), name="programme"),
    *router.urls,
]
