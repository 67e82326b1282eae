"""The quota API: the caller's quota in the current period."""

from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from quota import services
from quota.api.serializers import QuotaSerializer


class QuotaView(APIView):
    @extend_schema(
        operation_id="quota_retrieve",
        summary="The caller's quota",
        description=(
            "Limits, usage and live reservations in the current period; a `null` limit is unlimited "
            "(and its `remaining` is `null`). A generation reserves one request when it starts and "
            "consumes it, with its tokens, when it completes."
        ),
        responses=QuotaSerializer,
        tags=["quota"],
    )
    def get(self, request):
        return Response(QuotaSerializer(services.quota_status(user=request.user)).data)
