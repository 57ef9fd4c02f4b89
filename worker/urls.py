from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from maintenance.observability.views import metrics
from maintenance.views import health

admin.site.site_header = "tg-maintenance"
admin.site.site_title = "tg-maintenance"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("health/", health, name="health"),
    path("metrics", metrics, name="metrics"),
]
