from django.urls import path

from quota.api.views import QuotaView

urlpatterns = [path("", QuotaView.as_view(), name="quota")]
