from django.urls import path

from ai.views import ChatStreamView

urlpatterns = [path("chat/stream", ChatStreamView.as_view(), name="chat-stream")]
