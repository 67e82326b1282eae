from rest_framework.routers import SimpleRouter

from conversations.api.views import ConversationViewSet

router = SimpleRouter()
router.register("conversations", ConversationViewSet, basename="conversation")

urlpatterns = router.urls
