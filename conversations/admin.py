"""Operators' view of conversations and messages."""

from django.contrib import admin

from conversations import selectors
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


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["__str__", "conversation", "role", "status", "total_tokens", "created_at"]
    list_filter = ["role", "status", "created_at"]
    search_fields = ["content", "conversation__title", "conversation__user__username"]
    list_select_related = ["conversation"]
    readonly_fields = ["id", "conversation", "created_at", "updated_at"]
    raw_id_fields = ["conversation"]
