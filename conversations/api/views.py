"""The conversations API: the caller's conversations and their messages."""

from django.conf import settings
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action

from chatsvc.api import JSONBodyMixin
from conversations import selectors, services
from conversations.api.serializers import ConversationSerializer, MessageSerializer


class StreamInProgressError(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "An answer in this conversation is still streaming; try again when it has ended."
    default_code = "stream_in_progress"


class ConversationViewSet(
    JSONBodyMixin,
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = ConversationSerializer
    lookup_value_regex = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return selectors.conversation_list(user=self.request.user)

    def perform_create(self, serializer):
        serializer.instance = services.conversation_create(
            user=self.request.user,
            adapter=serializer.validated_data.get("adapter", settings.AI_DEFAULT_ADAPTER),
            title=serializer.validated_data.get("title", ""),
        )

    def perform_update(self, serializer):
        services.conversation_update(conversation=serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance):
        try:
            services.conversation_delete(conversation=instance)
        except services.StreamInProgress:
            raise StreamInProgressError from None

    @action(detail=True, serializer_class=MessageSerializer)
    def messages(self, request, pk=None):
        page = self.paginate_queryset(selectors.message_list(conversation=self.get_object()))
        return self.get_paginated_response(MessageSerializer(page, many=True).data)
