"""The message admin, with what only `ai` knows: which answers are live, and a Stop action for them."""

from django.contrib import admin, messages
from django.db.models import BooleanField, ExpressionWrapper

from ai.views import stop
from conversations.admin import MessageAdmin
from conversations.models import Message
from conversations.services import live_streams


class LiveMessageAdmin(MessageAdmin):
    list_display = [*MessageAdmin.list_display, "live"]
    actions = ["stop_answers"]

    def get_queryset(self, request):
        return (
            super().get_queryset(request).annotate(is_live=ExpressionWrapper(live_streams(), BooleanField()))
        )

    @admin.display(boolean=True, description="live", ordering="is_live")
    def live(self, obj: Message) -> bool:
        """An answer still being generated (streaming, and renewed by its process)."""
        return obj.is_live

    @admin.action(description="Stop the selected answers still being generated")
    def stop_answers(self, request, queryset):
        answers = list(queryset.filter(live_streams(), role=Message.Role.ASSISTANT))
        unconfirmed = [answer for answer in answers if not stop(answer.pk)]
        stopped = len(answers) - len(unconfirmed)
        self.message_user(request, f"Stopped {stopped} answer(s).", messages.SUCCESS)
        if unconfirmed:
            self.message_user(
                request,
                f"{len(unconfirmed)} answer(s) not confirmed by their server process in time: "
                "it has probably stopped; the sweep will mark them interrupted.",
                messages.WARNING,
            )


admin.site.unregister(Message)
admin.site.register(Message, LiveMessageAdmin)
