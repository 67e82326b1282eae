"""Operators' view of conversations and messages."""

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.http import HttpResponseRedirect
from django.urls import reverse

from conversations import selectors, services
from conversations.models import Conversation, Message


class MessageInline(admin.TabularInline):
    model = Message
    fields = ["created_at", "role", "status", "content", "total_tokens", "error_code"]
    readonly_fields = fields
    ordering = ["created_at", "position"]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["__str__", "user", "adapter", "message_count", "updated_at"]
    list_filter = ["adapter", "updated_at"]
    search_fields = ["title", "user__username", "messages__content"]
    readonly_fields = ["id", "created_at", "updated_at"]
    raw_id_fields = ["user"]
    date_hierarchy = "updated_at"
    inlines = [MessageInline]

    def get_queryset(self, request):
        return selectors.conversations_with_message_count()

    @admin.display(ordering="message_count", description="messages")
    def message_count(self, obj):
        return obj.message_count

    def has_delete_permission(self, request, obj=None):
        """Not while one of its answers streams (the API's 409), alone or in the bulk action."""
        if obj is not None and obj.messages.filter(services.live_streams()).exists():
            return False
        return super().has_delete_permission(request, obj)

    # Deletes go through the service: a stream may have started since the permission check.
    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except services.StreamInProgress:  # from delete_model; the view's transaction rolled back
            self._kept(request, self.get_object(request, unquote(object_id)))
            return HttpResponseRedirect(reverse("admin:conversations_conversation_change", args=[object_id]))

    def delete_model(self, request, obj):
        services.conversation_delete(conversation=obj)

    def delete_queryset(self, request, queryset):
        for conversation in queryset:
            try:
                services.conversation_delete(conversation=conversation)
            except services.StreamInProgress:
                self._kept(request, conversation)

    def _kept(self, request, conversation):
        self.message_user(
            request, f"“{conversation}” was kept: an answer is still streaming.", messages.WARNING
        )


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    """Read-only: messages are written by the stream, and the quota was charged for what they say."""

    list_display = ["__str__", "conversation", "role", "status", "total_tokens", "created_at"]
    list_filter = ["role", "status", "created_at"]
    search_fields = ["content", "conversation__title", "conversation__user__username"]
    list_select_related = ["conversation"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
