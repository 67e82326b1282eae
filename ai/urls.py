from django.urls import path

from ai.views import AnswerStopView, AnswerStreamView, ChatStreamView

urlpatterns = [
    path("chat/stream", ChatStreamView.as_view(), name="chat-stream"),
    path("chat/stream/<uuid:message_id>", AnswerStreamView.as_view(), name="answer-stream"),
    path("chat/stream/<uuid:message_id>/stop", AnswerStopView.as_view(), name="answer-stop"),
]
