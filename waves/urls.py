from django.urls import path

from waves import views

app_name = "waves"
urlpatterns = [
    path("", views.wave_list, name="list"),
    path("new/", views.wave_create, name="create"),
    path("<uuid:public_id>/", views.wave_detail, name="detail"),
    # Before the wave actions: "preflight" would otherwise be taken for one.
    path("<uuid:public_id>/preflight/", views.wave_preflight, name="preflight"),
    path("<uuid:public_id>/batches.csv", views.wave_batches_csv, name="batches_csv"),
    path(
        "<uuid:public_id>/mailboxes/<int:mailbox_id>/approve-skipped-items/",
        views.wave_approve_skipped_items,
        name="approve_skipped_items",
    ),
    path(
        "<uuid:public_id>/approve-investigate-items/",
        views.wave_approve_investigate_items,
        name="approve_investigate_items",
    ),
    path(
        "<uuid:public_id>/approve-bookings/",
        views.wave_approve_bookings,
        name="approve_bookings",
    ),
    path("<uuid:public_id>/<slug:action>/", views.wave_action, name="action"),
    path("mailboxes/<int:mailbox_id>/<slug:action>/", views.mailbox_action, name="mailbox_action"),
    path("bookings/", views.booking_queue, name="booking_queue"),
    path("not-booked/", views.not_booked, name="not_booked"),
    path("not-booked.csv", views.not_booked_csv, name="not_booked_csv"),
    path("bookings/<uuid:public_id>/", views.booking_detail, name="booking_detail"),
    path("bookings/<uuid:public_id>/decide/", views.booking_decide, name="booking_decide"),
    path("bookings/<uuid:public_id>/withdraw/", views.booking_withdraw, name="booking_withdraw"),
    path("book/", views.lead_waves, name="lead_waves"),
    path("book/<uuid:public_id>/", views.booking_create, name="book"),
]
