from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from portal import views

urlpatterns = [
    path("", views.home, name="home"),
    path(
        "sign-in/", auth_views.LoginView.as_view(template_name="portal/sign_in.html"), name="login"
    ),
    path("sign-out/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", views.health, name="health"),
    path("mailboxes/", include("mailboxes.urls")),
    path("waves/", include("waves.urls")),
    path("helpdesk/", include("support.urls")),
    path("api/", include("portal.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("admin/", admin.site.urls),
]
