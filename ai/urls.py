from django.urls import path, re_path

from ai.sdk_serializers import CHAT_ID_PATTERN
from ai.sdk_views import UIChatMessagesView, UIChatStopView, UIChatStreamView, UIChatView
from ai.views import AnswerStopView, AnswerStreamView, ChatStreamView, admitted, reading

urlpatterns = [
    # Starts wait for a database connection in the event loop (ai.views.admitted).
    path("chat/stream", admitted(ChatStreamView), name="chat-stream"),
    path("chat/stream/<uuid:message_id>", reading(AnswerStreamView), name="answer-stream"),
    path("chat/stream/<uuid:message_id>/stop", AnswerStopView.as_view(), name="answer-stop"),
    # The AI SDK's chat (DefaultChatTransport, useChat): ai/sdk_views.py.
    path("chat", admitted(UIChatView), name="ui-chat"),
    re_path(rf"^chat/(?P<chat_id>{CHAT_ID_PATTERN})$", UIChatMessagesView.as_view(), name="ui-chat-messages"),
    re_path(
        rf"^chat/(?P<chat_id>{CHAT_ID_PATTERN})/stream$",
        reading(UIChatStreamView),
        name="ui-chat-stream",
    ),
    re_path(rf"^chat/(?P<chat_id>{CHAT_ID_PATTERN})/stop$", UIChatStopView.as_view(), name="ui-chat-stop"),
]
