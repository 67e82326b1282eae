from django.apps import AppConfig


class ChatsvcConfig(AppConfig):
    """The project as an app: its templates, static files and the `setup_demo` command."""

    name = "chatsvc"
