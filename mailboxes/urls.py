from django.urls import path

from mailboxes import views

app_name = "mailboxes"
urlpatterns = [
    path("", views.mailbox_list, name="list"),
]
