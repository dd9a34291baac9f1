from django.urls import path

from support import views

app_name = "support"
urlpatterns = [
    path("", views.search, name="search"),
    path("mailboxes/<int:mailbox_id>/", views.mailbox_detail, name="mailbox"),
    path("mailboxes/<int:mailbox_id>/calls/", views.record_call, name="record_call"),
    path("calls/", views.calls, name="calls"),
    path("calls/<int:call_id>/resolve/", views.resolve_call, name="resolve_call"),
]
