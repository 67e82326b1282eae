from django.apps import AppConfig


class ChatsvcConfig(AppConfig):
    """The project as an app: its templates, static files, the `setup_demo` command and its checks."""

    name = "chatsvc"

    def ready(self) -> None:
        from chatsvc.checks import use_for_the_middleware_checks

        use_for_the_middleware_checks()
